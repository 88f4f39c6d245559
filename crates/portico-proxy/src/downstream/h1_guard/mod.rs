//! A strict gate in front of hyper's HTTP/1 parser (reference §5, RFC 9112 as an edge should
//! apply it).
//!
//! hyper (through httparse) is lenient where leniency lets requests be smuggled past a proxy:
//! it accepts bare LF line endings and a request carrying both `Content-Length` and
//! `Transfer-Encoding`. [`Guarded`] wraps the downstream socket, follows HTTP/1 message
//! framing (head, then a `Content-Length` body or chunked body), and rejects:
//! bare CR or LF in a head or chunk line, obs-fold, CL and TE together, differing or invalid
//! `Content-Length`s, a `Transfer-Encoding` that does not end in `chunked` or names it twice
//! (or any on HTTP/1.0), several `Host` headers, invalid or overflowing chunk sizes, and chunk data not
//! followed by CRLF.
//!
//! A request that asks for a protocol upgrade (HTTP/1.1, `Connection: upgrade`, an `Upgrade`
//! other than `h2c`) does not switch the gate off by itself: the bytes after it are withheld
//! until hyper's answer is seen on the write side. Only a `101` turns the connection into a
//! pass-through tunnel; any other answer (a refused upgrade, an upstream that did not switch)
//! keeps the connection HTTP/1 and the gate on, so a request smuggled behind a fake upgrade is
//! still checked. Header names that spell `Content-Length` or `Transfer-Encoding` with `_`
//! (which CGI-style upstreams fold into the real header) are rejected too.
//!
//! When hyper ends an HTTP/1 connection (after a rejection, or after answering before it read
//! the request body, as local replies do) the gate closes its write side and then keeps reading
//! and discarding what the client still sends, for at most [`LINGER_TIME`] and
//! [`LINGER_BYTES`] (nginx's lingering close): closing a socket with unread bytes makes the
//! kernel send a reset, which can destroy the answer before the client has read it.
//!
//! A response head written while the request's body is still arriving (a local reply before
//! an upload was read) gets `connection: close` added: hyper will close such a connection
//! once it finds the body unread, and a client that is not told so reuses the connection for
//! its next request, which is then lost (the soak test saw this with aiohttp).
//!
//! On a violation it hands hyper one NUL byte in place of the offending bytes and then end of
//! stream: hyper answers `400 Bad Request` and closes the connection, so nothing after the bad
//! bytes can reach an upstream. The reason is recorded for the log and the DPE flag.
//!
//! The first bytes also enforce the connection's HTTP version ([`Versions`]): the HTTP/2
//! preface on an HTTP/1.1-only connection (`http2: false`, or TLS without ALPN `h2`) is
//! answered 400 and closed, and anything but the preface on a connection that negotiated `h2`
//! fails the connection without an HTTP/1 answer.
//!
//! Written by hand because it is per-byte hot-path work that must mirror hyper's framing
//! exactly; it scans each head once with `memchr` and skips body bytes by counting.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

mod rules;

use rules::{Next, check_head, chunk_size, close_insert_point, find_head_end, method_prefix_ok};
pub use rules::{Report, Violation};

/// Which HTTP versions a connection may speak: decided by the listener (`http2`) and, over
/// TLS, by ALPN (RFC 9113 §3.2, §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Versions {
    /// Cleartext with `http2: true`: HTTP/1.1, or HTTP/2 by prior knowledge (the preface).
    #[default]
    Both,
    /// `http2: false`, or TLS that did not negotiate `h2`: the HTTP/2 preface is refused
    /// with 400 and a closed connection.
    Http1Only,
    /// TLS that negotiated `h2`: anything but the preface is a connection error (closed
    /// without a byte of HTTP/1).
    Http2Only,
}

/// Largest head scanned; hyper rejects larger ones itself (431).
const MAX_HEAD: usize = 80 * 1024;

