//! Watching config files: a change to any `*.yaml`/`*.yml` under a watched path (or to a
//! watched file itself) triggers one reload after a short debounce.
//!
//! Kubernetes ConfigMap volumes are followed too. kubelet writes each version into a new
//! timestamped directory (`..2026_01_01_00_00_00.1/`), points a `..data_tmp` symlink at it,
//! renames that over `..data` (the atomic step) and deletes the old directory; the visible
//! files are symlinks `portico.yaml -> ..data/portico.yaml` that never change themselves. So a
//! watched file is kept as the path given (not resolved through its symlinks, whose target
//! directory disappears at the next update), and an event on a `..data` entry of a watched
//! directory counts as a change.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

/// What a file change reloads: `portico run`'s controller, or `portico xds`'s control plane.
pub trait FileReloader: Send + Sync + 'static {
    /// Reloads the watched sources (`trigger` names the cause in logs and history).
    fn reload_files(&self, trigger: &str) -> impl std::future::Future<Output = ()> + Send;
}

impl FileReloader for crate::reload::Controller {
    async fn reload_files(&self, trigger: &str) {
        self.reload(trigger).await;
    }
}

/// Quiet time after the last change before reloading (editors write in several steps, a
/// `git checkout` touches files one by one). Counted in the reload's latency from the change
/// to the swap (issue 16: under 200 ms), so it is short; steps of one save are microseconds
/// to a few milliseconds apart, and a reload caught between two steps is followed by another.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// The symlink kubelet swaps atomically on a ConfigMap or Secret volume update.
const KUBELET_DATA: &str = "..data";

/// Starts watching `paths`; reloads through `ctl` on change. The returned watcher must be
/// kept alive.
pub fn watch<R: FileReloader>(
    paths: &[PathBuf],
    ctl: Arc<R>,
) -> notify::Result<notify::RecommendedWatcher> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let files: Vec<PathBuf> = paths.iter().map(|p| absolute(p)).collect();
    // The directories whose `..data` swap matters: watched directories and the parents of
    // watched files.
    let swap_dirs: Vec<PathBuf> = files
        .iter()
        .map(|p| {
            if p.is_dir() {
                p.clone()
            } else {
                p.parent().map(Path::to_path_buf).unwrap_or_default()
            }
        })
        .collect();
    let relevant = files.clone();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let Ok(ev) = ev else { return };
        if matches!(ev.kind, notify::EventKind::Access(_)) {
            return;
        }
        let hit = ev.paths.iter().any(|p| {
            relevant.iter().any(|w| p == w)
                || (p.extension().is_some_and(|e| e == "yaml" || e == "yml")
                    && relevant.iter().any(|w| w.is_dir() && p.starts_with(w)))
                || (p.file_name().is_some_and(|n| n == KUBELET_DATA)
                    && p.parent().is_some_and(|d| swap_dirs.iter().any(|s| s == d)))
        });
        if hit {
            let _ = tx.send(());
        }
    })?;
    for p in &files {
        if p.is_dir() {
            watcher.watch(p, RecursiveMode::Recursive)?;
        } else {
            // Watch the directory: editors and `git checkout` replace files.
            let dir = p.parent().unwrap_or(Path::new("."));
            watcher.watch(dir, RecursiveMode::NonRecursive)?;
        }
    }
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            let first = std::time::Instant::now();
            // Debounce: wait until the changes stop.
            loop {
                match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            tracing::debug!(
                waited_ms = first.elapsed().as_millis() as u64,
                "config files changed; reloading"
            );
            ctl.reload_files("file change").await;
        }
    });
    Ok(watcher)
}

/// A directory resolved through symlinks (events then name the real paths); a file only made
/// absolute, so that a symlinked file is watched where it is named, not where it points now.
fn absolute(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    if abs.is_dir() {
        std::fs::canonicalize(&abs).unwrap_or(abs)
    } else {
        // The file's directory may itself be a symlink: resolve that part only.
        match (abs.parent(), abs.file_name()) {
            (Some(dir), Some(name)) => std::fs::canonicalize(dir)
                .map(|d| d.join(name))
                .unwrap_or(abs),
            _ => abs,
        }
    }
}
