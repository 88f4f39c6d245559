//! Portico's configuration: the resource schema (docs/reference.md §2), validation with
//! `FILE:LINE:COL` diagnostics, and compilation into an immutable [`Snapshot`].
//!
//! No I/O beyond reading the config files (and checking that referenced files exist).
//! Entry point: [`load`].
//!
//! Module map: [`node`] (positioned YAML tree + serde bridge), [`model`] (typed resources of
//! `portico.dev/v1`), `load` (sources, envelope, schema per `apiVersion`), `file_parse` (files parsed in
//! parallel, [`ParseCache`] for reloads), `compile` (semantic
//! checks and compilation), [`diag`] (diagnostics), [`snapshot`] (the data plane's view),
//! [`router`] (the route index), `route_match` (hostname ports, host/method regexes,
//! `:authority` matches).
//!
//! Semantics chosen where reference §2 is silent:
//! - **Implicit upstreams** (`service: [scheme://]host:port`) are deduplicated by (protocol,
//!   `host:port`) and named `host:port` (`[v6]:port` for IPv6). If that name is taken by an
//!   implicit upstream of another protocol, the later one is named `scheme://host:port` (`h2c`,
//!   `https`, `https+h2`). A scheme without a port takes 80 (http, h2c) or 443 (https). IP hosts
//!   give `EndpointSource::Static`, names `EndpointSource::Dns` (refresh 5 s). `grpc: true` turns
//!   http into `H2c` and https into `Auto` (TLS with ALPN). https upstreams get a default
//!   `UpstreamTlsConf` with `sni` = the host name.
//! - **Upstream-level fields on a Mapping** (`load_balancer`, `health_checks`,
//!   `outlier_detection`, `circuit_breakers`, `connect_timeout_ms`): on an implicit upstream the
//!   first Mapping that sets a field sets it, and a later Mapping setting it differently is an
//!   error naming the first. On an `Upstream` resource the resource's own settings always apply;
//!   a differing Mapping-level value is ignored with a warning. A shadow's upstream never gets
//!   them.
//! - **Canary groups**: explicit weights take their percentage, the unweighted members share
//!   the rest equally; when every member has a weight and the sum is under 100 they are scaled
//!   to 100 (all 0: equal shares); a lone route has 100. So effective weights of a group always
//!   add up to 100. Regexes with different `case_sensitive` are different groups.
//! - `rewrite: ""` means no rewrite. `regex_rewrite.substitution` is converted from `\1` to
//!   `${1}` and a literal `$` to `$$`. Header/query regexes and `prefix_regex` are anchored;
//!   `regex_rewrite.pattern` is used as written.
//! - Without `retry_on` a `retry_policy` retries on `5xx,connect-failure,reset`;
//!   `num_retries` defaults to 1; giving `retriable_status_codes` implies
//!   `retriable-status-codes`.
//! - Resource names: ASCII letters, digits, `-`, `_`, `.`, alphanumeric at both ends.
//! - Directory sources skip hidden entries (`.git`, editor files).
//! - Only one `RateLimitService` may exist; `domain` defaults to `portico`; it is reached over
//!   gRPC (`H2c`, or `Auto` for `https://`). `scope: global` rate limits need one.
#![forbid(unsafe_code)]

// Request semantics the proxy and `explain` share.
pub mod request_semantics;

mod auth;
mod compile;
pub mod defaults;
pub mod describe;
pub mod diag;
pub mod emissary;
mod file_parse;
mod hostcheck;
mod load;
mod messages;
pub mod model;
pub mod node;
mod pipeline;
mod resource;
pub mod route;
pub mod router;
pub mod snapshot;

pub use diag::{Diagnostic, Severity};
pub use file_parse::ParseCache;
pub use load::ConfigSource;
pub use pipeline::{
    LoadOptions, LoadResult, LoadTimings, load, load_cached, load_with, set_strict_kinds,
};
pub use router::{RequestView, Router};
pub use snapshot::Snapshot;

/// The embedded default config: an HTTP listener on 127.0.0.1:8080 and a welcome route.
pub const DEFAULT_CONFIG: &str = r#"apiVersion: portico.dev/v1
kind: Listener
metadata: { name: default }
spec:
  address: 127.0.0.1
  port: 8080
  protocol: HTTP
---
apiVersion: portico.dev/v1
kind: Mapping
metadata: { name: welcome }
spec:
  prefix: /
  direct_response:
    status: 200
    content_type: text/plain
    body: "Welcome to Portico. Add a config with `portico run -c portico.yaml`.\n"
"#;
