//! Keeps `docs/configuration.md` honest against the typed schema in `src/model.rs`.
//!
//! The schema is read from the *source text* of `model.rs` (no change to the model needed):
//! every struct marked `#[serde(deny_unknown_fields)]` is an object the config accepts, its
//! fields (honouring `#[serde(rename = "...")]`) the keys it accepts; `pub enum Spec` lists the
//! kinds; other `enum`s (with `rename`/`rename_all`) give the accepted enum values.
//!
//! The reference documents each object as a table headed `| field | type | default | meaning |`
//! whose first column is the backticked key. Checked:
//! - every schema object has a table listing exactly its keys, and every such table is exactly
//!   the key set of some schema object (nothing missing, nothing stale or misspelt);
//! - each row's type column agrees with the Rust type (`bool`, `integer`, `number`, `string`,
//!   `map`, `list`, `object`, `enum`), and an enum row names every accepted value;
//! - every kind has a `## Kind: NAME` section holding its spec table, every such section is a
//!   real kind, and every `kind:` in a YAML example is a real kind.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug)]
struct Field {
    name: String,
    ty: String,
}

#[derive(Debug, Default)]
struct Schema {
    /// `deny_unknown_fields` structs: name -> fields.
    structs: BTreeMap<String, Vec<Field>>,
    /// Enums: name -> accepted (serde) values.
    enums: BTreeMap<String, Vec<String>>,
    /// `Spec` variants: kind -> spec struct.
    kinds: BTreeMap<String, String>,
}

