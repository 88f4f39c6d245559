//! Portico's own HTTP/1.1 server, on the `portico-h1` codec: the connection loop (`conn.rs`),
//! the client's request body read in place from the connection buffer (`body.rs`), and the
//! response writer (`respond.rs`), and what is handed to the request path for upgrades and
//! `100 Continue` (`handoff.rs`). One parser decides framing and enforces the HTTP/1 rules
//! (docs/security.md); hyper's server serves HTTP/2 and the requests this one hands over.

pub mod body;
mod conn;
pub mod handoff;
mod respond;

pub use conn::{Outcome, serve};
