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
