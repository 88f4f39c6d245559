//! Portico's configuration: the resource schema (CONTRACT §2), validation with
//! `FILE:LINE:COL` diagnostics, and compilation into an immutable [`Snapshot`].
//!
//! No I/O beyond reading the config files (and checking that referenced files exist).
//! Entry point: [`load`].
//!
//! Module map: [`node`] (positioned YAML tree + serde bridge), [`model`] (typed resources of
//! `portico.dev/v1`), `load` (sources, envelope, schema per `apiVersion`), `compile` (semantic
//! checks and compilation), [`diag`] (diagnostics), [`snapshot`] (the data plane's view),
//! [`router`] (the route index), `route_match` (hostname ports, host/method regexes,
//! `:authority` matches).
//!
//! Semantics chosen where CONTRACT §2 is silent:
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

mod compile;
pub mod describe;
pub mod diag;
pub mod emissary;
mod load;
pub mod model;
pub mod node;
mod route_match;
pub mod router;
pub mod snapshot;

use std::path::PathBuf;
use std::sync::Arc;

pub use diag::{Diagnostic, Severity};
pub use router::{RequestView, Router};
pub use snapshot::Snapshot;

/// Where configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A YAML file, or a directory: every `*.yaml`/`*.yml` below it (sorted; hidden entries
    /// such as `.git` are skipped).
    Path(PathBuf),
    /// YAML text; `name` stands for the file name in diagnostics and `base_dir` resolves
    /// relative file paths (TLS certificates).
    Inline {
        name: String,
        text: String,
        base_dir: PathBuf,
    },
}

/// The outcome of [`load`].
#[derive(Debug)]
pub struct LoadResult {
    /// `None` iff any diagnostic has [`Severity::Error`].
    pub snapshot: Option<Snapshot>,
    /// Every problem found, sorted by source order, line and column.
    pub diagnostics: Vec<Diagnostic>,
}

impl LoadResult {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

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

/// How [`load`] treats what it does not own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Documents of kinds Portico does not read (a Deployment, a ConfigMap, ...) are errors
    /// instead of being skipped with one warning per kind (`--strict-kinds`).
    pub strict_kinds: bool,
}

static STRICT_KINDS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Sets the process-wide default of [`LoadOptions::strict_kinds`] used by [`load`] (the
/// command line's `--strict-kinds`, set once at start, so every reload follows it).
pub fn set_strict_kinds(strict: bool) {
    STRICT_KINDS.store(strict, std::sync::atomic::Ordering::Relaxed);
}

/// Reads, validates and compiles a whole config (every source together), with the
/// process-wide options (see [`set_strict_kinds`]).
pub fn load(sources: &[ConfigSource]) -> LoadResult {
    load_with(
        sources,
        LoadOptions {
            strict_kinds: STRICT_KINDS.load(std::sync::atomic::Ordering::Relaxed),
        },
    )
}

/// [`load`] with explicit options.
pub fn load_with(sources: &[ConfigSource], opts: LoadOptions) -> LoadResult {
    let mut d = load::Diags::default();
    let files = load::read_sources(sources, &mut d);
    let resources = load::parse_files(&files, &mut d, opts.strict_kinds);
    let compiled = compile::compile(&resources, &mut d);

    // Sort diagnostics by file (in read order), line, column; unreadable paths first.
    let file_order: std::collections::HashMap<&str, usize> = files
        .iter()
        .enumerate()
        .map(|(i, f)| (&*f.name, i))
        .collect();
    let mut diagnostics = d.list;
    diagnostics.sort_by_key(|x| {
        (
            file_order.get(x.file.as_str()).map_or(0, |i| i + 1),
            x.line,
            x.column,
        )
    });

    if diagnostics.iter().any(Diagnostic::is_error) {
        return LoadResult {
            snapshot: None,
            diagnostics,
        };
    }
    let mut warned: std::collections::HashMap<(&str, &str, &str), &str> =
        std::collections::HashMap::new();
    for w in &diagnostics {
        warned
            .entry((w.file.as_str(), w.kind.as_str(), w.name.as_str()))
            .or_insert(w.message.as_str());
    }
    let resources_info = resources
        .iter()
        .map(|r| snapshot::ResourceInfo {
            kind: r.kind.to_string(),
            name: r.name.clone(),
            file: r.file.to_string(),
            line: r.root.pos.line,
            status: match warned.get(&(&*r.file, r.kind, r.name.as_str())) {
                Some(w) => format!("warning: {w}"),
                None => "applied".to_string(),
            },
        })
        .collect();
    let routes: Vec<Arc<snapshot::Route>> = compiled.routes.into_iter().map(Arc::new).collect();
    let router = Router::build(&routes);
    let snapshot = Snapshot {
        listeners: compiled.listeners,
        hosts: compiled.hosts,
        routes,
        router,
        upstreams: compiled.upstreams.into_iter().map(Arc::new).collect(),
        resources: resources_info,
        access_log: None,
        rate_limit_service: compiled.rate_limit_service,
    };
    LoadResult {
        snapshot: Some(snapshot),
        diagnostics,
    }
}
