//! Step 1 of the lifecycle, accept: worker threads, listeners and connections.
//!
//! Runtime model (docs/benchmarks.md, "Where the time goes"): share-nothing workers. Each worker is one OS thread with
//! a current-thread tokio runtime, its own `SO_REUSEPORT` socket per listener (the kernel
//! spreads connections), and its own upstream pool. Listeners are bound by the control thread
//! and handed to every worker, so a reload can add or remove them without a restart.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use portico_config::snapshot::ListenerConf;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};

use crate::downstream::h2_streams::StreamExec;
use crate::downstream::keepalive;
use crate::downstream::proxy_protocol::{self, Prefixed};
use crate::downstream::send_watch::{self, Watchdog};
use crate::downstream::tls;
use crate::downstream::versions::{self, Versions};
use crate::request::{self, ConnInfo};
use crate::state::Proxy;

// Limits on downstream HTTP. The per-listener ones (head size, header count, URI length,
// concurrent streams, HTTP/2 flow-control windows, header read and body idle timeouts) come from the Listener's config
// (`ListenerLimits`, reference §5 defaults); these are the fixed ones.

/// Request-line allowance added to `max_request_headers_kb` for the HTTP/1 read buffer.
pub const REQUEST_LINE_ALLOWANCE: usize = 4 * 1024;
/// The smallest HTTP/1 head limit (the own server's read buffer starts at this size).
const MIN_H1_BUF: usize = 8 * 1024;
/// Streams a client may open and reset before the server even accepted them; beyond this the
/// connection gets GOAWAY ENHANCE_YOUR_CALM (h2's CVE-2023-44487 "rapid reset" guard).
pub const H2_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 50;
/// Streams the server may reset because of the client's protocol errors before it sends
/// GOAWAY (h2's guard against provoked-reset floods).
pub const H2_MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;
/// Largest frame payload accepted (the RFC 9113 default).
pub const H2_MAX_FRAME_SIZE: u32 = 16 * 1024;
/// Response bytes h2 buffers per stream before backpressure reaches the upstream (a chunk
/// or two more may be in hand: see the upstream read buffer in `pool.rs`).
pub const H2_MAX_SEND_BUF: usize = 32 * 1024;

enum Cmd {
    Listen(Arc<ListenerHandle>, std::net::TcpListener),
    /// The UDP socket of an `http3` listener: its QUIC endpoint runs on this worker.
    ListenQuic(Arc<ListenerHandle>, std::net::UdpSocket),
    Drain(oneshot::Sender<()>),
}

/// One bound listener, shared by the accept loops of all workers.
struct ListenerHandle {
    conf: ListenerConf,
    /// `portico_downstream_connections{listener}`.
    gauge: Arc<std::sync::atomic::AtomicI64>,
    stop: watch::Sender<bool>,
    connections: AtomicUsize,
}

struct Worker {
    tx: mpsc::UnboundedSender<Cmd>,
    _thread: std::thread::JoinHandle<()>,
}

/// Sockets bound for a config's listeners that are not served yet: the result of
/// [`Server::bind_new`], consumed by [`Server::activate`]. Dropping it closes them.
pub struct BoundListeners {
    wanted: Vec<ListenerConf>,
    sockets: Vec<(ListenerConf, Vec<std::net::TcpListener>)>,
    /// The UDP sockets of `http3` listeners (HTTP/3), by listener address.
    quic: HashMap<(IpAddr, u16), std::net::UdpSocket>,
}

/// The set of workers and the listeners they serve.
pub struct Server {
    proxy: Arc<Proxy>,
    workers: Vec<Worker>,
    listeners: Mutex<HashMap<(IpAddr, u16), Arc<ListenerHandle>>>,
}

impl Server {
    /// Starts `n` worker threads (no listeners yet).
    pub fn start(proxy: Arc<Proxy>, n: usize) -> std::io::Result<Server> {
        let mut workers = Vec::with_capacity(n);
        for i in 0..n.max(1) {
            let (tx, rx) = mpsc::unbounded_channel();
            let p = proxy.clone();
            let thread = std::thread::Builder::new()
                .name(format!("portico-worker-{i}"))
                .spawn(move || worker_main(p, rx))?;
            workers.push(Worker {
                tx,
                _thread: thread,
            });
        }
        Ok(Server {
            proxy,
            workers,
            listeners: Mutex::new(HashMap::new()),
        })
    }

