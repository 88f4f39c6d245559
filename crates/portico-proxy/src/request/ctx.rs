//! [`RequestCtx`]: the one context the phases of a request share.

use std::sync::Arc;

use http::Response;

use super::head::ConnInfo;
use super::record::Record;
use crate::body::RespBody;
use crate::local_reply::LocalReply;
use crate::state::{Active, Proxy};

/// One request on its way through the phases.
pub(crate) struct RequestCtx {
    pub proxy: Arc<Proxy>,
    /// The snapshot current when the headers arrived: it serves the request to its end.
    pub active: Arc<Active>,
    pub conn: Arc<ConnInfo>,
    /// What the log phase writes (the route, once matched, is its `route`).
    pub rec: Record,
}

impl RequestCtx {
    /// Ends the request with a local reply.
    pub fn reply(self, reply: LocalReply) -> Response<RespBody> {
        self.rec.reply(&self.proxy, reply)
    }

    /// Ends the request with an answer of Portico's own (not a flagged local reply).
    pub fn answer(self, resp: Response<RespBody>) -> Response<RespBody> {
        self.rec.local(&self.proxy, resp)
    }
}
