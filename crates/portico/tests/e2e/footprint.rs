//! The binary's memory footprint at rest: what the build does to keep idle RSS low
//! (docs/benchmarks.md, "Idle memory").

use std::process::Command;

/// Linked with packed relative relocations: the loader reads a few KB of RELR entries at
/// start-up instead of ~700 KB of RELA entries that then stay resident.
#[test]
fn binary_uses_packed_relative_relocations() {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return;
    }
    let out = Command::new("readelf")
        .args(["-S", "-W", env!("CARGO_BIN_EXE_portico")])
        .output()
        .expect("readelf (binutils) runs");
    assert!(out.status.success(), "readelf failed");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(".relr.dyn"), "no .relr.dyn section:\n{text}");
    // What is left in .rela.dyn is the few non-relative relocations (symbols from libc).
    let rela = text
        .lines()
        .find(|l| l.contains(".rela.dyn"))
        .and_then(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let i = f.iter().position(|x| *x == ".rela.dyn")?;
            u64::from_str_radix(f.get(i + 4)?, 16).ok()
        })
        .unwrap_or(0);
    assert!(rela < 64 * 1024, ".rela.dyn is {rela} bytes");
}
