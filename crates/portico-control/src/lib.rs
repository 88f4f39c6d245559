//! Portico's control plane: config sources and reload (`reload`), file watching (`watch`),
//! the git source (`git`), the admin API (`admin`, `views`, `stats`, `series` and the dashboard) and route
//! explanation (`explain`).
#![forbid(unsafe_code)]

pub mod admin;
pub mod explain;
pub mod git;
pub mod metrics;
pub mod reload;
pub mod series;
pub mod stats;
pub mod views;
pub mod watch;

pub use reload::{Controller, Outcome};
