//! The positioned YAML tree and the serde bridge onto it.
//!
//! Owns [`Node`] (an owned YAML tree with 1-based positions, built from saphyr's parser events
//! with the YAML 1.2 core schema), path lookups
//! that turn `spec.endpoints[2]` into a `line:col`, and a serde [`Deserializer`](serde::Deserializer) over a node
//! whose errors carry the position of the innermost offending node (the key, for unknown
//! fields) plus the path of map entries / sequence items that contain it.
//! [`deserialize_all`] uses that path to drop the offending entry and retry, so one pass
//! collects every type error of a resource rather than the first.

use std::fmt;

use crate::messages::{tidy, type_message};

use saphyr::Scalar;
use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// A YAML value.
#[derive(Debug, Clone)]
pub enum Value {
    Null,
    Bool(bool),
    /// The number and its source text (so `"1.10"`-like values keep their spelling as strings).
    Int(i64, Box<str>),
    Float(f64, Box<str>),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in document order.
    Map(Vec<(Node, Node)>),
}

/// A YAML node with the position of its first character.
#[derive(Debug, Clone)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
}

/// A YAML syntax error.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// Parses every document of a YAML stream.
pub fn parse_documents(text: &str) -> Result<Vec<Node>, SyntaxError> {
    Builder::new(text).run()
}

/// How many nodes alias expansion may produce in one file (guards against "billion laughs").
const ALIAS_BUDGET: usize = 1_000_000;

/// A collection being built.
enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

/// Builds [`Node`] trees straight from saphyr's parser events (faster than going through
/// `MarkedYaml` and converting).
struct Builder<'t> {
    text: &'t str,
    chars: CharIndex,
    stack: Vec<Frame>,
    anchors: std::collections::HashMap<usize, Node>,
    budget: usize,
    docs: Vec<Node>,
}

fn pos_of_marker(m: &saphyr_parser::Marker) -> Pos {
    Pos {
        line: to_u32(m.line()),
        col: to_u32(m.col() + 1),
    }
}

/// A scanner error. The scanner reports a tab where it gave up (often the end of the line
/// before); point at the tab itself, and say what to do about it.
fn scan_error(text: &str, at: &saphyr_parser::Marker, info: &str) -> SyntaxError {
    let pos = pos_of_marker(at);
    if info.contains("tab")
        && let Some((tab, indent)) = tab_at_or_after(text, pos)
    {
        let message = if indent {
            format!("a tab indents this line; YAML indentation must use spaces ({info})")
        } else {
            format!("a tab here is not allowed; use spaces ({info})")
        };
        return syntax(tab, message);
    }
    syntax(pos, info)
}

/// The first tab at or after `from` (1-based) and whether it is in the line's indentation.
fn tab_at_or_after(text: &str, from: Pos) -> Option<(Pos, bool)> {
    for (i, line) in text
        .lines()
        .enumerate()
        .skip(from.line.saturating_sub(1) as usize)
    {
        let skip = if i + 1 == from.line as usize {
            from.col.saturating_sub(1) as usize
        } else {
            0
        };
        let found = line
            .chars()
            .enumerate()
            .skip(skip)
            .find(|(_, c)| *c == '\t')
            .map(|(col, _)| col);
        if let Some(col) = found {
            let indent = line.chars().take(col).all(|c| c == ' ' || c == '\t');
            return Some((
                Pos {
                    line: to_u32(i + 1),
                    col: to_u32(col + 1),
                },
                indent,
            ));
        }
    }
    None
}

fn syntax(pos: Pos, message: impl Into<String>) -> SyntaxError {
    SyntaxError {
        pos,
        message: message.into(),
    }
}

/// YAML key identity: same type and value.
fn same_key(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Str(x), Value::Str(y)) => x == y,
        (Value::Int(x, _), Value::Int(y, _)) => x == y,
        (Value::Float(x, _), Value::Float(y, _)) => x.to_bits() == y.to_bits(),
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Null, Value::Null) => true,
        _ => false,
    }
}

