//! `portico proxy` (the one-line reverse proxy), `--print-config`, its flag errors, and the rest
//! of the command line's packaging surface (completions, help text, version, log colours),
//! through the real binary.

use crate::common;

use std::process::{Command, Stdio};

use common::*;

/// Starts `portico proxy ARGS` on a free port (plus admin and access log) and waits for `/ready`.
async fn start_proxy(args: &[String]) -> Portico {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let port = free_port();
        let admin = free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let access_log = dir.path().join("access.log");
        let child = Command::new(portico_bin())
            .arg("proxy")
            .args(["--from", &format!("127.0.0.1:{port}")])
            .args(args)
            .args(["--admin", &format!("127.0.0.1:{admin}"), "--access-log"])
            .arg(&access_log)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).expect("stderr file"))
            .spawn()
            .expect("spawn portico proxy");
        let mut p = Portico {
            child,
            config: dir.path().join("portico.yaml"),
            dir,
            port,
            admin,
            access_log,
        };
        // A port taken in between by another test: try another one.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            if let Ok(Some(_)) = p.child.try_wait() {
                break;
            }
            if let Ok(r) = http_get(&p.admin_url("/ready"), &[]).await
                && r.status == 200
            {
                return p;
            }
            assert!(std::time::Instant::now() < deadline, "not ready in time");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let err = p.stderr();
        assert!(
            attempt < 3 && err.contains("in use"),
            "portico proxy exited: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_liner_ejects_a_dead_endpoint_and_then_never_fails() {
    let live = Upstream::start("live").await;
    // A port nothing listens on: connections are refused.
    let dead = free_port();
    let p = start_proxy(&[
        "--to".into(),
        format!("http://{}", live.addr),
        "--to".into(),
        format!("http://127.0.0.1:{dead}"),
    ])
    .await;
    let ejections = "portico_outlier_ejections_total{upstream=\"backend\"}";
    let mut failed_before = 0;
    let mut ejected_at = None;
    for i in 0..50 {
        let r = get(&p.url(&format!("/r{i}")), &[]).await;
        let ejected = metric(&p, ejections).await.unwrap_or(0.0) >= 1.0;
        match (ejected_at, r.status.as_u16()) {
            (None, 200) => {}
            (None, s) => {
                assert_eq!(s, 503, "a refused connection is a local 503: {}", r.text());
                failed_before += 1;
            }
            (Some(at), s) => {
                assert_eq!(
                    s, 200,
                    "request {i} failed after the ejection at request {at}"
                )
            }
        }
        if ejected && ejected_at.is_none() {
            ejected_at = Some(i);
        }
    }
    let at = ejected_at.expect("the dead endpoint was never ejected");
    assert!(at < 25, "ejection only at request {at}");
    // A refused connection fails over to the live endpoint, so even these are usually 0.
    assert!(
        failed_before <= 10,
        "{failed_before} failures before the ejection"
    );
    assert_eq!(live.count(), 50 - failed_before);
    // The access log is on, in the usual format, and names the generated route.
    let lines = p.wait_log_lines(50).await;
    assert_eq!(lines.len(), 50);
    assert_eq!(lines[49]["route"], "proxy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn print_config_round_trips_through_check_and_run() {
    let up = Upstream::start("up").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let (code, yaml, err) = portico_cmd(
        dir.path(),
        &[
            "proxy",
            "--from",
            &format!("127.0.0.1:{port}"),
            "--to",
            &format!("http://{}", up.addr),
            "--host",
            "app.example.com",
            "--print-config",
        ],
    );
    assert_eq!(code, 0, "{err}");
    for kind in ["Listener", "Upstream", "Mapping"] {
        assert!(yaml.contains(&format!("kind: {kind}")), "{yaml}");
    }
    assert!(yaml.contains("outlier_detection"), "{yaml}");
    std::fs::write(dir.path().join("proxy.yaml"), &yaml).expect("write");
    let (code, out, err) = portico_cmd(dir.path(), &["check", "proxy.yaml"]);
    assert_eq!(code, 0, "check failed: {out}{err}");
    assert!(!out.contains("error"), "{out}");

    let p = Portico::start_args(
        port,
        &[
            "-c".into(),
            dir.path().join("proxy.yaml").display().to_string(),
        ],
    )
    .await;
    let r = get(&p.url("/x"), &[("host", "app.example.com")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "upstream up");
    // `--host` restricts the route.
    let r = get(&p.url("/x"), &[("host", "other.example.com")]).await;
    assert_eq!(r.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_liner_serves_https_with_h2_by_alpn() {
    let up = Upstream::start("up").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    std::fs::write(dir.path().join("c.pem"), cert.cert.pem()).expect("write");
    std::fs::write(dir.path().join("k.pem"), cert.signing_key.serialize_pem()).expect("write");
    let p = start_proxy(&[
        "--to".into(),
        format!("http://{}", up.addr),
        "--tls-cert".into(),
        dir.path().join("c.pem").display().to_string(),
        "--tls-key".into(),
        dir.path().join("k.pem").display().to_string(),
    ])
    .await;
    let out = Command::new("curl")
        .args([
            "-sk",
            "--http2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
        ])
        .arg(format!("https://localhost:{}/", p.port))
        .output();
    match out {
        Ok(o) => assert_eq!(String::from_utf8_lossy(&o.stdout), "2 200"),
        Err(_) => skipped("one_liner_serves_https_with_h2_by_alpn", "no curl"),
    }
}

#[test]
fn bad_proxy_flags_exit_2_with_one_line_naming_the_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (args, flag) in [
        (&["--from", ":8080", "--to", "notaurl"][..], "--to"),
        (
            &["--from", "host:notaport", "--to", "http://127.0.0.1:1"][..],
            "--from",
        ),
        (&["--from", ":8080"][..], "--to"),
        (
            &[
                "--from",
                ":8080",
                "--to",
                "http://a:1",
                "--tls-cert",
                "c.pem",
            ][..],
            "--tls-key",
        ),
        (
            &[
                "--from",
                ":8080",
                "--to",
                "http://a:1",
                "--to",
                "https://b:1",
            ][..],
            "--to",
        ),
    ] {
        let mut all = vec!["proxy"];
        all.extend_from_slice(args);
        let (code, out, err) = portico_cmd(dir.path(), &all);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(flag), "{args:?} does not name {flag}: {err}");
    }
}

#[test]
fn completions_are_valid_shell_scripts() {
    let dir = tempfile::tempdir().expect("tempdir");
    for shell in ["bash", "zsh", "fish"] {
        let (code, script, err) = portico_cmd(dir.path(), &["completions", shell]);
        assert_eq!(code, 0, "{err}");
        assert!(
            script.contains("proxy") && script.contains("from"),
            "{shell}"
        );
        let file = dir.path().join(format!("portico.{shell}"));
        std::fs::write(&file, &script).expect("write");
        if shell == "fish" {
            continue;
        }
        match Command::new(shell).arg("-n").arg(&file).output() {
            Ok(o) => assert!(
                o.status.success(),
                "{shell} -n: {}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(_) => skipped(
                "completions_are_valid_shell_scripts",
                &format!("{shell} is not installed; its completion script is not syntax-checked"),
            ),
        }
    }
}

#[test]
fn every_subcommand_help_describes_every_argument() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, top, _) = portico_cmd(dir.path(), &["--help"]);
    let subs: Vec<String> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .filter(|s| s != "help")
        .collect();
    assert!(subs.len() >= 8, "{subs:?}");
    for sub in &subs {
        // `-h`: the short form, one line per argument, its description on the same line.
        let (code, help, err) = portico_cmd(dir.path(), &[sub, "-h"]);
        assert_eq!(code, 0, "{sub}: {err}");
        // An entry is `  -x, --name <V>  text` or `  <NAME>  text`; when clap puts the text on
        // the next line, that line is indented further.
        let lines: Vec<&str> = help.lines().collect();
        let mut section = false;
        for (i, line) in lines.iter().enumerate() {
            if line.ends_with(':') && !line.starts_with(' ') {
                section = *line == "Arguments:" || *line == "Options:";
                continue;
            }
            let entry = line
                .strip_prefix("  ")
                .filter(|r| r.starts_with(['-', '<', '[']));
            if let (true, Some(rest)) = (section, entry) {
                let next_indented = lines
                    .get(i + 1)
                    .is_some_and(|n| n.starts_with("      ") && !n.trim().is_empty());
                let described = rest.contains("  ") || next_indented;
                assert!(
                    described,
                    "`portico {sub} -h`: no description: {line:?}\n{help}"
                );
            }
        }
    }
}

#[test]
fn version_names_the_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, out, _) = portico_cmd(dir.path(), &["version"]);
    assert_eq!(code, 0);
    let commit = out
        .split("commit ")
        .nth(1)
        .and_then(|r| r.split([',', ')']).next())
        .unwrap_or_default()
        .to_string();
    assert!(!commit.is_empty(), "{out}");
    // Built inside this repository: the short hash of a commit git knows (`unknown` only
    // when the sources are not a git checkout).
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    if commit == "unknown" {
        assert!(
            git(&["rev-parse", "HEAD"]).is_none(),
            "built in git, yet {out}"
        );
    } else {
        assert_eq!(
            git(&["cat-file", "-t", &commit]).as_deref(),
            Some("commit"),
            "{out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_have_no_colour_codes_when_stderr_is_not_a_terminal() {
    let p = Portico::start("").await;
    // A line at warn level and one at info (the admin address) are written by now.
    let err = p.stderr();
    assert!(err.contains("admin API listening"), "{err}");
    assert!(
        !err.contains("\u{1b}["),
        "ANSI escapes in a piped log: {err:?}"
    );
}
