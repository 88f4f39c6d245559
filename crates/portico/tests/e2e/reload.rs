//! Live reload (CONTRACT §6): atomic swaps under load with zero failed requests, rejected
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
