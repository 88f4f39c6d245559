//! A resource document and where its problems go.
//!
//! Owns the [`Diags`] collector every stage reports into, the typed [`Resource`] (envelope,
//! positioned tree, spec) with its error/warning helpers that point at a key or value, the kind
//! names, and the [`Schema`] trait an `apiVersion` implements. Loading (`load`), compilation
//! (`compile`) and the Emissary translation (`emissary`) all depend on this module and on none
//! of each other's internals.

use std::path::Path;
use std::sync::Arc;

use crate::diag::{Diagnostic, Severity};
use crate::emissary::schema::EmSpec;
use crate::model::Spec;
use crate::node::{Deserialized, Node, Pos};

/// Collects diagnostics.
#[derive(Debug, Default)]
pub(crate) struct Diags {
    pub list: Vec<Diagnostic>,
}

impl Diags {
    pub fn add(
        &mut self,
        file: &str,
        pos: Pos,
        kind: &str,
        name: &str,
        severity: Severity,
        message: String,
    ) {
        self.list.push(Diagnostic {
            file: file.to_string(),
            line: pos.line.max(1),
            column: pos.col.max(1),
            kind: kind.to_string(),
            name: name.to_string(),
            severity,
            message,
        });
    }
}

/// The namespace of a resource without `metadata.namespace`.
pub(crate) const DEFAULT_NAMESPACE: &str = "default";

/// How a resource is named in messages: `NAME`, or `NAMESPACE/NAME` when it has a namespace.
pub(crate) fn display_name(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

/// Resource kinds.
pub(crate) const LISTENER: &str = "Listener";
pub(crate) const HOST: &str = "Host";
pub(crate) const MAPPING: &str = "Mapping";
pub(crate) const UPSTREAM: &str = "Upstream";
pub(crate) const RATE_LIMIT_SERVICE: &str = "RateLimitService";
pub(crate) const AUTH_SERVICE: &str = "AuthService";
pub(crate) const JWT_PROVIDER: &str = "JWTProvider";

/// One resource document, typed. Cheap to clone: the tree and the specs are shared (a
/// cached file's resources are cloned into every load that reuses them).
#[derive(Clone)]
pub(crate) struct Resource {
    pub kind: &'static str,
    /// `metadata.name`, or `-` when missing; `NAMESPACE/NAME` when `metadata.namespace` is set
    /// (how messages, metric labels and the access log name the resource).
    pub name: String,
    /// `metadata.namespace` as written (`None`: the `default` namespace).
    pub namespace: Option<String>,
    /// `metadata.name` alone (`-` when missing).
    pub local_name: String,
    pub file: Arc<str>,
    pub base_dir: Arc<Path>,
    /// The document (offending entries removed).
    pub root: Arc<Node>,
    /// `None` when the spec could not be deserialized at all (or is an Emissary document).
    pub spec: Option<Arc<Spec>>,
    /// An Emissary document before (or instead of) translation; see `emissary::resolve`.
    pub emissary: Option<Arc<EmSpec>>,
    /// Dotted paths (from the document root, e.g. `spec.port`) dropped because of an error.
    pub removed: Vec<String>,
    /// Position among all resources (file order).
    pub order: usize,
}

impl Resource {
    /// The namespace of the resource's identity: `default` when none is written.
    pub fn namespace_or_default(&self) -> &str {
        self.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
    }

    fn emit(&self, d: &mut Diags, pos: Pos, severity: Severity, message: String) {
        d.add(&self.file, pos, self.kind, &self.name, severity, message);
    }

    /// An error at the value at `path` (or the nearest existing ancestor).
    pub fn error(&self, d: &mut Diags, path: &[&str], message: impl Into<String>) {
        self.emit(d, self.root.pos_of(path), Severity::Error, message.into());
    }

    /// An error at the key of `path`.
    pub fn error_key(&self, d: &mut Diags, path: &[&str], message: impl Into<String>) {
        self.emit(
            d,
            self.root.key_pos_of(path),
            Severity::Error,
            message.into(),
        );
    }

    pub fn warn(&self, d: &mut Diags, path: &[&str], message: impl Into<String>) {
        self.emit(
            d,
            self.root.key_pos_of(path),
            Severity::Warning,
            message.into(),
        );
    }

    /// A missing required field (`path` ends with the field): reported at the key of its parent,
    /// unless the field was dropped because of an earlier error.
    pub fn missing(&self, d: &mut Diags, path: &[&str], message: impl Into<String>) {
        if self.was_removed(path) {
            return;
        }
        let parent = &path[..path.len().saturating_sub(1)];
        self.emit(
            d,
            self.root.key_pos_of(parent),
            Severity::Error,
            message.into(),
        );
    }

    /// Whether `path` or one of its ancestors was dropped because of an error.
    pub fn was_removed(&self, path: &[&str]) -> bool {
        let joined = path.join(".");
        self.removed.iter().any(|r| {
            joined == *r
                || (joined.starts_with(r.as_str()) && joined.as_bytes().get(r.len()) == Some(&b'.'))
        })
    }

    /// `file:line` of the value at `path`, for messages naming another resource.
    pub fn loc(&self, path: &[&str]) -> String {
        format!("{}:{}", self.file, self.root.pos_of(path).line)
    }
}

/// What a schema makes of a `spec`: a typed `portico.dev/v1` spec, or an Emissary document
/// that `emissary::resolve` translates once every file is read.
pub(crate) enum Parsed {
    Spec(Spec),
    Emissary(Box<EmSpec>),
}

/// What an `apiVersion` understands.
pub(crate) trait Schema: Sync {
    /// The kinds of this schema (for messages).
    fn kinds(&self) -> &'static [&'static str];
    /// Deserializes the `spec` of `kind`; `None` when the kind is unknown. Warnings (fields
    /// accepted but ignored) go to `warns`.
    fn parse_spec(
        &self,
        kind: &str,
        spec: &mut Node,
        warns: &mut Vec<(Pos, String)>,
    ) -> Option<(&'static str, Deserialized<Parsed>)>;
}
