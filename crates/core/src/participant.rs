//! One participant: identity, permissions, its two peer connections, the tracks it
//! publishes and the tracks it receives.

use std::collections::HashMap;
use std::time::Instant;

use livekit_protocol as lk;
use pylon_auth::ParticipantPermission;
use rustc_hash::FxHashMap;
use str0m::change::SdpPendingOffer;
use str0m::channel::ChannelId;
use str0m::media::{MediaKind, Mid, Pt};
use str0m::Rtc;

use crate::data::DataKind;
use crate::forwarder::{Forwarder, Layer, MAX_LAYERS};
use crate::ids::{ParticipantIdentity, ParticipantKey, ParticipantSid, RoomName, SessionId, TrackSid};
use crate::keyframe::VideoCodec;
use crate::vp8_munger::Vp8Munger;

/// Which of a participant's two peer connections (named from the client's side).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PcKind {
    /// The client sends media here; the server answers its offers.
    Publisher,
    /// The server sends media here; the server makes the offers.
    Subscriber,
}

/// Internal handle of a published track, cheaper than its sid on the media path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrackKey(pub u64);

/// One str0m peer connection and its scheduling state.
pub struct Peer {
    pub rtc: Rtc,
    pub ufrag: String,
    pub next_timeout: Instant,
    pub connected: bool,
    /// Source addresses routed to this peer, oldest first (at most [`MAX_PEER_ADDRS`]).
    pub addrs: Vec<std::net::SocketAddr>,
}

/// Addresses one peer may be reached from at once (ICE candidates of one client; more would
/// let a client grow the shard's address index without bound by spraying STUN from new ports).
pub const MAX_PEER_ADDRS: usize = 4;

impl Peer {
    pub fn new(rtc: Rtc, ufrag: String, now: Instant) -> Self {
        Self {
            rtc,
            ufrag,
            next_timeout: now,
            connected: false,
            addrs: Vec::new(),
        }
    }
}

/// A track announced with AddTrack whose media section has not been matched yet.
#[derive(Debug, Clone)]
pub struct PendingTrack {
    pub cid: String,
    pub info: lk::TrackInfo,
}

/// Per-layer arrival bookkeeping of a published video track.
#[derive(Debug, Clone, Copy, Default)]
pub struct LayerSeen {
    pub last_packet: Option<Instant>,
}

/// A track this participant publishes.
pub struct PublishedTrack {
    pub key: TrackKey,
    pub sid: TrackSid,
    pub info: lk::TrackInfo,
    pub mid: Mid,
    pub kind: MediaKind,
    pub codec: VideoCodec,
    pub layers: [LayerSeen; MAX_LAYERS],
    pub layer_rids: [Option<str0m::media::Rid>; MAX_LAYERS],
    pub subscribers: Vec<ParticipantKey>,
    pub last_keyframe_request: Option<Instant>,
}

impl PublishedTrack {
    /// The best layer that delivered a packet recently.
    pub fn best_layer(&self, now: Instant) -> Option<Layer> {
        (0..MAX_LAYERS)
            .rev()
            .find(|&l| {
                self.layers[l]
                    .last_packet
                    .is_some_and(|t| now.saturating_duration_since(t) < LAYER_STALE)
            })
            .map(|l| l as Layer)
    }
}

/// A layer that sent nothing for this long is treated as gone (publisher dropped it).
pub const LAYER_STALE: std::time::Duration = std::time::Duration::from_millis(1500);

/// A track this participant receives.
pub struct DownTrack {
    pub publisher_sid: ParticipantSid,
    pub track: TrackKey,
    pub track_sid: TrackSid,
    pub publisher: ParticipantKey,
    pub kind: MediaKind,
    /// Set once the track's media section is in an offer.
    pub mid: Option<Mid>,
    pub forwarder: Forwarder,
    /// VP8 picture numbering kept continuous across layer switches.
    pub vp8: Vp8Munger,
    /// Publisher payload type → subscriber payload type, learnt on first use.
    pub pt_map: Vec<(Pt, Option<Pt>)>,
    /// The subscriber turned this track off (UpdateTrackSettings.disabled).
    pub disabled: bool,
    /// Set until the first answer that contains this track's media section.
    pub awaiting_answer: bool,
}

/// Server-side offer/answer state of the subscriber peer connection.
#[derive(Default)]
pub struct SubscriberNegotiation {
    pub pending: Option<(u32, SdpPendingOffer)>,
    pub again: bool,
    pub last_offer_id: u32,
    pub adds: Vec<TrackKey>,
    pub removes: Vec<Mid>,
    /// Parked media sections to turn back to sendonly in the next offer.
    pub reactivate: Vec<Mid>,
    /// Media sections of unsubscribed tracks, kept inactive with their forwarding state: a
    /// resubscription reuses the section (a new one would repeat the track's msid, which
    /// libwebrtc refuses as a duplicate `a=msid`) and continues its sequence numbers.
    pub parked: FxHashMap<TrackKey, ParkedDownTrack>,
    pub channels_created: bool,
    pub ice_restart: bool,
}

/// What is kept of an unsubscribed track's media section.
#[derive(Debug)]
pub struct ParkedDownTrack {
    pub mid: Mid,
    pub forwarder: Forwarder,
    pub vp8: Vp8Munger,
    pub pt_map: Vec<(Pt, Option<Pt>)>,
}

/// Data channels known on a peer connection.
#[derive(Default, Debug)]
pub struct Channels {
    pub open: HashMap<ChannelId, DataKind>,
}

impl Channels {
    pub fn find(&self, kind: DataKind) -> Option<ChannelId> {
        self.open.iter().find(|(_, k)| **k == kind).map(|(id, _)| *id)
    }
}

