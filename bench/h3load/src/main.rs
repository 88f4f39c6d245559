//! h3load: a closed-loop load client for HTTP/3 (quinn + h3 + h3-quinn) and HTTP/2 over TLS
//! (h2 on tokio-rustls), so that both protocols are measured with the same client, the same
//! request loop and the same TLS library (Debian's h2load and curl have no HTTP/3).
//!
//! `-c CONNS` connections each run `-m STREAMS` workers; a worker sends one request, reads the
//! whole response, and sends the next (closed loop). Requests that start during the warm-up
//! (`-w`) or end after the measured window are not counted. Output: req/s, latency
//! percentiles, errors and bytes, and with `--json` one JSON line for scripts (bench/h3.py).

#![forbid(unsafe_code)]

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use http::{Method, Request, Uri};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

type Error = Box<dyn std::error::Error + Send + Sync>;

const USAGE: &str =
    "usage: h3load --url https://HOST:PORT/PATH --proto h3|h2 [-c CONNS] [-m STREAMS]
              [-d SECONDS] [-w WARMUP_SECONDS] [-t THREADS] [--insecure | --ca FILE]
              [--sni NAME] [--body BYTES] [--json]";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Proto {
    H3,
    H2,
}

#[derive(Clone, Debug)]
struct Args {
    url: Uri,
    proto: Proto,
    conns: usize,
    streams: usize,
    duration: Duration,
    warmup: Duration,
    threads: usize,
    insecure: bool,
    ca: Option<PathBuf>,
    sni: Option<String>,
    body: usize,
    json: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        url: Uri::from_static("https://127.0.0.1/"),
        proto: Proto::H3,
        conns: 1,
        streams: 1,
        duration: Duration::from_secs(5),
        warmup: Duration::ZERO,
        threads: 1,
        insecure: false,
        ca: None,
        sni: None,
        body: 0,
        json: false,
    };
    let mut url = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |v: String| v.parse::<f64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--url" => url = Some(val()?),
            "--proto" => {
                a.proto = match val()?.as_str() {
                    "h3" => Proto::H3,
                    "h2" => Proto::H2,
                    o => return Err(format!("--proto {o}: h3 or h2")),
                }
            }
            "-c" => a.conns = num(val()?)? as usize,
            "-m" => a.streams = num(val()?)? as usize,
            "-t" => a.threads = num(val()?)? as usize,
            "-d" => a.duration = Duration::from_secs_f64(num(val()?)?),
            "-w" => a.warmup = Duration::from_secs_f64(num(val()?)?),
            "--body" => a.body = num(val()?)? as usize,
            "--insecure" | "-k" => a.insecure = true,
            "--ca" => a.ca = Some(PathBuf::from(val()?)),
            "--sni" => a.sni = Some(val()?),
            "--json" => a.json = true,
            "-h" | "--help" => return Err(USAGE.to_string()),
            o => return Err(format!("unknown argument {o}\n{USAGE}")),
        }
    }
    let url = url.ok_or_else(|| format!("--url is required\n{USAGE}"))?;
    a.url = url.parse().map_err(|e| format!("--url {url}: {e}"))?;
    if a.url.scheme_str() != Some("https") || a.url.host().is_none() {
        return Err(format!("--url {url}: an https:// URL with a host"));
    }
    if a.conns == 0 || a.streams == 0 || a.threads == 0 {
        return Err("-c, -m and -t must be at least 1".into());
    }
    if !a.insecure && a.ca.is_none() {
        return Err("give --insecure or --ca FILE".into());
    }
    Ok(a)
}

/// What one worker (or all of them, merged) measured.
#[derive(Default)]
struct Stats {
    /// Latency of each counted request, microseconds.
    lat_us: Vec<u32>,
    /// Counted requests answered 2xx/3xx with their whole body.
    ok: u64,
    /// Counted requests answered with another status.
    bad_status: u64,
    /// Requests that failed (stream or connection errors), counted whenever they happened.
    errors: u64,
    /// Response body bytes of the counted requests.
    bytes: u64,
    /// Every request that completed, warm-up and stragglers included (for CPU per request).
    all: u64,
    first_error: Option<String>,
}

impl Stats {
    fn merge(&mut self, o: Stats) {
        self.lat_us.extend(o.lat_us);
        self.ok += o.ok;
        self.bad_status += o.bad_status;
        self.errors += o.errors;
        self.bytes += o.bytes;
        self.all += o.all;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
    }

    fn error(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }
}

/// The measured window.
#[derive(Clone, Copy)]
struct Window {
    from: Instant,
    to: Instant,
}

impl Window {
    /// Records a finished request that started at `t0`, if it lies inside the window.
    fn record(&self, s: &mut Stats, t0: Instant, status: u16, bytes: u64) {
        let t1 = Instant::now();
        s.all += 1;
        if t0 < self.from || t1 > self.to {
            return;
        }
        s.lat_us
            .push(u32::try_from(t1.duration_since(t0).as_micros()).unwrap_or(u32::MAX));
        if (200..400).contains(&status) {
            s.ok += 1;
            s.bytes += bytes;
        } else {
            s.bad_status += 1;
        }
    }
}

