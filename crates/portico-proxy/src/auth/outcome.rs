//! What an external authorization check decided ([`Outcome`]), shared by the HTTP and gRPC
//! protocols, and the changes an allowing answer makes: to the upstream request's headers and
//! query, and to the headers of the response the client gets.

use ::http::header::{HeaderName, HeaderValue};
use ::http::{HeaderMap, Response};

use super::call::CallError;
use crate::body::RespBody;

/// What the auth service said.
pub enum Outcome {
    /// Allowed; headers to set (replacing) on the upstream request.
    Allow(Vec<(HeaderName, HeaderValue)>),
    /// Allowed, with changes (gRPC's OK answer).
    Mutate(Box<OkChanges>),
    /// Its answer, for the client.
    Deny(Box<Response<RespBody>>),
    /// It could not be asked, or its answer could not be read.
    Error(CallError),
}

/// What a gRPC OK answer asks to change.
#[derive(Default)]
pub struct OkChanges {
    /// Upstream request headers (`headers`, `headers_to_remove`).
    pub request: Vec<Mutation>,
    /// Headers of the response the client gets (`response_headers_to_add`).
    pub response: Vec<Mutation>,
    /// Query parameters set on the upstream request, replacing any of the same name
    /// (`query_parameters_to_set`).
    pub query_set: Vec<(String, String)>,
    /// Query parameters removed from the upstream request (`query_parameters_to_remove`).
    pub query_remove: Vec<String>,
}

/// A header change an OK answer asks for.
pub enum Mutation {
    /// Name, value, and whether to append (else replace).
    Set(HeaderName, HeaderValue, bool),
    /// Only when the header is absent.
    AddIfAbsent(HeaderName, HeaderValue),
    /// Only when the header is present.
    OverwriteIfExists(HeaderName, HeaderValue),
    Remove(HeaderName),
}

/// Applies an OK answer's header changes to the upstream request.
pub fn apply(headers: &mut HeaderMap, set: Vec<Mutation>) {
    for m in set {
        match m {
            Mutation::Set(n, v, true) => {
                headers.append(n, v);
            }
            Mutation::Set(n, v, false) => {
                headers.insert(n, v);
            }
            Mutation::AddIfAbsent(n, v) => {
                if !headers.contains_key(&n) {
                    headers.insert(n, v);
                }
            }
            Mutation::OverwriteIfExists(n, v) => {
                if headers.contains_key(&n) {
                    headers.insert(n, v);
                }
            }
            Mutation::Remove(n) => {
                headers.remove(n);
            }
        }
    }
}

/// The request target with the query changed: parameters named in `remove` or `set` dropped
/// (compared decoded), then `set` appended, form-encoded. `None` when nothing changes.
pub fn rewrite_query(
    path_and_query: &str,
    set: &[(String, String)],
    remove: &[String],
) -> Option<String> {
    if set.is_empty() && remove.is_empty() {
        return None;
    }
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, q),
        None => (path_and_query, ""),
    };
    let dropped =
        |name: &str| remove.iter().any(|r| r == name) || set.iter().any(|(k, _)| k == name);
    // The kept pairs stay byte for byte as the client sent them.
    let mut kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let raw = pair.split_once('=').map_or(*pair, |(k, _)| k);
            let name: String = form_urlencoded::parse(raw.as_bytes())
                .next()
                .map(|(k, _)| k.into_owned())
                .unwrap_or_default();
            !dropped(&name)
        })
        .collect();
    let added = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(set.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .finish();
    if !added.is_empty() {
        kept.push(&added);
    }
    let mut out = String::with_capacity(path_and_query.len() + added.len() + 1);
    out.push_str(path);
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn query_parameters_are_set_and_removed() {
        assert_eq!(rewrite_query("/a?x=1", &[], &[]), None);
        assert_eq!(
            rewrite_query("/a?x=1&y=2&x=3&z", &[s("x", "new value")], &["z".into()]).as_deref(),
            Some("/a?y=2&x=new+value")
        );
        assert_eq!(
            rewrite_query("/a", &[s("t", "a&b")], &[]).as_deref(),
            Some("/a?t=a%26b")
        );
        assert_eq!(
            rewrite_query("/a?only=1", &[], &["only".into()]).as_deref(),
            Some("/a")
        );
        // Encoded names are compared decoded; other pairs keep their bytes.
        assert_eq!(
            rewrite_query("/a?k%65y=1&keep=%2F", &[], &["key".into()]).as_deref(),
            Some("/a?keep=%2F")
        );
    }
}