#[derive(Debug)]
enum State {
    /// At the very start: an HTTP/2 preface switches to pass-through.
    Start,
    /// Inside a head; `buf` holds it so far (heads arrive in pieces).
    Head,
    /// Skipping `n` body bytes.
    Body(u64),
    /// Chunked body: reading a chunk-size line.
    ChunkSize,
    /// Chunked body: skipping chunk data, then expecting CRLF.
    ChunkData(u64),
    ChunkDataEnd,
    /// Chunked body: trailer lines until an empty line.
    Trailers,
    /// After an upgrade request: bytes are withheld until hyper's answer shows whether the
    /// connection switched protocols.
    AwaitUpgrade,
    /// HTTP/2 or an upgraded connection: bytes are not HTTP/1 any more.
    PassThrough,
    /// A violation was handed to hyper; everything after is end of stream.
    Failed,
}

/// The downstream socket, guarded.
pub struct Guarded<S> {
    inner: S,
    state: State,
    /// Bytes of an unfinished head (or chunk line), withheld from hyper until validated.
    hold: Vec<u8>,
    /// Validated bytes waiting to be handed to hyper (after a withheld head completed).
    out: Vec<u8>,
    out_pos: usize,
    report: Arc<Report>,
    /// Header read timeout while Portico holds the bytes of a head (hyper's own timer cannot
    /// run before it sees them), and from accept until the first head is complete.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    first_head_done: bool,
    /// The listener's header read timeout (default [`HEADER_READ_TIMEOUT`]).
    head_timeout: std::time::Duration,
    /// Largest head scanned (default [`MAX_HEAD`]); larger ones are rejected (431).
    max_head: usize,
    /// The message being read asked for an upgrade: once it ends, wait for the answer.
    upgrade_pending: bool,
    /// What hyper's answer to the upgrade request said, if it was written already
    /// (`Some(true)`: 101).
    upgrade_answer: Option<bool>,
    /// The start of hyper's answer to an upgrade request, until its status is known.
    answer: Vec<u8>,
    /// The reader waiting in `AwaitUpgrade`.
    read_waker: Option<Waker>,
    /// Withheld bytes must be scanned again before reading more (the upgrade was decided).
    rescan: bool,
    /// Lingering close: the write side is shut, and unread input is drained until this fires.
    linger: Option<(Pin<Box<tokio::time::Sleep>>, usize)>,
    /// Bytes accepted from hyper (a response head with `connection: close` added) and not
    /// yet written to the socket.
    wpending: Vec<u8>,
    /// The HTTP versions this connection may speak.
    versions: Versions,
}

/// How long a closing HTTP/1 connection keeps draining what the client still sends.
pub const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(2);
/// How many bytes a closing HTTP/1 connection drains at most.
pub const LINGER_BYTES: usize = 1024 * 1024;

