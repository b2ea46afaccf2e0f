//! Re-registration: re-assert everything a node holds, after Redis came back empty (or any
//! time: it is idempotent, and also removes what the node no longer holds).
//!
//! One script, so the node's view switches atomically. The rules that keep it from clobbering
//! newer data:
//! - a room record is written only if Redis has none for the room, or one with a lower epoch
//!   (or one it cannot read); a record with a higher epoch belongs to a newer owner and is
//!   kept, and returned in [`Reregistration::superseded`] so the node stops acting as home.
//!   Epochs are Redis's clock in microseconds at the claim, at least one above the last
//!   issued, so a room claimed again after the data was lost outranks the old record;
//! - an identity is written unless it points at another live node (a session that joined
//!   there since is newer than the one re-asserted);
//! - the node's instances and slot counts are its own, and are always written.
//!
//! Identities carry no session order: if two nodes both re-assert one identity (its session
//! moved while Redis was down and the old one has not timed out yet), the first to re-register
//! keeps it; the other node sees that with [`Directory::identity`] and either ends its session
//! or takes the identity back with [`Directory::set_identity`].

use pylon_core::ids::{ParticipantIdentity, ParticipantSid, RoomName};
use serde::Serialize;

use crate::directory::Directory;
use crate::error::DirectoryError;
use crate::lease::{NodeInfo, LEASE_TTL};
use crate::lua;
use crate::reply;
use crate::room::RoomRecord;

/// A room this node has an instance of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldRoom {
    pub name: RoomName,
    /// The room's record as this node knows it (whether or not it is the home), if it does.
    pub record: Option<RoomRecord>,
    /// The participants this node hosts in the room; their number is the node's slot count.
    pub participants: Vec<(ParticipantIdentity, ParticipantSid)>,
}

/// What [`Directory::reregister`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reregistration {
    /// Records newer than the ones this node re-asserted, kept as they were.
    pub superseded: Vec<RoomRecord>,
}

#[derive(Serialize)]
struct WireRoom<'a> {
    room: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    record: Option<WireRecord>,
    participants: Vec<[&'a str; 2]>,
}

/// A record for the script: every value a string (Lua numbers are doubles).
#[derive(Serialize)]
struct WireRecord {
    sid: String,
    created_ms: String,
    metadata: String,
    empty_timeout: String,
    departure_timeout: String,
    max_participants: String,
    home: String,
    epoch: String,
}

impl WireRecord {
    fn new(r: &RoomRecord) -> Self {
        Self {
            sid: r.sid.as_str().to_string(),
            created_ms: r.created_at_ms.to_string(),
            metadata: r.metadata.clone(),
            empty_timeout: r.settings.empty_timeout_secs.to_string(),
            departure_timeout: r.settings.departure_timeout_secs.to_string(),
            max_participants: r.settings.max_participants.to_string(),
            home: r.home.as_str().to_string(),
            epoch: r.epoch.to_string(),
        }
    }
}

impl Directory {
    /// Renew this node's lease with `info` and make the directory's view of this node equal
    /// to `rooms` (see the module's rules). Call it when [`Directory::renew`] answered
    /// [`crate::Lease::Acquired`].
    pub async fn reregister(
        &self,
        info: &NodeInfo,
        rooms: &[HeldRoom],
    ) -> Result<Reregistration, DirectoryError> {
        let key = self.keys().held(self.node());
        let wire: Vec<WireRoom<'_>> = (rooms.iter())
            .map(|r| WireRoom {
                room: r.name.as_str(),
                record: r.record.as_ref().map(WireRecord::new),
                participants: (r.participants.iter())
                    .map(|(i, s)| [i.as_str(), s.as_str()])
                    .collect(),
            })
            .collect();
        // Invariant: structs of strings always serialize (and a fallback such as `[]` would
        // silently drop every room this node holds).
        let holdings = serde_json::to_string(&wire).expect("holdings serialize");
        let record = self.lease_record(info);
        let ttl = LEASE_TTL.as_millis().to_string();
        let args = [self.node().as_str(), &record, &ttl, &holdings];
        let reply = self.eval(&lua::REREGISTER, &key, &args).await?;
        let mut superseded = Vec::new();
        for (name, record) in reply::pairs(reply, &key)? {
            let name = RoomName::new(reply::text(&name, &key)?);
            let room_key = self.keys().room(&name);
            if let Some(r) = RoomRecord::from_hash(&name, record, &room_key)? {
                superseded.push(r);
            }
        }
        Ok(Reregistration { superseded })
    }
}
