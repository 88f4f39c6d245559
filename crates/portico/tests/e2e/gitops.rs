//! GitOps (reference §1 `run --git`/`diff`/`check`, §2.6, §6) with real git repositories made
//! in the test: commits applied within the poll interval, broken commits rejected whole,
//! churn under traffic, `portico diff` between revisions, and an Emissary v3alpha1 corpus
//! (`tests/emissary/`) checked and proxied through real upstreams.

use crate::common;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::Response;
use http_body_util::Full;

/// A git repository in a temp dir, committed to with fixed identities.
struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    fn new() -> Repo {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = Repo { dir };
        r.git(&["init", "--quiet", "--initial-branch=main"]);
        r
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn url(&self) -> String {
        format!("file://{}", self.path().display())
    }

    fn git(&self, args: &[&str]) -> String {
        // Called from async tests: a slow git (a loaded disk) must not hold a runtime worker
        // and the client tasks queued on it, or the test would measure its own stall.
        let run = || {
            Command::new("git")
                .args(["-c", "user.name=t", "-c", "user.email=t@t"])
                .args(args)
                .current_dir(self.path())
                .output()
        };
        let out = match tokio::runtime::Handle::try_current() {
            Ok(_) => tokio::task::block_in_place(run),
            Err(_) => run(),
        }
        .expect("git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Writes `files` (path, content; empty content deletes) and commits; returns the SHA.
    fn commit(&self, files: &[(&str, &str)], msg: &str) -> String {
        for (p, content) in files {
            let path = self.path().join(p);
            if content.is_empty() {
                let _ = std::fs::remove_file(&path);
            } else {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).expect("mkdir");
                }
                std::fs::write(&path, content).expect("write");
            }
        }
        self.git(&["add", "--all", "."]);
        self.git(&["commit", "--quiet", "--allow-empty", "-m", msg]);
        self.git(&["rev-parse", "HEAD"])
    }
}

fn direct(name: &str, prefix: &str, body: &str) -> String {
    format!(
        "{API}\nkind: Mapping\nmetadata: {{ name: {name} }}\nspec:\n  prefix: {prefix}\n  direct_response: {{ status: 200, body: \"{body}\" }}\n"
    )
}

