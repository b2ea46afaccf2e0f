//! What a participant's signalling session asks the shard to do, in the core's own types.
//!
//! The signalling edge decodes the LiveKit wire (protobuf or JSON `SignalRequest`), parses
//! SDP, sids and candidates once, and hands the shard one [`SignalCommand`]; the core never
//! sees a raw request. Values the core only echoes back to clients (an encryption type, audio
//! features) stay plain numbers.

use std::collections::HashMap;
use std::num::NonZeroU32;

use livekit_protocol as lk;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::MediaKind;
use str0m::Candidate;

use crate::ids::{DataTrackSid, ParticipantIdentity, ParticipantSid, TrackSid};
use crate::peer::PcKind;

/// One request from a joined participant.
#[derive(Debug)]
pub enum SignalCommand {
    /// The client's offer for its publisher connection (`id` echoes back in the answer).
    Offer {
        offer: SdpOffer,
        id: u32,
    },
    /// The client's answer to our subscriber offer `id` (0: whichever is pending).
    Answer {
        answer: SdpAnswer,
        id: u32,
    },
    /// A remote ICE candidate for one of the client's connections.
    Trickle {
        target: PcKind,
        candidate: Candidate,
    },
    AddTrack(Box<AddTrack>),
    Mute {
        track: TrackSid,
        muted: bool,
    },
    /// Subscribe to (or unsubscribe from) tracks by sid.
    Subscription {
        tracks: Vec<TrackSid>,
        subscribe: bool,
    },
    /// Per-subscription settings: pause, or the most the subscriber wants of a video track.
    TrackSettings(TrackSettings),
    Leave,
    /// Who may subscribe to this participant's tracks.
    SubscriptionPermission(SubscriptionPermission),
    UpdateMetadata(MetadataUpdate),
    /// Legacy ping: answered with the server's unix milliseconds.
    Ping,
    /// Ping with the client's timestamp, answered with a `Pong` echoing it.
    PingReq {
        timestamp: i64,
    },
    /// Publish a data track under the client's handle (`datatrack.rs`).
    PublishDataTrack(PublishDataTrack),
    /// Unpublish the data track of this handle.
    UnpublishDataTrack {
        handle: u32,
    },
    /// Subscribe to (true) or unsubscribe from data tracks by sid.
    DataSubscription(Vec<(String, bool)>),
    /// A request we accept and have nothing to do for (sync state, simulate, layers, ...).
    Ignored,
}

/// Per-subscription settings of some tracks (`UpdateTrackSettings`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackSettings {
    pub tracks: Vec<TrackSid>,
    pub disabled: bool,
    pub quality: QualityRequest,
    /// Which tracks get bandwidth first when the downlink cannot carry them all: 1 is the
    /// highest; `None` (0 on the wire) leaves the track in subscription order, after those
    /// with one.
    pub priority: Option<NonZeroU32>,
    /// The frame rate asked for (0: none): the highest temporal layer that fits
    /// (`temporal::temporal_for_fps`).
    pub fps: u32,
}

/// How much of a simulcast video track a subscriber asks for (`UpdateTrackSettings`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QualityRequest {
    /// A layer by quality: 0 = LOW (`q`), 1 = MEDIUM (`h`), 2 = HIGH (`f`).
    Layer(u8),
    /// The size of the element the video is shown in (adaptive stream); the smallest layer
    /// that covers it is chosen (`track::layer_for_size`).
    Size { width: u32, height: u32 },
}

/// A PublishDataTrackRequest. The encoding and schema are echoed to clients as given.
#[derive(Debug, Clone)]
pub struct PublishDataTrack {
    pub handle: u32,
    pub name: String,
    /// `Encryption.Type`.
    pub encryption: i32,
    pub frame_encoding: Option<lk::DataTrackFrameEncoding>,
    pub schema: Option<lk::DataTrackSchemaId>,
}

