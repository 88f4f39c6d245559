//! The route index: finds the first route, in match order, that a request matches, without
//! scanning every route (docs/reference.md §2.3.1). Also explains why routes did not match.
//!
//! # How the index works
//!
//! Routes arrive sorted in match order (`routes[i].id == i`), so the answer to a lookup is the
//! *smallest id* whose predicates all hold. The index only narrows down which ids can be
//! candidates; the final decision is always "smallest passing id".
//!
//! 1. **By host.** Every route lives in exactly one host bucket, chosen by its hostname glob:
//!    an exact-name hash map, a hash map of wildcard suffixes that begin with a dot
//!    (`*.example.com` is stored as `.example.com`), a short list for any other wildcard suffix
//!    (`*foo.com`, which validation normally rejects), and the `*` bucket. A request visits the
//!    bucket of its exact host, the bucket of every suffix of its host that starts at a dot
//!    (one hash probe per label), the odd-suffix list, and the `*` bucket.
//! 2. **By path, inside a bucket.** Two compressed byte tries (radix trees): one over
//!    case-sensitive patterns, one over ASCII-lowercased case-insensitive patterns (the request
//!    path is folded byte by byte while walking, so nothing is allocated). Each trie node holds
//!    the ids of the prefix routes whose pattern ends there and, separately, of the exact-path
//!    routes whose path ends there (those only count when the whole request path was consumed).
//!    Walking the request path therefore visits at most `path.len()` nodes and yields exactly the
//!    routes whose path pattern matches. Regex routes sit in a per-bucket list and have their
//!    (anchored) regex evaluated only if they could still beat the best id found so far. (No
//!    `RegexSet`: it would have to be built from `Regex::as_str`, which loses builder flags
//!    such as the case-insensitivity the compiler sets for `case_sensitive: false` regexes.)
//! 3. **Remaining predicates.** Every id list in the index is ascending. For each list reached,
//!    the ids below the best match found so far are checked (method, then the path for regex
//!    routes, then headers, then query parameters) until one passes: the new best.
//!    Each trie node also records the smallest id in its subtree, so a walk stops as soon as
//!    nothing below can beat the current best. No candidate buffer is needed and a lookup does
//!    not allocate (except to percent-decode a query parameter that contains `%` or `+`).
//!
//! Canary groups (docs/reference.md §2.5): routes with an identical match are adjacent and share
//! `Route::group` (the id of the group's first route). The first matching route is therefore
//! the group's first route, and [`Router::lookup`] then picks one member at random in proportion
//! to `Route::effective_weight`.
//!
//! [`Router::explain`] is a plain linear scan (admin/offline use) that reports, for every route
//! ahead of the chosen one, the first predicate that rejected it.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;

use http::{HeaderMap, Method};

use crate::route::{HeaderMatch, HostGlob, PathMatch, QueryMatch, Route, ValueMatch};

type FastMap<K, V> = HashMap<K, V, ahash::RandomState>;

/// What the router looks at in a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// `:authority`/Host, lowercase, port stripped.
    pub host: &'a str,
    /// `:authority`/Host as the client sent it (with its port, if any); only routes with a
    /// hostname port or an `:authority` match look at it.
    pub authority: &'a str,
    /// The path, without the query string.
    pub path: &'a str,
    /// The query string without `?`, if any.
    pub query: Option<&'a str>,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
}

/// Why a request took (or did not take) each route; see [`Router::explain`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Explanation {
    /// Id of the route the request takes. For a canary group this is the group's first route
    /// (`Route::group`); [`Router::lookup`] picks a member of that group by weight.
    pub chosen: Option<usize>,
    /// Every route earlier in match order than `chosen` (every route when nothing matched),
    /// ascending by id, with the first reason it was rejected.
    pub rejected: Vec<(usize, String)>,
}

/// The route index. Built once per snapshot; immutable and shareable afterwards.
#[derive(Debug, Default)]
pub struct Router {
    routes: Vec<Arc<Route>>,
    exact_hosts: FastMap<Box<str>, Bucket>,
    /// Wildcard suffixes starting with `.` (`*.example.com` -> `.example.com`).
    dot_suffixes: FastMap<Box<str>, Bucket>,
    /// Any other wildcard suffix (`*foo.com`), checked with `HostGlob::matches`.
    other_suffixes: Vec<(HostGlob, Bucket)>,
    any: Bucket,
    /// Per route: the canary group it belongs to, as a range of ids.
    groups: Vec<GroupRange>,
    /// Per route: cumulative effective weight within its group, up to and including it.
    cum_weight: Vec<f64>,
}

#[derive(Debug, Default, Clone, Copy)]
struct GroupRange {
    start: u32,
    end: u32,
}

