//! What the phases see of a request and of the connection it came on: [`Head`] (method, URI,
//! authority, headers; borrowed, whatever protocol carried the request) and [`ConnInfo`].

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Uri, Version};
use portico_config::snapshot::ListenerConf;

use crate::headers;

/// What the connection layer knows about the connection a request came on.
#[derive(Debug)]
pub struct ConnInfo {
    /// The client's address (the PROXY-protocol source where there is one).
    pub peer: SocketAddr,
    pub listener: Arc<ListenerConf>,
    pub tls: bool,
    /// The verified client certificate (mTLS), as its `x-forwarded-client-cert` value.
    pub client_cert: Option<HeaderValue>,
    /// `peer`'s IP as a header value, rendered once per connection for `x-forwarded-for`.
    pub peer_ip: HeaderValue,
    /// `alt-svc: h3=":PORT"; ma=86400` for the TCP side of a listener with `http3`, rendered
    /// once per connection (reference §10); `None` on HTTP/3 connections and other listeners.
    pub alt_svc: Option<HeaderValue>,
}

impl ConnInfo {
    pub fn new(
        peer: SocketAddr,
        listener: Arc<ListenerConf>,
        tls: bool,
        client_cert: Option<HeaderValue>,
    ) -> ConnInfo {
        ConnInfo {
            peer,
            tls,
            client_cert,
            peer_ip: headers::ip_value(peer.ip()),
            listener: listener.clone(),
            alt_svc: (listener.http3 && tls)
                .then(|| HeaderValue::try_from(format!("h3=\":{}\"; ma=86400", listener.port)).ok())
                .flatten(),
        }
    }
}

/// A request head as the phases see it, whatever protocol carried it: borrowed, no copy.
#[derive(Debug, Clone, Copy)]
pub struct Head<'a> {
    pub method: &'a Method,
    /// Path and query (and, from HTTP/2 or an absolute-form request, the authority).
    pub uri: &'a Uri,
    /// `:authority` (HTTP/2) or the Host header (HTTP/1.1); empty when neither is there.
    pub authority: &'a str,
    pub headers: &'a HeaderMap,
    /// The request came over HTTP/2 or HTTP/3 (no `connection` header on replies).
    pub http2: bool,
    /// The request came over HTTP/3.
    pub http3: bool,
}

impl<'a> Head<'a> {
    /// The head of an `http` request.
    pub fn of<B>(req: &'a Request<B>) -> Head<'a> {
        let uri = req.uri();
        let authority = uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| {
                req.headers()
                    .get(header::HOST)
                    .and_then(|v| v.to_str().ok())
            })
            .unwrap_or("");
        Head {
            method: req.method(),
            uri,
            authority,
            headers: req.headers(),
            http2: req.version() >= Version::HTTP_2,
            http3: req.version() == Version::HTTP_3,
        }
    }

    /// The path, without the query.
    pub fn path(&self) -> &'a str {
        self.uri.path()
    }

    pub fn query(&self) -> Option<&'a str> {
        self.uri.query()
    }

    /// Path and query as sent (`/` when absent).
    pub fn path_and_query(&self) -> &'a str {
        self.uri.path_and_query().map_or("/", |p| p.as_str())
    }
}
