//! Circuit breakers of one upstream (docs/reference.md §3.4): counters shared by all workers,
//! held for the life of a request, retry or connection and released on drop.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Circuit-breaker counters of one upstream (docs/reference.md §3.4), shared by all workers.
#[derive(Debug, Default)]
pub struct Breakers {
    /// Requests in flight to the upstream.
    pub requests: AtomicU32,
    /// Requests waiting for a connection.
    pub pending: AtomicU32,
    /// Open upstream connections.
    pub connections: AtomicU32,
    /// Retries in flight.
    pub retries: AtomicU32,
    /// Requests refused by a breaker.
    pub overflows: AtomicU64,
}

/// Holds one unit of a breaker counter; releases it on drop.
#[derive(Debug)]
pub struct Held {
    breakers: Arc<Breakers>,
    which: Which,
}

#[derive(Debug, Clone, Copy)]
pub enum Which {
    Requests,
    Pending,
    Connections,
    Retries,
}

impl Breakers {
    fn counter(&self, w: Which) -> &AtomicU32 {
        match w {
            Which::Requests => &self.requests,
            Which::Pending => &self.pending,
            Which::Connections => &self.connections,
            Which::Retries => &self.retries,
        }
    }

    /// Takes one unit of `which` if fewer than `max` are held.
    pub fn try_hold(self: &Arc<Self>, which: Which, max: u32) -> Option<Held> {
        let c = self.counter(which);
        if c.fetch_add(1, Ordering::AcqRel) >= max {
            c.fetch_sub(1, Ordering::AcqRel);
            self.overflows.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(Held {
            breakers: self.clone(),
            which,
        })
    }

    /// Takes one unit without a limit (for counting only).
    pub fn hold(self: &Arc<Self>, which: Which) -> Held {
        self.counter(which).fetch_add(1, Ordering::AcqRel);
        Held {
            breakers: self.clone(),
            which,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.breakers
            .counter(self.which)
            .fetch_sub(1, Ordering::AcqRel);
    }
}
