//! The git config source (reference §1 `run --git`, §6): fetch a ref every `--poll` seconds,
//! materialize each new commit's tree into a fresh private directory, and reload from it (plus
//! any `-c` paths) as ONE snapshot through [`Controller::reload_from`].
//!
//! Why the git CLI rather than a library (`gix`, `git2`): the CLI speaks every transport and
//! auth method users already configure (file://, https:// with credential helpers, ssh:// with
//! their agent, `~/.gitconfig` insteadOf rules, proxies), it is installed wherever a GitOps
//! checkout runs, and it keeps a heavy dependency tree out of the binary. Every command runs
//! through `tokio::process` on the control-plane runtime, bounded by [`GIT_TIMEOUT`] and killed
//! when it overruns, so a slow or unreachable remote only delays the next config; traffic runs
//! on the data-plane workers and never waits for git.
//!
//! Layout of the private cache dir (`$TMPDIR/portico-git-PID-RANDOM`, mode 0700): `repo/` a
//! bare repository that fetches hold objects in, `trees/SHA/` one materialized commit each (the
//! applied one stays on disk because TLS files are re-read from it; others are removed).
//! Materializing uses a private index (`read-tree` + `checkout-index`), so nothing in the
//! repository's own state (HEAD, index, worktree list) is touched — the same routine serves
//! `portico diff git:REV` in a user's repository.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use portico_config::ConfigSource;
use tokio::process::Command;
use tokio::sync::{Mutex, Notify};

/// What a git source needs of the reload controller: implemented by `reload::Controller`,
/// declared here so that this module depends on no reload code (the controller holds the git
/// source, and the source drives the controller's reloads).
pub trait Reloader: Send + Sync + 'static {
    /// How a reload ended.
    type Outcome: Send;
    /// Loads `sources` (a materialized commit `(sha, tree)`) and swaps it in if valid.
    fn reload_commit(
        &self,
        sources: Vec<ConfigSource>,
        trigger: &str,
        commit: (String, &Path),
    ) -> impl std::future::Future<Output = Self::Outcome> + Send;
    /// Whether `outcome` swapped the commit in.
    fn applied(outcome: &Self::Outcome) -> bool;
    /// The source answers again: an earlier fetch error is over.
    fn clear_source_error(&self);
    /// A fetch failed (reported in `/config.last_error`; the applied config keeps serving).
    fn report_source_error(&self, error: String);
}

/// Upper bound on one git command (fetch over a slow link included).
pub const GIT_TIMEOUT: Duration = Duration::from_secs(60);

/// What `portico run --git` was given.
#[derive(Debug, Clone)]
pub struct GitOptions {
    pub url: String,
    /// `None`: the remote's HEAD.
    pub git_ref: Option<String>,
    /// Directory inside the repository (default: its root).
    pub path: Option<PathBuf>,
    pub poll: Duration,
    /// Local sources combined with the git tree (`-c` paths).
    pub extra: Vec<ConfigSource>,
}

/// A commit fetched from the remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub sha: String,
    /// Committer time, seconds since the epoch.
    pub time: i64,
}

/// The running git source.
pub struct GitSource {
    opts: GitOptions,
    cache: PathBuf,
    /// Serializes fetch + reload (poll loop, webhook, `POST /reload`).
    sync: Mutex<SyncState>,
    /// Wakes the poll loop for an immediate fetch (webhook).
    wake: Notify,
    /// Committer time of the applied commit (0 before any).
    applied_time: AtomicI64,
}

#[derive(Default)]
struct SyncState {
    /// Last commit tried (applied or rejected): an unchanged ref is not reloaded again.
    last_tried: Option<String>,
    /// The applied commit and its tree.
    applied: Option<(String, PathBuf)>,
}

/// The ssh command git uses: the user's `GIT_SSH_COMMAND` when set (they own its options),
/// else `ssh -o BatchMode=yes -o ConnectTimeout=15`, so an unknown host key or a password/passphrase prompt fails
/// the fetch at once instead of waiting on a terminal that a server does not have.
fn ssh_command(user: Option<std::ffi::OsString>) -> std::ffi::OsString {
    match user {
        Some(u) if !u.is_empty() => u,
        _ => "ssh -o BatchMode=yes -o ConnectTimeout=15".into(),
    }
}

