//! Participants: the ones hosted here (a signal session and two peer connections) and mirrors
//! of the ones hosted at another place of the room (what that place relays about them).

use std::collections::HashMap;
use std::time::Instant;

use livekit_protocol as lk;
use pylon_auth::ParticipantPermission;
use rustc_hash::FxHashMap;
use str0m::channel::ChannelId;
use str0m::media::{MediaKind, Mid};
use tracing::debug;

use crate::command::SubscriptionPermission;
use crate::data::DataKind;
use crate::datatrack::{DataSub, DataTrack};
use crate::ids::{
    ParticipantIdentity, ParticipantKey, ParticipantSid, PlaceId, RoomName, SessionId, TrackKey, TrackSid,
};
use crate::negotiation::SubscriberNegotiation;
use crate::peer::{PcKind, Peer};
use crate::quality::LinkQuality;
use crate::single_pc::SinglePcNegotiation;
use crate::track::{DownTrack, Track};

/// A track announced with AddTrack whose media section has not been matched yet.
#[derive(Debug, Clone)]
pub struct PendingTrack {
    pub cid: String,
    pub info: lk::TrackInfo,
}

/// Data channels known on a peer connection.
#[derive(Default, Debug)]
pub struct Channels {
    pub open: HashMap<ChannelId, DataKind>,
    /// The `_data_track` channel, once open.
    pub track: Option<ChannelId>,
}

impl Channels {
    pub fn find(&self, kind: DataKind) -> Option<ChannelId> {
        self.open.iter().find(|(_, k)| **k == kind).map(|(id, _)| *id)
    }
}

/// A participant hosted by this shard.
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
    /// What the client can take (`client.rs`).
    pub client: crate::client::ClientTraits,
    pub session: Option<SessionId>,
    pub session_lost_at: Option<Instant>,
    pub active: bool,
    /// The client's publisher connection; on `/rtc/v1` its only one, which also carries
    /// everything it subscribes to.
    pub publisher: Peer,
    /// The server-offered subscriber connection (dual PC, `/rtc`); `None` on `/rtc/v1`.
    pub subscriber: Option<Peer>,
    pub pending_tracks: Vec<PendingTrack>,
    /// Published tracks, in publish order.
    pub tracks: Vec<TrackKey>,
    pub downtracks: FxHashMap<TrackKey, DownTrack>,
    /// Dual PC: the subscriber connection's offers (`negotiation.rs`).
    pub negotiation: SubscriberNegotiation,
    /// Single PC: slots in the client's offers (`single_pc.rs`).
    pub single: SinglePcNegotiation,
    pub pub_channels: Channels,
    pub sub_channels: Channels,
    pub last_reliable_seq: u32,
    pub last_rx: Instant,
    /// Who may subscribe to this participant's tracks; `None` = everyone.
    pub subscribe_allow: Option<SubscriptionPermission>,
    /// Received media sections no AddTrack matched yet: (mid, kind, msid track id).
    pub unmatched_media: Vec<(Mid, MediaKind, String)>,
    /// Malformed data packets are logged once per participant.
    pub warned_data: bool,
    /// Whether refusing an AddTrack over the track limits was logged (once per participant).
    pub warned_tracks: bool,
    /// Its transport in the current connection-quality window (`quality.rs`).
    pub link: LinkQuality,
    /// The bandwidth estimate of the connection its subscribed media leaves on (`downlink.rs`).
    pub downlink: crate::downlink::Downlink,
    /// How far back its forwarded video is kept for resends (`resend.rs`).
    pub resend: crate::resend::ResendWindow,
    /// Data tracks it publishes, in publish order (`datatrack.rs`).
    pub data_tracks: Vec<DataTrack>,
    /// Data tracks it receives, by the handle this subscriber knows them by.
    pub data_subs: Vec<DataSub>,
    /// The last subscriber handle handed out (handles are never reused in a session).
    pub last_data_handle: u16,
}

impl Participant {
    /// The channel to write to it on: the one `pick` finds among those the server opened on
    /// its subscriber connection, else among those it opened on its publisher connection.
    pub fn data_channel(&self, pick: impl Fn(&Channels) -> Option<ChannelId>) -> Option<(ChannelId, PcKind)> {
        pick(&self.sub_channels)
            .map(|c| (c, PcKind::Subscriber))
            .or_else(|| pick(&self.pub_channels).map(|c| (c, PcKind::Publisher)))
    }

