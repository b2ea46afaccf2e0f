//! Tracks as the test client sees them: what to publish, what was published, what arrived.

use std::sync::Arc;

use livekit_protocol as lk;
use str0m::media::{MediaKind, Mid, Pt};

/// A track to publish.
#[derive(Clone, Debug)]
pub struct TrackSpec {
    /// Client-chosen id, echoed in `TrackPublishedResponse` and used as the msid track id.
    /// Must be an SDP token (letters, digits, `-`, `_`, ...).
    pub cid: String,
    pub kind: MediaKind,
    pub name: String,
    pub source: lk::TrackSource,
    pub width: u32,
    pub height: u32,
    /// Simulcast rids, lowest quality first (`q`, `h`, `f` as the SDKs send); empty for one
    /// encoding.
    pub simulcast: Vec<String>,
}

/// The rids LiveKit's SDKs use for three simulcast layers, lowest first.
pub const SIMULCAST_RIDS: [&str; 3] = ["q", "h", "f"];

impl TrackSpec {
    /// A microphone track (Opus).
    pub fn audio(cid: &str) -> Self {
        Self {
            cid: cid.to_string(),
            kind: MediaKind::Audio,
            name: "microphone".into(),
            source: lk::TrackSource::Microphone,
            width: 0,
            height: 0,
            simulcast: Vec::new(),
        }
    }

    /// A camera track (VP8).
    pub fn video(cid: &str, width: u32, height: u32) -> Self {
        Self {
            cid: cid.to_string(),
            kind: MediaKind::Video,
            name: "camera".into(),
            source: lk::TrackSource::Camera,
            width,
            height,
            simulcast: Vec::new(),
        }
    }

    /// Publish three simulcast layers (`q`, `h`, `f`) at quarter, half and full size.
    pub fn with_simulcast(mut self) -> Self {
        self.simulcast = SIMULCAST_RIDS.iter().map(|r| r.to_string()).collect();
        self
    }

    /// The `VideoLayer`s announced in AddTrack, lowest quality first.
    fn layers(&self) -> Vec<lk::VideoLayer> {
        let n = self.simulcast.len() as u32;
        (0..n)
            .map(|i| {
                let scale = 1 << (n - 1 - i);
                lk::VideoLayer {
                    quality: i as i32,
                    width: self.width / scale,
                    height: self.height / scale,
                    rid: self.simulcast[i as usize].clone(),
                    ..Default::default()
                }
            })
            .collect()
    }

    pub(crate) fn add_track_request(&self) -> lk::AddTrackRequest {
        let video = self.kind == MediaKind::Video;
        lk::AddTrackRequest {
            cid: self.cid.clone(),
            name: self.name.clone(),
            r#type: if video {
                lk::TrackType::Video
            } else {
                lk::TrackType::Audio
            } as i32,
            source: self.source as i32,
            width: self.width,
            height: self.height,
            simulcast_codecs: if video {
                vec![lk::SimulcastCodec {
                    codec: "vp8".into(),
                    cid: self.cid.clone(),
                    layers: self.layers(),
                    ..Default::default()
                }]
            } else {
                vec![]
            },
            layers: self.layers(),
            ..Default::default()
        }
    }
}

/// A track this client publishes, ready for [`crate::Client::write_rtp`].
#[derive(Clone, Debug)]
pub struct LocalTrack {
    pub cid: String,
    /// The server's `TR_` sid.
    pub sid: String,
    pub kind: MediaKind,
    pub mid: Mid,
    /// The payload type negotiated for the codec (Opus or VP8).
    pub pt: Pt,
    /// The `TrackInfo` from `TrackPublishedResponse`.
    pub info: lk::TrackInfo,
    /// Simulcast rids (empty: one encoding).
    pub simulcast: Vec<String>,
}

/// One RTP packet to send on a [`LocalTrack`]. The client numbers the packets.
#[derive(Clone, Debug)]
pub struct RtpOut {
    pub payload: Vec<u8>,
    /// RTP timestamp (48 kHz audio, 90 kHz video).
    pub timestamp: u32,
    pub marker: bool,
}

/// A track the server added to this client's subscriber connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteTrack {
    pub mid: Mid,
    pub kind: MediaKind,
    /// `TR_` sid, from `mid_to_track_id` or the msid.
    pub track_sid: String,
    /// `PA_` sid of the publisher, from the msid stream id (`PA_x|TR_y`).
    pub participant_sid: String,
    /// False once a later offer made the m-line inactive.
    pub active: bool,
}

/// One RTP packet received on the subscriber connection.
#[derive(Clone, Debug)]
pub struct ReceivedRtp {
    pub track_sid: String,
    pub mid: Mid,
    pub pt: Pt,
    /// Extended sequence number.
    pub seq: u64,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: Arc<[u8]>,
    /// Wall-clock time the client's event loop received it (for one-way latency on one host).
    pub received_at: std::time::SystemTime,
}
