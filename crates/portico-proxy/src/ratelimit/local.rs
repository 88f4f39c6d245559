//! Local rate limits (reference §4, `scope: local`): one token bucket per distinct key (the
//! values of the rule's descriptor parts), kept per process.
//!
//! **Algorithm.** Each bucket is GCRA (the "generic cell rate algorithm", equivalent to a token
//! bucket of capacity `burst` refilled at `requests_per_unit` per `unit`), stored as a single
//! `AtomicU64`: the *theoretical arrival time* (TAT) in nanoseconds since the limiter's epoch.
//! A request at `now` is allowed when `max(TAT, now) + T - now <= burst * T` (with
//! `T = unit / requests_per_unit`), and then TAT moves to `max(TAT, now) + T` by one
//! compare-and-swap; a refused request changes nothing. No lock is taken to decide.
//!
//! **Lock-free lookups.** Each thread keeps its own map from key to the shared bucket
//! (`thread_local::ThreadLocal`; Portico's workers are one thread each), so a request for a key
//! this thread has seen before finds its bucket without any lock or shared write: one
//! thread-local hash lookup, then the bucket's CAS. Only a key new to the thread goes to the
//! shared table below (a shard's read lock; the write lock only for a key new to the process).
//!
//! **Bounded state.** The shared table has [`SHARDS`] shards, each a
//! `RwLock<HashMap<u64, Arc<AtomicU64>>>` keyed by a 64-bit keyed hash of the key (ahash with a
//! per-limiter random seed; a collision, about 2^-64 per pair, would make two keys share a
//! bucket). A shard holds at most `max_keys / SHARDS` buckets: when full, buckets whose TAT is
//! in the past are dropped first (a full bucket is indistinguishable from a new one, so this
//! loses nothing), and if the shard is still over 3/4 of its cap, arbitrary buckets are dropped
//! down to half (those keys get a fresh burst: under a flood of distinct keys the limiter stays
//! within memory rather than exact). A dropped bucket's TAT is set to [`EVICTED`] first, so a
//! thread that still holds it notices at its next CAS and fetches the key's current bucket: a
//! key never has two live buckets. Each thread's map is capped at a quarter of `max_keys`
//! (evicted entries are dropped first, then the whole map). `tests/ratelimit_memory.rs` measures a
//! flood of 1,000,000 distinct keys.
//!
//! **Why not a concurrent lock-free map.** papaya 0.2 and scc 3 (`HashIndex`) were measured as
//! the shared table (2026-11-27, release build, 2-core machine) and rejected: papaya's default
//! incremental resizing leaves a resize pending until later inserts finish it, and until then
//! every lookup walks the old table (470 ns per lookup at 10,000 keys against 27 ns once the
//! resize is done; 1.3 µs per new key under a flood of distinct keys with this eviction); its
//! blocking mode did not get through 1,000,000 distinct keys with eviction in 2 minutes. scc's
//! `HashIndex` looks up in 22-43 ns but took 53 µs per new key under the same flood. A flood of
//! distinct keys is exactly the attack this limiter must absorb; per-thread maps in front of a
//! sharded table keep both the known-key path lock-free and the flood cheap.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use portico_config::snapshot::RateLimitUnit;

/// Shards per limiter (a power of two).
pub const SHARDS: usize = 64;
/// Most keys one limiter keeps.
pub const DEFAULT_MAX_KEYS: usize = 1 << 18;

/// The maps' hasher: keys are already 64-bit hashes; see `finish`.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        // One multiply spreads the key into the top bits hashbrown tags slots with: keys from
        // `key_hasher` are uniform already, but small or patterned ones (tests, benches) would
        // otherwise all share one tag.
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Key hash -> bucket (its TAT); shared by the table and the threads that use it.
type Buckets = HashMap<u64, Arc<AtomicU64>, BuildHasherDefault<IdHasher>>;

/// The TAT of a bucket the shared table has dropped: holders must fetch the key again.
pub const EVICTED: u64 = u64::MAX;

/// One shard, on its own cache lines.
#[repr(align(128))]
struct Shard(RwLock<Buckets>);

/// What a check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Allowed; `remaining` more requests could pass right now.
    Allow { remaining: u64 },
    /// Over the limit.
    Deny(Denied),
}

