//! `tmcd explain`: why a workload runs where it runs. The running tmcd
//! answers `GET /api/v1/explain/{kind}/{namespace}/{name}` with an
//! [`ExplainReport`] built on the one decision step
//! ([`crate::placement::decide`]) and the protocol reader
//! (`tmc_api::protocol`), and the CLI renders it.

mod build;
mod live;
mod render;
mod report;

pub use build::explain;
pub use live::{LookupError, explain_live};
pub use render::render;
pub use report::{
    CopyReport, DecisionReport, ExplainReport, FollowsReport, PolicyReport, RecordedReport,
    TargetExplanation, Verdict, WorkloadRef,
};
