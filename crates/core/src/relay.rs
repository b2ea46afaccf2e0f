//! The relay seam: what one instance of a room tells another at another place.
//!
//! A room is a set of instances, one per place (worker thread, node, region) that hosts its
//! participants, linked by relays. Over a link flow, for every room both places hold:
//! - **state**: a snapshot of the participants hosted at the sender when the link comes up
//!   (`Hello`), then versioned changes (`Participant`, `Left`), and `Bye` when the sender's
//!   instance ends;
//! - **media** the far side subscribes to (`Rtp`), each packet once per link whatever the
//!   number of subscribers there, and only of the layers wanted there;
//! - **feedback** toward the origin: the union of the far side's receivers' layer needs
//!   (`Wish`) and keyframe requests (`Keyframe`); NACKs and congestion control stay per hop;
//! - **data packets** for the far side's participants (`Data`);
//! - **data-track frames**, like media: a place asks the place it mirrors a publisher from
//!   for the frames of one of its data tracks while anyone there (or beyond) subscribes
//!   (`DataWish`), and each frame then crosses the link once (`DataFrame`).
//!
//! Split horizon: the places of one [`Tier`](crate::ids::Tier) that hold a room are fully
//! meshed (workers of a node; nodes of a region, through one anchor worker each; regions,
//! through one gateway each), so what arrives over a link of one tier never travels on over a
//! link of the same tier — it may go up or down a tier (a node's anchor sends what its other
//! workers publish to the other nodes, and what the other nodes send to its other workers),
//! and nothing loops. The messages are plain values: in-process they move between worker
//! threads as they are (payloads shared, not copied); node and region links serialise them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use livekit_protocol as lk;
use str0m::format::PayloadParams;
use str0m::rtp::{AbsCaptureTime, ExtensionValues, VideoOrientation};

use crate::command::SubscriptionPermission;
use crate::data::{DataKind, Destinations};
use crate::forwarder::Layer;
use crate::ids::{DataTrackSid, ParticipantSid, RelayTrackId, RoomName, TrackSid};
use crate::track::LayerMask;

/// One message over a relay link.
#[derive(Debug, Clone)]
// Media is the common case and travels unboxed (no allocation per packet); the rarer state
// messages are boxed where they are large.
#[allow(clippy::large_enum_variant)]
pub enum RelayMessage {
    /// The sender has an instance of `room`; here is everyone it hosts there. `reply` asks
    /// the receiver to answer with its own `Hello` (the first of a pair does).
    Hello {
        room: RoomName,
        reply: bool,
        participants: Vec<ParticipantState>,
    },
    /// The sender's instance of `room` is gone: forget its participants and wishes.
    Bye { room: RoomName },
    /// A participant hosted at the sender joined or changed.
    Participant {
        room: RoomName,
        state: Box<ParticipantState>,
    },
    /// A participant hosted at the sender left; `info` is what clients are told.
    Left {
        room: RoomName,
        sid: ParticipantSid,
        info: Box<lk::ParticipantInfo>,
    },
    /// A data packet for the receiver's participants of `room`.
    Data { room: RoomName, packet: Arc<DataOut> },
    /// The connection quality of participants the sender hosts (`quality.rs`), or mirrors from
    /// a third place (their region went silent, or came back), changed: the receiver shows it
    /// to its participants.
    Quality {
        room: RoomName,
        quality: lk::ConnectionQuality,
        sids: Vec<ParticipantSid>,
    },
    /// The receiver's local receivers of the sender's track need these layers (empty: none).
    Wish { track: RelayTrackId, layers: LayerMask },
    /// The sender's receivers of the receiver's track need a keyframe: ask its publisher.
    Keyframe { track: RelayTrackId },
    /// One media packet of a track the receiver asked for.
    Rtp(RelayRtp),
    /// The receiver's side (its subscribers, or places beyond it) does (not) want the frames
    /// of this data track, which the receiver hosts or mirrors.
    DataWish {
        room: RoomName,
        track: DataTrackSid,
        subscribe: bool,
    },
    /// One packet of a data track the receiver asked for, with the publisher's handle (each
    /// place rewrites it for its own subscribers).
    DataFrame {
        room: RoomName,
        track: DataTrackSid,
        packet: Arc<[u8]>,
    },
}

