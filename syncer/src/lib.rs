//! # tmc-syncer
//!
//! The per-target syncer that applies placed workloads to a physical
//! cluster, following the decisions recorded on upstream objects (the
//! protocol and the workspace APIs are in `tmc-api`). tmcd runs it in-process
//! (push mode); the `tmc-syncer` binary runs it beside a physical cluster
//! (pull mode).
//!
//! ```no_run
//! # async fn demo(upstream: kube::Client, downstream: kube::Client) -> anyhow::Result<()> {
//! use tmc_syncer::{SourceIdentity, Syncer, SyncerConfig};
//! let config = SyncerConfig::new("west", upstream, downstream, SourceIdentity::new("root:org:team"));
//! let syncer = Syncer::new(config);
//! syncer.run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

pub mod capacity;
pub mod claim;
pub mod copy;
mod engine;
pub mod error;
pub mod gate;
pub mod health;
pub mod heartbeat;
pub mod identity;
pub mod kinds;
pub mod process;
pub mod queue;
pub mod replicas;
mod syncer;
pub mod workspaces;

pub use error::{Error, Result};
pub use gate::ReportGate;
pub use health::{KindCounts, SyncerHealth};
pub use identity::{NamespaceMapping, SourceIdentity};
pub use kinds::SyncedKind;
pub use replicas::ReplicasPolicy;
pub use syncer::{Syncer, SyncerConfig, drop_managed_fields};
pub use workspaces::BoundWorkspaces;
