//! `portico diff OLD NEW` (docs/reference.md §1): compiles both configs and compares their Mappings,
//! Upstreams and Hosts by name, field by field (fields from `portico_config::describe`).
//!
//! OLD/NEW are files, directories, or `git:REV` / `git:REV:PATH` in the repository of the
//! current directory (PATH relative to the repository root; default: the root). A revision is
//! written into a private temporary directory through a private index
//! (`portico_control::git::materialize`): the repository's HEAD, index and worktrees are not
//! touched. Exit 0 when equal, 1 when different, 2 on error (a config that does not load).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use portico_config::{ConfigSource, Snapshot, describe};
use serde_json::{Value, json};

type Fields = BTreeMap<String, String>;
/// A changed field: name, old value, new value (`None`: unset).
type FieldChange = (String, Option<String>, Option<String>);

/// One side: a path, or a materialized git revision (removed on drop).
struct Side {
    path: PathBuf,
    temp: Option<PathBuf>,
}

impl Drop for Side {
    fn drop(&mut self) {
        if let Some(t) = &self.temp {
            let _ = std::fs::remove_dir_all(t);
        }
    }
}

async fn resolve(spec: &str) -> Result<Side, String> {
    let Some(rest) = spec.strip_prefix("git:") else {
        return Ok(Side {
            path: PathBuf::from(spec),
            temp: None,
        });
    };
    let (rev, sub) = match rest.split_once(':') {
        Some((r, p)) => (r, Some(p)),
        None => (rest, None),
    };
    if rev.is_empty() || rev.starts_with('-') {
        return Err(format!(
            "`{spec}`: missing revision (git:REV or git:REV:PATH)"
        ));
    }
    let git_dir = portico_control::git::git(None, &["rev-parse", "--absolute-git-dir"], &[])
        .await
        .map_err(|e| format!("`{spec}`: not in a git repository? {e}"))?;
    let git_dir = PathBuf::from(git_dir.trim());
    let sha = portico_control::git::git(
        None,
        &["rev-parse", "--verify", &format!("{rev}^{{commit}}")],
        &[],
    )
    .await
    .map_err(|e| format!("`{spec}`: {e}"))?;
    let temp = portico_control::git::private_dir("portico-diff")
        .map_err(|e| format!("temporary directory: {e}"))?;
    let tree = temp.join("tree");
    let side = Side {
        path: match sub {
            Some(p) => tree.join(p.trim_start_matches('/')),
            None => tree.clone(),
        },
        temp: Some(temp),
    };
    portico_control::git::materialize(&git_dir, sha.trim(), &tree)
        .await
        .map_err(|e| format!("`{spec}`: {e}"))?;
    Ok(side)
}

fn load(label: &str, path: &Path) -> Result<Snapshot, String> {
    let r = portico_config::load(&[ConfigSource::Path(path.to_path_buf())]);
    match r.snapshot {
        Some(s) => Ok(s),
        None => {
            let mut msg = format!("{label}: configuration does not load:");
            for d in r.diagnostics.iter().filter(|d| d.is_error()) {
                msg.push_str(&format!("\n  {d}"));
            }
            Err(msg)
        }
    }
}

/// Added, removed and changed entries of one kind.
#[derive(Default)]
struct KindDiff {
    added: Vec<(String, Fields)>,
    removed: Vec<(String, Fields)>,
    changed: Vec<(String, Vec<FieldChange>)>,
}

impl KindDiff {
    fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    fn json(&self) -> Value {
        json!({
            "added": self.added.iter().map(|(n, f)| json!({ "name": n, "fields": f })).collect::<Vec<_>>(),
            "removed": self.removed.iter().map(|(n, f)| json!({ "name": n, "fields": f })).collect::<Vec<_>>(),
            "changed": self.changed.iter().map(|(n, fs)| json!({
                "name": n,
                "fields": fs.iter().map(|(f, o, n)| (f.clone(), json!({ "old": o, "new": n }))).collect::<serde_json::Map<_, _>>(),
            })).collect::<Vec<_>>(),
        })
    }
}

