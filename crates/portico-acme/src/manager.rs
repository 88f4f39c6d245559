//! The certificate manager: one task per ACME Host (on the control plane's runtime) that keeps
//! that name's certificate in the state directory valid, and what the admin API shows of it.
//!
//! Each task loops: read the stored certificate; while it is valid and before two thirds of
//! its lifetime, sleep (waking every [`CHECK`] to notice a certificate another process
//! wrote); when it is missing or due, and the shared back-off allows, take the name's order
//! lock (`lock.rs`), check again (another process may have just finished), order
//! (`order.rs`), and write the certificate (key + chain, one file, atomically). The proxy's
//! certificate poller (`portico-proxy`, `downstream/tls.rs`) serves the new file within a
//! second or two, in this process and in every other one sharing the directory.
//!
//! A failure is logged with the ACME problem document, counted, shown as the Host's status,
//! and recorded in `status/<name>.json` with the next attempt time: exponential back-off from
//! [`BACKOFF_BASE`], doubled per consecutive failure, capped at [`BACKOFF_CAP`], and never
//! before the server's `Retry-After`. Every process sharing the directory honours it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use portico_config::snapshot::AcmeConf;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::lock;
use crate::order::order;
use crate::store::{OrderStatus, Store, now_unix};

/// How often a task looks at the state directory while nothing is due.
pub const CHECK: Duration = Duration::from_secs(5);
/// How often a task waiting for another process's order looks again.
const WAIT_OTHER: Duration = Duration::from_secs(2);
/// First back-off after a failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(10);
/// Longest back-off.
pub const BACKOFF_CAP: Duration = Duration::from_secs(3600);
/// A whole order (account, challenge, issuance) must end within this.
const ORDER_TIMEOUT: Duration = Duration::from_secs(300);

/// The back-off after `failures` consecutive failures.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    BACKOFF_BASE.saturating_mul(1u32 << exp).min(BACKOFF_CAP)
}

/// When the next order may start after `failures` consecutive failures (the last at `now`):
/// the back-off, but never before the server's `Retry-After` (RFC 8555 §6.6).
pub fn next_attempt(now: i64, failures: u32, retry_after: Option<std::time::SystemTime>) -> i64 {
    let after_backoff = now + backoff(failures).as_secs() as i64;
    let server = retry_after
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64);
    after_backoff.max(server)
}

/// What `/config` shows for one ACME Host.
#[derive(Debug, Clone, Default)]
struct HostStatus {
    state: &'static str,
    serial: Option<String>,
    not_after: Option<i64>,
    last_error: Option<String>,
    failures: u32,
    next_attempt: Option<i64>,
}

#[derive(Debug, Default)]
struct Counts {
    issued: u64,
    failed: u64,
}

#[derive(Debug, Default)]
struct Shared {
    status: Mutex<BTreeMap<String, HostStatus>>,
    counts: Mutex<BTreeMap<String, Counts>>,
}

impl Shared {
    fn set(&self, name: &str, f: impl FnOnce(&mut HostStatus)) {
        if let Ok(mut m) = self.status.lock() {
            f(m.entry(name.to_string()).or_default());
        }
    }

    fn count(&self, name: &str, issued: bool) {
        if let Ok(mut m) = self.counts.lock() {
            let c = m.entry(name.to_string()).or_default();
            if issued {
                c.issued += 1;
            } else {
                c.failed += 1;
            }
        }
    }
}

/// The ACME certificate manager of one process.
#[derive(Debug)]
pub struct Manager {
    store: Store,
    owner: String,
    shared: Arc<Shared>,
    tasks: Mutex<BTreeMap<String, (AcmeConf, JoinHandle<()>)>>,
}

