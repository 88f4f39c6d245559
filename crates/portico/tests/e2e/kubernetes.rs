//! Running as Kubernetes runs Portico: a ConfigMap mounted as a volume (kubelet's atomic
//! `..data` symlink swap on update), and the shipped manifests in deploy/kubernetes/.

use crate::common;

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use common::*;

fn mapping(name: &str, prefix: &str, up: &Upstream) -> String {
    format!(
        "{API}\nkind: Mapping\nmetadata: {{ name: {name} }}\nspec: {{ prefix: {prefix}, service: \"{}\" }}\n",
        up.addr
    )
}

/// Writes `..TS/portico.yaml` the way kubelet's atomic writer does (a timestamped directory).
fn write_generation(dir: &Path, ts: &str, text: &str) {
    let gen_dir = dir.join(ts);
    std::fs::create_dir(&gen_dir).expect("mkdir");
    std::fs::write(gen_dir.join("portico.yaml"), text).expect("write");
}

async fn generation(p: &Portico) -> u64 {
    let r = get(&p.admin_url("/config"), &[]).await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    v["generation"].as_u64().expect("generation")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_kubelets_configmap_symlink_swap() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let port = free_port();
    let cfg = tempfile::tempdir().expect("tempdir");
    let dir = cfg.path();
    let first = format!("{}---\n{}", listener(port), mapping("old", "/old/", &a));
    // The volume as kubelet lays it out.
    let ts1 = "..2026_01_01_00_00_00.1";
    write_generation(dir, ts1, &first);
    symlink(ts1, dir.join("..data")).expect("symlink ..data");
    symlink("..data/portico.yaml", dir.join("portico.yaml")).expect("symlink portico.yaml");

    let p = Portico::start_args(port, &["-c".into(), dir.display().to_string()]).await;
    assert_eq!(get(&p.url("/old/x"), &[]).await.status, 200);
    // Loaded once: not a second time through `..data` or the timestamped directory.
    let r = get(&p.admin_url("/config"), &[]).await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    let resources = v["resources"].as_array().expect("resources");
    assert_eq!(resources.len(), 2, "{v}");
    assert!(v["last_error"].is_null(), "{v}");
    let before = generation(&p).await;

    // kubelet's update: a new timestamped directory, a `..data_tmp` symlink to it renamed over
    // `..data` (atomic), then the old directory removed.
    let second = format!("{}---\n{}", listener(port), mapping("new", "/new/", &b));
    let ts2 = "..2026_01_01_00_01_00.2";
    write_generation(dir, ts2, &second);
    // Let a reload triggered by the new directory alone (old `..data`) happen first, as it
    // may on a slow node: the swap itself must still be noticed.
    tokio::time::sleep(Duration::from_millis(600)).await;
    symlink(ts2, dir.join("..data_tmp")).expect("symlink ..data_tmp");
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).expect("rename");
    std::fs::remove_dir_all(dir.join(ts1)).expect("remove old");

    let applied = eventually(Duration::from_secs(10), async || {
        get(&p.url("/new/x"), &[]).await.status == 200 && generation(&p).await > before
    })
    .await;
    assert!(
        applied,
        "the swapped config was not applied: {}",
        p.stderr()
    );
    assert_eq!(get(&p.url("/new/x"), &[]).await.text(), "upstream b");
    assert_eq!(get(&p.url("/old/x"), &[]).await.status, 404);
    let r = get(&p.admin_url("/config"), &[]).await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert!(v["last_error"].is_null(), "{v}");
}

/// `-c FILE` where FILE is kubelet's top-level symlink (`portico.yaml -> ..data/portico.yaml`)
/// follows the swap as well, and keeps following it: the second update lands too (the
/// timestamped directory the symlink resolved to at start is gone by then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_repeated_swaps_when_given_the_file_symlink() {
    let ups = [
        Upstream::start("a").await,
        Upstream::start("b").await,
        Upstream::start("c").await,
    ];
    let port = free_port();
    let cfg = tempfile::tempdir().expect("tempdir");
    let dir = cfg.path();
    let ts = [
        "..2026_01_01_00_00_00.1",
        "..2026_01_01_00_01_00.2",
        "..2026_01_01_00_02_00.3",
    ];
    let doc = |i: usize| {
        let name = format!("gen{i}");
        let prefix = format!("/gen{i}/");
        format!(
            "{}---\n{}",
            listener(port),
            mapping(&name, &prefix, &ups[i])
        )
    };
    write_generation(dir, ts[0], &doc(0));
    symlink(ts[0], dir.join("..data")).expect("symlink");
    symlink("..data/portico.yaml", dir.join("portico.yaml")).expect("symlink");
    let file = dir.join("portico.yaml");
    let p = Portico::start_args(port, &["-c".into(), file.display().to_string()]).await;
    assert_eq!(get(&p.url("/gen0/x"), &[]).await.status, 200);

    for i in 1..3 {
        write_generation(dir, ts[i], &doc(i));
        symlink(ts[i], dir.join("..data_tmp")).expect("symlink");
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).expect("rename");
        std::fs::remove_dir_all(dir.join(ts[i - 1])).expect("remove old");
        let applied = eventually(Duration::from_secs(10), async || {
            get(&p.url(&format!("/gen{i}/x")), &[]).await.status == 200
        })
        .await;
        assert!(applied, "update {i} not applied: {}", p.stderr());
    }
}

/// The ConfigMap in deploy/kubernetes/ holds a config that `portico check` accepts.
#[test]
fn shipped_configmap_passes_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes");
    let text = std::fs::read_to_string(root.join("configmap.yaml")).expect("configmap.yaml");
    // The `portico.yaml: |` block scalar: its lines, de-indented.
    let mut lines = text.lines().skip_while(|l| l.trim() != "portico.yaml: |");
    lines
        .next()
        .expect("a `portico.yaml: |` key in the ConfigMap");
    let body: Vec<&str> = lines
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .collect();
    let config: String = body
        .iter()
        .map(|l| format!("{}\n", l.get(4..).unwrap_or("")))
        .collect();
    assert!(config.contains("kind: Mapping"), "{config}");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("portico.yaml"), &config).expect("write");
    let (code, out, err) = portico_cmd(dir.path(), &["check", "portico.yaml"]);
    assert_eq!(code, 0, "{out}{err}\n{config}");
    // The Deployment's probe and the manifests' ports agree with the config.
    let deploy = std::fs::read_to_string(root.join("deployment.yaml")).expect("deployment.yaml");
    assert!(deploy.contains("path: /ready"), "{deploy}");
    assert!(deploy.contains("terminationGracePeriodSeconds"), "{deploy}");
}
