//! Portico's configuration: the resource schema (CONTRACT §2), validation with
//! `FILE:LINE:COL` diagnostics, and compilation into an immutable [`Snapshot`].
//!
//! No I/O beyond reading the config files (and checking that referenced files exist).
#![forbid(unsafe_code)]

pub mod router;
pub mod snapshot;

pub use router::{RequestView, Router};
pub use snapshot::Snapshot;
