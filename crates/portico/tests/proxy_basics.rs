//! End-to-end basics: proxying over HTTP/1.1 and h2c, forwarding headers, local replies.

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_http1_and_h2c_with_forwarding_headers() {
    let up = Upstream::start("a").await;
    let p = Portico::start(&format!(
        "{API}\nkind: Mapping\nmetadata: {{ name: quote }}\nspec: {{ prefix: /quote/, service: {} }}\n",
        up.addr
    ))
    .await;

    let r = get(&p.url("/quote/x?y=1"), &[("x-forwarded-for", "10.1.1.1")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "upstream a");
    let seen = up.last();
    assert_eq!(seen.uri, "/quote/x?y=1");
    assert_eq!(seen.headers["x-forwarded-for"], "10.1.1.1, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["host"], format!("127.0.0.1:{}", p.port));
    assert!(seen.headers.contains_key("x-request-id"));
    assert!(seen.headers.contains_key("x-portico-expected-timeout-ms"));

    // h2c prior knowledge downstream, HTTP/1.1 upstream.
    let r = send(request("GET", &p.url("/quote/h2"), &[], ""), true)
        .await
        .expect("h2c");
    assert_eq!(r.status, 200);
    assert_eq!(up.last().uri, "/quote/h2");
    assert_eq!(up.last().version, http::Version::HTTP_11);

    // No route: 404 with a one-line body, flag NR in the access log.
    let r = get(&p.url("/nothing"), &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), "no route\n");
    let log = p.wait_log_lines(3).await;
    let nr = log
        .iter()
        .find(|l| l["path"] == "/nothing")
        .expect("log line");
    assert_eq!(nr["flags"], "NR");
    assert_eq!(nr["status"], 404);
    let ok = log
        .iter()
        .find(|l| l["path"] == "/quote/x?y=1")
        .expect("log line");
    assert_eq!(ok["route"], "quote");
    assert_eq!(ok["upstream"], up.addr.to_string());
    assert_eq!(ok["upstream_addr"], up.addr.to_string());
    assert_eq!(ok["attempts"], 1);
    assert_eq!(ok["protocol"], "HTTP/1.1");
    assert_eq!(ok["client"], "127.0.0.1");
    assert_eq!(ok["bytes_sent"], 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upstream_by_scheme_and_by_grpc_flag() {
    let up = Upstream::start("h2").await;
    let p = Portico::start(&format!(
        "{API}\nkind: Mapping\nmetadata: {{ name: h2 }}\nspec: {{ prefix: /h2/, service: h2c://{a} }}\n---\n\
         {API}\nkind: Mapping\nmetadata: {{ name: g }}\nspec: {{ prefix: /g/, service: {a}, grpc: true }}\n",
        a = up.addr
    ))
    .await;
    // HTTP/1.1 downstream -> HTTP/2 upstream.
    for path in ["/h2/a", "/g/b"] {
        let r = get(&p.url(path), &[]).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(up.last().version, http::Version::HTTP_2);
        assert_eq!(
            up.last()
                .uri
                .rsplit_once(&format!("{}", p.port))
                .map(|x| x.1)
                .unwrap_or(&up.last().uri),
            path
        );
    }
    // Many requests share few upstream connections (multiplexed).
    let mut tasks = Vec::new();
    for i in 0..50 {
        let url = p.url(&format!("/h2/{i}"));
        tasks.push(tokio::spawn(async move {
            http_get(&url, &[]).await.map(|r| r.status.as_u16())
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("join"), Ok(200));
    }
}