    /// Binds new listeners and closes removed ones so the set matches `wanted`, all or
    /// nothing: when one listener cannot be bound, nothing changes and the answer names each
    /// failure. (A reload binds first with [`Server::bind_new`], swaps its config, then
    /// [`Server::activate`]s.)
    pub fn reconcile(&self, wanted: &[ListenerConf]) -> Vec<String> {
        match self.bind_new(wanted) {
            Ok(bound) => {
                self.activate(bound);
                Vec::new()
            }
            Err(errors) => errors,
        }
    }

    /// Binds the sockets of every listener in `wanted` that is not already served as
    /// configured, without serving them yet. Listeners on addresses not bound today are bound
    /// first; those replacing a changed listener on the same address (`SO_REUSEPORT` lets both
    /// be bound) only once all new ones succeeded. On any failure every socket bound here is
    /// closed and the errors name each listener, address and cause: the running set is
    /// untouched, so a config is applied only as a whole.
    pub fn bind_new(&self, wanted: &[ListenerConf]) -> Result<BoundListeners, Vec<String>> {
        let current: HashMap<(IpAddr, u16), ListenerConf> = match self.listeners.lock() {
            Ok(b) => b.iter().map(|(k, h)| (*k, h.conf.clone())).collect(),
            Err(_) => return Err(vec!["listener table poisoned".into()]),
        };
        let mut fresh = Vec::new();
        let mut replacing = Vec::new();
        for conf in wanted {
            let key = (conf.address, conf.port);
            match current.get(&key) {
                Some(c) if c == conf => {}
                Some(_) => replacing.push(conf),
                None => fresh.push(conf),
            }
        }
        let mut errors = Vec::new();
        let mut sockets = Vec::new();
        let mut quic = HashMap::new();
        for group in [fresh, replacing] {
            for conf in group {
                let addr = SocketAddr::from((conf.address, conf.port));
                match self.bind_all_workers(addr) {
                    Ok(s) => sockets.push((conf.clone(), s)),
                    Err(e) => {
                        errors.push(format!("listener {}: cannot bind {addr}: {e}", conf.name))
                    }
                }
                if conf.http3 {
                    match crate::downstream::h3::bind_udp(addr) {
                        Ok(s) => {
                            quic.insert((conf.address, conf.port), s);
                        }
                        Err(e) => errors.push(format!(
                            "listener {}: cannot bind {addr}/udp (http3): {e}",
                            conf.name
                        )),
                    }
                }
            }
            if !errors.is_empty() {
                // Dropping `sockets` closes everything bound so far.
                return Err(errors);
            }
        }
        Ok(BoundListeners {
            wanted: wanted.to_vec(),
            sockets,
            quic,
        })
    }

    /// One socket per worker on `addr`.
    fn bind_all_workers(&self, addr: SocketAddr) -> std::io::Result<Vec<std::net::TcpListener>> {
        self.workers.iter().map(|_| bind(addr)).collect()
    }

    /// Serves the listeners bound by [`Server::bind_new`] and closes those no longer wanted.
    pub fn activate(&self, bound: BoundListeners) {
        let Ok(mut table) = self.listeners.lock() else {
            tracing::error!("listener table poisoned; listeners unchanged");
            return;
        };
        let wanted = bound.wanted;
        let mut quic = bound.quic;
        table.retain(|key, handle| {
            let keep = wanted
                .iter()
                .any(|l| (l.address, l.port) == *key && *l == handle.conf);
            if !keep {
                let _ = handle.stop.send(true);
                tracing::info!(listener = %handle.conf.name, address = %SocketAddr::from(*key), "listener closed");
            }
            keep
        });
        for (conf, sockets) in bound.sockets {
            let key = (conf.address, conf.port);
            let (stop, _) = watch::channel(false);
            let handle = Arc::new(ListenerHandle {
                gauge: self.proxy.metrics.listener(&conf.name),
                conf,
                stop,
                connections: AtomicUsize::new(0),
            });
            for (w, s) in self.workers.iter().zip(sockets) {
                let _ = w.tx.send(Cmd::Listen(handle.clone(), s));
            }
            if let Some(udp) = quic.remove(&key)
                && let Some(w) = self.workers.get(usize::from(key.1) % self.workers.len())
            {
                let _ = w.tx.send(Cmd::ListenQuic(handle.clone(), udp));
            }
            tracing::info!(listener = %handle.conf.name, address = %SocketAddr::from(key), protocol = ?handle.conf.protocol, "listening");
            table.insert(key, handle);
        }
    }

