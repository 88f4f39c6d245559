//! The HTTP/2 streams of one downstream connection, run inside the connection's own task
//! instead of one spawned tokio task each.
//!
//! hyper's HTTP/2 server hands every request stream to an executor. Spawning a task per stream
//! cost about 2.2k instructions per request (the task cell is allocated through the allocator's
//! slow path for large blocks, and the stream's future of several KB is copied four times on
//! its way into it), plus the scheduler's bookkeeping. Here the connection keeps its streams in
//! reusable pinned slots ([`Streams`]): a new stream is moved once into a free slot, a slot's
//! box is reused by the next stream, and [`Driven`] polls the connection and the woken streams
//! in the same task, each with a waker of its own, so a wake-up polls only what was woken.
//!
//! The executor ([`StreamExec`]) finds the connection being polled through a thread-local set
//! by [`Driven`] around the connection's poll (hyper starts streams only from there), and moves
//! the stream's future straight into a slot (each by-value move of it costs a memcpy of
//! several KB). Each stream keeps the send-side watchdog it had as a task
//! (`send_watch::poll_watched`). Anything started elsewhere (an HTTP/2 upgrade's send task,
//! started by a stream) or of another type is spawned as before (`send_watch::watched`).
//!
//! A stream ends the way it did as a task: its future completes, or is dropped when the
//! connection's serving ends ([`Streams::close`]; hyper resets a stream dropped unfinished).
//! After the connection future completes, the caller runs [`Streams::finish`] so streams still
//! in flight end as they would have in their own tasks.

use std::any::Any;
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

use crate::downstream::send_watch::{self, Watchdog};

/// Slots kept allocated while a connection has no stream in flight (memory of an idle
/// connection); above this, slots are freed when the last stream ends.
const KEEP_IDLE_SLOTS: usize = 4;
/// Rounds of "poll the connection if woken, then the woken streams" per task poll, before
/// yielding to the runtime (a stream that yields for tokio's budget is woken at once).
const ROUNDS: usize = 8;

thread_local! {
    /// The stream set of the connection whose future is being polled on this thread.
    static CURRENT: RefCell<Option<Arc<Shared>>> = const { RefCell::new(None) };
}

/// hyper's executor for HTTP/2 streams: a stream of the connection being polled goes into
/// that connection's set; anything else runs as a task of its own.
#[derive(Clone, Copy, Debug, Default)]
pub struct StreamExec;

impl<F> hyper::rt::Executor<F> for StreamExec
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    #[inline]
    fn execute(&self, fut: F) {
        let current = CURRENT.with(|c| c.try_borrow().ok().and_then(|c| c.clone()));
        match current {
            Some(shared) => shared.insert(fut),
            None => spawn(fut),
        }
    }
}

/// A stream (or anything else hyper starts) as a task of its own.
fn spawn<F>(fut: F)
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(send_watch::watched(fut));
}

/// What wakes the connection's task: the connection itself or some of its streams.
struct Ready {
    /// Woken streams, by slot index (a stream is listed once until it is polled).
    streams: Mutex<Vec<usize>>,
    conn: AtomicBool,
    /// Set while [`Driven`] polls: wakes then only mark what is ready (checked before the
    /// poll returns) instead of rescheduling the task.
    polling: AtomicBool,
    task: AtomicWaker,
}

impl Ready {
    fn notify(&self) {
        if !self.polling.load(Ordering::SeqCst) {
            self.task.wake();
        }
    }

    fn anything(&self) -> bool {
        self.conn.load(Ordering::SeqCst) || self.streams.lock().map_or(true, |s| !s.is_empty())
    }
}

struct ConnWake(Arc<Ready>);

impl Wake for ConnWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.conn.store(true, Ordering::SeqCst);
        self.0.notify();
    }
}

struct StreamWake {
    idx: usize,
    queued: AtomicBool,
    ready: Arc<Ready>,
}

impl Wake for StreamWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::SeqCst) {
            if let Ok(mut s) = self.ready.streams.lock() {
                s.push(self.idx);
            }
            self.ready.notify();
        }
    }
}

