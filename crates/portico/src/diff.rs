//! `portico diff OLD NEW` (CONTRACT §1): compiles both configs and compares their Mappings,
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

fn print_human(kind: &str, d: &KindDiff) {
    for (n, f) in &d.added {
        println!("+ {kind} {n}");
        for (k, v) in f {
            println!("    {k}: {v}");
        }
    }
    for (n, _) in &d.removed {
        println!("- {kind} {n}");
    }
    for (n, fs) in &d.changed {
        println!("~ {kind} {n}");
        for (f, o, nw) in fs {
            println!(
                "    {f}: {} -> {}",
                o.as_deref().unwrap_or("(unset)"),
                nw.as_deref().unwrap_or("(unset)")
            );
        }
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
    let kinds = [
        ("Mapping", compare(routes(&sa), routes(&sb))),
        ("Upstream", compare(upstreams(&sa), upstreams(&sb))),
        ("Host", compare(hosts(&sa), hosts(&sb))),
    ];
    let same = kinds.iter().all(|(_, d)| d.is_empty());
    if json_out {
        let v = json!({
            "equal": same,
            "routes": kinds[0].1.json(),
            "upstreams": kinds[1].1.json(),
            "hosts": kinds[2].1.json(),
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else if same {
        println!("no differences");
    } else {
        for (k, d) in &kinds {
            print_human(k, d);
        }
    }
    if same {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