/// `git ARGS` (in `dir` when given), never interactive: no terminal prompt for credentials
/// (`GIT_TERMINAL_PROMPT=0`, stdin closed), ssh in batch mode ([`ssh_command`]).
fn command(dir: Option<&Path>, args: &[&str], env: &[(&str, &Path)]) -> Command {
    let mut cmd = Command::new("git");
    if let Some(d) = dir {
        cmd.arg("-C").arg(d);
    }
    cmd.args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env(
            "GIT_SSH_COMMAND",
            ssh_command(std::env::var_os("GIT_SSH_COMMAND")),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs `git ARGS` (in `dir` when given) under [`GIT_TIMEOUT`]; stdout on success.
pub async fn git(
    dir: Option<&Path>,
    args: &[&str],
    env: &[(&str, &Path)],
) -> Result<String, String> {
    let mut cmd = command(dir, args, env);
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot run git: {e} (is git installed?)"))?;
    let out = match tokio::time::timeout(GIT_TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return Err(format!("git {}: {e}", args.join(" "))),
        Err(_) => {
            return Err(format!(
                "git {} timed out after {}s",
                args.first().copied().unwrap_or(""),
                GIT_TIMEOUT.as_secs()
            ));
        }
    };
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "git {} failed: {}",
            args.first().copied().unwrap_or(""),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Writes the tree of `rev` (in the repository whose git dir is `git_dir`) into `dest`
/// (created), through a private index: the repository's HEAD, index and worktrees are left
/// alone.
pub async fn materialize(git_dir: &Path, rev: &str, dest: &Path) -> Result<(), String> {
    tokio::fs::create_dir_all(dest)
        .await
        .map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
    let index = dest.with_extension("index");
    // A bare cache has no work tree: `dest` is made the work tree of these two commands.
    let env = [
        ("GIT_DIR", git_dir),
        ("GIT_INDEX_FILE", index.as_path()),
        ("GIT_WORK_TREE", dest),
    ];
    let res = async {
        git(Some(dest), &["read-tree", rev], &env).await?;
        git(Some(dest), &["checkout-index", "--all", "--force"], &env)
            .await
            .map(|_| ())
    }
    .await;
    let _ = tokio::fs::remove_file(&index).await;
    res
}

/// A fresh private directory under the system temp dir (mode 0700).
pub fn private_dir(prefix: &str) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = std::env::temp_dir().join(format!(
        "{prefix}-{}-{:x}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    Ok(dir)
}

/// Rewrites the `file` of `/config.resources` entries from the private tree `tree` to
/// repository-relative paths.
pub fn repo_relative(tree: &Path, resources: &mut [serde_json::Value]) {
    let prefix = format!("{}/", tree.display());
    for r in resources {
        if let Some(f) = r.get("file").and_then(|f| f.as_str()) {
            let f = f.replace(&prefix, "");
            r["file"] = serde_json::Value::String(f);
        }
    }
}

impl GitSource {
    /// Creates the private cache and its bare repository.
    pub async fn open(opts: GitOptions) -> Result<Arc<GitSource>, String> {
        let cache = private_dir("portico-git").map_err(|e| format!("cache dir: {e}"))?;
        let repo = cache.join("repo");
        git(
            None,
            &["init", "--bare", "--quiet", &repo.display().to_string()],
            &[],
        )
        .await?;
        Ok(Arc::new(GitSource {
            opts,
            cache,
            sync: Mutex::new(SyncState::default()),
            wake: Notify::new(),
            applied_time: AtomicI64::new(0),
        }))
    }

    fn repo(&self) -> PathBuf {
        self.cache.join("repo")
    }

    /// `/config.source` (the commit is added by the admin view).
    pub fn describe(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "git": self.opts.url,
            "ref": self.opts.git_ref.as_deref().unwrap_or("HEAD"),
        });
        if let Some(p) = &self.opts.path {
            v["path"] = serde_json::json!(p.display().to_string());
        }
        if !self.opts.extra.is_empty() {
            v["paths"] = serde_json::json!(
                self.opts
                    .extra
                    .iter()
                    .filter_map(|s| match s {
                        ConfigSource::Path(p) => Some(p.display().to_string()),
                        ConfigSource::Inline { .. } => None,
                    })
                    .collect::<Vec<_>>()
            );
        }
        v
    }

    /// Committer time of the applied commit (seconds since the epoch; 0 before any).
    pub fn applied_commit_time(&self) -> i64 {
        self.applied_time.load(Ordering::Relaxed)
    }

    /// Fetches the ref; returns the commit it points at.
    pub async fn fetch(&self) -> Result<Commit, String> {
        let repo = self.repo();
        let r = self.opts.git_ref.as_deref().unwrap_or("HEAD");
        git(
            Some(&repo),
            // `--`: a URL or ref starting with `-` is never taken for an option.
            &[
                "fetch",
                "--quiet",
                "--no-tags",
                "--force",
                "--",
                &self.opts.url,
                r,
            ],
            &[],
        )
        .await?;
        let out = git(
            Some(&repo),
            &["log", "-1", "--format=%H %ct", "FETCH_HEAD"],
            &[],
        )
        .await?;
        let mut it = out.split_whitespace();
        match (it.next(), it.next().and_then(|t| t.parse::<i64>().ok())) {
            (Some(sha), Some(time)) => Ok(Commit {
                sha: sha.to_string(),
                time,
            }),
            _ => Err(format!("unexpected `git log` output: {out:?}")),
        }
    }

    /// The sources of a materialized tree: `-c` paths first, then `--git-path` of the tree.
    fn sources(&self, tree: &Path) -> Vec<ConfigSource> {
        let mut s = self.opts.extra.clone();
        s.push(ConfigSource::Path(match &self.opts.path {
            Some(p) => tree.join(p),
            None => tree.to_path_buf(),
        }));
        s
    }

    /// The tree of the applied commit (after [`GitSource::initial`]).
    pub async fn applied_tree(&self) -> Option<PathBuf> {
        self.sync
            .lock()
            .await
            .applied
            .as_ref()
            .map(|(_, t)| t.clone())
    }

    /// Fetches the first commit and returns its sources for the initial load (recorded as
    /// applied: the caller refuses to start when that load fails).
    pub async fn initial(&self) -> Result<(Commit, Vec<ConfigSource>), String> {
        let c = self.fetch().await?;
        let tree = self.cache.join("trees").join(&c.sha);
        materialize(&self.repo(), &c.sha, &tree).await?;
        let s = self.sources(&tree);
        let mut st = self.sync.lock().await;
        st.last_tried = Some(c.sha.clone());
        st.applied = Some((c.sha.clone(), tree));
        self.applied_time.store(c.time, Ordering::Relaxed);
        Ok((c, s))
    }

    /// Fetches, and reloads when the ref moved (or always when `force`: local files or a
    /// manual reload). `Ok(None)`: nothing to do.
    pub async fn sync<R: Reloader>(
        &self,
        ctl: &R,
        trigger: &str,
        force: bool,
    ) -> Result<Option<R::Outcome>, String> {
        let mut st = self.sync.lock().await;
        let c = self.fetch().await?;
        if !force && st.last_tried.as_deref() == Some(c.sha.as_str()) {
            // The remote answers again: a fetch error reported earlier is over.
            ctl.clear_source_error();
            return Ok(None);
        }
        st.last_tried = Some(c.sha.clone());
        let tree = match &st.applied {
            Some((sha, tree)) if *sha == c.sha => tree.clone(),
            _ => {
                let tree = self.cache.join("trees").join(&c.sha);
                let _ = tokio::fs::remove_dir_all(&tree).await;
                if let Err(e) = materialize(&self.repo(), &c.sha, &tree).await {
                    let _ = tokio::fs::remove_dir_all(&tree).await;
                    return Err(e);
                }
                tree
            }
        };
        tracing::info!(commit = %c.sha, trigger, "git: loading commit");
        let outcome = ctl
            .reload_commit(self.sources(&tree), trigger, (c.sha.clone(), &tree))
            .await;
        match R::applied(&outcome) {
            true => {
                self.applied_time.store(c.time, Ordering::Relaxed);
                if let Some((old_sha, old)) = st.applied.replace((c.sha.clone(), tree))
                    && old_sha != c.sha
                {
                    let _ = tokio::fs::remove_dir_all(&old).await;
                }
            }
            false => {
                // The reload reported it, naming files as they are in the repository.
                tracing::error!(commit = %c.sha, "git: commit rejected; the applied commit keeps serving");
                if st.applied.as_ref().is_none_or(|(sha, _)| *sha != c.sha) {
                    let _ = tokio::fs::remove_dir_all(&tree).await;
                }
            }
        }
        Ok(Some(outcome))
    }

    /// Asks the poll loop to fetch now (webhook).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Polls forever: every `--poll` or when woken. Errors are logged and reported in
    /// `/config.last_error`; the applied config keeps serving.
    pub fn spawn_poller<R: Reloader>(self: &Arc<Self>, ctl: Arc<R>) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(me.opts.poll) => {}
                    _ = me.wake.notified() => {}
                }
                if let Err(e) = me.sync(&*ctl, "git poll", false).await {
                    tracing::warn!(error = %e, url = %me.opts.url, "git: fetch failed; the applied commit keeps serving");
                    ctl.report_source_error(e);
                }
            }
        });
    }
}

