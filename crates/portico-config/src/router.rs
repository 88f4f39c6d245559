//! The route index: finds the first route, in match order, that a request matches, without
//! scanning every route (CONTRACT §2.3.1). Also explains why routes did not match.
//!
//! (Interface fixed; implementation to be written.)

use std::sync::Arc;

use http::{HeaderMap, Method};

use crate::snapshot::Route;

/// What the router looks at in a request.
pub struct RequestView<'a> {
    /// `:authority`/Host, lowercase, port stripped.
    pub host: &'a str,
    /// The path, without the query string.
    pub path: &'a str,
    /// The query string without `?`, if any.
    pub query: Option<&'a str>,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
}

#[derive(Debug, Default)]
pub struct Router {
    routes: Vec<Arc<Route>>,
}

impl Router {
    /// `routes` are in match order (`routes[i].id == i`).
    pub fn build(routes: &[Arc<Route>]) -> Router {
        Router { routes: routes.to_vec() }
    }

    /// The route this request takes (a canary group member picked by weight), or `None`.
    pub fn lookup(&self, req: &RequestView<'_>) -> Option<&Arc<Route>> {
        let _ = req;
        self.routes.first()
    }
}
