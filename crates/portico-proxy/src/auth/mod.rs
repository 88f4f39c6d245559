//! Edge authentication (reference §9): after the CORS preflight and before the rate limits,
//! a route with `jwt` has its bearer token validated (`jwt.rs`, keys from `jwks.rs`), then
//! every route but those with `bypass_auth` is checked with the `AuthService` (`http.rs`,
//! Emissary's HTTP protocol; `grpc.rs`, Envoy's `Authorization/Check`). Both side calls go
//! through Portico's own upstream client (`call.rs`).
//!
//! Verified tokens are remembered per worker (`cache.rs`, bounded, until `exp`).
//!
//! The request path calls [`authorize`] once ([`needed`] says whether to); it answers with
//! the denial to send, or lets the request through with the headers auth adds (forwarded
//! claims, the auth service's `allowed_authorization_headers`) already set.

pub mod body;
pub mod cache;
mod call;
mod grpc;
mod http;
pub mod jwks;
pub mod jwt;
mod outcome;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use ::http::header::{self, HeaderValue};
use ::http::{Request, Response, StatusCode, Uri};
use portico_config::Snapshot;
use portico_config::snapshot::{AuthProto, AuthServiceConf, JwtProviderConf, Route};

use crate::body::RespBody;
use crate::local_reply::{Flag, text_reply};
use crate::request::ConnInfo;
use crate::upstream::UpstreamState;
use jwks::KeyStore;
use jwt::{Reason, Verifier};
pub use outcome::{Mutation, apply as apply_mutations};
use outcome::{OkChanges, Outcome};

/// `portico_auth_checks_total` and `portico_jwt_validations_total`.
#[derive(Debug, Default)]
pub struct AuthCounters {
    pub allowed: AtomicU64,
    pub denied: AtomicU64,
    pub error: AtomicU64,
    pub jwt_valid: AtomicU64,
    pub jwt_rejected: AtomicU64,
    pub jwt_missing: AtomicU64,
}

/// One `JWTProvider` at run time.
struct Provider {
    conf: JwtProviderConf,
    store: Arc<KeyStore>,
    verifier: Verifier,
}

/// The run-time state of edge authentication for one configuration.
pub struct AuthState {
    /// Indexed like `Snapshot::jwt_providers`.
    providers: Vec<Provider>,
}

impl std::fmt::Debug for AuthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthState")
            .field("providers", &self.providers.len())
            .finish()
    }
}

impl AuthState {
    /// Key stores for `snapshot`'s providers: a provider whose settings did not change keeps
    /// its keys (and refresh task); others load theirs (a file now, a URL in the background).
    /// Must run inside the runtime that outlives the configuration (it spawns the refreshes).
    pub fn build(
        snapshot: &Snapshot,
        upstreams: &[Arc<UpstreamState>],
        previous: Option<&AuthState>,
    ) -> Arc<AuthState> {
        let providers = snapshot
            .jwt_providers
            .iter()
            .map(|conf| {
                let kept = previous
                    .and_then(|p| p.providers.iter().find(|old| old.conf == *conf))
                    .map(|old| old.store.clone());
                let store = kept.unwrap_or_else(|| {
                    let up = match &conf.keys {
                        portico_config::snapshot::JwksSource::Uri { upstream, .. } => {
                            upstreams.get(*upstream).cloned()
                        }
                        portico_config::snapshot::JwksSource::File(_) => None,
                    };
                    KeyStore::start(conf, up)
                });
                Provider {
                    conf: conf.clone(),
                    store,
                    verifier: Verifier::new(conf),
                }
            })
            .collect();
        Arc::new(AuthState { providers })
    }
}

/// Whether `route` has an auth step in `snapshot`.
pub fn needed(snapshot: &Snapshot, route: &Route) -> bool {
    route.auth.jwt.is_some() || (snapshot.auth_service.is_some() && !route.auth.bypass)
}

/// A request auth refused: the answer and its flag.
pub struct Denied {
    pub resp: Box<Response<RespBody>>,
    pub flag: Flag,
}

