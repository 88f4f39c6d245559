//! `portico check` and `portico explain` through the real binary (docs/reference.md §1): every problem
//! on its own line as `FILE:LINE:COL: KIND/NAME: message`, `--format json`, exit codes.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn portico(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run portico")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

/// Five different mistakes in two files (line numbers in the comments on the right).
const A_YAML: &str = r#"apiVersion: portico.dev/v1
kind: Mapping
metadata: { name: quote }
spec:
  prefix: /quote/
  service: quote-pool
  bogus: true
---
apiVersion: portico.dev/v1
kind: Mapping
metadata: { name: rx }
spec:
  prefix: /rx/
  service: 127.0.0.1:9
  regex_headers:
    user-agent: "(*bad"
"#;
// a.yaml:6:12  dangling service (no Upstream `quote-pool`)
// a.yaml:7:3   unknown field `bogus`
// a.yaml:16:17 invalid regex

const B_YAML: &str = r#"apiVersion: portico.dev/v1
kind: Mapping
metadata: { name: quote }
spec: { prefix: /q2/, service: 127.0.0.1:9 }
---
apiVersion: portico.dev/v1
kind: Mapping
metadata: { name: t }
spec:
  prefix: /t/
  service: 127.0.0.1:9
  timeout_ms: [1]
"#;
// b.yaml:3:19  duplicate Mapping name `quote`
// b.yaml:12:15 wrong type

const FIVE: [(&str, &str); 5] = [
    ("conf/a.yaml:6:12: Mapping/quote: ", "quote-pool"),
    ("conf/a.yaml:7:3: Mapping/quote: ", "bogus"),
    ("conf/a.yaml:16:17: Mapping/rx: ", "regex"),
    ("conf/b.yaml:3:19: Mapping/quote: ", "duplicate"),
    (
        "conf/b.yaml:12:15: Mapping/t: ",
        "timeout_ms: expected an integer number of milliseconds",
    ),
];

#[test]
fn check_reports_all_five_mistakes_with_positions() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "conf/a.yaml", A_YAML);
    write(dir.path(), "conf/b.yaml", B_YAML);

    for args in [
        &["check", "conf/a.yaml", "conf/b.yaml"][..],
        &["check", "conf"][..], // a directory: every *.yaml below it, sorted
    ] {
        let o = portico(dir.path(), args);
        let out = stdout(&o);
        eprintln!("{args:?}:\n{out}");
        assert_eq!(o.status.code(), Some(1), "{out}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines.len(),
            5,
            "exactly the five problems, one per line:\n{out}"
        );
        for (prefix, word) in FIVE {
            let line = lines
                .iter()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no line starting with {prefix:?}:\n{out}"));
            assert!(
                line.to_lowercase().contains(word),
                "{line:?} should mention {word:?}"
            );
            assert!(!line.contains("warning:"), "{line}");
        }
    }
}

