//! Reading config sources and splitting them into resources.
//!
//! Owns: walking files and directories, YAML parsing into positioned trees, the resource
//! envelope (`apiVersion`, `kind`, `metadata`, `spec`), dispatch to the schema of an
//! `apiVersion` (see [`schema_for`]), typed deserialization of each `spec`, and duplicate
//! names. Problems go to the [`Diags`] collector of `resource`.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::diag::Severity;
use crate::emissary;
use crate::model::{self, Metadata, Spec};
use crate::node::{self, Deserialized, Node, Pos, Value};
use crate::resource::{
    AUTH_SERVICE, Diags, HOST, JWT_PROVIDER, LISTENER, MAPPING, Parsed, RATE_LIMIT_SERVICE,
    Resource, Schema, UPSTREAM, display_name,
};

/// Where configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A YAML file, or a directory: every `*.yaml`/`*.yml` below it (sorted; hidden entries
    /// such as `.git` are skipped).
    Path(PathBuf),
    /// YAML text; `name` stands for the file name in diagnostics and `base_dir` resolves
    /// relative file paths (TLS certificates).
    Inline {
        name: String,
        text: String,
        base_dir: PathBuf,
    },
}

/// How many times one resource is re-deserialized after dropping an offending entry.
const RETRY_LIMIT: usize = 64;
/// How deep directories are walked (guards against symlink loops).
const MAX_DEPTH: usize = 32;

/// One config file's text.
pub(crate) struct SourceFile {
    pub name: Arc<str>,
    pub base_dir: Arc<Path>,
    pub text: String,
}

/// Reads every source; unreadable paths become diagnostics.
pub(crate) fn read_sources(sources: &[ConfigSource], d: &mut Diags) -> Vec<SourceFile> {
    let mut out = Vec::new();
    for src in sources {
        match src {
            ConfigSource::Inline {
                name,
                text,
                base_dir,
            } => out.push(SourceFile {
                name: name.as_str().into(),
                base_dir: Arc::from(absolute(base_dir).as_path()),
                text: text.clone(),
            }),
            ConfigSource::Path(path) => {
                let display = path.display().to_string();
                match fs::metadata(path) {
                    Ok(m) if m.is_dir() => {
                        let mut files = Vec::new();
                        walk(path, 0, &mut files, d);
                        files.sort();
                        if files.is_empty() {
                            d.add(
                                &display,
                                Pos::default(),
                                "-",
                                "-",
                                Severity::Warning,
                                "no *.yaml or *.yml files in this directory".to_string(),
                            );
                        }
                        for f in files {
                            read_file(&f, &mut out, d);
                        }
                    }
                    Ok(_) => read_file(path, &mut out, d),
                    Err(e) => d.add(
                        &display,
                        Pos::default(),
                        "-",
                        "-",
                        Severity::Error,
                        format!("cannot read: {e}"),
                    ),
                }
            }
        }
    }
    out
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>, d: &mut Diags) {
    if depth > MAX_DEPTH {
        return;
    }
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            let name = dir.display().to_string();
            d.add(
                &name,
                Pos::default(),
                "-",
                "-",
                Severity::Error,
                format!("cannot read directory: {e}"),
            );
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        // Hidden entries (`.git`, editor files) are skipped.
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        match fs::metadata(&path) {
            Ok(m) if m.is_dir() => walk(&path, depth + 1, out, d),
            Ok(_) => {
                let ext = path
                    .extension()
                    .and_then(|e| e.to_str())
                    .unwrap_or_default();
                if ext == "yaml" || ext == "yml" {
                    out.push(path);
                }
            }
            Err(_) => {}
        }
    }
}

fn read_file(path: &Path, out: &mut Vec<SourceFile>, d: &mut Diags) {
    let name = path.display().to_string();
    match fs::read_to_string(path) {
        Ok(text) => {
            let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
            out.push(SourceFile {
                name: name.into(),
                base_dir: Arc::from(absolute(&base).as_path()),
                text,
            });
        }
        Err(e) => d.add(
            &name,
            Pos::default(),
            "-",
            "-",
            Severity::Error,
            format!("cannot read: {e}"),
        ),
    }
}