/// A request auth let through.
#[derive(Default)]
pub struct Allowed {
    /// UAEX when the auth service failed and `failure_mode_allow` let the request through.
    pub flag: Option<Flag>,
    /// Header changes for the response the client gets (a gRPC OK answer's
    /// `response_headers_to_add`); empty (no allocation) otherwise.
    pub response_headers: Vec<Mutation>,
}

/// What the request path hands auth.
pub struct Inputs<'a> {
    pub snapshot: &'a Snapshot,
    pub state: &'a AuthState,
    pub upstreams: &'a [Arc<UpstreamState>],
    pub counters: &'a AuthCounters,
    pub conn: &'a ConnInfo,
    /// The request's authority (Host or `:authority`).
    pub authority: &'a str,
    /// A gRPC request (local replies in gRPC form).
    pub grpc: bool,
}

/// The `include_body` settings when `route`'s requests go to the `AuthService` with a body.
pub fn include_body<'a>(snapshot: &'a Snapshot, route: &Route) -> Option<&'a AuthServiceConf> {
    snapshot
        .auth_service
        .as_ref()
        .filter(|c| c.include_body.is_some() && !route.auth.bypass)
}

/// JWT, then external authorization (with `check_body`, what `include_body` read).
/// `Ok` carries UAEX when the auth service failed and `failure_mode_allow` let the request
/// through, and the header changes for the client's response.
pub async fn authorize<B>(
    inp: &Inputs<'_>,
    route: &Route,
    req: &mut Request<B>,
    check_body: Option<bytes::Bytes>,
) -> Result<Allowed, Denied> {
    if let Some(j) = &route.auth.jwt
        && let Some(p) = inp.state.providers.get(j.provider)
    {
        jwt_phase(inp, p, j.required, req)?;
    }
    match &inp.snapshot.auth_service {
        Some(conf) if !route.auth.bypass => external(inp, conf, route, req, check_body).await,
        _ => Ok(Allowed::default()),
    }
}

/// The JWT phase: the token validated and its claims forwarded, or a 401.
fn jwt_phase<B>(
    inp: &Inputs<'_>,
    p: &Provider,
    required: bool,
    req: &mut Request<B>,
) -> Result<(), Denied> {
    let c = inp.counters;
    // The client never sets the headers claims are forwarded in.
    for (_, h) in &p.conf.forward_claims {
        req.headers_mut().remove(h);
    }
    let verified = match jwt::token_of(&p.conf, req.headers(), req.uri().query()) {
        Ok(None) if !required => {
            c.jwt_missing.fetch_add(1, Relaxed);
            return Ok(());
        }
        Ok(None) => Err(Reason::Missing),
        Err(r) => Err(r),
        Ok(Some(token)) => {
            let keys = p.store.keys.load();
            match cache::get(p.store.id, keys.generation, &token) {
                Some(headers) => Ok(headers),
                None => {
                    let r = p.verifier.verify(&token, &keys);
                    if r == Err(Reason::UnknownKey) {
                        p.store.unknown_kid();
                    }
                    r.map(|claims| {
                        let headers: cache::Forwarded = jwt::forwarded(&p.conf, &claims).into();
                        let exp = claims.get("exp").and_then(|e| e.as_u64());
                        let skew = p.conf.clock_skew.as_millis().div_ceil(1000) as u64;
                        cache::put(
                            p.store.id,
                            keys.generation,
                            &token,
                            exp,
                            skew,
                            headers.clone(),
                        );
                        headers
                    })
                }
            }
        }
    };
    match verified {
        Ok(headers) => {
            c.jwt_valid.fetch_add(1, Relaxed);
            for (k, v) in headers.iter() {
                req.headers_mut().insert(k.clone(), v.clone());
            }
            Ok(())
        }
        Err(reason) => {
            if reason == Reason::Missing {
                c.jwt_missing.fetch_add(1, Relaxed);
            } else {
                c.jwt_rejected.fetch_add(1, Relaxed);
            }
            tracing::debug!(provider = %p.conf.name, reason = reason.as_str(), "JWT rejected");
            Err(Denied {
                resp: Box::new(jwt_reply(reason, inp.grpc)),
                flag: Flag::JWT,
            })
        }
    }
}

