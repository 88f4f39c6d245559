//! `portico proxy --from :8080 --to http://127.0.0.1:9000`: the one-line reverse proxy.
//!
//! The flags are turned into ordinary `portico.dev/v1` resources (YAML text) — one Listener,
//! one Upstream of the `--to` endpoints (round robin, outlier detection on), a Host when a
//! certificate is given, and one catch-all Mapping — which then go through the same load,
//! validate and compile path as `portico run -c`. `--print-config` prints that text instead.

use std::net::IpAddr;
use std::path::PathBuf;

/// Flags of `portico proxy`.
#[derive(clap::Args, Debug)]
pub struct ProxyArgs {
    /// Address to listen on: `:PORT` (all addresses), `ADDR:PORT`, `[V6]:PORT` or `PORT`.
    #[arg(long, value_name = "[ADDR]:PORT", value_parser = parse_from)]
    pub from: Listen,
    /// Upstream URL (`http://`, `https://` or `h2c://` HOST:PORT; `HOST:PORT` means http).
    /// Repeat for several endpoints, balanced round robin.
    #[arg(long = "to", value_name = "URL", required = true, value_parser = parse_to)]
    pub to: Vec<Target>,
    /// Serve only this hostname (glob such as `*.example.com`); default: any.
    #[arg(long, value_name = "NAME", value_parser = parse_host)]
    pub host: Option<String>,
    /// TLS certificate chain (PEM): the listener serves HTTPS, offering h2 by ALPN.
    #[arg(long = "tls-cert", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) for `--tls-cert`.
    #[arg(long = "tls-key", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Admin API address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9901")]
    pub admin: std::net::SocketAddr,
    /// Access log: a file path, `-` for stdout (default), or `off`.
    #[arg(long = "access-log", value_name = "PATH|-|off", default_value = "-")]
    pub access_log: String,
    /// Print the equivalent configuration (input for `portico run -c`) and exit.
    #[arg(long = "print-config")]
    pub print_config: bool,
}

/// Where the listener binds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listen {
    pub address: IpAddr,
    pub port: u16,
}

/// One `--to` endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Upstream protocol in the Upstream resource's words: `http1`, `https` or `h2c`.
    pub protocol: &'static str,
    /// `host:port` (`[v6]:port`).
    pub authority: String,
}

fn parse_port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("`{s}` is not a port number (1-65535)")),
    }
}

fn parse_from(s: &str) -> Result<Listen, String> {
    let s = s.trim();
    if !s.contains(':') {
        return Ok(Listen {
            address: IpAddr::from([0, 0, 0, 0]),
            port: parse_port(s)?,
        });
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        rest.split_once("]:")
            .ok_or_else(|| format!("`{s}`: expected [ADDR]:PORT"))?
    } else {
        s.rsplit_once(':')
            .ok_or_else(|| format!("`{s}`: expected [ADDR]:PORT"))?
    };
    let port = parse_port(port)?;
    let address = match host {
        "" => IpAddr::from([0, 0, 0, 0]),
        "localhost" => IpAddr::from([127, 0, 0, 1]),
        h => h
            .parse::<IpAddr>()
            .map_err(|_| format!("`{h}` is not an IP address (expected [ADDR]:PORT)"))?,
    };
    Ok(Listen { address, port })
}

fn parse_to(s: &str) -> Result<Target, String> {
    let s = s.trim();
    let (protocol, rest, default_port) = if let Some(r) = s.strip_prefix("http://") {
        ("http1", r, 80)
    } else if let Some(r) = s.strip_prefix("https://") {
        ("https", r, 443)
    } else if let Some(r) = s.strip_prefix("h2c://") {
        ("h2c", r, 80)
    } else if s.contains("://") {
        return Err(format!(
            "`{s}`: unsupported scheme (use http://, https:// or h2c://)"
        ));
    } else {
        // A bare `HOST:PORT` (or `:PORT`, meaning localhost) is plain HTTP; it needs a port.
        if !s.contains(':') {
            return Err(format!(
                "`{s}` is not a URL (expected http://HOST:PORT or HOST:PORT)"
            ));
        }
        ("http1", s, 80)
    };
    // `:PORT` means this machine.
    let local;
    let rest = if rest.starts_with(':') {
        local = format!("127.0.0.1{rest}");
        local.as_str()
    } else {
        rest
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#', '@']) {
        return Err(format!(
            "`{s}`: only scheme://HOST[:PORT] is supported (no path, query or user)"
        ));
    }
    let url = url_host_port(authority, default_port)
        .ok_or_else(|| format!("`{s}` is not a URL (expected http://HOST:PORT)"))?;
    Ok(Target {
        protocol,
        authority: url,
    })
}

/// `host[:port]` → `host:port` (`[v6]:port`), the host checked loosely (letters, digits,
/// `-`, `.`, or an IP address).
fn url_host_port(authority: &str, default_port: u16) -> Option<String> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        h.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => default_port,
            p => parse_port(p.strip_prefix(':')?).ok()?,
        };
        return Some(format!("[{h}]:{port}"));
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, parse_port(p).ok()?),
            None => (authority, default_port),
        }
    };
    let ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    ok.then(|| format!("{host}:{port}"))
}

