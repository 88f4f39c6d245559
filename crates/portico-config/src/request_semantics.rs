//! Request semantics the data plane and the control plane's `explain` share: how a request's
//! `:authority` becomes the host routes match, and how a route's rewrite turns the request's
//! path into the upstream's. One definition, so `explain` answers what the proxy does.

use std::borrow::Cow;

use http::Uri;
use http::uri::PathAndQuery;

use crate::snapshot::{PathMatch, Rewrite, Route};

/// The host of an authority: port stripped, lowercase (allocates only when it must).
pub fn host_of(authority: &str) -> Cow<'_, str> {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        // [v6]:port
        rest.split(']').next().unwrap_or(rest)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => authority,
        }
    };
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// The upstream path and query after the route's rewrite (`prefix_rewrite` or
/// `regex_rewrite`); the query string is kept as sent. Allocates only when the path changes.
pub fn rewrite_path(route: &Route, uri: &Uri) -> PathAndQuery {
    let path = uri.path();
    let new_path: Cow<'_, str> = match &route.rewrite {
        Rewrite::None => Cow::Borrowed(path),
        Rewrite::Prefix(to) => match &route.path {
            PathMatch::Prefix { prefix, .. } if path.len() >= prefix.len() => {
                let rest = &path[prefix.len()..];
                let mut s = String::with_capacity(to.len() + rest.len() + 1);
                s.push_str(to);
                // Avoid a doubled slash when both sides carry one.
                if to.ends_with('/') && rest.starts_with('/') {
                    s.push_str(&rest[1..]);
                } else {
                    s.push_str(rest);
                }
                Cow::Owned(s)
            }
            _ => Cow::Borrowed(to.as_str()),
        },
        Rewrite::Regex {
            regex,
            substitution,
        } => regex.replace_all(path, substitution.as_str()),
    };
    let new_path: Cow<'_, str> = if new_path.is_empty() {
        Cow::Borrowed("/")
    } else {
        new_path
    };
    if matches!(new_path, Cow::Borrowed(p) if std::ptr::eq(p, path)) {
        return uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
    }
    let full = match uri.query() {
        Some(q) => format!("{new_path}?{q}"),
        None => new_path.into_owned(),
    };
    full.parse()
        .unwrap_or_else(|_| PathAndQuery::from_static("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_strips_port_and_lowercases() {
        assert_eq!(host_of("Example.COM:8080"), "example.com");
        assert_eq!(host_of("example.com"), "example.com");
        assert_eq!(host_of("[::1]:80"), "::1");
        assert_eq!(host_of(""), "");
    }
}