/// An AddTrack request: a track the client is about to publish.
#[derive(Debug, Clone)]
pub struct AddTrack {
    /// The client's id for the track (its msid track id in SDP, in today's SDKs).
    pub cid: String,
    pub kind: MediaKind,
    pub name: String,
    pub source: lk::TrackSource,
    pub muted: bool,
    pub width: u32,
    pub height: u32,
    /// The simulcast layers announced (empty or one: not simulcast).
    pub layers: Vec<VideoLayer>,
    /// The codec the client intends to use (`vp8`, `h264`, ...), if it said.
    pub codec: Option<String>,
    pub disable_dtx: bool,
    pub stereo: bool,
    pub disable_red: bool,
    /// Echoed to clients (`Encryption.Type`).
    pub encryption: i32,
    pub stream: String,
    /// Echoed to clients (`AudioTrackFeature` values).
    pub audio_features: Vec<i32>,
    /// Echoed to clients (`BackupCodecPolicy`).
    pub backup_codec_policy: i32,
}

/// One announced simulcast layer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VideoLayer {
    pub quality: lk::VideoQuality,
    pub width: u32,
    pub height: u32,
    pub bitrate: u32,
    pub rid: String,
}

impl VideoLayer {
    pub fn to_wire(&self) -> lk::VideoLayer {
        lk::VideoLayer {
            quality: self.quality as i32,
            width: self.width,
            height: self.height,
            bitrate: self.bitrate,
            rid: self.rid.clone(),
            ..Default::default()
        }
    }
}

/// Who may subscribe to a publisher's tracks (LiveKit `SubscriptionPermission`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriptionPermission {
    pub all_participants: bool,
    pub grants: Vec<TrackPermission>,
}

/// Tracks one participant (named by sid or identity) may subscribe to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrackPermission {
    pub participant_sid: Option<ParticipantSid>,
    pub participant_identity: Option<ParticipantIdentity>,
    pub all_tracks: bool,
    pub tracks: Vec<TrackSid>,
    /// Data tracks named by the grant (`DTR_` sids in LiveKit's `track_sids`).
    pub data_tracks: Vec<DataTrackSid>,
}

impl SubscriptionPermission {
    /// Whether the participant `sid`/`identity` may subscribe to `track`.
    pub fn allows(&self, sid: &ParticipantSid, identity: &ParticipantIdentity, track: &TrackSid) -> bool {
        self.grants_any(sid, identity, |g| g.all_tracks || g.tracks.contains(track))
    }

    /// Whether the participant `sid`/`identity` may subscribe to data track `track`.
    pub fn allows_data(
        &self,
        sid: &ParticipantSid,
        identity: &ParticipantIdentity,
        track: &DataTrackSid,
    ) -> bool {
        self.grants_any(sid, identity, |g| g.all_tracks || g.data_tracks.contains(track))
    }

    /// Everyone is allowed, or a grant to this participant satisfies `covers`.
    fn grants_any(
        &self,
        sid: &ParticipantSid,
        identity: &ParticipantIdentity,
        covers: impl Fn(&TrackPermission) -> bool,
    ) -> bool {
        self.all_participants
            || self.grants.iter().any(|g| {
                let who = g.participant_sid.as_ref() == Some(sid)
                    || g.participant_identity.as_ref() == Some(identity);
                who && covers(g)
            })
    }
}

/// A participant's update of its own name, metadata and attributes.
#[derive(Debug, Clone, Default)]
pub struct MetadataUpdate {
    pub request_id: u32,
    /// `None`: unchanged.
    pub metadata: Option<String>,
    pub name: Option<String>,
    /// An empty value deletes the attribute.
    pub attributes: HashMap<String, String>,
}

impl MetadataUpdate {
    /// The request as LiveKit echoes it back in `RequestResponse`.
    pub fn to_wire(&self) -> lk::UpdateParticipantMetadata {
        lk::UpdateParticipantMetadata {
            metadata: self.metadata.clone().unwrap_or_default(),
            name: self.name.clone().unwrap_or_default(),
            attributes: self.attributes.clone(),
            request_id: self.request_id,
        }
    }
}
