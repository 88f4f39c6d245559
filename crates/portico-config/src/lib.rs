//! Portico's configuration: the resource schema (CONTRACT §2), validation with
//! `FILE:LINE:COL` diagnostics, and compilation into an immutable [`Snapshot`].
//!
//! No I/O beyond reading the config files (and checking that referenced files exist).
//! Entry point: [`load`].
#![forbid(unsafe_code)]

mod compile;
pub mod diag;
mod load;
pub mod model;
pub mod node;
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

/// Reads, validates and compiles a whole config (every source together).
pub fn load(sources: &[ConfigSource]) -> LoadResult {
    let mut d = load::Diags::default();
    let files = load::read_sources(sources, &mut d);
    let resources = load::parse_files(&files, &mut d);
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
