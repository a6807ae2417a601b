//! Test bed of real API servers (kcp, kube-apiserver + etcd, kube-controller-manager, kube-scheduler, kwok)
//! and helpers shared by the integration tests.
//!
//! Start a bed with [`testbed::TestBed::builder`]; see `docs/testbed.md`.

pub mod copy_watch;
pub mod figures;
pub mod fixtures;
pub mod fleet_load;
pub mod rbac;
pub mod tenant_load;
pub mod testbed;
