//! Workloads of many kcp workspaces, read through an APIExport's virtual
//! workspace (tmcd's export mode, issue 12, `docs/tenancy.md`).
//!
//! A syncer given [`BoundWorkspaces`] watches each synced kind once across
//! every bound workspace (the wildcard client), keys each object by its store
//! namespace `<logical cluster>|<namespace>`
//! ([`tmc_api::tenancy::map_for_store`], as tmcd's own stores do), and
//! reads and writes an object only through the client of its own workspace.
//! Its copies go to the workspace namespace's own downstream namespace
//! ([`crate::NamespaceMapping::Workspaces`]).

use kube::core::DynamicObject;
use tmc_api::tenancy::{self, LogicalCluster};
use tracing::warn;

/// The clients of an APIExport's virtual workspace.
pub trait BoundWorkspaces: Send + Sync {
    /// The client whose lists and watches span every bound workspace
    /// (`<endpoint>/clusters/*`). It is used for reads only.
    fn wildcard(&self) -> kube::Client;

    /// The client of one bound workspace (`<endpoint>/clusters/<cluster>`),
    /// which every read and write of one of its objects goes through. The
    /// error says why it could not be built.
    fn client_for(&self, cluster: &LogicalCluster) -> Result<kube::Client, String>;

    /// Whether `cluster`'s workloads may have copies on `target` (the
    /// operator's grants): `None` while that is not known yet. A syncer
    /// creates a copy only on `Some(true)`, so that a decision written into
    /// a workspace by anyone but tmcd's placement (a tenant labelling its own
    /// workload) lands nowhere it was not granted. A copy that already runs
    /// is kept whatever this says: grants never remove one.
    fn granted(&self, cluster: &LogicalCluster, target: &str) -> Option<bool>;
}

/// Maps an object read through the virtual workspace for the syncer's stores
/// and keys: its namespace becomes `<logical cluster>|<namespace>`. An object
/// naming no valid logical cluster keeps its namespace, so it is never keyed
/// (see [`crate::NamespaceMapping::maps`]) and nothing is written for it.
pub(crate) fn map_for_store(object: &mut DynamicObject) {
    if let Err(err) = tenancy::map_for_store(&mut object.metadata) {
        warn!(object = ?object.metadata.name, error = %err, "an object of the export's virtual workspace names no valid logical cluster; not synced");
    }
}