fn read(rel: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The quoted value of `key = "..."` in an attribute line.
fn attr_value(line: &str, key: &str) -> Option<String> {
    let at = line.find(&format!("{key} = \""))?;
    let rest = &line[at + key.len() + 4..];
    rest.split('"').next().map(str::to_string)
}

fn snake_case(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn ident(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

fn parse_model(src: &str) -> Schema {
    enum In {
        Nothing,
        Struct(String),
        Enum(String, Option<String>),
        Spec,
    }
    let mut schema = Schema::default();
    let mut state = In::Nothing;
    let mut deny = false;
    let mut rename_all: Option<String> = None;
    let mut rename: Option<String> = None;
    for line in src.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with("//") {
            continue;
        }
        match &mut state {
            In::Struct(name) => {
                if t == "}" {
                    state = In::Nothing;
                } else if t.starts_with("#[serde(") {
                    assert!(
                        !t.contains("flatten") && !t.contains("alias"),
                        "docs_schema.rs does not understand `{t}` in model.rs; teach it"
                    );
                    rename = attr_value(t, "rename");
                } else if !t.starts_with("#[") {
                    let decl = t.strip_prefix("pub ").unwrap_or(t);
                    if let Some((f, ty)) = decl.split_once(':') {
                        let field = Field {
                            name: rename.take().unwrap_or_else(|| f.trim().to_string()),
                            ty: ty.trim().trim_end_matches(',').to_string(),
                        };
                        schema.structs.get_mut(name.as_str()).unwrap().push(field);
                    }
                }
                continue;
            }
            In::Enum(name, all) => {
                if t == "}" {
                    state = In::Nothing;
                } else if t.starts_with("#[serde(") {
                    rename = attr_value(t, "rename");
                } else if !t.starts_with("#[") {
                    let v = ident(t);
                    let value = rename.take().unwrap_or_else(|| match all.as_deref() {
                        Some("snake_case") => snake_case(&v),
                        Some("lowercase") => v.to_ascii_lowercase(),
                        Some(other) => panic!("rename_all = {other:?}: teach docs_schema.rs"),
                        None => v.clone(),
                    });
                    schema.enums.get_mut(name.as_str()).unwrap().push(value);
                }
                continue;
            }
            In::Spec => {
                if t == "}" {
                    state = In::Nothing;
                } else if let Some((kind, ty)) = t.split_once('(') {
                    let ty = ty.trim_end_matches(',').trim_end_matches(')');
                    let ty = ty.strip_prefix("Box<").unwrap_or(ty).trim_end_matches('>');
                    schema.kinds.insert(kind.to_string(), ty.to_string());
                }
                continue;
            }
            In::Nothing => {}
        }
        if t.starts_with("#[serde(") {
            deny |= t.contains("deny_unknown_fields");
            if let Some(v) = attr_value(t, "rename_all") {
                rename_all = Some(v);
            }
            continue;
        }
        if t.starts_with("#[") || t.starts_with("///") {
            continue;
        }
        let decl = t.strip_prefix("pub ").unwrap_or(t);
        if let Some(rest) = decl.strip_prefix("struct ") {
            let name = ident(rest);
            if deny {
                schema.structs.insert(name.clone(), Vec::new());
                if !rest.trim_end().ends_with("{}") {
                    state = In::Struct(name);
                }
            }
        } else if let Some(rest) = decl.strip_prefix("enum ") {
            let name = ident(rest);
            if name == "Spec" {
                state = In::Spec;
            } else if rest.contains('{') {
                schema.enums.insert(name.clone(), Vec::new());
                state = In::Enum(name, rename_all.clone());
            }
        }
        deny = false;
        rename_all = None;
        rename = None;
    }
    schema
}

/// One `| field | type | default | meaning |` table of the reference.
#[derive(Debug)]
struct Table {
    line: usize,
    section: String,
    rows: Vec<(String, String)>,
}

#[derive(Debug, Default)]
struct Doc {
    tables: Vec<Table>,
    /// `## Kind: NAME` sections.
    kind_sections: Vec<String>,
    /// `kind: NAME` lines in fenced YAML examples (line number, kind).
    yaml_kinds: Vec<(usize, String)>,
}

fn cells(line: &str) -> Vec<String> {
    let l = line.trim().replace("\\|", "\u{0}");
    let inner = l.trim_start_matches('|').trim_end_matches('|');
    inner
        .split('|')
        .map(|c| c.trim().replace('\u{0}', "|"))
        .collect()
}

fn parse_doc(text: &str) -> Doc {
    let mut doc = Doc::default();
    let mut section = String::new();
    let mut in_yaml = false;
    let mut in_fence = false;
    let mut table: Option<Table> = None;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let t = line.trim();
        if t.starts_with("```") {
            in_yaml = !in_fence && t.trim_start_matches('`').starts_with("yaml");
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            if in_yaml && let Some(k) = t.strip_prefix("kind:") {
                doc.yaml_kinds.push((n, k.trim().to_string()));
            }
            continue;
        }
        if let Some(tb) = table.as_mut() {
            if t.starts_with('|') {
                if t.starts_with("| ---") || t.starts_with("|---") {
                    continue;
                }
                let c = cells(t);
                let name = c[0]
                    .strip_prefix('`')
                    .and_then(|s| s.strip_suffix('`'))
                    .unwrap_or_else(|| panic!("configuration.md:{n}: first cell must be `field`"));
                tb.rows
                    .push((name.to_string(), c.get(1).cloned().unwrap_or_default()));
                continue;
            }
            doc.tables.push(table.take().unwrap());
        }
        if let Some(h) = t.strip_prefix("## ") {
            section = h.trim().to_string();
            if let Some(k) = section.strip_prefix("Kind: ") {
                doc.kind_sections.push(k.trim().to_string());
            }
        }
        if t.starts_with('|') && cells(t) == ["field", "type", "default", "meaning"] {
            table = Some(Table {
                line: n,
                section: section.clone(),
                rows: Vec::new(),
            });
        }
    }
    doc.tables.extend(table);
    doc
}

fn inner_type(ty: &str) -> &str {
    let ty = ty.trim();
    let ty = ty
        .strip_prefix("Option<")
        .and_then(|s| s.strip_suffix('>'))
        .unwrap_or(ty);
    // A boxed field reads as what it boxes.
    ty.strip_prefix("Box<")
        .and_then(|s| s.strip_suffix('>'))
        .unwrap_or(ty)
}

/// The word the type column must contain for a Rust field type.
fn expected_type<'a>(schema: &'a Schema, ty: &str) -> (&'static str, Option<&'a Vec<String>>) {
    let t = inner_type(ty);
    let word = match t {
        "bool" => "bool",
        "u16" | "u32" | "u64" | "i32" | "i64" => "integer",
        "f64" => "number",
        "String" => "string",
        "de::IgnoredAny" | "IgnoredAny" => "any",
        _ if t.starts_with("Pairs<") => "map",
        _ if t.starts_with("Vec<") || t == "StrList" => "list",
        _ if schema.structs.contains_key(t) => "object",
        _ if schema.enums.contains_key(t) => return ("enum", schema.enums.get(t)),
        _ => panic!("docs_schema.rs: no doc type for Rust type `{ty}`; teach expected_type"),
    };
    (word, None)
}

