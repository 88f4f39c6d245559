//! Automatic certificates (docs/reference.md §13): ACME (RFC 8555) orders with `instant-acme`,
//! renewal at two thirds of the lifetime, and the state directory shared by every Portico
//! process that uses it.
//!
//! | module | owns |
//! | --- | --- |
//! | `store` | the state directory's layout, atomic 0600 writes, reading certificates |
//! | `lock` | the per-name order lock with a lease (safe when its holder dies) |
//! | `order` | one order: account, challenge answer, CSR (ECDSA P-256), chain |
//! | `manager` | one task per ACME Host: when to order, back-off, status and metrics |
//!
//! The data plane only reads the directory: certificates through its certificate poller,
//! challenge answers (`/.well-known/acme-challenge/TOKEN`, TLS-ALPN-01) through
//! [`store::Store`]. Nothing here is on the request path.

#![forbid(unsafe_code)]

pub mod lock;
pub mod manager;
pub mod order;
pub mod store;

pub use manager::Manager;
pub use store::{CertInfo, Store, cert_info};

/// The default state directory (`portico run --state-dir`).
pub const DEFAULT_STATE_DIR: &str = "./portico-state";
