//! The end-to-end tests: the real `portico` binary against real upstreams and clients on
//! 127.0.0.1. One test binary with a module per area (one link instead of one per file); run
//! one area with `cargo test -p portico --test e2e smuggling::`.

mod common;

mod acme;
mod balancing;
mod big_bodies;
mod check_cli;
mod cors_browser;
mod dashboard;
mod edge_auth;
mod edge_features;
mod edge_framing;
mod emissary_compat;
mod explain_agreement;
mod footprint;
mod gitops;
mod grpc;
mod h1_upgrade;
mod h2_edge;
mod h2_rules;
mod health;
mod http3;
mod http3_more;
mod http_versions;
mod kubernetes;
mod lifecycle;
mod limits;
mod malformed;
mod observability;
mod oneliner;
mod proxy_basics;
mod ratelimit;
mod reload;
mod resilience;
mod routing;
mod slow_readers;
mod smuggling;
mod tls;
mod upstream_tls;
mod websocket;
mod xds;
mod xds_delta;
mod xds_translate;
