//! The state the ADS server and its streams share: what is published (with each resource's
//! Delta version), the connected nodes with their per-type ACK/NACK state, and the counters.
//! The stream kinds (`sotw`, `delta`) and the server (`server`) import this module; it imports
//! none of them.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use envoy_types::pb::envoy::config::core::v3::Node;
use tokio::sync::watch;

use crate::common::{Named, Resources, type_url};

/// What is served: one config generation, translated.
#[derive(Debug, Clone, Default)]
pub struct Published {
    /// The config generation, or with a git source the commit's full hash.
    pub version: String,
    pub resources: Resources,
}

/// A publication as served: the resources, and for Delta each one's content version and an
/// index by name.
#[derive(Debug, Default)]
pub(crate) struct Served {
    pub(crate) published: Published,
    /// Per type (in [`type_url::PUSH_ORDER`]): resource name -> (index in
    /// `published.resources.of_type`, content version).
    versions: [HashMap<String, (usize, String)>; 5],
}

impl Served {
    pub(crate) fn new(published: Published) -> Served {
        let mut versions: [HashMap<String, (usize, String)>; 5] = Default::default();
        for (i, t) in type_url::PUSH_ORDER.iter().enumerate() {
            versions[i] = published
                .resources
                .of_type(t)
                .iter()
                .enumerate()
                .map(|(at, n)| (n.name.clone(), (at, content_version(n))))
                .collect();
        }
        Served {
            published,
            versions,
        }
    }

    pub(crate) fn version(&self) -> &str {
        &self.published.version
    }

    /// The resources of type `t` with their content versions (empty for an unknown type).
    pub(crate) fn of_type(&self, t: &str) -> &[Named] {
        self.published.resources.of_type(t)
    }

    /// Resource `name` of type `t` and its content version.
    pub(crate) fn get(&self, t: &str, name: &str) -> Option<(&Named, &str)> {
        let (at, v) = self.versions[type_index(t)?].get(name)?;
        Some((self.of_type(t).get(*at)?, v.as_str()))
    }
}

/// A resource's Delta version: a hash of its serialized form, so an unchanged resource keeps
/// its version across publications and across restarts of the control plane (an Envoy that
/// reconnects with the versions it has is sent only what changed).
fn content_version(n: &Named) -> String {
    let mut h = DefaultHasher::new();
    h.write(n.resource.type_url.as_bytes());
    h.write(&n.resource.value);
    format!("{:016x}", h.finish())
}

/// One type's state on one stream.
#[derive(Debug, Clone, Default)]
pub(crate) struct TypeState {
    /// State-of-the-World: names the node asked for (empty: all).
    pub(crate) names: Vec<String>,
    pub(crate) version_sent: Option<String>,
    pub(crate) nonce: String,
    pub(crate) version_acked: Option<String>,
    /// `(version, error)` of the last NACK.
    pub(crate) last_nack: Option<(String, String)>,
}

/// Which xDS protocol a stream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Sotw,
    Delta,
}

impl Protocol {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Protocol::Sotw => "sotw",
            Protocol::Delta => "delta",
        }
    }
}

/// One connected stream (an Envoy node).
#[derive(Debug, Clone)]
pub(crate) struct NodeState {
    pub(crate) id: String,
    pub(crate) cluster: String,
    pub(crate) protocol: Protocol,
    pub(crate) connected_at: SystemTime,
    pub(crate) types: BTreeMap<String, TypeState>,
}

/// What an answer to a response (by its nonce) was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// No nonce: not an answer.
    None,
    /// The answer to an older response: a newer one is on its way.
    Stale,
    Ack,
    Nack,
}

/// Counters per type URL, in [`type_url::PUSH_ORDER`].
#[derive(Debug, Default)]
pub(crate) struct TypeCounters([AtomicU64; 5]);

impl TypeCounters {
    fn inc(&self, t: &str) {
        if let Some(i) = type_index(t) {
            self.0[i].fetch_add(1, Ordering::Relaxed);
        }
    }
    pub(crate) fn get(&self, i: usize) -> u64 {
        self.0[i].load(Ordering::Relaxed)
    }
}