#[test]
fn check_json_format_is_an_array_with_positions() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "conf/a.yaml", A_YAML);
    write(dir.path(), "conf/b.yaml", B_YAML);
    let o = portico(dir.path(), &["check", "--format", "json", "conf"]);
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&o.stdout).expect("stdout is JSON");
    let arr = v.as_array().expect("a JSON array");
    assert_eq!(arr.len(), 5, "{v:#}");
    let mut got: Vec<(String, u64, u64, String, String, String)> = arr
        .iter()
        .map(|d| {
            assert!(d["message"].is_string(), "{d}");
            (
                d["file"].as_str().unwrap().to_string(),
                d["line"].as_u64().unwrap(),
                d["column"].as_u64().unwrap(),
                d["kind"].as_str().unwrap().to_string(),
                d["name"].as_str().unwrap().to_string(),
                d["severity"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    let want = [
        ("conf/a.yaml", 6, 12, "quote"),
        ("conf/a.yaml", 7, 3, "quote"),
        ("conf/a.yaml", 16, 17, "rx"),
        ("conf/b.yaml", 3, 19, "quote"),
        ("conf/b.yaml", 12, 15, "t"),
    ];
    for (g, w) in got.iter().zip(want) {
        assert_eq!(
            (
                g.0.as_str(),
                g.1,
                g.2,
                g.3.as_str(),
                g.4.as_str(),
                g.5.as_str()
            ),
            (w.0, w.1, w.2, "Mapping", w.3, "error")
        );
    }
}

#[test]
fn check_reports_group_level_and_cross_resource_errors() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "c.yaml",
        r#"apiVersion: portico.dev/v1
kind: Mapping
metadata: { name: c1 }
spec: { prefix: /c/, service: 127.0.0.1:9, weight: 60 }
---
apiVersion: portico.dev/v1
kind: Mapping
metadata: { name: c2 }
spec: { prefix: /c/, service: 127.0.0.1:10, weight: 70 }
---
apiVersion: portico.dev/v1
kind: Mapping
metadata: { name: both }
spec:
  prefix: /both/
  service: 127.0.0.1:9
  rewrite: /x/
  regex_rewrite: { pattern: "^/(.*)$", substitution: "/\\1" }
---
apiVersion: portico.dev/v1
kind: Mapping
metadata: { name: cf1 }
spec: { prefix: /cf1/, service: "shared:80", connect_timeout_ms: 100 }
---
apiVersion: portico.dev/v1
kind: Mapping
metadata: { name: cf2 }
spec: { prefix: /cf2/, service: "shared:80", connect_timeout_ms: 200 }
---
apiVersion: portico.dev/v1
kind: Nonsense
metadata: { name: x }
spec: {}
---
apiVersion: portico.dev/v1
kind: Mapping
metadata: { name: big }
spec: { prefix: /big/, service: 127.0.0.1:9, weight: 101 }
"#,
    );
    let o = portico(dir.path(), &["check", "c.yaml"]);
    let out = stdout(&o);
    eprintln!("{out}");
    assert_eq!(o.status.code(), Some(1));
    let want = [
        ("c.yaml:9:53: Mapping/c2: ", "130"), // weights in a group over 100
        ("c.yaml:18:3: Mapping/both: ", "rewrite"), // rewrite and regex_rewrite
        ("c.yaml:28:46: Mapping/cf2: ", "connect_timeout_ms"), // conflicting upstream settings
        ("c.yaml:31:7: Nonsense/x: ", "unknown kind"),
        ("c.yaml:38:54: Mapping/big: ", "101"), // a single weight over 100
    ];
    for (prefix, word) in want {
        let line = out
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting with {prefix:?}:\n{out}"));
        assert!(line.contains(word), "{line:?} should mention {word:?}");
    }
    assert_eq!(out.lines().count(), want.len(), "{out}");
}

#[test]
fn check_clean_config_exits_zero_and_warns_on_unweighted_group() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "clean.yaml",
        "apiVersion: portico.dev/v1\nkind: Mapping\nmetadata: { name: only }\nspec: { prefix: /, service: 127.0.0.1:9 }\n",
    );
    let o = portico(dir.path(), &["check", "clean.yaml"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o), "");
    let o = portico(dir.path(), &["check", "--format", "json", "clean.yaml"]);
    assert_eq!(o.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(v, serde_json::json!([]));

    // A canary group of two Mappings without weights: valid, with a warning (docs/reference.md §2.5).
    write(
        dir.path(),
        "w.yaml",
        r#"apiVersion: portico.dev/v1
kind: Mapping
metadata: { name: g1 }
spec: { prefix: /g/, service: 127.0.0.1:9 }
---
apiVersion: portico.dev/v1
kind: Mapping
metadata: { name: g2 }
spec: { prefix: /g/, service: 127.0.0.1:10 }
---
apiVersion: portico.dev/v1
kind: Mapping
metadata: { name: w1 }
spec: { prefix: /w/, service: 127.0.0.1:9, weight: 30 }
---
apiVersion: portico.dev/v1
kind: Mapping
metadata: { name: w2 }
spec: { prefix: /w/, service: 127.0.0.1:10 }
"#,
    );
    let o = portico(dir.path(), &["check", "w.yaml"]);
    let out = stdout(&o);
    eprintln!("{out}");
    assert_eq!(o.status.code(), Some(0), "warnings do not fail the check");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "one warning, for the unweighted group only:\n{out}"
    );
    assert!(
        lines[0].starts_with("w.yaml:9:9: Mapping/g2: warning: "),
        "{out}"
    );
    assert!(lines[0].contains("g1") && lines[0].contains("no weights"));

    let o = portico(dir.path(), &["check", "--format", "json", "w.yaml"]);
    assert_eq!(o.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&o.stdout).expect("JSON");
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 1);
    assert_eq!(arr[0]["severity"], "warning");
    assert_eq!(arr[0]["file"], "w.yaml");
    assert_eq!(arr[0]["line"], 9);
    assert_eq!(arr[0]["column"], 9);
    assert_eq!(arr[0]["kind"], "Mapping");
    assert_eq!(arr[0]["name"], "g2");

    // Errors and warnings together: exit 1.
    write(
        dir.path(),
        "z.yaml",
        "apiVersion: portico.dev/v1\nkind: Mapping\nmetadata: { name: z }\nspec: { prefix: /z/, service: 127.0.0.1:9, nope: 1 }\n",
    );
    let o = portico(dir.path(), &["check", "w.yaml", "z.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.contains("z.yaml:4:"), "{out}");
    assert!(out.contains("warning:"), "{out}");
}

const EXPLAIN_YAML: &str = r#"apiVersion: portico.dev/v1
kind: Upstream
metadata: { name: users }
spec: { endpoints: ["127.0.0.1:9001", "127.0.0.1:9002"] }
---
apiVersion: portico.dev/v1
kind: Mapping
metadata: { name: users-v1 }
spec:
  hostname: "*.example.com"
  prefix: /v1/
  service: users
  regex_rewrite: { pattern: "^/v1/(.*)$", substitution: "/\\1" }
---
apiVersion: portico.dev/v1
kind: Mapping
metadata: { name: users-canary }
spec:
  hostname: "*.example.com"
  prefix: /v1/
  headers: { x-canary: "1" }
  service: 127.0.0.1:9100
  rewrite: /canary/
  host_rewrite: users.internal
---
apiVersion: portico.dev/v1
kind: Mapping
metadata: { name: other }
spec: { hostname: other.org, prefix: /, service: 127.0.0.1:9200 }
"#;

#[test]
fn explain_json_gives_the_expected_route() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "e.yaml", EXPLAIN_YAML);
    let explain = |url: &str, headers: &[&str]| -> Value {
        let mut args = vec!["explain", "-c", "e.yaml", "GET", url, "--format", "json"];
        for h in headers {
            args.extend(["-H", h]);
        }
        let o = portico(dir.path(), &args);
        assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
        serde_json::from_slice(&o.stdout).expect("JSON")
    };

    let v = explain("http://api.example.com/v1/users/7?x=1", &[]);
    assert_eq!(v["route"], "users-v1");
    assert_eq!(v["upstream"], "users");
    assert_eq!(v["rewritten_path"], "/users/7?x=1");
    let rejected = v["rejected"].as_array().unwrap();
    assert!(
        rejected.iter().any(|r| r["route"] == "users-canary"),
        "{v:#}"
    );

    let v = explain(
        "http://API.example.com:8443/v1/users/7?x=1",
        &["X-Canary: 1"],
    );
    assert_eq!(v["route"], "users-canary");
    assert_eq!(v["upstream"], "127.0.0.1:9100");
    assert_eq!(v["rewritten_path"], "/canary/users/7?x=1");
    assert_eq!(v["policies"]["host_rewrite"], "users.internal");

    let v = explain("http://other.org/anything", &[]);
    assert_eq!(v["route"], "other");
    assert_eq!(v["upstream"], "127.0.0.1:9200");
    assert_eq!(v["rewritten_path"], "/anything");

    // No route: route null.
    let v = explain("http://api.example.com/v2/x", &[]);
    assert_eq!(v["route"], Value::Null);
    assert_eq!(v["upstream"], Value::Null);

    // Text format names the route too.
    let o = portico(
        dir.path(),
        &[
            "explain",
            "-c",
            "e.yaml",
            "GET",
            "http://www.example.com/v1/a",
        ],
    );
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("users-v1"), "{}", stdout(&o));
}

