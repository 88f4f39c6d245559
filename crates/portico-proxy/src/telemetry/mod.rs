//! What Portico tells about its traffic: metrics (counters and histograms, and their
//! Prometheus rendering) and the access log.

pub mod access_log;
pub mod metrics;
pub mod prometheus;
