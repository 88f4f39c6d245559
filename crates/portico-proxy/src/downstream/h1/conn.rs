//! The connection loop of Portico's own HTTP/1 server: read a head with `portico-h1`'s strict
//! parser (the one parser: its refusals are the HTTP/1 rules the old gate enforced in front of
//! hyper), build the `http::Request` for the request path, run it, write the response, and go
//! round again on the same buffer (pipelined requests are answered in order).
//!
//! Timers: from accept until the first head is complete, and from the first byte of every
//! later head, the listener's header read timeout (408, logged); between requests, the
//! keep-alive idle timeout (closed silently). Both share one lazily re-armed timer, so a
//! request that arrives whole in one read costs a clock read, not a timer insertion.
//!
//! The stream is one value owned by this loop while no request body is being read; only a
//! request with a body splits it (the body holds the read half), and the halves are joined
//! again when the body hands its side back: writing through the whole stream takes no lock.
//!
//! `Expect: 100-continue` is answered when the body is first read; an upgrade answered `101`
//! hands the connection to the request path's tunnel (`handoff.rs`), also when the upgrade
//! request carried a body (forwarded by its framing first). What this server hands to hyper's
//! connection instead (with the bytes read so far put back in front of the stream): the
//! HTTP/2 preface only.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};
use portico_h1::{BodyDecoder, H1Error, RequestHead, RequestParser};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::body::{Home, ReadIo, ReadSide, RecvBody};
use super::handoff::{Expect, OnUpgrade, Prefixed, Upgraded};
use super::respond::{ReqMeta, Written, error_head, write_response};
use crate::downstream::send_watch::{self, Watchdog};
use crate::reqbody::ClientBody;
use crate::request::{self, ConnInfo};
use crate::state::Proxy;

const H2_PREFACE: &[u8] = crate::downstream::versions::H2_PREFACE;
/// Lingering close: how long, and how many bytes, a closing connection still reads and drops.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;
/// What the read buffer holds at least while a head is read.
const HEAD_BUF: usize = 8 * 1024;
/// Header fields the request path may add to a request before it goes upstream.
const ADDED_FIELDS: usize = 6;

/// How a connection served here ended.
pub enum Outcome<S> {
    /// Closed (or failed): nothing more to do.
    Done,
    /// To be served by hyper from here on: the stream and the bytes already read from it.
    Hyper(S, BytesMut),
}

/// Why reading a head stopped.
enum HeadEnd {
    /// The client closed, the keep-alive timeout passed, or the server is draining.
    Closed,
    /// The header read timeout passed with a head incomplete.
    Timeout,
    Refused(H1Error),
}

/// A timer re-armed lazily: moving its deadline later costs nothing until it fires.
struct LazyTimer {
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    deadline: Instant,
}

impl LazyTimer {
    fn set(&mut self, deadline: Instant) {
        self.deadline = deadline;
    }

    async fn expired(&mut self) {
        loop {
            let deadline = self.deadline;
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if sleep.deadline() > deadline {
                sleep.as_mut().reset(deadline);
            }
            sleep.as_mut().await;
            if Instant::now() >= self.deadline {
                return;
            }
            let d = self.deadline;
            sleep.as_mut().reset(d);
        }
    }
}

type Change = Pin<Box<dyn Future<Output = (watch::Receiver<bool>, bool)> + Send>>;

/// The next change of a watched flag, as a future that lives across requests (made again
/// only when the flag changes, so waiting for a request does not register a waiter anew).
fn next_change(mut rx: watch::Receiver<bool>) -> Change {
    Box::pin(async move {
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
        let v = *rx.borrow_and_update();
        (rx, v)
    })
}

/// What may end an idle connection: the server drains, or memory pressure begins.
struct Signals {
    drain: Change,
    memory: Change,
}

enum Signal {
    Drain,
    Pressure,
}

impl Signals {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Signal> {
        if let Poll::Ready((rx, on)) = self.drain.as_mut().poll(cx) {
            self.drain = next_change(rx);
            if on {
                return Poll::Ready(Signal::Drain);
            }
        }
        while let Poll::Ready((rx, on)) = self.memory.as_mut().poll(cx) {
            self.memory = next_change(rx);
            if on {
                return Poll::Ready(Signal::Pressure);
            }
        }
        Poll::Pending
    }
}

/// The parts of a connection that outlive one request.
struct Conn<'a> {
    proxy: &'a Arc<Proxy>,
    info: &'a Arc<ConnInfo>,
    parser: RequestParser,
    timer: LazyTimer,
    head_timeout: Duration,
    keepalive: Option<Duration>,
    drain: &'a mut watch::Receiver<bool>,
    memory: watch::Receiver<bool>,
    signals: Signals,
}