/// A batch of relay messages admitted into a queue that holds at most `limit` media messages,
/// `queued` of them now: if the batch's media fit, they are counted in; else they are all
/// removed from it (state never is). Returns (media counted in, media dropped).
pub fn admit_batch(msgs: &mut Vec<RelayMessage>, queued: &AtomicUsize, limit: usize) -> (usize, usize) {
    let media = msgs.iter().filter(|m| m.is_media()).count();
    if media == 0 {
        (0, 0)
    } else if queued.load(Ordering::Relaxed) + media > limit {
        msgs.retain(|m| !m.is_media());
        (0, media)
    } else {
        queued.fetch_add(media, Ordering::Relaxed);
        (media, 0)
    }
}

impl RelayMessage {
    /// Media and data-track frames: a receiver far behind may drop them, never state.
    pub fn is_media(&self) -> bool {
        matches!(self, RelayMessage::Rtp(_) | RelayMessage::DataFrame { .. })
    }
}

/// A participant as its host describes it to other places.
#[derive(Debug, Clone)]
pub struct ParticipantState {
    /// What clients see (tracks included), with its version.
    pub info: lk::ParticipantInfo,
    /// How each published track is named on the relay.
    pub tracks: Vec<(TrackSid, RelayTrackId)>,
    /// Who may subscribe to its tracks (enforced where the subscriber is).
    pub subscribe_allow: Option<SubscriptionPermission>,
}

/// A data packet as forwarded: encoded once, the same bytes for every destination.
#[derive(Debug)]
pub struct DataOut {
    pub kind: DataKind,
    pub bytes: Vec<u8>,
    pub to: Destinations,
    /// The sender, who never gets its own packet back.
    pub from: Option<ParticipantSid>,
}

/// One RTP packet of a relayed track.
#[derive(Debug, Clone)]
pub struct RelayRtp {
    pub track: RelayTrackId,
    pub packet: MediaPacket,
}

/// One media packet of a track as identified where it entered the room (a publisher's
/// connection, or a relay): what every sink needs to forward it.
#[derive(Debug, Clone)]
pub struct MediaPacket {
    pub layer: Layer,
    /// The best live layer at the origin (what receivers converge to).
    pub best: Option<Layer>,
    pub seq: u64,
    pub timestamp: u32,
    pub marker: bool,
    /// The packet starts a keyframe (always true for audio).
    pub keyframe: bool,
    /// The publisher's codec parameters for the packet's payload type.
    pub params: Option<PayloadParams>,
    /// The payload is RFC 2198 redundant audio (`red.rs`) of the `params` codec.
    pub red: bool,
    pub ext: MediaExtensions,
    pub payload: Arc<[u8]>,
}

/// The RTP header extensions that describe the media itself and travel with it; transport
/// ones (mid, rid, transport-cc, abs-send-time) belong to each hop.
#[derive(Debug, Clone, Copy, Default)]
pub struct MediaExtensions {
    pub audio_level: Option<i8>,
    pub voice_activity: Option<bool>,
    pub video_orientation: Option<VideoOrientation>,
    pub abs_capture_time: Option<AbsCaptureTime>,
}

impl MediaExtensions {
    pub fn from_received(e: &ExtensionValues) -> Self {
        Self {
            audio_level: e.audio_level,
            voice_activity: e.voice_activity,
            video_orientation: e.video_orientation,
            abs_capture_time: e.abs_capture_time,
        }
    }

    pub fn to_values(self) -> ExtensionValues {
        ExtensionValues {
            audio_level: self.audio_level,
            voice_activity: self.voice_activity,
            video_orientation: self.video_orientation,
            abs_capture_time: self.abs_capture_time,
            ..Default::default()
        }
    }
}