impl Router {
    /// `routes` are in match order (`routes[i].id == i`; the index in the slice is what counts).
    pub fn build(routes: &[Arc<Route>]) -> Router {
        let mut exact: FastMap<Box<str>, BucketBuilder> = FastMap::default();
        let mut dot: FastMap<Box<str>, BucketBuilder> = FastMap::default();
        let mut other: Vec<(HostGlob, BucketBuilder)> = Vec::new();
        let mut any = BucketBuilder::default();

        for (i, route) in routes.iter().enumerate() {
            let id = to_id(i);
            let bucket = match &route.hostname {
                HostGlob::Any => &mut any,
                HostGlob::Exact(name) => exact.entry(name.as_str().into()).or_default(),
                HostGlob::Suffix(s) if s.starts_with('.') => {
                    dot.entry(s.as_str().into()).or_default()
                }
                glob @ HostGlob::Suffix(_) => {
                    let pos = match other.iter().position(|(g, _)| g == glob) {
                        Some(pos) => pos,
                        None => {
                            other.push((glob.clone(), BucketBuilder::default()));
                            other.len() - 1
                        }
                    };
                    &mut other[pos].1
                }
            };
            bucket.add(id, &route.path);
        }

        // Canary groups: a run of adjacent routes whose `group` is the run's first id.
        let mut groups = vec![GroupRange::default(); routes.len()];
        let mut cum_weight = vec![0.0; routes.len()];
        let mut i = 0;
        while i < routes.len() {
            let mut j = i + 1;
            while j < routes.len() && routes[j].group == i {
                j += 1;
            }
            let mut acc = 0.0;
            for k in i..j {
                groups[k] = GroupRange {
                    start: to_id(i),
                    end: to_id(j),
                };
                acc += sane_weight(routes[k].effective_weight);
                cum_weight[k] = acc;
            }
            i = j;
        }

        Router {
            routes: routes.to_vec(),
            exact_hosts: exact.into_iter().map(|(k, b)| (k, b.freeze())).collect(),
            dot_suffixes: dot.into_iter().map(|(k, b)| (k, b.freeze())).collect(),
            other_suffixes: other.into_iter().map(|(g, b)| (g, b.freeze())).collect(),
            any: any.freeze(),
            groups,
            cum_weight,
        }
    }

    /// The routes, in match order.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// The route this request takes (a canary group member picked by weight), or `None`.
    pub fn lookup(&self, req: &RequestView<'_>) -> Option<&Arc<Route>> {
        let id = self.first_match(req)?;
        self.routes.get(self.pick_in_group(id))
    }

    /// The id of the first route in match order that `req` matches (for a canary group, the
    /// group's first route), without the weighted pick.
    pub fn first_match(&self, req: &RequestView<'_>) -> Option<usize> {
        let mut best = self.routes.len();
        let host = req.host;
        if !self.exact_hosts.is_empty()
            && let Some(b) = self.exact_hosts.get(host)
        {
            self.scan_bucket(b, req, &mut best);
        }
        if !self.dot_suffixes.is_empty() {
            for (i, byte) in host.bytes().enumerate().skip(1) {
                // `i >= 1`, so the suffix is strictly shorter than the host, as
                // `HostGlob::matches` requires. `.` is ASCII, so `i` is a char boundary.
                if byte == b'.'
                    && let Some(b) = host.get(i..).and_then(|s| self.dot_suffixes.get(s))
                {
                    self.scan_bucket(b, req, &mut best);
                }
            }
        }
        for (glob, b) in &self.other_suffixes {
            if glob.matches(host) {
                self.scan_bucket(b, req, &mut best);
            }
        }
        self.scan_bucket(&self.any, req, &mut best);
        (best < self.routes.len()).then_some(best)
    }

    /// Why `req` takes the route it takes: a linear scan over all routes, in match order.
    /// Agrees with [`Router::lookup`]: `chosen` is the first matching route, which for a
    /// canary group is the group's first route (lookup then picks a member by weight).
    pub fn explain(&self, req: &RequestView<'_>) -> Explanation {
        let mut rejected = Vec::new();
        for (i, route) in self.routes.iter().enumerate() {
            match reject_reason(route, req) {
                Some(reason) => rejected.push((i, reason)),
                None => {
                    return Explanation {
                        chosen: Some(i),
                        rejected,
                    };
                }
            }
        }
        Explanation {
            chosen: None,
            rejected,
        }
    }

    fn pick_in_group(&self, id: usize) -> usize {
        let Some(g) = self.groups.get(id) else {
            return id;
        };
        let (start, end) = (g.start as usize, g.end as usize);
        // The first matching route of a well-formed group is its first member; anything else
        // means the group is not a set of identical matches, so do not pick among it.
        if end - start <= 1 || start != id {
            return id;
        }
        let cum = &self.cum_weight[start..end];
        let total = cum[cum.len() - 1];
        if !(total > 0.0 && total.is_finite()) {
            return id;
        }
        let x = fastrand::f64() * total;
        let mut last_positive = id;
        let mut prev = 0.0;
        for (k, &c) in cum.iter().enumerate() {
            if c > prev {
                last_positive = start + k;
                if x < c {
                    return start + k;
                }
            }
            prev = c;
        }
        last_positive
    }

    fn scan_bucket(&self, b: &Bucket, req: &RequestView<'_>, best: &mut usize) {
        let path = req.path.as_bytes();
        self.scan_trie(&b.cs, path, false, req, best);
        self.scan_trie(&b.ci, path, true, req, best);
        self.scan(&b.regex, req, true, best);
    }