    /// Write one message on a data channel; whether it was taken (a full or failed channel
    /// drops it, logged at debug).
    pub fn write_data(&mut self, pc: PcKind, channel: ChannelId, bytes: &[u8]) -> bool {
        let Some(mut ch) = self.peer_mut(pc).rtc.channel(channel) else {
            return false;
        };
        match ch.write(true, bytes) {
            Ok(true) => true,
            Ok(false) => {
                debug!(participant = %self.sid, "data channel full; packet dropped");
                false
            }
            Err(e) => {
                debug!(participant = %self.sid, "data channel write failed: {e}");
                false
            }
        }
    }

    /// The peer connection of role `pc`: on a single peer connection both roles are the
    /// publisher connection.
    pub fn peer_mut(&mut self, pc: PcKind) -> &mut Peer {
        match (pc, &mut self.subscriber) {
            (PcKind::Subscriber, Some(s)) => s,
            _ => &mut self.publisher,
        }
    }

    pub fn peer(&self, pc: PcKind) -> &Peer {
        match (pc, &self.subscriber) {
            (PcKind::Subscriber, Some(s)) => s,
            _ => &self.publisher,
        }
    }

    /// Whether it uses one peer connection for both directions (`/rtc/v1`).
    pub fn single_pc(&self) -> bool {
        self.subscriber.is_none()
    }

    /// The connection subscribed media leaves on, as events and timers name it.
    pub fn down_pc(&self) -> PcKind {
        if self.single_pc() {
            PcKind::Publisher
        } else {
            PcKind::Subscriber
        }
    }

    /// Its peer connections (one or two).
    pub fn peers(&self) -> impl Iterator<Item = (PcKind, &Peer)> {
        std::iter::once((PcKind::Publisher, &self.publisher))
            .chain(self.subscriber.as_ref().map(|s| (PcKind::Subscriber, s)))
    }

    pub fn bump_version(&mut self) {
        self.version += 1;
    }

    pub fn downtrack_by_mid(&self, mid: Mid) -> Option<&DownTrack> {
        self.downtracks.values().find(|d| d.mid == Some(mid))
    }

    /// The participant as clients see it; `tracks` resolves its published tracks.
    pub fn info(&self, tracks: &FxHashMap<TrackKey, Track>) -> lk::ParticipantInfo {
        let p = &self.permission;
        lk::ParticipantInfo {
            sid: self.sid.as_str().to_string(),
            identity: self.identity.as_str().to_string(),
            state: if self.active {
                lk::participant_info::State::Active
            } else {
                lk::participant_info::State::Joined
            } as i32,
            tracks: self
                .tracks
                .iter()
                .filter_map(|k| tracks.get(k))
                .map(|t| t.info.clone())
                .collect(),
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
            data_tracks: self.data_tracks.iter().map(|t| t.info.clone()).collect(),
            is_publisher: !self.tracks.is_empty() || !self.data_tracks.is_empty(),
            kind: self.kind,
            attributes: self.attributes.clone(),
            client_protocol: 0,
            ..Default::default()
        }
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

/// The info others see once a participant is gone.
pub fn departed(mut info: lk::ParticipantInfo, reason: lk::DisconnectReason) -> lk::ParticipantInfo {
    info.state = lk::participant_info::State::Disconnected as i32;
    info.version += 1;
    info.disconnect_reason = reason as i32;
    info.tracks.clear();
    info.data_tracks.clear();
    info
}

/// A participant hosted at another place of the room, as that place relays it.
pub struct RemoteParticipant {
    pub key: ParticipantKey,
    pub place: PlaceId,
    pub room: RoomName,
    pub sid: ParticipantSid,
    pub identity: ParticipantIdentity,
    /// The participant as its host last described it (tracks included).
    pub info: lk::ParticipantInfo,
    pub subscribe_allow: Option<SubscriptionPermission>,
    /// Mirrors of its published tracks.
    pub tracks: Vec<TrackKey>,
    /// Its connection quality as its host (or a silent region's link) last announced it.
    pub quality: Option<lk::ConnectionQuality>,
}

/// Whether a publisher's permission setting lets `sid`/`identity` subscribe to `track`.
pub fn allows(
    allow: Option<&SubscriptionPermission>,
    sid: &ParticipantSid,
    identity: &ParticipantIdentity,
    track: &TrackSid,
) -> bool {
    allow.is_none_or(|a| a.allows(sid, identity, track))
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

/// The token name of a track source, the inverse of [`source_from_name`].
pub fn source_name(s: lk::TrackSource) -> Option<&'static str> {
    match s {
        lk::TrackSource::Camera => Some("camera"),
        lk::TrackSource::Microphone => Some("microphone"),
        lk::TrackSource::ScreenShare => Some("screen_share"),
        lk::TrackSource::ScreenShareAudio => Some("screen_share_audio"),
        lk::TrackSource::Unknown => None,
    }
}
