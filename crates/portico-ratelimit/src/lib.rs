//! Global rate limiting (CONTRACT §4.1): Envoy's `envoy.service.ratelimit.v3` API (hand-written
//! prost messages and a client call, [`proto`]), the rule format of envoyproxy/ratelimit
//! ([`rules`]), and `portico ratelimit`, a server of that API whose fixed-window counters live
//! in Redis so any number of servers and proxies share one budget ([`server`]).
#![forbid(unsafe_code)]

pub mod proto;
pub mod rules;
pub mod server;
