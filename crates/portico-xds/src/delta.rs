//! Delta (incremental) ADS streams (`DeltaAggregatedResources`): each response carries only
//! the resources that changed for the node, each with its own version, and the names of those
//! that went away (`removed_resources`).
//!
//! Per type the stream keeps what the node subscribed to (names, and wildcard: every resource
//! of the type, as Envoy asks for listeners and clusters) and the version of every resource it
//! has (what was sent, or what a reconnecting Envoy says it has in `initial_resource_versions`).
//! A subscription change is answered at once (an empty response when there is nothing to
//! send, so Envoy's initial fetch completes); every new publication gets one response per
//! subscribed type, possibly empty, so `GET /xds` shows each type ACKed at that version as
//! with State-of-the-World. Make-before-break: clusters, endpoints and secrets (updates)
//! before listeners and routes; clusters, endpoints and secrets that went away are removed
//! only after the listeners and routes that used them. A NACKed response's resources count as
//! not had, so the next publication sends them again if they still differ.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use crate::common::type_url;
use crate::state::{Answer, Protocol, Served, Shared};

type Tx = mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>;

/// The wildcard resource name.
const WILDCARD: &str = "*";

/// What `has` held, before a response, for each name it touched.
type Undo = Vec<(String, Option<String>)>;

/// One type's subscription on one stream.
#[derive(Debug, Default)]
struct Sub {
    wildcard: bool,
    names: BTreeSet<String>,
    /// What the node has: name -> version.
    has: HashMap<String, String>,
    /// For the last response: its nonce and what `has` held before it for the names it
    /// touched (restored on a NACK).
    undo: Option<(String, Undo)>,
}

/// Which part of a type's change one response carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// Updates and removals.
    All,
    /// Updates only (removals follow later).
    Updates,
    /// Removals only.
    Removals,
}

/// One Envoy's stream: requests in, responses out, until either side ends.
pub(crate) async fn run_stream(
    shared: Arc<Shared>,
    stream_id: u64,
    mut inbound: Streaming<DeltaDiscoveryRequest>,
    tx: Tx,
) {
    let mut current = shared.current.subscribe();
    let mut subs: HashMap<String, Sub> = HashMap::new();
    loop {
        tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(req)) => {
                    // Not marked seen: a publication racing this request is still pushed by
                    // the branch below.
                    let served = current.borrow().clone();
                    if !on_request(&shared, stream_id, &mut subs, req, &served, &tx).await {
                        return;
                    }
                }
                Ok(None) | Err(_) => return,
            },
            changed = current.changed() => {
                if changed.is_err() {
                    return;
                }
                let served = current.borrow_and_update().clone();
                if !on_publication(&shared, stream_id, &mut subs, &served, &tx).await {
                    return;
                }
            }
        }
    }
}

/// Pushes a new publication: every subscribed type not yet sent at its version, in
/// make-before-break order. False when the stream is gone.
async fn on_publication(
    shared: &Shared,
    stream_id: u64,
    subs: &mut HashMap<String, Sub>,
    served: &Served,
    tx: &Tx,
) -> bool {
    let due: Vec<&str> = shared.with_nodes(|n| {
        let Some(node) = n.get(&stream_id) else {
            return Vec::new();
        };
        type_url::PUSH_ORDER
            .into_iter()
            .filter(|t| {
                subs.contains_key(*t)
                    && node.types.get(*t).and_then(|st| st.version_sent.as_deref())
                        != Some(served.version())
            })
            .collect()
    });
    let users = [type_url::LISTENER, type_url::ROUTE];
    for t in &due {
        let Some(sub) = subs.get_mut(*t) else {
            continue;
        };
        let part = if users.contains(t) {
            Part::All
        } else {
            Part::Updates
        };
        if !send(shared, stream_id, t, sub, served, part, true, tx).await {
            return false;
        }
    }
    // Removals of what listeners and routes used, now that they no longer do; reverse order.
    for t in due.iter().rev().filter(|t| !users.contains(t)) {
        let Some(sub) = subs.get_mut(*t) else {
            continue;
        };
        if !send(shared, stream_id, t, sub, served, Part::Removals, false, tx).await {
            return false;
        }
    }
    true
}