#[test]
fn configuration_reference_matches_the_schema() {
    let schema = parse_model(&read("src/model.rs"));
    let doc = parse_doc(&read("../../docs/configuration.md"));

    // Guard the parser itself: a silent parse failure must not pass the check.
    assert!(schema.structs.len() >= 25, "{:?}", schema.structs.keys());
    assert!(schema.structs["MappingSpec"].len() >= 35);
    assert_eq!(schema.kinds.len(), 7, "{:?}", schema.kinds);
    assert!(schema.enums["LbPolicyM"].contains(&"round_robin".to_string()));
    assert!(
        schema.structs["HostSpec"]
            .iter()
            .any(|f| f.name == "requestPolicy")
    );
    assert!(doc.tables.len() >= 20, "{} tables found", doc.tables.len());

    let mut problems = Vec::new();
    let set = |names: Vec<&String>| names.into_iter().cloned().collect::<BTreeSet<String>>();

    // Every schema object has a table with exactly its keys.
    let mut matched: BTreeMap<&str, Vec<&Table>> = BTreeMap::new();
    for table in &doc.tables {
        let keys = set(table.rows.iter().map(|r| &r.0).collect());
        if keys.len() != table.rows.len() {
            problems.push(format!(
                "configuration.md:{}: a field is listed twice",
                table.line
            ));
        }
        let exact: Vec<&String> = schema
            .structs
            .iter()
            .filter(|(_, f)| !f.is_empty() && set(f.iter().map(|f| &f.name).collect()) == keys)
            .map(|(s, _)| s)
            .collect();
        match exact.first() {
            Some(s) => {
                for s in &exact {
                    matched.entry(s.as_str()).or_default().push(table);
                }
                // Types of the rows.
                let fields = &schema.structs[s.as_str()];
                for (name, ty_cell) in &table.rows {
                    let f = fields.iter().find(|f| &f.name == name).unwrap();
                    let (word, values) = expected_type(&schema, &f.ty);
                    if !ty_cell.contains(word) {
                        problems.push(format!(
                            "configuration.md:{}: `{name}` ({s}): type column `{ty_cell}` should say `{word}`",
                            table.line
                        ));
                    }
                    for v in values.into_iter().flatten() {
                        if !ty_cell.contains(&format!("`{v}`")) {
                            problems.push(format!(
                                "configuration.md:{}: `{name}` ({s}): enum value `{v}` is not listed in `{ty_cell}`",
                                table.line
                            ));
                        }
                    }
                }
            }
            None => {
                // Name the closest object to make the fix obvious.
                let (s, fields) = schema
                    .structs
                    .iter()
                    .max_by_key(|(_, f)| f.iter().filter(|f| keys.contains(&f.name)).count())
                    .unwrap();
                let want = set(fields.iter().map(|f| &f.name).collect());
                let missing: Vec<_> = want.difference(&keys).collect();
                let stale: Vec<_> = keys.difference(&want).collect();
                problems.push(format!(
                    "configuration.md:{} (section `{}`): table matches no schema object; closest is {s}: missing {missing:?}, not in the schema {stale:?}",
                    table.line, table.section
                ));
            }
        }
    }
    for (s, fields) in &schema.structs {
        if !fields.is_empty() && !matched.contains_key(s.as_str()) {
            let names: Vec<&String> = fields.iter().map(|f| &f.name).collect();
            problems.push(format!(
                "model.rs `{s}` (fields {names:?}) has no `| field | type | default | meaning |` table in configuration.md"
            ));
        }
    }

    // Kinds.
    for (kind, spec) in &schema.kinds {
        if !doc.kind_sections.contains(kind) {
            problems.push(format!("configuration.md has no `## Kind: {kind}` section"));
        }
        let in_section = matched
            .get(spec.as_str())
            .is_some_and(|ts| ts.iter().any(|t| t.section == format!("Kind: {kind}")));
        if !in_section {
            problems.push(format!(
                "the `{spec}` table must be in the `## Kind: {kind}` section"
            ));
        }
    }
    for k in &doc.kind_sections {
        if !schema.kinds.contains_key(k) {
            problems.push(format!(
                "configuration.md documents kind `{k}`, which model.rs's `Spec` does not have"
            ));
        }
    }
    for (n, k) in &doc.yaml_kinds {
        if !schema.kinds.contains_key(k) {
            problems.push(format!(
                "configuration.md:{n}: YAML example uses unknown kind `{k}`"
            ));
        }
    }

    assert!(
        problems.is_empty(),
        "docs/configuration.md has drifted from src/model.rs:\n  {}",
        problems.join("\n  ")
    );
}

/// The parser must see what serde sees: spot checks on known fields.
#[test]
fn model_parser_spot_checks() {
    let schema = parse_model(&read("src/model.rs"));
    let names = |s: &str| -> Vec<String> {
        schema.structs[s]
            .iter()
            .map(|f| f.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names("RegexRewriteM"), ["pattern", "substitution"]);
    assert_eq!(names("EndpointObj"), ["address", "weight"]);
    assert_eq!(names("HeaderAddObj"), ["value", "append"]);
    assert!(schema.structs["TcpCheckM"].is_empty());
    assert!(!schema.structs.contains_key("Pairs"));
    assert_eq!(
        schema.enums["ListenerProtocolM"],
        ["HTTP", "HTTPS", "HTTPPROXY", "HTTPSPROXY"]
    );
    assert_eq!(
        schema.enums["UpstreamProtocolM"],
        ["http1", "h2c", "https", "auto"]
    );
    assert_eq!(schema.enums["TlsVersionM"], ["v1.2", "v1.3"]);
    assert_eq!(schema.kinds["Mapping"], "MappingSpec");
    assert_eq!(schema.kinds["RateLimitService"], "RateLimitServiceSpec");
}
