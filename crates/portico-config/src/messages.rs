//! serde's error messages in YAML words: unknown fields shortened to a "did you mean"
//! suggestion, and type errors that name the field and the expected type as a YAML user writes
//! it. Used by the positioned deserializer (`node.rs`).

/// Shortens serde's "unknown field `x`, expected one of ..." (a long list for big specs) to
/// the field and, when one is close, a suggestion.
pub(crate) fn tidy(msg: &str) -> String {
    let Some(rest) = msg.strip_prefix("unknown field `") else {
        return msg.to_string();
    };
    let Some((field, list)) = rest.split_once("`, expected one of ") else {
        return msg.to_string();
    };
    let candidates: Vec<&str> = list.split(", ").map(|c| c.trim_matches('`')).collect();
    // The field without its unit or qualifier (`timeout` for `timeout_ms`) counts as close.
    let extends = |c: &str| {
        c.strip_prefix(field)
            .is_some_and(|rest| rest.starts_with('_') && !field.is_empty())
    };
    let best = candidates
        .iter()
        .map(|c| {
            (
                if extends(c) {
                    0
                } else {
                    edit_distance(field, c)
                },
                *c,
            )
        })
        .min();
    match best {
        Some((dist, c)) if dist <= 2.max(field.len() / 4) => {
            format!("unknown field `{field}` (did you mean `{c}`?)")
        }
        _ if candidates.len() > 6 => format!("unknown field `{field}`"),
        _ => msg.to_string(),
    }
}

/// Rewrites serde's "invalid type: string \"soon\", expected u64" in YAML words, naming the
/// field: `timeout_ms: expected an integer number of milliseconds, found the string "soon"`.
pub(crate) fn type_message(msg: &str, field: Option<&str>) -> String {
    let Some(rest) = msg
        .strip_prefix("invalid type: ")
        .or_else(|| msg.strip_prefix("invalid value: "))
    else {
        return msg.to_string();
    };
    let Some((found, expected)) = rest.rsplit_once(", expected ") else {
        return msg.to_string();
    };
    let expected = expected_words(expected, field.unwrap_or(""));
    let found = found_words(found);
    match field {
        Some(f) => format!("{f}: expected {expected}, found {found}"),
        None => format!("expected {expected}, found {found}"),
    }
}

/// serde's name of an expected type, in YAML words.
fn expected_words(expected: &str, field: &str) -> String {
    let integer = matches!(
        expected,
        "u8" | "u16"
            | "u32"
            | "u64"
            | "u128"
            | "usize"
            | "i8"
            | "i16"
            | "i32"
            | "i64"
            | "i128"
            | "isize"
    );
    let unsigned = expected.starts_with('u');
    if integer && field.ends_with("_ms") {
        return "an integer number of milliseconds".into();
    }
    match expected {
        "u8" => "a whole number from 0 to 255".into(),
        "u16" => "a whole number from 0 to 65535".into(),
        "u32" => "a whole number from 0 to 4294967295".into(),
        _ if integer && unsigned => "a whole number (0 or more)".into(),
        _ if integer => "an integer".into(),
        "f32" | "f64" => "a number".into(),
        "a boolean" => "true or false".into(),
        "a string" | "a borrowed string" | "a character" => "a string".into(),
        "a sequence" => "a list".into(),
        "a map" | "a mapping" => "a mapping (key: value)".into(),
        e if e.starts_with("struct ") => "a mapping (key: value)".into(),
        e => e.to_string(),
    }
}

/// serde's description of an unexpected value, in YAML words.
fn found_words(found: &str) -> String {
    let inner = |p: &str| {
        found
            .strip_prefix(p)
            .map(|v| v.trim_matches('`').to_string())
    };
    if let Some(s) = found.strip_prefix("string ") {
        return format!("the string {s}");
    }
    if let Some(v) = inner("integer ") {
        return format!("the integer {v}");
    }
    if let Some(v) = inner("floating point ") {
        return format!("the number {v}");
    }
    if let Some(v) = inner("boolean ") {
        return v;
    }
    match found {
        "sequence" => "a list".into(),
        "map" => "a mapping".into(),
        "unit value" => "nothing (null)".into(),
        f => f.to_string(),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}
