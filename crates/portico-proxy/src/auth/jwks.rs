//! A `JWTProvider`'s verification keys (reference §9.2): the JWKS document parsed into
//! `jsonwebtoken` decoding keys, behind one atomic pointer the request path loads. A
//! background task keeps them fresh: `jwks_file` is polled every second and re-read when it
//! changes; `jwks_uri` is fetched through Portico's own upstream client every
//! `jwks_refresh_ms` (every 2 s until a fetch succeeds), and again when a token names a key
//! the set does not have, at most once per [`REFETCH_EVERY`]. The task ends when the
//! configuration that made it is gone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use http::{HeaderValue, Request};
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use portico_config::snapshot::{JwksSource, JwtProviderConf};
use tokio::sync::Notify;

use super::call;
use crate::body::ReqBody;
use crate::upstream::UpstreamState;

/// An unknown `kid` refetches a `jwks_uri` at most this often.
pub const REFETCH_EVERY: Duration = Duration::from_secs(30);
/// How often a `jwks_file` is checked for changes.
const FILE_POLL: Duration = Duration::from_secs(1);
/// Retry interval of a `jwks_uri` whose keys were never loaded.
const RETRY_UNLOADED: Duration = Duration::from_secs(2);
/// Deadline of one JWKS fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest JWKS document read.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// One verification key.
pub struct Key {
    pub kid: Option<String>,
    /// The JWK's `alg`, when it names one: tokens must use exactly that.
    pub alg: Option<Algorithm>,
    pub key: DecodingKey,
}

/// Generations of key sets and ids of key stores (process-wide, never reused: the token
/// cache keys on them).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// The keys loaded so far (empty until the first successful load).
pub struct KeySet {
    pub keys: Vec<Key>,
    pub by_kid: HashMap<String, usize>,
    /// Unique per load.
    pub generation: u64,
}

impl Default for KeySet {
    fn default() -> Self {
        KeySet {
            keys: Vec::new(),
            by_kid: HashMap::new(),
            generation: next_id(),
        }
    }
}

impl KeySet {
    /// Parses a JWKS document; keys Portico cannot use (HMAC `oct`, encryption keys, unknown
    /// types) are skipped. `Err` when the document is no JWKS at all.
    pub fn parse(text: &[u8]) -> Result<KeySet, String> {
        #[derive(serde::Deserialize)]
        struct Doc {
            keys: Vec<serde_json::Value>,
        }
        let doc: Doc = serde_json::from_slice(text).map_err(|e| format!("not a JWKS: {e}"))?;
        let mut set = KeySet::default();
        for v in doc.keys {
            let Ok(jwk) = serde_json::from_value::<Jwk>(v) else {
                continue;
            };
            if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_))
                || matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption))
            {
                continue;
            }
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| a.to_string().parse::<Algorithm>().ok());
            let Ok(key) = DecodingKey::from_jwk(&jwk) else {
                continue;
            };
            let kid = jwk.common.key_id.clone();
            if let Some(k) = &kid {
                set.by_kid.insert(k.clone(), set.keys.len());
            }
            set.keys.push(Key { kid, alg, key });
        }
        Ok(set)
    }
}

/// A provider's keys and how to refresh them.
pub struct KeyStore {
    /// Unique per store (the token cache's key).
    pub id: u64,
    pub keys: ArcSwap<KeySet>,
    /// Wakes the refresh task for an early refetch.
    wake: Arc<Notify>,
    /// When an unknown kid last asked for a refetch (ms since `epoch`; 0: never).
    last_refetch: AtomicU64,
    epoch: Instant,
    remote: bool,
    /// A `jwks_uri` fetch has succeeded (before that, fetches are retried every 2 s anyway, and
    /// an unknown kid does not spend the refetch allowance).
    loaded: std::sync::atomic::AtomicBool,
}