/// The type-erased slots (their type is the stream future's, known only to `execute`).
trait Slots: Send {
    fn as_any(&mut self) -> &mut dyn Any;
    /// Polls the streams in `woken`; returns how many are still in flight.
    fn poll_woken(&mut self, woken: &[usize]) -> usize;
    fn live(&self) -> usize;
    /// Slots allocated (in flight or free).
    fn allocated(&self) -> usize;
}

struct Slot<W> {
    fut: Pin<Box<Option<W>>>,
    /// The stream's send-side watch and its watchdog (new for each stream).
    watch: Arc<send_watch::Slot>,
    dog: Watchdog,
    wake: Arc<StreamWake>,
    waker: Waker,
}

struct Typed<W> {
    slots: Vec<Slot<W>>,
    free: Vec<usize>,
    live: usize,
    ready: Arc<Ready>,
}

impl<W: Future + Send + 'static> Typed<W> {
    #[inline]
    fn insert(&mut self, fut: W) {
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                let idx = self.slots.len();
                let wake = Arc::new(StreamWake {
                    idx,
                    queued: AtomicBool::new(false),
                    ready: self.ready.clone(),
                });
                let waker = Waker::from(wake.clone());
                let watch = Arc::new(send_watch::Slot::default());
                self.slots.push(Slot {
                    fut: Box::pin(None),
                    dog: Watchdog::new(watch.clone()),
                    watch,
                    wake,
                    waker,
                });
                idx
            }
        };
        if let Some(slot) = self.slots.get_mut(idx) {
            if slot.watch.is_used() {
                slot.watch = Arc::new(send_watch::Slot::default());
                slot.dog = Watchdog::new(slot.watch.clone());
            }
            slot.fut.as_mut().set(Some(fut));
            self.live += 1;
            // First poll in this round (after the connection's).
            slot.waker.wake_by_ref();
        }
    }
}

impl<W: Future + Send + 'static> Slots for Typed<W> {
    fn as_any(&mut self) -> &mut dyn Any {
        self
    }

    fn poll_woken(&mut self, woken: &[usize]) -> usize {
        for &idx in woken {
            // A waker may outlive its stream (or the slot, after a shrink): then this is a
            // spurious poll of the slot's next stream, or nothing.
            let Some(slot) = self.slots.get_mut(idx) else {
                continue;
            };
            slot.wake.queued.store(false, Ordering::SeqCst);
            let Some(fut) = slot.fut.as_mut().as_pin_mut() else {
                continue;
            };
            let mut cx = Context::from_waker(&slot.waker);
            if send_watch::poll_watched(&slot.watch, &mut slot.dog, fut, &mut cx).is_ready() {
                slot.fut.as_mut().set(None);
                self.free.push(idx);
                self.live -= 1;
            }
        }
        if self.live == 0 && self.slots.len() > KEEP_IDLE_SLOTS {
            self.slots.truncate(KEEP_IDLE_SLOTS);
            self.free.clear();
            self.free.extend((0..KEEP_IDLE_SLOTS).rev());
        }
        self.live
    }

    fn live(&self) -> usize {
        self.live
    }

    fn allocated(&self) -> usize {
        self.slots.len()
    }
}

struct Shared {
    set: Mutex<Option<Box<dyn Slots>>>,
    ready: Arc<Ready>,
}

impl Shared {
    /// Puts `fut` in a slot, or spawns it when this set holds another kind of future (or is
    /// busy: a stream being polled started it).
    #[inline]
    fn insert<W>(&self, fut: W)
    where
        W: Future + Send + 'static,
        W::Output: Send + 'static,
    {
        let Ok(mut set) = self.set.try_lock() else {
            return spawn(fut);
        };
        let slots = set.get_or_insert_with(|| {
            Box::new(Typed::<W> {
                slots: Vec::new(),
                free: Vec::new(),
                live: 0,
                ready: self.ready.clone(),
            })
        });
        match slots.as_any().downcast_mut::<Typed<W>>() {
            Some(t) => t.insert(fut),
            None => {
                drop(set);
                spawn(fut)
            }
        }
    }
}

/// The streams of one connection. Dropping it (or [`Streams::close`]) drops the streams
/// still in flight.
pub struct Streams {
    shared: Arc<Shared>,
    conn_waker: Waker,
    /// The woken list taken out of `Ready` for a round (kept for its capacity).
    batch: Vec<usize>,
}

