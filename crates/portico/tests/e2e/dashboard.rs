//! The live dashboard (`GET /` on the admin API) and its data (`GET /stats`), rendered in a real
//! headless browser (Debian's `chromium`) against a live proxy. Without chromium the browser
//! part is skipped with a message (`scripts/test.sh` installs it).

use crate::common;
use common::*;

use std::path::Path;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The `<tr data-route="NAME">…</tr>` element of the dumped DOM.
fn route_row<'a>(dom: &'a str, name: &str) -> &'a str {
    let start = dom
        .find(&format!("<tr data-route=\"{name}\">"))
        .or_else(|| dom.find(&format!("<tr data-route=\"{name}\" ")))
        .unwrap_or_else(|| panic!("route {name} not in the dashboard:\n{dom}"));
    let end = dom[start..].find("</tr>").expect("row end") + start;
    &dom[start..end]
}

/// The `data-value` of the cell with class `class` in `row`.
fn cell_value(row: &str, class: &str) -> f64 {
    let at = row
        .find(&format!("class=\"{class}\" data-value=\""))
        .unwrap_or_else(|| panic!("no {class} cell in {row}"));
    let rest = &row[at..];
    let v = rest.split("data-value=\"").nth(1).expect("value");
    let v = &v[..v.find('"').expect("quote")];
    v.parse()
        .unwrap_or_else(|_| panic!("{class} has no number ({v:?}) in {row}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashboard_renders_live_data_in_headless_chromium() {
    let quotes = Upstream::start("quotes").await;
    let users = Upstream::start("users").await;
    let dead = free_port();
    let p = Portico::start(&format!(
        "{API}\nkind: Mapping\nmetadata: {{ name: quotes }}\nspec: {{ prefix: /quotes/, service: {} }}\n---\n\
         {API}\nkind: Mapping\nmetadata: {{ name: users }}\nspec: {{ prefix: /users/, service: {} }}\n---\n\
         {API}\nkind: Mapping\nmetadata: {{ name: legacy }}\nspec: {{ prefix: /legacy/, service: \"127.0.0.1:{dead}\" }}\n",
        quotes.addr, users.addr
    ))
    .await;

    const NQ: u64 = 40;
    const NU: u64 = 25;
    const NL: u64 = 3;
    for i in 0..NQ {
        assert_eq!(get(&p.url(&format!("/quotes/{i}")), &[]).await.status, 200);
    }
    for i in 0..NU {
        assert_eq!(get(&p.url(&format!("/users/{i}")), &[]).await.status, 200);
    }
    for i in 0..NL {
        assert_eq!(get(&p.url(&format!("/legacy/{i}")), &[]).await.status, 503);
    }

    assert_eq!(get(&p.url("/nowhere"), &[]).await.status, 404);

    // The JSON behind the page.
    let stats: serde_json::Value =
        serde_json::from_str(&get(&p.admin_url("/stats"), &[]).await.text()).expect("json");
    assert_eq!(stats["generation"], 1);
    assert!(stats["source"]["paths"].is_array(), "{stats}");
    assert!(stats["last_error"].is_null(), "{stats}");
    assert!(stats["applied_at"].is_string(), "{stats}");
    let route = |name: &str| {
        stats["routes"]
            .as_array()
            .expect("routes")
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no route {name} in {stats}"))
            .clone()
    };
    let q = route("quotes");
    assert_eq!(q["total"], NQ);
    assert_eq!(q["requests"]["2xx"], NQ);
    assert_eq!(q["errors"], 0);
    assert!(q["p50_ms"].as_f64().expect("p50") > 0.0, "{q}");
    assert!(q["p99_ms"].as_f64().expect("p99") >= q["p50_ms"].as_f64().expect("p50"));
    assert_eq!(q["active"], 0);
    assert_eq!(route("users")["total"], NU);
    let l = route("legacy");
    assert_eq!(l["errors"], NL);
    assert_eq!(l["requests"]["5xx"], NL);
    assert_eq!(stats["unmatched"]["total"], 1, "{stats}");
    let ups = stats["upstreams"].as_array().expect("upstreams");
    let eps: Vec<&str> = ups
        .iter()
        .flat_map(|u| u["endpoints"].as_array().expect("endpoints"))
        .map(|e| e["address"].as_str().expect("address"))
        .collect();
    assert!(eps.contains(&quotes.addr.to_string().as_str()), "{stats}");
    assert!(eps.contains(&users.addr.to_string().as_str()), "{stats}");

    // A rejected reload: the old config keeps serving, and the page must show the error.
    p.write_config(&format!(
        "{API}\nkind: Mapping\nmetadata: {{ name: quotes }}\nspec: {{ prefix: /quotes/, service: {}, bogus_field: 1 }}\n",
        quotes.addr
    ));
    assert_eq!(post(&p.admin_url("/reload"), "").await.status, 400);
    let stats: serde_json::Value =
        serde_json::from_str(&get(&p.admin_url("/stats"), &[]).await.text()).expect("json");
    assert_eq!(stats["generation"], 1, "{stats}");
    let reload_error = stats["last_error"]["errors"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no last_error in {stats}"))
        .to_string();
    assert!(reload_error.contains("bogus_field"), "{reload_error}");

    // The page: one self-contained document.
    let page = get(&p.admin_url("/"), &[]).await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap_or("")
            .starts_with("text/html")
    );
    let html = page.text();
    assert!(html.contains("<script>") && html.contains("<style>"));
    for external in ["<script src", "<link", "@import", "url(http"] {
        assert!(
            !html.contains(external),
            "page loads an external asset: {external}"
        );
    }

    if !Path::new(CHROMIUM).exists() {
        eprintln!(
            "SKIP browser part of dashboard test: {CHROMIUM} not installed \
             (apt-get install chromium; scripts/test.sh does it when run as root)"
        );
        return;
    }

    // Keep traffic flowing while the browser polls, so the page has rates to show.
    let running = Arc::new(AtomicBool::new(true));
    let traffic = {
        let running = running.clone();
        let (uq, uu) = (p.url("/quotes/live"), p.url("/users/live"));
        tokio::spawn(async move {
            let mut n = 0u64;
            while running.load(Ordering::Relaxed) {
                let _ = http_get(&uq, &[]).await;
                if n.is_multiple_of(3) {
                    let _ = http_get(&uu, &[]).await;
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    let url = p.admin_url("/");
    let dom = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || chromium(&url, &["--dump-dom".to_string()]))
            .await
            .expect("chromium thread")
    };
    let shot = target_dir().join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    {
        let flags = vec![
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,900".to_string(),
        ];
        tokio::task::spawn_blocking(move || chromium(&url, &flags))
            .await
            .expect("chromium thread");
    }
    running.store(false, Ordering::Relaxed);
    let _ = traffic.await;

    // The script ran and filled the page from /stats.
    assert!(
        dom.contains("data-loaded=\"true\""),
        "page never loaded /stats:\n{dom}"
    );
    assert!(dom.contains("id=\"generation\">1<"), "{dom}");
    assert!(
        dom.contains(&format!("data-endpoint=\"{}\"", quotes.addr)),
        "{dom}"
    );
    assert!(
        dom.contains(&format!("data-endpoint=\"{}\"", users.addr)),
        "{dom}"
    );
    assert!(dom.contains("class=\"state healthy\""), "{dom}");
    let error_box = &dom[dom.find("id=\"last-error\"").expect("last-error box")..];
    let error_box = &error_box[..error_box.find("</section>").expect("box end")];
    assert!(error_box.contains("class=\"bad\""), "{error_box}");
    assert!(error_box.contains("bogus_field"), "{error_box}");
    for (name, at_least) in [("quotes", NQ), ("users", NU)] {
        let row = route_row(&dom, name);
        assert!(
            row.contains(&format!("<td class=\"name\">{name}</td>")),
            "{row}"
        );
        assert!(cell_value(row, "total") >= at_least as f64, "{row}");
        assert!(cell_value(row, "p50") > 0.0, "{row}");
        assert!(cell_value(row, "p99") > 0.0, "{row}");
    }
    // Rates come from the difference between two polls: at least one was computed.
    let quotes_row = route_row(&dom, "quotes");
    assert!(
        cell_value(quotes_row, "rate") >= 0.0,
        "no request rate after two polls: {quotes_row}"
    );
    let legacy = route_row(&dom, "legacy");
    assert_eq!(cell_value(legacy, "total"), NL as f64, "{legacy}");
    assert!(
        legacy.contains(&format!("<td class=\"code-5xx\">{NL}</td>")),
        "{legacy}"
    );

    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "bad screenshot"
    );
    eprintln!("dashboard screenshot: {}", shot.display());
}

/// The `points` of the chart polyline of `route` in the SVG `chart` of the dumped DOM.
fn chart_line(dom: &str, chart: &str, route: &str) -> (String, f64) {
    let svg = &dom[dom
        .find(&format!("id=\"{chart}\""))
        .unwrap_or_else(|| panic!("no {chart} in\n{dom}"))..];
    let svg = &svg[..svg.find("</svg>").expect("svg end")];
    let at = svg
        .find(&format!("data-route=\"{route}\""))
        .unwrap_or_else(|| panic!("no line for {route} in {svg}"));
    let el = &svg[at..];
    let el = &el[..el.find('>').expect("element end")];
    let attr = |name: &str| {
        let v = el
            .split(&format!("{name}=\""))
            .nth(1)
            .unwrap_or_else(|| panic!("no {name} in {el}"));
        v[..v.find('"').expect("quote")].to_string()
    };
    let last = attr("data-last").parse().unwrap_or(0.0);
    (attr("points"), last)
}

async fn stats(p: &Portico) -> serde_json::Value {
    serde_json::from_str(&get(&p.admin_url("/stats"), &[]).await.text()).expect("json")
}

/// Waits (bounded) until `/stats` satisfies `ok`.
async fn wait_stats(p: &Portico, what: &str, ok: impl Fn(&serde_json::Value) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let s = stats(p).await;
        if ok(&s) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn dump(url: String) -> String {
    chromium(&url, &["--dump-dom".to_string()])
}

/// The charts plot the server's 5-minute series with labelled axes and change under traffic;
/// an upstream refusing every connection shows its failures and that nothing probes it; the
/// requests matching no route have their own row; the explain box answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashboard_charts_failures_unmatched_and_explain() {
    let quotes = Upstream::start("quotes").await;
    let dead = free_port();
    let p = Portico::start(&format!(
        "{API}\nkind: Mapping\nmetadata: {{ name: quotes }}\nspec: {{ prefix: /quotes/, service: {} }}\n---\n\
         {API}\nkind: Mapping\nmetadata: {{ name: legacy }}\nspec: {{ prefix: /legacy/, service: \"127.0.0.1:{dead}\" }}\n---\n\
         {API}\nkind: Mapping\nmetadata: {{ name: quotes-v2 }}\nspec: {{ prefix: /quotes/v2/, service: {} }}\n",
        quotes.addr, quotes.addr
    ))
    .await;
    // A quiet interval first: the quotes series has a point and it is zero.
    wait_stats(&p, "no quiet sample", |s| {
        s["series"]["routes"]["quotes"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    })
    .await;
    for i in 0..3 {
        assert_eq!(get(&p.url(&format!("/legacy/{i}")), &[]).await.status, 503);
    }
    for i in 0..2 {
        assert_eq!(get(&p.url(&format!("/nowhere/{i}")), &[]).await.status, 404);
    }
    // The JSON: the dead upstream's failures are counted, with no health check configured.
    let s = stats(&p).await;
    let legacy_up = s["upstreams"]
        .as_array()
        .expect("upstreams")
        .iter()
        .find(|u| u["endpoints"].to_string().contains(&format!(":{dead}")))
        .unwrap_or_else(|| panic!("no dead upstream in {s}"))
        .clone();
    assert!(
        legacy_up["connect_failures_recent"].as_u64() >= Some(3),
        "{s}"
    );
    assert_eq!(legacy_up["health_checks"], 0, "{s}");
    assert_eq!(s["unmatched"]["total"], 2, "{s}");
    assert_eq!(s["unmatched"]["requests"]["4xx"], 2, "{s}");

    if !Path::new(CHROMIUM).exists() {
        eprintln!("SKIP browser part: {CHROMIUM} not installed (apt-get install chromium)");
        return;
    }
    let page = p.admin_url("/");
    let before = tokio::task::spawn_blocking({
        let u = page.clone();
        move || dump(u)
    })
    .await
    .expect("chromium");
    assert!(before.contains("data-loaded=\"true\""), "{before}");
    let (points_before, last_before) = chart_line(&before, "chart-rate", "quotes");
    assert_eq!(
        last_before, 0.0,
        "quotes had no traffic yet: {points_before}"
    );
    // Axes are labelled: the value axis says what it measures, the time axis spans 5 minutes.
    for label in [
        "requests / s",
        "p99 latency (ms)",
        "time (last 5 minutes",
        "−5 min",
        ">now<",
    ] {
        assert!(
            before.contains(label),
            "no {label:?} on the charts:\n{before}"
        );
    }

    // Traffic, until the server's series has a non-zero point for quotes.
    let running = Arc::new(AtomicBool::new(true));
    let traffic = {
        let running = running.clone();
        let u = p.url("/quotes/live");
        tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                let _ = http_get(&u, &[]).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    wait_stats(&p, "no traffic in the series", |s| {
        s["series"]["routes"]["quotes"]
            .as_array()
            .and_then(|a| a.last())
            .and_then(|pt| pt[1].as_f64())
            .is_some_and(|r| r > 1.0)
    })
    .await;
    // The traffic goes on while the browser loads the page: stopped before, a sample taken
    // in between could plot a quiet last point (seen once under load).
    let explain_url = format!("{page}#explain=GET%20http%3A%2F%2Fexample.com%2Fquotes%2F7");
    let after = tokio::task::spawn_blocking(move || dump(explain_url))
        .await
        .expect("chromium");
    running.store(false, Ordering::Relaxed);
    let _ = traffic.await;
    let (points_after, last_after) = chart_line(&after, "chart-rate", "quotes");
    assert_ne!(
        points_before, points_after,
        "the plotted points did not change"
    );
    assert!(last_after > 1.0, "rate under traffic: {last_after}");
    // The top of the value axis follows the data: its highest point is plotted above the
    // baseline (a smaller y in SVG coordinates) than the quiet points.
    let ys = |pts: &str| -> Vec<f64> {
        pts.split_whitespace()
            .filter_map(|xy| xy.split(',').nth(1).and_then(|y| y.parse().ok()))
            .collect()
    };
    let min_after = ys(&points_after).into_iter().fold(f64::MAX, f64::min);
    let min_before = ys(&points_before).into_iter().fold(f64::MAX, f64::min);
    assert!(min_after < min_before, "{points_before} -> {points_after}");
    let (p99_points, _) = chart_line(&after, "chart-p99", "quotes");
    assert!(!p99_points.is_empty(), "no p99 plotted");

    // The refused upstream is not plain "healthy".
    let card = &after[after
        .find("data-failing=\"true\"")
        .unwrap_or_else(|| panic!("no failing upstream card:\n{after}"))..];
    let card = &card[..card.find("</table>").expect("card end")];
    assert!(card.contains("connect failure"), "{card}");
    assert!(card.contains("No health check configured"), "{card}");
    assert!(card.contains(&format!(":{dead}")), "{card}");
    assert!(card.contains("class=\"state failing\""), "{card}");

    // The unmatched requests' row.
    let nr = route_row(&after, "(no route)");
    assert!(nr.contains("no route (404 NR)"), "{nr}");
    assert_eq!(cell_value(nr, "total"), 2.0, "{nr}");

    // The explain box answered for the request in the link.
    let ex = &after[after.find("id=\"explain-result\"").expect("explain box")..];
    let ex = &ex[..ex.find("</section>").expect("box end")];
    assert!(ex.contains("data-route=\"quotes\""), "{ex}");
    assert!(ex.contains("Route quotes"), "{ex}");
    assert!(ex.contains("timeout: 15000 ms"), "{ex}");
    assert!(ex.contains("quotes-v2: "), "why not quotes-v2: {ex}");
}
