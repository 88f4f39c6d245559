//! Parsing config files one by one, in parallel, and remembering the result.
//!
//! Each file is parsed on its own ([`parse_file`]: YAML, `kind: List` expansion, the envelope
//! and the typed `spec` of each document), which needs nothing from the other files. What does
//! need them (one warning per foreign kind, duplicate names, the Emissary translation) happens
//! afterwards, in file order, so diagnostics come out exactly as when the files are parsed one
//! after the other. Files are spread over the available cores with `std::thread::scope`.
//!
//! A [`ParseCache`] keeps each file's result, keyed by its name, base directory and exact
//! text, so a reload parses only the files that changed. The text is always read and compared
//! (a hash, then the bytes): size and mtime alone would miss an edit of the same size within
//! the filesystem's timestamp granularity, and a file only touched is still reused.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::diag::{Diagnostic, Severity};
use crate::load::{self, SourceFile};
use crate::node::{self, Pos};
use crate::resource::{Diags, Resource};

/// What parsing one file produced: its resources (`order` counts from 0 within the file) and,
/// in the order they arose, its diagnostics and its documents of foreign kinds (whose warning
/// depends on the files before it).
pub(crate) struct FileParse {
    resources: Vec<Resource>,
    events: Vec<Event>,
}

enum Event {
    Diag(Diagnostic),
    /// A document of a kind Portico does not read: `(apiVersion, kind)`, where and which.
    Foreign {
        api_version: String,
        kind: String,
        pos: Pos,
        name: String,
    },
}

/// Parses one file into resources, on its own.
fn parse_file(f: &SourceFile) -> FileParse {
    let mut d = Diags::default();
    let mut events = Vec::new();
    let mut resources = Vec::new();
    let docs = match node::parse_documents(&f.text) {
        Ok(docs) => docs,
        Err(e) => {
            d.add(
                &f.name,
                e.pos,
                "-",
                "-",
                Severity::Error,
                format!("invalid YAML: {}", e.message),
            );
            events.extend(d.list.into_iter().map(Event::Diag));
            return FileParse { resources, events };
        }
    };
    let mut expanded = Vec::with_capacity(docs.len());
    for doc in docs {
        load::expand_lists(f, doc, 0, &mut expanded, &mut d);
    }
    for doc in expanded {
        if let Some((api_version, kind)) = load::foreign_kind(&doc) {
            events.extend(d.list.drain(..).map(Event::Diag));
            events.push(Event::Foreign {
                api_version,
                kind,
                pos: doc.pos_of(&["kind"]),
                name: load::doc_name(&doc),
            });
            continue;
        }
        if let Some(r) = load::parse_document(f, doc, resources.len(), &mut d) {
            resources.push(r);
        }
    }
    events.extend(d.list.into_iter().map(Event::Diag));
    FileParse { resources, events }
}

/// Parses every file into resources (before `check_duplicate_names` and `emissary::resolve`,
/// which need them all), reusing what `cache` holds for unchanged files and keeping in it
/// what this call parsed (and nothing else: files no longer read are forgotten).
pub(crate) fn parse_files(
    files: &[SourceFile],
    d: &mut Diags,
    strict_kinds: bool,
    cache: Option<&ParseCache>,
) -> ParseStats {
    let mut stats = ParseStats::default();
    let old = cache.map(ParseCache::take).unwrap_or_default();
    let hasher = ahash::RandomState::with_seeds(1, 2, 3, 4);
    let keys: Vec<u64> = files
        .iter()
        .map(|f| hasher.hash_one((&*f.name, &*f.base_dir, f.text.as_str())))
        .collect();
    let mut parsed: Vec<Option<Arc<FileParse>>> = files
        .iter()
        .zip(&keys)
        .map(|(f, key)| {
            old.get(key)
                .filter(|e| e.name == f.name && e.base_dir == f.base_dir && e.text == f.text)
                .map(|e| e.parse.clone())
        })
        .collect();
    stats.reused = parsed.iter().flatten().count();
    let todo: Vec<usize> = (0..files.len()).filter(|&i| parsed[i].is_none()).collect();
    stats.parsed = todo.len();
    for (i, p) in parse_in_parallel(files, &todo) {
        parsed[i] = Some(Arc::new(p));
    }

    let mut out = Vec::new();
    let mut foreign_seen: HashSet<(String, String)> = HashSet::new();
    let mut next = HashMap::with_capacity(files.len());
    for ((f, key), p) in files.iter().zip(keys).zip(parsed) {
        let Some(p) = p else { continue };
        replay(f, &p, strict_kinds, &mut foreign_seen, d);
        let base = out.len();
        out.extend(p.resources.iter().map(|r| {
            let mut r = r.clone();
            r.order += base;
            r
        }));
        next.insert(
            key,
            Entry {
                name: f.name.clone(),
                base_dir: f.base_dir.clone(),
                text: f.text.clone(),
                parse: p,
            },
        );
    }
    if let Some(c) = cache {
        c.put(next);
    }
    stats.resources = out;
    stats
}

/// The diagnostics of one parsed file, in order, with the foreign-kind rule applied: with
/// `strict_kinds` every such document is an error, otherwise the first of each kind (over all
/// files so far) gets one warning.
fn replay(
    f: &SourceFile,
    p: &FileParse,
    strict_kinds: bool,
    seen: &mut HashSet<(String, String)>,
    d: &mut Diags,
) {
    for ev in &p.events {
        match ev {
            Event::Diag(x) => d.list.push(x.clone()),
            Event::Foreign {
                api_version: av,
                kind,
                pos,
                name,
            } => {
                if strict_kinds {
                    d.add(
                        &f.name,
                        *pos,
                        kind,
                        name,
                        Severity::Error,
                        format!(
                            "kind `{kind}` ({av}) is not a kind Portico reads (--strict-kinds makes \
                             such documents errors instead of skipping them)"
                        ),
                    );
                } else if seen.insert((av.clone(), kind.clone())) {
                    d.add(
                        &f.name,
                        *pos,
                        kind,
                        name,
                        Severity::Warning,
                        format!(
                            "kind `{kind}` ({av}) is not a kind Portico reads: every {kind} is \
                             skipped (--strict-kinds makes this an error)"
                        ),
                    );
                }
            }
        }
    }
}

