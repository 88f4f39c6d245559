//! A per-worker cache of verified tokens (reference §9.2 allows one): a thread-local map from
//! (provider key store, key set generation, token) to the token's `exp` and the headers its
//! claims forward. Bounded in entries (the map is emptied when full); an entry is used only while
//! `now <= exp + clock skew`, and never after the provider's keys were reloaded (the key set's
//! identity is part of the key), so a key removed from a JWKS stops being trusted at once.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderName, HeaderValue};

/// Entries per worker before the cache is emptied.
pub const MAX_ENTRIES: usize = 4096;
/// Tokens longer than this are not cached (they would crowd the bound's memory).
const MAX_TOKEN_LEN: usize = 4096;

/// What a cached verification gives back.
pub type Forwarded = Arc<[(HeaderName, HeaderValue)]>;

struct Entry {
    token: Box<str>,
    /// `exp` + clock skew, in Unix seconds (`u64::MAX`: the token has no `exp`).
    valid_until: u64,
    headers: Forwarded,
}

/// (key store id, key set generation, hash of the token); the entry holds the token itself,
/// compared on lookup, so a lookup allocates nothing.
type Key = (u64, u64, u64);

thread_local! {
    static CACHE: RefCell<(HashMap<Key, Entry>, ahash::RandomState)> =
        RefCell::new((HashMap::new(), ahash::RandomState::new()));
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The forwarded headers of `token` if this worker verified it with these keys and it has not
/// expired since. `store`: the provider's key store id; `keys`: the loaded key set's
/// generation.
pub fn get(store: u64, keys: u64, token: &str) -> Option<Forwarded> {
    CACHE.with(|c| {
        let (map, hasher) = &mut *c.borrow_mut();
        let key = (store, keys, hasher.hash_one(token));
        let e = map.get(&key)?;
        if &*e.token != token {
            return None;
        }
        if now() <= e.valid_until {
            return Some(e.headers.clone());
        }
        map.remove(&key);
        None
    })
}

/// Remembers a verified token (`exp`: its claim, `skew`: seconds allowed past it).
pub fn put(store: u64, keys: u64, token: &str, exp: Option<u64>, skew: u64, headers: Forwarded) {
    if token.len() > MAX_TOKEN_LEN {
        return;
    }
    let valid_until = exp.map_or(u64::MAX, |e| e.saturating_add(skew));
    CACHE.with(|c| {
        let (map, hasher) = &mut *c.borrow_mut();
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        let key = (store, keys, hasher.hash_one(token));
        map.insert(
            key,
            Entry {
                token: Box::from(token),
                valid_until,
                headers,
            },
        );
    });
}

/// Entries cached on this worker (for tests).
pub fn len() -> usize {
    CACHE.with(|c| c.borrow().0.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn honours_exp_keys_and_bound() {
        let h: Forwarded = Arc::from(vec![(
            HeaderName::from_static("x-user"),
            HeaderValue::from_static("alice"),
        )]);
        put(1, 2, "tok", Some(now() + 60), 0, h.clone());
        assert_eq!(get(1, 2, "tok").map(|f| f.len()), Some(1));
        // Another key set (keys reloaded): not trusted.
        assert!(get(1, 3, "tok").is_none());
        // Expired (skew included).
        put(1, 2, "old", Some(now() - 10), 5, h.clone());
        assert!(get(1, 2, "old").is_none());
        put(1, 2, "skewed", Some(now() - 10), 60, h.clone());
        assert!(get(1, 2, "skewed").is_some());
        for i in 0..MAX_ENTRIES + 10 {
            put(9, 9, &format!("t{i}"), None, 0, h.clone());
        }
        assert!(len() <= MAX_ENTRIES);
    }
}
