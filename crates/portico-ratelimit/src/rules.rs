//! Rate limit rules in envoyproxy/ratelimit's YAML format, and the lookup of the limit that
//! applies to a request descriptor.
//!
//! ```yaml
//! domain: portico
//! descriptors:
//!   - key: generic_key
//!     value: api
//!     rate_limit: { unit: minute, requests_per_unit: 100 }
//!   - key: remote_address            # no value: one counter per distinct address
//!     rate_limit: { unit: second, requests_per_unit: 10 }
//!     descriptors:                   # nested: matches descriptors with more entries
//!       - key: path
//!         value: /login
//!         rate_limit: { unit: minute, requests_per_unit: 5 }
//! ```
//!
//! Matching follows envoyproxy/ratelimit: entry by entry, a node with the same key and value
//! wins over one with the key alone (the default for any value); the limit is the one on the
//! node reached by the descriptor's last entry. Unknown fields (`detailed_metric`, …) are
//! accepted and ignored so configs written for envoyproxy/ratelimit load unchanged.
//!
//! The file is read with the same YAML stack as Portico's config (`portico_config::node`), so
//! every error names `FILE:LINE:COL` of the offending key or value.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use portico_config::node::{self as yaml, NodeDe, Pos, Value};
use serde::Deserialize;

use crate::proto::{Entry, Unit};

/// One rules file as written.
#[derive(Debug, Clone, Deserialize)]
pub struct DomainFile {
    pub domain: String,
    #[serde(default)]
    pub descriptors: Vec<DescriptorFile>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DescriptorFile {
    pub key: String,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub rate_limit: Option<RateLimitFile>,
    #[serde(default)]
    pub shadow_mode: bool,
    #[serde(default)]
    pub descriptors: Vec<DescriptorFile>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RateLimitFile {
    pub unit: String,
    #[serde(default)]
    pub requests_per_unit: u32,
    #[serde(default)]
    pub unlimited: bool,
    #[serde(default)]
    pub name: Option<String>,
}

/// A limit found for a descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub requests_per_unit: u32,
    pub unit: Unit,
    /// Unlimited: counted nowhere, always OK.
    pub unlimited: bool,
    /// Shadow mode: counted, reported, but never over the limit.
    pub shadow: bool,
    pub name: String,
}

impl Limit {
    /// The fixed window's length, in seconds.
    pub fn window_secs(&self) -> u64 {
        unit_secs(self.unit)
    }
}

pub fn unit_secs(unit: Unit) -> u64 {
    match unit {
        Unit::Second | Unit::Unknown => 1,
        Unit::Minute => 60,
        Unit::Hour => 3600,
        Unit::Day => 86_400,
        Unit::Month => 30 * 86_400,
        Unit::Year => 365 * 86_400,
        Unit::Week => 7 * 86_400,
    }
}

#[derive(Debug, Default)]
struct Node {
    limit: Option<Limit>,
    children: Level,
}

/// Children by "key" (default) and by "key_value".
#[derive(Debug, Default)]
struct Level(HashMap<(String, Option<String>), Node>);

/// Every domain's rules, compiled for lookups.
#[derive(Debug, Default)]
pub struct Rules {
    domains: HashMap<String, Level>,
}

/// A rules file that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("{0}: {1}")]
    Read(PathBuf, std::io::Error),
    /// A syntax, type or rule error at a position of the file.
    #[error("{}:{}:{}: {}", .0.display(), .1.line, .1.col, .2)]
    Parse(PathBuf, Pos, String),
    #[error("{0}: {1}")]
    Invalid(PathBuf, String),
}

