//! The config pipeline: sources → YAML trees → typed resources (`load`) → semantic checks and
//! compilation (`compile`) → the route index (`router`) → an immutable [`Snapshot`]. The
//! caller publishes the snapshot (an atomic pointer swap in the proxy).

use std::sync::Arc;

use crate::compile;
use crate::diag::Diagnostic;
use crate::hostcheck;
use crate::load::{self, ConfigSource};
use crate::resource::Diags;
use crate::router::Router;
use crate::snapshot::{self, Snapshot};

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
    let mut d = Diags::default();
    let files = load::read_sources(sources, &mut d);
    let resources = load::parse_files(&files, &mut d, opts.strict_kinds);
    let compiled = compile::compile(&resources, &mut d);
    hostcheck::check(&resources, &mut d);

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
