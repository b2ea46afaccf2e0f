//! Room records: who created a room and who is its home now, its sid, settings and metadata.
//!
//! Claiming is atomic (one script): of two nodes racing to open a room, exactly one creates
//! it and the other gets the winner's record. A node becomes home by creating the record, or
//! by taking over a record whose home's lease expired; either way Redis issues a new
//! [`Epoch`], the fencing token that decides between two records of one room (re-registration
//! never replaces a record with a higher epoch).

use pylon_core::ids::{RoomName, RoomSid};
use redis::Value;

use crate::directory::Directory;
use crate::error::DirectoryError;
use crate::ids::{Epoch, NodeId};
use crate::lua;
use crate::reply::{self, Fields};

/// A room's settings, as given at creation (LiveKit's `CreateRoom` fields).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoomSettings {
    pub empty_timeout_secs: u32,
    pub departure_timeout_secs: u32,
    /// 0: no limit.
    pub max_participants: u32,
}

/// What a node proposes when it opens a room that may not exist yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRoom {
    pub sid: RoomSid,
    pub metadata: String,
    pub settings: RoomSettings,
}

/// A room as the region knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomRecord {
    pub name: RoomName,
    pub sid: RoomSid,
    /// Unix milliseconds, Redis's clock, when the record was created.
    pub created_at_ms: u64,
    pub metadata: String,
    pub settings: RoomSettings,
    /// The node whose instance owns the room's lifetime (timeouts, `room_finished`).
    pub home: NodeId,
    pub epoch: Epoch,
}

/// The outcome of [`Directory::claim_room`]; this node has an instance of the room in every case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// There was no record: this node created the room and is its home.
    Created(RoomRecord),
    /// The record's home had died: this node is home now (same sid, new epoch).
    TookOver(RoomRecord),
    /// The room exists with a live home (maybe this node): the record as it is.
    Joined(RoomRecord),
}

impl Claim {
    pub fn record(&self) -> &RoomRecord {
        match self {
            Self::Created(r) | Self::TookOver(r) | Self::Joined(r) => r,
        }
    }

    pub fn into_record(self) -> RoomRecord {
        match self {
            Self::Created(r) | Self::TookOver(r) | Self::Joined(r) => r,
        }
    }
}

impl RoomRecord {
    /// Parse a record from its hash (`HGETALL`); `None` if the hash is empty (no room).
    pub(crate) fn from_hash(name: &RoomName, v: Value, key: &str) -> Result<Option<Self>, DirectoryError> {
        let f = Fields::parse(v, key)?;
        if f.is_empty() {
            return Ok(None);
        }
        Ok(Some(Self {
            name: name.clone(),
            sid: f.typed("sid", RoomSid::parse)?,
            created_at_ms: f.number("created_ms")?,
            metadata: f.text("metadata")?.to_string(),
            settings: RoomSettings {
                empty_timeout_secs: f.number("empty_timeout")?,
                departure_timeout_secs: f.number("departure_timeout")?,
                max_participants: f.number("max_participants")?,
            },
            home: f.typed("home", |s| NodeId::parse(s).ok())?,
            epoch: Epoch(f.number("epoch")?),
        }))
    }

    fn required(name: &RoomName, v: Value, key: &str) -> Result<Self, DirectoryError> {
        Self::from_hash(name, v, key)?.ok_or_else(|| DirectoryError::malformed(key, "the record vanished"))
    }
}

impl Directory {
    /// Open `name` on this node: create its record (this node home) if there is none, take
    /// it over if its home died, else join it. See [`Claim`].
    pub async fn claim_room(&self, name: &RoomName, new: &NewRoom) -> Result<Claim, DirectoryError> {
        let key = self.keys().room(name);
        let s = &new.settings;
        let (empty, departure, max) = (
            s.empty_timeout_secs.to_string(),
            s.departure_timeout_secs.to_string(),
            s.max_participants.to_string(),
        );
        let args = [
            self.node().as_str(),
            name.as_str(),
            new.sid.as_str(),
            &new.metadata,
            &empty,
            &departure,
            &max,
        ];
        let reply = self.eval(&lua::CLAIM, &key, &args).await?;
        let [outcome, record]: [Value; 2] = reply::items(reply, &key)?
            .try_into()
            .map_err(|_| DirectoryError::malformed(&key, "unexpected claim answer"))?;
        let record = RoomRecord::required(name, record, &key)?;
        match reply::text(&outcome, &key)? {
            "created" => Ok(Claim::Created(record)),
            "took_over" => Ok(Claim::TookOver(record)),
            "joined" => Ok(Claim::Joined(record)),
            other => Err(DirectoryError::malformed(
                &key,
                format!("unexpected claim outcome {other:?}"),
            )),
        }
    }

    /// The room's record, if it exists.
    pub async fn room(&self, name: &RoomName) -> Result<Option<RoomRecord>, DirectoryError> {
        let key = self.keys().room(name);
        let reply = self.query(redis::cmd("HGETALL").arg(&key), &key).await?;
        RoomRecord::from_hash(name, reply, &key)
    }

    /// Every room record of the region. An unreadable record is left out and logged.
    pub async fn rooms(&self) -> Result<Vec<RoomRecord>, DirectoryError> {
        let index = self.keys().rooms();
        let reply = self.eval(&lua::LIST_ROOMS, &index, &[]).await?;
        let mut rooms = Vec::new();
        for (name, record) in reply::pairs(reply, &index)? {
            let name = RoomName::new(reply::text(&name, &index)?);
            let key = self.keys().room(&name);
            match RoomRecord::from_hash(&name, record, &key) {
                Ok(Some(r)) => rooms.push(r),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "skipping an unreadable room record"),
            }
        }
        rooms.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(rooms)
    }

    /// Set the room's metadata; the updated record, or `None` if there is no such room.
    pub async fn update_metadata(
        &self,
        name: &RoomName,
        metadata: &str,
    ) -> Result<Option<RoomRecord>, DirectoryError> {
        let key = self.keys().room(name);
        let reply = self
            .eval(&lua::UPDATE_METADATA, &key, &[name.as_str(), metadata])
            .await?;
        RoomRecord::from_hash(name, reply, &key)
    }

    /// Delete the room: its record, instances, identities and counts. With `fence`, only if
    /// the record still has that epoch (a home closing its room must not delete the room of a
    /// newer home). Returns whether a record was deleted.
    pub async fn delete_room(&self, name: &RoomName, fence: Option<Epoch>) -> Result<bool, DirectoryError> {
        let key = self.keys().room(name);
        let fence = fence.map(|e| e.to_string()).unwrap_or_default();
        let deleted = self
            .eval(&lua::DELETE_ROOM, &key, &[name.as_str(), &fence])
            .await?;
        Ok(reply::int(&deleted, &key)? == 1)
    }
}
