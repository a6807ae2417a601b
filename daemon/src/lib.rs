//! # tmc-daemon
//!
//! `tmcd` watches the workloads of one kcp workspace, places them on physical
//! clusters with WebAssembly placement policies, transforms each copy with
//! transformation policies, records the decision on the upstream object (see
//! `tmc_api::decision`) and brings the copies' status back.

pub mod admin;
pub mod admission;
pub mod allocator;
pub mod audit;
pub mod cli;
pub mod commands;
pub mod config;
pub mod controller;
pub mod crds;
pub mod daemon;
pub mod explain;
pub mod fence;
pub mod kubeconn;
pub mod leader;
pub mod logging;
pub mod placement;
pub mod policy;
pub mod policy_cli;
pub mod policy_command;
pub mod policy_diff;
pub mod source_identity;
pub mod state;
pub mod syncers;
pub mod synctargets;
pub mod table;
pub mod telemetry;
pub mod watch_count;
pub mod workspaces;

pub use daemon::Daemon;
