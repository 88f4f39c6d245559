//! Send-side bounds on a response: the request's deadline covers the response to its last
//! byte, and a client that reads nothing for the route's `idle_timeout_ms` is cut.
//!
//! Neither can be checked from inside the response body alone: once a client stops reading,
//! hyper stops polling the body (its write buffer is full), so the body's own timers never
//! run. Instead each proxied response carries a [`SendWatch`] (its deadline, idle timeout and
//! a progress counter the body bumps for every chunk it hands to hyper), and a [`Watchdog`]
//! polled beside the connection (HTTP/1) or the stream (HTTP/2) checks it on a timer of its
//! own. When a bound is reached the watchdog returns, and its owner drops what writes the
//! response: the HTTP/1 connection is closed, the HTTP/2 stream reset (h2 sends RST_STREAM
//! when a stream is dropped unfinished). The body sees the cut when it is dropped and logs
//! the status already sent with flag UT or SI.
//!
//! Idle progress is sampled every quarter of the idle timeout, so a cut comes between the
//! idle timeout and 1¼ × it after the last chunk left (one timer per connection or stream,
//! no clock read per chunk).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::time::{Instant, Sleep};

const STREAMING: u8 = 0;
const DONE: u8 = 1;
const CUT_DEADLINE: u8 = 2;
const CUT_IDLE: u8 = 3;

/// The send-side state of one response.
#[derive(Debug)]
pub struct SendWatch {
    deadline: Option<Instant>,
    idle: Option<Duration>,
    progress: AtomicU64,
    state: AtomicU8,
}

impl SendWatch {
    /// A watch for a response bounded by `deadline` and/or `idle`; `None` when neither is set.
    pub fn new(deadline: Option<Instant>, idle: Option<Duration>) -> Option<Arc<SendWatch>> {
        if deadline.is_none() && idle.is_none() {
            return None;
        }
        Some(Arc::new(SendWatch {
            deadline,
            idle,
            progress: AtomicU64::new(0),
            state: AtomicU8::new(STREAMING),
        }))
    }

