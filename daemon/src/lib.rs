//! # tmc-daemon
//!
//! `tmcd` watches the workloads of one kcp workspace, places them on physical
//! clusters with WebAssembly placement policies, transforms each copy with
//! transformation policies, records the decision on the upstream object (see
//! `tmc_syncer::decision`) and brings the copies' status back.

pub mod config;
