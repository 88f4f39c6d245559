//! gRPC through the real binary with tonic on both ends (h2c downstream, `grpc: true` h2c
//! upstream): unary, server-, client- and bidi-streaming calls, with request metadata,
//! response metadata, trailers (custom trailer metadata, non-OK status with a message) and
//! trailers-only answers intact; a call on no route gets status 12 (UNIMPLEMENTED).
//!
//! No protoc and no codegen: the messages are hand-written prost structs and the services
//! use tonic's generic `client::Grpc`/`server::Grpc` with `tonic_prost::ProstCodec`.

use crate::common;
use common::*;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use http::uri::PathAndQuery;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

#[derive(Clone, PartialEq, prost::Message)]
struct Msg {
    #[prost(string, tag = "1")]
    text: String,
    #[prost(int32, tag = "2")]
    n: i32,
}

fn msg(text: &str, n: i32) -> Msg {
    Msg {
        text: text.to_string(),
        n,
    }
}

type BoxFut<T> = Pin<Box<dyn Future<Output = Result<Response<T>, Status>> + Send>>;
type BoxStream = Pin<Box<dyn Stream<Item = Result<Msg, Status>> + Send>>;

fn trailer_status(code: Code, message: &str) -> Status {
    let mut md = MetadataMap::new();
    md.insert("x-trailer", MetadataValue::from_static("t1"));
    Status::with_metadata(code, message, md)
}

/// Unary: echoes the text, `n + 1`, and the `x-custom` request metadata as `x-echo`;
/// `text == "fail"` answers (trailers-only) INVALID_ARGUMENT with trailer metadata.
struct Unary;
impl tonic::server::UnaryService<Msg> for Unary {
    type Response = Msg;
    type Future = BoxFut<Msg>;
    fn call(&mut self, req: Request<Msg>) -> Self::Future {
        Box::pin(async move {
            let echo = req.metadata().get("x-custom").cloned();
            let m = req.into_inner();
            if m.text == "fail" {
                return Err(trailer_status(Code::InvalidArgument, "bad input: fail"));
            }
            let mut resp = Response::new(msg(&m.text, m.n + 1));
            if let Some(v) = echo {
                resp.metadata_mut().insert("x-echo", v);
            }
            Ok(resp)
        })
    }
}

/// Server streaming: `n` messages; `text == "trail"` then ends with DATA_LOSS + trailer metadata.
struct ServerStream;
impl tonic::server::ServerStreamingService<Msg> for ServerStream {
    type Response = Msg;
    type ResponseStream = BoxStream;
    type Future = BoxFut<BoxStream>;
    fn call(&mut self, req: Request<Msg>) -> Self::Future {
        Box::pin(async move {
            let m = req.into_inner();
            let mut items: Vec<Result<Msg, Status>> =
                (0..m.n).map(|i| Ok(msg(&m.text, i))).collect();
            if m.text == "trail" {
                items.push(Err(trailer_status(Code::DataLoss, "after the messages")));
            }
            Ok(Response::new(
                Box::pin(futures_util::stream::iter(items)) as BoxStream
            ))
        })
    }
}

/// Client streaming: the sum of `n` and the texts joined.
struct ClientStream;
impl tonic::server::ClientStreamingService<Msg> for ClientStream {
    type Response = Msg;
    type Future = BoxFut<Msg>;
    fn call(&mut self, req: Request<Streaming<Msg>>) -> Self::Future {
        Box::pin(async move {
            let mut s = req.into_inner();
            let mut sum = 0;
            let mut texts = Vec::new();
            while let Some(m) = s.message().await? {
                sum += m.n;
                texts.push(m.text);
            }
            Ok(Response::new(msg(&texts.join(","), sum)))
        })
    }
}

/// Bidi: echoes each message with `n * 2`.
struct Bidi;
impl tonic::server::StreamingService<Msg> for Bidi {
    type Response = Msg;
    type ResponseStream = BoxStream;
    type Future = BoxFut<BoxStream>;
    fn call(&mut self, req: Request<Streaming<Msg>>) -> Self::Future {
        Box::pin(async move {
            let s = req.into_inner().map(|m| m.map(|m| msg(&m.text, m.n * 2)));
            Ok(Response::new(Box::pin(s) as BoxStream))
        })
    }
}