/// `portico.dev/v1`.
struct PorticoV1;

fn typed<T: serde::de::DeserializeOwned>(
    spec: &mut Node,
    wrap: fn(T) -> Spec,
) -> Deserialized<Parsed> {
    let r = node::deserialize_all::<T>(spec, RETRY_LIMIT);
    Deserialized {
        value: r.value.map(|v| Parsed::Spec(wrap(v))),
        errors: r.errors,
        removed: r.removed,
    }
}

impl Schema for PorticoV1 {
    fn kinds(&self) -> &'static [&'static str] {
        &[
            LISTENER,
            HOST,
            MAPPING,
            UPSTREAM,
            RATE_LIMIT_SERVICE,
            AUTH_SERVICE,
            JWT_PROVIDER,
        ]
    }

    fn parse_spec(
        &self,
        kind: &str,
        spec: &mut Node,
        _warns: &mut Vec<(Pos, String)>,
    ) -> Option<(&'static str, Deserialized<Parsed>)> {
        Some(match kind {
            LISTENER => (LISTENER, typed::<model::ListenerSpec>(spec, Spec::Listener)),
            HOST => (HOST, typed::<model::HostSpec>(spec, Spec::Host)),
            MAPPING => (
                MAPPING,
                typed::<model::MappingSpec>(spec, |m| Spec::Mapping(Box::new(m))),
            ),
            UPSTREAM => (
                UPSTREAM,
                typed::<model::UpstreamSpec>(spec, |u| Spec::Upstream(Box::new(u))),
            ),
            RATE_LIMIT_SERVICE => (
                RATE_LIMIT_SERVICE,
                typed::<model::RateLimitServiceSpec>(spec, Spec::RateLimitService),
            ),
            AUTH_SERVICE => (
                AUTH_SERVICE,
                typed::<model::AuthServiceSpec>(spec, |a| Spec::AuthService(Box::new(a))),
            ),
            JWT_PROVIDER => (
                JWT_PROVIDER,
                typed::<model::JwtProviderSpec>(spec, |j| Spec::JWTProvider(Box::new(j))),
            ),
            _ => return None,
        })
    }
}

pub(crate) const PORTICO_V1: &str = "portico.dev/v1";
pub(crate) const EMISSARY_V3: &str = "getambassador.io/v3alpha1";
/// Kubernetes core `v1`: only `Secret` (for Emissary's `Host.tlsSecret`).
pub(crate) const KUBE_V1: &str = "v1";

/// The schema of an `apiVersion`: `Ok(None)` for an unknown one, `Err` for a known one that is
/// not implemented yet. A second schema is added here.
pub(crate) fn schema_for(api_version: &str) -> Result<Option<&'static dyn Schema>, String> {
    match api_version {
        PORTICO_V1 => Ok(Some(&PorticoV1)),
        EMISSARY_V3 => Ok(Some(&emissary::EmissaryV3)),
        KUBE_V1 => Ok(Some(&emissary::KubeV1)),
        v if v.starts_with("getambassador.io/") || v.ends_with(".getambassador.io/v3alpha1") => {
            Err(format!(
                "apiVersion `{v}` is not supported: Portico reads {PORTICO_V1} and \
                 {EMISSARY_V3} (convert older Emissary resources to {EMISSARY_V3} first)"
            ))
        }
        _ => Ok(None),
    }
}

/// `status` is Kubernetes bookkeeping (what the cluster observed): accepted and ignored.
const ENVELOPE_FIELDS: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];

/// How deep `kind: List` documents may nest.
const MAX_LIST_DEPTH: usize = 4;

/// Whether a document's `apiVersion` is one Portico reads: its own, Emissary's and the
/// Kubernetes core group (for `Secret`). Anything else (`apps/v1`, `rbac.authorization.k8s.io/v1`,
/// ...) belongs to another program.
fn owned_api_version(av: &str) -> bool {
    av == KUBE_V1 || av.contains("portico.dev") || av.contains("getambassador.io")
}