impl Rules {
    /// Loads rules from files and directories (every `*.yaml`/`*.yml` in a directory).
    pub fn load(paths: &[PathBuf]) -> Result<Rules, RulesError> {
        let mut files = Vec::new();
        for p in paths {
            if p.is_dir() {
                let rd = std::fs::read_dir(p).map_err(|e| RulesError::Read(p.clone(), e))?;
                let mut found: Vec<PathBuf> = rd
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
                    .collect();
                found.sort();
                files.extend(found);
            } else {
                files.push(p.clone());
            }
        }
        let mut rules = Rules::default();
        for f in files {
            let text = std::fs::read_to_string(&f).map_err(|e| RulesError::Read(f.clone(), e))?;
            rules.add_yaml(&f, &text)?;
        }
        Ok(rules)
    }

    /// Adds one rules file (`path` names it in errors, with the line and column).
    pub fn add_yaml(&mut self, path: &Path, text: &str) -> Result<(), RulesError> {
        let at = |pos: Pos, m: String| RulesError::Parse(path.to_path_buf(), pos, m);
        let docs = yaml::parse_documents(text).map_err(|e| at(e.pos, e.message))?;
        let docs: Vec<yaml::Node> = docs
            .into_iter()
            .filter(|d| !matches!(d.value, Value::Null))
            .collect();
        let start = Pos { line: 1, col: 1 };
        let root = match docs.as_slice() {
            [one] => one,
            [] => return Err(at(start, "missing field `domain`".into())),
            [_, second, ..] => {
                return Err(at(
                    second.pos,
                    "a rules file holds one domain (one YAML document)".into(),
                ));
            }
        };
        let file = DomainFile::deserialize(NodeDe(root))
            .map_err(|e| at(e.pos.unwrap_or(root.pos), e.message))?;
        if file.domain.is_empty() {
            let pos = root.get("domain").map_or(root.pos, |n| n.pos);
            return Err(at(pos, "domain must not be empty".into()));
        }
        if self.domains.contains_key(&file.domain) {
            let pos = root.get("domain").map_or(root.pos, |n| n.pos);
            return Err(at(
                pos,
                format!("domain `{}` is defined twice", file.domain),
            ));
        }
        let level = build_level(&file.descriptors, root.get("descriptors"))
            .map_err(|(pos, m)| at(pos.unwrap_or(root.pos), m))?;
        self.domains.insert(file.domain, level);
        Ok(())
    }

    pub fn add(&mut self, path: &Path, file: DomainFile) -> Result<(), RulesError> {
        let bad = |m: String| RulesError::Invalid(path.to_path_buf(), m);
        if file.domain.is_empty() {
            return Err(bad("domain must not be empty".into()));
        }
        if self.domains.contains_key(&file.domain) {
            return Err(bad(format!("domain `{}` is defined twice", file.domain)));
        }
        let level = build_level(&file.descriptors, None).map_err(|(_, m)| bad(m))?;
        self.domains.insert(file.domain, level);
        Ok(())
    }

    pub fn domains(&self) -> impl Iterator<Item = &str> {
        self.domains.keys().map(String::as_str)
    }

    /// The limit for one descriptor of `domain`, if any.
    pub fn lookup(&self, domain: &str, entries: &[Entry]) -> Option<&Limit> {
        let mut level = self.domains.get(domain)?;
        let last = entries.len().checked_sub(1)?;
        for (i, e) in entries.iter().enumerate() {
            let node = level
                .0
                .get(&(e.key.clone(), Some(e.value.clone())))
                .or_else(|| level.0.get(&(e.key.clone(), None)))?;
            if i == last {
                return node.limit.as_ref();
            }
            if node.children.0.is_empty() {
                return None;
            }
            level = &node.children;
        }
        None
    }
}

/// The `index`th item of a YAML sequence node.
fn item(seq: Option<&yaml::Node>, index: usize) -> Option<&yaml::Node> {
    match &seq?.value {
        Value::Seq(items) => items.get(index),
        _ => None,
    }
}

/// The position of `path` below `node`, or of `node`, if the tree is known.
fn pos(node: Option<&yaml::Node>, path: &[&str]) -> Option<Pos> {
    node.map(|n| n.pos_of(path))
}

