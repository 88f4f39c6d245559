//! A strict gate in front of hyper's HTTP/1 parser (CONTRACT §5, RFC 9112 as an edge should
//! apply it).
//!
//! hyper (through httparse) is lenient where leniency lets requests be smuggled past a proxy:
//! it accepts bare LF line endings and a request carrying both `Content-Length` and
//! `Transfer-Encoding`. [`Guarded`] wraps the downstream socket, follows HTTP/1 message
//! framing (head, then a `Content-Length` body or chunked body), and rejects:
//! bare CR or LF in a head or chunk line, obs-fold, CL and TE together, differing or invalid
//! `Content-Length`s, a `Transfer-Encoding` that does not end in `chunked` (or any on
//! HTTP/1.0), several `Host` headers, invalid or overflowing chunk sizes, and chunk data not
//! followed by CRLF.
//!
//! On a violation it hands hyper one NUL byte in place of the offending bytes and then end of
//! stream: hyper answers `400 Bad Request` and closes the connection, so nothing after the bad
//! bytes can reach an upstream. The reason is recorded for the log and the DPE flag.
//!
//! Written by hand because it is per-byte hot-path work that must mirror hyper's framing
//! exactly; it scans each head once with `memchr` and skips body bytes by counting.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Why a connection was cut (0 = it was not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Violation {
    None = 0,
    BareLineFeed = 1,
    BareCarriageReturn = 2,
    ObsFold = 3,
    ContentLengthAndTransferEncoding = 4,
    BadContentLength = 5,
    BadTransferEncoding = 6,
    DuplicateHost = 7,
    BadChunk = 8,
    HeadTooLarge = 9,
    BadRequestLine = 10,
    HeadTimeout = 11,
}

impl Violation {
    pub fn from_u8(v: u8) -> Violation {
        match v {
            1 => Violation::BareLineFeed,
            2 => Violation::BareCarriageReturn,
            3 => Violation::ObsFold,
            4 => Violation::ContentLengthAndTransferEncoding,
            5 => Violation::BadContentLength,
            6 => Violation::BadTransferEncoding,
            7 => Violation::DuplicateHost,
            8 => Violation::BadChunk,
            9 => Violation::HeadTooLarge,
            10 => Violation::BadRequestLine,
            11 => Violation::HeadTimeout,
            _ => Violation::None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Violation::None => "none",
            Violation::BareLineFeed => "bare LF",
            Violation::BareCarriageReturn => "bare CR",
            Violation::ObsFold => "obs-fold header line",
            Violation::ContentLengthAndTransferEncoding => "Content-Length with Transfer-Encoding",
            Violation::BadContentLength => "invalid or differing Content-Length",
            Violation::BadTransferEncoding => {
                "Transfer-Encoding not ending in chunked (or on HTTP/1.0)"
            }
            Violation::DuplicateHost => "several Host headers",
            Violation::BadChunk => "invalid chunked framing",
            Violation::HeadTooLarge => "request head too large",
            Violation::BadRequestLine => "invalid request line",
            Violation::HeadTimeout => "request head not received in time",
        }
    }
}

/// Where the violation is reported.
#[derive(Debug, Default)]
pub struct Report(AtomicU8);

impl Report {
    pub fn get(&self) -> Violation {
        Violation::from_u8(self.0.load(Ordering::Relaxed))
    }
    fn set(&self, v: Violation) {
        self.0.store(v as u8, Ordering::Relaxed);
    }
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
}

/// How long a request head may take to arrive (CONTRACT §5).
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

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a finished head says about the body that follows.
enum Next {
    Body(u64),
    Chunked,
    PassThrough,
}

