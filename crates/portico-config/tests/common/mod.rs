//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use portico_config::{ConfigSource, Diagnostic, LoadResult, Severity, load};

pub fn tmp_dir(tag: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("portico-config-test-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

pub fn load_text(text: &str) -> LoadResult {
    load(&[ConfigSource::Inline {
        name: "t.yaml".into(),
        text: text.into(),
        base_dir: std::env::temp_dir(),
    }])
}

/// Every diagnostic as text.
pub fn diags(text: &str) -> Vec<String> {
    load_text(text)
        .diagnostics
        .iter()
        .map(Diagnostic::to_string)
        .collect()
}

pub fn errors(text: &str) -> Vec<String> {
    load_text(text)
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(Diagnostic::to_string)
        .collect()
}

pub fn warnings(text: &str) -> Vec<String> {
    load_text(text)
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .map(Diagnostic::to_string)
        .collect()
}

/// Asserts exactly one error, containing `needle`, at `line:col`.
#[track_caller]
pub fn one_error(text: &str, line: u32, col: u32, needle: &str) {
    let r = load_text(text);
    let errs: Vec<&Diagnostic> = r
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .collect();
    assert_eq!(
        errs.len(),
        1,
        "expected one error, got {:#?}",
        r.diagnostics
    );
    let e = errs[0];
    assert!(
        e.message.contains(needle),
        "`{}` does not contain `{needle}`",
        e.message
    );
    assert_eq!((e.line, e.column), (line, col), "position of {e}");
    assert!(r.snapshot.is_none());
}

#[track_caller]
pub fn clean(text: &str) -> portico_config::Snapshot {
    let r = load_text(text);
    assert!(
        r.diagnostics.is_empty(),
        "unexpected diagnostics: {:#?}",
        r.diagnostics
    );
    r.snapshot.expect("snapshot")
}

/// A Mapping document with an inline spec body (indented by the caller).
pub fn mapping(name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: portico.dev/v1\nkind: Mapping\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}
