//! The order lock: one file per name in the state directory's `locks/`, holding its owner and
//! the end of its lease. Several processes sharing a state directory (a shared volume) use it
//! so that each name is ordered once.
//!
//! - **Acquire.** `create_new` (O_EXCL) of the lock file: exactly one process wins.
//! - **Lease.** The owner re-writes the expiry every third of the lease while it orders. A
//!   holder that died stops doing so; once its lease has run out, another process takes over:
//!   it renames the stale file to a unique name (only one rename of that file can succeed),
//!   checks that what it moved is the stale lock it read (not a fresh one created meanwhile;
//!   if it is, it puts it back), then acquires as usual.
//! - **Release.** The owner removes the file if it still names it.
//!
//! The lease comes from the `PORTICO_ACME_LEASE_MS` environment variable (default 120 s),
//! so tests can make a killed holder's lease run out quickly.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::store::{now_unix_ms, write_atomic};

/// The default lease of an order lock.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(120);

/// The lease in force (`PORTICO_ACME_LEASE_MS`, else [`DEFAULT_LEASE`]).
pub fn lease() -> Duration {
    std::env::var("PORTICO_ACME_LEASE_MS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&ms| ms >= 100)
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_LEASE)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Content {
    owner: String,
    /// Unix milliseconds.
    expires_ms: i64,
}

/// A held lock, released by [`Lock::release`] or when dropped. (A process that dies leaves
/// the file; its lease then runs out.)
#[derive(Debug)]
pub struct Lock {
    path: PathBuf,
    owner: String,
    lease: Duration,
    /// Set by `release`; `renew` (maybe on another thread) never writes the file after it.
    released: std::sync::Mutex<bool>,
}

/// Who holds a lock that could not be taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub owner: String,
    pub expires_ms: i64,
}

/// A process-unique owner id.
pub fn owner_id() -> String {
    format!("pid {} #{:08x}", std::process::id(), fastrand::u32(..))
}

fn read(path: &Path) -> Option<Content> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

fn encode(owner: &str, lease: Duration) -> Vec<u8> {
    let c = Content {
        owner: owner.to_string(),
        expires_ms: now_unix_ms() + lease.as_millis() as i64,
    };
    serde_json::to_vec(&c).unwrap_or_default()
}