/// Validates one complete head (`head` ends with the blank line). Returns the framing of the
/// body that follows.
fn check_head(head: &[u8]) -> Result<Next, Violation> {
    let mut lines = head.split(|&b| b == b'\n');
    let request_line = lines.next().unwrap_or_default();
    let http10 = request_line.ends_with(b"HTTP/1.0\r");
    let mut content_length: Option<u64> = None;
    let mut te_last_chunked: Option<bool> = None;
    let mut hosts = 0;
    let mut upgrade = false;
    for line in lines {
        // Every line was checked to end in CRLF by the scanner; strip the CR.
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            return Err(Violation::ObsFold);
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            continue; // hyper rejects a header line without a colon
        };
        let name = &line[..colon];
        let value = line[colon + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            for part in value.split(|&b| b == b',') {
                let part = part.trim_ascii();
                if part.is_empty() || part.len() > 18 || !part.iter().all(u8::is_ascii_digit) {
                    return Err(Violation::BadContentLength);
                }
                let n: u64 = std::str::from_utf8(part)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or(Violation::BadContentLength)?;
                if content_length.is_some_and(|c| c != n) {
                    return Err(Violation::BadContentLength);
                }
                content_length = Some(n);
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            let last = value
                .rsplit(|&b| b == b',')
                .next()
                .unwrap_or_default()
                .trim_ascii();
            te_last_chunked = Some(last.eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade = true;
        }
    }
    if hosts > 1 {
        return Err(Violation::DuplicateHost);
    }
    match (content_length, te_last_chunked) {
        (Some(_), Some(_)) => Err(Violation::ContentLengthAndTransferEncoding),
        (_, Some(false)) => Err(Violation::BadTransferEncoding),
        (_, Some(true)) if http10 => Err(Violation::BadTransferEncoding),
        // After an upgrade request the bytes may be another protocol; hyper still frames
        // the request itself, and refuses upgrades the route does not allow.
        _ if upgrade => Ok(Next::PassThrough),
        (_, Some(true)) => Ok(Next::Chunked),
        (Some(n), None) => Ok(Next::Body(n)),
        (None, None) => Ok(Next::Body(0)),
    }
}

impl<S> Guarded<S> {
    /// Scans `data`, which starts where the previous scan stopped, advancing the framing
    /// state.
    fn scan(&mut self, data: &[u8]) -> Verdict {
        let mut i = 0;
        while i < data.len() {
            match self.state {
                State::Start => {
                    // The first bytes decide whether this is HTTP/2 (prior knowledge).
                    let n = data.len().min(H2_PREFACE.len());
                    if data[..n] != H2_PREFACE[..n] {
                        self.state = State::Head;
                    } else if n < H2_PREFACE.len() {
                        return Verdict::HoldFrom(0);
                    } else {
                        self.state = State::PassThrough;
                    }
                }
                State::Head => {
                    let rest = &data[i..];
                    match find_head_end(rest) {
                        Err(v) => return Verdict::Reject(i, v),
                        Ok(None) if rest.len() > self.max_head => {
                            // Let hyper see it and answer 431 itself.
                            self.state = State::PassThrough;
                            self.report.set(Violation::HeadTooLarge);
                            return Verdict::All;
                        }
                        // Garbage (a TLS hello, binary) is refused at once, not held.
                        Ok(None) if !method_prefix_ok(rest) => {
                            return Verdict::Reject(i, Violation::BadRequestLine);
                        }
                        Ok(None) => return Verdict::HoldFrom(i),
                        Ok(Some(end)) => match check_head(&rest[..end]) {
                            Err(v) => return Verdict::Reject(i, v),
                            Ok(next) => {
                                self.first_head_done = true;
                                i += end;
                                self.state = match next {
                                    Next::Body(0) => State::Head,
                                    Next::Body(len) => State::Body(len),
                                    Next::Chunked => State::ChunkSize,
                                    Next::PassThrough => State::PassThrough,
                                };
                            }
                        },
                    }
                }
                State::Body(left) => {
                    let take = left.min((data.len() - i) as u64);
                    i += take as usize;
                    self.state = if left == take {
                        State::Head
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
                        State::Trailers if content.is_empty() => State::Head,
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
                State::PassThrough | State::Failed => return Verdict::All,
            }
        }
        Verdict::All
    }
}

/// Whether an unfinished head starts like a request line: optional empty lines, then a
/// method token (RFC 9110 tchars) up to the first space.
fn method_prefix_ok(head: &[u8]) -> bool {
    let mut rest = head;
    while let Some(r) = rest.strip_prefix(b"\r\n") {
        rest = r;
    }
    if rest == b"\r" {
        return true;
    }
    for &b in rest {
        if b == b' ' {
            return true;
        }
        let tchar = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if !tchar {
            return false;
        }
    }
    true
}

/// The size of a chunk-size line (extensions ignored); `None` when invalid or too large.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let size = line
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii_end();
    if size.is_empty() || size.len() > 15 || !size.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(size).ok()?, 16).ok()
}

/// Finds the end of a head (just past its blank line) in `hay`, which starts at the head's
/// first byte; checks that every line ends in CRLF and that no bare CR appears. Empty lines
/// before the request line are allowed (RFC 9112 §2.2).
fn find_head_end(hay: &[u8]) -> Result<Option<usize>, Violation> {
    let mut from = 0;
    let mut leading = true;
    while let Some(off) = memchr::memchr(b'\n', &hay[from..]) {
        let nl = from + off;
        if nl == 0 || hay[nl - 1] != b'\r' {
            return Err(Violation::BareLineFeed);
        }
        if memchr::memchr(b'\r', &hay[from..nl - 1]).is_some() {
            return Err(Violation::BareCarriageReturn);
        }
        let empty = nl - 1 == from;
        if empty && !leading {
            return Ok(Some(nl + 1));
        }
        leading = leading && empty;
        from = nl + 1;
    }
    // A CR may only be the last byte (its LF not read yet).
    if let Some(p) = memchr::memchr(b'\r', &hay[from..])
        && from + p + 1 < hay.len()
    {
        return Err(Violation::BareCarriageReturn);
    }
    Ok(None)
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
                return Poll::Ready(Ok(()));
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
                        this.out.extend_from_slice(POISON);
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
                        data.extend_from_slice(POISON);
                        this.out = data;
                    }
                }
            }
        }
    }
}

impl<S> Guarded<S> {
    fn reject(&mut self, v: Violation) {
        self.report.set(v);
        self.state = State::Failed;
        self.hold = Vec::new();
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` split at every possible point; returns the violation (or None) and
    /// checks that the result does not depend on how the bytes were split.
    fn run(input: &[u8]) -> Violation {
        let mut results = Vec::new();
        for split in 0..=input.len() {
            let mut g = Guarded::new((), Arc::new(Report::default()));
            let mut v = Violation::None;
            let mut pending: Vec<u8> = Vec::new();
            for part in [&input[..split], &input[split..]] {
                pending.extend_from_slice(part);
                match g.scan(&pending) {
                    Verdict::Reject(_, viol) => {
                        v = viol;
                        break;
                    }
                    Verdict::HoldFrom(k) => pending = pending.split_off(k),
                    Verdict::All => pending.clear(),
                }
            }
            results.push(v);
        }
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
}