fn parse_host(s: &str) -> Result<String, String> {
    let s = s.trim();
    let ok = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '*'));
    if ok {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(format!("`{s}` is not a hostname"))
    }
}

/// A YAML double-quoted scalar (JSON string syntax is valid YAML).
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The resources equivalent to `args`, as YAML documents.
pub fn to_yaml(args: &ProxyArgs) -> Result<String, String> {
    let protocol = args.to[0].protocol;
    if let Some(other) = args.to.iter().find(|t| t.protocol != protocol) {
        return Err(format!(
            "--to: all upstreams must use one scheme (`{}` differs from the first)",
            other.authority
        ));
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some((absolute(c), absolute(k))),
        _ => None,
    };
    let hostname = args.host.as_deref().unwrap_or("*");
    let api = "apiVersion: portico.dev/v1";
    let mut y = String::new();
    y.push_str("# Generated by `portico proxy`; run it with `portico run -c FILE`.\n");
    y.push_str(&format!(
        "{api}\nkind: Listener\nmetadata: {{ name: proxy }}\nspec:\n  address: {}\n  port: {}\n  protocol: {}\n  http2: true\n",
        q(&args.from.address.to_string()),
        args.from.port,
        if tls.is_some() { "HTTPS" } else { "HTTP" },
    ));
    if let Some((cert, key)) = &tls {
        y.push_str(&format!(
            "---\n{api}\nkind: Host\nmetadata: {{ name: proxy }}\nspec:\n  hostname: {}\n  tls:\n    cert_chain_file: {}\n    private_key_file: {}\n    alpn_protocols: \"h2,http/1.1\"\n",
            q(hostname),
            q(cert),
            q(key),
        ));
    }
    y.push_str(&format!(
        "---\n{api}\nkind: Upstream\nmetadata: {{ name: backend }}\nspec:\n  endpoints:\n"
    ));
    for t in &args.to {
        y.push_str(&format!("    - {}\n", q(&t.authority)));
    }
    // Outlier detection with the documented defaults, except that up to half of a small pool
    // may be ejected (one endpoint always may, whatever the percentage).
    y.push_str(&format!(
        "  protocol: {protocol}\n  load_balancer: {{ policy: round_robin }}\n  outlier_detection:\n    consecutive_5xx: 5\n    consecutive_gateway_failure: 5\n    interval_ms: 10000\n    base_ejection_time_ms: 30000\n    max_ejection_time_ms: 300000\n    max_ejection_percent: 50\n"
    ));
    y.push_str(&format!(
        "---\n{api}\nkind: Mapping\nmetadata: {{ name: proxy }}\nspec:\n  hostname: {}\n  prefix: /\n  service: backend\n",
        q(hostname)
    ));
    Ok(y)
}

fn absolute(p: &std::path::Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

/// The clap error of a `portico proxy` command line as one line (the flag and the problem).
pub fn one_line_error(e: &clap::Error) -> String {
    // clap's message is the lines before the first blank line or the usage.
    let text = e.render().to_string();
    let message: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.is_empty() && !l.starts_with("Usage:"))
        .collect();
    let message = message.join(" ");
    let message = message.strip_prefix("error: ").unwrap_or(&message);
    format!("portico proxy: {message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_forms() {
        assert_eq!(parse_from(":8080").unwrap().port, 8080);
        assert_eq!(
            parse_from(":8080").unwrap().address,
            IpAddr::from([0, 0, 0, 0])
        );
        assert_eq!(
            parse_from("127.0.0.1:1").unwrap().address,
            IpAddr::from([127, 0, 0, 1])
        );
        assert!(parse_from("[::1]:80").unwrap().address.is_ipv6());
        assert_eq!(parse_from("8080").unwrap().port, 8080);
        assert!(parse_from("host:notaport").is_err());
        assert!(parse_from("example.com:80").is_err());
        assert!(parse_from(":0").is_err());
    }

    #[test]
    fn to_forms() {
        let t = parse_to("http://127.0.0.1:9000").unwrap();
        assert_eq!(
            (t.protocol, t.authority.as_str()),
            ("http1", "127.0.0.1:9000")
        );
        let t = parse_to("https://api.internal").unwrap();
        assert_eq!(
            (t.protocol, t.authority.as_str()),
            ("https", "api.internal:443")
        );
        assert_eq!(parse_to("h2c://[::1]:81/").unwrap().authority, "[::1]:81");
        assert_eq!(parse_to(":9000").unwrap().authority, "127.0.0.1:9000");
        for bad in [
            "notaurl",
            "ftp://x:1",
            "http://x:1/path",
            "http://u@x:1",
            "http://x:port",
            "http://",
        ] {
            assert!(parse_to(bad).is_err(), "{bad}");
        }
    }
}