/// Tries to take the lock at `path` for `owner`; `Err` names the current holder.
pub fn try_acquire(
    path: &Path,
    owner: &str,
    lease: Duration,
) -> std::io::Result<Result<Lock, Held>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    for _ in 0..3 {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        match opts.open(path) {
            Ok(mut f) => {
                f.write_all(&encode(owner, lease))?;
                f.sync_all()?;
                return Ok(Ok(Lock {
                    path: path.to_path_buf(),
                    owner: owner.to_string(),
                    lease,
                    released: std::sync::Mutex::new(false),
                }));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        // Held, or being written: an unreadable file counts as stale only when its mtime
        // is older than a lease (its writer died between create and write).
        let current = read(path);
        let stale = match &current {
            Some(c) => c.expires_ms < now_unix_ms(),
            None => std::fs::metadata(path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > lease),
        };
        if !stale {
            let c = current.unwrap_or(Content {
                owner: "(being written)".into(),
                expires_ms: now_unix_ms() + lease.as_millis() as i64,
            });
            return Ok(Err(Held {
                owner: c.owner,
                expires_ms: c.expires_ms,
            }));
        }
        // Take over a stale lock: move it aside under a unique name.
        let aside = path.with_extension(format!("stale-{:016x}", fastrand::u64(..)));
        if std::fs::rename(path, &aside).is_err() {
            continue; // someone else moved it first: try again from the top
        }
        let moved = read(&aside);
        if moved.is_some() && moved != current {
            // We moved a fresh lock created after our read: put it back (unless yet another
            // one appeared, which then holds) and report it as held.
            let _ = std::fs::hard_link(&aside, path);
            let _ = std::fs::remove_file(&aside);
            let c = moved.unwrap_or(Content {
                owner: String::new(),
                expires_ms: 0,
            });
            return Ok(Err(Held {
                owner: c.owner,
                expires_ms: c.expires_ms,
            }));
        }
        let _ = std::fs::remove_file(&aside);
        tracing::warn!(
            lock = %path.display(),
            previous = current.as_ref().map(|c| c.owner.as_str()).unwrap_or("?"),
            "taking over an order lock whose lease ran out (its holder stopped)"
        );
    }
    let c = read(path).unwrap_or(Content {
        owner: "(contended)".into(),
        expires_ms: now_unix_ms(),
    });
    Ok(Err(Held {
        owner: c.owner,
        expires_ms: c.expires_ms,
    }))
}

impl Lock {
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Extends the lease; `false` when the lock is no longer ours (taken over).
    pub fn renew(&self) -> bool {
        let Ok(released) = self.released.lock() else {
            return false;
        };
        if *released {
            return false;
        }
        match read(&self.path) {
            Some(c) if c.owner == self.owner => {
                write_atomic(&self.path, &encode(&self.owner, self.lease)).is_ok()
            }
            _ => false,
        }
    }

    /// Whether the file still names us.
    pub fn still_held(&self) -> bool {
        read(&self.path).is_some_and(|c| c.owner == self.owner)
    }

    /// Removes the lock if it is still ours.
    pub fn release(&self) {
        let Ok(mut released) = self.released.lock() else {
            return;
        };
        if !*released && self.still_held() {
            let _ = std::fs::remove_file(&self.path);
        }
        *released = true;
    }
}

/// Dropping a held lock releases it (also when the task that took it was aborted before it
/// saw the result, e.g. by a reload).
impl Drop for Lock {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_then_release() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.lock");
        let a = try_acquire(&p, "a", Duration::from_secs(60))
            .unwrap()
            .unwrap();
        let held = try_acquire(&p, "b", Duration::from_secs(60))
            .unwrap()
            .unwrap_err();
        assert_eq!(held.owner, "a");
        assert!(a.renew());
        a.release();
        assert!(!a.renew(), "a released lock is not written again");
        assert!(!p.exists());
        let b = try_acquire(&p, "b", Duration::from_secs(60))
            .unwrap()
            .unwrap();
        assert!(b.still_held());
    }

    #[test]
    fn dropping_a_lock_releases_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.lock");
        drop(
            try_acquire(&p, "a", Duration::from_secs(60))
                .unwrap()
                .unwrap(),
        );
        assert!(!p.exists());
    }

    #[test]
    fn a_dead_holders_lease_runs_out() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.lock");
        // A holder that died: acquired, never renewed, never released. Polled rather than
        // timed: on a loaded machine the first check may already come after a short lease.
        let lease = Duration::from_millis(100);
        let start = std::time::Instant::now();
        let dead = try_acquire(&p, "dead", lease).unwrap().unwrap();
        std::mem::forget(dead);
        let b = loop {
            if let Ok(b) = try_acquire(&p, "b", Duration::from_secs(60)).unwrap() {
                break b;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the dead holder's lease never ran out"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(
            start.elapsed() >= lease,
            "taken over before the dead holder's lease ran out"
        );
        assert!(b.still_held());
        // Only one process can take over: the next one sees b's live lease.
        assert_eq!(
            try_acquire(&p, "c", Duration::from_secs(60))
                .unwrap()
                .unwrap_err()
                .owner,
            "b"
        );
    }

    #[test]
    fn a_taken_over_holder_knows() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.lock");
        let a = try_acquire(&p, "a", Duration::from_millis(100))
            .unwrap()
            .unwrap();
        std::thread::sleep(Duration::from_millis(250));
        let b = try_acquire(&p, "b", Duration::from_secs(60))
            .unwrap()
            .unwrap();
        assert!(!a.renew());
        a.release(); // does not remove b's lock
        assert!(b.still_held());
    }
}
