//! Portico's data plane, laid out by concern:
//!
//! - `downstream/`: what faces clients: workers, listeners and connections (`server`), the
//!   own HTTP/1.1 server (`h1`), the version gate (`versions`), HTTP/2 field rules, Host rules, PROXY protocol, TLS
//!   termination, keep-alive, the overload manager and the response watchdog.
//! - `request/`: the request lifecycle as phases over one context (route, CORS, rate limits,
//!   breaker, pick, attempt, retry, respond, log), and the per-route policies they apply
//!   (compression, mirroring, deadlines, upgrades).
//! - `upstream/`: upstream runtime state (endpoints, breakers), connection pools, upstream
//!   TLS, load balancing, active health checks and outlier detection.
//! - `telemetry/`: metrics (all Prometheus rendering) and the access log.
//! - `ratelimit/`: local and global rate limits.
//! - `auth/`: edge authentication: JWT validation and external authorization (reference §9).
//! - here: the active configuration (`state`), bodies, header work and local replies, which
//!   every concern above shares.
#![forbid(unsafe_code)]

pub mod auth;
pub mod body;
pub mod downstream;
pub mod headers;
pub mod local_reply;
pub mod ratelimit;
pub mod reqbody;
pub mod request;
pub mod state;
pub mod telemetry;
pub mod upstream;

pub use downstream::server::Server;
pub use state::{Active, Proxy, ProxySettings, prepare};