    /// The addresses currently bound.
    pub fn bound(&self) -> Vec<SocketAddr> {
        self.listeners
            .lock()
            .map(|b| b.keys().map(|k| SocketAddr::from(*k)).collect())
            .unwrap_or_default()
    }

    /// Graceful drain: stop accepting, tell every connection to finish (HTTP/1 closes after
    /// its current response, HTTP/2 gets GOAWAY), wait up to `drain_timeout`.
    pub async fn drain(&self) {
        self.proxy.start_draining();
        if let Ok(bound) = self.listeners.lock() {
            for h in bound.values() {
                let _ = h.stop.send(true);
            }
        }
        let mut waits = Vec::new();
        for w in &self.workers {
            let (tx, rx) = oneshot::channel();
            if w.tx.send(Cmd::Drain(tx)).is_ok() {
                waits.push(rx);
            }
        }
        for rx in waits {
            let _ = rx.await;
        }
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// What each worker calls about once a second to hand its allocator's idle memory back to the
/// OS (the binary owns the allocator, so it registers the function; see `portico::alloc`).
static IDLE_COLLECT: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Registers the per-worker idle collection; call before [`Server::start`]. Later calls are
/// ignored.
pub fn set_idle_collect(f: fn()) {
    let _ = IDLE_COLLECT.set(f);
}

fn worker_main(proxy: Arc<Proxy>, mut rx: mpsc::UnboundedReceiver<Cmd>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start worker runtime");
            return;
        }
    };
    rt.block_on(async move {
        // Every connection holds a receiver; `closed()` tells when all have finished.
        let (drain_tx, _) = watch::channel(false);
        let drain_tx = Arc::new(drain_tx);
        tokio::spawn(async {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                crate::upstream::pool::sweep();
            }
        });
        if let Some(collect) = IDLE_COLLECT.get().copied() {
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    collect();
                }
            });
        }
        while let Some(cmd) = rx.recv().await {
            match cmd {
                Cmd::Listen(handle, std) => match tokio::net::TcpListener::from_std(std) {
                    Ok(l) => {
                        tokio::spawn(accept_loop(proxy.clone(), handle, l, drain_tx.clone()));
                    }
                    Err(e) => tracing::error!(error = %e, "cannot register listener"),
                },
                Cmd::ListenQuic(handle, udp) => {
                    let (p, h) = (proxy.clone(), handle.clone());
                    let admit: crate::downstream::h3::Admit = Box::new(move || {
                        admit(&p, &h).map(|s| Box::new(s) as Box<dyn Send + Sync>)
                    });
                    tokio::spawn(crate::downstream::h3::serve_endpoint(
                        proxy.clone(),
                        handle.conf.clone(),
                        handle.stop.subscribe(),
                        admit,
                        udp,
                        drain_tx.clone(),
                    ));
                }
                Cmd::Drain(done) => {
                    let _ = drain_tx.send(true);
                    let timeout = proxy.settings.drain_timeout;
                    if tokio::time::timeout(timeout, drain_tx.closed())
                        .await
                        .is_err()
                    {
                        tracing::warn!("drain timeout reached with requests in flight");
                    }
                    let _ = done.send(());
                    break;
                }
            }
        }
    });
}

/// The HTTP/1 read buffer for a listener: its header limit plus the request line.
fn h1_buf_size(conf: &ListenerConf) -> usize {
    (conf.limits.max_request_headers_bytes as usize + REQUEST_LINE_ALLOWANCE).max(MIN_H1_BUF)
}

