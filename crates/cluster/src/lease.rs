//! Node leases: a node announces itself with a record that expires unless renewed, so a node
//! that dies disappears from the region within [`LEASE_TTL`].
//!
//! The caller renews on a timer: [`Directory::renew`] every [`RENEW_INTERVAL`]. When the
//! answer is [`Lease::Acquired`] the lease had to be created — first registration, the node
//! was too slow to renew, or Redis lost its data (restart, `FLUSHALL`) — and the caller must
//! call [`Directory::reregister`] with what it holds. With a 1 s interval, a node re-registers
//! within about a second of Redis coming back.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::directory::Directory;
use crate::error::DirectoryError;
use crate::ids::{NodeId, RegionName, RelayAddr};
use crate::lua;
use crate::reply;

/// How long a lease lives without renewal: a dead node is gone from the region within this.
pub const LEASE_TTL: Duration = Duration::from_secs(4);

/// How often a live node renews: three renewals may fail before its lease lapses.
pub const RENEW_INTERVAL: Duration = Duration::from_secs(1);

/// What a node announces to its region.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Where the other nodes of the region open relay links to this one.
    pub relay_addr: RelayAddr,
    /// Where the other nodes reach this node's Room API (`host:port`), to forward requests
    /// about the participants it hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_addr: Option<String>,
    /// Participants this node hosts (for placement).
    pub participants: u32,
    /// When the node started, unix milliseconds.
    pub started_at_ms: u64,
}

/// A node of the region whose lease is live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveNode {
    pub id: NodeId,
    pub region: RegionName,
    pub info: NodeInfo,
}

/// What [`Directory::renew`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lease {
    /// The lease was live and is extended.
    Held,
    /// There was no lease; now there is. Re-register what this node holds.
    Acquired,
}

/// The lease record as stored: self-describing, so a key can be checked against its content.
#[derive(Serialize, Deserialize)]
struct Record {
    node: NodeId,
    region: RegionName,
    #[serde(flatten)]
    info: NodeInfo,
}

impl Directory {
    /// Create or extend this node's lease, announcing `info`.
    pub async fn renew(&self, info: &NodeInfo) -> Result<Lease, DirectoryError> {
        let key = self.keys().lease(self.node());
        let record = self.lease_record(info);
        let ttl = LEASE_TTL.as_millis().to_string();
        let existed = self
            .eval(&lua::RENEW, &key, &[self.node().as_str(), &record, &ttl])
            .await?;
        Ok(match reply::int(&existed, &key)? {
            0 => Lease::Acquired,
            _ => Lease::Held,
        })
    }

    pub(crate) fn lease_record(&self, info: &NodeInfo) -> String {
        let record = Record {
            node: self.node().clone(),
            region: self.region().clone(),
            info: info.clone(),
        };
        // Invariant: a struct of strings and integers always serializes.
        serde_json::to_string(&record).expect("a lease record serializes")
    }

    /// The region's live nodes. A lease record that cannot be read (another program's, or
    /// corrupt) is left out and logged: one bad key must not hide the whole region.
    pub async fn nodes(&self) -> Result<Vec<LiveNode>, DirectoryError> {
        let index = self.keys().nodes();
        let reply = self.eval(&lua::NODES, &index, &[]).await?;
        let mut nodes = Vec::new();
        for (id, record) in reply::pairs(reply, &index)? {
            match self.parse_lease(&id, &record) {
                Ok(node) => nodes.push(node),
                Err(e) => tracing::warn!(error = %e, "skipping an unreadable node lease"),
            }
        }
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(nodes)
    }

    fn parse_lease(&self, id: &redis::Value, record: &redis::Value) -> Result<LiveNode, DirectoryError> {
        let index = self.keys().nodes();
        let id = NodeId::parse(reply::text(id, &index)?)
            .map_err(|e| DirectoryError::malformed(&index, e.to_string()))?;
        let key = self.keys().lease(&id);
        let bad = |reason: String| DirectoryError::malformed(&key, reason);
        let raw = reply::bytes(record).ok_or_else(|| bad("not a string".into()))?;
        let record: Record = serde_json::from_slice(raw).map_err(|e| bad(e.to_string()))?;
        if record.node != id {
            return Err(bad(format!("holds the lease of {}", record.node)));
        }
        Ok(LiveNode {
            id,
            region: record.region,
            info: record.info,
        })
    }

    /// Leave the region now (drain, shutdown): the lease and everything this node held go;
    /// rooms it was home of stay if other nodes still have instances (one of them takes over).
    pub async fn leave(&self) -> Result<(), DirectoryError> {
        let key = self.keys().lease(self.node());
        self.eval(&lua::LEAVE, &key, &[self.node().as_str()])
            .await
            .map(drop)
    }

    /// Forget the nodes whose lease expired: their instances, counts and identities, and the
    /// rooms they were home of that have no live instance left. Readers already ignore dead
    /// nodes; this only frees memory, so any node may call it now and then (every few
    /// renewals). Returns the nodes reaped.
    pub async fn reap_dead_nodes(&self) -> Result<Vec<NodeId>, DirectoryError> {
        let index = self.keys().nodes();
        let reply = self.eval(&lua::REAP, &index, &[]).await?;
        let mut reaped = Vec::new();
        for v in reply::items(reply, &index)? {
            // The script only returns members of the index; a foreign one is not ours to name.
            if let Ok(id) = NodeId::parse(reply::text(&v, &index)?) {
                reaped.push(id);
            }
        }
        Ok(reaped)
    }
}
