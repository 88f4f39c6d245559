//! Reloading: read the sources, validate and compile off the request path, prepare runtime
//! state, swap it in atomically, and reconcile listeners. Reloads are serialized; a rejected
//! config leaves the running one untouched and is reported in the log, in `/config` and in
//! the reload counters.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use portico_config::diag::{Diagnostic, Severity};
use portico_config::{ConfigSource, LoadTimings, ParseCache, Snapshot};
use portico_proxy::{Proxy, Server};
use serde_json::{Value, json};

/// The outcome of one reload.
#[derive(Debug)]
pub enum Outcome {
    Applied { generation: u64 },
    Rejected { errors: Vec<String> },
}

/// What `/config` reports about the last rejected config.
#[derive(Debug, Clone)]
pub struct LastError {
    pub at: SystemTime,
    pub errors: Vec<String>,
    pub commit: Option<String>,
}

/// Status for the admin API.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub last_error: Option<LastError>,
    /// Resources of the applied config with their status.
    pub resources: Vec<Value>,
    /// The applied git commit (git source only).
    pub commit: Option<String>,
}

/// How many reloads `/config.history` keeps.
pub const HISTORY_LEN: usize = 20;

/// One reload attempt, as `/config.history` and the dashboard show it.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    pub at: SystemTime,
    /// What asked for it: `start`, `file change`, `SIGHUP`, `admin`, `git poll`, ...
    pub trigger: String,
    /// The generation serving afterwards (the new one when applied, the old one when not).
    pub generation: u64,
    /// The git commit tried (git source only).
    pub commit: Option<String>,
    /// The config files or directories read (file sources).
    pub files: Vec<String>,
    pub applied: bool,
    pub errors: Vec<String>,
}

/// Reload counters (exported as metrics).
#[derive(Debug, Default)]
pub struct ReloadCounters {
    pub applied: AtomicU64,
    pub rejected: AtomicU64,
}

/// The control plane's handle on the running proxy.
pub struct Controller {
    pub sources: Vec<ConfigSource>,
    /// JSON for `/config.source`.
    pub source_desc: Value,
    pub proxy: Arc<Proxy>,
    pub server: Arc<Server>,
    pub status: ArcSwap<Status>,
    pub counters: ReloadCounters,
    /// The git source, when running with `--git` (set once at start).
    pub git: std::sync::OnceLock<Arc<crate::git::GitSource>>,
    /// The ACME certificate manager (set once at start by `portico run`).
    pub acme: std::sync::OnceLock<Arc<portico_acme::Manager>>,
    /// The last [`HISTORY_LEN`] reloads, oldest first (admin API only, never the request path).
    history: Mutex<VecDeque<HistoryEntry>>,
    /// Recent rates and latencies for the dashboard.
    pub series: Arc<crate::series::Series>,
    /// Each config file's parse from the last load, so a reload parses only changed files.
    parse_cache: Arc<ParseCache>,
    lock: tokio::sync::Mutex<()>,
}

/// Loads and compiles `sources` on a blocking thread.
pub async fn load(sources: Vec<ConfigSource>) -> (Option<Snapshot>, Vec<Diagnostic>) {
    let r = load_with_cache(sources, None).await;
    (r.snapshot, r.diagnostics)
}

/// [`load`] reusing what `cache` holds of unchanged files, and leaving this load's files in it
/// (see [`portico_config::ParseCache`]); also gives the time of each stage.
pub async fn load_with_cache(
    sources: Vec<ConfigSource>,
    cache: Option<Arc<ParseCache>>,
) -> portico_config::LoadResult {
    let load = move || {
        let mut r = match &cache {
            Some(c) => portico_config::load_cached(&sources, c),
            None => portico_config::load(&sources),
        };
        // Certificates and keys must load and match (the config crate checks existence only).
        if let Some(s) = &r.snapshot {
            let tls_errors = portico_proxy::downstream::tls::validate(s);
            if !tls_errors.is_empty() {
                r.diagnostics.extend(tls_errors);
                r.snapshot = None;
            }
        }
        r
    };
    match tokio::task::spawn_blocking(load).await {
        Ok(r) => r,
        Err(e) => portico_config::LoadResult {
            snapshot: None,
            diagnostics: vec![internal_diag(format!("config loader failed: {e}"))],
            timings: LoadTimings::default(),
        },
    }
}

fn internal_diag(message: String) -> Diagnostic {
    Diagnostic {
        file: "-".into(),
        line: 0,
        column: 0,
        kind: "-".into(),
        name: "-".into(),
        severity: Severity::Error,
        message,
    }
}