/// The figures of a refusal, for the `retry-after` and `x-ratelimit-*` headers (seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denied {
    /// The bucket's capacity (`burst`).
    pub limit: u64,
    /// Seconds (rounded up, at least 1) until one request would pass.
    pub retry_after: u64,
    /// Seconds (rounded up, at least 1) until the bucket is full again.
    pub reset: u64,
}

/// The token buckets of one rule of one route.
pub struct LocalLimiter {
    /// T: nanoseconds per token.
    interval: u64,
    /// burst * T.
    tolerance: u64,
    burst: u64,
    shards: Box<[Shard]>,
    per_shard: usize,
    /// Each thread's key -> bucket map (the lock-free path).
    local: thread_local::ThreadLocal<RefCell<Buckets>>,
    hasher: ahash::RandomState,
    epoch: Instant,
}

impl std::fmt::Debug for LocalLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLimiter")
            .field("interval_ns", &self.interval)
            .field("burst", &self.burst)
            .finish_non_exhaustive()
    }
}

fn unit_nanos(unit: RateLimitUnit) -> u64 {
    match unit {
        RateLimitUnit::Second => 1_000_000_000,
        RateLimitUnit::Minute => 60_000_000_000,
        RateLimitUnit::Hour => 3_600_000_000_000,
    }
}

fn ceil_secs(ns: u64) -> u64 {
    ns.div_ceil(1_000_000_000).max(1)
}

/// TATs are stored shifted by this much so that 0 can mean "new bucket" with no special case.
const START: u64 = 1;

impl LocalLimiter {
    pub fn new(requests_per_unit: u64, unit: RateLimitUnit, burst: u64) -> LocalLimiter {
        Self::with_max_keys(requests_per_unit, unit, burst, DEFAULT_MAX_KEYS)
    }

    pub fn with_max_keys(
        requests_per_unit: u64,
        unit: RateLimitUnit,
        burst: u64,
        max_keys: usize,
    ) -> LocalLimiter {
        let interval = (unit_nanos(unit) / requests_per_unit.max(1)).max(1);
        let burst = burst.max(1);
        LocalLimiter {
            interval,
            tolerance: interval.saturating_mul(burst),
            burst,
            shards: (0..SHARDS)
                .map(|_| Shard(RwLock::new(Buckets::default())))
                .collect(),
            per_shard: (max_keys / SHARDS).max(4),
            local: thread_local::ThreadLocal::new(),
            hasher: ahash::RandomState::new(),
            epoch: Instant::now(),
        }
    }

    /// A hasher for building a key (seeded per limiter).
    pub fn key_hasher(&self) -> ahash::AHasher {
        self.hasher.build_hasher()
    }

    fn now(&self) -> u64 {
        START + self.epoch.elapsed().as_nanos() as u64
    }

    /// How many buckets are kept.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.0.read().map(|m| m.len()).unwrap_or(0))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Most buckets kept.
    pub fn max_keys(&self) -> usize {
        self.per_shard * SHARDS
    }

    /// Most keys one thread's map keeps: a quarter of the shared table (a key missing there
    /// is only a shard read lock away).
    fn per_thread_keys(&self) -> usize {
        (self.max_keys() / 4).max(64)
    }

    /// Takes one token from the bucket of `key` (a hash from [`LocalLimiter::key_hasher`]).
    pub fn check(&self, key: u64) -> Decision {
        self.check_at(key, self.now())
    }

    fn check_at(&self, key: u64, now: u64) -> Decision {
        let cell = self.local.get_or(|| RefCell::new(Buckets::default()));
        let Ok(mut mine) = cell.try_borrow_mut() else {
            // Re-entered on this thread (not expected): go to the shared table.
            return self.check_shared(key, now);
        };
        if let Some(tat) = mine.get(&key)
            && let Some(d) = self.gcra(tat, now)
        {
            return d;
        }
        // New to this thread, or dropped by the shared table since: fetch the current bucket.
        loop {
            let tat = self.shared(key, now);
            let cap = self.per_thread_keys();
            if mine.len() >= cap && !mine.contains_key(&key) {
                mine.retain(|_, t| t.load(Ordering::Relaxed) != EVICTED);
                if mine.len() >= cap / 4 * 3 {
                    mine.clear();
                }
            }
            mine.insert(key, tat.clone());
            if let Some(d) = self.gcra(&tat, now) {
                return d;
            }
        }
    }

