//! State-of-the-World ADS streams (`StreamAggregatedResources`): each response carries every
//! resource of its type the node asked for, at the published version.
//!
//! A request with a new nonce-less subscription, a changed name list, or an ACK of an older
//! version than the published one is answered; an ACK of the current one is not. On a new
//! publication the subscribed types go out in make-before-break order.

use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use crate::common::type_url;
use crate::state::{Answer, Protocol, Served, Shared};

type Tx = mpsc::Sender<Result<DiscoveryResponse, Status>>;

/// One Envoy's stream: requests in, responses out, until either side ends.
pub(crate) async fn run_stream(
    shared: Arc<Shared>,
    stream_id: u64,
    mut inbound: Streaming<DiscoveryRequest>,
    tx: Tx,
) {
    let mut current = shared.current.subscribe();
    loop {
        tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(req)) => {
                    // Not marked seen: a publication racing this request is still pushed
                    // (every subscribed type) by the branch below.
                    let served = current.borrow().clone();
                    if !on_request(&shared, stream_id, req, &served, &tx).await {
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
                // Types subscribed to and not already sent at this version.
                let subscribed: Vec<String> = shared.with_nodes(|n| {
                    n.get(&stream_id)
                        .map(|node| {
                            node.types
                                .iter()
                                .filter(|(_, st)| st.version_sent.as_deref() != Some(served.version()))
                                .map(|(t, _)| t.clone())
                                .collect()
                        })
                        .unwrap_or_default()
                });
                for t in type_url::PUSH_ORDER {
                    if subscribed.iter().any(|s| s == t)
                        && !send(&shared, stream_id, t, &served, &tx).await
                    {
                        return;
                    }
                }
            }
        }
    }
}

/// Handles one request; false when the stream is gone.
async fn on_request(
    shared: &Shared,
    stream_id: u64,
    req: DiscoveryRequest,
    served: &Served,
    tx: &Tx,
) -> bool {
    let t = req.type_url.clone();
    let should_send = shared.with_nodes(|nodes| {
        let node = Shared::node_entry(nodes, stream_id, req.node.as_ref(), Protocol::Sotw);
        let st = node.types.entry(t.clone()).or_default();
        let names_changed = st.names != req.resource_names;
        st.names.clone_from(&req.resource_names);
        let error = req.error_detail.as_ref().map(|e| e.message.as_str());
        match shared.record_answer(node, &t, &req.response_nonce, error) {
            Answer::Stale | Answer::Nack => names_changed,
            Answer::None => true,
            Answer::Ack => {
                names_changed
                    || node.types.get(&t).and_then(|st| st.version_sent.as_deref())
                        != Some(served.version())
            }
        }
    });
    if !should_send {
        return true;
    }
    send(shared, stream_id, &t, served, tx).await
}

/// Sends type `t` at the published version; false when the stream is gone.
async fn send(shared: &Shared, stream_id: u64, t: &str, served: &Served, tx: &Tx) -> bool {
    let nonce = shared.nonce();
    let Some(names) =
        shared.with_nodes(|nodes| Some(nodes.get(&stream_id)?.types.get(t)?.names.clone()))
    else {
        return true;
    };
    if !shared.note_sent(stream_id, t, served.version(), &nonce) {
        return true;
    }
    let resources = served
        .of_type(t)
        .iter()
        .filter(|r| names.is_empty() || names.contains(&r.name))
        .map(|r| r.resource.clone())
        .collect();
    tx.send(Ok(DiscoveryResponse {
        version_info: served.version().to_string(),
        resources,
        type_url: t.to_string(),
        nonce,
        ..Default::default()
    }))
    .await
    .is_ok()
}