fn builder(conf: &ListenerConf) -> auto::Builder<StreamExec> {
    let limits = &conf.limits;
    // HTTP/2 only: HTTP/1.1 is Portico's own server's (`downstream::h1`), which hands hyper
    // nothing but connections that start with the HTTP/2 preface.
    let mut b = auto::Builder::new(StreamExec).http2_only();
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(limits.max_request_headers_bytes)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESET_STREAMS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESET_STREAMS)
        // Flow control: the receive windows advertised to clients bound what one client can
        // make Portico buffer per stream / per connection.
        .initial_stream_window_size(limits.initial_stream_window_bytes)
        .initial_connection_window_size(limits.initial_connection_window_bytes)
        .max_frame_size(H2_MAX_FRAME_SIZE)
        .max_send_buf_size(H2_MAX_SEND_BUF);
    // `http2: false` and ALPN are enforced on the connection's first bytes (`versions.rs`).
    b
}

async fn accept_loop(
    proxy: Arc<Proxy>,
    handle: Arc<ListenerHandle>,
    listener: tokio::net::TcpListener,
    drain: Arc<watch::Sender<bool>>,
) {
    let builder = Arc::new(builder(&handle.conf));
    let listener_conf = Arc::new(handle.conf.clone());
    let mut stop = handle.stop.subscribe();
    let mut overload = proxy.overload.subscribe_connections();
    'accepting: loop {
        // Overload manager: no accept while the connection threshold is reached (new
        // connections wait in the backlog). Re-checked on every state change and every 100 ms.
        while proxy.overload.state() & crate::downstream::overload::CONNECTIONS != 0 {
            tokio::select! {
                _ = overload.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => proxy.overload.sync_connections(),
                _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => break 'accepting,
            }
        }
        let accepted = tokio::select! {
            r = listener.accept() => r,
            // The threshold was crossed while this worker waited in accept (another worker
            // took the last connection): stop waiting here, go back to the check above.
            Ok(()) = overload.changed() => continue 'accepting,
            _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => break 'accepting,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(slot) = admit(&proxy, &handle) else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(
            proxy.clone(),
            slot,
            builder.clone(),
            stream,
            peer,
            listener_conf.clone(),
            drain.subscribe(),
        ));
    }
}

/// Admits one more connection on a listener: the overload manager's overall threshold and the
/// listener's `max_connections` (TCP and QUIC together); counts it in the listener's gauge and
/// `portico_downstream_connections_total`. `None`: refused (logged).
fn admit(proxy: &Arc<Proxy>, handle: &Arc<ListenerHandle>) -> Option<Slot> {
    let Some(token) = proxy.overload.open_connection() else {
        tracing::debug!(listener = %handle.conf.name, "overall connection threshold reached; connection refused");
        return None;
    };
    let max = handle.conf.max_connections as usize;
    if handle.connections.fetch_add(1, Ordering::Relaxed) >= max {
        handle.connections.fetch_sub(1, Ordering::Relaxed);
        tracing::warn!(listener = %handle.conf.name, "max_connections reached; connection refused");
        return None;
    }
    handle.gauge.fetch_add(1, Ordering::Relaxed);
    proxy
        .metrics
        .downstream_connections_total
        .fetch_add(1, Ordering::Relaxed);
    Some(Slot(handle.clone(), token))
}

/// Gives a connection's `max_connections` slot (and its overload-manager count) back however
/// the connection ends.
struct Slot(
    Arc<ListenerHandle>,
    #[allow(dead_code)] crate::downstream::overload::ConnToken,
);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
        self.0.gauge.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Before HTTP: the PROXY protocol header (HTTPPROXY/HTTPSPROXY) and the TLS handshake