pub(crate) fn type_index(t: &str) -> Option<usize> {
    type_url::PUSH_ORDER.iter().position(|u| *u == t)
}

/// The short name of a type URL, for metric labels (`cluster`, `listener`, ...).
pub fn type_label(t: &str) -> &'static str {
    match t {
        type_url::LISTENER => "listener",
        type_url::ROUTE => "route",
        type_url::CLUSTER => "cluster",
        type_url::ENDPOINT => "endpoint",
        type_url::SECRET => "secret",
        _ => "other",
    }
}

/// What the server and its streams share.
pub(crate) struct Shared {
    pub(crate) current: watch::Sender<Arc<Served>>,
    pub(crate) nodes: Mutex<BTreeMap<u64, NodeState>>,
    pub(crate) next_stream: AtomicU64,
    pub(crate) next_nonce: AtomicU64,
    pub(crate) pushes: TypeCounters,
    pub(crate) nacks: TypeCounters,
}

impl Shared {
    pub(crate) fn with_nodes<R>(&self, f: impl FnOnce(&mut BTreeMap<u64, NodeState>) -> R) -> R {
        f(&mut self.nodes.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// A fresh nonce.
    pub(crate) fn nonce(&self) -> String {
        self.next_nonce.fetch_add(1, Ordering::Relaxed).to_string()
    }

    /// The node of `stream_id`, listed at its first request (with the id and cluster it sends).
    pub(crate) fn node_entry<'a>(
        nodes: &'a mut BTreeMap<u64, NodeState>,
        stream_id: u64,
        node: Option<&Node>,
        protocol: Protocol,
    ) -> &'a mut NodeState {
        let state = nodes.entry(stream_id).or_insert_with(|| NodeState {
            id: String::new(),
            cluster: String::new(),
            protocol,
            connected_at: SystemTime::now(),
            types: BTreeMap::new(),
        });
        if let Some(n) = node {
            if state.id.is_empty() {
                state.id.clone_from(&n.id);
            }
            if state.cluster.is_empty() {
                state.cluster.clone_from(&n.cluster);
            }
        }
        state
    }

    /// Records the answer (ACK or NACK, by nonce) a node gave to a response of type `t`.
    /// An ACK records the version sent with that nonce; a NACK records it with Envoy's text.
    pub(crate) fn record_answer(
        &self,
        node: &mut NodeState,
        t: &str,
        nonce: &str,
        error: Option<&str>,
    ) -> Answer {
        if nonce.is_empty() {
            return Answer::None;
        }
        let id = node.id.clone();
        let st = node.types.entry(t.to_string()).or_default();
        if nonce != st.nonce {
            return Answer::Stale;
        }
        match error {
            Some(e) => {
                self.nacks.inc(t);
                st.last_nack = Some((st.version_sent.clone().unwrap_or_default(), e.to_string()));
                tracing::warn!(
                    node = %id,
                    r#type = type_label(t),
                    version = st.version_sent.as_deref().unwrap_or(""),
                    error = %e,
                    "xDS NACK"
                );
                Answer::Nack
            }
            None => {
                st.version_acked.clone_from(&st.version_sent);
                Answer::Ack
            }
        }
    }

    /// Notes that type `t` goes to `stream_id` at `version` with `nonce`, and counts the push.
    /// False when the stream is no longer listed.
    pub(crate) fn note_sent(&self, stream_id: u64, t: &str, version: &str, nonce: &str) -> bool {
        let listed = self.with_nodes(|nodes| {
            let Some(st) = nodes
                .get_mut(&stream_id)
                .map(|n| n.types.entry(t.to_string()).or_default())
            else {
                return false;
            };
            st.nonce = nonce.to_string();
            st.version_sent = Some(version.to_string());
            true
        });
        if listed {
            self.pushes.inc(t);
        }
        listed
    }
}
