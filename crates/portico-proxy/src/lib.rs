//! Portico's data plane: listeners and workers (`server`), the request lifecycle
//! (`handler`), upstream state and connection pools (`upstream`, `pool`), bodies, local
//! replies and the access log.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod body;
pub mod deadline;
pub mod h1_guard;
pub mod handler;
pub mod headers;
pub mod local_reply;
pub mod metrics;
pub mod pool;
pub mod ratelimit;
pub mod retry;
pub mod server;
pub mod state;
pub mod upstream;

pub use server::Server;
pub use state::{Active, Proxy, ProxySettings, prepare};
