//! Ketama-style consistent hash ring (`ring_hash`).
//!
//! Each endpoint owns 256 points per unit of weight (fewer when the ring would pass 2^20
//! points); a key goes to the first point at or after its hash. Points are hashes of the
//! endpoint's address, so removing one endpoint only moves the keys it owned. Built once per
//! endpoint set; a lookup is a binary search.

use std::fmt::Write;
use std::sync::Arc;

use crate::upstream::Endpoint;
use crate::upstream::lb::hash_bytes;

const POINTS_PER_WEIGHT: u64 = 256;
const MAX_RING: u64 = 1 << 20;

#[derive(Debug, Default)]
pub struct Ring {
    /// (point hash, endpoint index), sorted by hash.
    points: Vec<(u64, u32)>,
}

impl Ring {
    pub fn build(endpoints: &[Arc<Endpoint>]) -> Ring {
        if endpoints.is_empty() {
            return Ring::default();
        }
        // A fixed number of points per unit of weight, so an endpoint's points do not depend
        // on the others: when one leaves, only its keys move. Scaled down for huge sets.
        let total: u64 = endpoints.iter().map(|e| u64::from(e.weight().max(1))).sum();
        let per_weight = (MAX_RING / total.max(1)).clamp(1, POINTS_PER_WEIGHT);
        let mut points = Vec::with_capacity((per_weight * total) as usize);
        let mut name = String::with_capacity(64);
        for (i, e) in endpoints.iter().enumerate() {
            for r in 0..per_weight * u64::from(e.weight().max(1)) {
                name.clear();
                let _ = write!(name, "{}_{r}", e.addr);
                points.push((hash_bytes(name.as_bytes()), i as u32));
            }
        }
        points.sort_unstable();
        Ring { points }
    }

    /// The endpoint owning `key`, walking on past endpoints `ok` refuses.
    pub fn lookup(&self, key: u64, ok: impl Fn(usize) -> bool) -> Option<usize> {
        let len = self.points.len();
        if len == 0 {
            return None;
        }
        let start = self.points.partition_point(|p| p.0 < key) % len;
        (0..len)
            .map(|k| self.points[(start + k) % len].1 as usize)
            .find(|&i| ok(i))
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::lb::fmix64;

    use crate::upstream::lb::test_endpoints as eps;

    #[test]
    fn balanced_and_minimal_disruption() {
        let three = eps(&[1, 2, 3]);
        let two = eps(&[1, 3]);
        let (r3, r2) = (Ring::build(&three), Ring::build(&two));
        let keys = 10_000u64;
        let mut counts = [0usize; 3];
        let mut moved = 0;
        for k in 0..keys {
            let h = fmix64(k);
            let a = r3.lookup(h, |_| true).expect("some");
            counts[a] += 1;
            let b = r2.lookup(h, |_| true).expect("some");
            let (pa, pb) = (three[a].addr.port(), two[b].addr.port());
            if pa != pb {
                // Only keys of the removed endpoint move.
                assert_eq!(pa, 2);
                moved += 1;
            }
        }
        for c in counts {
            assert!((2_700..=3_970).contains(&c), "{counts:?}");
        }
        assert_eq!(moved, counts[1]);
    }

    #[test]
    fn walks_past_refused_and_weights() {
        let e = eps(&[1, 2]);
        let r = Ring::build(&e);
        for k in 0..100 {
            assert_eq!(r.lookup(fmix64(k), |i| i == 1), Some(1));
        }
        assert_eq!(r.lookup(7, |_| false), None);
        let mut w = eps(&[1, 2]);
        w[0] = Arc::new(Endpoint::new(w[0].addr, 3));
        let r = Ring::build(&w);
        let heavy = (0..10_000)
            .filter(|&k| r.lookup(fmix64(k), |_| true) == Some(0))
            .count();
        assert!((6_800..=8_200).contains(&heavy), "{heavy}");
    }
}
