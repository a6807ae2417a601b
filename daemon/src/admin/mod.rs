//! The admin server: `/healthz`, `/readyz`, `/metrics` and the JSON API, plus
//! the metrics and syncer log buffers it serves.

pub mod client;
pub mod logs;
pub mod metrics;
pub mod server;
pub mod status;
