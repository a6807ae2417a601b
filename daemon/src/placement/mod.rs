//! The placement controller: per workload, pick the governing placement, the
//! candidate targets, run the policies and record the decision.

pub mod activity;
pub mod assignment;
pub mod controller;
pub mod decide;
pub mod events;
pub mod gone;
pub mod heartbeats;
pub mod moves;
pub mod placement_status;
pub mod plan;
pub mod reconcile;
pub mod request;
pub mod runner;
pub mod selector;
pub mod status;
pub mod status_writer;
pub mod targets;
pub mod triggers;
pub mod watch;
pub mod workload;