    fn scan_trie(
        &self,
        t: &Trie,
        path: &[u8],
        fold: bool,
        req: &RequestView<'_>,
        best: &mut usize,
    ) {
        let Some(mut node) = t.nodes.first() else {
            return;
        };
        let mut rest = path;
        loop {
            if node.min_id as usize >= *best {
                return;
            }
            self.scan(t.ids(node.prefix), req, false, best);
            let Some(&first) = rest.first() else {
                self.scan(t.ids(node.exact), req, false, best);
                return;
            };
            let Some(child) = t.child(
                node,
                if fold {
                    first.to_ascii_lowercase()
                } else {
                    first
                },
            ) else {
                return;
            };
            let label = t.label(child);
            let Some(head) = rest.get(..label.len()) else {
                return;
            };
            let same = if fold {
                head.eq_ignore_ascii_case(label)
            } else {
                head == label
            };
            if !same {
                return;
            }
            rest = &rest[label.len()..];
            node = child;
        }
    }

    /// Checks the ids below `best` (ascending) and records the first that passes.
    fn scan(&self, ids: &[u32], req: &RequestView<'_>, check_path: bool, best: &mut usize) {
        for &id in ids {
            let id = id as usize;
            if id >= *best {
                return;
            }
            if let Some(route) = self.routes.get(id)
                && matches_rest(route, req, check_path)
            {
                *best = id;
                return;
            }
        }
    }
}

fn to_id(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

fn sane_weight(w: f64) -> f64 {
    if w.is_finite() && w > 0.0 { w } else { 0.0 }
}

// ---------------------------------------------------------------- predicates

/// Everything but the hostname (implied by the bucket) and, unless `check_path`, the path
/// (implied by the trie). Cheapest checks first.
fn matches_rest(route: &Route, req: &RequestView<'_>, check_path: bool) -> bool {
    if let Some(m) = &route.method
        && m != req.method
    {
        return false;
    }
    if let Some(x) = &route.extra
        && !x.matches(req.host, req.authority, req.method)
    {
        return false;
    }
    if check_path && !route.path.matches(req.path) {
        return false;
    }
    route.headers.iter().all(|h| header_matches(h, req.headers))
        && route.query.iter().all(|q| query_matches(q, req.query))
}

fn header_matches(h: &HeaderMatch, headers: &HeaderMap) -> bool {
    match &h.value {
        ValueMatch::Present => headers.contains_key(&h.name),
        value => headers
            .get_all(&h.name)
            .iter()
            .any(|v| value.matches(&String::from_utf8_lossy(v.as_bytes()))),
    }
}

fn query_matches(q: &QueryMatch, query: Option<&str>) -> bool {
    let Some(query) = query else { return false };
    query_pairs(query).any(|(name, value)| {
        percent_decode(name) == q.name.as_str()
            && (matches!(q.value, ValueMatch::Present) || q.value.matches(&percent_decode(value)))
    })
}

/// `a=1&b=2&flag` -> `("a","1"), ("b","2"), ("flag","")`; empty pieces are skipped.
fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte; a `%` not
/// followed by two hex digits is kept as is. Invalid UTF-8 is replaced (lossy). Borrows when
/// there is nothing to decode.
fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1)
                    .and_then(|&h| hex_val(h))
                    .zip(bytes.get(i + 2).and_then(|&l| hex_val(l)));
                if let Some((h, l)) = hex {
                    out.push(h << 4 | l);
                    i += 2;
                } else {
                    out.push(b'%');
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

// ---------------------------------------------------------------- explain

/// `None` if `route` matches `req`, else the first reason it does not.
fn reject_reason(route: &Route, req: &RequestView<'_>) -> Option<String> {
    if !route.hostname.matches(req.host) {
        return Some(format!(
            "hostname {} does not match {}",
            req.host, route.hostname
        ));
    }
    if !route.path.matches(req.path) {
        let p = req.path;
        return Some(match &route.path {
            PathMatch::Prefix {
                prefix,
                case_sensitive,
            } => {
                format!(
                    "path {p} does not start with {prefix}{}",
                    ci_note(*case_sensitive)
                )
            }
            PathMatch::Exact {
                path,
                case_sensitive,
            } => {
                format!("path {p} is not {path}{}", ci_note(*case_sensitive))
            }
            PathMatch::Regex { source, .. } => format!("path {p} does not match regex {source}"),
        });
    }
    if let Some(m) = &route.method
        && m != req.method
    {
        return Some(format!("method {} is not {m}", req.method));
    }
    if let Some(reason) = route
        .extra
        .as_ref()
        .and_then(|x| x.reject(req.host, req.authority, req.method))
    {
        return Some(reason);
    }
    for h in &route.headers {
        if !header_matches(h, req.headers) {
            let values: Vec<String> = req
                .headers
                .get_all(&h.name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            return Some(format!(
                "header {}: {}",
                h.name,
                value_reason(&values, &h.value)
            ));
        }
    }
    for q in &route.query {
        if !query_matches(q, req.query) {
            let values: Vec<String> = req
                .query
                .map(|query| {
                    query_pairs(query)
                        .filter(|(n, _)| percent_decode(n) == q.name.as_str())
                        .map(|(_, v)| percent_decode(v).into_owned())
                        .collect()
                })
                .unwrap_or_default();
            return Some(format!(
                "query {}: {}",
                q.name,
                value_reason(&values, &q.value)
            ));
        }
    }
    None
}

fn ci_note(case_sensitive: bool) -> &'static str {
    if case_sensitive {
        ""
    } else {
        " (case-insensitive)"
    }
}

fn value_reason(values: &[String], want: &ValueMatch) -> String {
    if values.is_empty() {
        return "missing".to_string();
    }
    let mut got = String::new();
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            got.push_str(", ");
        }
        let _ = write!(got, "{v:?}");
    }
    match want {
        ValueMatch::Present => "missing".to_string(),
        ValueMatch::Exact(w) => format!("{got} is not {w:?}"),
        ValueMatch::Regex(r) => format!("{got} does not match regex {}", r.as_str()),
    }
}