#[derive(Debug)]
struct AnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The client's TLS config (TLS 1.3 for h3, 1.2 and 1.3 for h2) with the protocol's ALPN.
fn tls_config(a: &Args) -> Result<rustls::ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match a.proto {
        Proto::H3 => &[&rustls::version::TLS13],
        Proto::H2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)?;
    let mut cfg = if a.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
            .with_no_client_auth()
    } else {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        let path = a.ca.as_ref().ok_or("no --ca")?;
        for c in CertificateDer::pem_file_iter(path)? {
            roots.add(c?)?;
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    cfg.alpn_protocols = vec![match a.proto {
        Proto::H3 => b"h3".to_vec(),
        Proto::H2 => b"h2".to_vec(),
    }];
    Ok(cfg)
}

fn request(a: &Args) -> Result<Request<()>, Error> {
    let method = if a.body > 0 {
        Method::POST
    } else {
        Method::GET
    };
    let mut b = Request::builder().method(method).uri(a.url.clone());
    if a.body > 0 {
        b = b.header(http::header::CONTENT_LENGTH, a.body);
    }
    Ok(b.body(())?)
}

const STREAM_WINDOW: u32 = 4 << 20;
const CONN_WINDOW: u32 = 16 << 20;

// ---- HTTP/3 ----

type H3Send = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

async fn h3_connection(
    a: Arc<Args>,
    endpoint: quinn::Endpoint,
    addr: SocketAddr,
    sni: String,
    win: Window,
) -> Stats {
    let mut total = Stats::default();
    while Instant::now() < win.to {
        let send = match h3_connect(&endpoint, addr, &sni).await {
            Ok(s) => s,
            Err(e) => {
                total.error(format!("connect: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let workers: Vec<_> = (0..a.streams)
            .map(|_| tokio::spawn(h3_worker(a.clone(), send.clone(), win)))
            .collect();
        drop(send);
        for w in workers {
            if let Ok(s) = w.await {
                total.merge(s);
            }
        }
    }
    total
}

async fn h3_connect(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    sni: &str,
) -> Result<H3Send, Error> {
    let conn = endpoint.connect(addr, sni)?.await?;
    let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn)).await?;
    tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });
    Ok(send)
}

/// Sends requests one after the other on one connection until the window closes or the
/// connection fails.
async fn h3_worker(a: Arc<Args>, mut send: H3Send, win: Window) -> Stats {
    let mut s = Stats::default();
    let body = Bytes::from(vec![b'x'; a.body]);
    while Instant::now() < win.to {
        let t0 = Instant::now();
        match h3_one(&a, &mut send, &body).await {
            Ok((status, bytes)) => win.record(&mut s, t0, status, bytes),
            Err(e) => {
                s.error(e);
                break;
            }
        }
    }
    s
}

async fn h3_one(a: &Args, send: &mut H3Send, body: &Bytes) -> Result<(u16, u64), Error> {
    let mut stream = send.send_request(request(a)?).await?;
    if !body.is_empty() {
        stream.send_data(body.clone()).await?;
    }
    stream.finish().await?;
    let resp = stream.recv_response().await?;
    let mut bytes = 0u64;
    while let Some(mut chunk) = stream.recv_data().await? {
        let n = chunk.remaining();
        bytes += n as u64;
        chunk.advance(n);
    }
    Ok((resp.status().as_u16(), bytes))
}

// ---- HTTP/2 over TLS ----

async fn h2_connection(
    a: Arc<Args>,
    tls: tokio_rustls::TlsConnector,
    addr: SocketAddr,
    sni: ServerName<'static>,
    win: Window,
) -> Stats {
    let mut total = Stats::default();
    while Instant::now() < win.to {
        let send = match h2_connect(&tls, addr, sni.clone()).await {
            Ok(s) => s,
            Err(e) => {
                total.error(format!("connect: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let workers: Vec<_> = (0..a.streams)
            .map(|_| tokio::spawn(h2_worker(a.clone(), send.clone(), win)))
            .collect();
        drop(send);
        for w in workers {
            if let Ok(s) = w.await {
                total.merge(s);
            }
        }
    }
    total
}

type H2Send = h2::client::SendRequest<Bytes>;

async fn h2_connect(
    tls: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    sni: ServerName<'static>,
) -> Result<H2Send, Error> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let io = tls.connect(sni, tcp).await?;
    if io.get_ref().1.alpn_protocol() != Some(b"h2") {
        return Err("the server did not negotiate h2".into());
    }
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONN_WINDOW)
        .handshake(io)
        .await?;
    tokio::spawn(conn);
    Ok(send)
}

async fn h2_worker(a: Arc<Args>, send: H2Send, win: Window) -> Stats {
    let mut s = Stats::default();
    let body = Bytes::from(vec![b'x'; a.body]);
    while Instant::now() < win.to {
        let t0 = Instant::now();
        match h2_one(&a, send.clone(), &body).await {
            Ok((status, bytes)) => win.record(&mut s, t0, status, bytes),
            Err(e) => {
                s.error(e);
                break;
            }
        }
    }
    s
}

async fn h2_one(a: &Args, send: H2Send, body: &Bytes) -> Result<(u16, u64), Error> {
    let mut send = send.ready().await?;
    let (resp, mut tx) = send.send_request(request(a)?, body.is_empty())?;
    if !body.is_empty() {
        tx.send_data(body.clone(), true)?;
    }
    let resp = resp.await?;
    let status = resp.status().as_u16();
    let mut rx = resp.into_body();
    let mut bytes = 0u64;
    while let Some(d) = rx.data().await {
        let d = d?;
        bytes += d.len() as u64;
        let _ = rx.flow_control().release_capacity(d.len());
    }
    Ok((status, bytes))
}

// ---- main ----

fn pct(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn run(a: Args) -> Result<(), Error> {
    let host = a
        .url
        .host()
        .ok_or("no host")?
        .trim_matches(['[', ']'])
        .to_string();
    let port = a.url.port_u16().unwrap_or(443);
    let addr = (host.as_str(), port)
        .to_socket_addrs()?
        .next()
        .ok_or("host does not resolve")?;
    let sni = a.sni.clone().unwrap_or_else(|| host.clone());
    let tls = tls_config(&a)?;
    let a = Arc::new(a);
    let start = Instant::now();
    let win = Window {
        from: start + a.warmup,
        to: start + a.warmup + a.duration,
    };
    let mut tasks = Vec::new();
    match a.proto {
        Proto::H3 => {
            let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
            let mut cc = quinn::ClientConfig::new(Arc::new(crypto));
            let mut t = quinn::TransportConfig::default();
            t.stream_receive_window(STREAM_WINDOW.into())
                .receive_window(CONN_WINDOW.into())
                .max_idle_timeout(Some(Duration::from_secs(30).try_into()?));
            cc.transport_config(Arc::new(t));
            let bind: SocketAddr = if addr.is_ipv6() {
                "[::]:0"
            } else {
                "0.0.0.0:0"
            }
            .parse()?;
            for _ in 0..a.conns {
                // One UDP socket per connection, as separate clients would have.
                let mut ep = quinn::Endpoint::client(bind)?;
                ep.set_default_client_config(cc.clone());
                tasks.push(tokio::spawn(h3_connection(
                    a.clone(),
                    ep,
                    addr,
                    sni.clone(),
                    win,
                )));
            }
        }
        Proto::H2 => {
            let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
            let name = ServerName::try_from(sni.clone())?;
            for _ in 0..a.conns {
                tasks.push(tokio::spawn(h2_connection(
                    a.clone(),
                    connector.clone(),
                    addr,
                    name.clone(),
                    win,
                )));
            }
        }
    }
    let mut total = Stats::default();
    for t in tasks {
        total.merge(t.await?);
    }
    let secs = a.duration.as_secs_f64();
    total.lat_us.sort_unstable();
    let l = &total.lat_us;
    let done = total.ok + total.bad_status;
    let proto = match a.proto {
        Proto::H3 => "h3",
        Proto::H2 => "h2",
    };
    println!(
        "h3load: {proto} {} x {} streams, {:.1} s (+{:.1} s warm-up), {}",
        a.conns,
        a.streams,
        secs,
        a.warmup.as_secs_f64(),
        a.url
    );
    println!(
        "requests: {done} ({:.0} req/s), ok {}, non-2xx/3xx {}, errors {}; {:.2} MiB/s",
        done as f64 / secs,
        total.ok,
        total.bad_status,
        total.errors,
        total.bytes as f64 / secs / (1 << 20) as f64
    );
    println!(
        "latency (us): p50 {} p90 {} p99 {} max {}",
        pct(l, 0.5),
        pct(l, 0.9),
        pct(l, 0.99),
        l.last().copied().unwrap_or(0)
    );
    if let Some(e) = &total.first_error {
        println!("first error: {e}");
    }
    if a.json {
        println!(
            "{{\"proto\":\"{proto}\",\"conns\":{},\"streams\":{},\"seconds\":{secs},\"requests\":{done},\"rps\":{:.1},\"ok\":{},\"non2xx\":{},\"errors\":{},\"bytes\":{},\"all\":{},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"max_us\":{}}}",
            a.conns,
            a.streams,
            done as f64 / secs,
            total.ok,
            total.bad_status,
            total.errors,
            total.bytes,
            total.all,
            pct(l, 0.5),
            pct(l, 0.9),
            pct(l, 0.99),
            l.last().copied().unwrap_or(0)
        );
    }
    Ok(())
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("h3load: {e}");
            std::process::exit(2);
        }
    };
    let mut rt = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(args.threads);
        b
    };
    let rt = match rt.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("h3load: runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(args)) {
        eprintln!("h3load: {e}");
        std::process::exit(1);
    }
}