/// How long a request head may take to arrive (docs/reference.md §5).
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl<S> Guarded<S> {
    pub fn new(inner: S, report: Arc<Report>) -> Self {
        Guarded {
            inner,
            state: State::Start,
            hold: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            report,
            // Armed on the first read (inside the runtime).
            timer: None,
            first_head_done: false,
            head_timeout: HEADER_READ_TIMEOUT,
            max_head: MAX_HEAD,
            upgrade_pending: false,
            upgrade_answer: None,
            answer: Vec::new(),
            read_waker: None,
            rescan: false,
            linger: None,
            wpending: Vec::new(),
            versions: Versions::Both,
        }
    }

    /// Restricts the HTTP versions the connection may speak.
    pub fn with_versions(mut self, versions: Versions) -> Self {
        self.versions = versions;
        self
    }

    /// The state after a whole message was read: the next head, or a wait for the answer to
    /// an upgrade request (decided at once if hyper already answered).
    fn after_message(&mut self) -> State {
        if !std::mem::take(&mut self.upgrade_pending) {
            return State::Head;
        }
        match self.upgrade_answer.take() {
            Some(true) => State::PassThrough,
            Some(false) => State::Head,
            None => State::AwaitUpgrade,
        }
    }

    /// Watches what hyper writes while an upgrade request is outstanding: the first final
    /// status line decides whether the connection switched protocols.
    fn observe_answer(&mut self, written: &[u8]) {
        if !(self.upgrade_pending || matches!(self.state, State::AwaitUpgrade))
            || self.upgrade_answer.is_some()
        {
            return;
        }
        let room = 4096usize.saturating_sub(self.answer.len());
        self.answer
            .extend_from_slice(&written[..written.len().min(room)]);
        let decided = loop {
            if self.answer.len() < 12 {
                break None;
            }
            let status = &self.answer[9..12];
            if !self.answer.starts_with(b"HTTP/1.") {
                break Some(false);
            }
            if status == b"101" {
                break Some(true);
            }
            if status[0] != b'1' {
                break Some(false);
            }
            // An interim answer (100 Continue): skip it, the final one follows.
            match memchr::memmem::find(&self.answer, b"\r\n\r\n") {
                Some(end) => {
                    self.answer.drain(..end + 4);
                }
                None if self.answer.len() >= 4096 => break Some(false),
                None => break None,
            }
        };
        let Some(switched) = decided else { return };
        self.answer = Vec::new();
        if matches!(self.state, State::AwaitUpgrade) {
            self.state = if switched {
                State::PassThrough
            } else {
                State::Head
            };
            self.rescan = true;
            if let Some(w) = self.read_waker.take() {
                w.wake();
            }
        } else {
            self.upgrade_answer = Some(switched);
        }
    }

    /// A listener's limits: the header read timeout, and the largest head hyper may be handed
    /// (never below the built-in 80 KiB, so hyper's own, smaller limit answers 431 first).
    pub fn with_limits(mut self, head_timeout: std::time::Duration, max_head: usize) -> Self {
        self.head_timeout = head_timeout;
        self.max_head = max_head.max(MAX_HEAD);
        self
    }

    /// Arms the header timer while a head is being received, disarms it otherwise.
    fn update_timer(&mut self) {
        let in_head = matches!(self.state, State::Start | State::Head);
        if !in_head {
            self.timer = None;
        } else if !self.hold.is_empty() || !self.first_head_done {
            if self.timer.is_none() {
                self.timer = Some(Box::pin(tokio::time::sleep(self.head_timeout)));
            }
        } else {
            self.timer = None;
        }
    }
}

/// What the scanner decided about a run of bytes.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Every byte may go to hyper.
    All,
    /// Bytes from this offset on are an unfinished head or chunk line: withhold them.
    HoldFrom(usize),
    /// The message part starting at this offset is invalid.
    Reject(usize, Violation),
}

/// What hyper is given in place of a rejected message part: an invalid request line (or chunk
/// size), which it answers with 400 and a closed connection.
const POISON: &[u8] = b"\0\r\n\r\n";