/// `Some((apiVersion, kind))` for a document of a kind Portico does not own (a Deployment, a
/// core `v1` Service or ConfigMap, ...), which is skipped.
pub(crate) fn foreign_kind(root: &Node) -> Option<(String, String)> {
    let av = root.get("apiVersion")?.as_str()?;
    let kind = root.get("kind")?.as_str()?;
    let foreign = if av == KUBE_V1 {
        kind != emissary::SECRET && kind != "List"
    } else {
        !owned_api_version(av)
    };
    foreign.then(|| (av.to_string(), kind.to_string()))
}

/// Expands Kubernetes `kind: List` documents (`apiVersion: v1`, `items: [...]`, what `kubectl
/// get -o yaml` prints for several resources) into their items, in order.
pub(crate) fn expand_lists(
    f: &SourceFile,
    doc: Node,
    depth: usize,
    out: &mut Vec<Node>,
    d: &mut Diags,
) {
    let is_list = doc.get("kind").and_then(Node::as_str) == Some("List")
        && doc.get("apiVersion").and_then(Node::as_str) == Some(KUBE_V1);
    if !is_list {
        out.push(doc);
        return;
    }
    if depth >= MAX_LIST_DEPTH {
        d.add(
            &f.name,
            doc.pos,
            "List",
            "-",
            Severity::Error,
            format!("List documents nest more than {MAX_LIST_DEPTH} deep"),
        );
        return;
    }
    let pos = doc.pos;
    let Value::Map(entries) = doc.value else {
        return;
    };
    let mut items = None;
    for (k, v) in entries {
        match k.as_str() {
            Some("items") => items = Some(v),
            Some("apiVersion" | "kind" | "metadata") => {}
            _ => d.add(
                &f.name,
                k.pos,
                "List",
                "-",
                Severity::Error,
                format!(
                    "unknown field `{}` in a List, expected one of `apiVersion`, `kind`, `metadata`, `items`",
                    k.as_text().unwrap_or_default()
                ),
            ),
        }
    }
    match items {
        None => {}
        Some(Node {
            value: Value::Null, ..
        }) => {}
        Some(Node {
            value: Value::Seq(items),
            ..
        }) => {
            for item in items {
                expand_lists(f, item, depth + 1, out, d);
            }
        }
        Some(other) => d.add(
            &f.name,
            other.pos,
            "List",
            "-",
            Severity::Error,
            format!(
                "invalid type: {}, expected a sequence for `items`",
                other.value.type_name()
            ),
        ),
    }
    let _ = pos;
}

/// The name of a document for messages: `NAME` or `NAMESPACE/NAME` (`-` when missing).
pub(crate) fn doc_name(root: &Node) -> String {
    let meta = root.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_text())
        .map(|n| n.into_owned())
        .unwrap_or_else(|| "-".to_string());
    let ns = meta
        .and_then(|m| m.get("namespace"))
        .and_then(|n| n.as_str());
    display_name(ns, &name)
}

/// A Kubernetes `Secret` keeps `type`/`data`/`stringData` at the top level: move them under
/// `spec` so the envelope stays uniform.
fn secret_envelope(root: &mut Node) {
    let is_secret = root.get("apiVersion").and_then(|v| v.as_str()) == Some(KUBE_V1)
        && root.get("kind").and_then(|v| v.as_str()) == Some("Secret");
    let pos = root.pos;
    let Value::Map(entries) = &mut root.value else {
        return;
    };
    if !is_secret || entries.iter().any(|(k, _)| k.as_str() == Some("spec")) {
        return;
    }
    let mut spec = Vec::new();
    let mut i = 0;
    while i < entries.len() {
        if matches!(entries[i].0.as_str(), Some("type" | "data" | "stringData")) {
            spec.push(entries.remove(i));
        } else {
            i += 1;
        }
    }
    let key_pos = spec.first().map_or(pos, |(k, _)| k.pos);
    entries.push((
        Node {
            pos: key_pos,
            value: Value::Str("spec".into()),
        },
        Node {
            pos: key_pos,
            value: Value::Map(spec),
        },
    ));
}