fn compare(old: BTreeMap<String, Fields>, mut new: BTreeMap<String, Fields>) -> KindDiff {
    let mut d = KindDiff::default();
    for (name, of) in old {
        match new.remove(&name) {
            None => d.removed.push((name, of)),
            Some(nf) if nf != of => {
                let mut keys: Vec<&String> = of.keys().chain(nf.keys()).collect();
                keys.sort();
                keys.dedup();
                let fields = keys
                    .into_iter()
                    .filter(|k| of.get(*k) != nf.get(*k))
                    .map(|k| (k.clone(), of.get(k).cloned(), nf.get(k).cloned()))
                    .collect();
                d.changed.push((name, fields));
            }
            Some(_) => {}
        }
    }
    d.added = new.into_iter().collect();
    d
}

fn routes(s: &Snapshot) -> BTreeMap<String, Fields> {
    s.routes
        .iter()
        .map(|r| (r.name.clone(), describe::route(s, r)))
        .collect()
}

fn upstreams(s: &Snapshot) -> BTreeMap<String, Fields> {
    s.upstreams
        .iter()
        .map(|u| (u.name.clone(), describe::upstream(u)))
        .collect()
}

fn hosts(s: &Snapshot) -> BTreeMap<String, Fields> {
    s.hosts
        .iter()
        .map(|h| (h.name.clone(), describe::host(h)))
        .collect()
}

fn human(kind: &str, d: &KindDiff, out: &mut String) {
    use std::fmt::Write;
    for (n, f) in &d.added {
        let _ = writeln!(out, "+ {kind} {n}");
        for (k, v) in f {
            let _ = writeln!(out, "    {k}: {v}");
        }
    }
    for (n, _) in &d.removed {
        let _ = writeln!(out, "- {kind} {n}");
    }
    for (n, fs) in &d.changed {
        let _ = writeln!(out, "~ {kind} {n}");
        for (f, o, nw) in fs {
            let _ = writeln!(
                out,
                "    {f}: {} -> {}",
                o.as_deref().unwrap_or("(unset)"),
                nw.as_deref().unwrap_or("(unset)")
            );
        }
    }
}

fn auth_services(s: &Snapshot) -> BTreeMap<String, Fields> {
    s.auth_service
        .iter()
        .map(|a| (a.name.clone(), describe::auth_service(s, a)))
        .collect()
}

fn jwt_providers(s: &Snapshot) -> BTreeMap<String, Fields> {
    s.jwt_providers
        .iter()
        .map(|p| (p.name.clone(), describe::jwt_provider(s, p)))
        .collect()
}