// ---------------------------------------------------------------- the index

#[derive(Debug, Default)]
struct Bucket {
    /// Case-sensitive prefix and exact paths.
    cs: Trie,
    /// Case-insensitive prefix and exact paths, ASCII-lowercased.
    ci: Trie,
    /// Regex routes, ascending.
    regex: Vec<u32>,
}

#[derive(Default)]
struct BucketBuilder {
    cs: TrieBuilder,
    ci: TrieBuilder,
    regex: Vec<u32>,
}

impl BucketBuilder {
    fn add(&mut self, id: u32, path: &PathMatch) {
        match path {
            PathMatch::Prefix {
                prefix,
                case_sensitive: true,
            } => self.cs.insert(prefix.as_bytes(), id, false),
            PathMatch::Prefix {
                prefix,
                case_sensitive: false,
            } => self
                .ci
                .insert(prefix.to_ascii_lowercase().as_bytes(), id, false),
            PathMatch::Exact {
                path,
                case_sensitive: true,
            } => self.cs.insert(path.as_bytes(), id, true),
            PathMatch::Exact {
                path,
                case_sensitive: false,
            } => self
                .ci
                .insert(path.to_ascii_lowercase().as_bytes(), id, true),
            PathMatch::Regex { .. } => self.regex.push(id),
        }
    }

    fn freeze(self) -> Bucket {
        Bucket {
            cs: self.cs.freeze(),
            ci: self.ci.freeze(),
            regex: self.regex,
        }
    }
}

/// A mutable byte trie, one node per byte; compressed by [`TrieBuilder::freeze`].
#[derive(Default)]
struct TrieBuilder {
    nodes: Vec<BNode>,
}

#[derive(Default)]
struct BNode {
    children: BTreeMap<u8, usize>,
    prefix: Vec<u32>,
    exact: Vec<u32>,
}

impl TrieBuilder {
    fn insert(&mut self, key: &[u8], id: u32, exact: bool) {
        if self.nodes.is_empty() {
            self.nodes.push(BNode::default());
        }
        let mut cur = 0;
        for &b in key {
            cur = match self.nodes[cur].children.get(&b) {
                Some(&next) => next,
                None => {
                    let next = self.nodes.len();
                    self.nodes.push(BNode::default());
                    self.nodes[cur].children.insert(b, next);
                    next
                }
            };
        }
        let node = &mut self.nodes[cur];
        if exact {
            node.exact.push(id)
        } else {
            node.prefix.push(id)
        }
    }

    /// Compresses chains of id-less single-child nodes into one labelled edge and lays the
    /// result out flat, breadth first, so that every node's children are contiguous.
    fn freeze(self) -> Trie {
        let b = self.nodes;
        let mut t = Trie::default();
        if b.is_empty() {
            return t;
        }
        t.nodes.push(Node::default());
        let mut queue = VecDeque::from([(0usize, 0usize)]);
        while let Some((bi, fi)) = queue.pop_front() {
            let prefix = t.push_ids(&b[bi].prefix);
            let exact = t.push_ids(&b[bi].exact);
            let children_start = t.nodes.len();
            for (&byte, &child) in &b[bi].children {
                let label_start = t.labels.len();
                t.labels.push(byte);
                let mut c = child;
                while b[c].prefix.is_empty() && b[c].exact.is_empty() && b[c].children.len() == 1 {
                    let Some((&nb, &nc)) = b[c].children.iter().next() else {
                        break;
                    };
                    t.labels.push(nb);
                    c = nc;
                }
                t.nodes.push(Node {
                    first: byte,
                    label: (to_id(label_start), to_id(t.labels.len() - label_start)),
                    ..Node::default()
                });
                queue.push_back((c, t.nodes.len() - 1));
            }
            let children = (to_id(children_start), to_id(t.nodes.len() - children_start));
            let n = &mut t.nodes[fi];
            n.prefix = prefix;
            n.exact = exact;
            n.children = children;
        }
        // Smallest id in each subtree; children always come after their parent.
        for i in (0..t.nodes.len()).rev() {
            let n = &t.nodes[i];
            let mut min = u32::MAX;
            if n.prefix.1 > 0 {
                min = min.min(t.ids[n.prefix.0 as usize]);
            }
            if n.exact.1 > 0 {
                min = min.min(t.ids[n.exact.0 as usize]);
            }
            let (cs, cn) = (n.children.0 as usize, n.children.1 as usize);
            for c in &t.nodes[cs..cs + cn] {
                min = min.min(c.min_id);
            }
            t.nodes[i].min_id = min;
        }
        t
    }
}

