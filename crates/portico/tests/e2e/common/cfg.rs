//! A typed builder for the YAML documents tests feed Portico, in place of hand-indented
//! `format!` strings: `cfg::mapping("m").prefix("/a/").service(&up).timeout_ms(300).build()`.
//!
//! Values are written as JSON (a subset of YAML 1.2), so strings are always quoted correctly;
//! `raw` takes a YAML fragment as is (flow style, e.g. `{ policy: random }`) for the nested
//! settings that have no typed method.

use std::fmt::Write as _;
use std::net::SocketAddr;

use serde_json::Value;

use super::upstreams::Controlled;

/// The `apiVersion` line every document starts with.
pub const API: &str = "apiVersion: portico.dev/v1";

/// Anything a test can name as a service or an endpoint: an address, an upstream, a string.
pub trait Target {
    fn target(&self) -> String;
}

impl Target for SocketAddr {
    fn target(&self) -> String {
        self.to_string()
    }
}

impl Target for &str {
    fn target(&self) -> String {
        (*self).to_string()
    }
}

impl Target for String {
    fn target(&self) -> String {
        self.clone()
    }
}

impl Target for super::upstreams::Upstream {
    fn target(&self) -> String {
        self.addr.to_string()
    }
}

impl Target for super::upstreams::Controlled {
    fn target(&self) -> String {
        self.addr.to_string()
    }
}

impl<T: Target + ?Sized> Target for &T {
    fn target(&self) -> String {
        (**self).target()
    }
}

/// One document: `kind`, `metadata.name` and the `spec` fields in the order they were set.
#[derive(Debug, Clone)]
pub struct Doc {
    kind: &'static str,
    name: String,
    spec: Vec<(String, String)>,
}

/// A `Mapping` named `name`.
pub fn mapping(name: &str) -> Doc {
    Doc::new("Mapping", name)
}

/// An `Upstream` named `name`.
pub fn upstream(name: &str) -> Doc {
    Doc::new("Upstream", name)
}

/// A `Listener` named `name` on 127.0.0.1:`port`.
pub fn listen(name: &str, port: u16) -> Doc {
    Doc::new("Listener", name)
        .set("address", "127.0.0.1")
        .set("port", port)
}

/// A `Host` named `name`.
pub fn host(name: &str) -> Doc {
    Doc::new("Host", name)
}

/// Documents joined into one YAML stream.
pub fn docs(d: &[Doc]) -> String {
    d.iter().map(Doc::build).collect::<Vec<_>>().join("---\n")
}

impl Doc {
    pub fn new(kind: &'static str, name: &str) -> Doc {
        Doc {
            kind,
            name: name.to_string(),
            spec: Vec::new(),
        }
    }

    /// Sets `key` to `value`, written as JSON; a key set twice keeps its last value.
    pub fn set(self, key: &str, value: impl Into<Value>) -> Doc {
        let v = value.into().to_string();
        self.raw(key, &v)
    }

    /// Sets `key` to a YAML fragment written as is (one line, flow style).
    pub fn raw(mut self, key: &str, yaml: &str) -> Doc {
        self.spec.retain(|(k, _)| k != key);
        self.spec.push((key.to_string(), yaml.trim().to_string()));
        self
    }

