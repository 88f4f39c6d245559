//! CORS in a real browser (issue 10): a page on one loopback port fetches from Portico on
//! another; headless Chromium lets the allowed origin read the answer and blocks the other.

use crate::common;
use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use common::*;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// Serves one HTML page that fetches `target` (a PUT with a custom header: preflighted) and
/// writes the outcome into `#r`.
async fn page_server(target: String) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let html = format!(
        "<!doctype html><html><body><div id=\"r\">pending</div><script>\
         fetch('{target}', {{method: 'PUT', headers: {{'content-type': 'application/json', 'x-custom': '1'}}, body: '{{}}'}})\
         .then(r => r.text()).then(t => {{ document.getElementById('r').textContent = 'RESULT-OK:' + t; }})\
         .catch(e => {{ document.getElementById('r').textContent = 'RESULT-BLOCKED'; }});\
         </script></body></html>"
    );
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let html = html.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                    let html = html.clone();
                    async move {
                        let mut r =
                            http::Response::new(http_body_util::Full::new(Bytes::from(html)));
                        r.headers_mut()
                            .insert("content-type", "text/html".parse().expect("ct"));
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_allows_the_allowed_origin_and_blocks_the_other() {
    if !std::path::Path::new(CHROMIUM).exists() {
        eprintln!("SKIP: {CHROMIUM} not installed (scripts/test.sh installs it when run as root)");
        return;
    }
    let up = Upstream::start("a").await;
    // Two page servers: their origins differ by port. Only the first is allowed.
    let port = free_port();
    let target = format!("http://127.0.0.1:{port}/api/data");
    let allowed = page_server(target.clone()).await;
    let other = page_server(target).await;
    let doc = format!(
        "{API}\nkind: Listener\nmetadata: {{ name: browser }}\nspec: {{ address: 127.0.0.1, port: {port} }}\n---\n\
         {API}\nkind: Mapping\nmetadata: {{ name: api }}\nspec: {{ prefix: /api/, service: {}, cors: {{ origins: [\"http://127.0.0.1:{}\"], methods: [GET, PUT], headers: [content-type, x-custom] }} }}\n",
        up.addr,
        allowed.port()
    );
    let _p = Portico::start(&doc).await;

    let dump = |addr: SocketAddr| {
        tokio::task::spawn_blocking(move || {
            chromium(
                &format!("http://127.0.0.1:{}/", addr.port()),
                &["--dump-dom".to_string()],
            )
        })
    };
    let ok = dump(allowed).await.expect("chromium");
    assert!(ok.contains("RESULT-OK:upstream a"), "allowed origin: {ok}");
    let seen_after_allowed = up.count();
    assert_eq!(
        seen_after_allowed, 1,
        "only the actual PUT reaches the upstream, not the preflight"
    );
    let blocked = dump(other).await.expect("chromium");
    assert!(
        blocked.contains("RESULT-BLOCKED"),
        "other origin: {blocked}"
    );
    assert_eq!(
        up.count(),
        seen_after_allowed,
        "a refused preflight never reaches the upstream"
    );
}
