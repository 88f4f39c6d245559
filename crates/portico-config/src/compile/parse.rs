//! Text forms shared by the resource compilers: durations, regexes (anchored, one-line
//! errors), header names and values, methods, `host[:port]` authorities, hostname globs,
//! Emissary-style substitutions, CORS origin globs, and files referenced by a resource.

use std::path::Path;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use regex::{Regex, RegexBuilder};

use crate::resource::{Diags, Resource};
use crate::snapshot::HostGlob;

pub(super) fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

pub(super) fn nonzero_ms(v: u64) -> Option<Duration> {
    (v > 0).then(|| ms(v))
}

pub(super) fn p<'a>(base: &[&'a str], tail: &[&'a str]) -> Vec<&'a str> {
    let mut v = Vec::with_capacity(base.len() + tail.len());
    v.extend_from_slice(base);
    v.extend_from_slice(tail);
    v
}

/// The one-line reason of a regex error.
pub(super) fn regex_reason(e: &regex::Error) -> String {
    let s = e.to_string();
    let reason = s
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("invalid");
    reason.trim_start_matches("error: ").to_string()
}

/// Compiles `^(?:src)$`.
pub(crate) fn anchored(src: &str, case_insensitive: bool) -> Result<Regex, String> {
    RegexBuilder::new(&format!("^(?:{src})$"))
        .case_insensitive(case_insensitive)
        .build()
        .map_err(|e| format!("invalid regex `{src}`: {}", regex_reason(&e)))
}

pub(super) fn header_name(s: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(s.as_bytes()).map_err(|_| format!("invalid header name `{s}`"))
}

pub(super) fn header_value(s: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(s).map_err(|_| format!("invalid header value `{}`", s.escape_debug()))
}

pub(crate) fn parse_method(s: &str) -> Result<Method, String> {
    let ok = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_');
    match Method::from_bytes(s.as_bytes()) {
        Ok(m) if ok => Ok(m),
        _ => Err(format!(
            "invalid method `{s}` (expected an uppercase HTTP method such as GET)"
        )),
    }
}

/// `host[:port]`, with IPv6 literals in brackets. Host is lowercased.
pub(super) fn parse_authority(s: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("invalid address `{s}`: missing `]`"))?;
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("invalid IPv6 address `{h}`"));
        }
        match after {
            "" => (h, None),
            _ => match after.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None => return Err(format!("invalid address `{s}`")),
            },
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => {
                return Err(format!(
                    "invalid address `{s}`: write IPv6 addresses as [addr]:port"
                ));
            }
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let valid_host = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':'));
    if !valid_host {
        return Err(format!("invalid host `{host}` in `{s}`"));
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => Some(n),
            _ => return Err(format!("invalid port `{p}` in `{s}` (expected 1-65535)")),
        },
    };
    Ok((host.to_ascii_lowercase(), port))
}

pub(super) fn fmt_authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Hostname glob syntax: `*`, `*.suffix` or a name.
pub(crate) fn check_host_glob(s: &str) -> Result<HostGlob, String> {
    let t = s.trim();
    let body = t.strip_prefix("*.").unwrap_or(t);
    let ok = t == "*"
        || (!body.is_empty()
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')));
    if ok {
        Ok(HostGlob::parse(t))
    } else {
        Err(format!(
            "invalid hostname `{s}` (expected `*`, `*.example.com` or a host name, without a port)"
        ))
    }
}

/// Converts an Emissary/RE2 substitution (`\1`) into `regex` syntax (`${1}`), escaping `$`.
pub(crate) fn convert_substitution(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek().copied() {
                Some(d) if d.is_ascii_digit() => {
                    let mut n = String::new();
                    while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                        n.push(d);
                        chars.next();
                    }
                    out.push_str("${");
                    out.push_str(&n);
                    out.push('}');
                }
                Some('\\') => {
                    chars.next();
                    out.push('\\');
                }
                _ => out.push('\\'),
            },
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

/// A CORS origin glob (`https://*.example.com`) as an anchored, case-insensitive regex.
pub(super) fn origin_glob(s: &str) -> Result<Regex, String> {
    let pattern: Vec<String> = s.split('*').map(regex::escape).collect();
    anchored(&pattern.join("[^/]*"), true)
}

pub(super) fn path_of(base: &Path, file: &str) -> std::path::PathBuf {
    let p = Path::new(file);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

pub(super) fn check_files(
    d: &mut Diags,
    r: &Resource,
    base: &[&str],
    files: &[(&str, Option<&String>)],
) -> Vec<Option<std::path::PathBuf>> {
    files
        .iter()
        .map(|(field, f)| {
            let f = (*f)?;
            let path = path_of(&r.base_dir, f);
            if !path.is_file() {
                r.error(
                    d,
                    &p(base, &[field]),
                    format!(
                        "{field} `{f}` does not exist (resolved to {})",
                        path.display()
                    ),
                );
            }
            Some(path)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitution_conversion() {
        assert_eq!(convert_substitution("/\\1"), "/${1}");
        assert_eq!(convert_substitution("/a/\\12/\\2"), "/a/${12}/${2}");
        assert_eq!(convert_substitution("$5 \\\\ x"), "$$5 \\ x");
        assert_eq!(convert_substitution("plain"), "plain");
    }

    #[test]
    fn authorities() {
        assert_eq!(
            parse_authority("Quote:8080"),
            Ok(("quote".into(), Some(8080)))
        );
        assert_eq!(parse_authority("quote"), Ok(("quote".into(), None)));
        assert_eq!(parse_authority("[::1]:80"), Ok(("::1".into(), Some(80))));
        assert!(parse_authority("::1:80").is_err());
        assert!(parse_authority("a:0").is_err());
        assert!(parse_authority("a:x").is_err());
        assert!(parse_authority("a b:1").is_err());
        assert!(parse_authority(":80").is_err());
        assert_eq!(fmt_authority("::1", 80), "[::1]:80");
    }

    #[test]
    fn host_globs() {
        assert_eq!(check_host_glob("*"), Ok(HostGlob::Any));
        assert_eq!(
            check_host_glob("*.A.com"),
            Ok(HostGlob::Suffix(".a.com".into()))
        );
        assert_eq!(
            check_host_glob("a.com"),
            Ok(HostGlob::Exact("a.com".into()))
        );
        assert!(check_host_glob("*a.com").is_err());
        assert!(check_host_glob("a.com:80").is_err());
        assert!(check_host_glob("a.*.com").is_err());
    }

    #[test]
    fn methods() {
        assert_eq!(parse_method("GET"), Ok(Method::GET));
        assert!(parse_method("PURGE").is_ok());
        assert!(parse_method("get").is_err());
        assert!(parse_method("").is_err());
        assert!(parse_method("G T").is_err());
    }

    #[test]
    fn origins_and_regexes() {
        let re = origin_glob("https://*.example.com").unwrap_or_else(|e| panic!("{e}"));
        assert!(re.is_match("https://a.example.com"));
        assert!(re.is_match("HTTPS://A.EXAMPLE.COM"));
        assert!(!re.is_match("https://a.example.com.evil"));
        assert!(!re.is_match("http://a.example.com"));
        let re = anchored("/a|/b", false).unwrap_or_else(|e| panic!("{e}"));
        assert!(re.is_match("/b") && !re.is_match("/b/c"));
        let e = anchored("(", false).err().unwrap_or_default();
        assert!(
            e.starts_with("invalid regex `(`: ") && !e.contains('\n'),
            "{e}"
        );
    }
}
