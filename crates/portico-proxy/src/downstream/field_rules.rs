//! Field rules shared by every HTTP version: what a header or trailer value may hold, and which
//! fields may not come in a trailer section. Used by the HTTP/2 request check (`h2_rules`) and by
//! the request body reader (`body`), which sees trailers.

/// Checks a request's trailer section (any HTTP version). The field rules are those of the
/// header section (RFC 9113 §8.2.1 for HTTP/2, where `h2` leaves surrounding whitespace to
/// Portico), and fields that decide framing, routing or the connection must not come late
/// (RFC 9110 §6.5.1): an upstream that merged them into the header section would read
/// another request than the one Portico routed. `Err` names the broken rule.
pub fn check_trailers(trailers: &http::HeaderMap) -> Result<(), &'static str> {
    for (name, value) in trailers {
        if !value_ok(value.as_bytes()) {
            return Err("trailer value with leading or trailing whitespace or NUL/CR/LF");
        }
        if matches!(
            name.as_str(),
            "content-length"
                | "transfer-encoding"
                | "host"
                | "connection"
                | "keep-alive"
                | "proxy-connection"
                | "upgrade"
                | "te"
                | "trailer"
                | "content-type"
                | "content-encoding"
                | "authorization"
                | "cookie"
        ) {
            return Err("a field that is not allowed in trailers");
        }
    }
    Ok(())
}

/// RFC 9113 §8.2.1: no NUL, CR or LF anywhere, no SP or HTAB first or last. (`h2` already
/// refuses the control bytes; they are checked again because the rule is one.)
pub fn value_ok(v: &[u8]) -> bool {
    match (v.first(), v.last()) {
        (Some(b' ' | b'\t'), _) | (_, Some(b' ' | b'\t')) => false,
        _ => memchr::memchr3(0, b'\r', b'\n', v).is_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailer_rules() {
        let mut t = http::HeaderMap::new();
        t.insert("grpc-status", http::HeaderValue::from_static("0"));
        assert!(check_trailers(&t).is_ok());
        t.insert("x-sum", http::HeaderValue::from_static(" abc"));
        assert!(check_trailers(&t).is_err());
        let mut t = http::HeaderMap::new();
        t.insert("content-length", http::HeaderValue::from_static("5"));
        assert!(check_trailers(&t).is_err());
        let mut t = http::HeaderMap::new();
        t.insert("host", http::HeaderValue::from_static("evil.example"));
        assert!(check_trailers(&t).is_err());
    }
}
