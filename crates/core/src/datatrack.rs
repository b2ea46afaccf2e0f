//! Data tracks (LiveKit 1.10+): a participant publishes a named stream of frames, others
//! subscribe; see `docs/data-tracks.md` for the wire behaviour this follows.
//!
//! - **Signalling**: `PublishDataTrackRequest` (the client picks a 16-bit handle) is answered
//!   with the track's info (a fresh `DTR_` sid) or a `RequestResponse` carrying a copy of the
//!   request (clients match refusals by its handle). Others learn of data tracks only from the
//!   publisher's `ParticipantInfo.data_tracks`, always the complete list.
//! - **Subscriptions**: `UpdateDataSubscription` by sid; the server gives each subscription its
//!   own handle and sends the subscriber the whole `DataTrackSubscriberHandles` map after every
//!   change. A subscription the server cannot grant (permissions, unknown track) is not
//!   answered; the client times out, as with LiveKit.
//! - **Frames** travel as packets on the `_data_track` channel (unordered, no retransmits). The
//!   server reads a packet's 12-byte header, finds the publisher's track by the handle in it,
//!   and writes the packet to every subscriber with only the handle replaced by theirs (one
//!   reused buffer; nothing else of the packet is touched, so a frame's sequence stays whole).
//!
//! Bounded: [`limits::MAX_DATA_TRACKS`] published and [`limits::MAX_DATA_SUBSCRIPTIONS`]
//! received per participant; a packet is at most what the SCTP channel delivers. Data tracks of
//! participants hosted at other places are announced here (their info is mirrored) but their
//! frames do not cross relays yet: a subscription to one is not answered.

use std::time::Instant;

use livekit_protocol as lk;
use lk::request_response::Reason;
use lk::signal_response::Message as Resp;
use str0m::channel::ChannelData;
use tracing::debug;

use crate::command::PublishDataTrack;
use crate::ids::{DataTrackSid, ParticipantKey};
use crate::limits;
use crate::peer::PeerRef;
use crate::shard::Shard;

/// The data-track packet header every packet starts with.
pub const HEADER_LEN: usize = 12;

/// One data track a hosted participant publishes.
#[derive(Debug, Clone)]
pub struct DataTrack {
    pub handle: u16,
    pub sid: DataTrackSid,
    pub info: lk::DataTrackInfo,
    /// Local subscribers and the handle each knows this track by.
    pub subscribers: Vec<(ParticipantKey, u16)>,
}

/// One data track a hosted participant receives.
#[derive(Debug, Clone)]
pub struct DataSub {
    /// The handle the subscriber knows it by.
    pub handle: u16,
    pub publisher: ParticipantKey,
    pub sid: DataTrackSid,
}

/// The publisher handle of a packet, if it is a data-track packet this server understands
/// (version 0, long enough).
pub fn packet_handle(packet: &[u8]) -> Option<u16> {
    if packet.len() < HEADER_LEN || packet[0] >> 5 != 0 {
        return None;
    }
    let handle = u16::from_be_bytes([packet[2], packet[3]]);
    (handle != 0).then_some(handle)
}