impl Default for Streams {
    fn default() -> Self {
        let ready = Arc::new(Ready {
            streams: Mutex::new(Vec::new()),
            conn: AtomicBool::new(true),
            polling: AtomicBool::new(false),
            task: AtomicWaker::new(),
        });
        Streams {
            conn_waker: Waker::from(Arc::new(ConnWake(ready.clone()))),
            shared: Arc::new(Shared {
                set: Mutex::new(None),
                ready,
            }),
            batch: Vec::new(),
        }
    }
}

impl Streams {
    /// Streams in flight.
    pub fn live(&self) -> usize {
        self.shared
            .set
            .lock()
            .ok()
            .and_then(|s| s.as_ref().map(|s| s.live()))
            .unwrap_or(0)
    }

    /// Slots allocated (in flight or free).
    pub fn allocated(&self) -> usize {
        self.shared
            .set
            .lock()
            .ok()
            .and_then(|s| s.as_ref().map(|s| s.allocated()))
            .unwrap_or(0)
    }

    /// Polls the woken streams; false when none was woken.
    fn poll_streams(&mut self) -> bool {
        match self.shared.ready.streams.lock() {
            Ok(mut s) => std::mem::swap(&mut *s, &mut self.batch),
            Err(_) => return false,
        }
        if self.batch.is_empty() {
            return false;
        }
        if let Ok(mut set) = self.shared.set.lock()
            && let Some(slots) = set.as_mut()
        {
            slots.poll_woken(&self.batch);
        }
        self.batch.clear();
        true
    }

    /// Runs the streams still in flight to their end (after the connection future ended).
    pub async fn finish(&mut self) {
        std::future::poll_fn(|cx| {
            self.shared.ready.task.register(cx.waker());
            for _ in 0..ROUNDS {
                self.shared.ready.polling.store(true, Ordering::SeqCst);
                let polled = self.poll_streams();
                self.shared.ready.polling.store(false, Ordering::SeqCst);
                if self.live() == 0 {
                    return Poll::Ready(());
                }
                if !polled {
                    if self.shared.ready.anything() {
                        continue;
                    }
                    return Poll::Pending;
                }
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        })
        .await
    }

    /// Drops the streams still in flight (hyper resets each).
    pub fn close(&mut self) {
        let taken = self.shared.set.lock().ok().and_then(|mut s| s.take());
        drop(taken);
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        self.close();
    }
}

pin_project_lite::pin_project! {
    /// A connection future driven together with its streams: hyper starts them while the
    /// connection is polled, and they are polled here when woken.
    pub struct Driven<'a, C> {
        #[pin]
        conn: C,
        streams: &'a mut Streams,
    }
}

impl<'a, C: Future> Driven<'a, C> {
    pub fn new(conn: C, streams: &'a mut Streams) -> Self {
        Driven { conn, streams }
    }

    /// The connection (for `graceful_shutdown`); it is polled at the next poll whether or
    /// not it was woken.
    pub fn conn(self: Pin<&mut Self>) -> Pin<&mut C> {
        let this = self.project();
        this.streams.shared.ready.conn.store(true, Ordering::SeqCst);
        this.conn
    }
}