/// An h2c gRPC server with the four methods under `/test.Echo/`.
async fn grpc_server() -> SocketAddr {
    grpc_server_on(None).await
}

/// The same server, over TLS when `tls` is given.
async fn grpc_server_on(tls: Option<tokio_rustls::TlsAcceptor>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => serve_grpc(tcp).await,
                    Some(acceptor) => {
                        if let Ok(s) = acceptor.accept(tcp).await {
                            serve_grpc(s).await
                        }
                    }
                }
            });
        }
    });
    addr
}

async fn serve_grpc<S>(io: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(|req: http::Request<Incoming>| async move {
        let mut g = tonic::server::Grpc::new(ProstCodec::<Msg, Msg>::default());
        let resp = match req.uri().path() {
            "/test.Echo/Unary" => g.unary(Unary, req).await,
            "/test.Echo/ServerStream" => g.server_streaming(ServerStream, req).await,
            "/test.Echo/ClientStream" => g.client_streaming(ClientStream, req).await,
            "/test.Echo/Bidi" => g.streaming(Bidi, req).await,
            _ => Status::unimplemented("no such method").into_http(),
        };
        Ok::<_, Infallible>(resp)
    });
    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), svc)
        .await;
}

async fn client(port: u16) -> tonic::client::Grpc<tonic::transport::Channel> {
    let ch = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect to portico");
    tonic::client::Grpc::new(ch)
}

fn codec() -> ProstCodec<Msg, Msg> {
    ProstCodec::default()
}