/// Serves HTTP/1.1 on `stream` until it closes, or hands it to hyper (see the module doc).
pub async fn serve<S>(
    proxy: &Arc<Proxy>,
    stream: S,
    info: &Arc<ConnInfo>,
    drain: &mut watch::Receiver<bool>,
    max_head: usize,
) -> Outcome<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static,
{
    let limits = &info.listener.limits;
    let mut conn = Conn {
        proxy,
        info,
        parser: RequestParser::new(portico_h1::Limits {
            max_head,
            max_headers: limits.max_headers_count as usize,
            // The URI length limit is the request path's (414 with its log line).
            max_target: max_head,
            ..portico_h1::Limits::default()
        }),
        timer: LazyTimer {
            sleep: None,
            deadline: Instant::now() + limits.header_read_timeout,
        },
        head_timeout: limits.header_read_timeout,
        keepalive: limits.keepalive_timeout,
        signals: Signals {
            drain: next_change(drain.clone()),
            memory: next_change(proxy.overload.subscribe_memory()),
        },
        drain,
        memory: proxy.overload.subscribe_memory(),
    };
    conn.memory.borrow_and_update();
    // The first bytes: the HTTP/2 preface goes to hyper (which refuses it on an
    // HTTP/1.1-only connection, as before).
    let mut stream = stream;
    let mut buf = BytesMut::with_capacity(HEAD_BUF);
    loop {
        let n = buf.len().min(H2_PREFACE.len());
        if buf[..n] != H2_PREFACE[..n] {
            break;
        }
        if n == H2_PREFACE.len() {
            return Outcome::Hyper(stream, buf);
        }
        let read = tokio::select! {
            biased;
            r = stream.read_buf(&mut buf) => r,
            _ = conn.timer.expired() => {
                conn.refuse_timeout(&mut stream).await;
                return Outcome::Done;
            }
        };
        match read {
            Ok(0) | Err(_) => return Outcome::Done,
            Ok(_) => {}
        }
    }
    // The read side holds the whole stream; it is split only for a request with a body.
    let side = ReadSide {
        io: Box::new(stream),
        buf,
    };
    conn.run::<S>(side).await
}

/// Where the connection loop writes: the write half while the stream is split (a request
/// body holds the read half), else the whole stream, which the read side holds. Writing
/// through the whole stream takes no lock (`tokio::io::split`'s halves share one).
struct Out<'a>(Option<&'a mut (dyn AsyncWrite + Unpin + Send)>);

fn writer<'a, S>(rs: Option<&'a mut ReadSide>, half: &'a mut Option<WriteHalf<S>>) -> Out<'a>
where
    S: AsyncWrite + Unpin + Send + 'static,
{
    if let Some(h) = half.as_mut() {
        return Out(Some(h));
    }
    let whole = rs.and_then(|rs| (*rs.io).as_any_mut().downcast_mut::<S>());
    Out(whole.map(|s| s as &mut (dyn AsyncWrite + Unpin + Send)))
}