fn count_nodes(n: &Node) -> usize {
    1 + match &n.value {
        Value::Seq(items) => items.iter().map(count_nodes).sum(),
        Value::Map(entries) => entries
            .iter()
            .map(|(k, v)| count_nodes(k) + count_nodes(v))
            .sum(),
        _ => 0,
    }
}

impl<'t> Builder<'t> {
    fn new(text: &'t str) -> Self {
        Builder {
            text,
            chars: CharIndex::new(text),
            stack: Vec::new(),
            anchors: std::collections::HashMap::new(),
            budget: ALIAS_BUDGET,
            docs: Vec::new(),
        }
    }

    fn run(mut self) -> Result<Vec<Node>, SyntaxError> {
        use saphyr_parser::{Event, Parser};
        for ev in Parser::new_from_str(self.text) {
            let (ev, span) = ev.map_err(|e| scan_error(self.text, e.marker(), e.info()))?;
            let pos = pos_of_marker(&span.start);
            let (node, anchor) = match ev {
                Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {
                    continue;
                }
                Event::DocumentStart(_) => {
                    self.anchors.clear();
                    continue;
                }
                Event::SequenceStart(anchor, _) => {
                    self.stack.push(Frame::Seq {
                        pos,
                        anchor,
                        items: Vec::new(),
                    });
                    continue;
                }
                Event::MappingStart(anchor, _) => {
                    self.stack.push(Frame::Map {
                        pos,
                        anchor,
                        entries: Vec::new(),
                        key: None,
                    });
                    continue;
                }
                Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                    Some(Frame::Seq { pos, anchor, items }) => (
                        Node {
                            pos,
                            value: Value::Seq(items),
                        },
                        anchor,
                    ),
                    Some(Frame::Map {
                        pos,
                        anchor,
                        entries,
                        ..
                    }) => (
                        Node {
                            pos,
                            value: Value::Map(entries),
                        },
                        anchor,
                    ),
                    None => return Err(syntax(pos, "unbalanced collection end")),
                },
                Event::Alias(id) => {
                    let Some(n) = self.anchors.get(&id) else {
                        return Err(syntax(pos, "unknown anchor"));
                    };
                    let size = count_nodes(n);
                    if size > self.budget {
                        return Err(syntax(pos, "too many nodes from alias expansion"));
                    }
                    self.budget -= size;
                    (n.clone(), 0)
                }
                Event::Scalar(v, style, anchor, tag) => {
                    let raw = || -> Box<str> {
                        self.chars
                            .slice(self.text, span.start.index(), span.end.index())
                            .map(|s| s.trim().into())
                            .unwrap_or_default()
                    };
                    let value =
                        match Scalar::parse_from_cow_and_metadata(v.clone(), style, tag.as_ref()) {
                            Some(Scalar::Null) => Value::Null,
                            Some(Scalar::Boolean(b)) => Value::Bool(b),
                            Some(Scalar::Integer(i)) => {
                                let r = raw();
                                Value::Int(
                                    i,
                                    if r.is_empty() {
                                        i.to_string().into()
                                    } else {
                                        r
                                    },
                                )
                            }
                            Some(Scalar::FloatingPoint(f)) => {
                                let r = raw();
                                Value::Float(
                                    f.0,
                                    if r.is_empty() {
                                        f.0.to_string().into()
                                    } else {
                                        r
                                    },
                                )
                            }
                            Some(Scalar::String(s)) => Value::Str(s.into_owned()),
                            None => Value::Str(v.into_owned()),
                        };
                    (Node { pos, value }, anchor)
                }
            };
            if anchor > 0 {
                self.anchors.insert(anchor, node.clone());
            }
            self.attach(node)?;
        }
        Ok(self.docs)
    }

    fn attach(&mut self, node: Node) -> Result<(), SyntaxError> {
        match self.stack.last_mut() {
            None => self.docs.push(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => {
                    if entries.iter().any(|(k, _)| same_key(&k.value, &node.value)) {
                        let what = node
                            .as_text()
                            .map(|t| format!(" `{t}`"))
                            .unwrap_or_default();
                        return Err(syntax(node.pos, format!("duplicated key{what} in mapping")));
                    }
                    *key = Some(node);
                }
                Some(k) => entries.push((k, node)),
            },
        }
        Ok(())
    }
}

