//! Publishing: matching a publisher's offered media sections to its AddTrack requests, and
//! tracks coming and going.

use std::time::Instant;

use livekit_protocol as lk;
use str0m::media::{MediaKind, Mid};
use tracing::info;

use crate::forwarder::MAX_LAYERS;
use crate::ids::{ParticipantKey, TrackKey, TrackSid};
use crate::keyframe::VideoCodec;
use crate::shard::{event, Shard};
use crate::track::{codec_from_mime, Origin, Track};

impl Shard {
    /// The client offered a media section it sends on: match it to a pending AddTrack.
    pub(crate) fn on_received_media(&mut self, now: Instant, key: ParticipantKey, mid: Mid, kind: MediaKind) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let msid_track = p
            .publisher
            .rtc
            .media(mid)
            .map(|m| m.track_id().to_string())
            .unwrap_or_default();
        p.unmatched_media.retain(|(m, _, _)| *m != mid);
        p.unmatched_media.push((mid, kind, msid_track));
        self.match_unmatched_media(now, key);
    }

    /// Pair unmatched media sections with pending AddTracks: by msid track id = cid, else
    /// the first pending track of the same kind.
    pub(crate) fn match_unmatched_media(&mut self, now: Instant, key: ParticipantKey) {
        loop {
            let Some(p) = self.participants.get_mut(&key) else {
                return;
            };
            let found = p
                .unmatched_media
                .iter()
                .enumerate()
                .find_map(|(ui, (_, kind, msid))| {
                    let want = if kind.is_audio() {
                        lk::TrackType::Audio
                    } else {
                        lk::TrackType::Video
                    } as i32;
                    p.pending_tracks
                        .iter()
                        .position(|t| &t.cid == msid)
                        .or_else(|| p.pending_tracks.iter().position(|t| t.info.r#type == want))
                        .map(|pi| (ui, pi))
                });
            let Some((ui, pi)) = found else { return };
            let (mid, kind, _) = p.unmatched_media.remove(ui);
            let pending = p.pending_tracks.remove(pi);
            self.publish(now, key, mid, kind, pending.info);
        }
    }

    fn publish(
        &mut self,
        now: Instant,
        key: ParticipantKey,
        mid: Mid,
        kind: MediaKind,
        mut info: lk::TrackInfo,
    ) {
        let Some(sid) = TrackSid::parse(&info.sid) else {
            return;
        };
        let tkey = self.next_track_key();
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        info.mid = mid.to_string();
        info!(participant = %p.sid, track = %sid, %mid, mime = %info.mime_type, "track published");
        let track = Track {
            key: tkey,
            sid: sid.clone(),
            owner: key,
            owner_sid: p.sid.clone(),
            room: p.room.clone(),
            kind,
            codec: codec_from_mime(&info.mime_type),
            loss: Default::default(),
            info,
            origin: Origin::Local {
                mid,
                layer_seen: [None; MAX_LAYERS],
                rids: [None; MAX_LAYERS],
            },
            subscribers: Vec::new(),
            sinks: Vec::new(),
            last_keyframe_request: None,
            dynacast: Default::default(),
            speech: Default::default(),
            upstream: [0; 2],
            rates: Default::default(),
            svc: false,
            spatial: Default::default(),
            picture_ends: Default::default(),
        };
        p.tracks.push(tkey);
        p.bump_version();
        let room = p.room.clone();
        let track_info = track.info.clone();
        self.tracks.insert(tkey, track);
        self.track_sids.insert(sid, tkey);
        // Nobody may ever subscribe: dynacast then turns its layers off after the hold.
        self.update_wish(tkey);
        let (participant, room_info) = (self.info_of(key), self.room_info(&room));
        self.webhook(
            now,
            event::TRACK_PUBLISHED,
            room_info,
            participant,
            Some(track_info),
        );
        self.announce(key);
        self.auto_subscribe_to_tracks(now, &[tkey]);
    }

    /// The published track on `key`'s publisher connection at `mid`.
    pub(crate) fn track_by_mid(&self, key: ParticipantKey, mid: Mid) -> Option<TrackKey> {
        let p = self.participants.get(&key)?;
        p.tracks.iter().copied().find(|k| {
            self.tracks
                .get(k)
                .is_some_and(|t| matches!(t.origin, Origin::Local { mid: m, .. } if m == mid))
        })
    }

    /// `answer` to the participant's `offer` with each video section it publishes on leading
    /// with the codec its track was announced with (`codec_order.rs`): a published track's by
    /// mid, a pending one's by cid. Not AV1: libwebrtc sends it as spatial layers (`L3T3_KEY`)
    /// that Chromium receivers decode only with the dependency descriptor header extension,
    /// which Pylon does not negotiate (`docs/architecture.md`, "Not built yet"). A browser asked
    /// for AV1 keeps sending the first codec it offered (VP8), which every subscriber decodes.
    pub(crate) fn announced_codecs_first(&self, key: ParticipantKey, offer: &str, answer: &str) -> String {
        let Some(p) = self.participants.get(&key) else {
            return answer.to_string();
        };
        crate::codec_order::put_announced_first(offer, answer, |mid, msid_track| {
            let mime = match self
                .track_by_mid(key, Mid::from(mid))
                .and_then(|k| self.tracks.get(&k))
            {
                Some(t) => t.info.mime_type.as_str(),
                None => {
                    let track = msid_track?;
                    let pending = p.pending_tracks.iter().find(|t| t.cid == track)?;
                    pending.info.mime_type.as_str()
                }
            };
            (codec_from_mime(mime) != VideoCodec::Av1).then_some(mime)
        })
    }

    /// Remove a published track: unsubscribe everyone, tell the room.
    pub(crate) fn unpublish(&mut self, now: Instant, key: ParticipantKey, tkey: TrackKey) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        p.tracks.retain(|k| *k != tkey);
        p.bump_version();
        let room = p.room.clone();
        let Some(track) = self.drop_track(tkey) else {
            return;
        };
        info!(participant = %track.owner_sid, track = %track.sid, "track unpublished");
        let (who, room_info) = (self.info_of(key), self.room_info(&room));
        self.webhook(now, event::TRACK_UNPUBLISHED, room_info, who, Some(track.info));
        self.announce(key);
    }

    /// Forget a track (published here or mirrored): its receivers here are unsubscribed and
    /// nobody can resubscribe. Places that relay it learn it is gone from its publisher's
    /// next state.
    pub(crate) fn drop_track(&mut self, tkey: TrackKey) -> Option<Track> {
        let track = self.tracks.remove(&tkey)?;
        if self.track_sids.get(&track.sid) == Some(&tkey) {
            self.track_sids.remove(&track.sid);
        }
        if let Origin::Relayed { place, id, .. } = track.origin {
            self.relayed.remove(&(place, id));
        }
        // Their sections are parked, then recycled for the subscribers' next tracks of that
        // kind (`SubscriberNegotiation::recycle`).
        for &sub in &track.subscribers {
            self.unsubscribe(sub, tkey);
        }
        Some(track)
    }
}