/// Handles one request; false when the stream is gone.
async fn on_request(
    shared: &Shared,
    stream_id: u64,
    subs: &mut HashMap<String, Sub>,
    req: DeltaDiscoveryRequest,
    served: &Served,
    tx: &Tx,
) -> bool {
    let t = req.type_url.clone();
    let first = !subs.contains_key(&t);
    let sub = subs.entry(t.clone()).or_default();
    if first {
        // No names in the first request: the legacy wildcard subscription.
        sub.wildcard = req.resource_names_subscribe.is_empty();
        sub.has = req.initial_resource_versions;
    }
    for name in req.resource_names_subscribe.iter() {
        if name == WILDCARD {
            sub.wildcard = true;
        } else {
            sub.names.insert(name.clone());
        }
    }
    for name in &req.resource_names_unsubscribe {
        if name == WILDCARD {
            sub.wildcard = false;
        } else {
            sub.names.remove(name);
        }
    }
    // What the node is no longer interested in, it forgets on its own.
    let Sub {
        wildcard,
        names,
        has,
        ..
    } = &mut *sub;
    has.retain(|name, _| *wildcard || names.contains(name));
    let error = req.error_detail.as_ref().map(|e| e.message.as_str());
    let answer = shared.with_nodes(|nodes| {
        let node = Shared::node_entry(nodes, stream_id, req.node.as_ref(), Protocol::Delta);
        node.types.entry(t.clone()).or_default();
        shared.record_answer(node, &t, &req.response_nonce, error)
    });
    if answer == Answer::Nack
        && let Some((nonce, undo)) = sub.undo.take()
        && nonce == req.response_nonce
    {
        for (name, version) in undo {
            match version {
                Some(v) => sub.has.insert(name, v),
                None => sub.has.remove(&name),
            };
        }
    }
    if !first && req.resource_names_subscribe.is_empty() {
        return true;
    }
    send(shared, stream_id, &t, sub, served, Part::All, true, tx).await
}

/// Sends what changed of type `t` for `sub` (the `part` asked for); with `always`, also when
/// nothing did (an empty response at the published version). False when the stream is gone.
#[allow(clippy::too_many_arguments)]
async fn send(
    shared: &Shared,
    stream_id: u64,
    t: &str,
    sub: &mut Sub,
    served: &Served,
    part: Part,
    always: bool,
    tx: &Tx,
) -> bool {
    let mut resources = Vec::new();
    let mut undo = Vec::new();
    if part != Part::Removals {
        let mut add = |name: &str, named: &crate::Named, version: &str| {
            if sub.has.get(name).map(String::as_str) != Some(version) {
                undo.push((name.to_string(), sub.has.get(name).cloned()));
                resources.push(Resource {
                    name: name.to_string(),
                    version: version.to_string(),
                    resource: Some(named.resource.clone()),
                    ..Default::default()
                });
            }
        };
        if sub.wildcard {
            for named in served.of_type(t) {
                if let Some((_, version)) = served.get(t, &named.name) {
                    add(&named.name, named, version);
                }
            }
        } else {
            for name in &sub.names {
                if let Some((named, version)) = served.get(t, name) {
                    add(name, named, version);
                }
            }
        }
    }
    let mut removed = Vec::new();
    if part != Part::Updates {
        removed = sub
            .has
            .keys()
            .filter(|name| served.get(t, name).is_none())
            .cloned()
            .collect();
        removed.sort();
        for name in &removed {
            undo.push((name.clone(), sub.has.get(name).cloned()));
        }
    }
    if resources.is_empty() && removed.is_empty() && !always {
        return true;
    }
    let nonce = shared.nonce();
    if !shared.note_sent(stream_id, t, served.version(), &nonce) {
        return true;
    }
    for r in &resources {
        sub.has.insert(r.name.clone(), r.version.clone());
    }
    for name in &removed {
        sub.has.remove(name);
    }
    sub.undo = Some((nonce.clone(), undo));
    tx.send(Ok(DeltaDiscoveryResponse {
        system_version_info: served.version().to_string(),
        resources,
        type_url: t.to_string(),
        removed_resources: removed,
        nonce,
        ..Default::default()
    }))
    .await
    .is_ok()
}

#[cfg(test)]
#[path = "delta_tests.rs"]
mod tests;
