//! Watching config files: a change to any `*.yaml`/`*.yml` under a watched path (or to a
//! watched file itself) triggers one reload after a short debounce.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use crate::reload::Controller;

/// Quiet time after the last change before reloading (editors write in several steps).
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Starts watching `paths`; reloads through `ctl` on change. The returned watcher must be
/// kept alive.
pub fn watch(
    paths: &[PathBuf],
    ctl: Arc<Controller>,
) -> notify::Result<notify::RecommendedWatcher> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let files: Vec<PathBuf> = paths.iter().map(|p| absolute(p)).collect();
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
            // Debounce: wait until the changes stop.
            loop {
                match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            ctl.reload("file change").await;
        }
    });
    Ok(watcher)
}

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or(p.to_path_buf())
    })
}
