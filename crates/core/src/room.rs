//! A room's instance on this shard: the room's identity and settings, the participants hosted
//! here and the mirrors of those hosted elsewhere, the places it is linked to, its lifetime.
//!
//! A room is a set of instances, one per place that hosts its participants. Exactly one of
//! them is the room's **home**: it owns the room's lifetime (empty and departure timeouts,
//! `room_started` / `room_finished`). The others exist while they host someone.

use std::time::Instant;

use livekit_protocol as lk;

use crate::config::RoomDefaults;
use crate::ids::{ParticipantKey, ParticipantSid, PlaceId, RoomName, RoomSid};

/// What every instance of a room agrees on, handed out by whoever places rooms (the node's
/// directory) or minted by a standalone shard.
#[derive(Debug, Clone)]
pub struct RoomRecord {
    pub sid: RoomSid,
    pub creation_unix_ms: i64,
    pub metadata: String,
    pub settings: RoomDefaults,
}

impl RoomRecord {
    /// What clients and the Room API are told of the room (participant counts left at 0).
    pub fn info(&self, name: &RoomName) -> lk::Room {
        lk::Room {
            sid: self.sid.as_str().to_string(),
            name: name.as_str().to_string(),
            empty_timeout: self.settings.empty_timeout.as_secs() as u32,
            departure_timeout: self.settings.departure_timeout.as_secs() as u32,
            max_participants: self.settings.max_participants,
            creation_time: self.creation_unix_ms / 1000,
            creation_time_ms: self.creation_unix_ms,
            metadata: self.metadata.clone(),
            ..Default::default()
        }
    }
}

/// Where a joining participant's room instance sits among the room's others.
#[derive(Debug, Clone)]
pub struct Placement {
    /// The room's record; `None` lets a standalone shard mint one.
    pub record: Option<RoomRecord>,
    /// Whether this shard's instance is the room's home.
    pub home: bool,
    /// Whether this shard's instance is its node's anchor for the room (holds the room's
    /// links to other nodes): it then closes only when the runtime says so, like a home.
    pub anchor: bool,
    /// The places that already have an instance of the room.
    pub peers: Vec<PlaceId>,
}

impl Default for Placement {
    /// A standalone room: this shard is its only place.
    fn default() -> Self {
        Self {
            record: None,
            home: true,
            anchor: false,
            peers: Vec::new(),
        }
    }
}

#[derive(Debug)]
pub struct Room {
    pub name: RoomName,
    pub sid: RoomSid,
    pub metadata: String,
    pub settings: RoomDefaults,
    pub created_at: Instant,
    pub creation_unix_ms: i64,
    pub home: bool,
    /// The node's anchor for the room (see [`Placement::anchor`]).
    pub anchor: bool,
    /// Participants hosted here, in join order.
    pub members: Vec<ParticipantKey>,
    /// Mirrors of participants hosted at linked places.
    pub remotes: Vec<ParticipantKey>,
    /// Places with an instance of this room that we exchange state and media with.
    pub links: Vec<PlaceId>,
    /// When the room last became empty everywhere (None while occupied or never joined).
    pub vacated_at: Option<Instant>,
    pub ever_joined: bool,
    /// Set once `RoomIdle` was reported for the current idle episode.
    pub idle_reported: bool,
    /// Places asked for their snapshot that have not answered yet (until `awaiting_until`):
    /// the join responses of `joining` wait for them, so they list everyone in the room.
    pub awaiting: Vec<PlaceId>,
    pub awaiting_until: Option<Instant>,
    /// Participants hosted here whose join response waits for `awaiting`.
    pub joining: Vec<ParticipantKey>,
    /// Who was speaking at the last judgement, loudest first (`speakers.rs`).
    pub speakers: Vec<(ParticipantSid, f32)>,
}

/// Why a room ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// Nobody joined within `empty_timeout`.
    EmptyTimeout,
    /// Everybody left `departure_timeout` ago.
    Departed,
}

impl Room {
    pub fn new(name: RoomName, record: RoomRecord, home: bool, anchor: bool, now: Instant) -> Self {
        Self {
            name,
            sid: record.sid,
            metadata: record.metadata,
            settings: record.settings,
            created_at: now,
            creation_unix_ms: record.creation_unix_ms,
            home,
            anchor,
            members: Vec::new(),
            remotes: Vec::new(),
            links: Vec::new(),
            vacated_at: None,
            ever_joined: false,
            idle_reported: false,
            awaiting: Vec::new(),
            awaiting_until: None,
            joining: Vec::new(),
            speakers: Vec::new(),
        }
    }

    /// Members here and mirrored, for counts clients see.
    pub fn population(&self) -> usize {
        self.members.len() + self.remotes.len()
    }

