//! A room instance on this shard: its identity, settings, members and lifetime.

use std::time::Instant;

use livekit_protocol as lk;

use crate::config::RoomDefaults;
use crate::ids::{ParticipantKey, RoomName, RoomSid};

#[derive(Debug)]
pub struct Room {
    pub name: RoomName,
    pub sid: RoomSid,
    pub metadata: String,
    pub settings: RoomDefaults,
    pub created_at: Instant,
    pub creation_unix_ms: i64,
    /// Members in join order.
    pub participants: Vec<ParticipantKey>,
    /// When the last participant left (None while occupied or never joined).
    pub vacated_at: Option<Instant>,
    pub ever_joined: bool,
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
    pub fn new(name: RoomName, sid: RoomSid, settings: RoomDefaults, now: Instant, unix_ms: i64) -> Self {
        Self {
            name,
            sid,
            metadata: String::new(),
            settings,
            created_at: now,
            creation_unix_ms: unix_ms,
            participants: Vec::new(),
            vacated_at: None,
            ever_joined: false,
        }
    }

    pub fn is_full(&self) -> bool {
        let max = self.settings.max_participants;
        max > 0 && self.participants.len() >= max as usize
    }

    pub fn add(&mut self, key: ParticipantKey) {
        self.participants.push(key);
        self.ever_joined = true;
        self.vacated_at = None;
    }

    pub fn remove(&mut self, key: ParticipantKey, now: Instant) {
        self.participants.retain(|k| *k != key);
        if self.participants.is_empty() {
            self.vacated_at = Some(now);
        }
    }

    /// Whether the room should close at `now`, and why.
    pub fn should_close(&self, now: Instant) -> Option<CloseReason> {
        if !self.participants.is_empty() {
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
        if !self.participants.is_empty() {
            return None;
        }
        match self.vacated_at {
            Some(t) => Some(t + self.settings.departure_timeout),
            None if !self.ever_joined => Some(self.created_at + self.settings.empty_timeout),
            None => None,
        }
    }

    pub fn info(&self, num_publishers: u32) -> lk::Room {
        lk::Room {
            sid: self.sid.as_str().to_string(),
            name: self.name.as_str().to_string(),
            empty_timeout: self.settings.empty_timeout.as_secs() as u32,
            departure_timeout: self.settings.departure_timeout.as_secs() as u32,
            max_participants: self.settings.max_participants,
            creation_time: self.creation_unix_ms / 1000,
            creation_time_ms: self.creation_unix_ms,
            metadata: self.metadata.clone(),
            num_participants: self.participants.len() as u32,
            num_publishers,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn room(now: Instant) -> Room {
        let settings = RoomDefaults {
            empty_timeout: Duration::from_secs(10),
            departure_timeout: Duration::from_secs(5),
            max_participants: 2,
        };
        Room::new(RoomName::new("r"), RoomSid::new("RM_x"), settings, now, 0)
    }

    #[test]
    fn room_closes_after_departure_timeout() {
        let t = Instant::now();
        let mut r = room(t);
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
        let r = room(t);
        assert_eq!(r.should_close(t + Duration::from_secs(9)), None);
        assert_eq!(
            r.should_close(t + Duration::from_secs(10)),
            Some(CloseReason::EmptyTimeout)
        );
    }

    #[test]
    fn max_participants_marks_room_full() {
        let t = Instant::now();
        let mut r = room(t);
        r.add(ParticipantKey(1));
        assert!(!r.is_full());
        r.add(ParticipantKey(2));
        assert!(r.is_full());
    }
}
