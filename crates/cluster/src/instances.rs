//! Room instances: which nodes of the region hold an instance of a room (and so must be
//! linked by relays). Only nodes with a live lease are ever returned.

use pylon_core::ids::RoomName;

use crate::directory::Directory;
use crate::error::DirectoryError;
use crate::ids::NodeId;
use crate::lua;
use crate::reply;

impl Directory {
    /// This node has an instance of `room` ([`Directory::claim_room`] does this too).
    pub async fn add_instance(&self, room: &RoomName) -> Result<(), DirectoryError> {
        let key = self.keys().instances(room);
        self.eval(&lua::ADD_INSTANCE, &key, &[self.node().as_str(), room.as_str()])
            .await
            .map(drop)
    }

    /// This node no longer has an instance of `room`; its slots and identities there go too.
    /// The room's record stays (the home deletes it with [`Directory::delete_room`]).
    pub async fn remove_instance(&self, room: &RoomName) -> Result<(), DirectoryError> {
        let key = self.keys().instances(room);
        self.eval(
            &lua::REMOVE_INSTANCE,
            &key,
            &[self.node().as_str(), room.as_str()],
        )
        .await
        .map(drop)
    }

    /// The live nodes with an instance of `room`, sorted.
    pub async fn instances(&self, room: &RoomName) -> Result<Vec<NodeId>, DirectoryError> {
        let key = self.keys().instances(room);
        let reply = self.eval(&lua::INSTANCES, &key, &[room.as_str()]).await?;
        let mut nodes = (reply::items(reply, &key)?.iter())
            .map(|v| {
                NodeId::parse(reply::text(v, &key)?)
                    .map_err(|e| DirectoryError::malformed(&key, e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        nodes.sort();
        Ok(nodes)
    }
}
