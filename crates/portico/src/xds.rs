//! `portico xds` and `portico bootstrap` (reference §11): the control plane for Envoy fleets.
//!
//! `xds` loads and validates the config with the same loader as `portico run`
//! (`portico_control::reload::load_with_cache`: parse, compile, certificate checks), translates
//! each accepted snapshot with `portico_xds::translate` and publishes it on the ADS server as
//! version `<generation>`, or with `--git` the commit's full hash. Reloads come from the same
//! machinery as `run`: the file watcher (`portico_control::watch`, through its `FileReloader`
//! trait), the git poller (`portico_control::git`, through `Reloader`), SIGHUP and
//! `POST /reload`, and a change to a certificate, key or JWKS file the config names (module
//! `files`). A rejected config is logged and never sent. The admin address serves
//! `GET /xds` (nodes, per-type ACK/NACK) and `GET /metrics`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use portico_config::ConfigSource;
use portico_control::reload;
use portico_xds::server::{Published, XdsServer};

mod files;

/// Flags of `portico xds`.
pub struct XdsOpts {
    pub listen: SocketAddr,
    pub config: Vec<PathBuf>,
    pub admin: SocketAddr,
    pub git: Option<portico_control::git::GitOptions>,
}

/// The running control plane: sources, ADS server and reload state.
struct ControlPlane {
    /// The sources of the last load (with git: the last materialized commit's).
    sources: std::sync::Mutex<Vec<ConfigSource>>,
    /// The commit those sources are from, with `--git`.
    commit: std::sync::Mutex<Option<String>>,
    xds: XdsServer,
    generation: AtomicU64,
    cache: Arc<portico_config::ParseCache>,
    reload_lock: tokio::sync::Mutex<()>,
    applied: AtomicU64,
    rejected: AtomicU64,
    /// The files the published config sends inline (followed by [`files`]).
    files: std::sync::Mutex<Vec<PathBuf>>,
}

impl ControlPlane {
    /// Reloads the current sources.
    async fn reload(&self, trigger: &str) -> Result<u64, Vec<String>> {
        let sources = self
            .sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let commit = self
            .commit
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        self.reload_from(sources, trigger, commit).await
    }

    /// Loads `sources`; on success publishes the next generation (version: `commit` when
    /// given, else the generation) and keeps `sources` as the current ones. Returns the errors.
    async fn reload_from(
        &self,
        sources: Vec<ConfigSource>,
        trigger: &str,
        commit: Option<String>,
    ) -> Result<u64, Vec<String>> {
        let _serial = self.reload_lock.lock().await;
        let loaded = reload::load_with_cache(sources.clone(), Some(self.cache.clone())).await;
        let Some(snapshot) = loaded.snapshot else {
            let errors: Vec<String> = loaded
                .diagnostics
                .iter()
                .filter(|d| d.is_error())
                .map(|d| d.to_string())
                .collect();
            for e in &errors {
                tracing::error!(trigger, "{e}");
            }
            tracing::error!(
                trigger,
                "configuration rejected; Envoys keep the previous version"
            );
            self.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(errors);
        };
        let t = portico_xds::translate(&snapshot);
        *self.files.lock().unwrap_or_else(PoisonError::into_inner) =
            portico_xds::inlined_files(&snapshot);
        for w in &t.warnings {
            tracing::warn!(resource = %w.resource, field = %w.field, "envoy: {}", w.message);
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        self.xds.publish(Published {
            version: commit.clone().unwrap_or_else(|| generation.to_string()),
            resources: t.resources,
        });
        *self.sources.lock().unwrap_or_else(PoisonError::into_inner) = sources;
        *self.commit.lock().unwrap_or_else(PoisonError::into_inner) = commit;
        self.applied.fetch_add(1, Ordering::Relaxed);
        tracing::info!(trigger, generation, "configuration published over xDS");
        Ok(generation)
    }
}

/// `portico check --target envoy`: what the translation could not express, as warnings placed
/// on the resource they concern.
pub fn envoy_warnings(s: &portico_config::Snapshot) -> Vec<portico_config::Diagnostic> {
    portico_xds::translate(s)
        .warnings
        .into_iter()
        .map(|w| {
            let info = s.resources.iter().find(|r| r.name == w.resource);
            portico_config::Diagnostic {
                file: info.map_or_else(|| "-".to_string(), |r| r.file.clone()),
                line: info.map_or(0, |r| r.line),
                column: 1,
                kind: info.map_or_else(|| "-".to_string(), |r| r.kind.clone()),
                name: w.resource.clone(),
                severity: portico_config::Severity::Warning,
                message: format!("envoy cannot express {}: {}", w.field, w.message),
            }
        })
        .collect()
}

impl portico_control::watch::FileReloader for ControlPlane {
    async fn reload_files(&self, trigger: &str) {
        let _ = self.reload(trigger).await;
    }
}

impl portico_control::git::Reloader for ControlPlane {
    type Outcome = bool;

    async fn reload_commit(
        &self,
        sources: Vec<ConfigSource>,
        trigger: &str,
        commit: (String, &std::path::Path),
    ) -> bool {
        self.reload_from(sources, trigger, Some(commit.0))
            .await
            .is_ok()
    }

    fn applied(outcome: &bool) -> bool {
        *outcome
    }

    fn clear_source_error(&self) {}