pub(crate) fn parse_document(
    f: &SourceFile,
    mut root: Node,
    order: usize,
    d: &mut Diags,
) -> Option<Resource> {
    let file = &f.name;
    secret_envelope(&mut root);
    let Value::Map(entries) = &root.value else {
        if !matches!(root.value, Value::Null) {
            d.add(
                file,
                root.pos,
                "-",
                "-",
                Severity::Error,
                format!("a resource must be a mapping with apiVersion, kind, metadata and spec, not a {}", root.value.type_name()),
            );
        }
        return None;
    };
    let kind_text = root
        .get("kind")
        .and_then(|k| k.as_str())
        .map(str::to_string);
    let diag_kind = kind_text.clone().unwrap_or_else(|| "-".to_string());
    let local_name = root
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_text())
        .map(|n| n.into_owned())
        .unwrap_or_else(|| "-".to_string());
    let diag_name = doc_name(&root);
    let err = |d: &mut Diags, pos: Pos, msg: String| {
        d.add(file, pos, &diag_kind, &diag_name, Severity::Error, msg)
    };

    let mut fatal = false;
    for (k, _) in entries {
        let key = k.as_text().unwrap_or_default();
        if !ENVELOPE_FIELDS.contains(&key.as_ref()) {
            err(
                d,
                k.pos,
                format!(
                    "unknown field `{key}`, expected one of `apiVersion`, `kind`, `metadata`, `spec`, `status`"
                ),
            );
        }
    }

    // apiVersion
    let schema = match root.get("apiVersion") {
        None => {
            err(
                d,
                root.pos,
                format!("missing field `apiVersion` (expected {PORTICO_V1} or {EMISSARY_V3})"),
            );
            None
        }
        Some(v) => match v.as_str() {
            None => {
                err(
                    d,
                    v.pos,
                    format!(
                        "invalid type: {}, expected a string for `apiVersion`",
                        v.value.type_name()
                    ),
                );
                None
            }
            Some(av) => match schema_for(av) {
                Ok(Some(s)) => Some(s),
                Ok(None) => {
                    err(
                        d,
                        v.pos,
                        format!(
                            "unknown apiVersion `{av}` (expected {PORTICO_V1} or {EMISSARY_V3})"
                        ),
                    );
                    None
                }
                Err(msg) => {
                    err(d, v.pos, msg);
                    None
                }
            },
        },
    };

    // kind
    match root.get("kind") {
        None => {
            err(d, root.pos, "missing field `kind`".to_string());
            fatal = true;
        }
        Some(k) if k.as_str().is_none() => {
            err(
                d,
                k.pos,
                format!(
                    "invalid type: {}, expected a string for `kind`",
                    k.value.type_name()
                ),
            );
            fatal = true;
        }
        Some(_) => {}
    }

    // metadata
    let mut removed = Vec::new();
    let mut has_name = false;
    let mut namespace = None;
    match root.get_mut("metadata") {
        None => err(
            d,
            root.pos,
            "missing field `metadata` (metadata.name is required)".to_string(),
        ),
        Some(meta) => {
            let r = node::deserialize_all::<Metadata>(meta, RETRY_LIMIT);
            for (pos, msg) in r.errors {
                err(d, pos, msg);
            }
            removed.extend(r.removed.iter().map(|p| format!("metadata.{p}")));
            let (name, ns) = r.value.map(|m| (m.name, m.namespace)).unwrap_or_default();
            match ns {
                Some(ns) if !valid_name(&ns) => err(
                    d,
                    meta.pos_of(&["namespace"]),
                    format!(
                        "invalid namespace `{ns}` (use letters, digits, `-`, `_` and `.`, \
                         starting and ending with a letter or digit)"
                    ),
                ),
                ns => namespace = ns,
            }
            match name {
                Some(n) if n.trim().is_empty() => err(
                    d,
                    meta.pos_of(&["name"]),
                    "metadata.name must not be empty".to_string(),
                ),
                Some(n) if !valid_name(&n) => err(
                    d,
                    meta.pos_of(&["name"]),
                    format!(
                        "invalid name `{n}` (use letters, digits, `-`, `_` and `.`, \
                         starting and ending with a letter or digit)"
                    ),
                ),
                Some(_) => has_name = true,
                None if !removed.iter().any(|p| p == "metadata.name") => {
                    let pos = root.key_pos_of(&["metadata"]);
                    err(
                        d,
                        pos,
                        "missing field `name` in metadata (metadata.name is required)".to_string(),
                    );
                }
                None => {}
            }
        }
    }
    let name = if has_name {
        diag_name.clone()
    } else {
        "-".to_string()
    };
    let local_name = if has_name {
        local_name
    } else {
        "-".to_string()
    };

    let (schema, kind_text) = match (schema, kind_text) {
        (Some(s), Some(k)) if !fatal => (s, k),
        _ => return None,
    };

    // spec
    let spec_pos = root.key_pos_of(&["spec"]);
    let mut spec_node = match root.get_mut("spec") {
        Some(s) => std::mem::replace(
            s,
            Node {
                pos: spec_pos,
                value: Value::Null,
            },
        ),
        None => Node {
            pos: root.pos,
            value: Value::Null,
        },
    };
    if matches!(spec_node.value, Value::Null) {
        spec_node.value = Value::Map(Vec::new());
    }
    if !matches!(spec_node.value, Value::Map(_)) {
        let msg = format!(
            "invalid type: {}, expected a mapping for `spec`",
            spec_node.value.type_name()
        );
        err(d, spec_node.pos, msg);
        return None;
    }
    let mut warns = Vec::new();
    let Some((kind, parsed)) = schema.parse_spec(&kind_text, &mut spec_node, &mut warns) else {
        let pos = root.pos_of(&["kind"]);
        err(
            d,
            pos,
            format!(
                "unknown kind `{kind_text}` (expected one of {})",
                schema.kinds().join(", ")
            ),
        );
        return None;
    };
    for (pos, msg) in parsed.errors {
        err(d, pos, msg);
    }
    for (pos, msg) in warns {
        d.add(file, pos, kind, &name, Severity::Warning, msg);
    }
    removed.extend(parsed.removed.iter().map(|p| format!("spec.{p}")));
    let (spec, emissary) = match parsed.value {
        Some(Parsed::Spec(s)) => (Some(s), None),
        Some(Parsed::Emissary(e)) => (None, Some(e)),
        None => (None, None),
    };
    if let Some(s) = root.get_mut("spec") {
        *s = spec_node;
    }
    Some(Resource {
        kind,
        name,
        namespace,
        local_name,
        file: f.name.clone(),
        base_dir: f.base_dir.clone(),
        root: Arc::new(root),
        spec: spec.map(Arc::new),
        emissary: emissary.map(Arc::from),
        removed,
        order,
    })
}

