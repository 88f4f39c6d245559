//! The `portico` binary: the command line of reference §1.
// `deny`, not `forbid`: the one exception is `alloc::collect`, a call into the allocator.
#![deny(unsafe_code)]

/// `println!` for command output that ends quietly when stdout is closed early
/// (`portico explain … | head`): Rust ignores SIGPIPE, so `println!` would panic there.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use portico_config::diag::Diagnostic;
use portico_config::{ConfigSource, DEFAULT_CONFIG};
use portico_control::admin::{self, Admin, Command};
use portico_control::reload::{self, Controller, Status};
use portico_proxy::telemetry::access_log::{AccessLog, LogTarget};
use portico_proxy::{Proxy, ProxySettings, Server};
use serde_json::json;

mod alloc;
mod completions;
mod diff;
mod oneliner;
mod runtime;
mod xds;

#[derive(Parser)]
#[command(
    name = "portico",
    version,
    about = "An L7 edge proxy and its control plane"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Format {
    Text,
    Json,
    /// GitHub Actions annotations (`check`; other commands print text).
    Github,
}

/// Data planes `check --target` knows.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum CheckTarget {
    /// Envoy fed by `portico xds` (reference §11).
    Envoy,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the proxy.
    Run {
        /// Config file or directory (repeatable). Default: ./portico.yaml, else the embedded default.
        #[arg(short = 'c', long = "config")]
        config: Vec<PathBuf>,
        /// Admin API address.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
        /// Worker threads (default: one per CPU).
        #[arg(long)]
        workers: Option<usize>,
        /// Access log: a file path, `-` for stdout (default), or `off`.
        #[arg(long = "access-log", default_value = "-")]
        access_log: String,
        /// How long in-flight requests get to finish on drain.
        #[arg(long = "drain-timeout-ms", default_value_t = 10_000)]
        drain_timeout_ms: u64,
        /// Pull the config from this git repository (file://, https://, ssh://); combines
        /// with `-c` paths.
        #[arg(long)]
        git: Option<String>,
        /// Branch, tag or commit to follow (default: the remote's HEAD).
        #[arg(long = "git-ref", requires = "git")]
        git_ref: Option<String>,
        /// Directory of the config inside the repository (default: its root).
        #[arg(long = "git-path", requires = "git")]
        git_path: Option<PathBuf>,
        /// Seconds between fetches of the git source.
        #[arg(long, default_value_t = 10)]
        poll: u64,
        /// Overload manager: open downstream connections (all listeners) at which every
        /// listener stops accepting until some close. Default: no overall limit.
        #[arg(long = "overload-max-connections", value_parser = clap::value_parser!(u64).range(1..))]
        overload_max_connections: Option<u64>,
        /// Overload manager: resident memory (MiB) at which new requests get 503 and open
        /// connections are told to close, until RSS falls below 90% of it. Default: off.
        #[arg(long = "overload-max-memory-mb", value_parser = clap::value_parser!(u64).range(1..))]
        overload_max_memory_mb: Option<u64>,
        /// Where the overload manager reads RSS (`VmRSS:` line); for tests.
        #[arg(long = "overload-rss-file", hide = true)]
        overload_rss_file: Option<PathBuf>,
        /// Documents of kinds Portico does not read (Deployment, ConfigMap, ...) are errors
        /// instead of being skipped with a warning.
        #[arg(long = "strict-kinds")]
        strict_kinds: bool,
        /// Where ACME accounts, certificates, challenge answers and order locks are kept
        /// (mode 0600). Several processes may share one (e.g. a shared volume).
        #[arg(long = "state-dir", default_value = portico_acme::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
    /// Validate configuration without binding anything.
    Check {
        /// Config files or directories to validate (every `*.yaml`/`*.yml` below a directory).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Output: one `FILE:LINE:COL: KIND/NAME: message` line per problem, a JSON array, or
        /// GitHub Actions annotations.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// Documents of kinds Portico does not read (Deployment, ConfigMap, ...) are errors
        /// instead of being skipped with a warning.
        #[arg(long = "strict-kinds")]
        strict_kinds: bool,
        /// Also warn about settings an Envoy fed by `portico xds` cannot express.
        #[arg(long, value_enum)]
        target: Option<CheckTarget>,
    },
    /// Which route a request would take, offline.
    Explain {
        /// Config file or directory (repeatable).
        #[arg(short = 'c', long = "config", required = true)]
        config: Vec<PathBuf>,
        /// Request method, e.g. GET.
        method: String,
        /// Absolute request URL, e.g. http://api.example.com/quote/1?x=y.
        url: String,
        /// Request header `Name: value` (repeatable).
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        /// Output: human text, or the JSON object of the admin API's `/explain`.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Serve Envoy's rate limit service API, counters in Redis (docs/reference.md §4.1).
    Ratelimit {
        /// gRPC (h2c) listen address.
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: SocketAddr,
        /// Redis URL.
        #[arg(long, default_value = "redis://127.0.0.1:6379")]
        redis: String,
        /// Rules file or directory, envoyproxy/ratelimit format (repeatable).
        #[arg(short = 'c', long = "config", required = true)]
        config: Vec<PathBuf>,
        /// Connect and response timeout for Redis.
        #[arg(long = "redis-timeout-ms", default_value_t = 100)]
        redis_timeout_ms: u64,
        /// Worker threads (default: one per CPU).
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Route-level difference between two configs: files, directories, or `git:REV` /
    /// `git:REV:PATH` in the current repository. Exit 0 equal, 1 different, 2 error.
    Diff {
        /// The old config: a file, a directory, `git:REV` or `git:REV:PATH`.
        old: String,
        /// The new config, in the same forms as OLD.
        new: String,
        /// Output: human text or JSON.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// One-line reverse proxy: one listener, one catch-all route to the `--to` endpoints.
    Proxy(oneliner::ProxyArgs),
    /// Control plane for Envoy: serve the config over xDS (ADS, gRPC h2c).
    Xds {
        /// gRPC (h2c) listen address of the Aggregated Discovery Service.
        #[arg(long, default_value = "127.0.0.1:18000")]
        listen: SocketAddr,
        /// Config file or directory (repeatable); with `--git`, extra sources next to it.
        #[arg(short = 'c', long = "config", required_unless_present = "git")]
        config: Vec<PathBuf>,
        /// Admin API address (`GET /xds`, `GET /metrics`, `POST /reload`).
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
        /// Pull the config from this git repository (file://, https://, ssh://); versions
        /// are then the commits' full hashes.
        #[arg(long)]
        git: Option<String>,
        /// Branch, tag or commit to follow (default: the remote's HEAD).
        #[arg(long = "git-ref", requires = "git")]
        git_ref: Option<String>,
        /// Directory of the config inside the repository (default: its root).
        #[arg(long = "git-path", requires = "git")]
        git_path: Option<PathBuf>,
        /// Seconds between fetches of the git source.
        #[arg(long, default_value_t = 10)]
        poll: u64,
    },
    /// Print an Envoy bootstrap (YAML) that points Envoy's ADS at `portico xds`.
    Bootstrap {
        /// `HOST:PORT` of `portico xds --listen`.
        #[arg(long)]
        xds: String,
        /// Envoy node id (shown at `/xds`).
        #[arg(long = "node-id", default_value = "envoy")]
        node_id: String,
        /// Envoy node cluster.
        #[arg(long, default_value = "portico")]
        cluster: String,
        /// Envoy's admin port (on 127.0.0.1).
        #[arg(long = "admin-port", default_value_t = portico_xds::bootstrap::DEFAULT_ADMIN_PORT)]
        admin_port: u16,
        /// Use Delta (incremental) xDS (`api_type: DELTA_GRPC`) instead of State-of-the-World.
        #[arg(long)]
        delta: bool,
    },
    /// Print a shell completion script (e.g. `portico completions bash > /etc/bash_completion.d/portico`).
    Completions {
        /// Shell to generate the script for.
        shell: clap_complete::Shell,
    },
    /// Write the man pages (roff): portico(1) on stdout, or every page into DIR.
    #[command(hide = true)]
    Man {
        /// Directory to write portico.1 and one portico-SUBCOMMAND.1 per subcommand into.
        dir: Option<PathBuf>,
    },
    /// Version and build info (including the git commit built from).
    Version,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // `portico proxy` reports a bad flag on one line (exit 2); elsewhere clap's usual text.
        Err(e) if e.use_stderr() && std::env::args().nth(1).as_deref() == Some("proxy") => {
            eprintln!("{}", oneliner::one_line_error(&e));
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    match cli.cmd {
        Cmd::Version => {
            out!(
                "portico {} (commit {}, {} {})",
                env!("CARGO_PKG_VERSION"),
                env!("PORTICO_GIT_COMMIT"),
                std::env::consts::OS,
                std::env::consts::ARCH
            );
            ExitCode::SUCCESS
        }
        Cmd::Check {
            paths,
            format,
            strict_kinds,
            target,
        } => {
            portico_config::set_strict_kinds(strict_kinds);
            check(paths, format, target)
        }
        Cmd::Completions { shell } => completions::completions::<Cli>(shell),
        Cmd::Man { dir } => completions::man::<Cli>(dir.as_deref()),
        Cmd::Proxy(args) => proxy(args),
        Cmd::Bootstrap {
            xds,
            node_id,
            cluster,
            admin_port,
            delta,
        } => xds::bootstrap(&xds, node_id, cluster, admin_port, delta),
        Cmd::Xds {
            listen,
            config,
            admin,
            git,
            git_ref,
            git_path,
            poll,
        } => {
            init_logging();
            xds::run_blocking(xds::XdsOpts {
                listen,
                config,
                admin,
                git: git.map(|url| portico_control::git::GitOptions {
                    url,
                    git_ref,
                    path: git_path,
                    poll: Duration::from_secs(poll.max(1)),
                    extra: Vec::new(),
                }),
            })
        }
        Cmd::Ratelimit {
            listen,
            redis,
            config,
            redis_timeout_ms,
            workers,
        } => {
            init_logging();
            let opts = portico_ratelimit::server::ServerOpts {
                listen,
                redis,
                rules: config,
                redis_timeout: Duration::from_millis(redis_timeout_ms.max(1)),
                workers,
            };
            match portico_ratelimit::server::run(opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Diff { old, new, format } => diff::run(&old, &new, format == Format::Json),
        Cmd::Explain {
            config,
            method,
            url,
            headers,
            format,
        } => explain(config, &method, &url, &headers, format),
        Cmd::Run {
            config,
            admin,
            workers,
            access_log,
            drain_timeout_ms,
            git,
            git_ref,
            git_path,
            poll,
            overload_max_connections,
            overload_max_memory_mb,
            strict_kinds,
            overload_rss_file,
            state_dir,
        } => {
            init_logging();
            portico_config::set_strict_kinds(strict_kinds);
            let opts = RunOpts {
                config,
                inline: None,
                admin,
                workers,
                access_log,
                drain_timeout_ms,
                overload: portico_proxy::downstream::overload::OverloadConf {
                    max_connections: overload_max_connections,
                    max_memory_bytes: overload_max_memory_mb
                        .map(|mb| mb.saturating_mul(1024 * 1024)),
                    rss_source: overload_rss_file,
                },
                state_dir,
                git: git.map(|url| portico_control::git::GitOptions {
                    url,
                    git_ref,
                    path: git_path,
                    poll: Duration::from_secs(poll.max(1)),
                    extra: Vec::new(),
                }),
            };
            run_blocking(opts)
        }
    }
}

/// Runs the proxy on the current thread until it has drained.
fn run_blocking(opts: RunOpts) -> ExitCode {
    runtime::block_on(run(opts))
}

/// `portico proxy`: the flags become resources (see `oneliner`), run exactly as `run -c` would.
fn proxy(args: oneliner::ProxyArgs) -> ExitCode {
    let yaml = match oneliner::to_yaml(&args) {
        Ok(y) => y,
        Err(e) => {
            eprintln!("portico proxy: {e}");
            return ExitCode::from(2);
        }
    };
    if args.print_config {
        out!("{}", yaml.trim_end());
        return ExitCode::SUCCESS;
    }
    init_logging();
    run_blocking(RunOpts {
        config: Vec::new(),
        inline: Some(yaml),
        admin: args.admin,
        workers: None,
        access_log: args.access_log,
        drain_timeout_ms: 10_000,
        overload: portico_proxy::downstream::overload::OverloadConf::default(),
        git: None,
        state_dir: PathBuf::from(portico_acme::DEFAULT_STATE_DIR),
    })
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PORTICO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal: never into a pipe or file, never with NO_COLOR.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
    // A panic is a bug: report it as an error line in the same log as everything else, with
    // where it happened (and a backtrace when RUST_BACKTRACE asks for one). The release build
    // then aborts (docs/architecture.md, "Panic policy"); debug builds unwind the task.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(non-string payload)");
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        let backtrace = std::backtrace::Backtrace::capture();
        if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
            tracing::error!(thread, %location, %backtrace, "panicked: {msg}");
        } else {
            tracing::error!(thread, %location, "panicked: {msg}");
        }
    }));
}

fn sources_of(paths: &[PathBuf]) -> Vec<ConfigSource> {
    paths.iter().cloned().map(ConfigSource::Path).collect()
}

fn print_diagnostics(diags: &[Diagnostic], format: Format) {
    match format {
        Format::Json => out!(
            "{}",
            serde_json::to_string_pretty(diags).unwrap_or_else(|_| "[]".into())
        ),
        Format::Text => {
            for d in diags {
                out!("{d}");
            }
        }
        Format::Github => {
            for d in diags {
                out!("{}", github_annotation(d));
            }
        }
    }
}

/// `::error file=F,line=L,col=C::KIND/NAME: message` (GitHub Actions workflow command).
fn github_annotation(d: &Diagnostic) -> String {
    fn data(s: &str) -> String {
        s.replace('%', "%25")
            .replace('\r', "%0D")
            .replace('\n', "%0A")
    }
    fn prop(s: &str) -> String {
        data(s).replace(':', "%3A").replace(',', "%2C")
    }
    let level = if d.is_error() { "error" } else { "warning" };
    format!(
        "::{level} file={},line={},col={}::{}",
        prop(&d.file),
        d.line.max(1),
        d.column.max(1),
        data(&format!("{}/{}: {}", d.kind, d.name, d.message))
    )
}

fn check(paths: Vec<PathBuf>, format: Format, target: Option<CheckTarget>) -> ExitCode {
    let mut result = portico_config::load(&sources_of(&paths));
    if let Some(s) = &result.snapshot {
        let tls = portico_proxy::downstream::tls::validate(s);
        let lint = portico_config::describe::lint(s);
        result.diagnostics.extend(tls);
        result.diagnostics.extend(lint);
        if target == Some(CheckTarget::Envoy) {
            result.diagnostics.extend(xds::envoy_warnings(s));
        }
    }
    print_diagnostics(&result.diagnostics, format);
    if result.has_errors() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn explain(
    config: Vec<PathBuf>,
    method: &str,
    url: &str,
    headers: &[String],
    format: Format,
) -> ExitCode {
    let result = portico_config::load(&sources_of(&config));
    let Some(snapshot) = result.snapshot else {
        print_diagnostics(&result.diagnostics, Format::Text);
        return ExitCode::from(2);
    };
    let v = match portico_control::explain::explain(&snapshot, method, url, headers) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("portico explain: {e}");
            return ExitCode::from(2);
        }
    };
    if format == Format::Json {
        out!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    match v["route"].as_str() {
        Some(route) => {
            out!("{method} {url}");
            out!("  route:          {route}");
            out!(
                "  upstream:       {}",
                v["upstream"].as_str().unwrap_or("(answered locally)")
            );
            out!(
                "  rewritten path: {}",
                v["rewritten_path"].as_str().unwrap_or("-")
            );
            out!("  match:          {}", v["match"]);
            out!("  policies:");
            for line in portico_control::explain::policy_lines(&v) {
                out!("    {line}");
            }
        }
        None => out!("{method} {url}\n  no route matches: 404 NR"),
    }
    if let Some(rej) = v["rejected"].as_array().filter(|r| !r.is_empty()) {
        out!("  not taken:");
        for r in rej {
            out!(
                "    {}: {}",
                r["route"].as_str().unwrap_or("?"),
                r["reason"].as_str().unwrap_or("")
            );
        }
    }
    ExitCode::SUCCESS
}

struct RunOpts {
    config: Vec<PathBuf>,
    /// Config given as text (`portico proxy`), instead of paths; not watched.
    inline: Option<String>,
    admin: SocketAddr,
    workers: Option<usize>,
    access_log: String,
    drain_timeout_ms: u64,
    overload: portico_proxy::downstream::overload::OverloadConf,
    git: Option<portico_control::git::GitOptions>,
    /// ACME state (`--state-dir`).
    state_dir: PathBuf,
}

async fn run(opts: RunOpts) -> anyhow::Result<()> {
    // Sources: -c paths, else ./portico.yaml, else the embedded default.
    let mut watch_paths = opts.config.clone();
    let mut git_source = None;
    let mut initial_commit = None;
    let sources: Vec<ConfigSource> = if let Some(mut g) = opts.git.clone() {
        // Git source, plus the -c paths (e.g. certificates kept out of git).
        g.extra = sources_of(&opts.config);
        let src = portico_control::git::GitSource::open(g)
            .await
            .map_err(|e| anyhow::anyhow!("git source: {e}"))?;
        let (commit, sources) = src
            .initial()
            .await
            .map_err(|e| anyhow::anyhow!("git source: {e}"))?;
        tracing::info!(commit = %commit.sha, "git: initial commit");
        initial_commit = Some(commit.sha);
        git_source = Some(src);
        sources
    } else if let Some(text) = opts.inline.clone() {
        vec![ConfigSource::Inline {
            name: "<portico proxy>".into(),
            text,
            base_dir: std::env::current_dir().unwrap_or_default(),
        }]
    } else if !opts.config.is_empty() {
        sources_of(&opts.config)
    } else if std::path::Path::new("portico.yaml").exists() {
        watch_paths = vec![PathBuf::from("portico.yaml")];
        vec![ConfigSource::Path(PathBuf::from("portico.yaml"))]
    } else {
        vec![ConfigSource::Inline {
            name: "<default>".into(),
            text: DEFAULT_CONFIG.into(),
            base_dir: std::env::current_dir().unwrap_or_default(),
        }]
    };
    let source_desc = if let Some(g) = &git_source {
        g.describe()
    } else if opts.inline.is_some() {
        json!({ "paths": [], "command_line": true })
    } else if watch_paths.is_empty() {
        json!({ "paths": [], "embedded": true })
    } else {
        json!({ "paths": watch_paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>() })
    };

    let parse_cache = Arc::new(portico_config::ParseCache::new());
    let loaded = reload::load_with_cache(sources.clone(), Some(parse_cache.clone())).await;
    let (snapshot, diags) = (loaded.snapshot, loaded.diagnostics);
    // From a git source, messages name the file as it is in the repository, with the commit
    // (as reloads do), not the private checkout's path.
    let git_tree = match &git_source {
        Some(g) => g.applied_tree().await,
        None => None,
    };
    for d in &diags {
        let line = match (&git_tree, &initial_commit) {
            (Some(tree), Some(commit)) => reload::git_message(d, commit, tree),
            _ => d.to_string(),
        };
        if d.is_error() {
            tracing::error!("{line}");
        } else {
            tracing::warn!("{line}");
        }
    }
    let Some(snapshot) = snapshot else {
        anyhow::bail!("configuration rejected; not starting");
    };

    let target = match opts.access_log.as_str() {
        "-" => LogTarget::Stdout,
        "off" => LogTarget::Off,
        p => LogTarget::File(PathBuf::from(p)),
    };
    let access_log = AccessLog::new(target)?;
    let mut resources = reload::resources_json(&snapshot, &diags);
    if let Some(g) = &git_source
        && let Some(tree) = g.applied_tree().await
    {
        portico_control::git::repo_relative(&tree, &mut resources);
    }
    let listeners = snapshot.listeners.clone();
    // Before the first TLS state is built: ACME Hosts' certificates are files in it.
    portico_proxy::downstream::acme::set_state_dir(&opts.state_dir);
    let acme = portico_acme::Manager::new(&opts.state_dir);
    let acme_hosts = reload::acme_hosts(&snapshot);
    let registry = Arc::new(portico_proxy::telemetry::metrics::Registry::default());
    let first = portico_proxy::prepare(snapshot, 1, None, &registry).await;
    let settings = ProxySettings {
        drain_timeout: Duration::from_millis(opts.drain_timeout_ms),
        overload: opts.overload,
    };
    let proxy = Arc::new(Proxy::new(first, settings, access_log, registry));
    proxy.overload.spawn_monitor()?;
    let workers = opts.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    portico_proxy::downstream::server::set_idle_collect(alloc::collect);
    let server = Arc::new(Server::start(proxy.clone(), workers)?);
    let bind_errors = server.reconcile(&listeners);
    if !bind_errors.is_empty() {
        anyhow::bail!("{}", bind_errors.join("; "));
    }

    let ctl = Arc::new(
        Controller::new(
            sources,
            source_desc,
            proxy.clone(),
            server.clone(),
            Status {
                last_error: None,
                resources,
                commit: initial_commit,
            },
        )
        .with_parse_cache(parse_cache),
    );
    let _ = ctl.acme.set(acme.clone());
    acme.apply(&acme_hosts);
    if let Some(g) = git_source {
        let _ = ctl.git.set(g.clone());
        g.spawn_poller(ctl.clone());
    }
    let (cmd_tx, mut cmd_rx) = tokio::sync::mpsc::unbounded_channel();
    let admin_addr = admin::serve(
        opts.admin,
        Arc::new(Admin {
            ctl: ctl.clone(),
            commands: cmd_tx,
        }),
    )
    .await?;
    tracing::info!(address = %admin_addr, "admin API listening");
    let _watcher = if watch_paths.is_empty() {
        None
    } else {
        match portico_control::watch::watch(&watch_paths, ctl.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch config files; reload with SIGHUP or POST /reload");
                None
            }
        }
    };

    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut drained = false;
    loop {
        tokio::select! {
            _ = hup.recv() => { ctl.reload("SIGHUP").await; }
            _ = usr1.recv() => proxy.access_log.reopen(),
            _ = term.recv() => break,
            _ = int.recv() => break,
            Some(Command::Drain { exit }) = cmd_rx.recv() => {
                if !drained {
                    tracing::info!("draining (admin)");
                    server.drain().await;
                    drained = true;
                }
                if exit { break; }
            }
        }
    }
    if !drained {
        tracing::info!("draining");
        server.drain().await;
    }
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every argument of every (sub)command has a help line.
    #[test]
    fn every_argument_has_a_description() {
        let missing = crate::completions::undescribed(&crate::Cli::command());
        assert!(missing.is_empty(), "arguments without help: {missing:?}");
    }
}