/// (HTTPS/HTTPSPROXY), each time-bounded; a connection failing either is closed.
async fn connection(
    proxy: Arc<Proxy>,
    slot: Slot,
    builder: Arc<auto::Builder<StreamExec>>,
    mut stream: TcpStream,
    mut peer: SocketAddr,
    listener: Arc<ListenerConf>,
    drain: watch::Receiver<bool>,
) {
    let mut leftover = bytes::BytesMut::new();
    if listener.protocol.proxy_protocol() {
        let read = proxy_protocol::read_header(&mut stream);
        match tokio::time::timeout(proxy_protocol::HEADER_TIMEOUT, read).await {
            Ok(Ok((source, rest))) => {
                if let Some(source) = source {
                    peer = source;
                }
                leftover = rest;
            }
            Ok(Err(e)) => {
                tracing::debug!(client = %peer, error = %e, "invalid PROXY protocol header; connection closed");
                return;
            }
            Err(_) => {
                tracing::debug!(client = %peer, "no PROXY protocol header within 5 s; connection closed");
                return;
            }
        }
    }
    let io = Prefixed::new(stream, leftover);
    if listener.protocol.is_tls() {
        let hosts = proxy.active().tls.clone();
        let http2 = listener.http2;
        let accepted =
            tokio::time::timeout(tls::HANDSHAKE_TIMEOUT, tls::accept(&hosts, io, http2)).await;
        drop(hosts);
        match accepted {
            Ok(Ok(a)) => {
                // Over TLS the version follows ALPN alone (h2 is only offered with `http2`).
                let versions = if a.stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                    Versions::Http2Only
                } else {
                    Versions::Http1Only
                };
                let info = Arc::new(ConnInfo::new(peer, listener, true, a.client_cert));
                serve(proxy, builder, a.stream, info, drain, versions).await;
            }
            Ok(Err(e)) => {
                tracing::debug!(client = %peer, error = %e, "TLS handshake failed");
            }
            Err(_) => tracing::debug!(client = %peer, "TLS handshake timed out"),
        }
    } else {
        let versions = if listener.http2 {
            Versions::Both
        } else {
            Versions::Http1Only
        };
        let info = Arc::new(ConnInfo::new(peer, listener, false, None));
        serve(proxy, builder, io, info, drain, versions).await;
    }
    drop(slot);
}