fn to_u32(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// Maps saphyr's character indices to byte offsets (identity for ASCII input).
struct CharIndex {
    offsets: Option<Vec<usize>>,
}

impl CharIndex {
    fn new(text: &str) -> Self {
        if text.is_ascii() {
            CharIndex { offsets: None }
        } else {
            let mut v: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
            v.push(text.len());
            CharIndex { offsets: Some(v) }
        }
    }

    fn byte(&self, char_idx: usize) -> usize {
        match &self.offsets {
            None => char_idx,
            Some(v) => v.get(char_idx).copied().unwrap_or(usize::MAX),
        }
    }

    fn slice<'t>(&self, text: &'t str, start: usize, end: usize) -> Option<&'t str> {
        text.get(self.byte(start)..self.byte(end))
    }
}

impl Value {
    /// The YAML type name, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(..) => "integer",
            Value::Float(..) => "float",
            Value::Str(_) => "string",
            Value::Seq(_) => "sequence",
            Value::Map(_) => "mapping",
        }
    }
}

impl Node {
    /// A scalar's text (strings, numbers as written, booleans); `None` for other nodes.
    pub fn as_text(&self) -> Option<std::borrow::Cow<'_, str>> {
        match &self.value {
            Value::Str(s) => Some(s.as_str().into()),
            Value::Int(_, r) | Value::Float(_, r) => Some((**r).into()),
            Value::Bool(b) => Some(if *b { "true" } else { "false" }.into()),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The map entry `key`: `(key node, value node)`.
    pub fn entry(&self, key: &str) -> Option<(&Node, &Node)> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_text().as_deref() == Some(key))
                .map(|(k, v)| (k, v)),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Node> {
        match &mut self.value {
            Value::Map(entries) => entries
                .iter_mut()
                .find(|(k, _)| k.as_text().as_deref() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    fn child(&self, seg: &str) -> Option<(&Node, &Node)> {
        match &self.value {
            Value::Seq(items) => {
                let i: usize = seg.parse().ok()?;
                items.get(i).map(|n| (n, n))
            }
            Value::Map(_) => self.entry(seg),
            _ => None,
        }
    }

    /// The position of the value at `path` (map keys, or decimal indices into sequences), or
    /// of the deepest node on the way that exists.
    pub fn pos_of(&self, path: &[&str]) -> Pos {
        let mut cur = self;
        for seg in path {
            match cur.child(seg) {
                Some((_, v)) => cur = v,
                None => break,
            }
        }
        cur.pos
    }

    /// The position of the key of the last segment of `path` (for a sequence item, the item),
    /// falling back like [`Node::pos_of`].
    pub fn key_pos_of(&self, path: &[&str]) -> Pos {
        let mut cur = self;
        let mut pos = self.pos;
        for seg in path {
            match cur.child(seg) {
                Some((k, v)) => {
                    pos = k.pos;
                    cur = v;
                }
                None => return cur.pos,
            }
        }
        pos
    }

    /// Removes the entry/item at `path` (innermost-last indices); returns the key-path it had.
    fn remove_at(&mut self, path: &[usize]) -> Option<String> {
        let (last, parents) = path.split_last()?;
        let mut cur = self;
        let mut names = Vec::new();
        for &i in parents {
            cur = match &mut cur.value {
                Value::Map(entries) => {
                    let (k, v) = entries.get_mut(i)?;
                    names.push(k.as_text().map(|t| t.into_owned()).unwrap_or_default());
                    v
                }
                Value::Seq(items) => {
                    names.push(i.to_string());
                    items.get_mut(i)?
                }
                _ => return None,
            };
        }
        match &mut cur.value {
            Value::Map(entries) if *last < entries.len() => {
                let (k, _) = entries.remove(*last);
                names.push(k.as_text().map(|t| t.into_owned()).unwrap_or_default());
            }
            Value::Seq(items) if *last < items.len() => {
                items.remove(*last);
                names.push(last.to_string());
            }
            _ => return None,
        }
        Some(names.join("."))
    }
}

/// A deserialization error: message, position of the innermost offending node, and the
/// indices (innermost first) of the map entries / sequence items containing it.
#[derive(Debug, Clone)]
pub struct DeError {
    pub message: String,
    pub pos: Option<Pos>,
    path: Vec<usize>,
    /// The key of the innermost mapping entry containing the offending value.
    field: Option<String>,
}

impl DeError {
    fn at(mut self, pos: Pos) -> Self {
        if self.pos.is_none() {
            self.pos = Some(pos);
        }
        self
    }

    fn within(mut self, index: usize) -> Self {
        self.path.push(index);
        self
    }

    fn in_field(mut self, key: &Node) -> Self {
        if self.field.is_none() {
            self.field = key.as_text().map(|t| t.to_string());
        }
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            message: msg.to_string(),
            pos: None,
            path: Vec::new(),
            field: None,
        }
    }
}

/// The outcome of [`deserialize_all`].
pub struct Deserialized<T> {
    /// `None` when the node could not be made to deserialize at all.
    pub value: Option<T>,
    /// Every error met, positioned.
    pub errors: Vec<(Pos, String)>,
    /// Dotted key paths (relative to the node) of entries dropped because of an error.
    pub removed: Vec<String>,
}

/// Deserializes `node` into `T`, dropping each offending entry and retrying (at most `limit`
/// times) so that every error is reported. `node` is modified (offending entries removed).
pub fn deserialize_all<T: DeserializeOwned>(node: &mut Node, limit: usize) -> Deserialized<T> {
    let mut errors = Vec::new();
    let mut removed = Vec::new();
    for _ in 0..=limit {
        match T::deserialize(NodeDe(node)) {
            Ok(v) => {
                return Deserialized {
                    value: Some(v),
                    errors,
                    removed,
                };
            }
            Err(e) => {
                let pos = e.pos.unwrap_or(node.pos);
                errors.push((pos, type_message(&tidy(&e.message), e.field.as_deref())));
                let path: Vec<usize> = e.path.iter().rev().copied().collect();
                match node.remove_at(&path) {
                    Some(name) => removed.push(name),
                    None => break,
                }
            }
        }
    }
    Deserialized {
        value: None,
        errors,
        removed,
    }
}

/// serde deserializer over a [`Node`].
pub struct NodeDe<'a>(pub &'a Node);

impl<'de, 'a> de::Deserializer<'de> for NodeDe<'a> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let n = self.0;
        let r = match &n.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i, _) => visitor.visit_i64(*i),
            Value::Float(f, _) => visitor.visit_f64(*f),
            Value::Str(s) => visitor.visit_str(s),
            Value::Seq(items) => visitor.visit_seq(SeqAcc { items, i: 0 }),
            Value::Map(entries) => visitor.visit_map(MapAcc { entries, i: 0 }),
        };
        r.map_err(|e: DeError| e.at(n.pos))
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let n = self.0;
        match &n.value {
            Value::Int(_, raw) | Value::Float(_, raw) => {
                visitor.visit_str(raw).map_err(|e: DeError| e.at(n.pos))
            }
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let n = self.0;
        match n.value {
            Value::Null => visitor.visit_none().map_err(|e: DeError| e.at(n.pos)),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let pos = self.0.pos;
        visitor
            .visit_newtype_struct(self)
            .map_err(|e: DeError| e.at(pos))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let n = self.0;
        match n.as_text() {
            Some(t) if !matches!(n.value, Value::Bool(_)) => {
                let d: de::value::StrDeserializer<'_, DeError> = t.as_ref().into_deserializer();
                visitor.visit_enum(d).map_err(|e: DeError| e.at(n.pos))
            }
            _ => Err(de::Error::invalid_type(unexpected(n), &visitor))
                .map_err(|e: DeError| e.at(n.pos)),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf unit
        unit_struct seq tuple tuple_struct map struct
    }
}

fn unexpected(n: &Node) -> de::Unexpected<'_> {
    match &n.value {
        Value::Null => de::Unexpected::Unit,
        Value::Bool(b) => de::Unexpected::Bool(*b),
        Value::Int(i, _) => de::Unexpected::Signed(*i),
        Value::Float(f, _) => de::Unexpected::Float(*f),
        Value::Str(s) => de::Unexpected::Str(s),
        Value::Seq(_) => de::Unexpected::Seq,
        Value::Map(_) => de::Unexpected::Map,
    }
}

