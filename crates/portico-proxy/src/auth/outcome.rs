//! What an external authorization check decided ([`Outcome`]), shared by the HTTP and gRPC
//! protocols, and the header changes an allowing answer makes to the upstream request.

use ::http::header::{HeaderName, HeaderValue};
use ::http::{HeaderMap, Response};

use super::call::CallError;
use crate::body::RespBody;

/// What the auth service said.
pub enum Outcome {
    /// Allowed; headers to set (replacing) on the upstream request.
    Allow(Vec<(HeaderName, HeaderValue)>),
    /// Allowed; header changes to make to the upstream request (gRPC's OK answer).
    Mutate(Vec<Mutation>),
    /// Its answer, for the client.
    Deny(Box<Response<RespBody>>),
    /// It could not be asked, or its answer could not be read.
    Error(CallError),
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