pub struct Participant {
    pub key: ParticipantKey,
    pub sid: ParticipantSid,
    pub identity: ParticipantIdentity,
    pub name: String,
    pub metadata: String,
    pub attributes: HashMap<String, String>,
    pub permission: ParticipantPermission,
    pub kind: i32,
    pub joined_at_ms: i64,
    pub version: u32,
    pub room: RoomName,
    pub protocol: i32,
    pub auto_subscribe: bool,
    pub session: Option<SessionId>,
    pub session_lost_at: Option<Instant>,
    pub active: bool,
    pub publisher: Peer,
    pub subscriber: Peer,
    pub pending_tracks: Vec<PendingTrack>,
    pub tracks: Vec<PublishedTrack>,
    pub downtracks: FxHashMap<TrackKey, DownTrack>,
    pub negotiation: SubscriberNegotiation,
    pub pub_channels: Channels,
    pub sub_channels: Channels,
    pub last_reliable_seq: u32,
    pub last_rx: Instant,
    /// Who may subscribe to this participant's tracks; `None` = everyone.
    pub subscribe_allow: Option<lk::SubscriptionPermission>,
    /// Received media sections no AddTrack matched yet: (mid, kind, msid track id).
    pub unmatched_media: Vec<(Mid, MediaKind, String)>,
    /// Malformed data packets are logged once per participant.
    pub warned_data: bool,
}

impl Participant {
    pub fn peer_mut(&mut self, pc: PcKind) -> &mut Peer {
        match pc {
            PcKind::Publisher => &mut self.publisher,
            PcKind::Subscriber => &mut self.subscriber,
        }
    }

    pub fn peer(&self, pc: PcKind) -> &Peer {
        match pc {
            PcKind::Publisher => &self.publisher,
            PcKind::Subscriber => &self.subscriber,
        }
    }

    pub fn bump_version(&mut self) {
        self.version += 1;
    }

    pub fn track_by_mid(&self, mid: Mid) -> Option<usize> {
        self.tracks.iter().position(|t| t.mid == mid)
    }

    pub fn track_by_sid(&self, sid: &str) -> Option<usize> {
        self.tracks.iter().position(|t| t.sid.as_str() == sid)
    }

    pub fn downtrack_by_mid(&self, mid: Mid) -> Option<&DownTrack> {
        self.downtracks.values().find(|d| d.mid == Some(mid))
    }

    /// Whether `other` may subscribe to track `track` under this participant's permissions.
    pub fn allows(
        &self,
        other_sid: &ParticipantSid,
        other_identity: &ParticipantIdentity,
        track: &TrackSid,
    ) -> bool {
        let Some(perm) = &self.subscribe_allow else {
            return true;
        };
        if perm.all_participants {
            return true;
        }
        perm.track_permissions.iter().any(|tp| {
            let who = tp.participant_sid == other_sid.as_str()
                || (!tp.participant_identity.is_empty()
                    && tp.participant_identity == other_identity.as_str());
            who && (tp.all_tracks || tp.track_sids.iter().any(|s| s == track.as_str()))
        })
    }

    pub fn info(&self) -> lk::ParticipantInfo {
        let p = &self.permission;
        lk::ParticipantInfo {
            sid: self.sid.as_str().to_string(),
            identity: self.identity.as_str().to_string(),
            state: if self.active {
                lk::participant_info::State::Active
            } else {
                lk::participant_info::State::Joined
            } as i32,
            tracks: self.tracks.iter().map(|t| t.info.clone()).collect(),
            metadata: self.metadata.clone(),
            joined_at: self.joined_at_ms / 1000,
            joined_at_ms: self.joined_at_ms,
            name: self.name.clone(),
            version: self.version,
            permission: Some(lk::ParticipantPermission {
                can_subscribe: p.can_subscribe,
                can_publish: p.can_publish,
                can_publish_data: p.can_publish_data,
                can_publish_sources: p
                    .can_publish_sources
                    .iter()
                    .filter_map(|s| source_from_name(s))
                    .map(|s| s as i32)
                    .collect(),
                hidden: p.hidden,
                recorder: p.recorder,
                can_update_metadata: p.can_update_metadata,
                agent: p.agent,
                ..Default::default()
            }),
            is_publisher: !self.tracks.is_empty(),
            kind: self.kind,
            attributes: self.attributes.clone(),
            client_protocol: 0,
            ..Default::default()
        }
    }

    /// The info others see once this participant is gone.
    pub fn departed_info(&self, reason: lk::DisconnectReason) -> lk::ParticipantInfo {
        let mut info = self.info();
        info.state = lk::participant_info::State::Disconnected as i32;
        info.version = self.version + 1;
        info.disconnect_reason = reason as i32;
        info.tracks.clear();
        info
    }

    /// Whether the participant may publish from `source`.
    pub fn may_publish(&self, source: lk::TrackSource) -> bool {
        let p = &self.permission;
        p.can_publish
            && (p.can_publish_sources.is_empty()
                || p.can_publish_sources
                    .iter()
                    .any(|s| source_from_name(s) == Some(source)))
    }
}

/// Grant source names (`camera`, `microphone`, …) as LiveKit writes them in tokens.
pub fn source_from_name(name: &str) -> Option<lk::TrackSource> {
    match name {
        "camera" => Some(lk::TrackSource::Camera),
        "microphone" => Some(lk::TrackSource::Microphone),
        "screen_share" => Some(lk::TrackSource::ScreenShare),
        "screen_share_audio" => Some(lk::TrackSource::ScreenShareAudio),
        _ => None,
    }
}
