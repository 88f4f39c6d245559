//! Envoy's rate limit service API (`envoy.service.ratelimit.v3`) for global rate limiting:
//! hand-written prost messages and the client call ([`proto`]). The proxy depends on this crate
//! alone; `portico ratelimit` (the portico-ratelimit crate, which serves the same messages from
//! Redis-backed counters) depends on it too, so the proxy does not build the Redis client.

#![forbid(unsafe_code)]

pub mod proto;