async fn start() -> Portico {
    let addr = grpc_server().await;
    Portico::start(
        &cfg::mapping("echo")
            .prefix("/test.Echo/")
            .service(addr)
            .grpc(true)
            .build(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_with_metadata_and_error_trailers() {
    let p = start().await;
    let mut g = client(p.port).await;

    g.ready().await.expect("ready");
    let mut req = Request::new(msg("hi", 41));
    req.metadata_mut()
        .insert("x-custom", MetadataValue::from_static("abc"));
    let resp = g
        .unary(req, PathAndQuery::from_static("/test.Echo/Unary"), codec())
        .await
        .expect("unary ok");
    assert_eq!(
        resp.metadata().get("x-echo").and_then(|v| v.to_str().ok()),
        Some("abc")
    );
    assert_eq!(resp.into_inner(), msg("hi", 42));

    // Non-OK status with a message and custom metadata, as a trailers-only answer.
    g.ready().await.expect("ready");
    let err = g
        .unary(
            Request::new(msg("fail", 0)),
            PathAndQuery::from_static("/test.Echo/Unary"),
            codec(),
        )
        .await
        .expect_err("status");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "bad input: fail");
    assert_eq!(
        err.metadata()
            .get("x-trailer")
            .and_then(|v| v.to_str().ok()),
        Some("t1")
    );

    // Many concurrent calls on one client connection.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let mut g = g.clone();
        tasks.push(tokio::spawn(async move {
            g.ready().await.expect("ready");
            g.unary(
                Request::new(msg("c", i)),
                PathAndQuery::from_static("/test.Echo/Unary"),
                codec(),
            )
            .await
            .map(|r| r.into_inner().n)
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.expect("join").expect("call"), i as i32 + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_streaming_with_trailers() {
    let p = start().await;
    let mut g = client(p.port).await;
    g.ready().await.expect("ready");
    let resp = g
        .server_streaming(
            Request::new(msg("s", 5)),
            PathAndQuery::from_static("/test.Echo/ServerStream"),
            codec(),
        )
        .await
        .expect("call");
    let mut s = resp.into_inner();
    let mut got = Vec::new();
    while let Some(m) = s.message().await.expect("message") {
        got.push(m.n);
    }
    assert_eq!(got, vec![0, 1, 2, 3, 4]);

    // Messages, then a non-OK status with trailer metadata.
    g.ready().await.expect("ready");
    let mut s = g
        .server_streaming(
            Request::new(msg("trail", 3)),
            PathAndQuery::from_static("/test.Echo/ServerStream"),
            codec(),
        )
        .await
        .expect("call")
        .into_inner();
    for i in 0..3 {
        assert_eq!(s.message().await.expect("message").map(|m| m.n), Some(i));
    }
    let err = s.message().await.expect_err("trailer status");
    assert_eq!(err.code(), Code::DataLoss);
    assert_eq!(err.message(), "after the messages");
    assert_eq!(
        err.metadata()
            .get("x-trailer")
            .and_then(|v| v.to_str().ok()),
        Some("t1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_streaming_and_bidi() {
    let p = start().await;
    let mut g = client(p.port).await;
    g.ready().await.expect("ready");
    let input = futures_util::stream::iter((1..=10).map(|i| msg(&format!("m{i}"), i)));
    let resp = g
        .client_streaming(
            Request::new(input),
            PathAndQuery::from_static("/test.Echo/ClientStream"),
            codec(),
        )
        .await
        .expect("call")
        .into_inner();
    assert_eq!(resp.n, 55);
    assert_eq!(resp.text, "m1,m2,m3,m4,m5,m6,m7,m8,m9,m10");

    // Bidi, interleaved: each message is answered before the next is sent.
    let (tx, rx) = tokio::sync::mpsc::channel::<Msg>(1);
    let outbound =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    g.ready().await.expect("ready");
    let mut s = g
        .streaming(
            Request::new(outbound),
            PathAndQuery::from_static("/test.Echo/Bidi"),
            codec(),
        )
        .await
        .expect("call")
        .into_inner();
    for i in 0..5 {
        tx.send(msg("b", i)).await.expect("send");
        let m = s.message().await.expect("message").expect("one");
        assert_eq!(m.n, i * 2);
    }
    drop(tx);
    assert_eq!(s.message().await.expect("end"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_is_unimplemented_trailers_only() {
    let p = start().await;
    let mut g = client(p.port).await;
    g.ready().await.expect("ready");
    let err = g
        .unary(
            Request::new(msg("x", 1)),
            PathAndQuery::from_static("/other.Service/Call"),
            codec(),
        )
        .await
        .expect_err("no route");
    assert_eq!(err.code(), Code::Unimplemented);
    // The local reply is HTTP 200 with grpc-status in the headers (trailers-only).
    let r = send(
        request(
            "POST",
            &p.url("/other.Service/Call"),
            &[("content-type", "application/grpc"), ("te", "trailers")],
            "",
        ),
        true,
    )
    .await
    .expect("h2c");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("grpc-status"), Some("12"));
}

/// `grpc: true` to a TLS upstream (`protocol: auto`): HTTP/2 by ALPN, trailers intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_to_tls_upstream_by_alpn_h2() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    let dir = tempfile::tempdir().expect("tmp");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "grpc ca");
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("write");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["grpc.test".to_string()])
        .expect("params")
        .signed_by(&key, &ca)
        .expect("sign");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("server config");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let addr = grpc_server_on(Some(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(
        config,
    ))))
    .await;
    let p = Portico::start(&cfg::docs(&[
        cfg::upstream("tls")
            .endpoints(&[addr])
            .set("protocol", "auto")
            .set(
                "tls",
                serde_json::json!({ "ca_file": ca_file.display().to_string(), "sni": "grpc.test" }),
            ),
        cfg::mapping("echo")
            .prefix("/test.Echo/")
            .service("tls")
            .grpc(true),
    ]))
    .await;
    let mut g = client(p.port).await;
    g.ready().await.expect("ready");
    let resp = g
        .unary(
            Request::new(msg("tls", 1)),
            PathAndQuery::from_static("/test.Echo/Unary"),
            codec(),
        )
        .await
        .expect("unary over TLS");
    assert_eq!(resp.into_inner(), msg("tls", 2));
    g.ready().await.expect("ready");
    let mut s = g
        .server_streaming(
            Request::new(msg("trail", 2)),
            PathAndQuery::from_static("/test.Echo/ServerStream"),
            codec(),
        )
        .await
        .expect("call")
        .into_inner();
    assert_eq!(s.message().await.expect("m").map(|m| m.n), Some(0));
    assert_eq!(s.message().await.expect("m").map(|m| m.n), Some(1));
    let err = s.message().await.expect_err("trailers");
    assert_eq!(err.code(), Code::DataLoss);
    assert_eq!(
        err.metadata()
            .get("x-trailer")
            .and_then(|v| v.to_str().ok()),
        Some("t1")
    );
}