/// What hyper is given for a violation: [`POISON`], except on an HTTP/2-only connection, where
/// not one byte may be answered in HTTP/1 (the read fails instead).
fn poison(v: Violation) -> &'static [u8] {
    if v == Violation::NotHttp2 {
        b""
    } else {
        POISON
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl<S> Guarded<S> {
    /// Scans `data`, which starts where the previous scan stopped, advancing the framing
    /// state.
    fn scan(&mut self, data: &[u8]) -> Verdict {
        let mut i = 0;
        while i < data.len() {
            match self.state {
                State::Start => {
                    // The first bytes decide whether this is HTTP/2 (prior knowledge).
                    // `Start` is only ever the state at offset 0.
                    let n = data.len().min(H2_PREFACE.len());
                    let preface = data[..n] == H2_PREFACE[..n];
                    match (self.versions, preface) {
                        (Versions::Http2Only, false) => {
                            return Verdict::Reject(i, Violation::NotHttp2);
                        }
                        (_, false) => self.state = State::Head,
                        (_, true) if n < H2_PREFACE.len() => return Verdict::HoldFrom(i),
                        (Versions::Http1Only, true) => {
                            return Verdict::Reject(i, Violation::Http2NotAllowed);
                        }
                        (_, true) => self.state = State::PassThrough,
                    }
                }
                State::Head => {
                    let rest = &data[i..];
                    // Garbage (a TLS hello, binary) is refused at once, not held. Checked
                    // before anything else so that the verdict does not depend on how much
                    // of the head has arrived (it is a property of its first bytes).
                    if !method_prefix_ok(rest) {
                        return Verdict::Reject(i, Violation::BadRequestLine);
                    }
                    match find_head_end(rest) {
                        Err(v) => return Verdict::Reject(i, v),
                        Ok(None) if rest.len() > self.max_head => {
                            // Let hyper see it and answer 431 itself.
                            self.state = State::PassThrough;
                            self.report.set(Violation::HeadTooLarge);
                            return Verdict::All;
                        }
                        Ok(None) => return Verdict::HoldFrom(i),
                        Ok(Some(end)) => match check_head(&rest[..end]) {
                            Err(v) => return Verdict::Reject(i, v),
                            Ok((next, upgrade)) => {
                                self.first_head_done = true;
                                i += end;
                                self.upgrade_pending = upgrade;
                                self.state = match next {
                                    Next::Body(0) => self.after_message(),
                                    Next::Body(len) => State::Body(len),
                                    Next::Chunked => State::ChunkSize,
                                };
                            }
                        },
                    }
                }
                State::Body(left) => {
                    let take = left.min((data.len() - i) as u64);
                    i += take as usize;
                    self.state = if left == take {
                        self.after_message()
                    } else {
                        State::Body(left - take)
                    };
                }
                State::ChunkData(left) => {
                    let take = left.min((data.len() - i) as u64);
                    i += take as usize;
                    self.state = if left == take {
                        State::ChunkDataEnd
                    } else {
                        State::ChunkData(left - take)
                    };
                }
                State::ChunkSize | State::Trailers | State::ChunkDataEnd => {
                    let rest = &data[i..];
                    let Some(nl) = memchr::memchr(b'\n', rest) else {
                        if rest.len() > 4096 {
                            return Verdict::Reject(i, Violation::BadChunk);
                        }
                        return Verdict::HoldFrom(i);
                    };
                    let Some(content) = rest[..=nl].strip_suffix(b"\r\n") else {
                        return Verdict::Reject(i, Violation::BareLineFeed);
                    };
                    if memchr::memchr(b'\r', content).is_some() {
                        return Verdict::Reject(i, Violation::BareCarriageReturn);
                    }
                    let next = match self.state {
                        State::ChunkDataEnd if content.is_empty() => State::ChunkSize,
                        State::ChunkDataEnd => return Verdict::Reject(i, Violation::BadChunk),
                        State::Trailers if content.is_empty() => self.after_message(),
                        State::Trailers if content[0] == b' ' || content[0] == b'\t' => {
                            return Verdict::Reject(i, Violation::ObsFold);
                        }
                        State::Trailers => State::Trailers,
                        _ => match chunk_size(content) {
                            None => return Verdict::Reject(i, Violation::BadChunk),
                            Some(0) => State::Trailers,
                            Some(n) => State::ChunkData(n),
                        },
                    };
                    self.state = next;
                    i += nl + 1;
                }
                // Nothing after an upgrade request goes to hyper before its answer is known.
                State::AwaitUpgrade => return Verdict::HoldFrom(i),
                State::PassThrough | State::Failed => return Verdict::All,
            }
        }
        Verdict::All
    }
}

/// Runs the gate's scanner over `parts`, each handed over as if it arrived in its own read
/// (withheld bytes are carried to the next part exactly as on a socket), and returns the first
/// violation, or [`Violation::None`]. Upgrade requests are taken as refused (answered without
/// a 101), so what follows them is scanned as HTTP/1. No socket and no runtime: for the fuzz targets and tests.
pub fn scan_parts(parts: &[&[u8]]) -> Violation {
    let mut g = Guarded::new((), Arc::new(Report::default()));
    let mut pending: Vec<u8> = Vec::new();
    for part in parts {
        pending.extend_from_slice(part);
        loop {
            match g.scan(&pending) {
                Verdict::Reject(_, v) => return v,
                Verdict::HoldFrom(k) => pending = pending.split_off(k.min(pending.len())),
                Verdict::All => pending.clear(),
            }
            // Model the dangerous answer to an upgrade request: not switched, so what follows
            // is HTTP/1 again and must be checked.
            if !matches!(g.state, State::AwaitUpgrade) {
                break;
            }
            g.observe_answer(b"HTTP/1.1 403 Forbidden\r\n\r\n");
        }
    }
    Violation::None
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            // Validated bytes waiting from an earlier read go first.
            if this.out_pos < this.out.len() {
                let n = (this.out.len() - this.out_pos).min(buf.remaining());
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if matches!(this.state, State::Failed) {
                if this.report.get() == Violation::NotHttp2 {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        Violation::NotHttp2.as_str(),
                    )));
                }
                return Poll::Ready(Ok(()));
            }
            if matches!(this.state, State::AwaitUpgrade) {
                // Woken by `observe_answer` once hyper's answer shows what comes next.
                this.read_waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            if std::mem::take(&mut this.rescan) && !this.hold.is_empty() {
                let mut data = std::mem::take(&mut this.hold);
                if matches!(this.state, State::PassThrough) {
                    this.out = data;
                    continue;
                }
                match this.scan(&data) {
                    Verdict::All => this.out = data,
                    Verdict::HoldFrom(k) => {
                        this.hold = data.split_off(k);
                        this.out = data;
                    }
                    Verdict::Reject(k, v) => {
                        this.reject(v);
                        data.truncate(k);
                        data.extend_from_slice(poison(v));
                        this.out = data;
                    }
                }
                continue;
            }
            this.update_timer();
            let before = buf.filled().len();
            match Pin::new(&mut this.inner).poll_read(cx, buf) {
                Poll::Ready(Ok(())) => {}
                Poll::Pending => {
                    if let Some(t) = this.timer.as_mut()
                        && t.as_mut().poll(cx).is_ready()
                    {
                        this.reject(Violation::HeadTimeout);
                        return Poll::Ready(Ok(()));
                    }
                    return Poll::Pending;
                }
                other => return other,
            }
            let filled = buf.filled().len();
            if filled == before {
                // End of stream: whatever was withheld goes to hyper, which sees it incomplete.
                if this.hold.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                this.out = std::mem::take(&mut this.hold);
                continue;
            }
            if matches!(this.state, State::PassThrough) && this.hold.is_empty() {
                return Poll::Ready(Ok(()));
            }
            if this.hold.is_empty() {
                // The common case: scan in place.
                let verdict = this.scan(&buf.filled()[before..filled]);
                match verdict {
                    Verdict::All => return Poll::Ready(Ok(())),
                    Verdict::HoldFrom(k) => {
                        this.hold
                            .extend_from_slice(&buf.filled()[before + k..filled]);
                        buf.set_filled(before + k);
                        if k > 0 {
                            return Poll::Ready(Ok(()));
                        }
                    }
                    Verdict::Reject(k, v) => {
                        this.reject(v);
                        buf.set_filled(before + k);
                        this.out.extend_from_slice(poison(v));
                    }
                }
            } else {
                // A withheld part continues: scan it together with the new bytes.
                let mut data = std::mem::take(&mut this.hold);
                data.extend_from_slice(&buf.filled()[before..filled]);
                buf.set_filled(before);
                match this.scan(&data) {
                    Verdict::All => this.out = data,
                    Verdict::HoldFrom(k) => {
                        this.hold = data.split_off(k);
                        this.out = data;
                    }
                    Verdict::Reject(k, v) => {
                        this.reject(v);
                        data.truncate(k);
                        data.extend_from_slice(poison(v));
                        this.out = data;
                    }
                }
            }
        }
    }
}

