//! `portico xds`: following the files a config names. Certificates, keys, client CAs and JWKS
//! files go to Envoys inline (`portico_xds::inlined_files`), so a change to one must be a new
//! config version: a poller compares their modification times and sizes every
//! [`POLL`] and reloads when one changed (a certificate rotated on disk becomes a new SDS
//! secret at every Envoy; a half-written pair fails the certificate check, is not sent, and
//! the next poll tries again).

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// How often the files are looked at (the contract wants a rotation in effect within 2 s).
const POLL: Duration = Duration::from_millis(500);

type Stamp = (PathBuf, Option<(SystemTime, u64)>);

fn stamps(files: &[PathBuf]) -> Vec<Stamp> {
    files
        .iter()
        .map(|f| {
            let m = std::fs::metadata(f)
                .ok()
                .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
            (f.clone(), m)
        })
        .collect()
}

/// Starts the poller: `files` lists the files of the published config, `reload` reloads it.
/// It runs as long as the process.
pub(super) fn spawn<F, R, Fut>(files: F, reload: R)
where
    F: Fn() -> Vec<PathBuf> + Send + 'static,
    R: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut seen = stamps(&files());
        loop {
            tokio::time::sleep(POLL).await;
            let now = stamps(&files());
            let same_set =
                now.len() == seen.len() && now.iter().zip(&seen).all(|(a, b)| a.0 == b.0);
            if same_set && now != seen {
                tracing::info!("a certificate, key or JWKS file changed: reloading");
                reload().await;
                seen = stamps(&files());
            } else {
                seen = now;
            }
        }
    });
}