/// Every shipped example is a valid config, and `portico version` names the version.
#[test]
fn examples_check_clean_and_version_prints() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut checked = 0;
    for entry in std::fs::read_dir(root.join("examples")).expect("examples/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let o = portico(&root, &["check", &path.display().to_string()]);
            assert_eq!(
                o.status.code(),
                Some(0),
                "{}: {}",
                path.display(),
                stdout(&o)
            );
            assert!(
                !stdout(&o).contains("error"),
                "{}: {}",
                path.display(),
                stdout(&o)
            );
            checked += 1;
        }
    }
    assert!(checked >= 1, "no example found");
    let o = portico(&root, &["version"]);
    assert_eq!(o.status.code(), Some(0));
    let v = stdout(&o);
    assert!(
        v.starts_with(&format!("portico {} (", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
}

/// Command output into a pipe closed early (`portico explain … | head -1`) ends quietly,
/// never with a panic on the broken pipe.
#[test]
fn output_into_a_closed_pipe_is_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "e.yaml", EXPLAIN_YAML);
    for args in [
        vec![
            "explain",
            "-c",
            "e.yaml",
            "GET",
            "http://api.example.com/v1/users/7",
        ],
        vec!["check", "e.yaml", "--format", "json"],
        vec!["version"],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_portico"))
            .args(&args)
            .current_dir(dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // the reader is gone before anything is written
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_ne!(o.status.code(), Some(101), "{args:?}: {err}");
    }
}

/// A wrong type names the field and the expected type in YAML words; an unknown field that is
/// a known one without its unit gets a suggestion; a tab is reported on the tab's own line.
#[test]
fn check_words_type_errors_and_points_at_tabs() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "types.yaml",
        "apiVersion: portico.dev/v1\nkind: Mapping\nmetadata: { name: q }\nspec:\n  prefix: /q/\n  service: 127.0.0.1:9\n  timeout_ms: soon\n  timeout: 5\n",
    );
    write(
        dir.path(),
        "tab.yaml",
        "apiVersion: portico.dev/v1\nkind: Mapping\nmetadata: { name: t }\nspec:\n  prefix: /t/\n\tservice: 127.0.0.1:9\n",
    );
    let o = portico(dir.path(), &["check", "types.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(
        out.contains(
            "types.yaml:7:15: Mapping/q: timeout_ms: expected an integer number of milliseconds, found the string \"soon\"\n"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "types.yaml:8:3: Mapping/q: unknown field `timeout` (did you mean `timeout_ms`?)\n"
        ),
        "{out}"
    );
    let o = portico(dir.path(), &["check", "tab.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(
        out.starts_with("tab.yaml:6:1: -/-: invalid YAML: a tab indents this line"),
        "{out}"
    );
}