impl KeyStore {
    /// The store for `conf`, its keys loaded now when they are in a file, and its refresh
    /// task spawned on the current runtime. `upstream`: the `jwks_uri` host's upstream.
    pub fn start(conf: &JwtProviderConf, upstream: Option<Arc<UpstreamState>>) -> Arc<KeyStore> {
        let store = Arc::new(KeyStore {
            id: next_id(),
            keys: ArcSwap::from_pointee(KeySet::default()),
            wake: Arc::new(Notify::new()),
            last_refetch: AtomicU64::new(0),
            epoch: Instant::now(),
            remote: matches!(conf.keys, JwksSource::Uri { .. }),
            loaded: std::sync::atomic::AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&store);
        let wake = store.wake.clone();
        match conf.keys.clone() {
            JwksSource::File(path) => {
                let mut seen = file_stamp(&path);
                load_file(&store, &conf.name, &path);
                let name = conf.name.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(FILE_POLL).await;
                        let Some(store) = weak.upgrade() else { break };
                        let now = file_stamp(&path);
                        if now != seen {
                            seen = now;
                            load_file(&store, &name, &path);
                        }
                    }
                });
            }
            JwksSource::Uri {
                url,
                authority,
                path,
                ..
            } => {
                let Some(up) = upstream else {
                    return store;
                };
                let refresh = conf.refresh;
                let name = conf.name.clone();
                tokio::spawn(async move {
                    refresh_uri(weak, wake, up, name, url, authority, path, refresh).await
                });
            }
        }
        store
    }

    /// A token named a key the set lacks: refetch a `jwks_uri` soon, at most once per
    /// [`REFETCH_EVERY`].
    pub fn unknown_kid(&self) {
        if !self.remote || !self.loaded.load(Ordering::Relaxed) {
            return;
        }
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let last = self.last_refetch.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < REFETCH_EVERY.as_millis() as u64 {
            return;
        }
        if self
            .last_refetch
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.wake.notify_one();
        }
    }
}

fn file_stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Reads a `jwks_file`; a failed read keeps the keys already loaded.
fn load_file(store: &KeyStore, name: &str, path: &std::path::Path) {
    match std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|t| KeySet::parse(&t))
    {
        Ok(set) => {
            tracing::info!(provider = %name, keys = set.keys.len(), "JWKS loaded");
            store.keys.store(Arc::new(set));
        }
        Err(e) => {
            tracing::warn!(provider = %name, file = %path.display(), error = %e, "cannot load JWKS; keeping the keys loaded before")
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn refresh_uri(
    weak: Weak<KeyStore>,
    wake: Arc<Notify>,
    up: Arc<UpstreamState>,
    name: String,
    url: String,
    authority: String,
    path: String,
    refresh: Duration,
) {
    let host = HeaderValue::from_str(&authority).unwrap_or(HeaderValue::from_static("localhost"));
    let mut loaded = false;
    loop {
        let mut req = Request::new(ReqBody::Empty);
        match path.parse() {
            Ok(uri) => *req.uri_mut() = uri,
            Err(_) => return,
        }
        req.headers_mut().insert(
            http::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        );
        let got = call::call(&up, &host, req, FETCH_TIMEOUT, MAX_JWKS_BYTES).await;
        let Some(store) = weak.upgrade() else { break };
        match got {
            Ok(a) if a.status.is_success() => match KeySet::parse(&a.body) {
                Ok(set) => {
                    tracing::info!(provider = %name, keys = set.keys.len(), "JWKS fetched");
                    store.keys.store(Arc::new(set));
                    store.loaded.store(true, Ordering::Relaxed);
                    loaded = true;
                }
                Err(e) => tracing::warn!(provider = %name, url = %url, error = %e, "bad JWKS"),
            },
            Ok(a) => {
                tracing::warn!(provider = %name, url = %url, status = a.status.as_u16(), "JWKS fetch refused")
            }
            Err(e) => {
                tracing::warn!(provider = %name, url = %url, error = e.as_str(), "JWKS fetch failed")
            }
        }
        drop(store);
        let wait = if loaded {
            refresh
        } else {
            refresh.min(RETRY_UNLOADED)
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wake.notified() => {}
        }
        if weak.strong_count() == 0 {
            break;
        }
    }
}
