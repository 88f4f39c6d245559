//! Global rate limiting (docs/reference.md §4.1): the rule format of envoyproxy/ratelimit ([`rules`]),
//! and `portico ratelimit`, a server of Envoy's `envoy.service.ratelimit.v3` API whose
//! fixed-window counters live in Redis so any number of servers and proxies share one budget
//! ([`server`]). The API's messages and client call live in the portico-rls crate (re-exported
//! here as [`proto`]), which the proxy uses without building this crate's Redis client.
#![forbid(unsafe_code)]

pub use portico_rls::proto;
pub mod rules;
pub mod server;