/// Parses `files[i]` for each `i` in `todo` on up to as many threads as there are cores; each
/// thread takes the next file when it is done with one (files differ in size).
fn parse_in_parallel(files: &[SourceFile], todo: &[usize]) -> Vec<(usize, FileParse)> {
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(todo.len());
    if threads <= 1 {
        return todo.iter().map(|&i| (i, parse_file(&files[i]))).collect();
    }
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        while let Some(&i) = todo.get(next.fetch_add(1, Ordering::Relaxed)) {
            done.push((i, parse_file(&files[i])));
        }
        done
    };
    std::thread::scope(|s| {
        let helpers: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
        let mut all = work();
        for h in helpers {
            match h.join() {
                Ok(done) => all.extend(done),
                // A panic while parsing is a bug; with `panic = "abort"` it never gets here.
                // Otherwise re-raise it on the caller's thread.
                Err(e) => std::panic::resume_unwind(e),
            }
        }
        all
    })
}

/// What [`parse_files`] did.
#[derive(Default)]
pub(crate) struct ParseStats {
    pub resources: Vec<Resource>,
    /// Files parsed this time.
    pub parsed: usize,
    /// Files whose earlier result was reused.
    pub reused: usize,
}

struct Entry {
    name: Arc<str>,
    base_dir: Arc<Path>,
    text: String,
    parse: Arc<FileParse>,
}

/// Each config file's parsed resources from the previous load, so that a reload parses only
/// the files that changed (see the module documentation). Holds the files of the last load
/// only. Safe to share; loads that overlap just reuse less.
#[derive(Default)]
pub struct ParseCache {
    files: Mutex<HashMap<u64, Entry>>,
}

impl std::fmt::Debug for ParseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.files.lock().map_or(0, |m| m.len());
        f.debug_struct("ParseCache").field("files", &n).finish()
    }
}

impl ParseCache {
    pub fn new() -> ParseCache {
        ParseCache::default()
    }

    fn take(&self) -> HashMap<u64, Entry> {
        self.files
            .lock()
            .map(|mut m| std::mem::take(&mut *m))
            .unwrap_or_default()
    }

    fn put(&self, files: HashMap<u64, Entry>) {
        if let Ok(mut m) = self.files.lock() {
            *m = files;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, text: &str) -> SourceFile {
        SourceFile {
            name: name.into(),
            base_dir: Arc::from(Path::new("/")),
            text: text.into(),
        }
    }

    #[test]
    fn empty_documents_are_skipped() {
        let mut d = Diags::default();
        let r = parse_files(&[file("x", "---\n---\n")], &mut d, false, None);
        assert!(r.resources.is_empty());
        assert!(d.list.is_empty());
    }

    const MAPPING: &str = "apiVersion: portico.dev/v1\nkind: Mapping\nmetadata: {name: a}\nspec: {prefix: /a/, service: x:80}\n";
    const FOREIGN: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n";

    #[test]
    fn unchanged_files_are_reused_and_orders_follow_the_files() {
        let cache = ParseCache::new();
        let a = file("a.yaml", MAPPING);
        let b = file("b.yaml", &MAPPING.replace("name: a", "name: b"));
        let mut d = Diags::default();
        let r = parse_files(&[a, b], &mut d, false, Some(&cache));
        assert_eq!((r.parsed, r.reused), (2, 0));
        // A new first file: b is reused and its resource now comes third.
        let z = file("0.yaml", &format!("{MAPPING}---\n{MAPPING}"));
        let a = file("a.yaml", MAPPING);
        let b = file("b.yaml", &MAPPING.replace("name: a", "name: b"));
        let r = parse_files(&[z, a, b], &mut d, false, Some(&cache));
        assert_eq!((r.parsed, r.reused), (1, 2));
        let orders: Vec<(usize, &str)> = r
            .resources
            .iter()
            .map(|r| (r.order, r.name.as_str()))
            .collect();
        assert_eq!(orders, [(0, "a"), (1, "a"), (2, "a"), (3, "b")]);
        // The same name with other text, and a file dropped: parsed again, forgotten.
        let b = file("b.yaml", &MAPPING.replace("name: a", "name: c"));
        let r = parse_files(&[b], &mut d, false, Some(&cache));
        assert_eq!((r.parsed, r.reused), (1, 0));
        assert_eq!(cache.files.lock().map(|m| m.len()).unwrap_or(0), 1);
    }

    #[test]
    fn foreign_kinds_are_warned_once_over_all_files_even_when_cached() {
        let cache = ParseCache::new();
        let files = || [file("a.yaml", FOREIGN), file("b.yaml", FOREIGN)];
        for _ in 0..2 {
            let mut d = Diags::default();
            parse_files(&files(), &mut d, false, Some(&cache));
            let at: Vec<String> = d.list.iter().map(|x| x.to_string()).collect();
            assert_eq!(at.len(), 1, "{at:?}");
            assert!(
                at[0].starts_with("a.yaml:2:7: Deployment/d: warning: "),
                "{at:?}"
            );
            let mut d = Diags::default();
            parse_files(&files(), &mut d, true, Some(&cache));
            assert_eq!(d.list.len(), 2);
        }
    }
}
