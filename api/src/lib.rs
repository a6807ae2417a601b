//! # tmc-api
//!
//! The workspace APIs of tmc and its decision protocol, as types and pure
//! functions: no client, no runtime, no I/O (the split kube-rs makes between
//! `kube-core` and `kube-runtime`). tmcd and the syncer share this crate, so
//! the writer and the readers of a decision cannot drift apart.
//!
//! - [`crd`]: the custom resources `SyncTarget` and
//!   `ClusterWorkloadPlacement` (the CRD manifests are generated from them);
//! - [`decision`]: the protocol's keys and the JSON it records per target
//!   ([`decision::TargetResult`] written by tmcd, [`decision::TargetStatus`]
//!   written back by a syncer);
//! - [`dependencies`]: the ConfigMaps, Secrets, ServiceAccount and
//!   PersistentVolumeClaims a workload's pod template references (placed
//!   with the workload, applied before it);
//! - [`protocol`]: the one reader of those keys on an upstream object, and
//!   the patches a syncer writes back;
//! - [`resources`]: Kubernetes quantities as integers, a pod's requests and
//!   how many pods fit (shared by the syncer's capacity report and tmcd);
//! - [`tenancy`]: many kcp workspaces through one tmcd: the key that names
//!   an object's logical cluster, and the downstream namespace of a
//!   workspace namespace.
//!
//! ```
//! use std::collections::BTreeMap;
//! use tmc_api::decision::{result_annotation, state_label};
//! use tmc_api::protocol::read;
//!
//! let labels = BTreeMap::from([(state_label("west"), "Sync".to_string())]);
//! let annotations = BTreeMap::from([(result_annotation("west"), r#"{"replicas":2}"#.to_string())]);
//! let recorded = read(&labels, &annotations);
//! assert!(recorded["west"].holds());
//! assert_eq!(recorded["west"].result.as_ref().and_then(|r| r.replicas), Some(2));
//! ```

pub mod crd;
pub mod decision;
pub mod dependencies;
pub mod protocol;
pub mod resources;
pub mod tenancy;