impl<C: Future> Future for Driven<'_, C> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let mut this = self.project();
        let ready = this.streams.shared.ready.clone();
        ready.task.register(cx.waker());
        for _ in 0..ROUNDS {
            ready.polling.store(true, Ordering::SeqCst);
            let mut progressed = false;
            if ready.conn.swap(false, Ordering::SeqCst) {
                progressed = true;
                let prev = CURRENT.with(|c| c.replace(Some(this.streams.shared.clone())));
                let mut ccx = Context::from_waker(&this.streams.conn_waker);
                let out = this.conn.as_mut().poll(&mut ccx);
                CURRENT.with(|c| *c.borrow_mut() = prev);
                if let Poll::Ready(out) = out {
                    ready.polling.store(false, Ordering::SeqCst);
                    return Poll::Ready(out);
                }
            }
            progressed |= this.streams.poll_streams();
            ready.polling.store(false, Ordering::SeqCst);
            if !progressed && !ready.anything() {
                return Poll::Pending;
            }
        }
        // Still busy after ROUNDS: let the runtime run other tasks first.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Executor;

    fn exec<F: Future<Output = ()> + Send + 'static>(fut: F) {
        StreamExec.execute(fut);
    }
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// A "connection" that starts three batches of ten streams (through `execute`), each
    /// batch once the previous one has ended, and ends after the third.
    #[tokio::test]
    async fn streams_run_in_the_connection_task_and_slots_are_reused() {
        let done = Arc::new(AtomicUsize::new(0));
        // The connection's waker, woken by each stream as it ends.
        let conn_waker: Arc<Mutex<Option<Waker>>> = Arc::default();
        let mut streams = Streams::default();
        let shared = streams.shared.clone();
        let mut max_slots = 0;
        let mut round = 0;
        let (d, cw) = (done.clone(), conn_waker.clone());
        let conn = std::future::poll_fn(|cx| {
            if let Ok(mut w) = cw.lock() {
                *w = Some(cx.waker().clone());
            }
            if d.load(Ordering::SeqCst) < 10 * round {
                return Poll::Pending;
            }
            if round == 3 {
                return Poll::Ready(());
            }
            round += 1;
            for i in 0..10u64 {
                let (d, cw) = (d.clone(), cw.clone());
                exec(async move {
                    tokio::time::sleep(Duration::from_millis(1 + i)).await;
                    d.fetch_add(1, Ordering::SeqCst);
                    if let Some(w) = cw.lock().ok().and_then(|mut w| w.take()) {
                        w.wake();
                    }
                });
            }
            if let Ok(set) = shared.set.try_lock()
                && let Some(s) = set.as_ref()
            {
                max_slots = max_slots.max(s.allocated());
            }
            Poll::Pending
        });
        tokio::time::timeout(Duration::from_secs(30), Driven::new(conn, &mut streams))
            .await
            .expect("connection ends");
        assert_eq!(done.load(Ordering::SeqCst), 30);
        assert_eq!(streams.live(), 0);
        // Never more than one batch's slots; with none in flight, the idle allowance is kept.
        assert_eq!(max_slots, 10);
        assert_eq!(streams.allocated(), KEEP_IDLE_SLOTS);
    }

    /// Streams still in flight when the connection ends run to their end in `finish`.
    #[tokio::test]
    async fn finish_runs_streams_left_by_the_connection() {
        let done = Arc::new(AtomicUsize::new(0));
        let mut streams = Streams::default();
        let d = done.clone();
        let conn = std::future::poll_fn(|_cx| {
            for _ in 0..3 {
                let d = d.clone();
                exec(async move {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    d.fetch_add(1, Ordering::SeqCst);
                });
            }
            Poll::Ready(())
        });
        Driven::new(conn, &mut streams).await;
        assert_eq!(streams.live(), 3);
        tokio::time::timeout(Duration::from_secs(30), streams.finish())
            .await
            .expect("streams end");
        assert_eq!(done.load(Ordering::SeqCst), 3);
    }

    /// Outside a connection's poll, `execute` spawns the future as its own task.
    #[tokio::test]
    async fn execute_outside_a_connection_spawns() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        exec(async move {
            let _ = tx.send(());
        });
        tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .expect("ran")
            .expect("sent");
    }

    /// Dropping the set drops streams still in flight.
    #[tokio::test]
    async fn close_drops_streams_in_flight() {
        struct Flag(Arc<AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(AtomicBool::new(false));
        let mut streams = Streams::default();
        let flag = Flag(dropped.clone());
        let mut started = false;
        let conn = std::future::poll_fn(|_cx| {
            if !started {
                started = true;
                let flag = Flag(flag.0.clone());
                exec(async move {
                    let _f = flag;
                    std::future::pending::<()>().await;
                });
            }
            Poll::Ready(())
        });
        Driven::new(conn, &mut streams).await;
        assert_eq!(streams.live(), 1);
        assert!(!dropped.load(Ordering::SeqCst));
        drop(streams);
        assert!(dropped.load(Ordering::SeqCst));
        drop(flag);
    }
}