/// One level of descriptors; `nodes` is their YAML sequence (for error positions) when known.
fn build_level(
    list: &[DescriptorFile],
    nodes: Option<&yaml::Node>,
) -> Result<Level, (Option<Pos>, String)> {
    let mut level = Level::default();
    for (i, d) in list.iter().enumerate() {
        let node = item(nodes, i);
        if d.key.is_empty() {
            return Err((
                pos(node, &["key"]),
                "descriptor key must not be empty".into(),
            ));
        }
        let limit = match &d.rate_limit {
            None => None,
            Some(rl) => {
                let unit = match rl.unit.to_ascii_lowercase().as_str() {
                    "second" => Unit::Second,
                    "minute" => Unit::Minute,
                    "hour" => Unit::Hour,
                    "day" => Unit::Day,
                    "week" => Unit::Week,
                    "month" => Unit::Month,
                    "year" => Unit::Year,
                    other => {
                        return Err((
                            pos(node, &["rate_limit", "unit"]),
                            format!(
                                "descriptor `{}`: unknown unit `{other}` (second, minute, hour, day, week, month, year)",
                                d.key
                            ),
                        ));
                    }
                };
                if rl.requests_per_unit == 0 && !rl.unlimited {
                    return Err((
                        pos(node, &["rate_limit", "requests_per_unit"]),
                        format!(
                            "descriptor `{}`: requests_per_unit must be at least 1",
                            d.key
                        ),
                    ));
                }
                Some(Limit {
                    requests_per_unit: rl.requests_per_unit,
                    unit,
                    unlimited: rl.unlimited,
                    shadow: d.shadow_mode,
                    name: rl.name.clone().unwrap_or_default(),
                })
            }
        };
        let key = (d.key.clone(), d.value.clone());
        if level.0.contains_key(&key) {
            return Err((
                pos(node, &["key"]),
                format!(
                    "descriptor `{}`{} is defined twice",
                    d.key,
                    d.value
                        .as_deref()
                        .map(|v| format!("=`{v}`"))
                        .unwrap_or_default()
                ),
            ));
        }
        let children = build_level(&d.descriptors, node.and_then(|n| n.get("descriptors")))?;
        level.0.insert(key, Node { limit, children });
    }
    Ok(level)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = r#"
domain: portico
descriptors:
  - key: generic_key
    value: api
    rate_limit: { unit: minute, requests_per_unit: 100 }
  - key: remote_address
    rate_limit:
      unit: second
      requests_per_unit: 10
    descriptors:
      - key: path
        value: /login
        rate_limit: { unit: MINUTE, requests_per_unit: 5 }
  - key: tenant
    descriptors:
      - key: plan
        rate_limit: { unit: hour, requests_per_unit: 7 }
    detailed_metric: true
"#;

    fn rules() -> Rules {
        let mut r = Rules::default();
        r.add_yaml(Path::new("t.yaml"), RULES).expect("rules load");
        r
    }

    #[test]
    fn lookup_follows_envoy_ratelimit_matching() {
        let r = rules();
        let e = |k: &str, v: &str| crate::proto::entry(k, v);
        let l = r.lookup("portico", &[e("generic_key", "api")]).cloned();
        assert_eq!(
            l.map(|l| (l.requests_per_unit, l.unit)),
            Some((100, Unit::Minute))
        );
        assert!(r.lookup("portico", &[e("generic_key", "other")]).is_none());
        let l = r
            .lookup("portico", &[e("remote_address", "1.2.3.4")])
            .cloned();
        assert_eq!(l.map(|l| l.requests_per_unit), Some(10));
        let l = r
            .lookup(
                "portico",
                &[e("remote_address", "1.2.3.4"), e("path", "/login")],
            )
            .cloned();
        assert_eq!(
            l.map(|l| (l.requests_per_unit, l.unit)),
            Some((5, Unit::Minute))
        );
        assert!(
            r.lookup(
                "portico",
                &[e("remote_address", "1.2.3.4"), e("path", "/x")]
            )
            .is_none()
        );
        assert!(r.lookup("portico", &[e("tenant", "a")]).is_none());
        let l = r
            .lookup("portico", &[e("tenant", "a"), e("plan", "free")])
            .cloned();
        assert_eq!(l.map(|l| l.requests_per_unit), Some(7));
        assert!(r.lookup("other", &[e("generic_key", "api")]).is_none());
        assert!(r.lookup("portico", &[]).is_none());
    }

    /// Every unit of the API's `Unit` enum is accepted, with its window.
    #[test]
    fn every_unit_has_a_window() {
        let mut r = Rules::default();
        for (unit, secs) in [
            ("second", 1),
            ("minute", 60),
            ("hour", 3600),
            ("day", 86_400),
            ("week", 7 * 86_400),
            ("month", 30 * 86_400),
            ("year", 365 * 86_400),
        ] {
            let text = format!(
                "domain: {unit}\ndescriptors:\n  - key: k\n    rate_limit: {{ unit: {unit}, requests_per_unit: 1 }}\n"
            );
            r.add_yaml(Path::new(unit), &text).expect("rules load");
            let l = r
                .lookup(unit, &[crate::proto::entry("k", "v")])
                .cloned()
                .expect("a limit");
            assert_eq!(l.window_secs(), secs, "{unit}");
        }
    }

    #[test]
    fn bad_rules_are_rejected() {
        let mut r = Rules::default();
        let bad_unit = "domain: d\ndescriptors:\n  - key: k\n    rate_limit: { unit: fortnight, requests_per_unit: 1 }\n";
        assert!(r.add_yaml(Path::new("a"), bad_unit).is_err());
        let zero = "domain: d\ndescriptors:\n  - key: k\n    rate_limit: { unit: second, requests_per_unit: 0 }\n";
        assert!(r.add_yaml(Path::new("b"), zero).is_err());
        assert!(r.add_yaml(Path::new("c"), "domain: [").is_err());
    }

    /// Every kind of error in a rules file names FILE:LINE:COL of the offending key or value.
    #[test]
    fn errors_name_file_line_and_column() {
        let err = |text: &str| {
            Rules::default()
                .add_yaml(Path::new("rules.yaml"), text)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        // A rule error, nested: the value of `unit` on line 6.
        let nested = "domain: d\ndescriptors:\n  - key: a\n    descriptors:\n      - key: b\n        rate_limit: { unit: fortnight, requests_per_unit: 1 }\n";
        let e = err(nested);
        assert!(e.starts_with("rules.yaml:6:29: "), "{e}");
        assert!(e.contains("unknown unit `fortnight`"), "{e}");
        // requests_per_unit 0, at its value.
        let zero = "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n      requests_per_unit: 0\n";
        let e = err(zero);
        assert!(e.starts_with("rules.yaml:6:26: "), "{e}");
        // A type error: `requests_per_unit` is not a number.
        let typed = "domain: d\ndescriptors:\n  - key: k\n    rate_limit: { unit: second, requests_per_unit: lots }\n";
        let e = err(typed);
        assert!(e.starts_with("rules.yaml:4:"), "{e}");
        // A syntax error.
        let e = err("domain: d\ndescriptors: [\n");
        assert!(e.starts_with("rules.yaml:"), "{e}");
        assert!(
            e.split(':')
                .nth(1)
                .is_some_and(|l| l.parse::<u32>().is_ok()),
            "{e}"
        );
        // A missing field, at the map that lacks it.
        let e = err("descriptors: []\n");
        assert!(
            e.starts_with("rules.yaml:1:1: ") && e.contains("domain"),
            "{e}"
        );
        // A duplicate descriptor, at the second one's key.
        let dup = "domain: d\ndescriptors:\n  - key: k\n  - key: k\n";
        let e = err(dup);
        assert!(e.starts_with("rules.yaml:4:10: "), "{e}");
    }
}
