//! Live reload (docs/reference.md §6): atomic swaps under load with zero failed requests, rejected
//! configs leave the old one serving, listeners added/removed without a restart.

use crate::common;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::*;

fn mapping(name: &str, prefix: &str, service: &str, extra: &str) -> String {
    format!(
        "{API}\nkind: Mapping\nmetadata: {{ name: {name} }}\nspec:\n  prefix: {prefix}\n  service: {service}\n{extra}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_reloads_under_load_lose_nothing() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let cfg_a = mapping("r", "/", &a.addr.to_string(), "");
    let cfg_b = mapping("r", "/", &b.addr.to_string(), "");
    let p = Portico::start(&cfg_a).await;

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for i in 0..4 {
        let (stop, ok, failed, url) = (
            stop.clone(),
            ok.clone(),
            failed.clone(),
            p.url(&format!("/c{i}")),
        );
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match http_get(&url, &[]).await {
                    Ok(r)
                        if r.status == 200
                            && (r.text() == "upstream a" || r.text() == "upstream b") =>
                    {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        eprintln!("failed request: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let started = std::time::Instant::now();
    let mut generation = 1;
    for i in 0..100 {
        p.write_config(if i % 2 == 0 { &cfg_b } else { &cfg_a });
        let r = post(&p.admin_url("/reload"), "").await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(v["result"], "applied");
        assert!(v["generation"].as_u64().expect("generation") > generation);
        generation = v["generation"].as_u64().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    // Keep the load on for at least 5 s in all.
    if let Some(rest) = Duration::from_secs(5).checked_sub(started.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    // A rejected config: old routes keep answering.
    p.write_config("apiVersion: portico.dev/v1\nkind: Mapping\nmetadata: { name: bad }\nspec: { prefix: /, bogus: 1 }\n");
    let r = post(&p.admin_url("/reload"), "").await;
    assert_eq!(r.status, 400);
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(v["result"], "rejected");
    assert!(
        v["errors"].to_string().contains("unknown field `bogus`"),
        "{v}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client");
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("requests ok={ok} failed={failed}");
    if failed > 0 {
        eprintln!("{}", p.stderr());
    }
    assert_eq!(failed, 0);
    assert!(ok > 400, "too little load: {ok}");
    assert!(a.count() > 0 && b.count() > 0);

    // After the rejection the old config still answers, and /config reports the error.
    assert_eq!(get(&p.url("/x"), &[]).await.status, 200);
    let cfg: serde_json::Value =
        serde_json::from_slice(&get(&p.admin_url("/config"), &[]).await.body).expect("json");
    assert!(
        cfg["last_error"]["errors"].to_string().contains("bogus"),
        "{cfg}"
    );
    // The file watcher may have applied the same files again; never a lower generation.
    assert!(
        cfg["generation"].as_u64().unwrap_or(0) >= generation,
        "{cfg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_change_reload() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let p = Portico::start(&mapping("r", "/", &a.addr.to_string(), "")).await;
    assert_eq!(get(&p.url("/"), &[]).await.text(), "upstream a");

    // A file change is picked up by the watcher.
    p.write_config(&mapping("r", "/", &b.addr.to_string(), ""));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while get(&p.url("/"), &[]).await.text() != "upstream b" {
        assert!(
            std::time::Instant::now() < deadline,
            "file change not applied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGHUP reloads a change the file watcher cannot see: the `-c` file is a hard link to a file
/// in another directory, edited in place through that other name. inotify reports the edit
/// only to watchers of the other directory, so only the signal can pick it up. (The watcher
/// follows symlinks, as Kubernetes ConfigMap mounts need, so a symlink would not hide it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_change_the_watcher_cannot_see() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let hidden = dir.path().join("hidden");
    std::fs::create_dir(&hidden).expect("mkdir");
    let real = hidden.join("real.yaml");
    let write = |service: &str| {
        std::fs::write(
            &real,
            format!("{}---\n{}", listener(port), mapping("r", "/", service, "")),
        )
        .expect("write config")
    };
    write(&a.addr.to_string());
    let link = dir.path().join("portico.yaml");
    std::fs::hard_link(&real, &link).expect("hard link");
    let p = Portico::start_args(port, &["-c".into(), link.display().to_string()]).await;
    assert_eq!(get(&p.url("/"), &[]).await.text(), "upstream a");
    let generation = |v: &serde_json::Value| v["generation"].as_u64().unwrap_or(0);
    let config = || async {
        let r = get(&p.admin_url("/config"), &[]).await;
        serde_json::from_slice::<serde_json::Value>(&r.body).expect("json")
    };
    let before = generation(&config().await);

    // Edit the real file in place. The watcher (debounce 200 ms) must not apply it: wait
    // well past the debounce and check that the old route still answers.
    write(&b.addr.to_string());
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(get(&p.url("/"), &[]).await.text(), "upstream a");
    assert_eq!(generation(&config().await), before);

    p.signal("HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while get(&p.url("/"), &[]).await.text() != "upstream b" {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not reload"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(generation(&config().await), before + 1);
    assert!(
        p.stderr().contains("SIGHUP"),
        "the reload names its trigger: {}",
        p.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_added_and_removed_by_reload() {
    let a = Upstream::start("a").await;
    let p = Portico::start(&mapping("r", "/", &a.addr.to_string(), "")).await;
    let extra = free_port();
    let with_extra = format!(
        "{}---\n{API}\nkind: Listener\nmetadata: {{ name: extra }}\nspec: {{ address: 127.0.0.1, port: {extra} }}\n",
        mapping("r", "/", &a.addr.to_string(), "")
    );
    p.write_config(&with_extra);
    assert_eq!(post(&p.admin_url("/reload"), "").await.status, 200);
    let r = get(&format!("http://127.0.0.1:{extra}/"), &[]).await;
    assert_eq!(r.text(), "upstream a");

    p.write_config(&mapping("r", "/", &a.addr.to_string(), ""));
    assert_eq!(post(&p.admin_url("/reload"), "").await.status, 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", extra)).is_err() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "removed listener still accepts"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(get(&p.url("/"), &[]).await.status, 200);
}

async fn config_json(p: &Portico) -> serde_json::Value {
    serde_json::from_slice(&get(&p.admin_url("/config"), &[]).await.body).expect("json")
}

/// A rejected edit sets `last_error`; the next good reload clears it, and `/config.history`
/// keeps both attempts (newest first) with their trigger, files and result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_reload_clears_last_error_and_history_keeps_both() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let p = Portico::start(&mapping("r", "/", &a.addr.to_string(), "")).await;
    p.write_config("apiVersion: portico.dev/v1\nkind: Mapping\nmetadata: { name: bad }\nspec: { prefix: /, bogus: 1 }\n");
    assert_eq!(post(&p.admin_url("/reload"), "").await.status, 400);
    let c = config_json(&p).await;
    assert!(
        c["last_error"]["errors"].to_string().contains("bogus"),
        "{c}"
    );

    p.write_config(&mapping("r", "/", &b.addr.to_string(), ""));
    let r = post(&p.admin_url("/reload"), "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(get(&p.url("/"), &[]).await.text(), "upstream b");
    let c = config_json(&p).await;
    assert!(
        c["last_error"].is_null(),
        "a good reload must clear it: {c}"
    );
    let h = c["history"].as_array().expect("history");
    // The watcher may add its own entries for the same edits: find ours by result.
    let newest = &h[0];
    assert_eq!(newest["result"], "applied", "{c}");
    assert_eq!(newest["generation"], c["generation"], "{c}");
    assert!(newest["files"].to_string().contains("portico.yaml"), "{c}");
    assert!(newest["at"].is_string(), "{c}");
    let rejected = h
        .iter()
        .find(|e| e["result"] == "rejected")
        .unwrap_or_else(|| panic!("no rejected entry: {c}"));
    assert!(rejected["errors"].to_string().contains("bogus"), "{c}");
    assert!(rejected["trigger"].is_string(), "{c}");
    assert_eq!(h.last().expect("entry")["trigger"], "start", "{c}");
    assert!(h.len() <= 20);
}

/// A new Listener on an address that cannot be bound rejects the whole config: the old
/// routes keep serving, the generation stays, and `/config.last_error` names the address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_bind_failure_rejects_the_whole_config() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let p = Portico::start(&mapping("r", "/", &a.addr.to_string(), "")).await;
    let before = config_json(&p).await["generation"]
        .as_u64()
        .expect("generation");
    // Held by the test (no SO_REUSEPORT), so Portico cannot bind it.
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = held.local_addr().expect("addr").port();
    let cfg = format!(
        "{}---\n{API}\nkind: Listener\nmetadata: {{ name: extra }}\nspec: {{ address: 127.0.0.1, port: {port} }}\n",
        mapping("r", "/", &b.addr.to_string(), "")
    );
    p.write_config(&cfg);
    let r = post(&p.admin_url("/reload"), "").await;
    assert_eq!(r.status, 400, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(v["result"], "rejected", "{v}");
    // Nothing of it applies: the old route still goes to a.
    assert_eq!(get(&p.url("/"), &[]).await.text(), "upstream a");
    let c = config_json(&p).await;
    assert_eq!(c["generation"].as_u64(), Some(before), "{c}");
    let err = c["last_error"]["errors"].to_string();
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{c}");
    assert!(err.to_lowercase().contains("in use"), "{c}");
    assert_eq!(c["history"][0]["result"], "rejected", "{c}");
    drop(held);
}
