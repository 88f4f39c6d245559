//! What faces clients: accepting connections and guarding what they send before a request
//! reaches the request phases (`crate::request`).

pub mod acme;
pub mod field_rules;
pub mod h1;
pub mod h2_rules;
pub mod h2_streams;
pub mod h3;
pub mod host_rules;
pub mod keepalive;
pub mod overload;
pub mod proxy_protocol;
pub mod send_watch;
pub mod server;
pub mod tls;
pub mod versions;
