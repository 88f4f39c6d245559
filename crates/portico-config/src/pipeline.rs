//! The config pipeline: sources → YAML trees → typed resources (`load`) → semantic checks and
//! compilation (`compile`) → the route index (`router`) → an immutable [`Snapshot`]. The
//! caller publishes the snapshot (an atomic pointer swap in the proxy).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::compile;
use crate::diag::Diagnostic;
use crate::emissary;
use crate::file_parse::{self, ParseCache};
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
    /// How long each stage took (for the reload log and the timing tests).
    pub timings: LoadTimings,
}

/// Wall-clock time of each stage of [`load`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadTimings {
    /// Walking directories and reading files.
    pub read: Duration,
    /// YAML parsing, the envelope and typed deserialization of every file.
    pub parse: Duration,
    /// Duplicate names and the Emissary translation (needs every file).
    pub resolve: Duration,
    /// Semantic checks and compilation, including the hostname hint.
    pub compile: Duration,
    /// The route index and the snapshot.
    pub index: Duration,
    /// Everything, including sorting the diagnostics.
    pub total: Duration,
    /// Files parsed, and files whose earlier parse was reused (see [`load_cached`]).
    pub files_parsed: usize,
    pub files_reused: usize,
}

impl std::fmt::Display for LoadTimings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        write!(
            f,
            "read {:.1} ms, parse {:.1} ms ({} files, {} reused), resolve {:.1} ms, \
             compile {:.1} ms, index {:.1} ms, total {:.1} ms",
            ms(self.read),
            ms(self.parse),
            self.files_parsed,
            self.files_reused,
            ms(self.resolve),
            ms(self.compile),
            ms(self.index),
            ms(self.total)
        )
    }
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
    load_inner(sources, opts, None)
}

/// [`load`] that reuses, from `cache`, the parse of every file that has not changed since the
/// last call with the same cache (reloads), and leaves this load's files in it.
pub fn load_cached(sources: &[ConfigSource], cache: &ParseCache) -> LoadResult {
    load_inner(
        sources,
        LoadOptions {
            strict_kinds: STRICT_KINDS.load(std::sync::atomic::Ordering::Relaxed),
        },
        Some(cache),
    )
}

fn load_inner(
    sources: &[ConfigSource],
    opts: LoadOptions,
    cache: Option<&ParseCache>,
) -> LoadResult {
    let start = Instant::now();
    let mut timings = LoadTimings::default();
    let mut lap = start;
    let mut stage = |slot: &mut Duration| {
        let now = Instant::now();
        *slot = now - lap;
        lap = now;
    };
    let mut d = Diags::default();
    let files = load::read_sources(sources, &mut d);
    stage(&mut timings.read);
    let parsed = file_parse::parse_files(&files, &mut d, opts.strict_kinds, cache);
    let mut resources = parsed.resources;
    (timings.files_parsed, timings.files_reused) = (parsed.parsed, parsed.reused);
    stage(&mut timings.parse);
    load::check_duplicate_names(&resources, &mut d);
    emissary::resolve(&mut resources, &mut d);
    stage(&mut timings.resolve);
    let compiled = compile::compile(&resources, &mut d);
    hostcheck::check(&resources, &mut d);
    stage(&mut timings.compile);

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
        timings.total = start.elapsed();
        return LoadResult {
            snapshot: None,
            diagnostics,
            timings,
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
        auth_service: compiled.auth_service,
        jwt_providers: compiled.jwt_providers,
    };
    timings.index = lap.elapsed();
    timings.total = start.elapsed();
    LoadResult {
        snapshot: Some(snapshot),
        diagnostics,
        timings,
    }
}