/// A frozen radix tree. Ranges are `(start, len)` into `labels`, `ids` or `nodes`.
#[derive(Debug, Default)]
struct Trie {
    nodes: Vec<Node>,
    labels: Vec<u8>,
    ids: Vec<u32>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Node {
    /// First byte of the label (the edge from the parent), for child search.
    first: u8,
    label: (u32, u32),
    children: (u32, u32),
    /// Ids of prefix routes ending here, ascending.
    prefix: (u32, u32),
    /// Ids of exact-path routes ending here, ascending.
    exact: (u32, u32),
    /// Smallest id anywhere in this subtree (`u32::MAX` if none).
    min_id: u32,
}

impl Trie {
    fn push_ids(&mut self, ids: &[u32]) -> (u32, u32) {
        let start = to_id(self.ids.len());
        self.ids.extend_from_slice(ids);
        (start, to_id(ids.len()))
    }

    fn ids(&self, (start, len): (u32, u32)) -> &[u32] {
        self.ids
            .get(start as usize..(start + len) as usize)
            .unwrap_or_default()
    }

    fn label(&self, node: &Node) -> &[u8] {
        let (start, len) = node.label;
        self.labels
            .get(start as usize..(start + len) as usize)
            .unwrap_or_default()
    }

    fn child(&self, node: &Node, byte: u8) -> Option<&Node> {
        let (start, len) = node.children;
        let children = self.nodes.get(start as usize..(start + len) as usize)?;
        if children.len() <= 8 {
            children.iter().find(|c| c.first == byte)
        } else {
            children
                .binary_search_by_key(&byte, |c| c.first)
                .ok()
                .and_then(|i| children.get(i))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use http::{HeaderName, HeaderValue};
    use regex::Regex;

    use super::*;
    use crate::snapshot::{Rewrite, RouteAction};

    /// A route with every field defaulted; tests set what they need.
    fn route(hostname: &str, path: PathMatch) -> Route {
        Route {
            id: 0,
            name: String::new(),
            file: String::new(),
            line: 0,
            hostname: HostGlob::parse(hostname),
            path,
            method: None,
            headers: Vec::new(),
            query: Vec::new(),
            precedence: 0,
            weight: None,
            effective_weight: 100.0,
            group: 0,
            action: RouteAction::Forward { upstream: 0 },
            rewrite: Rewrite::None,
            host_rewrite: None,
            add_request_headers: Vec::new(),
            remove_request_headers: Vec::new(),
            add_response_headers: Vec::new(),
            remove_response_headers: Vec::new(),
            timeout: None,
            idle_timeout: None,
            grpc: false,
            grpc_timeout_max: None,
            allow_upgrade: Vec::new(),
            retry: None,
            rate_limits: Vec::new(),
            cors: None,
            shadow: None,
            compression: None,
            max_request_body: None,
            auth: Default::default(),
            extra: None,
        }
    }

    fn prefix(p: &str) -> PathMatch {
        PathMatch::Prefix {
            prefix: p.to_string(),
            case_sensitive: true,
        }
    }

    fn anchored(src: &str) -> Regex {
        Regex::new(&format!("^(?:{src})$")).expect("test regex")
    }

    /// reference §2.3.1 order: precedence, host specificity, exact first, longer pattern,
    /// more headers, more query, method first. Assigns ids; groups of one.
    fn finish(mut routes: Vec<Route>) -> Vec<Arc<Route>> {
        routes.sort_by_key(|r| {
            (
                std::cmp::Reverse(r.precedence),
                std::cmp::Reverse(r.hostname.specificity()),
                !matches!(r.path, PathMatch::Exact { .. }),
                std::cmp::Reverse(r.path.order_len()),
                std::cmp::Reverse(r.headers.len()),
                std::cmp::Reverse(r.query.len()),
                r.method.is_none(),
            )
        });
        routes
            .into_iter()
            .enumerate()
            .map(|(i, mut r)| {
                r.id = i;
                r.group = i;
                Arc::new(r)
            })
            .collect()
    }

    fn view<'a>(
        host: &'a str,
        path: &'a str,
        query: Option<&'a str>,
        method: &'a Method,
        headers: &'a HeaderMap,
    ) -> RequestView<'a> {
        RequestView {
            host,
            authority: host,
            path,
            query,
            method,
            headers,
        }
    }

    // ------------------------------------------------------------ reference implementation