impl<S> Guarded<S> {
    /// Whether the current request's body has not all arrived yet.
    fn mid_body(&self) -> bool {
        matches!(
            self.state,
            State::Body(_)
                | State::ChunkSize
                | State::ChunkData(_)
                | State::ChunkDataEnd
                | State::Trailers
        )
    }

    fn reject(&mut self, v: Violation) {
        self.report.set(v);
        self.state = State::Failed;
        self.hold = Vec::new();
    }
}

impl<S: AsyncWrite + Unpin> Guarded<S> {
    /// Writes what an earlier call accepted but could not write yet.
    fn poll_pending_writes(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.wpending.is_empty() {
            let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &self.wpending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.wpending.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        std::task::ready!(this.poll_pending_writes(cx))?;
        if this.mid_body()
            && let Some(at) = close_insert_point(data)
        {
            this.observe_answer(data);
            this.wpending.extend_from_slice(&data[..at]);
            this.wpending.extend_from_slice(b"connection: close\r\n");
            this.wpending.extend_from_slice(&data[at..]);
            // Accepted whole; written by this and later calls before anything else.
            let _ = this.poll_pending_writes(cx)?;
            return Poll::Ready(Ok(data.len()));
        }
        let res = Pin::new(&mut this.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = &res {
            this.observe_answer(&data[..(*n).min(data.len())]);
        }
        res
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        std::task::ready!(this.poll_pending_writes(cx))?;
        if this.mid_body()
            && let Some(first) = bufs.iter().find(|b| !b.is_empty())
            && close_insert_point(first).is_some()
        {
            // Rare (an early answer to an upload): go through the single-buffer path.
            let first: &[u8] = first;
            return Pin::new(this).poll_write(cx, first);
        }
        let res = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &res
            && (this.upgrade_pending || matches!(this.state, State::AwaitUpgrade))
        {
            let mut left = *n;
            for b in bufs {
                if left == 0 {
                    break;
                }
                let take = left.min(b.len());
                this.observe_answer(&b[..take]);
                left -= take;
            }
        }
        res
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        std::task::ready!(this.poll_pending_writes(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        std::task::ready!(this.poll_pending_writes(cx))?;
        // A tunnel or HTTP/2 owns its own closing (a half-closed tunnel still reads).
        if matches!(this.state, State::PassThrough | State::AwaitUpgrade) {
            return Pin::new(&mut this.inner).poll_shutdown(cx);
        }
        if this.linger.is_none() {
            if let Err(e) = std::task::ready!(Pin::new(&mut this.inner).poll_shutdown(cx)) {
                return Poll::Ready(Err(e));
            }
            this.linger = Some((Box::pin(tokio::time::sleep(LINGER_TIME)), LINGER_BYTES));
        }
        let Some((timer, budget)) = this.linger.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let mut scratch = [0u8; 8192];
        loop {
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            let mut rb = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    if n == 0 || n >= *budget {
                        return Poll::Ready(Ok(()));
                    }
                    *budget -= n;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` split at every possible point; returns the violation (or None) and
    /// checks that the result does not depend on how the bytes were split.
    fn run(input: &[u8]) -> Violation {
        let results: Vec<Violation> = (0..=input.len())
            .map(|split| scan_parts(&[&input[..split], &input[split..]]))
            .collect();
        let first = results[0];
        assert!(
            results.iter().all(|r| *r == first),
            "split-dependent: {results:?}"
        );
        first
    }

    #[test]
    fn accepts_well_formed_traffic() {
        assert_eq!(run(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Violation::None);
        assert_eq!(
            run(b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n"),
            Violation::None
        );
        assert_eq!(run(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhe\nloGET / HTTP/1.1\r\nHost: a\r\n\r\n"), Violation::None);
        assert_eq!(
            run(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhe\nlo\r\n0\r\nT: 1\r\n\r\nGET / HTTP/1.1\r\n\r\n"),
            Violation::None
        );
        assert_eq!(
            run(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\n\n\n"),
            Violation::None
        );
    }

    #[test]
    fn rejects_smuggling_shapes() {
        assert_eq!(
            run(b"GET / HTTP/1.1\nHost: a\r\n\r\n"),
            Violation::BareLineFeed
        );
        assert_eq!(run(b"\x16\x03\x01\x00\xff"), Violation::BadRequestLine);
        assert_eq!(
            run(b"GET / HTTP/1.1\r\nHost: a\n\r\n"),
            Violation::BareLineFeed
        );
        assert_eq!(
            run(b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n"),
            Violation::BareCarriageReturn
        );
        assert_eq!(
            run(b"GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n c\r\n\r\n"),
            Violation::ObsFold
        );
        assert_eq!(
            run(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Violation::ContentLengthAndTransferEncoding
        );
        assert_eq!(
            run(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"),
            Violation::BadContentLength
        );
        assert_eq!(
            run(b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n"),
            Violation::BadContentLength
        );
        assert_eq!(
            run(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n"),
            Violation::BadTransferEncoding
        );
        assert_eq!(
            run(b"POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n"),
            Violation::BadTransferEncoding
        );
        assert_eq!(
            run(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"),
            Violation::BadTransferEncoding
        );
        assert_eq!(
            run(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Violation::BadTransferEncoding
        );
        // A coding before chunked, on one line or two, is well-formed.
        assert_eq!(
            run(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            Violation::None
        );
        assert_eq!(
            run(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Violation::BadTransferEncoding
        );
        assert_eq!(
            run(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            Violation::DuplicateHost
        );
        assert_eq!(
            run(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            Violation::BadChunk
        );
        assert_eq!(
            run(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n"),
            Violation::BadChunk
        );
        assert_eq!(
            run(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n"),
            Violation::BadChunk
        );
        assert_eq!(
            run(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n"),
            Violation::BareLineFeed
        );
    }

    #[test]
    fn reason_does_not_depend_on_where_a_bad_line_is_split() {
        // Found by the h1_guard fuzz target: a bare CR then a bare LF on one line was reported
        // as bare LF when whole and as bare CR when the LF arrived in a later read.
        assert_eq!(
            run(b"GET / HTTP/\r.1oH1\nst: a\r\n\r\n"),
            Violation::BareCarriageReturn
        );
        assert_eq!(
            run(b"GET / HTTP/1.1\r\nA: \rb\n\r\n"),
            Violation::BareCarriageReturn
        );
        // Found by the fuzz target too: a request line without a method token was refused
        // when the head came in pieces and passed to hyper when it came whole.
        assert_eq!(
            run(b"POSHTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"),
            Violation::BadRequestLine
        );
        assert_eq!(
            run(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc\x16\x03\x01"),
            Violation::BadRequestLine
        );
        // And a bad method byte wins over a bad line ending further on.
        assert_eq!(
            run(b"PO\x05ST /a HTTP/1.1\r\nHost: a\r\nX: chunked\r?\n\r\n"),
            Violation::BadRequestLine
        );
    }

    #[test]
    fn rejects_framing_header_lookalikes() {
        assert_eq!(
            run(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: chunked\r\n\r\n"),
            Violation::BadTransferEncoding
        );
        assert_eq!(
            run(b"POST / HTTP/1.1\r\nHost: a\r\ncontent_LENGTH: 5\r\n\r\n"),
            Violation::BadContentLength
        );
        assert_eq!(
            run(b"GET / HTTP/1.1\r\nHost: a\r\nX_Other_Header: 1\r\n\r\n"),
            Violation::None
        );
    }

    #[test]
    fn what_follows_a_refused_upgrade_is_still_checked() {
        // Fuzz-style model (scan_parts): the upgrade is answered without 101.
        let smuggled: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nPOST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(run(smuggled), Violation::ContentLengthAndTransferEncoding);
        // `Upgrade: h2c` and an upgrade without `Connection: upgrade` are plain requests.
        assert_eq!(
            run(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\nGET / HTTP/1.1\nHost: a\r\n\r\n"),
            Violation::BareLineFeed
        );
        assert_eq!(
            run(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            Violation::DuplicateHost
        );
    }

    /// Drives a `Guarded` over an in-memory pipe: the client side writes `request`, the
    /// server side answers `answer` once it has read the upgrade head, then reads the rest.
    async fn through_pipe(request: &[u8], answer: &[u8]) -> (Vec<u8>, Violation) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let report = Arc::new(Report::default());
        let mut g = Guarded::new(server, report.clone());
        client.write_all(request).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // Read what the gate lets through before the answer (the upgrade head).
        while let Ok(Ok(n)) =
            tokio::time::timeout(std::time::Duration::from_millis(100), g.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        g.write_all(answer).await.unwrap();
        drop(client);
        while let Ok(Ok(n)) =
            tokio::time::timeout(std::time::Duration::from_millis(500), g.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        (got, report.get())
    }

    const UPGRADE_HEAD: &[u8] =
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";

    #[tokio::test]
    async fn an_answer_before_the_body_arrived_says_connection_close() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut g = Guarded::new(server, Arc::new(Report::default()));
        client
            .write_all(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nabc")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let n = g.read(&mut buf).await.unwrap();
        assert!(n > 0);
        g.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 5\r\n\r\nnope\n")
            .await
            .unwrap();
        g.flush().await.unwrap();
        let mut got = vec![0u8; 200];
        let n = client.read(&mut got).await.unwrap();
        assert_eq!(
            &got[..n],
            b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 5\r\n\r\nnope\n"
        );
        // Once the body is complete, answers are left alone (and 1xx always are).
        assert_eq!(close_insert_point(b"HTTP/1.1 100 Continue\r\n\r\n"), None);
        assert_eq!(
            close_insert_point(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\n"),
            None
        );
    }

    #[tokio::test]
    async fn shutdown_lingers_until_the_client_stops_sending() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(1024);
        let mut g = Guarded::new(server, Arc::new(Report::default()));
        // The client is still sending a body (more than the pipe holds) when the server
        // answers and closes: the shutdown drains it, so the client's writes all succeed.
        let writer = tokio::spawn(async move {
            client.write_all(&[b'x'; 64 * 1024]).await.unwrap();
            client.shutdown().await.unwrap();
            let mut reply = Vec::new();
            client.read_to_end(&mut reply).await.unwrap();
            reply
        });
        g.write_all(b"HTTP/1.1 503 Service Unavailable\r\n\r\n")
            .await
            .unwrap();
        g.shutdown().await.unwrap();
        let reply = tokio::time::timeout(std::time::Duration::from_secs(5), writer)
            .await
            .expect("the client's body writes were never drained")
            .unwrap();
        assert!(reply.starts_with(b"HTTP/1.1 503"));
    }

    #[tokio::test]
    async fn lingering_is_bounded_in_time() {
        use tokio::io::AsyncWriteExt;
        let (_client, server) = tokio::io::duplex(1024);
        let mut g = Guarded::new(server, Arc::new(Report::default()));
        // The client neither sends nor closes: shutdown still ends after LINGER_TIME.
        let start = tokio::time::Instant::now();
        g.shutdown().await.unwrap();
        assert!(start.elapsed() >= LINGER_TIME);
    }

    #[tokio::test]
    async fn smuggling_behind_a_refused_upgrade_is_cut() {
        let mut req = UPGRADE_HEAD.to_vec();
        req.extend_from_slice(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX");
        let (got, v) =
            through_pipe(&req, b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n").await;
        assert_eq!(v, Violation::ContentLengthAndTransferEncoding);
        let mut want = UPGRADE_HEAD.to_vec();
        want.extend_from_slice(POISON);
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn an_accepted_upgrade_passes_bytes_through() {
        let mut req = UPGRADE_HEAD.to_vec();
        req.extend_from_slice(b"\x81\x05hello\n\n\r");
        let (got, v) = through_pipe(
            &req,
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching Protocols\r\n\r\n",
        )
        .await;
        assert_eq!(v, Violation::None);
        assert_eq!(got, req);
    }
}