    /// `n` more bytes were handed to the connection's writer.
    pub fn progress(&self, n: usize) {
        self.progress.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The response ended (the watchdog stops watching it). No effect after a cut.
    pub fn done(&self) {
        let _ = self
            .state
            .compare_exchange(STREAMING, DONE, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Why the watchdog cut this response, if it did.
    pub fn cut(&self) -> Option<Cut> {
        match self.state.load(Ordering::Relaxed) {
            CUT_DEADLINE => Some(Cut::Deadline),
            CUT_IDLE => Some(Cut::Idle),
            _ => None,
        }
    }

    fn streaming(&self) -> bool {
        self.state.load(Ordering::Relaxed) == STREAMING
    }

    /// Marks the response cut for `why`; false when it ended first.
    fn try_cut(&self, why: Cut) -> bool {
        let v = match why {
            Cut::Deadline => CUT_DEADLINE,
            Cut::Idle => CUT_IDLE,
        };
        self.state
            .compare_exchange(STREAMING, v, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

/// The response a connection (HTTP/1) or stream (HTTP/2) is sending, for its watchdog.
///
/// The watchdog must be polled after what sets the slot, in the same task (it is woken by
/// nothing but its own timer): `serve` polls it right after the connection (`biased`),
/// [`Watched`] (or [`poll_watched`]) right after the stream.
#[derive(Default)]
pub struct Slot {
    current: ArcSwapOption<SendWatch>,
}

impl Slot {
    /// Watch `w` from now on (replacing the previous response's watch).
    pub fn watch(&self, w: Arc<SendWatch>) {
        self.current.store(Some(w));
    }

    /// Whether a response was ever watched through this slot (a slot never used can serve
    /// the next stream as it is).
    pub fn is_used(&self) -> bool {
        self.current.load().is_some()
    }
}

tokio::task_local! {
    /// The slot of the HTTP/2 stream being polled (set by [`watched`] and [`poll_watched`]).
    static STREAM_SLOT: Arc<Slot>;
}

/// The HTTP/2 stream slot of the stream being polled, if any.
pub fn stream_slot() -> Option<Arc<Slot>> {
    STREAM_SLOT.try_with(Arc::clone).ok()
}

/// Resolves with the cut once the watched response passes its deadline or idle timeout.
///
/// Between checks it costs a slot load and a timer poll: the clock is read and progress
/// sampled only when its timer fires (or a new response is watched).
pub struct Watchdog {
    slot: Arc<Slot>,
    current: Option<Arc<SendWatch>>,
    timer: Option<Pin<Box<Sleep>>>,
    seen: u64,
    /// When progress was last seen to change (or watching began).
    moved_at: Instant,
}

impl Watchdog {
    pub fn new(slot: Arc<Slot>) -> Watchdog {
        Watchdog {
            slot,
            current: None,
            timer: None,
            seen: 0,
            moved_at: Instant::now(),
        }
    }

    /// Checks the watched response now: `Ok(cut)`, or `Err(when)` to check next (`None`:
    /// nothing to watch).
    fn check(&mut self) -> Result<Cut, Option<Instant>> {
        let Some(w) = self.current.as_ref().filter(|w| w.streaming()) else {
            return Err(None);
        };
        let now = Instant::now();
        let p = w.progress.load(Ordering::Relaxed);
        if p != self.seen {
            self.seen = p;
            self.moved_at = now;
        }
        let mut next = None::<Instant>;
        if let Some(d) = w.deadline {
            if now >= d {
                return if w.try_cut(Cut::Deadline) {
                    Ok(Cut::Deadline)
                } else {
                    Err(None)
                };
            }
            next = Some(d);
        }
        if let Some(idle) = w.idle {
            if now.saturating_duration_since(self.moved_at) >= idle {
                return if w.try_cut(Cut::Idle) {
                    Ok(Cut::Idle)
                } else {
                    Err(None)
                };
            }
            let step = (idle / 4).max(Duration::from_millis(1));
            let sample = (now + step).min(self.moved_at + idle);
            next = Some(next.map_or(sample, |n| n.min(sample)));
        }
        Err(next)
    }
}

impl Future for Watchdog {
    type Output = Cut;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Cut> {
        let this = self.get_mut();
        let mut fresh = false;
        {
            let cur = this.slot.current.load();
            let same = match (&*cur, &this.current) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            };
            if !same {
                this.current = cur.clone();
                this.seen = 0;
                this.moved_at = Instant::now();
                fresh = true;
            }
        }
        if !fresh {
            // Not due yet (or nothing armed): nothing to check.
            let due = match &mut this.timer {
                Some(t) => t.as_mut().poll(cx).is_ready(),
                None => false,
            };
            if !due {
                return Poll::Pending;
            }
        }
        loop {
            let at = match this.check() {
                Ok(cut) => return Poll::Ready(cut),
                Err(Some(at)) => at,
                Err(None) => {
                    this.timer = None;
                    return Poll::Pending;
                }
            };
            let timer = match &mut this.timer {
                Some(t) => {
                    t.as_mut().reset(at);
                    t
                }
                None => this.timer.insert(Box::pin(tokio::time::sleep_until(at))),
            };
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

/// `fut` (an HTTP/2 stream) raced against a watchdog of its own, with its own [`Slot`]
/// (readable by the stream's service future through [`stream_slot`]): the form in which a
/// stream runs as a task of its own. A cut ends the future, which resets the stream.
pub fn watched<F: Future>(fut: F) -> impl Future<Output = ()> {
    let slot = Arc::new(Slot::default());
    let dog = Watchdog::new(slot.clone());
    STREAM_SLOT.scope(slot, Watched { fut, dog })
}

/// Polls a stream kept elsewhere (`downstream::h2_streams`) the way [`watched`] does: inside
/// the scope of its `slot`, then its watchdog. `Ready` once it ended or was cut (the caller
/// drops it then, which resets the stream).
pub fn poll_watched<F: Future>(
    slot: &Arc<Slot>,
    dog: &mut Watchdog,
    fut: Pin<&mut F>,
    cx: &mut Context<'_>,
) -> Poll<()> {
    if STREAM_SLOT
        .sync_scope(slot.clone(), || fut.poll(cx))
        .is_ready()
    {
        return Poll::Ready(());
    }
    match Pin::new(dog).poll(cx) {
        Poll::Ready(cut) => {
            tracing::debug!(reason = %cut, "HTTP/2 response cut; stream reset");
            Poll::Ready(())
        }
        Poll::Pending => Poll::Pending,
    }
}

pin_project_lite::pin_project! {
    /// A stream's future raced against its watchdog.
    struct Watched<F> {
        #[pin]
        fut: F,
        dog: Watchdog,
    }
}

impl<F: Future> Future for Watched<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if this.fut.poll(cx).is_ready() {
            return Poll::Ready(());
        }
        match Pin::new(this.dog).poll(cx) {
            Poll::Ready(cut) => {
                tracing::debug!(reason = %cut, "HTTP/2 response cut; stream reset");
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Why Portico cut a response body short.
#[derive(Debug, Clone, Copy)]
pub enum Cut {
    Deadline,
    Idle,
}

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cut::Deadline => f.write_str("request deadline reached while streaming the response"),
            Cut::Idle => f.write_str("stream idle timeout"),
        }
    }
}

impl std::error::Error for Cut {}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[tokio::test]
    async fn cuts_on_idle_and_deadline_but_not_after_the_end() {
        let slot = Arc::new(Slot::default());
        let mut dog = Watchdog::new(slot.clone());
        let w = SendWatch::new(None, Some(MS(400))).expect("watch");
        slot.watch(w.clone());
        // Progress every 50 ms keeps it alive for well past the idle timeout.
        for _ in 0..20 {
            w.progress(10);
            assert!(tokio::time::timeout(MS(50), &mut dog).await.is_err());
        }
        let cut = tokio::time::timeout(MS(5000), &mut dog).await;
        assert!(matches!(cut, Ok(Cut::Idle)));
        assert!(matches!(w.cut(), Some(Cut::Idle)));

        let d = SendWatch::new(Some(Instant::now() + MS(200)), None).expect("watch");
        slot.watch(d.clone());
        let cut = tokio::time::timeout(MS(5000), &mut dog).await;
        assert!(matches!(cut, Ok(Cut::Deadline)));
        assert!(matches!(d.cut(), Some(Cut::Deadline)));

        // A response that ended is not cut.
        let e = SendWatch::new(Some(Instant::now() + MS(100)), Some(MS(100))).expect("watch");
        slot.watch(e.clone());
        e.done();
        assert!(tokio::time::timeout(MS(500), &mut dog).await.is_err());
        assert!(e.cut().is_none());
    }
}