impl Drop for GitSource {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.cache);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    fn env_of(cmd: &Command, key: &str) -> Option<String> {
        cmd.as_std()
            .get_envs()
            .find(|(k, _)| *k == OsStr::new(key))
            .and_then(|(_, v)| v.map(|v| v.to_string_lossy().into_owned()))
    }

    #[test]
    fn git_never_prompts() {
        let cmd = command(
            Some(Path::new("/tmp")),
            &["fetch", "--", "ssh://example.invalid/r"],
            &[("GIT_DIR", Path::new("/x"))],
        );
        assert_eq!(env_of(&cmd, "GIT_TERMINAL_PROMPT").as_deref(), Some("0"));
        let ssh = env_of(&cmd, "GIT_SSH_COMMAND").expect("GIT_SSH_COMMAND set");
        // Either ours, or the one this test process inherited (kept as the user set it).
        match std::env::var_os("GIT_SSH_COMMAND").filter(|v| !v.is_empty()) {
            None => assert_eq!(ssh, "ssh -o BatchMode=yes -o ConnectTimeout=15"),
            Some(u) => assert_eq!(ssh, u.to_string_lossy()),
        }
        assert_eq!(env_of(&cmd, "GIT_DIR").as_deref(), Some("/x"));
        let args: Vec<_> = cmd.as_std().get_args().collect();
        assert_eq!(
            args,
            ["-C", "/tmp", "fetch", "--", "ssh://example.invalid/r"]
        );
    }

    #[test]
    fn a_user_ssh_command_is_kept() {
        assert_eq!(
            ssh_command(None),
            "ssh -o BatchMode=yes -o ConnectTimeout=15"
        );
        assert_eq!(
            ssh_command(Some("".into())),
            "ssh -o BatchMode=yes -o ConnectTimeout=15"
        );
        assert_eq!(
            ssh_command(Some("ssh -i /keys/deploy -o BatchMode=yes".into())),
            "ssh -i /keys/deploy -o BatchMode=yes"
        );
    }

    /// An ssh remote that would ask for a host key or a password fails fast instead of
    /// waiting on a prompt: `ssh` on PATH is a fake that hangs (as the real one waits on its
    /// terminal) unless given `-o BatchMode=yes`, which only our default command passes.
    #[tokio::test]
    async fn ssh_remote_fails_fast_without_a_terminal() {
        use std::os::unix::fs::PermissionsExt;
        if std::env::var_os("GIT_SSH_COMMAND").is_some_and(|v| !v.is_empty()) {
            eprintln!("GIT_SSH_COMMAND is set in this environment: the user's command is kept");
            return;
        }
        let dir = private_dir("portico-git-test").expect("dir");
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).expect("mkdir");
        let fake = bin.join("ssh");
        std::fs::write(
            &fake,
            "#!/bin/sh\ncase \"$*\" in *BatchMode=yes*) echo 'Host key verification failed.' >&2; exit 255;; esac\nsleep 30\n",
        )
        .expect("write");
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let repo = dir.join("repo");
        git(
            None,
            &["init", "--bare", "--quiet", &repo.display().to_string()],
            &[],
        )
        .await
        .expect("init");
        let mut cmd = command(
            Some(&repo),
            &[
                "fetch",
                "--quiet",
                "--",
                "ssh://git@example.invalid/r.git",
                "HEAD",
            ],
            &[],
        );
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{}:{path}", bin.display()));
        let start = std::time::Instant::now();
        let out = tokio::time::timeout(Duration::from_secs(15), cmd.output())
            .await
            .expect("git waited on ssh: BatchMode not passed")
            .expect("ran");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{err}");
        assert!(err.contains("Host key verification failed"), "{err}");
        eprintln!("ssh fetch failed after {:?}", start.elapsed());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
