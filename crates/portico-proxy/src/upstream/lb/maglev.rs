//! Maglev consistent hashing (Eisenbud et al., NSDI 2016), weighted as Envoy does.
//!
//! A lookup table of prime size M (at least 100 slots per endpoint, up to 65537) is filled by
//! each endpoint in turn along its own permutation (offset and skip from hashes of its
//! address); a heavier endpoint takes more turns. Lookups are one index; removing one
//! endpoint moves its keys and only a small fraction of the others'.

use std::sync::Arc;

use crate::upstream::Endpoint;
use crate::upstream::lb::{fmix64, hash_bytes};

const MAX_TABLE: u64 = 65_537;
const EMPTY: u32 = u32::MAX;

#[derive(Debug, Default)]
pub struct Maglev {
    table: Vec<u32>,
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// The table size for `n` endpoints: the smallest prime ≥ 100·n (at least 1021), capped.
fn table_size(n: usize) -> u64 {
    let mut m = (n as u64 * 100).clamp(1021, MAX_TABLE);
    while !is_prime(m) {
        m += 1;
    }
    m
}

impl Maglev {
    pub fn build(endpoints: &[Arc<Endpoint>]) -> Maglev {
        let n = endpoints.len();
        if n == 0 {
            return Maglev::default();
        }
        let m = table_size(n);
        let perms: Vec<(u64, u64)> = endpoints
            .iter()
            .map(|e| {
                let h = hash_bytes(e.addr.to_string().as_bytes());
                (h % m, fmix64(h ^ 0x9e37_79b9_7f4a_7c15) % (m - 1) + 1)
            })
            .collect();
        let weights: Vec<u64> = endpoints
            .iter()
            .map(|e| u64::from(e.weight().max(1)))
            .collect();
        let max_w = weights.iter().copied().max().unwrap_or(1);
        let mut next = vec![0u64; n];
        let mut count = vec![0u64; n];
        let mut table = vec![EMPTY; m as usize];
        let mut filled = 0u64;
        let mut iteration = 1u64;
        while filled < m {
            for i in 0..n {
                if weights[i] * iteration < max_w * count[i] {
                    continue;
                }
                let (offset, skip) = perms[i];
                loop {
                    let c = ((offset + skip * next[i]) % m) as usize;
                    next[i] += 1;
                    if table[c] == EMPTY {
                        table[c] = i as u32;
                        count[i] += 1;
                        filled += 1;
                        break;
                    }
                }
                if filled == m {
                    break;
                }
            }
            iteration += 1;
        }
        Maglev { table }
    }

    /// The endpoint for `key`; when `ok` refuses it, a few rehashes of the key are tried
    /// (keys of acceptable endpoints stay where they are).
    pub fn lookup(&self, key: u64, ok: impl Fn(usize) -> bool) -> Option<usize> {
        let m = self.table.len() as u64;
        if m == 0 {
            return None;
        }
        let mut k = key;
        for attempt in 0..8u64 {
            let i = self.table[(k % m) as usize] as usize;
            if ok(i) {
                return Some(i);
            }
            k = fmix64(key.wrapping_add(attempt + 1));
        }
        None
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::upstream::lb::test_endpoints as eps;

    #[test]
    fn sizes_are_prime() {
        assert_eq!(table_size(1), 1021);
        assert_eq!(table_size(1000), 65_537);
        assert!(is_prime(table_size(37)));
    }

    #[test]
    fn even_and_minimal_disruption() {
        let three = eps(&[1, 2, 3]);
        let two = eps(&[1, 3]);
        let (m3, m2) = (Maglev::build(&three), Maglev::build(&two));
        let mut counts = [0usize; 3];
        for &i in &m3.table {
            counts[i as usize] += 1;
        }
        // Maglev fills almost evenly: within one slot of M/3.
        for c in counts {
            assert!(c.abs_diff(m3.len() / 3) <= 1, "{counts:?}");
        }
        let keys = 10_000u64;
        let (mut moved, mut moved_other) = (0, 0);
        for k in 0..keys {
            let h = fmix64(k);
            let a = m3.lookup(h, |_| true).expect("some");
            let b = m2.lookup(h, |_| true).expect("some");
            if three[a].addr.port() != two[b].addr.port() {
                moved += 1;
                if three[a].addr.port() != 2 {
                    moved_other += 1;
                }
            }
        }
        assert!(moved < 3_334 + 500, "{moved}");
        assert!(moved_other < 500, "{moved_other}");
    }

    #[test]
    fn weighted_and_refusal() {
        let mut e = eps(&[1, 2]);
        e[1] = Arc::new(Endpoint::new(e[1].addr, 3));
        let m = Maglev::build(&e);
        let heavy = m.table.iter().filter(|&&i| i == 1).count();
        let share = heavy as f64 / m.len() as f64;
        assert!((0.74..=0.76).contains(&share), "{share}");
        for k in 0..100 {
            // Refused slots rehash (the caller scans when all eight refuse).
            assert_ne!(m.lookup(fmix64(k), |i| i == 0), Some(1));
        }
    }
}