impl Manager {
    /// A manager for the state directory `dir` (created, mode 0700, when the first ACME Host
    /// appears).
    pub fn new(dir: impl Into<std::path::PathBuf>) -> Arc<Manager> {
        let store = Store::new(dir);
        Arc::new(Manager {
            store,
            owner: lock::owner_id(),
            shared: Arc::new(Shared::default()),
            tasks: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Makes the running tasks those of `hosts` (name, settings): starts new ones, stops
    /// those of names gone or whose settings changed. Call inside the control runtime, at
    /// start and after every applied reload.
    pub fn apply(&self, hosts: &[(String, AcmeConf)]) {
        if !hosts.is_empty() {
            if let Err(e) = self.store.ensure() {
                tracing::error!(dir = %self.store.root().display(), error = %e, "cannot create the ACME state directory");
            }
            for sub in ["accounts", "certs", "status", "locks"] {
                crate::store::sweep_temporaries(&self.store.root().join(sub), CHECK * 12);
            }
        }
        let Ok(mut tasks) = self.tasks.lock() else {
            return;
        };
        tasks.retain(|name, (conf, task)| {
            let keep = hosts.iter().any(|(n, c)| n == name && c == conf);
            if !keep {
                task.abort();
                if let Ok(mut s) = self.shared.status.lock() {
                    s.remove(name);
                }
            }
            keep
        });
        for (name, conf) in hosts {
            if tasks.contains_key(name) {
                continue;
            }
            if let Ok(mut c) = self.shared.counts.lock() {
                c.entry(name.clone()).or_default();
            }
            let task = tokio::spawn(run(
                self.store.clone(),
                self.owner.clone(),
                self.shared.clone(),
                name.clone(),
                conf.clone(),
            ));
            tasks.insert(name.clone(), (conf.clone(), task));
        }
    }

    /// The status of `name` for `/config`: `(one-line summary, details)`.
    pub fn status(&self, name: &str) -> Option<(String, Value)> {
        let m = self.shared.status.lock().ok()?;
        let s = m.get(name)?;
        let summary = match s.state {
            "valid" => "certificate issued (ACME)".to_string(),
            "failed" => format!(
                "certificate order failed: {}",
                s.last_error.as_deref().unwrap_or("?")
            ),
            "waiting" => "waiting for another process's certificate order".to_string(),
            "ordering" => "ordering a certificate".to_string(),
            other => other.to_string(),
        };
        Some((
            summary,
            json!({
                "state": s.state,
                "serial": s.serial,
                "not_after": s.not_after,
                "last_error": s.last_error,
                "failures": s.failures,
                "next_attempt": s.next_attempt,
            }),
        ))
    }

    /// `portico_acme_orders_total{host,result}` (a series per ACME Host, at 0 from the start).
    pub fn render_metrics(&self, out: &mut String) {
        let Ok(counts) = self.shared.counts.lock() else {
            return;
        };
        let _ = writeln!(
            out,
            "# HELP portico_acme_orders_total ACME certificate orders by Host name and result.\n\
             # TYPE portico_acme_orders_total counter"
        );
        for (name, c) in counts.iter() {
            let _ = writeln!(
                out,
                "portico_acme_orders_total{{host=\"{name}\",result=\"issued\"}} {}\n\
                 portico_acme_orders_total{{host=\"{name}\",result=\"failed\"}} {}",
                c.issued, c.failed
            );
        }
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        if let Ok(tasks) = self.tasks.lock() {
            for (_, t) in tasks.values() {
                t.abort();
            }
        }
    }
}

/// Whether the stored certificate must be (re)ordered now.
fn due(store: &Store, name: &str, shared: &Shared) -> Option<i64> {
    let now = now_unix();
    match store.read_cert(name) {
        Some(c) => {
            shared.set(name, |s| {
                if s.state.is_empty() || s.serial.as_ref() != Some(&c.serial) {
                    // A new certificate (ours or another process's): earlier failures are over.
                    s.state = "valid";
                    s.last_error = None;
                    s.failures = 0;
                    s.next_attempt = None;
                }
                s.serial = Some(c.serial.clone());
                s.not_after = Some(c.not_after);
            });
            let at = c.renew_at();
            (now < at && now < c.not_after).then_some(at)
        }
        None => None,
    }
}

/// The shared order status of `name`, unless it is about another CA (the Host was moved: its
/// back-off does not apply).
fn status_for(store: &Store, name: &str, conf: &AcmeConf) -> OrderStatus {
    let st = store.read_status(name);
    if st.authority == conf.authority {
        st
    } else {
        OrderStatus::default()
    }
}

/// Sleeps until `at` (Unix seconds), at most `CHECK`.
async fn nap_until(at: i64) {
    let wait = Duration::from_secs((at - now_unix()).max(1) as u64).min(CHECK);
    tokio::time::sleep(wait).await;
}

/// Optional hold after taking the lock, before ordering (`PORTICO_ACME_TEST_HOLD_MS`): lets a
/// test kill a lock holder in the middle of an order. Unset in production.
fn test_hold() -> Option<Duration> {
    std::env::var("PORTICO_ACME_TEST_HOLD_MS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_millis)
}

/// Runs state-directory I/O on tokio's blocking pool: on a shared network volume a stat or a
/// write can stall, and the control runtime (admin API, reloads, signals) must not.
async fn off_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

async fn run(store: Store, owner: String, shared: Arc<Shared>, name: String, conf: AcmeConf) {
    let lease = lock::lease();
    // The checks of one loop turn, off the runtime's thread: (renew at, shared status).
    let check = {
        let (store, name, conf, shared) =
            (store.clone(), name.clone(), conf.clone(), shared.clone());
        move || {
            let (store, name, conf, shared) =
                (store.clone(), name.clone(), conf.clone(), shared.clone());
            off_thread(move || {
                (
                    due(&store, &name, &shared),
                    status_for(&store, &name, &conf),
                )
            })
        }
    };
    loop {
        let Some((renew_at, st)) = check().await else {
            tokio::time::sleep(CHECK).await;
            continue;
        };
        if let Some(renew_at) = renew_at {
            nap_until(renew_at).await;
            continue;
        }
        let now = now_unix();
        if st.next_attempt > now {
            shared.set(&name, |s| {
                if st.last_error.is_some() {
                    s.state = "failed";
                }
                s.last_error = st.last_error.clone();
                s.failures = st.failures;
                s.next_attempt = Some(st.next_attempt);
            });
            nap_until(st.next_attempt).await;
            continue;
        }
        let path = store.lock_path(&name);
        let acquired = {
            let (path, owner) = (path.clone(), owner.clone());
            off_thread(move || lock::try_acquire(&path, &owner, lease)).await
        };
        let held = match acquired.unwrap_or_else(|| Err(std::io::Error::other("task failed"))) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(host = %name, error = %e, lock = %path.display(), "cannot use the ACME order lock");
                tokio::time::sleep(CHECK).await;
                continue;
            }
        };
        let lk = match held {
            Ok(l) => Holding::new(l),
            Err(other) => {
                tracing::debug!(host = %name, holder = %other.owner, "another process is ordering");
                shared.set(&name, |s| {
                    if s.serial.is_none() {
                        s.state = "waiting";
                    }
                });
                tokio::time::sleep(WAIT_OTHER).await;
                continue;
            }
        };
        // Another process may have finished (or failed) between our checks and the lock.
        match check().await {
            Some((None, st)) if st.next_attempt <= now_unix() => {}
            _ => {
                drop(lk);
                continue;
            }
        }
        shared.set(&name, |s| {
            if s.serial.is_none() {
                s.state = "ordering";
            }
        });
        if let Some(hold) = test_hold() {
            tokio::time::sleep(hold).await;
        }
        tracing::info!(host = %name, authority = %conf.authority, challenge = conf.challenge.as_str(), "ordering a certificate");
        let result = match tokio::time::timeout(ORDER_TIMEOUT, order(&store, &name, &conf)).await {
            Ok(r) => r,
            Err(_) => Err(crate::order::OrderError {
                message: format!("the order took longer than {ORDER_TIMEOUT:?}"),
                retry_after: None,
            }),
        };
        let outcome = match result {
            Ok(pem) => {
                let path = store.cert_path(&name);
                let p = path.clone();
                let written = off_thread(move || crate::store::write_atomic(&p, pem.as_bytes()))
                    .await
                    .unwrap_or_else(|| Err(std::io::Error::other("task failed")));
                written.map_err(|e| crate::order::OrderError {
                    message: format!("cannot write {}: {e}", path.display()),
                    retry_after: None,
                })
            }
            Err(e) => Err(e),
        };
        let now = now_unix();
        match outcome {
            Ok(()) => {
                let info = {
                    let (store, name) = (store.clone(), name.clone());
                    off_thread(move || store.read_cert(&name)).await.flatten()
                };
                tracing::info!(
                    host = %name,
                    serial = info.as_ref().map(|i| i.serial.as_str()).unwrap_or("?"),
                    not_after = info.as_ref().map(|i| i.not_after).unwrap_or(0),
                    "certificate issued"
                );
                write_status(
                    &store,
                    &name,
                    OrderStatus {
                        at: now,
                        authority: conf.authority.clone(),
                        ..Default::default()
                    },
                )
                .await;
                shared.count(&name, true);
                shared.set(&name, |s| {
                    s.state = "valid";
                    s.last_error = None;
                    s.failures = 0;
                    s.next_attempt = None;
                    if let Some(i) = &info {
                        s.serial = Some(i.serial.clone());
                        s.not_after = Some(i.not_after);
                    }
                });
            }
            Err(e) => {
                let failures = st.failures.saturating_add(1);
                let next = next_attempt(now, failures, e.retry_after);
                tracing::error!(
                    host = %name,
                    authority = %conf.authority,
                    failures,
                    retry_in_s = next - now,
                    "certificate order failed: {}",
                    e.message
                );
                write_status(
                    &store,
                    &name,
                    OrderStatus {
                        failures,
                        next_attempt: next,
                        last_error: Some(e.message.clone()),
                        at: now,
                        authority: conf.authority.clone(),
                    },
                )
                .await;
                shared.count(&name, false);
                shared.set(&name, |s| {
                    s.state = "failed";
                    s.last_error = Some(e.message.clone());
                    s.failures = failures;
                    s.next_attempt = Some(next);
                });
            }
        }
        drop(lk);
    }
}

/// Records the shared order status (off the runtime's thread); a failure is logged.
async fn write_status(store: &Store, name: &str, st: OrderStatus) {
    let (store, n) = (store.clone(), name.to_string());
    let r = off_thread(move || store.write_status(&n, &st)).await;
    if let Some(Err(e)) = r {
        tracing::warn!(host = %name, error = %e, "cannot record the ACME order status");
    }
}

/// A held order lock whose lease is renewed in the background every third of the lease;
/// dropping it (the order ended, or the task was aborted by a reload) stops the renewal and
/// removes the lock, so no other process waits for a lease nobody uses.
struct Holding {
    lock: Arc<lock::Lock>,
    renewer: JoinHandle<()>,
}

impl Holding {
    fn new(l: lock::Lock) -> Holding {
        let lock = Arc::new(l);
        let lk = lock.clone();
        let renewer = tokio::spawn(async move {
            loop {
                tokio::time::sleep(lk.lease() / 3).await;
                let l = lk.clone();
                let ok = tokio::task::spawn_blocking(move || l.renew())
                    .await
                    .unwrap_or(false);
                if !ok {
                    tracing::warn!("lost the ACME order lock (lease ran out)");
                    break;
                }
            }
        });
        Holding { lock, renewer }
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        self.renewer.abort();
        self.lock.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps_at_an_hour() {
        assert_eq!(backoff(1), BACKOFF_BASE);
        assert_eq!(backoff(2), BACKOFF_BASE * 2);
        assert_eq!(backoff(3), BACKOFF_BASE * 4);
        assert_eq!(backoff(30), BACKOFF_CAP);
        assert_eq!(backoff(u32::MAX), BACKOFF_CAP);
    }

    #[test]
    fn a_back_off_is_about_one_authority() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        store.ensure().unwrap();
        let conf = |a: &str| AcmeConf {
            authority: a.to_string(),
            email: None,
            ca_file: None,
            challenge: portico_config::snapshot::AcmeChallenge::Http01,
        };
        let failed = OrderStatus {
            failures: 3,
            next_attempt: now_unix() + 3600,
            last_error: Some("x".into()),
            at: now_unix(),
            authority: "https://old.example/dir".into(),
        };
        store.write_status("a.test", &failed).unwrap();
        assert_eq!(
            status_for(&store, "a.test", &conf("https://old.example/dir")),
            failed
        );
        // The Host now points at another CA: no back-off from the old one's failures.
        assert_eq!(
            status_for(&store, "a.test", &conf("https://new.example/dir")),
            OrderStatus::default()
        );
    }

    #[test]
    fn a_servers_retry_after_is_honoured_when_later_than_the_backoff() {
        let now = 1_000_000;
        let at = |s: i64| Some(std::time::UNIX_EPOCH + Duration::from_secs(s as u64));
        assert_eq!(next_attempt(now, 1, None), now + 10);
        // A rate limit: "retry in an hour" wins over 10 s.
        assert_eq!(next_attempt(now, 1, at(now + 3600)), now + 3600);
        // A Retry-After sooner than the back-off does not shorten it.
        assert_eq!(next_attempt(now, 3, at(now + 5)), now + 40);
    }
}
