//! Metrics (docs/reference.md §8) and the admin API views (§7) against live traffic.

use crate::common;
use common::*;

/// The value of one exact series line in a Prometheus text page.
fn series(page: &str, line_prefix: &str) -> f64 {
    page.lines()
        .find_map(|l| {
            l.strip_prefix(line_prefix)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no series {line_prefix}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_counters_histograms_and_flags() {
    let up = Upstream::start("a").await;
    let dead = free_port();
    let p = Portico::start(&cfg::docs(&[
        cfg::mapping("ok").prefix("/ok/").service(&up),
        cfg::mapping("down")
            .prefix("/down/")
            .service(format!("127.0.0.1:{dead}")),
    ]))
    .await;
    let page = get(&p.admin_url("/metrics"), &[]).await.text();
    // Series exist at 0 as soon as the route and upstream do.
    assert_eq!(
        series(&page, "portico_requests_total{route=\"ok\",code=\"2xx\"}"),
        0.0
    );
    assert_eq!(
        series(
            &page,
            &format!(
                "portico_upstream_requests_total{{upstream=\"{}\",code=\"2xx\"}}",
                up.addr
            )
        ),
        0.0
    );
    assert_eq!(series(&page, "portico_config_generation"), 1.0);

    const N: usize = 37;
    for i in 0..N {
        assert_eq!(get(&p.url(&format!("/ok/{i}")), &[]).await.status, 200);
    }
    assert_eq!(get(&p.url("/down/x"), &[]).await.status, 503);
    assert_eq!(get(&p.url("/nothing"), &[]).await.status, 404);

    let page = get(&p.admin_url("/metrics"), &[]).await.text();
    assert_eq!(
        series(&page, "portico_requests_total{route=\"ok\",code=\"2xx\"}"),
        N as f64
    );
    assert_eq!(
        series(
            &page,
            "portico_request_duration_seconds_count{route=\"ok\"}"
        ),
        N as f64
    );
    assert_eq!(
        series(
            &page,
            "portico_request_duration_seconds_bucket{route=\"ok\",le=\"+Inf\"}"
        ),
        N as f64
    );
    assert_eq!(
        series(
            &page,
            &format!(
                "portico_upstream_requests_total{{upstream=\"{}\",code=\"2xx\"}}",
                up.addr
            )
        ),
        N as f64
    );
    assert_eq!(
        series(&page, "portico_requests_total{route=\"down\",code=\"5xx\"}"),
        1.0
    );
    assert!(
        series(
            &page,
            &format!("portico_upstream_connect_failures_total{{upstream=\"127.0.0.1:{dead}\"}}")
        ) >= 1.0
    );
    assert_eq!(
        series(
            &page,
            "portico_requests_total{route=\"(no_route)\",code=\"4xx\"}"
        ),
        1.0
    );
    assert!(series(&page, "portico_downstream_connections{listener=\"main\"}") >= 0.0);
    assert_eq!(
        series(&page, "portico_config_reloads_total{result=\"rejected\"}"),
        0.0
    );

    let log = p.wait_log_lines(N + 2).await;
    let down = log
        .iter()
        .find(|l| l["route"] == "down")
        .expect("down line");
    assert_eq!(down["flags"], "UF");
    assert_eq!(down["status"], 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_views_and_explain_agree_with_traffic() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let p = Portico::start(&cfg::docs(&[
        cfg::mapping("api")
            .prefix("/api/")
            .service(&a)
            .rewrite("/v2/"),
        cfg::mapping("canary")
            .prefix("/api/")
            .service(&b)
            .headers(&[("x-canary", "1")]),
    ]))
    .await;
    let routes: serde_json::Value =
        serde_json::from_slice(&get(&p.admin_url("/routes"), &[]).await.body).expect("json");
    let names: Vec<&str> = routes["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, ["canary", "api"], "more header matches first");

    let url = format!("http://x:{}/api/users?id=1", p.port);
    let enc = |s: &str| {
        s.replace(':', "%3A")
            .replace('/', "%2F")
            .replace('?', "%3F")
            .replace('=', "%3D")
    };
    let ex: serde_json::Value = serde_json::from_slice(
        &get(
            &p.admin_url(&format!("/explain?method=GET&url={}", enc(&url))),
            &[],
        )
        .await
        .body,
    )
    .expect("json");
    assert_eq!(ex["route"], "api");
    assert_eq!(ex["rewritten_path"], "/v2/users?id=1");
    assert_eq!(ex["rejected"][0]["route"], "canary");
    assert!(
        ex["rejected"][0]["reason"]
            .as_str()
            .expect("reason")
            .contains("x-canary")
    );
    // And the proxy does what explain said.
    assert_eq!(
        get(&p.url("/api/users?id=1"), &[]).await.text(),
        "upstream a"
    );
    assert_eq!(a.last().uri, "/v2/users?id=1");

    let ex: serde_json::Value = serde_json::from_slice(
        &get(
            &p.admin_url(&format!(
                "/explain?method=GET&url={}&header=x-canary%3A1",
                enc(&url)
            )),
            &[],
        )
        .await
        .body,
    )
    .expect("json");
    assert_eq!(ex["route"], "canary");

    let ups: serde_json::Value =
        serde_json::from_slice(&get(&p.admin_url("/upstreams"), &[]).await.body).expect("json");
    let first = &ups["upstreams"][0];
    assert!(
        first["endpoints"][0]["address"]
            .as_str()
            .expect("address")
            .starts_with("127.0.0.1:")
    );
    assert_eq!(first["endpoints"][0]["state"], "healthy");
    assert_eq!(first["circuit_breakers"]["max_requests"], 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_file_is_reopened_on_sigusr1() {
    let up = Upstream::start("a").await;
    let p = Portico::start(&cfg::catch_all("api", &up).build()).await;
    for i in 0..5 {
        assert_eq!(get(&p.url(&format!("/before/{i}")), &[]).await.status, 200);
    }
    assert_eq!(p.wait_log_lines(5).await.len(), 5);
    // logrotate's "create" mode: rename, then signal.
    let rotated = p.access_log.with_extension("log.1");
    std::fs::rename(&p.access_log, &rotated).expect("rename");
    p.signal("USR1");
    // Until the signal is handled lines still go to the renamed file; poll until one lands in
    // the new file, then check that no line was lost or written twice.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut sent = 0;
    while p.access_log().is_empty() {
        assert!(std::time::Instant::now() < deadline, "log never reopened");
        assert_eq!(
            get(&p.url(&format!("/after/{sent}")), &[]).await.status,
            200
        );
        sent += 1;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for i in 0..5 {
        assert_eq!(get(&p.url(&format!("/later/{i}")), &[]).await.status, 200);
    }
    // The writer is asynchronous: wait until the last request's line is in the new file
    // (how many of the `/after/` lines it holds is not known in advance).
    let written = eventually(std::time::Duration::from_secs(5), async || {
        p.access_log().iter().any(|l| l["path"] == "/later/4")
    })
    .await;
    let new = p.access_log();
    assert!(written, "{new:?}");
    let old: Vec<serde_json::Value> = std::fs::read_to_string(&rotated)
        .expect("rotated file")
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let paths = |v: &[serde_json::Value]| -> Vec<String> {
        v.iter()
            .filter_map(|l| l["path"].as_str().map(str::to_string))
            .collect()
    };
    let (old, new) = (paths(&old), paths(&new));
    assert!(
        old.iter().take(5).all(|p| p.starts_with("/before/")),
        "{old:?}"
    );
    assert!(new.iter().all(|p| !p.starts_with("/before/")), "{new:?}");
    assert!(
        new.iter().filter(|p| p.starts_with("/later/")).count() == 5,
        "{new:?}"
    );
    assert_eq!(
        old.len() + new.len(),
        5 + sent + 5,
        "old {old:?} new {new:?}"
    );
}
