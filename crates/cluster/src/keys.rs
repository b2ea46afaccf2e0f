//! The key schema: every Redis key the directory uses is built here (and mirrored by the
//! helpers at the top of `lua/lib.lua`, which build the same names from the prefix).
//!
//! The region is a hash tag (`{region}`), so all of a region's keys share one slot.
//! Room names are user-chosen and may contain anything, so they are always the last part of
//! a key, after a fixed type segment: no two keys of different types can collide.

use pylon_core::ids::RoomName;

use crate::ids::{NodeId, RegionName};

/// The names of one region's keys.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(region: &RegionName) -> Self {
        Self {
            prefix: format!("pylon:{{{region}}}:"),
        }
    }

    /// `pylon:{region}:` — passed to every script as `ARGV[1]`.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, kind: &str, name: &str) -> String {
        let mut k = String::with_capacity(self.prefix.len() + kind.len() + name.len());
        k.push_str(&self.prefix);
        k.push_str(kind);
        k.push_str(name);
        k
    }

    /// STRING, `NodeInfo` JSON with a TTL: the node's lease.
    pub(crate) fn lease(&self, node: &NodeId) -> String {
        self.key("node:", node.as_str())
    }

    /// SET of node ids that hold or held a lease (the dead ones are reaped).
    pub(crate) fn nodes(&self) -> String {
        self.key("nodes", "")
    }

    /// SET of room names the node has an instance of.
    pub(crate) fn held(&self, node: &NodeId) -> String {
        self.key("held:", node.as_str())
    }

    /// SET of room names that have a record or instances.
    pub(crate) fn rooms(&self) -> String {
        self.key("rooms", "")
    }

    /// HASH, the room's record.
    pub(crate) fn room(&self, room: &RoomName) -> String {
        self.key("room:", room.as_str())
    }

    /// SET of node ids that have an instance of the room.
    pub(crate) fn instances(&self, room: &RoomName) -> String {
        self.key("instances:", room.as_str())
    }

    /// HASH identity → `"<node id> <participant sid>"`.
    pub(crate) fn identities(&self, room: &RoomName) -> String {
        self.key("identities:", room.as_str())
    }

    /// HASH node id → participants that node hosts in the room (or has reserved a slot for).
    pub(crate) fn slots(&self, room: &RoomName) -> String {
        self.key("slots:", room.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_namespaced_by_a_region_hash_tag() {
        let keys = Keys::new(&RegionName::parse("eu-west").unwrap());
        let node = NodeId::parse("n1").unwrap();
        let room = RoomName::new("a:b");
        assert_eq!(keys.lease(&node), "pylon:{eu-west}:node:n1");
        assert_eq!(keys.room(&room), "pylon:{eu-west}:room:a:b");
        assert_eq!(keys.instances(&room), "pylon:{eu-west}:instances:a:b");
        assert_eq!(keys.nodes(), "pylon:{eu-west}:nodes");
    }
}