    /// [`LocalLimiter::check_at`] through the shared table only.
    fn check_shared(&self, key: u64, now: u64) -> Decision {
        loop {
            if let Some(d) = self.gcra(&self.shared(key, now), now) {
                return d;
            }
        }
    }

    /// The key's bucket in the shared table, created if new.
    fn shared(&self, key: u64, now: u64) -> Arc<AtomicU64> {
        let shard = &self.shards[(key >> 58) as usize & (SHARDS - 1)].0;
        {
            let map = shard.read().unwrap_or_else(|e| e.into_inner());
            if let Some(tat) = map.get(&key) {
                return tat.clone();
            }
        }
        let mut map = shard.write().unwrap_or_else(|e| e.into_inner());
        if map.len() >= self.per_shard && !map.contains_key(&key) {
            self.evict(&mut map, now);
        }
        map.entry(key)
            .or_insert_with(|| Arc::new(AtomicU64::new(0)))
            .clone()
    }

    /// GCRA on one bucket; `None` when the bucket was dropped ([`EVICTED`]).
    fn gcra(&self, tat: &AtomicU64, now: u64) -> Option<Decision> {
        let mut cur = tat.load(Ordering::Relaxed);
        loop {
            if cur == EVICTED {
                return None;
            }
            let next = cur.max(now) + self.interval;
            let used = next - now;
            if used > self.tolerance {
                return Some(Decision::Deny(Denied {
                    limit: self.burst,
                    retry_after: ceil_secs(used - self.tolerance),
                    reset: ceil_secs(cur.saturating_sub(now)),
                }));
            }
            match tat.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => {
                    return Some(Decision::Allow {
                        remaining: (self.tolerance - used) / self.interval,
                    });
                }
                Err(actual) => cur = actual,
            }
        }
    }

    /// Makes room in a full shard (see the module docs).
    fn evict(&self, map: &mut Buckets, now: u64) {
        // Marked before it leaves the table: a thread holding it re-fetches at its next CAS.
        let drop_it = |tat: &AtomicU64| {
            tat.swap(EVICTED, Ordering::Relaxed);
            false
        };
        // A full bucket goes only if no request moved it meanwhile (then it is not full).
        map.retain(|_, tat| {
            let cur = tat.load(Ordering::Relaxed);
            cur > now
                || tat
                    .compare_exchange(cur, EVICTED, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
        });
        if map.len() > self.per_shard / 4 * 3 {
            let mut excess = map.len() - self.per_shard / 2;
            map.retain(|_, tat| {
                if excess > 0 {
                    excess -= 1;
                    drop_it(tat)
                } else {
                    true
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl LocalLimiter {
        /// Drops every bucket of the shared table, as eviction does.
        fn drop_all(&self) {
            for shard in self.shards.iter() {
                let mut map = shard.0.write().unwrap_or_else(|e| e.into_inner());
                for tat in map.values() {
                    tat.swap(EVICTED, Ordering::Relaxed);
                }
                map.clear();
            }
        }
    }

    /// A thread that still holds a bucket the shared table dropped moves to the key's new
    /// bucket: the key never has two live buckets (burst 2: A takes one token, the bucket is
    /// dropped, B empties the new one, and A is refused instead of taking its old bucket's
    /// second token).
    #[test]
    fn a_dropped_bucket_is_left_by_every_thread() {
        let l = LocalLimiter::new(1, RateLimitUnit::Hour, 2);
        std::thread::scope(|s| {
            let (to_a, from_main) = std::sync::mpsc::channel::<()>();
            let (to_main, from_a) = std::sync::mpsc::channel::<Decision>();
            let l = &l;
            s.spawn(move || {
                let _ = to_main.send(l.check_at(5, START));
                let _ = from_main.recv();
                let _ = to_main.send(l.check_at(5, START));
            });
            assert!(matches!(
                from_a.recv(),
                Ok(Decision::Allow { remaining: 1 })
            ));
            l.drop_all();
            s.spawn(move || {
                assert_eq!(
                    allowed(l, 5, START, 5),
                    2,
                    "the new bucket has a fresh burst"
                );
            })
            .join()
            .ok();
            let _ = to_a.send(());
            assert!(
                matches!(from_a.recv(), Ok(Decision::Deny(_))),
                "A must use the key's current bucket"
            );
        });
    }

    /// The path for a key a thread has seen takes no lock: with every shard's write lock
    /// held by another party, a known key is still decided.
    #[test]
    fn a_known_key_is_decided_without_the_shared_table() {
        let l = LocalLimiter::new(1, RateLimitUnit::Hour, 3);
        assert!(matches!(l.check_at(11, START), Decision::Allow { .. }));
        let guards: Vec<_> = l
            .shards
            .iter()
            .map(|s| s.0.write().unwrap_or_else(|e| e.into_inner()))
            .collect();
        assert_eq!(l.check_at(11, START), Decision::Allow { remaining: 1 });
        assert_eq!(l.check_at(11, START), Decision::Allow { remaining: 0 });
        assert!(matches!(l.check_at(11, START), Decision::Deny(_)));
        drop(guards);
    }

    const SEC: u64 = 1_000_000_000;

    fn allowed(l: &LocalLimiter, key: u64, now: u64, n: usize) -> usize {
        (0..n)
            .filter(|_| matches!(l.check_at(key, now), Decision::Allow { .. }))
            .count()
    }

    #[test]
    fn burst_then_refill() {
        let l = LocalLimiter::new(10, RateLimitUnit::Second, 10);
        assert_eq!(allowed(&l, 1, START, 40), 10);
        match l.check_at(1, START) {
            Decision::Deny(d) => {
                assert_eq!(d.limit, 10);
                assert_eq!(d.retry_after, 1);
                assert_eq!(d.reset, 1);
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        // 100 ms later one token is back; one second later, ten.
        assert_eq!(allowed(&l, 1, START + SEC / 10, 5), 1);
        assert_eq!(allowed(&l, 1, START + SEC + SEC / 10, 40), 10);
        // Another key has its own bucket.
        assert_eq!(allowed(&l, 2, START, 40), 10);
    }

    #[test]
    fn remaining_counts_down() {
        let l = LocalLimiter::new(100, RateLimitUnit::Minute, 3);
        assert_eq!(l.check_at(7, START), Decision::Allow { remaining: 2 });
        assert_eq!(l.check_at(7, START), Decision::Allow { remaining: 1 });
        assert_eq!(l.check_at(7, START), Decision::Allow { remaining: 0 });
        assert!(matches!(l.check_at(7, START), Decision::Deny(_)));
    }

    #[test]
    fn state_is_bounded() {
        let l = LocalLimiter::with_max_keys(1, RateLimitUnit::Hour, 1, 1024);
        for k in 0..100_000u64 {
            let key = k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            l.check_at(key, START + k);
        }
        assert!(l.len() <= l.max_keys(), "{} > {}", l.len(), l.max_keys());
    }

    #[test]
    fn concurrent_checks_share_one_bucket_exactly() {
        let l = LocalLimiter::new(1, RateLimitUnit::Hour, 1000);
        let passed: usize = std::thread::scope(|s| {
            let threads: Vec<_> = (0..4)
                .map(|_| s.spawn(|| allowed(&l, 9, START, 500)))
                .collect();
            threads.into_iter().map(|t| t.join().unwrap_or(0)).sum()
        });
        assert_eq!(passed, 1000, "4 threads x 500 checks of one bucket of 1000");
    }

    #[test]
    fn concurrent_flood_of_new_keys_stays_bounded() {
        let l = LocalLimiter::with_max_keys(1, RateLimitUnit::Hour, 1, 1024);
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let l = &l;
                s.spawn(move || {
                    for k in 0..50_000u64 {
                        let key = (t << 32 | k).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                        l.check_at(key, START + k);
                    }
                });
            }
        });
        assert!(l.len() <= l.max_keys(), "{} > {}", l.len(), l.max_keys());
        assert!(
            l.len() >= l.max_keys() / 4,
            "the map was used: {} keys",
            l.len()
        );
    }
}
