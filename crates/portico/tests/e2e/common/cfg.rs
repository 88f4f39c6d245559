//! The YAML documents the tests give Portico.

use super::upstreams::Controlled;

pub const API: &str = "apiVersion: portico.dev/v1";

/// A Listener document on `port`.
pub fn listener(port: u16) -> String {
    format!(
        "{API}\nkind: Listener\nmetadata: {{ name: main }}\nspec: {{ address: 127.0.0.1, port: {port} }}\n"
    )
}

/// A Listener document named `name` on 127.0.0.1:`port` with `protocol` (HTTP, HTTPS,
/// HTTPPROXY, HTTPSPROXY) and extra spec fields (`extra`, e.g. `"http2: false"`, or "").
pub fn listener_doc(name: &str, port: u16, protocol: &str, extra: &str) -> String {
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!(", {extra}")
    };
    format!(
        "{API}\nkind: Listener\nmetadata: {{ name: {name} }}\nspec: {{ address: 127.0.0.1, port: {port}, protocol: {protocol}{extra} }}\n"
    )
}

/// An `Upstream` named `name` over `addrs` (its spec extended by `extra` lines) and a Mapping
/// `m-NAME` sending everything to it.
pub fn upstream_doc(name: &str, addrs: &[&Controlled], extra: &str) -> String {
    let list: Vec<String> = addrs.iter().map(|u| format!("\"{}\"", u.addr)).collect();
    format!(
        "{API}\nkind: Upstream\nmetadata: {{ name: {name} }}\nspec:\n  endpoints: [{}]\n{extra}---\n{API}\nkind: Mapping\nmetadata: {{ name: m-{name} }}\nspec: {{ prefix: /, service: {name} }}\n",
        list.join(", ")
    )
}
