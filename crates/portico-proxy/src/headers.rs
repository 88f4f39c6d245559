//! Header work on the request path: hop-by-hop stripping, forwarding headers, request ids,
//! and the route's add/remove rules. Each function touches the map as little as it can:
//! header work is a large share of a proxy's per-request cost (docs/benchmarks.md, "Where the time goes").

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use portico_config::snapshot::HeaderAdd;

/// The headers that belong to one connection and are never forwarded (RFC 9110 §7.6.1).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::TE
        || name == header::TRAILER
        || name == header::UPGRADE
        || name == header::PROXY_AUTHENTICATE
        // Compared as HeaderNames: a standard name against a custom one is a tag compare,
        // where `as_str()` on a standard name is a table lookup.
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers that naming them in `Connection` does not remove: the message's identity and
/// framing are not the sender's to strip (an HTTP/1.1 request without `Host` is invalid, RFC
/// 9112 §3.2; `Content-Length` is the body's framing, RFC 9112 §6.3, and a `HEAD` or `304`
/// answer's only size). Pseudo-header names never parse as header names, so they cannot be
/// named at all.
fn never_nominated(name: &HeaderName) -> bool {
    name == header::HOST || name == header::CONTENT_LENGTH
}

/// Rewrites `Content-Length` to its canonical form, one line of plain decimal digits without
/// leading zeros (`010` → `10`, `3, 3` → `3`): readers disagree on the other spellings (octal,
/// lists), so none of them is forwarded. Values that do not agree on one number are left as
/// they are (the HTTP layer refuses those before they get here). Costs one lookup when the
/// header is absent or already canonical.
pub fn normalize_content_length(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let Some(first) = values.next() else {
        return;
    };
    let b = first.as_bytes();
    let canonical = !b.is_empty()
        && (b[0] != b'0' || b.len() == 1)
        && b.iter().all(u8::is_ascii_digit)
        && values.next().is_none();
    if canonical {
        return;
    }
    let mut n: Option<u64> = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        for part in v.as_bytes().split(|&b| b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                return;
            }
            let Some(m) = std::str::from_utf8(part)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
            else {
                return;
            };
            if n.is_some_and(|n| n != m) {
                return;
            }
            n = Some(m);
        }
    }
    if let Some(n) = n {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
}

/// Removes hop-by-hop headers, and any header the `connection` header names (except `Host`
/// and `Content-Length`, see [`never_nominated`]). Returns whether
/// the client asked for `te: trailers` (gRPC needs it forwarded over HTTP/2).
///
/// One pass over the map finds what is present (no hashing); only those names are removed.
/// The usual case upstream responses bring, `connection: keep-alive`, costs one removal.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) -> bool {
    let mut te_trailers = false;
    let mut connection = false;
    // The fixed hop-by-hop names present, each once (a name's values are adjacent in
    // iteration, and there are eight such names): no allocation on the request path.
    let mut fixed: [Option<HeaderName>; 8] = Default::default();
    let mut n = 0;
    for (name, value) in headers.iter() {
        if !is_hop_by_hop(name) {
            continue;
        }
        if name == header::TE {
            te_trailers |= value
                .as_bytes()
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"));
        }
        connection |= name == header::CONNECTION;
        if (n == 0 || fixed[n - 1].as_ref() != Some(name))
            && let Some(slot) = fixed.get_mut(n)
        {
            *slot = Some(name.clone());
            n += 1;
        }
    }
    // Headers the connection header names (`close` and the fixed hop-by-hop names need no
    // extra work).
    let mut named: Vec<HeaderName> = Vec::new();
    if connection {
        for v in headers.get_all(header::CONNECTION) {
            for token in v.as_bytes().split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.is_empty()
                    || token.eq_ignore_ascii_case(b"close")
                    || token.eq_ignore_ascii_case(b"keep-alive")
                    || token.eq_ignore_ascii_case(b"upgrade")
                {
                    continue;
                }
                if let Ok(n) = HeaderName::from_bytes(token)
                    && !never_nominated(&n)
                {
                    named.push(n);
                }
            }
        }
    }
    // By reference: moving the array into an iterator was a memcpy.
    for name in fixed.iter().flatten().chain(named.iter()) {
        headers.remove(name);
    }
    te_trailers
}

