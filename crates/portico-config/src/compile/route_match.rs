//! A Mapping's hostname and method predicates, including the rarer ones Emissary users rely
//! on: a hostname carrying a port (`quote.local:8500` matches only authorities with that
//! port), `host_regex: true` (the hostname is a regex over the host), `method_regex: true`
//! (the method is a regex) and a `headers`/`regex_headers` entry on `:authority`.
//!
//! The common case (a glob and an optional method) compiles to no [`ExtraMatch`] at all, so
//! the router's hot path checks one `Option` per candidate.

use http::Method;

use super::parse::{anchored, check_host_glob, parse_method};
use crate::model::MappingSpec;
use crate::resource::{Diags, Resource};
use crate::snapshot::{ExtraMatch, HostGlob, ValueMatch};

/// The pseudo-header Emissary matches the authority with.
pub(crate) const AUTHORITY: &str = ":authority";

/// What [`compile`] makes of a Mapping's hostname, method and `:authority` matches.
pub(crate) struct HostMethod {
    pub hostname: HostGlob,
    pub method: Option<Method>,
    pub extra: Option<Box<ExtraMatch>>,
}

/// `host[:port]` split; the port must be 1-65535. IPv6 literals are not hostnames here.
pub(crate) fn split_port(s: &str) -> Result<(&str, Option<u16>), String> {
    match s.trim().rsplit_once(':') {
        None => Ok((s.trim(), None)),
        Some((h, p)) => match p.parse::<u16>() {
            Ok(n) if n > 0 && !h.is_empty() => Ok((h, Some(n))),
            _ => Err(format!(
                "invalid hostname `{s}` (a port after `:` must be 1-65535)"
            )),
        },
    }
}

pub(crate) fn compile(r: &Resource, d: &mut Diags, m: &MappingSpec) -> HostMethod {
    let mut extra = ExtraMatch::default();
    let hostname = match (&m.hostname, m.host_regex.unwrap_or(false)) {
        (None, true) => {
            r.error_key(
                d,
                &["spec", "host_regex"],
                "host_regex: true needs a hostname (the regex)",
            );
            HostGlob::Any
        }
        (None, false) => HostGlob::Any,
        (Some(h), true) => {
            // Hosts are matched lowercase: the regex ignores case.
            match anchored(h.trim(), true) {
                Ok(re) => extra.host_regex = Some(re),
                Err(e) => r.error(d, &["spec", "hostname"], e),
            }
            HostGlob::Any
        }
        (Some(h), false) => match split_port(h) {
            Ok((host, port)) => {
                extra.port = port;
                check_host_glob(host).unwrap_or_else(|e| {
                    r.error(d, &["spec", "hostname"], e);
                    HostGlob::Any
                })
            }
            Err(e) => {
                r.error(d, &["spec", "hostname"], e);
                HostGlob::Any
            }
        },
    };
    let method = match (&m.method, m.method_regex.unwrap_or(false)) {
        (None, true) => {
            r.error_key(
                d,
                &["spec", "method_regex"],
                "method_regex: true needs a method (the regex)",
            );
            None
        }
        (None, false) => None,
        (Some(s), true) => {
            match anchored(s.trim(), false) {
                Ok(re) => extra.method_regex = Some(re),
                Err(e) => r.error(d, &["spec", "method"], e),
            }
            None
        }
        (Some(s), false) => parse_method(s.trim())
            .map_err(|e| r.error(d, &["spec", "method"], e))
            .ok(),
    };
    for (name, v) in m.headers.iter().flat_map(|h| h.0.iter()) {
        if name.eq_ignore_ascii_case(AUTHORITY) {
            extra.authority = Some(if v.0.is_empty() {
                ValueMatch::Present
            } else {
                ValueMatch::Exact(v.0.clone())
            });
        }
    }
    for (name, v) in m.regex_headers.iter().flat_map(|h| h.0.iter()) {
        if name.eq_ignore_ascii_case(AUTHORITY) {
            match anchored(v, true) {
                Ok(re) => extra.authority = Some(ValueMatch::Regex(re)),
                Err(e) => r.error(d, &["spec", "regex_headers", name], e),
            }
        }
    }
    let used = extra.port.is_some()
        || extra.host_regex.is_some()
        || extra.method_regex.is_some()
        || extra.authority.is_some();
    HostMethod {
        hostname,
        method,
        extra: used.then(|| Box::new(extra)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        assert_eq!(split_port("a.test"), Ok(("a.test", None)));
        assert_eq!(split_port("a.test:8500"), Ok(("a.test", Some(8500))));
        assert!(split_port("a.test:0").is_err());
        assert!(split_port("a.test:x").is_err());
        assert!(split_port(":80").is_err());
        assert_eq!(ExtraMatch::port_of("a.test:8500"), Some(8500));
        assert_eq!(ExtraMatch::port_of("a.test"), None);
        assert_eq!(ExtraMatch::port_of("[::1]:80"), Some(80));
        assert_eq!(ExtraMatch::port_of("[::1]"), None);
    }
}