/// Starts portico on `--git repo --poll N` plus a local `-c` file holding the Listener.
async fn start_git(repo: &Repo, extra: &[&str]) -> (Portico, tempfile::TempDir) {
    let port = free_port();
    let local = tempfile::tempdir().expect("tempdir");
    let listener_file = local.path().join("listener.yaml");
    std::fs::write(&listener_file, listener(port)).expect("write");
    let mut args: Vec<String> = vec![
        "-c".into(),
        listener_file.display().to_string(),
        "--git".into(),
        repo.url(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    (Portico::start_args(port, &args).await, local)
}

async fn config(p: &Portico) -> serde_json::Value {
    let r = get(&p.admin_url("/config"), &[]).await;
    serde_json::from_slice(&r.body).expect("config json")
}

/// Polls `url` until its body is `want`; returns how long that took.
async fn wait_body(url: &str, want: &str, limit: Duration) -> Duration {
    wait_until(limit, &format!("`{want}` not served"), async || {
        http_get(url, &[]).await.is_ok_and(|r| r.text() == want)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_commit_applies_within_poll_interval() {
    let repo = Repo::new();
    let sha1 = repo.commit(&[("routes.yaml", &direct("r", "/", "v1"))], "v1");
    let (p, _local) = start_git(&repo, &["--poll", "1"]).await;
    assert_eq!(get(&p.url("/"), &[]).await.text(), "v1");
    let c = config(&p).await;
    assert_eq!(c["source"]["git"], repo.url());
    assert_eq!(c["source"]["commit"], sha1);

    let sha2 = repo.commit(&[("routes.yaml", &direct("r", "/", "v2"))], "v2");
    let took = wait_body(&p.url("/"), "v2", Duration::from_secs(2)).await;
    eprintln!("commit applied after {took:?} (poll 1 s)");
    let c = config(&p).await;
    assert_eq!(c["source"]["commit"], sha2, "{c}");
    assert!(c["last_error"].is_null(), "{c}");
    let files: Vec<&str> = c["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(|r| r["file"].as_str())
        .collect();
    assert!(files.contains(&"routes.yaml"), "{files:?}");

    let m = get(&p.admin_url("/metrics"), &[]).await.text();
    let age = m
        .lines()
        .find_map(|l| l.strip_prefix("portico_config_commit_age_seconds "))
        .and_then(|v| v.parse::<f64>().ok())
        .expect("commit age metric");
    assert!((0.0..120.0).contains(&age), "age {age}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_commit_is_rejected_whole_and_a_fix_applies() {
    let repo = Repo::new();
    repo.commit(
        &[
            ("a.yaml", &direct("a", "/a", "a1")),
            ("b.yaml", &direct("b", "/b", "b1")),
        ],
        "good",
    );
    let (p, _local) = start_git(&repo, &["--poll", "1"]).await;
    assert_eq!(get(&p.url("/a"), &[]).await.text(), "a1");

    // One valid change and one broken file in the same commit: nothing of it applies.
    let bad = repo.commit(
        &[
            ("a.yaml", &direct("a", "/a", "a2")),
            (
                "b.yaml",
                &format!("{API}\nkind: Mapping\nmetadata: {{ name: b }}\nspec:\n  prefix: /b\n  bogus_field: 1\n"),
            ),
        ],
        "broken",
    );
    let err = poll_for(Duration::from_secs(3), "no rejection", async || {
        let c = config(&p).await;
        (c["last_error"]["commit"] == bad).then(|| c["last_error"].clone())
    })
    .await;
    let errors = err["errors"].to_string();
    // Named as in the repository, with the commit (not the private checkout's path).
    let short = &bad[..7];
    assert!(
        errors.contains(&format!(
            "\"b.yaml:6:3 (commit {short}): Mapping/b: unknown field `bogus_field`"
        )),
        "{errors}"
    );
    assert_eq!(get(&p.url("/a"), &[]).await.text(), "a1");
    assert_eq!(get(&p.url("/b"), &[]).await.text(), "b1");
    assert_ne!(config(&p).await["source"]["commit"], bad);

    let fix = repo.commit(&[("b.yaml", &direct("b", "/b", "b3"))], "fix");
    wait_body(&p.url("/b"), "b3", Duration::from_secs(3)).await;
    assert_eq!(get(&p.url("/a"), &[]).await.text(), "a2");
    let c = config(&p).await;
    assert_eq!(c["source"]["commit"], fix);
    assert!(c["last_error"].is_null(), "{c}");
    let m = get(&p.admin_url("/metrics"), &[]).await.text();
    assert!(
        m.contains("portico_config_reloads_total{result=\"rejected\"} 1"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_fetches_now_and_git_path_selects_a_directory() {
    let repo = Repo::new();
    repo.commit(
        &[
            ("deploy/edge/routes.yaml", &direct("r", "/", "one")),
            ("README.yaml", "not: a resource\n"),
        ],
        "one",
    );
    let (p, _local) = start_git(
        &repo,
        &[
            "--poll",
            "60",
            "--git-path",
            "deploy/edge",
            "--git-ref",
            "main",
        ],
    )
    .await;
    assert_eq!(get(&p.url("/"), &[]).await.text(), "one");
    let sha = repo.commit(
        &[("deploy/edge/routes.yaml", &direct("r", "/", "two"))],
        "two",
    );
    let r = post(&p.admin_url("/hooks/git"), "").await;
    assert_eq!(r.status, 202, "{}", r.text());
    let took = wait_body(&p.url("/"), "two", Duration::from_secs(3)).await;
    eprintln!("webhook: applied after {took:?}");
    assert_eq!(config(&p).await["source"]["commit"], sha);
    assert_eq!(config(&p).await["source"]["ref"], "main");

    // POST /reload fetches too.
    repo.commit(
        &[("deploy/edge/routes.yaml", &direct("r", "/", "three"))],
        "three",
    );
    let r = post(&p.admin_url("/reload"), "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(get(&p.url("/"), &[]).await.text(), "three");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_stay_unique_across_local_and_git_sources() {
    let repo = Repo::new();
    repo.commit(&[("routes.yaml", &direct("r", "/", "v1"))], "v1");
    let (p, local) = start_git(&repo, &["--poll", "1"]).await;
    // A second Listener named like the local one, in git: the whole commit is rejected.
    let bad = repo.commit(
        &[
            ("routes.yaml", &direct("r", "/", "v2")),
            ("listener.yaml", &listener(free_port())),
        ],
        "dup",
    );
    let c = poll_for(Duration::from_secs(3), "no rejection", async || {
        let c = config(&p).await;
        (c["last_error"]["commit"] == bad).then_some(c)
    })
    .await;
    assert!(
        c["last_error"]["errors"].to_string().contains("duplicate"),
        "{c}"
    );
    assert_eq!(get(&p.url("/"), &[]).await.text(), "v1");
    drop(local);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_commits_under_traffic_lose_nothing_and_never_mix() {
    let repo = Repo::new();
    // Two routes per commit, both naming the commit: a response must never mix them.
    let cfg = |i: usize| {
        format!(
            "{}---\n{}",
            direct("a", "/a", &format!("commit {i}")),
            direct("b", "/b", &format!("commit {i}"))
        )
    };
    repo.commit(&[("routes.yaml", &cfg(0))], "c0");
    let (p, _local) = start_git(&repo, &["--poll", "1"]).await;

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for c in 0..4 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let urls = [p.url("/a"), p.url("/b")];
        clients.push(tokio::spawn(async move {
            let mut last = 0usize;
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let url = &urls[(n + c) % 2];
                n += 1;
                match http_get(url, &[]).await {
                    Ok(r) if r.status == 200 => {
                        let Some(i) = r
                            .text()
                            .strip_prefix("commit ")
                            .and_then(|i| i.parse::<usize>().ok())
                        else {
                            failed.fetch_add(1, Ordering::Relaxed);
                            continue;
                        };
                        assert!(i >= last, "client {c}: commit {i} after {last}");
                        last = i;
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        eprintln!("failed: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            last
        }));
    }
    let mut shas = Vec::new();
    for i in 1..=10 {
        // Pacing (the point of the test): one commit a second under traffic.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        shas.push(repo.commit(&[("routes.yaml", &cfg(i))], &format!("c{i}")));
    }
    wait_body(&p.url("/a"), "commit 10", Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let last = c.await.expect("client");
        assert_eq!(last, 10);
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(ok.load(Ordering::Relaxed) > 100);
    assert_eq!(config(&p).await["source"]["commit"], shas[9]);
}

/// Clients requesting `url` in a loop until stopped: (ok, failed) counters and their tasks.
fn traffic(
    url: String,
    clients: usize,
) -> (
    Arc<AtomicBool>,
    Arc<AtomicU64>,
    Arc<AtomicU64>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let tasks = (0..clients)
        .map(|_| {
            let (stop, ok, failed, url) = (stop.clone(), ok.clone(), failed.clone(), url.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match http_get(&url, &[]).await {
                        Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                        other => {
                            eprintln!("failed: {other:?}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    (stop, ok, failed, tasks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_remote_keeps_serving_and_reports_the_fetch_error() {
    let repo = Repo::new();
    let sha1 = repo.commit(&[("routes.yaml", &direct("r", "/", "v1"))], "v1");
    let (p, _local) = start_git(&repo, &["--poll", "1"]).await;
    let (stop, ok, failed, tasks) = traffic(p.url("/"), 3);

    // The remote disappears (moved away): fetches fail, the applied commit keeps serving.
    let away = repo.path().with_extension("away");
    std::fs::rename(repo.path(), &away).expect("move the repository away");
    let start = Instant::now();
    let err = poll_for(Duration::from_secs(5), "no fetch error", async || {
        let c = config(&p).await;
        (!c["last_error"].is_null()).then_some(c)
    })
    .await;
    eprintln!("fetch error reported after {:?}", start.elapsed());
    assert_eq!(err["source"]["commit"], sha1, "{err}");
    assert!(err["last_error"]["commit"].is_null(), "{err}");
    let errors = err["last_error"]["errors"].to_string();
    assert!(errors.contains("git fetch failed"), "{errors}");
    // Several more polls fail while traffic flows (the sleep is the span observed).
    let ok_before = ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        ok.load(Ordering::Relaxed) > ok_before + 20,
        "traffic stalled"
    );
    let c = config(&p).await;
    assert_eq!(c["source"]["commit"], sha1);
    assert!(!c["last_error"].is_null(), "{c}");
    assert_eq!(get(&p.url("/"), &[]).await.text(), "v1");

    // Back again: the error clears on the next good fetch, and a new commit applies.
    std::fs::rename(&away, repo.path()).expect("restore the repository");
    wait_until(Duration::from_secs(5), "error not cleared", async || {
        config(&p).await["last_error"].is_null()
    })
    .await;
    let sha2 = repo.commit(&[("routes.yaml", &direct("r", "/", "v2"))], "v2");
    wait_body(&p.url("/"), "v2", Duration::from_secs(3)).await;
    assert_eq!(config(&p).await["source"]["commit"], sha2);

    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("client");
    }
    eprintln!(
        "requests: {} ok, {} failed",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(ok.load(Ordering::Relaxed) > 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_remote_stalls_neither_traffic_nor_admin() {
    use std::os::unix::fs::OpenOptionsExt;
    let repo = Repo::new();
    let sha1 = repo.commit(&[("routes.yaml", &direct("r", "/", "v1"))], "v1");
    let (p, _local) = start_git(&repo, &["--poll", "1"]).await;
    let (stop, ok, failed, tasks) = traffic(p.url("/"), 3);

    // A remote that never answers: its packed-refs is a FIFO nobody writes, so the fetch
    // (git upload-pack listing refs) blocks opening it.
    let fifo = repo.path().join(".git/packed-refs");
    let _ = std::fs::remove_file(&fifo);
    let st = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(st.success());
    // Wait until a fetch is stuck on it: a non-blocking open for writing succeeds only while
    // a reader has it open.
    const O_NONBLOCK: i32 = 0o4000;
    let start = Instant::now();
    let writer = loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(O_NONBLOCK)
            .open(&fifo)
        {
            Ok(w) => break Some(w),
            Err(_) if start.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("no fetch ever reached the remote: {e}"),
        }
    };
    // (The reader stays blocked: it got past open() only because we opened the write end;
    // it now waits in read() until we close it.)
    let hung_at = Instant::now();
    let ok_before = ok.load(Ordering::Relaxed);
    let mut slowest_admin = Duration::ZERO;
    while hung_at.elapsed() < Duration::from_secs(3) {
        let t = Instant::now();
        let c = config(&p).await;
        slowest_admin = slowest_admin.max(t.elapsed());
        assert_eq!(c["source"]["commit"], sha1);
        let t = Instant::now();
        assert_eq!(post(&p.admin_url("/hooks/git"), "").await.status, 202);
        slowest_admin = slowest_admin.max(t.elapsed());
        // Pacing: a few admin calls over the 3 s the fetch hangs.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let served = ok.load(Ordering::Relaxed) - ok_before;
    eprintln!(
        "while the fetch hung 3 s: {served} requests served, slowest admin answer {slowest_admin:?}"
    );
    assert!(served > 100, "traffic stalled: {served}");
    assert!(slowest_admin < Duration::from_secs(1), "{slowest_admin:?}");

    // The remote answers again (EOF on the FIFO, then no FIFO): a new commit applies.
    let _ = std::fs::remove_file(&fifo);
    drop(writer);
    let sha2 = repo.commit(&[("routes.yaml", &direct("r", "/", "v2"))], "v2");
    // Generous: the failed fetch ends, then the next poll forks git again (slow on a
    // loaded machine); the poll-interval bound is `pushed_commit_applies_within_poll_interval`.
    wait_body(&p.url("/"), "v2", Duration::from_secs(15)).await;
    assert_eq!(config(&p).await["source"]["commit"], sha2);

    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("client");
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0);
}

#[test]
fn diff_reports_upstream_and_host_changes_with_exit_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed("api.example.com");
    std::fs::write(dir.path().join("api.pem"), cert).expect("write");
    std::fs::write(dir.path().join("api.key"), key).expect("write");
    let cfg = |endpoints: &str, tls_extra: &str| {
        format!(
            "{API}\nkind: Upstream\nmetadata: {{ name: quote }}\nspec: {{ endpoints: [{endpoints}] }}\n---\n\
             {API}\nkind: Host\nmetadata: {{ name: api }}\nspec: {{ hostname: api.example.com, tls: {{ cert_chain_file: api.pem, private_key_file: api.key{tls_extra} }} }}\n---\n\
             {API}\nkind: Mapping\nmetadata: {{ name: q }}\nspec: {{ prefix: /q/, service: quote }}\n"
        )
    };
    let write = |f: &str, text: &str| std::fs::write(dir.path().join(f), text).expect("write");
    write("old.yaml", &cfg("\"127.0.0.1:9001\"", ""));
    write(
        "new.yaml",
        &cfg(
            "\"127.0.0.1:9001\", \"127.0.0.1:9002\"",
            ", alpn_protocols: http/1.1",
        ),
    );
    write(
        "broken.yaml",
        "apiVersion: portico.dev/v1\nkind: Upstream\n",
    );

    let (code, out, err) = portico_cmd(dir.path(), &["diff", "old.yaml", "new.yaml"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(
            "~ Upstream quote\n    endpoints: 127.0.0.1:9001 -> 127.0.0.1:9001, 127.0.0.1:9002\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("~ Host api\n    tls.alpn_protocols: h2,http/1.1 -> http/1.1\n"),
        "{out}"
    );
    assert!(!out.contains("Mapping"), "{out}");

    let (code, out, err) = portico_cmd(
        dir.path(),
        &["diff", "old.yaml", "new.yaml", "--format", "json"],
    );
    assert_eq!(code, 1, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["equal"], false);
    assert_eq!(
        v["upstreams"]["changed"][0]["fields"]["endpoints"]["new"],
        "127.0.0.1:9001, 127.0.0.1:9002"
    );
    assert_eq!(
        v["hosts"]["changed"][0]["fields"]["tls.alpn_protocols"]["old"],
        "h2,http/1.1"
    );
    assert_eq!(v["routes"]["changed"], serde_json::json!([]));

    let (code, out, _) = portico_cmd(dir.path(), &["diff", "new.yaml", "new.yaml"]);
    assert_eq!((code, out.as_str()), (0, "no differences\n"));
    let (code, out, _) = portico_cmd(
        dir.path(),
        &["diff", "old.yaml", "old.yaml", "--format", "json"],
    );
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).expect("json")["equal"],
        true
    );
    let (code, out, err) = portico_cmd(dir.path(), &["diff", "old.yaml", "broken.yaml"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        err.contains("broken.yaml: configuration does not load"),
        "{err}"
    );
    let (code, _, err) = portico_cmd(dir.path(), &["diff", "old.yaml", "missing.yaml"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn diff_between_revisions_reports_exactly_the_changed_mappings() {
    let repo = Repo::new();
    let m = |name: &str, prefix: &str, extra: &str| {
        format!(
            "{API}\nkind: Mapping\nmetadata: {{ name: {name} }}\nspec:\n  prefix: {prefix}\n  service: 127.0.0.1:9000\n{extra}"
        )
    };
    let files = |b: &str, c: Option<&str>, d: Option<&str>| {
        let mut s = format!("{}---\n{}", m("a", "/a/", ""), m("b", "/b/", b));
        if let Some(c) = c {
            s.push_str("---\n");
            s.push_str(c);
        }
        if let Some(d) = d {
            s.push_str("---\n");
            s.push_str(d);
        }
        s
    };
    let c_doc = m("c", "/c/", "");
    let d_doc = m("d", "/d/", "  rewrite: /\n");
    let r1 = repo.commit(
        &[("cfg/routes.yaml", &files("", Some(&c_doc), None))],
        "one",
    );
    let r2 = repo.commit(
        &[(
            "cfg/routes.yaml",
            &files(
                "  timeout_ms: 5000\n  host_rewrite: b.internal\n",
                None,
                Some(&d_doc),
            ),
        )],
        "two",
    );
    let (code, out, err) = portico_cmd(
        repo.path(),
        &[
            "diff",
            &format!("git:{r1}:cfg"),
            &format!("git:{r2}:cfg"),
            "--format",
            "json",
        ],
    );
    assert_eq!(code, 1, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let names = |k: &str| -> Vec<String> {
        v["routes"][k]
            .as_array()
            .expect("array")
            .iter()
            .map(|x| x["name"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(names("added"), ["d"]);
    assert_eq!(names("removed"), ["c"]);
    assert_eq!(names("changed"), ["b"]);
    let fields = &v["routes"]["changed"][0]["fields"];
    assert_eq!(fields["timeout_ms"]["old"], "15000");
    assert_eq!(fields["timeout_ms"]["new"], "5000");
    assert_eq!(fields["host_rewrite"]["old"], serde_json::Value::Null);
    assert_eq!(fields["host_rewrite"]["new"], "b.internal");
    assert_eq!(fields.as_object().map(|o| o.len()), Some(2), "{fields}");

    // Human format; the same revision twice is equal; a bad revision is an error.
    let (code, out, _) = portico_cmd(
        repo.path(),
        &["diff", &format!("git:{r1}:cfg"), "git:HEAD:cfg"],
    );
    assert_eq!(code, 1);
    assert!(
        out.contains("~ Mapping b") && out.contains("timeout_ms: 15000 -> 5000"),
        "{out}"
    );
    let (code, _, _) = portico_cmd(repo.path(), &["diff", "git:HEAD:cfg", "cfg"]);
    assert_eq!(code, 0);
    let (code, _, err) = portico_cmd(repo.path(), &["diff", "git:nope", "cfg"]);
    assert_eq!(code, 2, "{err}");
    // The repository's own state is untouched.
    assert_eq!(repo.git(&["status", "--porcelain"]), "");
}

// ---------------------------------------------------------------- check

#[test]
fn check_github_format_and_unreachable_route_warnings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("c.yaml");
    std::fs::write(
        &f,
        format!(
            "{API}\nkind: Mapping\nmetadata: {{ name: all }}\nspec: {{ prefix: /api/, service: 127.0.0.1:1 }}\n---\n\
             {API}\nkind: Mapping\nmetadata: {{ name: shadowed }}\nspec: {{ prefix: /api/v2/, service: 127.0.0.1:2, precedence: -1 }}\n---\n\
             {API}\nkind: Mapping\nmetadata: {{ name: with-header }}\nspec: {{ prefix: /api/v3/, service: 127.0.0.1:2, precedence: -1, headers: {{ x: \"1\" }} }}\n"
        ),
    )
    .expect("write");
    let (code, out, _) = portico_cmd(dir.path(), &["check", "c.yaml", "--format", "github"]);
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with(
            "::warning file=c.yaml,line=6,col=1::Mapping/shadowed: never matches: Mapping `all`"
        ),
        "{out}"
    );
    assert!(lines[1].contains("Mapping/with-header"), "{out}");

    // HTTPS-only listener: a Mapping for a hostname no Host serves is never received.
    let (cert, key) = self_signed("www.example.com");
    std::fs::write(dir.path().join("cert.pem"), cert).expect("write");
    std::fs::write(dir.path().join("key.pem"), key).expect("write");
    std::fs::write(
        &f,
        format!(
            "{API}\nkind: Listener\nmetadata: {{ name: tls }}\nspec: {{ port: 8443, protocol: HTTPS }}\n---\n\
             {API}\nkind: Host\nmetadata: {{ name: www }}\nspec: {{ hostname: www.example.com, tls: {{ cert_chain_file: cert.pem, private_key_file: key.pem }} }}\n---\n\
             {API}\nkind: Mapping\nmetadata: {{ name: www }}\nspec: {{ hostname: www.example.com, prefix: /, service: 127.0.0.1:1 }}\n---\n\
             {API}\nkind: Mapping\nmetadata: {{ name: api }}\nspec: {{ hostname: api.example.com, prefix: /, service: 127.0.0.1:1 }}\n"
        ),
    )
    .expect("write");
    let (code, out, _) = portico_cmd(dir.path(), &["check", "c.yaml"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.contains("Mapping/api: warning: never receives traffic"),
        "{out}"
    );

    // Errors in GitHub format.
    std::fs::write(
        &f,
        format!(
            "{API}\nkind: Mapping\nmetadata: {{ name: x }}\nspec: {{ prefix: /, sevice: a:1 }}\n"
        ),
    )
    .expect("write");
    let (code, out, _) = portico_cmd(dir.path(), &["check", "c.yaml", "--format", "github"]);
    assert_eq!(code, 1);
    assert!(out.starts_with("::error file=c.yaml,line=4,col="), "{out}");
    assert!(out.contains("::Mapping/x: unknown field `sevice`"), "{out}");
}

// ---------------------------------------------------------------- Emissary

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/emissary")
}

/// The corpus with `__A__`... replaced by upstream addresses, as one YAML stream.
fn corpus(addrs: &[(&str, String)]) -> String {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("corpus")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut out = String::new();
    for f in files {
        let mut text = std::fs::read_to_string(&f).expect("read");
        for (k, v) in addrs {
            text = text.replace(k, v);
        }
        out.push_str(&text);
        out.push_str("\n---\n");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emissary_corpus_is_accepted_and_behaves_as_documented() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let flaky_n = Arc::new(AtomicUsize::new(0));
    let n2 = flaky_n.clone();
    let c = Upstream::with(
        "c",
        Arc::new(move |_s: &Seen| {
            let n = n2.fetch_add(1, Ordering::Relaxed);
            let mut r = Response::new(Full::new(Bytes::from(format!("try {n}"))));
            if n.is_multiple_of(2) {
                *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
            }
            r
        }),
    )
    .await;
    let d = Upstream::start("d").await;
    // ring_hash over e and e2; least_request over f (holds each request 3 s) and f2.
    let e = Upstream::start("e").await;
    let e2 = Upstream::start("e2").await;
    let f = Controlled::start("f", Duration::from_secs(3)).await;
    let f2 = Controlled::start("f2", Duration::ZERO).await;
    // Behind `max_requests: 1`: holds each request 1.5 s.
    let g = Controlled::start("g", Duration::from_millis(1500)).await;
    let (ws_addr, ws_accepted) = echo_server().await;
    let mut addrs: Vec<(&str, String)> = [
        ("__A__", &a),
        ("__B__", &b),
        ("__C__", &c),
        ("__D__", &d),
        ("__E__", &e),
        ("__E2__", &e2),
    ]
    .iter()
    .map(|(k, u)| (*k, u.addr.to_string()))
    .collect();
    addrs.extend([
        ("__F__", f.addr.to_string()),
        ("__F2__", f2.addr.to_string()),
        ("__G__", g.addr.to_string()),
        ("__WS__", ws_addr.to_string()),
    ]);
    let docs = corpus(&addrs);
    assert!(docs.matches("kind: Mapping").count() >= 25);

    // `portico check` accepts it (warnings only: ambassador_id, the shadowed catalog route).
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("emissary.yaml"), &docs).expect("write");
    let (code, out, _) = portico_cmd(dir.path(), &["check", "emissary.yaml"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.lines().all(|l| l.contains("warning:")), "{out}");
    assert!(out.contains("ambassador_id"), "{out}");
    assert!(
        out.contains("Mapping/catalog-deep: warning: never matches"),
        "{out}"
    );
    // The Emissary load_balancer translates to exactly what the Upstreams say (else: "is
    // ignored: `sessions` is an Upstream resource").
    assert!(!out.contains("is an Upstream resource"), "{out}");
    // Exports with bookkeeping, Lists and foreign kinds (06, 07): one warning per foreign kind.
    assert_eq!(out.matches("kind `Deployment`").count(), 1, "{out}");
    assert!(
        out.contains("Mapping/blog/quote-backend: warning: `resolver`"),
        "{out}"
    );

    let p = Portico::start(&docs).await;
    let seen = |u: &Upstream| u.last();

    // rewrite defaults to "/".
    let r = get(&p.url("/backend/quote?x=1"), &[]).await;
    assert_eq!(r.text(), "upstream a");
    assert_eq!(seen(&a).uri, "/quote?x=1");
    get(&p.url("/keep/quote"), &[]).await;
    assert_eq!(seen(&a).uri, "/keep/quote");
    get(&p.url("/v1/quote"), &[]).await;
    assert_eq!(seen(&a).uri, "/api/v1/quote");
    get(&p.url("/regex-rw/x/y"), &[]).await;
    assert_eq!(seen(&a).uri, "/new/x/y");

    // A List export: the same Mapping name in two namespaces is two routes.
    assert_eq!(get(&p.url("/export/q"), &[]).await.text(), "upstream a");
    assert_eq!(seen(&a).uri, "/q");
    assert_eq!(
        get(&p.url("/export-blog/q"), &[]).await.text(),
        "upstream b"
    );
    // Documented examples: a hostname with a port, :authority, method_regex.
    let r = get(&p.url("/docs-port/"), &[("host", "quote.local:8500")]).await;
    assert_eq!(r.text(), "upstream a");
    let r = get(&p.url("/docs-authority/"), &[("host", "docs.example.com")]).await;
    assert_eq!(r.text(), "upstream a");
    let r = get(&p.url("/docs-read-only/"), &[]).await;
    assert_eq!(r.text(), "upstream a");

    // timeout_ms defaults to 3000.
    get(&p.url("/timeout-default/"), &[]).await;
    let t: u64 = header_map(&seen(&a).headers)["x-portico-expected-timeout-ms"]
        .parse()
        .expect("ms");
    assert!((2000..=3000).contains(&t), "{t}");
    get(&p.url("/timeout-long/"), &[]).await;
    let t: u64 = header_map(&seen(&a).headers)["x-portico-expected-timeout-ms"]
        .parse()
        .expect("ms");
    assert!((9000..=10000).contains(&t), "{t}");

    // host_rewrite, header edits.
    get(&p.url("/host-rewrite/"), &[]).await;
    assert_eq!(header_map(&seen(&a).headers)["host"], "quote.internal");
    let r = get(
        &p.url("/edge-headers/"),
        &[("cookie", "s=1"), ("x-tenant", "evil")],
    )
    .await;
    let h = header_map(&seen(&a).headers);
    assert_eq!(h["x-edge"], "portico");
    assert_eq!(h["x-tenant"], "acme");
    assert!(!h.contains_key("cookie"));
    assert_eq!(r.header("x-served-by"), Some("portico"));
    assert_eq!(r.header("x-upstream"), None);

    // Canary: weight 10 to b, the rest to a.
    let mut to_b = 0;
    for _ in 0..200 {
        if get(&p.url("/checkout/"), &[]).await.text() == "upstream b" {
            to_b += 1;
        }
    }
    assert!((5..=45).contains(&to_b), "canary got {to_b}/200");

    // Header, regex header, regex prefix, exact, method, query, case, hostnames, precedence.
    assert_eq!(
        get(&p.url("/search/"), &[("x-team", "blue")]).await.text(),
        "upstream b"
    );
    assert_eq!(get(&p.url("/search/"), &[]).await.text(), "upstream a");
    assert_eq!(
        get(&p.url("/mobile/"), &[("user-agent", "X Mobile Y")])
            .await
            .text(),
        "upstream b"
    );
    assert_eq!(
        get(&p.url("/mobile/"), &[("user-agent", "desktop")])
            .await
            .status,
        404
    );
    assert_eq!(get(&p.url("/users/42"), &[]).await.text(), "upstream a");
    assert_eq!(seen(&a).uri, "/users/42");
    assert_eq!(get(&p.url("/users/abc"), &[]).await.status, 404);
    assert_eq!(get(&p.url("/healthz"), &[]).await.text(), "upstream a");
    assert_eq!(get(&p.url("/healthz/x"), &[]).await.status, 404);
    assert_eq!(get(&p.url("/upload/"), &[]).await.status, 404);
    let r = send(request("POST", &p.url("/upload/"), &[], "x"), false)
        .await
        .expect("post");
    assert_eq!(r.text(), "upstream a");
    assert_eq!(
        get(&p.url("/report/?debug=1"), &[]).await.text(),
        "upstream b"
    );
    assert_eq!(get(&p.url("/report/"), &[]).await.status, 404);
    assert_eq!(get(&p.url("/docs/x"), &[]).await.text(), "upstream a");
    assert_eq!(
        get(&p.url("/host-only/"), &[("host", "api.example.com")])
            .await
            .text(),
        "upstream a"
    );
    assert_eq!(get(&p.url("/host-only/"), &[]).await.status, 404);
    assert_eq!(
        get(&p.url("/legacy/"), &[("host", "legacy.example.com")])
            .await
            .text(),
        "upstream b"
    );
    assert_eq!(
        get(&p.url("/catalog/deep/x"), &[]).await.text(),
        "upstream b"
    );

    // Retries: every other answer of c is a 503; one retry hides it.
    let r = get(&p.url("/flaky/"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(flaky_n.load(Ordering::Relaxed), 2);

    // Circuit breakers and load balancers reach the upstreams.
    let ups: serde_json::Value =
        serde_json::from_slice(&get(&p.admin_url("/upstreams"), &[]).await.body).expect("json");
    let cb = ups["upstreams"]
        .as_array()
        .expect("upstreams")
        .iter()
        .find(|u| u["name"] == d.addr.to_string())
        .map(|u| u["circuit_breakers"].clone())
        .expect("upstream d");
    assert_eq!(cb["max_requests"], 200);
    assert_eq!(cb["max_pending_requests"], 50);
    assert_eq!(get(&p.url("/orders/"), &[]).await.text(), "upstream d");

    // ring_hash on x-user: each user sticks to one endpoint, the users spread over both.
    let mut by_user = std::collections::BTreeMap::new();
    for u in 0..16 {
        let user = format!("user-{u}");
        let first = get(&p.url("/sessions/"), &[("x-user", &user)]).await.text();
        for _ in 0..3 {
            let again = get(&p.url("/sessions/"), &[("x-user", &user)]).await.text();
            assert_eq!(again, first, "{user} moved");
        }
        by_user.insert(user, first);
    }
    let to_e = by_user.values().filter(|v| *v == "upstream e").count();
    let to_e2 = by_user.values().filter(|v| *v == "upstream e2").count();
    eprintln!("ring_hash: {to_e} users on e, {to_e2} on e2");
    assert_eq!(to_e + to_e2, 16, "{by_user:?}");
    assert!(to_e > 0 && to_e2 > 0, "{by_user:?}");

    // least_request: while f holds a request, new ones go to the idle f2. Requests leave one
    // after another, each given 300 ms before the next (one stuck on f stays in flight);
    // round robin would send f every other one.
    let mut in_flight = Vec::new();
    for _ in 0..20 {
        let url = p.url("/carts/");
        let mut t = tokio::spawn(async move { http_get(&url, &[]).await });
        match tokio::time::timeout(Duration::from_millis(300), &mut t).await {
            Ok(r) => assert_eq!(r.expect("task").expect("carts").status, 200),
            Err(_) => in_flight.push(t),
        }
    }
    eprintln!("least_request: f (busy) {}, f2 {}", f.hits(), f2.hits());
    assert!(
        f.hits() <= 2 && f2.hits() >= 18,
        "least_request: busy f got {}, idle f2 {}",
        f.hits(),
        f2.hits()
    );
    drop(in_flight);

    // Circuit breaker max_requests 1: a second request while one is in flight fails fast.
    let url = p.url("/slow-cb/");
    let first = tokio::spawn(async move { http_get(&url, &[]).await });
    wait_until(
        Duration::from_secs(5),
        "first request never arrived",
        async || g.hits() > 0,
    )
    .await;
    let over = get(&p.url("/slow-cb/"), &[]).await;
    assert_eq!(over.status, 503, "{}", over.text());
    assert_eq!(over.header("x-portico-overloaded"), Some("true"));
    let first = first.await.expect("task").expect("first");
    assert_eq!(first.status, 200);
    assert_eq!(first.text(), "upstream g");
    assert_eq!(g.hits(), 1, "the overflow never reached the upstream");

    // WebSocket: a real upgrade and echo round trip on the allow_upgrade Mapping.
    let mut ws = ws_connect(p.port, "/ws/chat").await.expect("upgrade");
    futures_util::SinkExt::send(
        &mut ws,
        tokio_tungstenite::tungstenite::Message::text("hello emissary"),
    )
    .await
    .expect("send");
    let echo = tokio::time::timeout(
        Duration::from_secs(5),
        futures_util::StreamExt::next(&mut ws),
    )
    .await
    .expect("echo in time")
    .expect("open")
    .expect("message");
    assert_eq!(
        echo,
        tokio_tungstenite::tungstenite::Message::text("hello emissary")
    );
    assert_eq!(ws_accepted.load(Ordering::SeqCst), 1);

    // CORS: preflights are answered by Portico and never reach the upstream.
    let before = a.count();
    let pre = |origin: &str| {
        request(
            "OPTIONS",
            &p.url("/cors/items"),
            &[
                ("origin", origin),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "content-type"),
            ],
            "",
        )
    };
    let r = send(pre("https://admin.example.com"), false)
        .await
        .expect("preflight");
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://admin.example.com")
    );
    assert_eq!(r.header("access-control-allow-methods"), Some("GET, POST"));
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("content-type")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    let r = send(pre("https://evil.example.net"), false)
        .await
        .expect("preflight");
    assert_eq!(r.status, 403);
    assert!(r.header("access-control-allow-origin").is_none());
    assert_eq!(a.count(), before, "preflights never reach the upstream");
    let r = get(
        &p.url("/cors/items"),
        &[("origin", "https://app.example.com")],
    )
    .await;
    assert_eq!(r.text(), "upstream a");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert!(r.headers.get_all("vary").iter().any(|v| v == "origin"));
    let ex: serde_json::Value = serde_json::from_slice(
        &get(
            &p.admin_url(&format!("/explain?method=GET&url={}", p.url("/cors/"))),
            &[],
        )
        .await
        .body,
    )
    .expect("json");
    assert_eq!(ex["route"], "app-cors", "{ex}");
    assert_eq!(ex["policies"]["cors"], true, "{ex}");
    let ex: serde_json::Value = serde_json::from_slice(
        &get(
            &p.admin_url(&format!("/explain?method=GET&url={}", p.url("/flaky/"))),
            &[],
        )
        .await
        .body,
    )
    .expect("json");
    assert_eq!(
        ex["policies"]["retry_policy"]["per_try_timeout_ms"], 500,
        "{ex}"
    );

    // Redirects.
    let r = get(&p.url("/old-site/page?q=1"), &[]).await;
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location"),
        Some("http://www.example.com/old-site/page?q=1")
    );
    let r = get(&p.url("/moved"), &[]).await;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location"),
        Some("http://docs.example.com/new-place")
    );

    // shadow: true becomes the shadow of the Mapping with the same match (the diff against
    // the corpus without the shadow Mapping shows exactly that field).
    let at = docs
        .find("metadata: { name: mirror-shadow }")
        .expect("shadow doc");
    let start = docs[..at].rfind("---").expect("doc start");
    let end = docs[at..].find("---").map_or(docs.len(), |e| at + e);
    let without = format!("{}{}", &docs[..start], &docs[end..]);
    std::fs::write(dir.path().join("without.yaml"), &without).expect("write");
    let (code, out, err) = portico_cmd(
        dir.path(),
        &["diff", "without.yaml", "emissary.yaml", "--format", "json"],
    );
    assert_eq!(code, 1, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let changed = &v["routes"]["changed"];
    assert_eq!(changed.as_array().map(|a| a.len()), Some(1), "{v}");
    assert_eq!(changed[0]["name"], "mirror-live");
    assert_eq!(
        changed[0]["fields"]["shadow"]["new"],
        format!("{} 100%", b.addr)
    );
    assert_eq!(get(&p.url("/mirror/x?m=1"), &[]).await.text(), "upstream a");
    assert_eq!(seen(&a).uri, "/x?m=1");
    // The shadow upstream gets its copy (after the primary exchange), host `-shadow`.
    let copy = poll_for(
        Duration::from_secs(5),
        "the shadow never got its copy",
        async || {
            b.seen
                .lock()
                .expect("seen")
                .iter()
                .find(|s| s.uri == "/x?m=1")
                .cloned()
        },
    )
    .await;
    // As Envoy does: `-shadow` after the host name, before the port.
    assert_eq!(
        header_map(&copy.headers)["host"],
        format!("127.0.0.1-shadow:{}", p.port)
    );
}

#[test]
fn emissary_module_hosts_secrets_and_unsupported_kinds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("e.yaml");
    let em = "apiVersion: getambassador.io/v3alpha1";
    // A real certificate and key, base64 in the Secret (TLS files are validated).
    let (cert, key) = self_signed("api.example.com");
    let (crt64, key64) = (base64(cert.as_bytes()), base64(key.as_bytes()));
    std::fs::write(
        &f,
        format!(
            "{em}\nkind: Module\nmetadata: {{ name: ambassador }}\nspec:\n  config:\n    cluster_request_timeout_ms: 7000\n    retry_policy: {{ retry_on: \"gateway-error,connect-failure\", num_retries: 3, per_try_timeout: 250ms }}\n    cors: {{ origins: \"https://app.example.com,https://admin.example.com\", methods: [GET, POST], headers: content-type, credentials: true, max_age: \"300\" }}\n    load_balancer: {{ policy: ring_hash, header: x-user }}\n    circuit_breakers: [{{ max_requests: 7, max_connections: 9 }}]\n    diagnostics: {{ enabled: false }}\n---\n\
             {em}\nkind: Mapping\nmetadata: {{ name: m }}\nspec: {{ prefix: /m/, service: quote }}\n---\n\
             {em}\nkind: Mapping\nmetadata: {{ name: own }}\nspec:\n  prefix: /own/\n  service: own:8080\n  timeout_ms: 100\n  retry_policy: {{ retry_on: 5xx, num_retries: 1 }}\n  cors: {{ origins: [\"https://other.example.com\"], methods: [PUT] }}\n  load_balancer: {{ policy: least_request }}\n  circuit_breakers: [{{ max_requests: 2 }}]\n---\n\
             {em}\nkind: Host\nmetadata: {{ name: h }}\nspec:\n  hostname: api.example.com\n  acmeProvider: {{ authority: none }}\n  tlsSecret: {{ name: api-cert }}\n  requestPolicy: {{ insecure: {{ action: Reject }} }}\n---\n\
             apiVersion: v1\nkind: Secret\nmetadata: {{ name: api-cert }}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {crt64}\n  tls.key: {key64}\n---\n\
             {em}\nkind: Listener\nmetadata: {{ name: l }}\nspec: {{ port: 8443, protocol: HTTPS, securityModel: XFP, hostBinding: {{ namespace: {{ from: ALL }} }} }}\n---\n\
             {em}\nkind: KubernetesEndpointResolver\nmetadata: {{ name: endpoint }}\nspec: {{}}\n"
        ),
    )
    .expect("write");
    let (code, out, err) = portico_cmd(dir.path(), &["check", "e.yaml", "--format", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let diags: serde_json::Value = serde_json::from_str(&out).expect("json");
    let text = diags.to_string();
    assert!(text.contains("KubernetesEndpointResolver"), "{text}");
    assert!(text.contains("diagnostics"), "{text}");
    assert!(
        diags
            .as_array()
            .expect("array")
            .iter()
            .all(|d| d["severity"] == "warning"),
        "{text}"
    );
    // Module defaults, and Emissary's own, as explain shows them: field by field.
    let explain = |url: &str| -> serde_json::Value {
        let (code, out, err) = portico_cmd(
            dir.path(),
            &["explain", "-c", "e.yaml", "GET", url, "--format", "json"],
        );
        assert_eq!(code, 0, "{out}{err}");
        serde_json::from_str::<serde_json::Value>(&out).expect("json")["policies"].clone()
    };
    use serde_json::json;
    let m = explain("http://x/m/a");
    assert_eq!(m["timeout_ms"], 7000, "{m}");
    assert_eq!(
        m["retry_policy"],
        json!({ "retry_on": ["gateway-error", "connect-failure"], "num_retries": 3, "per_try_timeout_ms": 250 }),
    );
    assert_eq!(
        m["cors_policy"],
        json!({
            "origins": ["https://app.example.com", "https://admin.example.com"],
            "methods": ["GET", "POST"],
            "headers": ["content-type"],
            "exposed_headers": [],
            "credentials": true,
            "max_age": 300,
        }),
    );
    assert_eq!(
        m["load_balancer"],
        json!({ "policy": "ring_hash", "hash_on": { "header": "x-user" }, "healthy_panic_threshold": 50 }),
    );
    // Fields the Module leaves out keep Emissary's (Envoy's) defaults.
    assert_eq!(
        m["circuit_breakers"],
        json!({ "max_connections": 9, "max_pending_requests": 1024, "max_requests": 7, "max_retries": 3 }),
    );
    // A Mapping that sets them overrides every one (no merging with the Module's).
    let own = explain("http://x/own/a");
    assert_eq!(own["timeout_ms"], 100, "{own}");
    assert_eq!(
        own["retry_policy"],
        json!({ "retry_on": ["5xx"], "num_retries": 1, "per_try_timeout_ms": null }),
    );
    assert_eq!(
        own["cors_policy"],
        json!({
            "origins": ["https://other.example.com"],
            "methods": ["PUT"],
            "headers": [],
            "exposed_headers": [],
            "credentials": false,
            "max_age": null,
        }),
    );
    assert_eq!(
        own["load_balancer"],
        json!({ "policy": "least_request", "hash_on": null, "healthy_panic_threshold": 50 }),
    );
    assert_eq!(
        own["circuit_breakers"],
        json!({ "max_connections": 1024, "max_pending_requests": 1024, "max_requests": 2, "max_retries": 3 }),
    );

    // Security kinds and unsupported fields are errors naming them.
    std::fs::write(
        &f,
        format!(
            "{em}\nkind: Filter\nmetadata: {{ name: filt }}\nspec: {{ OAuth2: {{}} }}\n---\n\
             {em}\nkind: Mapping\nmetadata: {{ name: m }}\nspec: {{ prefix: /m/, service: quote, not_a_field: true }}\n"
        ),
    )
    .expect("write");
    let (code, out, _) = portico_cmd(dir.path(), &["check", "e.yaml"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("Filter/filt: Filter is not supported"),
        "{out}"
    );
    assert!(
        out.contains("Mapping/m: unknown field `not_a_field`"),
        "{out}"
    );
}

/// A self-signed certificate and its key (PEM) for `name`.
fn self_signed(name: &str) -> (String, String) {
    let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).expect("rcgen");
    (ck.cert.pem(), ck.signing_key.serialize_pem())
}

/// A broken first commit: `run --git` refuses to start, and its messages name the file as it is
/// in the repository, with the commit, not the private checkout's path.
#[test]
fn broken_first_commit_names_the_repository_file_and_commit() {
    let repo = Repo::new();
    let bad = repo.commit(
        &[(
            "portico.yaml",
            &format!("{API}\nkind: Mapping\nmetadata: {{ name: b }}\nspec:\n  prefix: /b\n  bogus_field: 1\n"),
        )],
        "broken",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(portico_bin())
        .args(["run", "--admin", "127.0.0.1:0", "--git", &repo.url()])
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .output()
        .expect("run portico");
    assert!(
        !out.status.success(),
        "a broken first commit must not start"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let short = &bad[..7];
    assert!(
        stderr.contains(&format!(
            "portico.yaml:6:3 (commit {short}): Mapping/b: unknown field `bogus_field`"
        )),
        "{stderr}"
    );
    assert!(
        !stderr.contains("portico-git"),
        "checkout path leaked: {stderr}"
    );
}