    /// Sets the fields of a flow-style fragment, `key: value, key: value` (commas inside
    /// brackets or braces belong to the value).
    pub fn flow_fields(mut self, fields: &str) -> Doc {
        let mut depth = 0i32;
        let mut start = 0;
        let mut parts = Vec::new();
        for (i, c) in fields.char_indices() {
            match c {
                '[' | '{' => depth += 1,
                ']' | '}' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&fields[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&fields[start..]);
        for part in parts.into_iter().filter(|p| !p.trim().is_empty()) {
            self = self.field_line(part);
        }
        self
    }

    /// Sets the fields of block-style lines, one `  key: value` a line.
    pub fn block_fields(mut self, lines: &str) -> Doc {
        for line in lines.lines().filter(|l| !l.trim().is_empty()) {
            self = self.field_line(line);
        }
        self
    }

    fn field_line(self, line: &str) -> Doc {
        let (k, v) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("not a `key: value` field: {line:?}"));
        self.raw(k.trim(), v)
    }

    /// The document as YAML, ending with a newline: four lines, the spec in flow style on the
    /// last (so positions in `portico check` messages do not depend on the fields).
    pub fn build(&self) -> String {
        let mut out = format!(
            "{API}\nkind: {}\nmetadata: {{ name: {} }}\n",
            self.kind,
            Value::from(self.name.as_str())
        );
        let fields: Vec<String> = self.spec.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let _ = writeln!(out, "spec: {{ {} }}", fields.join(", "));
        out
    }

    // -- Mapping

    pub fn prefix(self, p: &str) -> Doc {
        self.set("prefix", p)
    }

    /// `service`: an address, an `Upstream`/`Controlled` (its address) or a name.
    pub fn service(self, t: impl Target) -> Doc {
        self.set("service", t.target())
    }

    pub fn hostname(self, h: &str) -> Doc {
        self.set("hostname", h)
    }

    pub fn method(self, m: &str) -> Doc {
        self.set("method", m)
    }

    pub fn rewrite(self, r: &str) -> Doc {
        self.set("rewrite", r)
    }

    pub fn precedence(self, n: i32) -> Doc {
        self.set("precedence", n)
    }

    pub fn weight(self, n: u32) -> Doc {
        self.set("weight", n)
    }

    pub fn timeout_ms(self, ms: u64) -> Doc {
        self.set("timeout_ms", ms)
    }

    pub fn idle_timeout_ms(self, ms: u64) -> Doc {
        self.set("idle_timeout_ms", ms)
    }

    pub fn connect_timeout_ms(self, ms: u64) -> Doc {
        self.set("connect_timeout_ms", ms)
    }

    pub fn grpc(self, on: bool) -> Doc {
        self.set("grpc", on)
    }

    /// `headers`: exact-match request headers.
    pub fn headers(self, pairs: &[(&str, &str)]) -> Doc {
        let m: serde_json::Map<String, Value> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(*v)))
            .collect();
        self.set("headers", Value::Object(m))
    }

    /// `retry_policy`, `circuit_breakers`, `cors`, ...: a flow-style YAML fragment.
    pub fn retry_policy(self, yaml: &str) -> Doc {
        self.raw("retry_policy", yaml)
    }

    // -- Upstream (and Mapping) load balancing

    pub fn load_balancer(self, yaml: &str) -> Doc {
        self.raw("load_balancer", yaml)
    }

    /// `endpoints`: addresses of upstreams (or `host:port` strings).
    pub fn endpoints<T: Target>(self, list: &[T]) -> Doc {
        let v: Vec<Value> = list.iter().map(|t| Value::from(t.target())).collect();
        self.set("endpoints", v)
    }

    // -- Listener

    /// `protocol`: HTTP, HTTPS, HTTPPROXY, HTTPSPROXY.
    pub fn protocol(self, p: &str) -> Doc {
        self.set("protocol", p)
    }

    pub fn http2(self, on: bool) -> Doc {
        self.set("http2", on)
    }
}

// ---------------------------------------------------------------- shorthands used everywhere

/// The default Listener document (`main`) on `port`.
pub fn listener(port: u16) -> String {
    listen("main", port).build()
}

/// A Listener document named `name` on 127.0.0.1:`port` with `protocol` (HTTP, HTTPS,
/// HTTPPROXY, HTTPSPROXY) and extra spec fields (`extra`, flow style, e.g. `"http2: false"`,
/// or "").
pub fn listener_doc(name: &str, port: u16, protocol: &str, extra: &str) -> String {
    listen(name, port)
        .protocol(protocol)
        .flow_fields(extra)
        .build()
}

/// An `Upstream` named `name` over `addrs` (its spec extended by `extra`, block-style lines
/// `  key: value`) and a Mapping `m-NAME` sending everything to it.
pub fn upstream_doc(name: &str, addrs: &[&Controlled], extra: &str) -> String {
    docs(&[
        upstream(name).endpoints(addrs).block_fields(extra),
        catch_all(&format!("m-{name}"), name),
    ])
}

/// A Mapping `name` sending every path (`/`) to `service`.
pub fn catch_all(name: &str, service: impl Target) -> Doc {
    mapping(name).prefix("/").service(service)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_one_flow_spec_line_with_json_values() {
        let d = mapping("m")
            .prefix("/a/")
            .service("127.0.0.1:80")
            .timeout_ms(300)
            .raw("retry_policy", "{ retry_on: 5xx, num_retries: 2 }")
            .build();
        assert_eq!(
            d,
            format!(
                "{API}\nkind: Mapping\nmetadata: {{ name: \"m\" }}\nspec: {{ prefix: \"/a/\", service: \"127.0.0.1:80\", timeout_ms: 300, retry_policy: {{ retry_on: 5xx, num_retries: 2 }} }}\n"
            )
        );
    }
}
