//! The admin server: `/healthz`, `/readyz`, `/metrics` and the JSON API (it
//! serves what [`crate::telemetry`] and the shared state hold), the types of
//! its status report, and the HTTP client of the `tmcd` commands.

pub mod auth;
pub mod client;
pub mod gauges;
pub mod server;
pub mod status;
pub mod tls;