    fn ref_decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'+' {
                out.push(b' ');
            } else if b[i] == b'%'
                && i + 2 < b.len()
                && b[i + 1].is_ascii_hexdigit()
                && b[i + 2].is_ascii_hexdigit()
            {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).expect("hex");
                out.push(u8::from_str_radix(hex, 16).expect("hex"));
                i += 2;
            } else {
                out.push(b[i]);
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    fn ref_matches(r: &Route, req: &RequestView<'_>) -> bool {
        if !r.hostname.matches(req.host) || !r.path.matches(req.path) {
            return false;
        }
        if r.method.as_ref().is_some_and(|m| m != req.method) {
            return false;
        }
        for h in &r.headers {
            let vals: Vec<String> = req
                .headers
                .get_all(&h.name)
                .iter()
                .map(|v| v.to_str().expect("ascii").to_string())
                .collect();
            let ok = match &h.value {
                ValueMatch::Present => !vals.is_empty(),
                v => vals.iter().any(|x| v.matches(x)),
            };
            if !ok {
                return false;
            }
        }
        let params: Vec<(String, String)> = req
            .query
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| match p.find('=') {
                Some(i) => (ref_decode(&p[..i]), ref_decode(&p[i + 1..])),
                None => (ref_decode(p), String::new()),
            })
            .collect();
        r.query.iter().all(|q| {
            params
                .iter()
                .any(|(n, v)| *n == q.name && q.value.matches(v))
        })
    }

    fn linear(routes: &[Arc<Route>], req: &RequestView<'_>) -> Option<usize> {
        routes.iter().position(|r| ref_matches(r, req))
    }

    // ------------------------------------------------------------ random generation

    const HOSTS: &[&str] = &[
        "*",
        "*.a.com",
        "*.com",
        "*.b.a.com",
        "a.com",
        "x.a.com",
        "x.b.a.com",
        "y.com",
        "*a.com",
    ];
    const REQ_HOSTS: &[&str] = &[
        "a.com",
        "x.a.com",
        "y.a.com",
        "x.b.a.com",
        "b.a.com",
        "y.com",
        "com",
        "ba.com",
        ".a.com",
        "other.org",
    ];
    const REGEXES: &[&str] = &["/a.*", "/[ab]+", "(?i)/A/.*", "/b/[0-9]*", ".*x", ""];

    fn rand_path(rng: &mut fastrand::Rng, max: usize) -> String {
        const ALPHA: &[u8] = b"/aAbx1";
        let n = rng.usize(0..=max);
        let mut s = String::from("/");
        for _ in 0..n {
            s.push(ALPHA[rng.usize(..ALPHA.len())] as char);
        }
        s
    }

    fn rand_value_match(rng: &mut fastrand::Rng) -> ValueMatch {
        match rng.u8(0..4) {
            0 => ValueMatch::Present,
            1 => ValueMatch::Exact("1".into()),
            2 => ValueMatch::Exact("a b".into()),
            _ => ValueMatch::Regex(anchored("[0-9]+")),
        }
    }

    fn rand_route(rng: &mut fastrand::Rng) -> Route {
        let path = match rng.u8(0..10) {
            0..=3 => PathMatch::Prefix {
                prefix: rand_path(rng, 3),
                case_sensitive: true,
            },
            4..=5 => PathMatch::Prefix {
                prefix: rand_path(rng, 3).to_ascii_lowercase(),
                case_sensitive: false,
            },
            6 => PathMatch::Exact {
                path: rand_path(rng, 3),
                case_sensitive: true,
            },
            7 => PathMatch::Exact {
                path: rand_path(rng, 3).to_ascii_lowercase(),
                case_sensitive: false,
            },
            _ => {
                let src = REGEXES[rng.usize(..REGEXES.len())];
                PathMatch::Regex {
                    regex: anchored(src),
                    source: src.to_string(),
                    case_sensitive: true,
                }
            }
        };
        let mut r = route(HOSTS[rng.usize(..HOSTS.len())], path);
        r.precedence = rng.i32(-1..=1) * i32::from(rng.u8(0..4) == 0);
        r.method = match rng.u8(0..4) {
            0 => Some(Method::GET),
            1 => Some(Method::POST),
            _ => None,
        };
        for _ in 0..rng.usize(0..=2) * usize::from(rng.bool()) {
            let name = if rng.bool() { "x-a" } else { "x-b" };
            r.headers.push(HeaderMatch {
                name: HeaderName::from_static(name),
                value: rand_value_match(rng),
            });
        }
        for _ in 0..rng.usize(0..=2) * usize::from(rng.bool()) {
            let name = if rng.bool() { "v" } else { "w x" };
            r.query.push(QueryMatch {
                name: name.into(),
                value: rand_value_match(rng),
            });
        }
        r
    }

    struct Req {
        host: String,
        path: String,
        query: Option<String>,
        method: Method,
        headers: HeaderMap,
    }

