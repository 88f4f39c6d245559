//! Upstreams at run time: their endpoints and circuit breakers (`state`, `endpoint`,
//! `breaker`), connections to them (`pool`, `tls`), choosing an endpoint (`lb`), and knowing
//! which endpoints are healthy (`health` for active checks, `outlier` for passive detection).
//!
//! Dependencies run one way: `clock`, `ewma` ← `endpoint` ← `lb` ← `outlier` ← `state` ←
//! `pool`, `health`.

pub mod breaker;
pub mod clock;
pub mod endpoint;
pub mod ewma;
pub mod h1;
pub mod health;
pub mod lb;
pub mod outlier;
pub mod pool;
pub mod state;
pub mod tls;

pub use breaker::{Breakers, Held, Which};
pub use endpoint::{AttemptReport, Endpoint, EndpointHealth};
pub use lb::{EndpointSet, PickCtx};
pub use state::{UpstreamState, resolve};
