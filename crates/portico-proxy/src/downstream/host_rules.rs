//! The Host rules every request passes before it is routed: which authority a request names,
//! and that it names it in a form every hop reads the same way.
//!
//! - An HTTP/1.1 request must carry `Host` (RFC 9112 §3.2); HTTP/1.0 may omit it, and HTTP/2
//!   and HTTP/3 carry `:authority` instead.
//! - The target's authority (absolute-form, or `:authority`) must not carry userinfo
//!   (`user@host`): RFC 9110 §4.2.4 deprecates it for `http`/`https`, RFC 9113 §8.3.1 forbids
//!   it, and a proxy that forwards `user@host` as `Host` lets the upstream pick another host
//!   than the one Portico routed on.
//! - A `Host` value must be `uri-host [":" port]` (RFC 9110 §7.2, RFC 3986 §3.2.2): no
//!   userinfo, no whitespace, path or query characters. An empty value is allowed (RFC 9112
//!   §3.2: sent when the target has no authority).
//!
//! Several `Host` lines on one HTTP/1 request are refused earlier, by the HTTP/1 gate.

use http::header::{self, HeaderMap};
use http::{Uri, Version};

/// Why a request breaks the Host rules (the reply's one line), or `Ok`.
pub fn check(version: Version, uri: &Uri, headers: &HeaderMap) -> Result<(), &'static str> {
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err("userinfo in the request target");
    }
    let mut hosts = headers.get_all(header::HOST).iter().peekable();
    if hosts.peek().is_none() {
        // RFC 9112 §3.2: a server must answer 400 to an HTTP/1.1 request without Host, even
        // one whose target is in absolute form.
        if version == Version::HTTP_11 {
            return Err("missing Host header");
        }
        return Ok(());
    }
    if hosts.all(|h| valid_host(h.as_bytes())) {
        Ok(())
    } else {
        Err("invalid Host header")
    }
}

/// Whether `v` is `uri-host [":" port]` (or empty).
pub fn valid_host(v: &[u8]) -> bool {
    if v.is_empty() {
        return true;
    }
    let (host, port) = if v[0] == b'[' {
        // IP-literal: `[` IPv6address / IPvFuture `]`.
        let Some(end) = memchr::memchr(b']', v) else {
            return false;
        };
        let inner = &v[1..end];
        let ok = !inner.is_empty()
            && inner
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'.'));
        if !ok {
            return false;
        }
        (&v[..=end], &v[end + 1..])
    } else {
        match memchr::memrchr(b':', v) {
            Some(i) => (&v[..i], &v[i..]),
            None => (v, &v[v.len()..]),
        }
    };
    let port_ok = match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    };
    port_ok && !host.is_empty() && (host[0] == b'[' || reg_name(host))
}

/// RFC 3986 `reg-name` (which covers IPv4 addresses): unreserved, pct-encoded, sub-delims.
fn reg_name(host: &[u8]) -> bool {
    let mut i = 0;
    while i < host.len() {
        let b = host[i];
        if b == b'%' {
            let hex = host.get(i + 1..i + 3);
            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                return false;
            }
            i += 3;
            continue;
        }
        let ok = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b);
        if !ok {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(hosts: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in hosts {
            h.append(header::HOST, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn host_is_required_on_http11_only() {
        let origin: Uri = "/p1".parse().unwrap();
        assert_eq!(
            check(Version::HTTP_11, &origin, &headers(&[])),
            Err("missing Host header")
        );
        let absolute: Uri = "http://a.example/p1".parse().unwrap();
        assert!(check(Version::HTTP_11, &absolute, &headers(&[])).is_err());
        assert!(check(Version::HTTP_10, &origin, &headers(&[])).is_ok());
        assert!(check(Version::HTTP_2, &absolute, &headers(&[])).is_ok());
        assert!(check(Version::HTTP_11, &origin, &headers(&["a.example:8080"])).is_ok());
        assert!(check(Version::HTTP_11, &origin, &headers(&[""])).is_ok());
    }

    #[test]
    fn userinfo_is_refused_in_target_and_host() {
        let target: Uri = "http://a@evil.example/p1".parse().unwrap();
        assert_eq!(
            check(Version::HTTP_11, &target, &headers(&["a"])),
            Err("userinfo in the request target")
        );
        assert_eq!(
            check(Version::HTTP_2, &target, &headers(&[])),
            Err("userinfo in the request target")
        );
        let origin: Uri = "/p1".parse().unwrap();
        assert_eq!(
            check(Version::HTTP_11, &origin, &headers(&["a@evil.example"])),
            Err("invalid Host header")
        );
    }

    #[test]
    fn host_syntax() {
        for ok in [
            "a",
            "a.example",
            "A.Example:80",
            "127.0.0.1:8080",
            "[::1]",
            "[::1]:443",
            "x_y.example",
            "a%2Db",
            "a:",
        ] {
            assert!(valid_host(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "a@b", "a b", "a/b", "a?b", "a#b", "a\\b", ":80", "a:8x", "[::1", "[]", "[::1]x",
            "a%2", "a%zz", "a\"b",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad}");
        }
    }
}
