//! HTTP clients: requests through hyper (HTTP/1.1 or h2c, one pooled client per thread), raw
//! HTTP/1.1 exchanges, and readers of the admin API (`/metrics`, `/upstreams`).

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::process::Portico;

/// A response, fully read.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Got {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

type Cl = Client<HttpConnector, Full<Bytes>>;

fn client(h2: bool) -> Cl {
    let mut b = Client::builder(TokioExecutor::new());
    b.pool_idle_timeout(Duration::from_secs(5));
    if h2 {
        b.http2_only(true);
    }
    b.build_http()
}

thread_local! {
    static H1: Cl = client(false);
    static H2: Cl = client(true);
}

pub async fn send(req: Request<Full<Bytes>>, h2: bool) -> Result<Got, String> {
    let c = if h2 {
        H2.with(|c| c.clone())
    } else {
        H1.with(|c| c.clone())
    };
    let fut = c.request(req);
    let resp = tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| format!("{e:?}"))?;
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("body: {e:?}"))?
        .to_bytes();
    Ok(Got {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Request<Full<Bytes>> {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(body.into())).expect("request")
}

pub async fn http_get(url: &str, headers: &[(&str, &str)]) -> Result<Got, String> {
    send(request("GET", url, headers, Bytes::new()), false).await
}

pub async fn get(url: &str, headers: &[(&str, &str)]) -> Got {
    http_get(url, headers).await.expect("request failed")
}

pub async fn post(url: &str, body: &str) -> Got {
    send(request("POST", url, &[], body.to_string()), false)
        .await
        .expect("request failed")
}

/// The value of one series (`name{labels}`, exactly as printed) in the admin `/metrics`.
pub async fn metric(p: &Portico, series: &str) -> Option<f64> {
    let r = get(&p.admin_url("/metrics"), &[]).await;
    r.text().lines().find_map(|l| {
        l.strip_prefix(series)
            .filter(|rest| rest.starts_with(' '))
            .and_then(|rest| rest.trim().parse().ok())
    })
}

/// Header map of a Seen as simple name -> first value strings.
pub fn header_map(h: &HeaderMap) -> HashMap<String, String> {
    h.iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect()
}

/// `GET /upstreams`, the endpoints of upstream `name` as (address, state, ejections).
pub async fn endpoint_states(p: &Portico, name: &str) -> Vec<(String, String, u64)> {
    let r = get(&p.admin_url("/upstreams"), &[]).await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    v["upstreams"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|u| u["name"] == name)
        .flat_map(|u| u["endpoints"].as_array().cloned().unwrap_or_default())
        .map(|e| {
            (
                e["address"].as_str().unwrap_or("").to_string(),
                e["state"].as_str().unwrap_or("").to_string(),
                e["ejections"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// Sends `prefix` (e.g. a PROXY protocol header) then an HTTP/1.1 `GET path` with
/// `connection: close` on a fresh connection to 127.0.0.1:`port`; returns what came back (empty
/// when the connection was closed without an answer).
pub async fn raw_exchange(port: u16, prefix: &[u8], path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut data = prefix.to_vec();
    data.extend_from_slice(
        format!("GET {path} HTTP/1.1\r\nhost: pp.test\r\nconnection: close\r\n\r\n").as_bytes(),
    );
    s.write_all(&data).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(8), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