struct SeqAcc<'a> {
    items: &'a [Node],
    i: usize,
}

impl<'de, 'a> de::SeqAccess<'de> for SeqAcc<'a> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some(item) = self.items.get(self.i) else {
            return Ok(None);
        };
        let i = self.i;
        self.i += 1;
        seed.deserialize(NodeDe(item))
            .map(Some)
            .map_err(|e| e.at(item.pos).within(i))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len().saturating_sub(self.i))
    }
}

struct MapAcc<'a> {
    entries: &'a [(Node, Node)],
    i: usize,
}

impl<'de, 'a> de::MapAccess<'de> for MapAcc<'a> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((k, _)) = self.entries.get(self.i) else {
            return Ok(None);
        };
        seed.deserialize(NodeDe(k))
            .map(Some)
            .map_err(|e| e.at(k.pos).within(self.i))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let i = self.i;
        self.i += 1;
        match self.entries.get(i) {
            Some((k, v)) => seed
                .deserialize(NodeDe(v))
                .map_err(|e| e.at(v.pos).within(i).in_field(k)),
            None => Err(de::Error::custom(
                "value requested past the end of a mapping",
            )),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len().saturating_sub(self.i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        port: Option<u16>,
        name: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        inner: Option<Inner>,
        list: Option<Vec<Inner>>,
        #[allow(dead_code)]
        flag: Option<bool>,
    }

    #[test]
    fn positions_are_one_based() {
        let docs = parse_documents("a:\n  b: [x, y]\n").unwrap();
        assert_eq!(docs[0].pos_of(&["a", "b", "1"]), Pos { line: 2, col: 10 });
        assert_eq!(docs[0].key_pos_of(&["a", "b"]), Pos { line: 2, col: 3 });
        assert_eq!(docs[0].pos_of(&["a", "zzz"]), Pos { line: 2, col: 3 });
    }

    #[test]
    fn syntax_error_position() {
        let e = parse_documents("a: 1\na: 2\n").unwrap_err();
        assert_eq!(e.pos, Pos { line: 2, col: 1 });
    }

    #[test]
    fn a_tab_error_points_at_the_tab() {
        let e = parse_documents("a:\n  b: /t/\n\tc: 1\n").unwrap_err();
        assert_eq!(e.pos, Pos { line: 3, col: 1 }, "{}", e.message);
        assert!(
            e.message.contains("indentation must use spaces"),
            "{}",
            e.message
        );
    }

    #[test]
    fn type_errors_name_the_field_in_yaml_words() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct S {
            timeout_ms: Option<u64>,
            precedence: Option<i32>,
            flag: Option<bool>,
            list: Option<Vec<String>>,
            inner: Option<Inner>,
        }
        let msgs = |y: &str| {
            let mut n = parse_documents(y).unwrap().remove(0);
            deserialize_all::<S>(&mut n, 10)
                .errors
                .into_iter()
                .map(|(p, m)| format!("{p}: {m}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            msgs(
                "timeout_ms: soon\nprecedence: 1.5\nflag: \"yes\"\nlist: 3\ninner: { port: [1] }\n"
            ),
            [
                "1:13: timeout_ms: expected an integer number of milliseconds, found the string \"soon\"",
                "2:13: precedence: expected an integer, found the number 1.5",
                "3:7: flag: expected true or false, found the string \"yes\"",
                "4:7: list: expected a list, found the integer 3",
                "5:16: port: expected a whole number from 0 to 65535, found a list",
            ]
        );
    }

    #[test]
    fn a_field_without_its_unit_suggests_the_field() {
        let msg = "unknown field `timeout`, expected one of `hostname`, `prefix`, `prefix_exact`, `method`, `headers`, `service`, `timeout_ms`, `idle_timeout_ms`";
        assert_eq!(
            tidy(msg),
            "unknown field `timeout` (did you mean `timeout_ms`?)"
        );
    }

    #[test]
    fn unknown_field_suggestions() {
        let long = "unknown field `prefx`, expected one of `hostname`, `prefix`, `prefix_exact`, `method`, `headers`, `service`, `weight`";
        assert_eq!(tidy(long), "unknown field `prefx` (did you mean `prefix`?)");
        let none = "unknown field `zzzzzz`, expected one of `hostname`, `prefix`, `prefix_exact`, `method`, `headers`, `service`, `weight`";
        assert_eq!(tidy(none), "unknown field `zzzzzz`");
        assert_eq!(
            tidy("unknown field `zzzz`, expected `b`"),
            "unknown field `zzzz`, expected `b`"
        );
        assert_eq!(
            tidy("unknown field `zzzz`, expected one of `a`, `b`"),
            "unknown field `zzzz`, expected one of `a`, `b`"
        );
    }

    #[test]
    fn anchors_tags_and_documents() {
        let docs = parse_documents(
            "a: &x {b: 1}\nc: *x\nd: !!str 12\ne: ~\n---\n---\nf: [1, 2.5, true, '3']\n",
        )
        .unwrap();
        assert_eq!(docs.len(), 3);
        assert!(matches!(
            docs[0].get("c").and_then(|c| c.get("b")).map(|b| &b.value),
            Some(Value::Int(1, _))
        ));
        assert_eq!(docs[0].get("d").and_then(Node::as_str), Some("12"));
        assert!(matches!(
            docs[0].get("e").map(|e| &e.value),
            Some(Value::Null)
        ));
        assert!(matches!(docs[1].value, Value::Null));
        let f = docs[2].get("f").map(|f| &f.value);
        assert!(matches!(f, Some(Value::Seq(items)) if items.len() == 4
            && matches!(items[1].value, Value::Float(..))
            && matches!(items[2].value, Value::Bool(true))
            && matches!(&items[3].value, Value::Str(s) if s == "3")));
        let e = parse_documents("a: 1\nb: 2\n'a': 3\n").unwrap_err();
        assert_eq!((e.pos.line, e.pos.col), (3, 1));
        assert!(e.message.contains("duplicated key `a`"));
        // `1` and `"1"` are different keys
        assert!(parse_documents("1: a\n'1': b\n").is_ok());
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let p = i - 1;
            text.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"));
        }
        let e = parse_documents(&text).unwrap_err();
        assert!(e.message.contains("alias"), "{}", e.message);
    }

    #[test]
    fn numbers_keep_their_spelling() {
        let mut docs = parse_documents("name: 1.10\n").unwrap();
        let d = deserialize_all::<Inner>(&mut docs[0], 10);
        assert_eq!(d.value.unwrap().name.as_deref(), Some("1.10"));
    }

    #[test]
    fn every_error_is_collected() {
        let text = "inner:\n  port: 99999\n  bogus: 1\nlist:\n  - {port: x}\n  - {name: ok}\nflag: maybe\n";
        let mut docs = parse_documents(text).unwrap();
        let d = deserialize_all::<Outer>(&mut docs[0], 10);
        let got: Vec<(u32, u32)> = d.errors.iter().map(|(p, _)| (p.line, p.col)).collect();
        assert_eq!(got, vec![(2, 9), (3, 3), (5, 12), (7, 7)], "{:?}", d.errors);
        assert!(d.errors[1].1.contains("unknown field `bogus`"));
        let v = d.value.unwrap();
        assert!(v.inner.unwrap().port.is_none());
        assert_eq!(v.list.unwrap().len(), 2);
        assert_eq!(
            d.removed,
            vec!["inner.port", "inner.bogus", "list.0.port", "flag"]
        );
    }
}
