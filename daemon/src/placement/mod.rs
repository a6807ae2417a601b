//! Placement: per workload, the governing placement, the candidate targets,
//! the policies' decision ([`decide`]) and the plan that records it; plus the
//! watches, Events and status writes the controller runs on. The controllers
//! themselves are [`crate::controller`].

pub mod activity;
pub mod assignment;
pub mod capacity;
pub mod decide;
pub mod dependencies;
pub mod events;
pub mod gone;
pub mod grants;
pub mod heartbeats;
pub mod limits;
pub mod moves;
pub mod plan;
pub mod request;
pub mod rollout;
pub mod rollout_track;
pub mod runner;
pub mod selector;
pub mod settings;
pub mod status;
pub mod status_writer;
pub mod targets;
pub mod triggers;
pub mod watch;
pub mod within_limits;
pub mod workload;