impl AsyncWrite for Out<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.get_mut().0 {
            Some(w) => Pin::new(&mut **w).poll_write(cx, buf),
            None => Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().0 {
            Some(w) => Pin::new(&mut **w).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().0 {
            Some(w) => Pin::new(&mut **w).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

/// Splits the stream the read side holds (for a request with a body): the read half stays
/// in the read side, the write half goes to `half`. `None` only if the side holds no whole
/// stream (never: the loop splits only when `half` is empty).
fn split<S>(rs: ReadSide, half: &mut Option<WriteHalf<S>>) -> Option<ReadSide>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static,
{
    if half.is_some() {
        return Some(rs);
    }
    let ReadSide { io, buf } = rs;
    let stream = io.into_any().downcast::<S>().ok()?;
    let (rd, wr) = tokio::io::split(*stream);
    *half = Some(wr);
    Some(ReadSide {
        io: Box::new(rd),
        buf,
    })
}

/// The whole stream back in the read side (the body gave the read half back).
fn join<S>(rs: ReadSide, half: &mut Option<WriteHalf<S>>) -> Option<ReadSide>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static,
{
    let Some(wr) = half.take() else {
        return Some(rs);
    };
    let ReadSide { io, buf } = rs;
    let rd = io.into_any().downcast::<ReadHalf<S>>().ok()?;
    Some(ReadSide {
        io: Box::new(rd.unsplit(wr)),
        buf,
    })
}

/// The stream itself (for hyper or an upgrade tunnel), whole or from its two halves.
fn into_stream<S>(io: Box<dyn ReadIo>, half: Option<WriteHalf<S>>) -> Option<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static,
{
    let any = io.into_any();
    match half {
        None => any.downcast::<S>().ok().map(|s| *s),
        Some(wr) => any.downcast::<ReadHalf<S>>().ok().map(|rd| rd.unsplit(wr)),
    }
}

impl Conn<'_> {
    async fn run<S>(&mut self, side: ReadSide) -> Outcome<S>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static,
    {
        let mut side = Some(side);
        // The write half while the stream is split (see `writer`).
        let mut half: Option<WriteHalf<S>> = None;
        let mut first = true;
        let mut wbuf = BytesMut::new();
        let slot = Arc::new(send_watch::Slot::default());
        let mut dog = Watchdog::new(slot.clone());
        loop {
            let Some(mut rs) = side.take() else {
                return Outcome::Done;
            };
            let mut upgrade: Option<oneshot::Sender<Upgraded>> = None;
            let head = match self.read_head(&mut rs, first).await {
                Ok(h) => h,
                Err(HeadEnd::Closed) => return Outcome::Done,
                Err(HeadEnd::Timeout) => {
                    self.refuse_timeout(&mut writer(Some(&mut rs), &mut half))
                        .await;
                    linger(rs, half).await;
                    return Outcome::Done;
                }
                Err(HeadEnd::Refused(e)) => {
                    self.refuse(
                        &mut writer(Some(&mut rs), &mut half),
                        e.status(),
                        e.as_str(),
                    )
                    .await;
                    linger(rs, half).await;
                    return Outcome::Done;
                }
            };
            first = false;
            let framing = head.framing();
            let meta = ReqMeta {
                head: head.method() == b"HEAD",
                connect: head.method() == b"CONNECT",
                http10: head.version() == portico_h1::Version::Http10,
                keep_alive: head.keep_alive(),
            };
            let home = (!framing.is_empty()).then(|| Arc::new(Home::default()));
            let expect =
                (home.is_some() && head.expect_continue()).then(|| Arc::new(Expect::default()));
            let body = match &home {
                None => {
                    side = Some(rs);
                    ClientBody::Empty
                }
                Some(home) => {
                    // The body reads while the response may already be written: split.
                    let Some(rs) = split(rs, &mut half) else {
                        return Outcome::Done;
                    };
                    let decoder = BodyDecoder::new(framing, self.parser.limits());
                    let body = RecvBody::new(rs, decoder, home.clone(), expect.clone());
                    ClientBody::H1(Box::new(body))
                }
            };
            let req = match to_request(&head, body) {
                Ok(mut r) => {
                    if head.upgrade() {
                        let (tx, rx) = oneshot::channel();
                        r.extensions_mut().insert(OnUpgrade::new(rx));
                        upgrade = Some(tx);
                    }
                    r
                }
                Err(e) => {
                    if let Some(rs) = side
                        .take()
                        .or_else(|| home.and_then(|h| h.take()).map(|(s, _)| s))
                    {
                        let mut rs = rs;
                        self.refuse(
                            &mut writer(Some(&mut rs), &mut half),
                            e.status(),
                            e.as_str(),
                        )
                        .await;
                        linger(rs, half).await;
                    } else {
                        self.refuse(&mut writer(None, &mut half), e.status(), e.as_str())
                            .await;
                    }
                    return Outcome::Done;
                }
            };
            drop(head);
            // Pinned where it is made: awaiting it by value moved it (a memcpy).
            let handled =
                std::pin::pin!(request::handle(self.proxy.clone(), self.info.clone(), req));
            let resp = match &expect {
                None => handled.await,
                Some(x) => with_continue(handled, x, &mut writer(None, &mut half)).await,
            };
            let Ok(resp) = resp;
            let switching = resp.status() == http::StatusCode::SWITCHING_PROTOCOLS;
            if let Some(w) = resp.body().send_watch() {
                slot.watch(w.clone());
            }
            // The body's read side: back (read to its end), or still out (the request path
            // still reads it, or dropped it unread): then this response is the last.
            let mut complete = true;
            if let Some(home) = &home {
                match home.take() {
                    Some((rs, done)) => {
                        complete = done;
                        side = join(rs, &mut half);
                    }
                    None => complete = false,
                }
            }
            let draining = *self.drain.borrow();
            let pressure =
                self.memory.has_changed().unwrap_or(false) && *self.memory.borrow_and_update();
            if pressure {
                self.proxy
                    .overload
                    .actions
                    .disable_keepalive
                    .fetch_add(1, Ordering::Relaxed);
            }
            let meta = ReqMeta {
                keep_alive: meta.keep_alive && complete && !draining && !pressure,
                ..meta
            };
            let written = {
                let mut out = writer(side.as_mut(), &mut half);
                tokio::select! {
                    biased;
                    r = write_response(&mut out, resp, meta, &mut wbuf) => r,
                    cut = &mut dog => {
                        tracing::debug!(client = %self.info.peer, reason = %cut, "response cut; connection closed");
                        return Outcome::Done;
                    }
                }
            };
            // An upgrade with a body switches once the body was forwarded to its end (RFC 9110
            // §7.8: the client finishes its request message first); a `101` that came before
            // that is not honoured: the connection closes (`complete` is false, so the answer
            // said `connection: close`).
            if let (true, true, Some(tx), Ok(_)) = (switching, complete, upgrade.take(), &written) {
                // The tunnel takes the connection, with what was read past the head (or past
                // the body).
                let Some(rs) = side.take() else {
                    return Outcome::Done;
                };
                let Some(stream) = into_stream(rs.io, half) else {
                    return Outcome::Done;
                };
                let up: Upgraded = Box::new(Prefixed::new(stream, rs.buf));
                let _ = tx.send(up);
                return Outcome::Done;
            }
            match written {
                Ok(Written::KeepAlive) => {}
                Ok(Written::Close) => {
                    let _ = writer(side.as_mut(), &mut half).shutdown().await;
                    if let Some(rs) = side.take()
                        && (!complete || !rs.buf.is_empty())
                    {
                        linger(rs, half).await;
                    }
                    return Outcome::Done;
                }
                Err(e) => {
                    tracing::debug!(client = %self.info.peer, error = %e, "downstream connection error");
                    return Outcome::Done;
                }
            }
            if let Some(rs) = &mut side
                && rs.buf.is_empty()
                && rs.buf.capacity() > 4 * HEAD_BUF
            {
                rs.buf = BytesMut::new();
            }
        }
    }

    /// Reads until a whole head is parsed, under the header read and keep-alive timeouts.
    async fn read_head(&mut self, rs: &mut ReadSide, first: bool) -> Result<RequestHead, HeadEnd> {
        let mut timing_head = first;
        if *self.drain.borrow() {
            return Err(HeadEnd::Closed);
        }
        if !first && let Some(k) = self.keepalive {
            self.timer.set(Instant::now() + k);
        }
        loop {
            match self.parser.parse(&mut rs.buf) {
                Ok(Some(h)) => return Ok(h),
                Ok(None) => {}
                Err(e) => return Err(HeadEnd::Refused(e)),
            }
            if !timing_head && !rs.buf.is_empty() {
                // The first byte of a head: its header read timeout starts.
                timing_head = true;
                self.timer.set(Instant::now() + self.head_timeout);
            }
            if rs.buf.capacity() - rs.buf.len() < 1024 {
                rs.buf.reserve(HEAD_BUF);
            }
            let idle = !timing_head;
            let timed = timing_head || self.keepalive.is_some();
            let read = tokio::select! {
                biased;
                r = rs.io.read_buf(&mut rs.buf) => r,
                _ = self.timer.expired(), if timed => {
                    return Err(if idle { HeadEnd::Closed } else { HeadEnd::Timeout });
                }
                signal = std::future::poll_fn(|cx| self.signals.poll(cx)), if idle => {
                    if let Signal::Pressure = signal {
                        self.proxy
                            .overload
                            .actions
                            .disable_keepalive
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    return Err(HeadEnd::Closed);
                }
            };
            match read {
                Ok(0) | Err(_) => return Err(HeadEnd::Closed),
                Ok(_) => {}
            }
        }
    }

    /// Answers a refused head and logs it.
    fn refuse<'w, W: AsyncWrite + Unpin>(
        &self,
        w: &'w mut W,
        status: u16,
        reason: &str,
    ) -> impl Future<Output = ()> + 'w {
        tracing::info!(client = %self.info.peer, status, reason, "invalid request rejected");
        request::log_rejected(self.proxy, self.info, status, reason, "HTTP/1.1");
        let mut out = BytesMut::new();
        error_head(status, &mut out);
        write_and_shut(w, out)
    }

    fn refuse_timeout<'w, W: AsyncWrite + Unpin>(
        &self,
        w: &'w mut W,
    ) -> impl Future<Output = ()> + 'w {
        self.refuse(w, 408, "request head not received in time")
    }
}

