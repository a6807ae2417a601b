//! What tmcd counts and keeps for the admin server to serve: the Prometheus
//! metrics every part updates, the recent log lines of each syncer, and the
//! watch requests its clients hold open.

pub mod logs;
pub mod metrics;
pub mod watches;