    fn rand_req(rng: &mut fastrand::Rng) -> Req {
        const VALUES: &[&str] = &["1", "2", "a b", "123", "", "x"];
        const QUERIES: &[&str] = &[
            "v=1",
            "v=%31",
            "v=a+b",
            "v=a%20b",
            "v",
            "v=",
            "w+x=1",
            "w%20x=7",
            "v=2&v=1",
            "a=1&&v=123",
            "v=%zz",
            "v=%2",
            "w x=a b",
            "v=1&w+x",
        ];
        let mut headers = HeaderMap::new();
        for name in ["x-a", "x-b"] {
            for _ in 0..rng.usize(0..=2) * usize::from(rng.bool()) {
                let v = VALUES[rng.usize(..VALUES.len())];
                headers.append(HeaderName::from_static(name), HeaderValue::from_static(v));
            }
        }
        Req {
            host: REQ_HOSTS[rng.usize(..REQ_HOSTS.len())].to_string(),
            path: rand_path(rng, 6),
            query: rng
                .bool()
                .then(|| QUERIES[rng.usize(..QUERIES.len())].to_string()),
            method: [Method::GET, Method::POST, Method::PUT][rng.usize(..3)].clone(),
            headers,
        }
    }

    #[test]
    fn index_agrees_with_linear_scan() {
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        let mut matched = 0;
        for round in 0..300usize {
            let n = if round.is_multiple_of(10) {
                rng.usize(0..400)
            } else {
                rng.usize(0..40)
            };
            let routes = finish((0..n).map(|_| rand_route(&mut rng)).collect());
            let router = Router::build(&routes);
            for _ in 0..200 {
                let r = rand_req(&mut rng);
                let req = view(&r.host, &r.path, r.query.as_deref(), &r.method, &r.headers);
                let want = linear(&routes, &req);
                let got = router.lookup(&req).map(|r| r.id);
                assert_eq!(
                    got, want,
                    "round {round}: {} {} {:?} {} {:?}",
                    r.host, r.path, r.query, r.method, r.headers
                );
                let ex = router.explain(&req);
                assert_eq!(ex.chosen, want);
                assert_eq!(ex.rejected.len(), want.unwrap_or(routes.len()));
                assert!(ex.rejected.iter().enumerate().all(|(i, (id, _))| i == *id));
                matched += usize::from(want.is_some());
            }
        }
        // The generator must actually produce matches, or the test proves little.
        assert!(matched > 10_000, "only {matched} matches");
    }

    #[test]
    fn empty_router() {
        let router = Router::build(&[]);
        let h = HeaderMap::new();
        assert!(
            router
                .lookup(&view("a", "/", None, &Method::GET, &h))
                .is_none()
        );
        assert!(
            Router::default()
                .lookup(&view("a", "/", None, &Method::GET, &h))
                .is_none()
        );
    }

    #[test]
    fn host_and_path_basics() {
        let routes = finish(vec![
            route("*", prefix("/")),
            route("*.example.com", prefix("/api/")),
            route(
                "api.example.com",
                PathMatch::Exact {
                    path: "/api/health".into(),
                    case_sensitive: true,
                },
            ),
            route(
                "*",
                PathMatch::Prefix {
                    prefix: "/ci/".into(),
                    case_sensitive: false,
                },
            ),
        ]);
        let router = Router::build(&routes);
        let h = HeaderMap::new();
        let name = |host: &str, path: &str| {
            router
                .lookup(&view(host, path, None, &Method::GET, &h))
                .map(|r| (r.hostname.to_string(), r.path.order_len()))
        };
        assert_eq!(
            name("api.example.com", "/api/health"),
            Some(("api.example.com".into(), 11))
        );
        assert_eq!(
            name("api.example.com", "/api/healthz"),
            Some(("*.example.com".into(), 5))
        );
        assert_eq!(name("example.com", "/api/x"), Some(("*".into(), 1)));
        assert_eq!(name("x", "/CI/abc"), Some(("*".into(), 4)));
        assert_eq!(name("x", "/C"), Some(("*".into(), 1)));
    }