/// HTTP/1.1 on Portico's own server (`downstream::h1`); HTTP/2 (the connections that start
/// with its preface) on hyper's, once the connection's versions allow it (`versions.rs`).
async fn serve<S>(
    proxy: Arc<Proxy>,
    builder: Arc<auto::Builder<StreamExec>>,
    stream: S,
    info: Arc<ConnInfo>,
    mut drain: watch::Receiver<bool>,
    versions: Versions,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + Sync + 'static,
{
    let mut stream = stream;
    let read = if versions == Versions::Http2Only {
        match versions::expect_preface(&proxy, &info, &mut stream).await {
            Some(read) => read,
            None => return,
        }
    } else {
        let max_head = h1_buf_size(&info.listener);
        match crate::downstream::h1::serve(&proxy, stream, &info, &mut drain, max_head).await {
            crate::downstream::h1::Outcome::Done => return,
            // The HTTP/2 preface.
            crate::downstream::h1::Outcome::Hyper(s, _) if versions == Versions::Http1Only => {
                versions::refuse_preface(&proxy, &info, s).await;
                return;
            }
            crate::downstream::h1::Outcome::Hyper(s, read) => {
                stream = s;
                read
            }
        }
    };
    let stream = Prefixed::new(stream, read);
    serve_hyper(proxy, builder, stream, info, drain).await;
}

async fn serve_hyper<S>(
    proxy: Arc<Proxy>,
    builder: Arc<auto::Builder<StreamExec>>,
    stream: S,
    info: Arc<ConnInfo>,
    mut drain: watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let proxy_for_log = proxy.clone();
    // Requests in flight, for the keep-alive idle timeout: each response body carries its
    // request's guard until hyper is done with it.
    let streams = Arc::new(keepalive::Streams::default());
    // The response an HTTP/1 connection is sending, for its watchdog (HTTP/2 streams have
    // their own, from `StreamExec`).
    let h1_slot = Arc::new(send_watch::Slot::default());
    let svc = {
        let info = info.clone();
        let streams = streams.clone();
        let h1_slot = h1_slot.clone();
        service_fn(move |req| {
            let guard = streams.open();
            let h2 = req.version() == http::Version::HTTP_2;
            let h1_slot = (!h2).then(|| h1_slot.clone());
            let req = req.map(crate::reqbody::ClientBody::Hyper);
            let handled = request::handle(proxy.clone(), info.clone(), req);
            async move {
                let resp = handled.await?;
                if let Some(w) = resp.body().send_watch() {
                    // Runs in the stream's task for HTTP/2: its slot is task-local.
                    if let Some(slot) = h1_slot.or_else(send_watch::stream_slot) {
                        slot.watch(w.clone());
                    }
                }
                Ok::<_, Infallible>(resp.map(|b| keepalive::Tracked::new(b, guard)))
            }
        })
    };
    let mut dog = Watchdog::new(h1_slot);
    let keepalive_timeout = info.listener.limits.keepalive_timeout;
    let stream =
        crate::downstream::h2_rules::ResetWatch::new(stream, proxy_for_log.clone(), info.clone());
    let io = TokioIo::new(stream);
    let mut overload = proxy_for_log.overload.subscribe_memory();
    // HTTP/2 streams run in this task, polled beside the connection (`h2_streams`).
    let mut h2_streams = crate::downstream::h2_streams::Streams::default();
    let res = {
        let conn = crate::downstream::h2_streams::Driven::new(
            builder.serve_connection_with_upgrades(io, svc),
            &mut h2_streams,
        );
        tokio::pin!(conn);
        // Every arm also races the HTTP/1 response's watchdog: a response past its deadline or
        // send-side idle timeout closes the connection (the body logs why when it is dropped).
        // `biased`: the watchdog is polled right after the connection, which sets its slot.
        tokio::select! {
            biased;
            r = conn.as_mut() => Ok(r),
            cut = &mut dog => Err(cut),
            _ = async { drain.wait_for(|d| *d).await.map(|_| ()) } => {
                conn.as_mut().conn().graceful_shutdown();
                until_cut(conn.as_mut(), &mut dog).await
            }
            _ = keepalive_expires(&streams, keepalive_timeout) => {
                // No request in flight for the keep-alive timeout: HTTP/2 gets GOAWAY, HTTP/1
                // closes (nothing is in flight, so nothing is cut).
                tracing::debug!(client = %info.peer, "keep-alive idle timeout; connection closed");
                conn.as_mut().conn().graceful_shutdown();
                until_cut(conn.as_mut(), &mut dog).await
            }
            _ = memory_pressure_begins(&mut overload) => {
                // Overload manager: keep-alive off (HTTP/1 closes when idle or after the response
                // in flight; HTTP/2 gets GOAWAY).
                proxy_for_log
                    .overload
                    .actions
                    .disable_keepalive
                    .fetch_add(1, Ordering::Relaxed);
                conn.as_mut().conn().graceful_shutdown();
                until_cut(conn.as_mut(), &mut dog).await
            }
        }
    };
    // Streams still in flight when the connection ended run to their end, as they would in
    // tasks of their own.
    if res.is_ok() {
        h2_streams.finish().await;
    }
    let res = match res {
        Ok(r) => r,
        Err(cut) => {
            tracing::debug!(client = %info.peer, reason = %cut, "response cut; connection closed");
            return;
        }
    };
    if let Err(e) = res {
        // HTTP/2 protocol errors are logged by `h2_rules::ResetWatch`; resets and timeouts
        // need no log line of their own.
        tracing::debug!(client = %info.peer, error = %e, "downstream connection error");
    }
}

/// Runs the connection to its end, or until the watchdog cuts its response.
async fn until_cut<C: std::future::Future>(
    conn: std::pin::Pin<&mut C>,
    dog: &mut Watchdog,
) -> Result<C::Output, crate::downstream::send_watch::Cut> {
    tokio::select! {
        biased;
        r = conn => Ok(r),
        cut = dog => Err(cut),
    }
}

/// Resolves when the connection has been idle for `timeout` (never without one).
async fn keepalive_expires(streams: &keepalive::Streams, timeout: Option<Duration>) {
    match timeout {
        Some(t) => keepalive::idle(streams, t).await,
        None => std::future::pending().await,
    }
}

/// Resolves when memory pressure begins after this call (a connection opened under pressure
/// is not closed for it: its requests get the 503 with `connection: close`).
async fn memory_pressure_begins(rx: &mut watch::Receiver<bool>) {
    let mut was = *rx.borrow_and_update();
    loop {
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
        let now = *rx.borrow_and_update();
        if now && !was {
            return;
        }
        was = now;
    }
}
