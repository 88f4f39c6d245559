//! Fuzz target: the config loader and validator. Any YAML text must give diagnostics (or a
//! snapshot), never a panic; a snapshot exists exactly when no diagnostic is an error.
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use portico_config::{ConfigSource, load};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let result = load(&[ConfigSource::Inline {
        name: "fuzz.yaml".into(),
        text: text.to_string(),
        base_dir: PathBuf::from("/nonexistent-portico-fuzz"),
    }]);
    assert_eq!(result.snapshot.is_none(), result.has_errors());
    for d in &result.diagnostics {
        // Rendering a diagnostic must not panic either.
        let _ = d.to_string();
    }
});