    pub fn is_full(&self) -> bool {
        let max = self.settings.max_participants;
        max > 0 && self.population() >= max as usize
    }

    pub fn add(&mut self, key: ParticipantKey) {
        self.members.push(key);
        self.occupied();
    }

    pub fn add_remote(&mut self, key: ParticipantKey) {
        self.remotes.push(key);
        self.occupied();
    }

    fn occupied(&mut self) {
        self.ever_joined = true;
        self.vacated_at = None;
        self.idle_reported = false;
    }

    pub fn remove(&mut self, key: ParticipantKey, now: Instant) {
        self.members.retain(|k| *k != key);
        self.joining.retain(|k| *k != key);
        self.remotes.retain(|k| *k != key);
        if self.population() == 0 && self.vacated_at.is_none() {
            self.vacated_at = Some(now);
        }
    }

    /// `place` answered (its snapshot, or that it holds no instance): stop waiting for it.
    /// Returns whether that was the last place waited for.
    pub fn answered(&mut self, place: PlaceId) -> bool {
        let waited = !self.awaiting.is_empty();
        self.awaiting.retain(|p| *p != place);
        if self.awaiting.is_empty() {
            self.awaiting_until = None;
        }
        waited && self.awaiting.is_empty()
    }

    pub fn link(&mut self, place: PlaceId) -> bool {
        if self.links.contains(&place) {
            return false;
        }
        self.links.push(place);
        true
    }

    /// Whether the room should close at `now`, and why. Only a home instance closes by time;
    /// other instances close when their last hosted participant leaves.
    pub fn should_close(&self, now: Instant) -> Option<CloseReason> {
        if !self.home || self.population() != 0 {
            return None;
        }
        match self.vacated_at {
            Some(t) if now >= t + self.settings.departure_timeout => Some(CloseReason::Departed),
            None if !self.ever_joined && now >= self.created_at + self.settings.empty_timeout => {
                Some(CloseReason::EmptyTimeout)
            }
            _ => None,
        }
    }

    /// When `should_close` may next change its answer.
    pub fn next_deadline(&self) -> Option<Instant> {
        if !self.home || self.population() != 0 {
            return None;
        }
        match self.vacated_at {
            Some(t) => Some(t + self.settings.departure_timeout),
            None if !self.ever_joined => Some(self.created_at + self.settings.empty_timeout),
            None => None,
        }
    }

    pub fn info(&self, num_publishers: u32) -> lk::Room {
        let record = RoomRecord {
            sid: self.sid.clone(),
            creation_unix_ms: self.creation_unix_ms,
            metadata: self.metadata.clone(),
            settings: self.settings.clone(),
        };
        lk::Room {
            num_participants: self.population() as u32,
            num_publishers,
            ..record.info(&self.name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn room(now: Instant, home: bool) -> Room {
        let record = RoomRecord {
            sid: RoomSid::new("RM_x"),
            creation_unix_ms: 0,
            metadata: String::new(),
            settings: RoomDefaults {
                empty_timeout: Duration::from_secs(10),
                departure_timeout: Duration::from_secs(5),
                max_participants: 2,
            },
        };
        Room::new(RoomName::new("r"), record, home, false, now)
    }

    #[test]
    fn room_closes_after_departure_timeout() {
        let t = Instant::now();
        let mut r = room(t, true);
        r.add(ParticipantKey(1));
        assert_eq!(r.should_close(t + Duration::from_secs(60)), None);
        r.remove(ParticipantKey(1), t + Duration::from_secs(1));
        assert_eq!(r.should_close(t + Duration::from_secs(5)), None);
        assert_eq!(
            r.should_close(t + Duration::from_secs(6)),
            Some(CloseReason::Departed)
        );
    }

    #[test]
    fn unused_room_closes_after_empty_timeout() {
        let t = Instant::now();
        let r = room(t, true);
        assert_eq!(r.should_close(t + Duration::from_secs(9)), None);
        assert_eq!(
            r.should_close(t + Duration::from_secs(10)),
            Some(CloseReason::EmptyTimeout)
        );
    }

    #[test]
    fn a_room_with_remote_members_stays_open() {
        let t = Instant::now();
        let mut r = room(t, true);
        r.add_remote(ParticipantKey(7));
        assert_eq!(r.should_close(t + Duration::from_secs(60)), None);
    }

    #[test]
    fn only_the_home_instance_closes_by_time() {
        let t = Instant::now();
        assert_eq!(room(t, false).should_close(t + Duration::from_secs(60)), None);
    }

    #[test]
    fn max_participants_counts_every_place() {
        let t = Instant::now();
        let mut r = room(t, true);
        r.add(ParticipantKey(1));
        assert!(!r.is_full());
        r.add_remote(ParticipantKey(2));
        assert!(r.is_full());
    }
}
