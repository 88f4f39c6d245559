//! Reloading: read the sources, validate and compile off the request path, prepare runtime
//! state, swap it in atomically, and reconcile listeners. Reloads are serialized; a rejected
//! config leaves the running one untouched and is reported in the log, in `/config` and in
//! the reload counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use portico_config::diag::{Diagnostic, Severity};
use portico_config::{ConfigSource, Snapshot};
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
    lock: tokio::sync::Mutex<()>,
}

/// Loads and compiles `sources` on a blocking thread.
pub async fn load(sources: Vec<ConfigSource>) -> (Option<Snapshot>, Vec<Diagnostic>) {
    let load = move || {
        let mut r = portico_config::load(&sources);
        // Certificates and keys must load and match (the config crate checks existence only).
        if let Some(s) = &r.snapshot {
            let tls_errors = portico_proxy::tls::validate(s);
            if !tls_errors.is_empty() {
                r.diagnostics.extend(tls_errors);
                r.snapshot = None;
            }
        }
        r
    };
    match tokio::task::spawn_blocking(load).await {
        Ok(r) => (r.snapshot, r.diagnostics),
        Err(e) => (
            None,
            vec![internal_diag(format!("config loader failed: {e}"))],
        ),
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
        Controller {
            sources,
            source_desc,
            proxy,
            server,
            status: ArcSwap::from_pointee(status),
            counters: ReloadCounters::default(),
            git: std::sync::OnceLock::new(),
            lock: tokio::sync::Mutex::new(()),
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

    /// Reloads from `sources` (e.g. a freshly fetched git commit).
    pub async fn reload_from(
        &self,
        sources: Vec<ConfigSource>,
        trigger: &str,
        commit: Option<String>,
    ) -> Outcome {
        let _serial = self.lock.lock().await;
        let (snapshot, diags) = load(sources).await;
        let Some(snapshot) = snapshot else {
            let errors: Vec<String> = diags
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .map(|d| d.to_string())
                .collect();
            tracing::error!(
                trigger,
                errors = errors.len(),
                "config rejected; the running config stays"
            );
            for e in &errors {
                tracing::error!("  {e}");
            }
            self.counters.rejected.fetch_add(1, Ordering::Relaxed);
            let mut st = (**self.status.load()).clone();
            st.last_error = Some(LastError {
                at: SystemTime::now(),
                errors: errors.clone(),
                commit,
            });
            self.status.store(Arc::new(st));
            return Outcome::Rejected { errors };
        };
        let current = self.proxy.active();
        let generation = current.generation + 1;
        let resources = resources_json(&snapshot, &diags);
        let listeners = snapshot.listeners.clone();
        let next =
            portico_proxy::prepare(snapshot, generation, Some(&current), &self.proxy.metrics).await;
        drop(current);
        self.proxy.swap(next);
        let bind_errors = self.server.reconcile(&listeners);
        for e in &bind_errors {
            tracing::error!("{e}");
        }
        self.counters.applied.fetch_add(1, Ordering::Relaxed);
        let mut st = (**self.status.load()).clone();
        st.resources = resources;
        if commit.is_some() {
            // The newest commit applied: an earlier rejected commit is no longer news.
            st.last_error = None;
            st.commit = commit;
        }
        if !bind_errors.is_empty() {
            st.last_error = Some(LastError {
                at: SystemTime::now(),
                errors: bind_errors,
                commit: None,
            });
        }
        self.status.store(Arc::new(st));
        tracing::info!(trigger, generation, "config applied");
        Outcome::Applied { generation }
    }
}
