//! Participant slots: the region-wide count of a room's participants, for `max_participants`.
//!
//! Each node counts its own participants of a room in one field of a hash; the total is the
//! sum over live nodes, taken and compared with the limit atomically in one script. A dead
//! node's count stops counting as soon as its lease expires, and is deleted when it is reaped.

use pylon_core::ids::RoomName;

use crate::directory::Directory;
use crate::error::DirectoryError;
use crate::lua;
use crate::reply;

/// The outcome of [`Directory::reserve_slot`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reservation {
    /// A slot is this node's; `count` participants in the room, this one included.
    Reserved { count: u32 },
    /// The room already has `count` participants, at or above the limit.
    Full { count: u32 },
}

fn count(v: &redis::Value, key: &str) -> Result<u32, DirectoryError> {
    let n = reply::int(v, key)?;
    u32::try_from(n).map_err(|_| DirectoryError::malformed(key, format!("count {n} out of range")))
}

impl Directory {
    /// Reserve a slot in `room` for a participant joining on this node, unless the room has
    /// `max_participants` already (0: no limit). Give it back with [`Directory::release_slot`].
    pub async fn reserve_slot(
        &self,
        room: &RoomName,
        max_participants: u32,
    ) -> Result<Reservation, DirectoryError> {
        let key = self.keys().slots(room);
        let max = max_participants.to_string();
        let reply = self
            .eval(&lua::RESERVE, &key, &[room.as_str(), self.node().as_str(), &max])
            .await?;
        let [reserved, n]: [redis::Value; 2] = reply::items(reply, &key)?
            .try_into()
            .map_err(|_| DirectoryError::malformed(&key, "unexpected reservation answer"))?;
        let count = count(&n, &key)?;
        Ok(match reply::int(&reserved, &key)? {
            1 => Reservation::Reserved { count },
            _ => Reservation::Full { count },
        })
    }

    /// Give back a slot of this node in `room`; returns this node's remaining count there.
    pub async fn release_slot(&self, room: &RoomName) -> Result<u32, DirectoryError> {
        let key = self.keys().slots(room);
        let reply = self
            .eval(&lua::RELEASE, &key, &[room.as_str(), self.node().as_str()])
            .await?;
        count(&reply, &key)
    }

    /// The room's participants on live nodes, region-wide.
    pub async fn participant_count(&self, room: &RoomName) -> Result<u32, DirectoryError> {
        let key = self.keys().slots(room);
        let reply = self.eval(&lua::COUNT, &key, &[room.as_str()]).await?;
        count(&reply, &key)
    }
}