/// Per-resource status entries for `/config`.
/// The ACME Hosts of a snapshot: `(hostname, acmeProvider)`.
pub fn acme_hosts(snapshot: &Snapshot) -> Vec<(String, portico_config::snapshot::AcmeConf)> {
    snapshot
        .hosts
        .iter()
        .filter_map(|h| match (&h.hostname, &h.acme) {
            (portico_config::route::HostGlob::Exact(name), Some(a)) => {
                Some((name.clone(), a.clone()))
            }
            _ => None,
        })
        .collect()
}

pub fn resources_json(snapshot: &Snapshot, warnings: &[Diagnostic]) -> Vec<Value> {
    snapshot
        .resources
        .iter()
        .map(|r| {
            let warns: Vec<String> = warnings
                .iter()
                .filter(|w| w.kind == r.kind && w.name == r.name)
                .map(|w| w.to_string())
                .collect();
            json!({
                "kind": r.kind,
                "name": r.name,
                "file": r.file,
                "line": r.line,
                "status": if warns.is_empty() { r.status.clone() } else { "applied with warnings".to_string() },
                "warnings": warns,
            })
        })
        .collect()
}

impl Controller {
    pub fn new(
        sources: Vec<ConfigSource>,
        source_desc: Value,
        proxy: Arc<Proxy>,
        server: Arc<Server>,
        status: Status,
    ) -> Controller {
        let first = HistoryEntry {
            at: proxy.active().applied_at,
            trigger: "start".into(),
            generation: proxy.active().generation,
            commit: status.commit.clone(),
            files: if status.commit.is_some() {
                Vec::new()
            } else {
                source_files(&sources)
            },
            applied: true,
            errors: Vec::new(),
        };
        Controller {
            sources,
            source_desc,
            proxy,
            server,
            status: ArcSwap::from_pointee(status),
            counters: ReloadCounters::default(),
            git: std::sync::OnceLock::new(),
            acme: std::sync::OnceLock::new(),
            history: Mutex::new(VecDeque::from([first])),
            series: Arc::default(),
            parse_cache: Arc::default(),
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Starts from the parse cache of the first load (see [`load_with_cache`]), so that the
    /// first reload already reuses unchanged files.
    pub fn with_parse_cache(mut self, cache: Arc<ParseCache>) -> Controller {
        self.parse_cache = cache;
        self
    }

    /// The recorded reloads, oldest first.
    pub fn history(&self) -> Vec<HistoryEntry> {
        self.history
            .lock()
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn record(&self, entry: HistoryEntry) {
        if let Ok(mut h) = self.history.lock() {
            if h.len() >= HISTORY_LEN {
                h.pop_front();
            }
            h.push_back(entry);
        }
    }

    /// Reloads from the configured sources. With a git source this fetches first and reloads
    /// the ref's commit (with the `-c` paths).
    pub async fn reload(&self, trigger: &str) -> Outcome {
        if let Some(g) = self.git.get() {
            return match g.sync(self, trigger, true).await {
                Ok(Some(o)) => o,
                Ok(None) => Outcome::Applied {
                    generation: self.proxy.active().generation,
                },
                Err(e) => {
                    tracing::error!(error = %e, "git: fetch failed; the applied commit keeps serving");
                    self.report_error(vec![e.clone()], None);
                    Outcome::Rejected { errors: vec![e] }
                }
            };
        }
        self.reload_from(self.sources.clone(), trigger, None).await
    }

    /// Records a problem that is not a rejected config (e.g. a failed git fetch) in
    /// `/config.last_error`.
    pub fn report_error(&self, errors: Vec<String>, commit: Option<String>) {
        let mut st = (**self.status.load()).clone();
        st.last_error = Some(LastError {
            at: SystemTime::now(),
            errors,
            commit,
        });
        self.status.store(Arc::new(st));
    }

    /// Clears `last_error` when it is a source error (no commit: a failed git fetch) and the
    /// source has since answered; a rejected commit's error stays until a commit applies.
    pub fn clear_source_error(&self) {
        let st = self.status.load();
        if st.last_error.as_ref().is_some_and(|e| e.commit.is_none()) {
            let mut st = (**st).clone();
            st.last_error = None;
            self.status.store(Arc::new(st));
        }
    }

    /// Reloads from `sources`. `git`: the commit and the directory it is checked out in (git
    /// source), so that messages name files as they are in the repository, with the commit.
    ///
    /// The config is applied only as a whole: it is loaded and validated, then every new
    /// listener is bound, and only when all of that succeeded is the snapshot swapped in and
    /// the new listeners served. Anything failing leaves the running config (and its
    /// generation) untouched and is reported in `last_error` and the history.
    pub async fn reload_from(
        &self,
        sources: Vec<ConfigSource>,
        trigger: &str,
        git: Option<(String, &Path)>,
    ) -> Outcome {
        let _serial = self.lock.lock().await;
        let files = if git.is_some() {
            Vec::new()
        } else {
            source_files(&sources)
        };
        let commit = git.as_ref().map(|(c, _)| c.clone());
        let place = |d: &Diagnostic| match &git {
            Some((c, tree)) => git_message(d, c, tree),
            None => d.to_string(),
        };
        let started = Instant::now();
        let loaded = load_with_cache(sources, Some(self.parse_cache.clone())).await;
        let (snapshot, diags, timings) = (loaded.snapshot, loaded.diagnostics, loaded.timings);
        let loaded = match snapshot {
            // Bind before swapping: a listener that cannot bind rejects the whole config.
            Some(s) => self.server.bind_new(&s.listeners).map(|bound| (s, bound)),
            None => Err(diags
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .map(&place)
                .collect()),
        };
        let (snapshot, bound) = match loaded {
            Ok(x) => x,
            Err(errors) => return self.rejected(trigger, errors, commit, files),
        };
        let current = self.proxy.active();
        let generation = current.generation + 1;
        let mut resources = resources_json(&snapshot, &diags);
        if let Some((_, tree)) = &git {
            crate::git::repo_relative(tree, &mut resources);
        }
        let prepare_at = Instant::now();
        let next =
            portico_proxy::prepare(snapshot, generation, Some(&current), &self.proxy.metrics).await;
        drop(current);
        self.proxy.swap(next);
        if let Some(m) = self.acme.get() {
            m.apply(&acme_hosts(&self.proxy.active().config));
        }
        let swapped = started.elapsed();
        let prepare = prepare_at.elapsed();
        self.server.activate(bound);
        self.counters.applied.fetch_add(1, Ordering::Relaxed);
        let mut st = (**self.status.load()).clone();
        st.resources = resources;
        // The config now serving is the newest one tried: an earlier rejection is no longer
        // news (the history keeps it).
        st.last_error = None;
        if commit.is_some() {
            st.commit.clone_from(&commit);
        }
        self.status.store(Arc::new(st));
        self.record(HistoryEntry {
            at: SystemTime::now(),
            trigger: trigger.to_string(),
            generation,
            commit,
            files,
            applied: true,
            errors: Vec::new(),
        });
        tracing::info!(
            trigger,
            generation,
            to_swap_ms = ms(swapped),
            prepare_ms = ms(prepare),
            "config applied ({timings})"
        );
        Outcome::Applied { generation }
    }

    fn rejected(
        &self,
        trigger: &str,
        errors: Vec<String>,
        commit: Option<String>,
        files: Vec<String>,
    ) -> Outcome {
        tracing::error!(
            trigger,
            errors = errors.len(),
            "config rejected; the running config stays"
        );
        for e in &errors {
            tracing::error!("  {e}");
        }
        self.counters.rejected.fetch_add(1, Ordering::Relaxed);
        let now = SystemTime::now();
        let mut st = (**self.status.load()).clone();
        st.last_error = Some(LastError {
            at: now,
            errors: errors.clone(),
            commit: commit.clone(),
        });
        self.status.store(Arc::new(st));
        self.record(HistoryEntry {
            at: now,
            trigger: trigger.to_string(),
            generation: self.proxy.active().generation,
            commit,
            files,
            applied: false,
            errors: errors.clone(),
        });
        Outcome::Rejected { errors }
    }
}

fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

/// The files and directories a file source reads, for the history.
fn source_files(sources: &[ConfigSource]) -> Vec<String> {
    sources
        .iter()
        .map(|s| match s {
            ConfigSource::Path(p) => p.display().to_string(),
            ConfigSource::Inline { name, .. } => name.clone(),
        })
        .collect()
}

/// A diagnostic from a git checkout, naming the file relative to the repository and the
/// commit: `portico.yaml:1:13 (commit f77bddb): Mapping/x: ...`.
pub fn git_message(d: &Diagnostic, commit: &str, tree: &Path) -> String {
    let file = Path::new(&d.file)
        .strip_prefix(tree)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| d.file.clone());
    let short: String = commit.chars().take(7).collect();
    let warning = if d.severity == Severity::Warning {
        "warning: "
    } else {
        ""
    };
    format!(
        "{file}:{}:{} (commit {short}): {}/{}: {warning}{}",
        d.line, d.column, d.kind, d.name, d.message
    )
}

/// The controller as the driver of a git source's reloads.
impl crate::git::Reloader for Controller {
    type Outcome = Outcome;

    async fn reload_commit(
        &self,
        sources: Vec<ConfigSource>,
        trigger: &str,
        commit: (String, &Path),
    ) -> Outcome {
        self.reload_from(sources, trigger, Some(commit)).await
    }

    fn applied(outcome: &Outcome) -> bool {
        matches!(outcome, Outcome::Applied { .. })
    }

    fn clear_source_error(&self) {
        Controller::clear_source_error(self)
    }

    fn report_source_error(&self, error: String) {
        self.report_error(vec![error], None)
    }
}
