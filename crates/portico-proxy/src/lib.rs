//! Portico's data plane: listeners and workers (`server`), the request lifecycle
//! (`request`: one module per phase), upstream state and connection pools (`upstream`, `pool`), load balancing
//! (`lb`), active and passive health (`health`, `outlier`), the overload manager
//! (`overload`), bodies, local replies and the access log.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod body;
pub mod compress;
pub mod cors;
pub mod deadline;
pub mod field_rules;
pub mod h1_guard;
pub mod h2_rules;
pub mod headers;
pub mod health;
pub mod host_rules;
pub mod keepalive;
pub mod lb;
pub mod local_reply;
pub mod metrics;
pub mod outlier;
pub mod overload;
pub mod pool;
pub mod proxy_protocol;
pub mod ratelimit;
pub mod request;
pub mod send_watch;
pub mod server;
pub mod shadow;
pub mod state;
pub mod tls;
pub mod upgrade;
pub mod upstream;
pub mod upstream_tls;

pub use server::Server;
pub use state::{Active, Proxy, ProxySettings, prepare};
