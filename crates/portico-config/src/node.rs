//! The positioned YAML tree and the serde bridge onto it.
//!
//! Owns [`Node`] (an owned copy of saphyr's `MarkedYaml` with 1-based positions), path lookups
//! that turn `spec.endpoints[2]` into a `line:col`, and a serde [`Deserializer`](serde::Deserializer) over a node
//! whose errors carry the position of the innermost offending node (the key, for unknown
//! fields) plus the path of map entries / sequence items that contain it.
//! [`deserialize_all`] uses that path to drop the offending entry and retry, so one pass
//! collects every type error of a resource rather than the first.

use std::fmt;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};
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
    let docs = MarkedYaml::load_from_str(text).map_err(|e| SyntaxError {
        pos: Pos {
            line: to_u32(e.marker().line()),
            col: to_u32(e.marker().col() + 1),
        },
        message: e.info().to_string(),
    })?;
    let chars = CharIndex::new(text);
    Ok(docs.iter().map(|d| convert(d, text, &chars)).collect())
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

fn convert(n: &MarkedYaml<'_>, text: &str, chars: &CharIndex) -> Node {
    let pos = Pos {
        line: to_u32(n.span.start.line()),
        col: to_u32(n.span.start.col() + 1),
    };
    let raw = || -> Box<str> {
        chars
            .slice(text, n.span.start.index(), n.span.end.index())
            .map(|s| s.trim().into())
            .unwrap_or_default()
    };
    let value = match &n.data {
        YamlData::Value(s) => match s {
            Scalar::Null => Value::Null,
            Scalar::Boolean(b) => Value::Bool(*b),
            Scalar::Integer(i) => {
                let r = raw();
                Value::Int(
                    *i,
                    if r.is_empty() {
                        i.to_string().into()
                    } else {
                        r
                    },
                )
            }
            Scalar::FloatingPoint(f) => {
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
            Scalar::String(s) => Value::Str(s.to_string()),
        },
        YamlData::Representation(s, _, _) => Value::Str(s.to_string()),
        YamlData::Sequence(items) => {
            Value::Seq(items.iter().map(|i| convert(i, text, chars)).collect())
        }
        YamlData::Mapping(m) => Value::Map(
            m.iter()
                .map(|(k, v)| (convert(k, text, chars), convert(v, text, chars)))
                .collect(),
        ),
        YamlData::Tagged(_, inner) => {
            return Node {
                pos,
                ..convert(inner, text, chars)
            };
        }
        YamlData::Alias(_) | YamlData::BadValue => Value::Null,
    };
    Node { pos, value }
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
                errors.push((pos, tidy(&e.message)));
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

/// Shortens serde's "unknown field `x`, expected one of ..." (a long list for big specs) to
/// the field and, when one is close, a suggestion.
fn tidy(msg: &str) -> String {
    let Some(rest) = msg.strip_prefix("unknown field `") else {
        return msg.to_string();
    };
    let Some((field, list)) = rest.split_once("`, expected one of ") else {
        return msg.to_string();
    };
    let candidates: Vec<&str> = list.split(", ").map(|c| c.trim_matches('`')).collect();
    let best = candidates
        .iter()
        .map(|c| (edit_distance(field, c), *c))
        .min();
    match best {
        Some((dist, c)) if dist <= 2.max(field.len() / 4) => {
            format!("unknown field `{field}` (did you mean `{c}`?)")
        }
        _ if candidates.len() > 6 => format!("unknown field `{field}`"),
        _ => msg.to_string(),
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
            Some((_, v)) => seed
                .deserialize(NodeDe(v))
                .map_err(|e| e.at(v.pos).within(i)),
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
