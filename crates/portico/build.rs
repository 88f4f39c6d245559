//! Build script: records the git commit the binary is built from (`portico version`), as
//! `PORTICO_GIT_COMMIT` (`unknown` when not built inside a git checkout or without git), and
//! links the binary with packed relative relocations on Linux/glibc.
//!
//! Packed relocations (`-z pack-relative-relocs`, DT_RELR; GNU ld ≥ 2.38, glibc ≥ 2.36): a
//! position-independent binary carries one relocation per pointer in its read-only data, and
//! the loader reads them all at start-up. As RELA entries that table was 704 KB, all of it
//! resident for the life of the process; as RELR it is a few KB (docs/benchmarks.md, "Idle
//! memory"). Only the final link of the binaries is affected, not the crates' objects.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=PORTICO_GIT_COMMIT={commit}");
    // Rebuild when HEAD moves: HEAD itself (checkout), the branch it points to (commit), and
    // packed refs. Only existing files: a missing one would rerun this script on every build.
    let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(branch);
    }
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--git-path", &name])
            && std::path::Path::new(&path).exists()
        {
            let path = std::path::absolute(&path).unwrap_or_else(|_| path.into());
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    if var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
