//! What tmcd counts and keeps for the admin server to serve: the Prometheus
//! metrics every part updates, and the recent log lines of each syncer.

pub mod logs;
pub mod metrics;
