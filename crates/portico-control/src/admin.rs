//! The admin API (docs/reference.md §7), served on its own listener (loopback by default), never on
//! traffic listeners.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::reload::{Controller, Outcome};

/// What the admin API can ask the process to do.
#[derive(Debug)]
pub enum Command {
    /// Drain gracefully; exit afterwards when `exit`.
    Drain { exit: bool },
}

pub struct Admin {
    pub ctl: Arc<Controller>,
    pub commands: mpsc::UnboundedSender<Command>,
}

/// Binds the admin listener and serves it on the current runtime.
pub async fn serve(addr: SocketAddr, admin: Arc<Admin>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    crate::series::spawn(admin.ctl.series.clone(), admin.ctl.proxy.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let admin = admin.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(route(&admin, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(local)
}

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r
}

fn json_reply(status: StatusCode, v: &Value) -> Response<Full<Bytes>> {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|_| "{}".into());
    s.push('\n');
    reply(status, "application/json", s)
}

async fn route(admin: &Admin, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let ctl = &admin.ctl;
    match (req.method().clone(), req.uri().path()) {
        (Method::GET, "/") => reply(
            StatusCode::OK,
            "text/html; charset=utf-8",
            crate::stats::DASHBOARD_HTML,
        ),
        (Method::GET, "/stats") => json_reply(StatusCode::OK, &crate::stats::stats(ctl)),
        (Method::GET, "/ready") => {
            if ctl.proxy.is_draining() {
                reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "DRAINING\n")
            } else {
                reply(StatusCode::OK, "text/plain", "LIVE\n")
            }
        }
        (Method::GET, "/metrics") => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            crate::metrics::render(ctl),
        ),
        (Method::GET, "/config") => json_reply(StatusCode::OK, &crate::views::config(ctl)),
        (Method::GET, "/routes") => {
            json_reply(StatusCode::OK, &crate::views::routes(&ctl.proxy.active()))
        }
        (Method::GET, "/upstreams") => json_reply(
            StatusCode::OK,
            &crate::views::upstreams(&ctl.proxy.active()),
        ),
        (Method::GET, "/explain") => {
            let q = req.uri().query().unwrap_or("");
            match crate::explain::from_query(&ctl.proxy.active().config, q) {
                Ok(v) => json_reply(StatusCode::OK, &v),
                Err(e) => json_reply(StatusCode::BAD_REQUEST, &json!({ "error": e })),
            }
        }
        (Method::POST, "/reload") => match ctl.reload("admin").await {
            Outcome::Applied { generation } => json_reply(
                StatusCode::OK,
                &json!({ "result": "applied", "generation": generation }),
            ),
            Outcome::Rejected { errors } => json_reply(
                StatusCode::BAD_REQUEST,
                &json!({ "result": "rejected", "errors": errors }),
            ),
        },
        (Method::POST, "/hooks/git") => match ctl.git.get() {
            Some(g) => {
                // Answer at once; the poll loop fetches (serialized with other syncs).
                g.wake();
                json_reply(StatusCode::ACCEPTED, &json!({ "result": "fetching" }))
            }
            None => json_reply(
                StatusCode::NOT_FOUND,
                &json!({ "error": "no git source (run with --git)" }),
            ),
        },
        (Method::POST, "/drain") => {
            let _ = admin.commands.send(Command::Drain { exit: false });
            json_reply(StatusCode::OK, &json!({ "result": "draining" }))
        }
        (
            _,
            "/" | "/stats" | "/ready" | "/config" | "/routes" | "/upstreams" | "/explain"
            | "/reload" | "/drain" | "/hooks/git",
        ) => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n",
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}