/// The 401 of a refused token: `www-authenticate` (with `error="invalid_token"` unless the
/// token was missing) and the reason as the body (or `grpc-message`).
pub fn jwt_reply(reason: Reason, grpc: bool) -> Response<RespBody> {
    let mut resp = crate::local_reply::local_reply(Flag::JWT, grpc, Some(reason.as_str()));
    let challenge = if reason == Reason::Missing {
        "Bearer realm=\"portico\""
    } else {
        "Bearer realm=\"portico\", error=\"invalid_token\""
    };
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    resp
}

/// The external authorization phase.
async fn external<B>(
    inp: &Inputs<'_>,
    conf: &AuthServiceConf,
    route: &Route,
    req: &mut Request<B>,
    check_body: Option<bytes::Bytes>,
) -> Result<Allowed, Denied> {
    let c = inp.counters;
    let outcome = match inp.upstreams.get(conf.upstream) {
        None => Outcome::Error(call::CallError::NoEndpoint),
        Some(up) => match conf.proto {
            AuthProto::Http => {
                http::check(conf, up, req, inp.authority, inp.conn, check_body).await
            }
            AuthProto::Grpc => {
                grpc::check(conf, up, route, req, inp.authority, inp.conn, check_body).await
            }
        },
    };
    match outcome {
        Outcome::Mutate(ch) => {
            c.allowed.fetch_add(1, Relaxed);
            let OkChanges {
                request,
                response,
                query_set,
                query_remove,
            } = *ch;
            outcome::apply(req.headers_mut(), request);
            let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
            if let Some(new) = outcome::rewrite_query(target, &query_set, &query_remove) {
                let mut parts = req.uri().clone().into_parts();
                match new.parse() {
                    Ok(pq) => {
                        parts.path_and_query = Some(pq);
                        if let Ok(uri) = Uri::from_parts(parts) {
                            *req.uri_mut() = uri;
                        }
                    }
                    Err(_) => tracing::warn!(
                        auth_service = %conf.name,
                        "the auth service's query parameter changes make no valid request target; not applied"
                    ),
                }
            }
            Ok(Allowed {
                flag: None,
                response_headers: response,
            })
        }
        Outcome::Allow(headers) => {
            c.allowed.fetch_add(1, Relaxed);
            for (k, _) in &headers {
                req.headers_mut().remove(k);
            }
            for (k, v) in headers {
                req.headers_mut().append(k, v);
            }
            Ok(Allowed::default())
        }
        Outcome::Deny(resp) => {
            c.denied.fetch_add(1, Relaxed);
            Err(Denied {
                resp,
                flag: Flag::UAEX,
            })
        }
        Outcome::Error(e) => {
            c.error.fetch_add(1, Relaxed);
            tracing::warn!(
                auth_service = %conf.name,
                error = e.as_str(),
                failure_mode_allow = conf.failure_mode_allow,
                "external authorization failed"
            );
            if conf.failure_mode_allow {
                return Ok(Allowed {
                    flag: Some(Flag::UAEX),
                    response_headers: Vec::new(),
                });
            }
            Err(Denied {
                resp: Box::new(error_reply(conf.status_on_error, inp.grpc)),
                flag: Flag::UAEX,
            })
        }
    }
}

/// The answer when the auth service failed: `status_on_error`, one line of text (gRPC: 16
/// UNAUTHENTICATED for 401, else 7 PERMISSION_DENIED).
fn error_reply(status: u16, grpc: bool) -> Response<RespBody> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
    if grpc {
        let code = if status == StatusCode::UNAUTHORIZED {
            "16"
        } else {
            "7"
        };
        let mut resp = Response::new(RespBody::empty());
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert("grpc-status", HeaderValue::from_static(code));
        h.insert(
            "grpc-message",
            HeaderValue::from_static("external authorization failed"),
        );
        return resp;
    }
    text_reply(status, "external authorization failed")
}