/// An IP address as a header value (once per connection: see `ConnInfo`).
pub fn ip_value(ip: IpAddr) -> HeaderValue {
    // Display for IpAddr goes through the formatting machinery; once per connection is fine.
    HeaderValue::from_str(&ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_EXPECTED_TIMEOUT: HeaderName =
    HeaderName::from_static("x-portico-expected-timeout-ms");
pub static X_ATTEMPT_COUNT: HeaderName = HeaderName::from_static("x-portico-attempt-count");

/// Appends `client` (`ip`, its value pre-rendered per connection) to `x-forwarded-for`.
pub fn append_forwarded_for(headers: &mut HeaderMap, client: &HeaderValue) {
    // One lookup: the common case at the edge (no proxy in front) inserts the value as is.
    let mut entry = match headers.entry(X_FORWARDED_FOR.clone()) {
        http::header::Entry::Vacant(v) => {
            v.insert(client.clone());
            return;
        }
        http::header::Entry::Occupied(o) => o,
    };
    let mut joined = String::new();
    for v in entry.iter() {
        if let Ok(s) = v.to_str() {
            if !joined.is_empty() {
                joined.push_str(", ");
            }
            joined.push_str(s.trim());
        }
    }
    if joined.is_empty() {
        entry.insert(client.clone());
        return;
    }
    joined.push_str(", ");
    joined.push_str(client.to_str().unwrap_or("unknown"));
    if let Ok(v) = HeaderValue::from_str(&joined) {
        entry.insert(v);
    }
}

/// The last address in `x-forwarded-for`, for listeners that trust their front proxy.
pub fn last_forwarded_for(headers: &HeaderMap) -> Option<IpAddr> {
    let last = headers.get_all(&X_FORWARDED_FOR).iter().next_back()?;
    let s = last.to_str().ok()?;
    s.rsplit(',').next()?.trim().parse().ok()
}

/// A random request id in UUID v4 form.
pub fn new_request_id() -> HeaderValue {
    // Hex by hand into a stack buffer: `format!` cost ~2.7k instructions per request here.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let hi = fastrand::u64(..);
    // Version 4 and variant 10 bits.
    let lo = (fastrand::u64(..) & !(0x3 << 62)) | (0x2 << 62);
    let hi = (hi & !(0xf << 12)) | (0x4 << 12);
    let mut buf = [b'-'; 36];
    let mut put = |range: std::ops::Range<usize>, mut v: u64| {
        for b in buf[range].iter_mut().rev() {
            *b = HEX[(v & 0xf) as usize];
            v >>= 4;
        }
    };
    put(0..8, hi >> 32);
    put(9..13, (hi >> 16) & 0xffff);
    put(14..18, hi & 0xffff);
    put(19..23, lo >> 48);
    put(24..36, lo & 0xffff_ffff_ffff);
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// Applies a route's add/remove rules.
pub fn apply_rules(headers: &mut HeaderMap, remove: &[HeaderName], add: &[HeaderAdd]) {
    for name in remove {
        headers.remove(name);
    }
    for a in add {
        if a.append {
            headers.append(a.name.clone(), a.value.clone());
        } else {
            headers.insert(a.name.clone(), a.value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_named_and_fixed_hop_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        assert!(strip_hop_by_hop(&mut h));
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn connection_never_strips_host_or_content_length() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("host, Content-Length, x-a"),
        );
        h.insert("host", HeaderValue::from_static("a.example"));
        h.insert("content-length", HeaderValue::from_static("3"));
        h.insert("x-a", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-length", "host"]);
    }

    #[test]
    fn content_length_is_canonical() {
        let norm = |vals: &[&'static str]| {
            let mut h = HeaderMap::new();
            for v in vals {
                h.append("content-length", HeaderValue::from_static(v));
            }
            normalize_content_length(&mut h);
            h.get_all("content-length")
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(norm(&["010"]), ["10"]);
        assert_eq!(norm(&["0"]), ["0"]);
        assert_eq!(norm(&["00"]), ["0"]);
        assert_eq!(norm(&["42"]), ["42"]);
        assert_eq!(norm(&["3, 3"]), ["3"]);
        assert_eq!(norm(&["3", "03"]), ["3"]);
        assert_eq!(norm(&[]), Vec::<String>::new());
        // Not one number: left for the HTTP layer to refuse.
        assert_eq!(norm(&["3", "4"]), ["3", "4"]);
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, &ip_value("10.0.0.1".parse().unwrap()));
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        append_forwarded_for(&mut h, &ip_value("10.0.0.2".parse().unwrap()));
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 10.0.0.2");
        assert_eq!(last_forwarded_for(&h), Some("10.0.0.2".parse().unwrap()));
    }

    #[test]
    fn request_ids_look_like_uuids() {
        let id = new_request_id();
        let s = id.to_str().unwrap();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"), "{s}");
        assert_eq!(
            s.char_indices()
                .filter(|(_, c)| *c == '-')
                .map(|(i, _)| i)
                .collect::<Vec<_>>(),
            [8, 13, 18, 23]
        );
        assert_ne!(new_request_id(), id);
    }

    #[test]
    fn keep_alive_connection_header_costs_one_removal_and_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("keep-alive"));
        h.insert("content-length", HeaderValue::from_static("2"));
        assert!(!strip_hop_by_hop(&mut h));
        assert_eq!(h.len(), 1);
        let mut h = HeaderMap::new();
        h.append("connection", HeaderValue::from_static("close"));
        h.append("connection", HeaderValue::from_static("x-a, X-B"));
        h.insert("x-a", HeaderValue::from_static("1"));
        h.insert("x-b", HeaderValue::from_static("1"));
        h.insert("te", HeaderValue::from_static("gzip, trailers"));
        h.insert("x-c", HeaderValue::from_static("1"));
        assert!(strip_hop_by_hop(&mut h));
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-c"]);
    }
}