async fn write_and_shut<W: AsyncWrite + Unpin>(w: &mut W, out: BytesMut) {
    let _ = w.write_all(&out).await;
    let _ = w.shutdown().await;
}

/// Runs the request while its body may ask for `100 Continue`, which is written here.
async fn with_continue<F: Future, W: AsyncWrite + Unpin>(
    handled: F,
    x: &Expect,
    w: &mut W,
) -> F::Output {
    let mut handled = std::pin::pin!(handled);
    loop {
        tokio::select! {
            biased;
            r = &mut handled => return r,
            () = x.asked.notified() => {
                if x.wanted() {
                    // A failed write fails the body's next read, which then sees the socket.
                    let _ = w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
                    x.mark_sent();
                }
            }
        }
    }
}

/// Lingering close (nginx's): the write side is shut; what the client still sends is read
/// and dropped for a while, so that closing with unread bytes does not reset the connection
/// before the client has read the answer.
async fn linger<S: AsyncWrite + Unpin + Send + 'static>(
    mut rs: ReadSide,
    mut half: Option<WriteHalf<S>>,
) {
    let _ = writer(Some(&mut rs), &mut half).shutdown().await;
    let mut total = 0usize;
    let mut scratch = vec![0u8; 8192];
    let _ = tokio::time::timeout(LINGER_TIME, async {
        while total < LINGER_BYTES {
            match rs.io.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}

/// The request for the request path, from the parsed head (the header values are slices
/// of the head's bytes: nothing is copied).
fn to_request(head: &RequestHead, body: ClientBody) -> Result<Request<ClientBody>, H1Error> {
    let bytes: &Bytes = head.bytes();
    let method = Method::from_bytes(head.method()).map_err(|_| H1Error::BadRequestLine)?;
    let uri = Uri::from_maybe_shared(bytes.slice_ref(head.target()))
        .map_err(|_| H1Error::BadRequestLine)?;
    let fields = head.headers();
    // Room for the fields the request path adds for the upstream (x-forwarded-for,
    // x-forwarded-proto, x-request-id, the attempt count, the expected timeout, host): the
    // map is then never grown (rehashed and copied) on the way.
    let mut headers = HeaderMap::with_capacity(fields.len() + ADDED_FIELDS);
    for (name, value) in fields.iter() {
        let name = HeaderName::from_bytes(name).map_err(|_| H1Error::BadHeader)?;
        let value = HeaderValue::from_maybe_shared(bytes.slice_ref(value))
            .map_err(|_| H1Error::BadHeader)?;
        headers.append(name, value);
    }
    let mut req = Request::new(body);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = match head.version() {
        portico_h1::Version::Http10 => Version::HTTP_10,
        portico_h1::Version::Http11 => Version::HTTP_11,
    };
    *req.headers_mut() = headers;
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;
    use portico_h1::Framing;
    use tokio::io::DuplexStream;

    /// The loop writes through the whole stream the read side holds (no lock), through the
    /// write half while a body holds the read half, and gets the stream back whole.
    #[tokio::test]
    async fn writes_through_the_whole_stream_and_its_halves() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut rs = ReadSide {
            io: Box::new(server),
            buf: BytesMut::new(),
        };
        let mut half: Option<WriteHalf<DuplexStream>> = None;
        assert!(writer(Some(&mut rs), &mut half).0.is_some());
        writer(Some(&mut rs), &mut half)
            .write_all(b"a")
            .await
            .unwrap();
        let rs = split(rs, &mut half).unwrap();
        assert!(half.is_some());
        writer(None, &mut half).write_all(b"b").await.unwrap();
        let mut rs = join(rs, &mut half).unwrap();
        assert!(half.is_none());
        writer(Some(&mut rs), &mut half)
            .write_all(b"c")
            .await
            .unwrap();
        let mut got = [0u8; 3];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"abc");
        let rs = split(rs, &mut half).unwrap();
        let mut stream = into_stream::<DuplexStream>(rs.io, half).unwrap();
        stream.write_all(b"d").await.unwrap();
        client.read_exact(&mut got[..1]).await.unwrap();
        assert_eq!(&got[..1], b"d");
    }

    #[test]
    fn request_from_head_keeps_fields_in_order() {
        let head = portico_h1::parse_request_bytes(
            b"POST /a?b=1 HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 3\r\n\r\n",
            &portico_h1::Limits::default(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(head.framing(), Framing::Length(3));
        let req = to_request(&head, ClientBody::Empty).unwrap();
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri(), "/a?b=1");
        assert_eq!(req.version(), Version::HTTP_11);
        let all: Vec<_> = req.headers().get_all("x-a").iter().collect();
        assert_eq!(all, ["1", "2"]);
    }
}