/// The difference between two snapshots: Mappings, Upstreams, Hosts, the AuthService and
/// JWTProviders.
struct Report {
    kinds: [(&'static str, KindDiff); 5],
}

impl Report {
    fn new(sa: &Snapshot, sb: &Snapshot) -> Report {
        Report {
            kinds: [
                ("Mapping", compare(routes(sa), routes(sb))),
                ("Upstream", compare(upstreams(sa), upstreams(sb))),
                ("Host", compare(hosts(sa), hosts(sb))),
                ("AuthService", compare(auth_services(sa), auth_services(sb))),
                ("JWTProvider", compare(jwt_providers(sa), jwt_providers(sb))),
            ],
        }
    }

    fn equal(&self) -> bool {
        self.kinds.iter().all(|(_, d)| d.is_empty())
    }

    fn json(&self) -> Value {
        json!({
            "equal": self.equal(),
            "routes": self.kinds[0].1.json(),
            "upstreams": self.kinds[1].1.json(),
            "hosts": self.kinds[2].1.json(),
            "auth_services": self.kinds[3].1.json(),
            "jwt_providers": self.kinds[4].1.json(),
        })
    }

    fn human(&self) -> String {
        if self.equal() {
            return "no differences\n".to_string();
        }
        let mut out = String::new();
        for (k, d) in &self.kinds {
            human(k, d, &mut out);
        }
        out
    }
}

/// Runs the command; see the module doc for the exit codes.
pub fn run(old: &str, new: &str, json_out: bool) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("portico diff: cannot start runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let sides = rt.block_on(async { Ok::<_, String>((resolve(old).await?, resolve(new).await?)) });
    let (a, b) = match sides {
        Ok(s) => s,
        Err(e) => {
            eprintln!("portico diff: {e}");
            return ExitCode::from(2);
        }
    };
    let (sa, sb) = match (load(old, &a.path), load(new, &b.path)) {
        (Ok(x), Ok(y)) => (x, y),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("portico diff: {e}");
            return ExitCode::from(2);
        }
    };
    let report = Report::new(&sa, &sb);
    let same = report.equal();
    if json_out {
        out!(
            "{}",
            serde_json::to_string_pretty(&report.json()).unwrap_or_default()
        );
    } else {
        out!("{}", report.human().trim_end_matches('\n'));
    }
    if same {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loads `docs` (YAML) with `dir` as the base for relative paths.
    fn snap(dir: &Path, docs: &str) -> Snapshot {
        let r = portico_config::load(&[ConfigSource::Inline {
            name: "c.yaml".into(),
            text: docs.into(),
            base_dir: dir.to_path_buf(),
        }]);
        let errors: Vec<String> = r.diagnostics.iter().map(|d| d.to_string()).collect();
        r.snapshot
            .unwrap_or_else(|| panic!("config does not load: {errors:?}"))
    }

    const API: &str = "apiVersion: portico.dev/v1";

    fn upstream(name: &str, endpoints: &str) -> String {
        format!(
            "{API}\nkind: Upstream\nmetadata: {{ name: {name} }}\nspec: {{ endpoints: [{endpoints}] }}\n---\n"
        )
    }

    fn host(name: &str, hostname: &str, extra_tls: &str) -> String {
        format!(
            "{API}\nkind: Host\nmetadata: {{ name: {name} }}\nspec: {{ hostname: {hostname}, tls: {{ cert_chain_file: c.pem, private_key_file: c.key{extra_tls} }} }}\n---\n"
        )
    }

    fn mapping(name: &str, service: &str) -> String {
        format!(
            "{API}\nkind: Mapping\nmetadata: {{ name: {name} }}\nspec: {{ prefix: /{name}/, service: {service} }}\n---\n"
        )
    }

    /// Two configs differing in Upstreams (one added, one removed, one whose endpoints
    /// changed) and in a Host's TLS; the Mappings are the same.
    fn configs() -> (tempfile::TempDir, Snapshot, Snapshot) {
        let dir = tempfile::tempdir().expect("tempdir");
        for f in ["c.pem", "c.key", "ca.pem"] {
            std::fs::write(dir.path().join(f), "-----BEGIN X-----\n-----END X-----\n")
                .expect("write");
        }
        let old = [
            upstream("quote", "\"10.0.0.1:80\", \"10.0.0.2:80\""),
            upstream("legacy", "\"10.0.1.1:80\""),
            host("api", "api.example.com", ""),
            mapping("q", "quote"),
        ]
        .concat();
        let new = [
            upstream(
                "quote",
                "\"10.0.0.1:80\", { address: \"10.0.0.3:80\", weight: 2 }",
            ),
            upstream("fresh", "\"10.0.2.1:80\""),
            host(
                "api",
                "api.example.com",
                ", min_tls_version: v1.3, ca_file: ca.pem",
            ),
            mapping("q", "quote"),
        ]
        .concat();
        let a = snap(dir.path(), &old);
        let b = snap(dir.path(), &new);
        (dir, a, b)
    }

    #[test]
    fn upstreams_and_hosts_json() {
        let (dir, a, b) = configs();
        let v = Report::new(&a, &b).json();
        assert_eq!(v["equal"], false);
        let names = |kind: &str, what: &str| -> Vec<String> {
            v[kind][what]
                .as_array()
                .expect("array")
                .iter()
                .map(|x| x["name"].as_str().unwrap_or("").to_string())
                .collect()
        };
        assert_eq!(names("upstreams", "added"), ["fresh"]);
        assert_eq!(names("upstreams", "removed"), ["legacy"]);
        assert_eq!(names("upstreams", "changed"), ["quote"]);
        let f = &v["upstreams"]["changed"][0]["fields"];
        assert_eq!(f["endpoints"]["old"], "10.0.0.1:80, 10.0.0.2:80");
        assert_eq!(f["endpoints"]["new"], "10.0.0.1:80, 10.0.0.3:80 (weight 2)");
        assert_eq!(f.as_object().map(|o| o.len()), Some(1), "{f}");
        assert_eq!(
            v["upstreams"]["added"][0]["fields"]["endpoints"],
            "10.0.2.1:80"
        );

        assert_eq!(names("hosts", "changed"), ["api"]);
        assert!(names("hosts", "added").is_empty() && names("hosts", "removed").is_empty());
        let f = &v["hosts"]["changed"][0]["fields"];
        assert_eq!(f["tls.min_tls_version"]["old"], "V1_2");
        assert_eq!(f["tls.min_tls_version"]["new"], "V1_3");
        assert_eq!(f["tls.ca_file"]["old"], Value::Null);
        assert_eq!(
            f["tls.ca_file"]["new"],
            dir.path().join("ca.pem").display().to_string()
        );
        assert_eq!(f.as_object().map(|o| o.len()), Some(2), "{f}");

        // The Mappings did not change.
        for what in ["added", "removed", "changed"] {
            assert!(names("routes", what).is_empty(), "{v}");
        }
    }

    #[test]
    fn upstreams_and_hosts_human() {
        let (dir, a, b) = configs();
        let text = Report::new(&a, &b).human();
        let ca = dir.path().join("ca.pem").display().to_string();
        let want = [
            "+ Upstream fresh".to_string(),
            "    endpoints: 10.0.2.1:80".into(),
            "- Upstream legacy".into(),
            "~ Upstream quote".into(),
            "    endpoints: 10.0.0.1:80, 10.0.0.2:80 -> 10.0.0.1:80, 10.0.0.3:80 (weight 2)".into(),
            "~ Host api".into(),
            format!("    tls.ca_file: (unset) -> {ca}"),
            "    tls.min_tls_version: V1_2 -> V1_3".into(),
        ];
        let lines: Vec<&str> = text.lines().collect();
        // Each expected line, in this order (added fields of `fresh` are listed in full).
        let mut at = 0;
        for w in &want {
            let found = lines[at..].iter().position(|l| l == w);
            assert!(found.is_some(), "`{w}` after line {at}:\n{text}");
            at += found.unwrap_or(0) + 1;
        }
        assert!(!text.contains("Mapping"), "{text}");
        // Changed entries list only the changed fields.
        let quote = text
            .split("~ Upstream quote\n")
            .nth(1)
            .and_then(|t| t.split("~ Host").next())
            .unwrap_or("");
        assert_eq!(quote.lines().count(), 1, "{text}");
    }

    #[test]
    fn auth_changes_are_shown() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("k.json"), "{\"keys\": []}").expect("write");
        let auth = |timeout: u32| {
            format!(
                "{API}\nkind: AuthService\nmetadata: {{ name: auth }}\nspec: {{ auth_service: \"10.0.0.9:3000\", timeout_ms: {timeout} }}\n---\n"
            )
        };
        let jwt = format!(
            "{API}\nkind: JWTProvider\nmetadata: {{ name: main }}\nspec: {{ issuer: \"https://i\", jwks_file: k.json }}\n---\n"
        );
        let old = [auth(5000), mapping("q", "\"10.0.0.1:80\"")].concat();
        let new = [
            auth(200),
            jwt,
            format!(
                "{API}\nkind: Mapping\nmetadata: {{ name: q }}\nspec: {{ prefix: /q/, service: \"10.0.0.1:80\", bypass_auth: true, jwt: {{ provider: main }} }}\n---\n"
            ),
        ]
        .concat();
        let (a, b) = (snap(dir.path(), &old), snap(dir.path(), &new));
        let text = Report::new(&a, &b).human();
        for w in [
            "~ Mapping q",
            "    bypass_auth: (unset) -> true",
            "    jwt: (unset) -> main (required: true)",
            "~ AuthService auth",
            "    timeout_ms: 5000 -> 200",
            "+ JWTProvider main",
        ] {
            assert!(text.lines().any(|l| l == w), "`{w}`:\n{text}");
        }
        let v = Report::new(&a, &b).json();
        assert_eq!(v["jwt_providers"]["added"][0]["name"], "main");
        assert_eq!(
            v["auth_services"]["changed"][0]["fields"]["timeout_ms"]["new"],
            "200"
        );
    }

    #[test]
    fn equal_configs() {
        let (_dir, a, _) = configs();
        let r = Report::new(&a, &a);
        assert!(r.equal());
        assert_eq!(r.human(), "no differences\n");
        assert_eq!(r.json()["equal"], true);
        assert_eq!(r.json()["upstreams"]["changed"], json!([]));
    }
}
