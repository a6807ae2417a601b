//! # tmc-syncer
//!
//! The workspace APIs of tmc, the decision protocol recorded on upstream
//! objects, and the per-target syncer that applies placed workloads to a
//! physical cluster. tmcd runs it in-process (push mode); the `tmc-syncer`
//! binary runs it beside a physical cluster (pull mode).

pub mod api;
pub mod decision;