impl Shard {
    pub(crate) fn on_publish_data_track(&mut self, key: ParticipantKey, req: PublishDataTrack) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let refusal = if !p.permission.can_publish_data {
            Some((Reason::NotAllowed, "not allowed to publish data"))
        } else if req.handle == 0 || req.handle > u32::from(u16::MAX) {
            Some((Reason::InvalidHandle, "handle must be 1..=65535"))
        } else if req.name.is_empty() || req.name.len() > limits::MAX_DATA_TRACK_NAME_LEN {
            Some((Reason::InvalidName, "name must be 1..=256 bytes"))
        } else if !matches!(
            lk::encryption::Type::try_from(req.encryption),
            Ok(lk::encryption::Type::None | lk::encryption::Type::Gcm)
        ) {
            Some((Reason::InvalidRequest, "unsupported encryption"))
        } else if p.data_tracks.iter().any(|t| u32::from(t.handle) == req.handle) {
            Some((Reason::DuplicateHandle, "handle already published"))
        } else if p.data_tracks.iter().any(|t| t.info.name == req.name) {
            Some((Reason::DuplicateName, "name already published"))
        } else if p.data_tracks.len() >= limits::MAX_DATA_TRACKS {
            Some((Reason::LimitExceeded, "too many data tracks"))
        } else {
            None
        };
        let session = p.session;
        let echo = lk::PublishDataTrackRequest {
            pub_handle: req.handle,
            name: req.name.clone(),
            encryption: req.encryption,
            frame_encoding: req.frame_encoding.clone(),
            schema: req.schema.clone(),
        };
        if let Some((reason, message)) = refusal {
            debug!(participant = %p.sid, handle = req.handle, ?reason, "data track refused");
            let rr = lk::RequestResponse {
                reason: reason as i32,
                message: message.into(),
                request: Some(lk::request_response::Request::PublishDataTrack(echo)),
                ..Default::default()
            };
            self.send(session, Resp::RequestResponse(rr));
            return;
        }
        let sid = DataTrackSid::generate(&mut self.rng);
        let info = lk::DataTrackInfo {
            pub_handle: req.handle,
            sid: sid.to_string(),
            name: req.name,
            encryption: req.encryption,
            frame_encoding: req.frame_encoding,
            schema: req.schema,
        };
        debug!(participant = %p.sid, track = %sid, name = %info.name, "data track published");
        p.data_tracks.push(DataTrack {
            handle: req.handle as u16,
            sid,
            info: info.clone(),
            subscribers: Vec::new(),
        });
        p.bump_version();
        self.send(
            session,
            Resp::PublishDataTrackResponse(lk::PublishDataTrackResponse { info: Some(info) }),
        );
        self.announce(key);
    }

    pub(crate) fn on_unpublish_data_track(&mut self, key: ParticipantKey, handle: u32) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let session = p.session;
        let Some(i) = p.data_tracks.iter().position(|t| u32::from(t.handle) == handle) else {
            let rr = lk::RequestResponse {
                reason: Reason::NotFound as i32,
                message: "no data track with this handle".into(),
                request: Some(lk::request_response::Request::UnpublishDataTrack(
                    lk::UnpublishDataTrackRequest { pub_handle: handle },
                )),
                ..Default::default()
            };
            self.send(session, Resp::RequestResponse(rr));
            return;
        };
        let track = p.data_tracks.remove(i);
        p.bump_version();
        self.drop_data_subscribers(&track);
        let info = Some(track.info);
        self.send(
            session,
            Resp::UnpublishDataTrackResponse(lk::UnpublishDataTrackResponse { info }),
        );
        self.announce(key);
    }

    /// A publisher leaves: its data tracks' subscribers are told their handles are gone.
    pub(crate) fn close_data_tracks(&mut self, key: ParticipantKey) {
        let tracks = self
            .participants
            .get_mut(&key)
            .map(|p| std::mem::take(&mut p.data_tracks))
            .unwrap_or_default();
        for t in &tracks {
            self.drop_data_subscribers(t);
        }
        // Its own subscriptions go with it.
        let subs = self
            .participants
            .get_mut(&key)
            .map(|p| std::mem::take(&mut p.data_subs))
            .unwrap_or_default();
        for s in subs {
            if let Some(t) = self.data_track_mut(s.publisher, &s.sid) {
                t.subscribers.retain(|(k, _)| *k != key);
            }
        }
    }

    fn drop_data_subscribers(&mut self, track: &DataTrack) {
        for &(sub, _) in &track.subscribers {
            if let Some(s) = self.participants.get_mut(&sub) {
                s.data_subs.retain(|d| d.sid != track.sid);
            }
            self.send_data_handles(sub);
        }
    }

    fn data_track_mut(&mut self, publisher: ParticipantKey, sid: &DataTrackSid) -> Option<&mut DataTrack> {
        let p = self.participants.get_mut(&publisher)?;
        p.data_tracks.iter_mut().find(|t| &t.sid == sid)
    }

    pub(crate) fn on_data_subscription(&mut self, key: ParticipantKey, updates: Vec<(String, bool)>) {
        let mut changed = false;
        for (sid, subscribe) in updates {
            let Some(sid) = DataTrackSid::parse(&sid) else {
                continue;
            };
            changed |= if subscribe {
                self.subscribe_data(key, sid)
            } else {
                self.unsubscribe_data(key, &sid)
            };
        }
        if changed {
            self.send_data_handles(key);
        }
    }

    fn subscribe_data(&mut self, key: ParticipantKey, sid: DataTrackSid) -> bool {
        let Some(s) = self.participants.get(&key) else {
            return false;
        };
        if !s.permission.can_subscribe
            || s.data_subs.iter().any(|d| d.sid == sid)
            || s.data_subs.len() >= limits::MAX_DATA_SUBSCRIPTIONS
        {
            return false;
        }
        let (room, sub_sid, sub_identity) = (s.room.clone(), s.sid.clone(), s.identity.clone());
        // The publisher: a participant of the same room hosted here.
        let Some(publisher) = self.rooms.get(&room).and_then(|r| {
            r.members.iter().copied().find(|k| {
                self.participants
                    .get(k)
                    .is_some_and(|p| p.data_tracks.iter().any(|t| t.sid == sid))
            })
        }) else {
            debug!(track = %sid, "data subscription to a track not published here; not answered");
            return false;
        };
        let allowed = self.participants.get(&publisher).is_some_and(|p| {
            p.key != key
                && p.subscribe_allow
                    .as_ref()
                    .is_none_or(|a| a.allows_data(&sub_sid, &sub_identity))
        });
        if !allowed {
            return false;
        }
        let Some(s) = self.participants.get_mut(&key) else {
            return false;
        };
        let Some(handle) = s.last_data_handle.checked_add(1) else {
            return false;
        };
        s.last_data_handle = handle;
        s.data_subs.push(DataSub {
            handle,
            publisher,
            sid: sid.clone(),
        });
        if let Some(t) = self.data_track_mut(publisher, &sid) {
            t.subscribers.push((key, handle));
        }
        true
    }

    fn unsubscribe_data(&mut self, key: ParticipantKey, sid: &DataTrackSid) -> bool {
        let Some(s) = self.participants.get_mut(&key) else {
            return false;
        };
        let Some(i) = s.data_subs.iter().position(|d| &d.sid == sid) else {
            return false;
        };
        let sub = s.data_subs.remove(i);
        if let Some(t) = self.data_track_mut(sub.publisher, sid) {
            t.subscribers.retain(|(k, _)| *k != key);
        }
        true
    }

    /// The subscriber's whole map of handles (sent after every change).
    fn send_data_handles(&mut self, key: ParticipantKey) {
        let Some(s) = self.participants.get(&key) else {
            return;
        };
        let sub_handles = s
            .data_subs
            .iter()
            .filter_map(|d| {
                let p = self.participants.get(&d.publisher)?;
                let track = lk::data_track_subscriber_handles::PublishedDataTrack {
                    publisher_identity: p.identity.to_string(),
                    publisher_sid: p.sid.to_string(),
                    track_sid: d.sid.to_string(),
                };
                Some((u32::from(d.handle), track))
            })
            .collect();
        let msg = Resp::DataTrackSubscriberHandles(lk::DataTrackSubscriberHandles { sub_handles });
        self.send_to(key, msg);
    }

    /// A packet on a publisher's `_data_track` channel: to each subscriber with its handle.
    pub(crate) fn on_data_track_packet(&mut self, _now: Instant, key: ParticipantKey, d: ChannelData) {
        let Some(handle) = packet_handle(&d.data) else {
            return;
        };
        let Some(p) = self.participants.get(&key) else {
            return;
        };
        let Some(t) = p.data_tracks.iter().find(|t| t.handle == handle) else {
            return;
        };
        let mut subs = std::mem::take(&mut self.data_fanout);
        subs.clear();
        subs.extend_from_slice(&t.subscribers);
        let mut buf = std::mem::take(&mut self.data_scratch);
        buf.clear();
        buf.extend_from_slice(&d.data);
        for &(sub, sub_handle) in &subs {
            let Some(s) = self.participants.get_mut(&sub) else {
                continue;
            };
            let Some((channel, pc)) = s.data_channel(|c| c.track) else {
                continue;
            };
            buf[2..4].copy_from_slice(&sub_handle.to_be_bytes());
            if s.write_data(pc, channel, &buf) {
                self.stats.data_packets_forwarded += 1;
            }
            self.dirty.push(PeerRef { key: sub, pc });
        }
        self.data_fanout = subs;
        self.data_scratch = buf;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_version_0_packets_with_a_header_and_a_handle_are_read() {
        let mut p = [0u8; 16];
        p[2..4].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(packet_handle(&p), Some(7));
        p[0] = 0b0001_1000; // start and final flags
        assert_eq!(packet_handle(&p), Some(7));
        assert_eq!(packet_handle(&p[..11]), None, "shorter than the header");
        p[0] = 0b0010_0000; // version 1
        assert_eq!(packet_handle(&p), None);
        p[0] = 0;
        p[2..4].copy_from_slice(&[0, 0]);
        assert_eq!(packet_handle(&p), None, "handle 0 is never valid");
        assert_eq!(packet_handle(&[]), None);
    }
}