    fn report_source_error(&self, error: String) {
        tracing::warn!(%error, "git source error; Envoys keep the applied commit");
    }
}

fn sources_of(paths: &[PathBuf]) -> Vec<ConfigSource> {
    paths.iter().cloned().map(ConfigSource::Path).collect()
}

/// `portico bootstrap`: prints the Envoy bootstrap; exit 2 on a bad `--xds`.
pub fn bootstrap(
    xds: &str,
    node_id: String,
    cluster: String,
    admin_port: u16,
    delta: bool,
) -> ExitCode {
    use portico_xds::bootstrap::{BootstrapOpts, bootstrap_yaml, parse_host_port};
    match parse_host_port(xds) {
        Ok((xds_host, xds_port)) => {
            let yaml = bootstrap_yaml(&BootstrapOpts {
                xds_host,
                xds_port,
                node_id,
                cluster,
                admin_port,
                delta,
            });
            out!("{}", yaml.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("portico bootstrap: --xds {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs `portico xds` on a current-thread runtime until SIGTERM/SIGINT.
pub fn run_blocking(opts: XdsOpts) -> ExitCode {
    crate::runtime::block_on(run(opts))
}

/// Runs `portico xds` until SIGTERM/SIGINT.
pub async fn run(opts: XdsOpts) -> anyhow::Result<()> {
    let mut sources = sources_of(&opts.config);
    let mut commit = None;
    let mut git_source = None;
    if let Some(mut g) = opts.git.clone() {
        // Git source, plus the -c paths (e.g. certificates kept out of git), as `run` does.
        g.extra = sources_of(&opts.config);
        let src = portico_control::git::GitSource::open(g)
            .await
            .map_err(|e| anyhow::anyhow!("git source: {e}"))?;
        let (c, s) = src
            .initial()
            .await
            .map_err(|e| anyhow::anyhow!("git source: {e}"))?;
        tracing::info!(commit = %c.sha, "git: initial commit");
        commit = Some(c.sha);
        sources = s;
        git_source = Some(src);
    }
    let cp = Arc::new(ControlPlane {
        sources: std::sync::Mutex::new(sources),
        commit: std::sync::Mutex::new(commit),
        xds: XdsServer::new(Published::default()),
        generation: AtomicU64::new(0),
        cache: Arc::new(portico_config::ParseCache::new()),
        reload_lock: tokio::sync::Mutex::new(()),
        applied: AtomicU64::new(0),
        rejected: AtomicU64::new(0),
        files: std::sync::Mutex::new(Vec::new()),
    });
    if cp.reload("start").await.is_err() {
        anyhow::bail!("configuration rejected; not starting");
    }
    if let Some(g) = &git_source {
        g.spawn_poller(cp.clone());
    }
    let (listed, reloader) = (cp.clone(), cp.clone());
    files::spawn(
        move || {
            listed
                .files
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        },
        move || {
            let cp = reloader.clone();
            async move {
                let _ = cp.reload("file change").await;
            }
        },
    );
    let _watcher = if git_source.is_some() || opts.config.is_empty() {
        None
    } else {
        match portico_control::watch::watch(&opts.config, cp.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch config files; reload with SIGHUP or POST /reload");
                None
            }
        }
    };
    let listener = tokio::net::TcpListener::bind(opts.listen).await?;
    tracing::info!(address = %listener.local_addr()?, "xDS (ADS, gRPC h2c) listening");
    let admin = tokio::net::TcpListener::bind(opts.admin).await?;
    tracing::info!(address = %admin.local_addr()?, "admin API listening");
    tokio::spawn(serve_admin(admin, cp.clone()));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let xds = cp.xds.clone();
    let serving = tokio::spawn(async move {
        xds.serve(listener, async {
            let _ = stop_rx.await;
        })
        .await
    });

    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = hup.recv() => { let _ = cp.reload("SIGHUP").await; }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    let _ = stop_tx.send(());
    // Streams stay open until Envoy ends them; do not wait for that.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), serving).await;
    tracing::info!("stopped");
    Ok(())
}

async fn serve_admin(listener: tokio::net::TcpListener, cp: Arc<ControlPlane>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let cp = cp.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let cp = cp.clone();
                async move { Ok::<_, Infallible>(admin_route(&cp, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

async fn admin_route(
    cp: &ControlPlane,
    req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let json = |status, v: serde_json::Value| {
        let mut s = serde_json::to_string_pretty(&v).unwrap_or_else(|_| "{}".into());
        s.push('\n');
        reply(status, "application/json", s)
    };
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/xds") => json(StatusCode::OK, cp.xds.nodes_json()),
        (&Method::GET, "/metrics") => {
            let mut m = cp.xds.metrics_text();
            m.push_str(&format!(
                "# TYPE portico_config_reloads_total counter\nportico_config_reloads_total{{result=\"applied\"}} {}\nportico_config_reloads_total{{result=\"rejected\"}} {}\n",
                cp.applied.load(Ordering::Relaxed),
                cp.rejected.load(Ordering::Relaxed)
            ));
            reply(StatusCode::OK, "text/plain; version=0.0.4", m)
        }
        (&Method::GET, "/ready") => reply(StatusCode::OK, "text/plain", "ready\n".into()),
        (&Method::POST, "/reload") => match cp.reload("admin").await {
            Ok(generation) => json(
                StatusCode::OK,
                serde_json::json!({ "applied": true, "generation": generation }),
            ),
            Err(errors) => json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({ "applied": false, "errors": errors }),
            ),
        },
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}