    #[test]
    fn explain_reasons() {
        let mut r1 = route("*.other.com", prefix("/"));
        r1.precedence = 5;
        let mut r2 = route("*", prefix("/quote/"));
        r2.precedence = 4;
        let mut r3 = route("*", prefix("/"));
        r3.precedence = 3;
        r3.method = Some(Method::GET);
        let mut r4 = route("*", prefix("/"));
        r4.precedence = 2;
        r4.headers.push(HeaderMatch {
            name: HeaderName::from_static("x-canary"),
            value: ValueMatch::Exact("1".into()),
        });
        let mut r5 = route("*", prefix("/"));
        r5.precedence = 1;
        r5.headers.push(HeaderMatch {
            name: HeaderName::from_static("x-missing"),
            value: ValueMatch::Present,
        });
        let mut r6 = route("*", prefix("/"));
        r6.precedence = 1;
        r6.query.push(QueryMatch {
            name: "v".into(),
            value: ValueMatch::Exact("2".into()),
        });
        let r7 = route("*", prefix("/x"));
        let routes = finish(vec![r1, r2, r3, r4, r5, r6, r7]);
        let router = Router::build(&routes);
        let mut h = HeaderMap::new();
        h.insert("x-canary", HeaderValue::from_static("2"));
        let req = view("api.example.com", "/x", Some("v=1"), &Method::POST, &h);
        let ex = router.explain(&req);
        assert_eq!(ex.chosen, Some(6));
        assert_eq!(router.lookup(&req).map(|r| r.id), Some(6));
        let reasons: Vec<&str> = ex.rejected.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "hostname api.example.com does not match *.other.com",
                "path /x does not start with /quote/",
                "method POST is not GET",
                "header x-canary: \"2\" is not \"1\"",
                "header x-missing: missing",
                "query v: \"1\" is not \"2\"",
            ]
        );
        let none = router.explain(&view("a", "/y", None, &Method::POST, &h));
        assert_eq!(none.chosen, None);
        assert_eq!(none.rejected.len(), 7);
        assert_eq!(none.rejected[6].1, "path /y does not start with /x");
        assert_eq!(none.rejected[5].1, "query v: missing");
    }

    #[test]
    fn header_with_several_values_and_query_decoding() {
        let mut r = route("*", prefix("/"));
        r.headers.push(HeaderMatch {
            name: HeaderName::from_static("x-v"),
            value: ValueMatch::Exact("b".into()),
        });
        r.query.push(QueryMatch {
            name: "q x".into(),
            value: ValueMatch::Exact("é/1".into()),
        });
        r.query.push(QueryMatch {
            name: "flag".into(),
            value: ValueMatch::Present,
        });
        let routes = finish(vec![r]);
        let router = Router::build(&routes);
        let mut h = HeaderMap::new();
        h.append("x-v", HeaderValue::from_static("a"));
        h.append("x-v", HeaderValue::from_static("b"));
        let ok = view("h", "/", Some("q+x=%C3%A9%2F1&flag"), &Method::GET, &h);
        assert!(router.lookup(&ok).is_some());
        let no_flag = view("h", "/", Some("q%20x=%C3%A9%2F1"), &Method::GET, &h);
        assert!(router.lookup(&no_flag).is_none());
        let h2 = HeaderMap::new();
        assert!(
            router
                .lookup(&view(
                    "h",
                    "/",
                    Some("q+x=%C3%A9%2F1&flag"),
                    &Method::GET,
                    &h2
                ))
                .is_none()
        );
    }

    #[test]
    fn canary_group_split_by_weight() {
        let mut members = Vec::new();
        for (i, w) in [20.0, 30.0, 50.0, 0.0].into_iter().enumerate() {
            let mut r = route("*", prefix("/c/"));
            r.id = i;
            r.group = 0;
            r.effective_weight = w;
            members.push(Arc::new(r));
        }
        let mut other = route("*", prefix("/"));
        other.id = 4;
        other.group = 4;
        members.push(Arc::new(other));
        let router = Router::build(&members);
        let h = HeaderMap::new();
        let req = view("h", "/c/x", None, &Method::GET, &h);
        let mut counts = [0u32; 5];
        for _ in 0..20_000 {
            let id = router.lookup(&req).map(|r| r.id).expect("route");
            counts[id] += 1;
        }
        assert_eq!(counts[3], 0, "weight 0 is never picked");
        assert_eq!(counts[4], 0);
        for (id, share) in [(0, 0.2), (1, 0.3), (2, 0.5)] {
            let got = f64::from(counts[id]) / 20_000.0;
            assert!((got - share).abs() < 0.03, "member {id}: {got} vs {share}");
        }
        assert_eq!(router.explain(&req).chosen, Some(0));
        assert_eq!(router.first_match(&req), Some(0));
        assert_eq!(
            router
                .lookup(&view("h", "/d", None, &Method::GET, &h))
                .map(|r| r.id),
            Some(4)
        );
    }

    fn ten_thousand() -> Vec<Arc<Route>> {
        let routes = (0..10_000usize)
            .map(|i| {
                let host = if i % 10 == 3 {
                    format!("svc{i}.example.com")
                } else {
                    "*".to_string()
                };
                let mut r = route(&host, prefix(&format!("/svc{i}/api/")));
                if i.is_multiple_of(7) {
                    r.headers.push(HeaderMatch {
                        name: HeaderName::from_static("x-tenant"),
                        value: ValueMatch::Exact(format!("t{i}")),
                    });
                }
                r
            })
            .collect();
        finish(routes)
    }

    /// Loose timing bound (release: well under 1 µs; debug with opt-level 1 deps: a few µs).
    #[test]
    fn ten_thousand_routes_lookup_is_fast() {
        let routes = ten_thousand();
        let router = Router::build(&routes);
        let last = routes.last().expect("routes");
        let PathMatch::Prefix { prefix: p, .. } = &last.path else {
            panic!("prefix route")
        };
        let path = format!("{p}items/42");
        let h = HeaderMap::new();
        let host = "client.example.org";
        let req = view(host, &path, None, &Method::GET, &h);
        assert_eq!(router.lookup(&req).map(|r| r.id), Some(last.id));
        let start = Instant::now();
        for _ in 0..1000 {
            std::hint::black_box(router.lookup(std::hint::black_box(&req)));
        }
        let avg = start.elapsed() / 1000;
        assert!(avg.as_micros() < 20, "average lookup {avg:?}");
    }
}