/// Resource names: ASCII letters, digits, `-`, `_`, `.`; alphanumeric at both ends (so they
/// never look like a `host:port` or a URL).
fn valid_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= 253
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// A resource's identity is (namespace, kind, name), the namespace `default` when absent: the
/// same name in two namespaces is not a duplicate.
pub(crate) fn check_duplicate_names(resources: &[Resource], d: &mut Diags) {
    let mut seen: HashMap<(&str, &str, &str), &Resource> = HashMap::with_capacity(resources.len());
    for r in resources {
        if r.local_name == "-" {
            continue;
        }
        let key = (r.namespace_or_default(), r.kind, r.local_name.as_str());
        match seen.get(&key) {
            Some(first) => {
                let at = first.loc(&["metadata", "name"]);
                r.error(
                    d,
                    &["metadata", "name"],
                    format!(
                        "duplicate {} name `{}` (first defined at {at})",
                        r.kind,
                        display_name(Some(r.namespace_or_default()), &r.local_name)
                            .trim_start_matches("default/")
                    ),
                );
            }
            None => {
                seen.insert(key, r);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "quote", "quote-v2", "Quote_1.x", "9"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "a:80", "a b", "http://x", "é"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn schemas() {
        assert!(matches!(schema_for(PORTICO_V1), Ok(Some(_))));
        assert!(matches!(schema_for(EMISSARY_V3), Ok(Some(_))));
        assert!(matches!(schema_for("v2"), Ok(None)));
    }
}
