//! Tracks: what a participant publishes (here, or mirrored from another place), who receives
//! it here, which places it is relayed to, and each local receiver's forwarding state.

use std::time::{Duration, Instant};

use livekit_protocol as lk;
use str0m::media::{MediaKind, Mid, Pt, Rid};
use str0m::rtp::Ssrc;

use crate::allocator::{ClimbBackoff, Grant, LayerRates};
use crate::dynacast::Dynacast;
use crate::forwarder::{Forwarder, Layer, MAX_LAYERS, TOP_LAYER};
use crate::ids::{ParticipantKey, ParticipantSid, PlaceId, RelayTrackId, RoomName, TrackKey, TrackSid};
use crate::keyframe::VideoCodec;
use crate::loss::LossCounter;
use crate::speakers::SpeechMeter;
use crate::vp8_munger::Vp8Munger;

/// Keyframe requests to one track are sent at most this often (per place: the origin
/// throttles again what relays ask for).
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

/// A layer that sent nothing for this long is treated as gone (the publisher dropped it).
pub const LAYER_STALE: Duration = Duration::from_millis(1500);

/// A set of simulcast layers (bit `l` = layer `l`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LayerMask(pub u8);

impl LayerMask {
    pub const NONE: LayerMask = LayerMask(0);

    pub fn with(self, layer: Layer) -> LayerMask {
        LayerMask(self.0 | 1 << layer)
    }

    /// Layers `0..=top`.
    pub fn up_to(top: Layer) -> LayerMask {
        LayerMask(((1u16 << (top + 1)) - 1) as u8)
    }

    pub fn contains(self, layer: Layer) -> bool {
        self.0 & (1 << layer) != 0
    }

    pub fn union(self, other: LayerMask) -> LayerMask {
        LayerMask(self.0 | other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The highest layer in the set.
    pub fn top(self) -> Option<Layer> {
        (self.0 != 0).then(|| 7 - self.0.leading_zeros() as Layer)
    }
}

/// The smallest announced layer that covers an element of `width`×`height` pixels (10 %
/// smaller still counts as covering it, as in LiveKit), compared on the short side so a
/// portrait track is judged like a landscape one. Without announced layers, or for an
/// element larger than every layer, the top layer.
pub fn layer_for_size(info: &lk::TrackInfo, width: u32, height: u32) -> Layer {
    let portrait = info.width < info.height;
    let (short, long) = if portrait {
        (width, height)
    } else {
        (height, width)
    };
    // A request with one side only: scale the other from the track's aspect ratio.
    let asked = if short > 0 {
        short
    } else {
        let (track_short, track_long) = if portrait {
            (info.width, info.height)
        } else {
            (info.height, info.width)
        };
        (u64::from(long) * u64::from(track_short) / u64::from(track_long.max(1))) as u32
    };
    let needed = u64::from(asked) * 9 / 10;
    let mut layers: Vec<(Layer, u32)> = info
        .layers
        .iter()
        .filter(|l| (0..=i32::from(TOP_LAYER)).contains(&l.quality))
        .map(|l| (l.quality as Layer, if portrait { l.width } else { l.height }))
        .collect();
    layers.sort_unstable();
    layers
        .iter()
        .find(|(_, side)| u64::from(*side) >= needed)
        .or(layers.last())
        .map_or(TOP_LAYER, |(l, _)| *l)
}

/// A place that receives this track over a relay, and the layers it asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sink {
    pub place: PlaceId,
    pub layers: LayerMask,
}

/// Where a track's packets come from.
#[derive(Debug)]
pub enum Origin {
    /// Published by a participant hosted here, received on its publisher connection.
    Local {
        mid: Mid,
        /// When each layer last delivered a packet with media.
        layer_seen: [Option<Instant>; MAX_LAYERS],
        /// The rid each layer arrives with (for per-layer keyframe requests).
        rids: [Option<Rid>; MAX_LAYERS],
    },
    /// Published at another place and relayed here.
    Relayed {
        place: PlaceId,
        id: RelayTrackId,
        /// The best live layer as the origin last stamped it on a packet.
        best: Option<Layer>,
        /// The layers last asked of the origin (the union of local receivers' needs).
        wished: LayerMask,
    },
}

/// One published track.
pub struct Track {
    pub key: TrackKey,
    pub sid: TrackSid,
    /// The publishing participant (hosted here or a mirror).
    pub owner: ParticipantKey,
    pub owner_sid: ParticipantSid,
    pub room: RoomName,
    pub kind: MediaKind,
    pub codec: VideoCodec,
    /// Each layer's loss on the way in (published here only).
    pub loss: [LossCounter; MAX_LAYERS],
    pub info: lk::TrackInfo,
    pub origin: Origin,
    /// Local participants subscribed (each holds a [`DownTrack`] under this key).
    pub subscribers: Vec<ParticipantKey>,
    /// Places this track is relayed to.
    pub sinks: Vec<Sink>,
    pub last_keyframe_request: Option<Instant>,
    /// What its publisher was told about the layers wanted (published here only).
    pub dynacast: Dynacast,
    /// Speech in the audio that reaches this place (audio tracks only).
    pub speech: SpeechMeter,
    /// [packets received, sequence numbers lost] since the last quality window (published
    /// here only; `quality.rs`).
    pub upstream: [u64; 2],
    /// Each layer's bitrate as it reaches this place (what a subscriber here would cost).
    pub rates: LayerRates,
    /// A VP9 stream with spatial layers (`svc.rs`) was seen: each subscriber gets the spatial
    /// layers up to the one it wants from this one stream.
    pub svc: bool,
    /// How an SVC stream's bytes divide between its spatial layers (`svc` tracks only).
    pub spatial: crate::allocator::SpatialShares,
    /// The end of a picture whose upper spatial layers the encoder dropped (`svc` tracks only).
    pub picture_ends: crate::svc::PictureEnds,
}

impl Track {
    /// The best layer that is live: for a local track, the best that delivered a packet in the
    /// last [`LAYER_STALE`]; for a relayed one, what the origin says.
    pub fn best_layer(&self, now: Instant) -> Option<Layer> {
        match &self.origin {
            Origin::Local { layer_seen, .. } => (0..MAX_LAYERS)
                .rev()
                .find(|&l| layer_seen[l].is_some_and(|t| now.saturating_duration_since(t) < LAYER_STALE))
                .map(|l| l as Layer),
            Origin::Relayed { best, .. } => *best,
        }
    }

    /// Whether a keyframe request may go out now (throttled per track); records it if so.
    pub fn keyframe_request_due(&mut self, now: Instant) -> bool {
        if self.kind.is_audio()
            || self
                .last_keyframe_request
                .is_some_and(|at| now < at + KEYFRAME_REQUEST_INTERVAL)
        {
            return false;
        }
        self.last_keyframe_request = Some(now);
        true
    }

    /// Set what `place` wants of this track; an empty mask removes the sink. Returns whether
    /// the place is new (it needs a keyframe to start).
    pub fn set_sink(&mut self, place: PlaceId, layers: LayerMask) -> bool {
        let existing = self.sinks.iter().position(|s| s.place == place);
        match (existing, layers.is_empty()) {
            (Some(i), true) => {
                self.sinks.swap_remove(i);
                false
            }
            (Some(i), false) => {
                self.sinks[i].layers = layers;
                false
            }
            (None, true) => false,
            (None, false) => {
                self.sinks.push(Sink { place, layers });
                true
            }
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self.origin, Origin::Local { .. })
    }

    /// The tier of the link this track's packets arrive over (`None`: its publisher is here).
    pub fn arrival_tier(&self) -> Option<crate::ids::Tier> {
        match &self.origin {
            Origin::Relayed { place, .. } => Some(place.tier),
            Origin::Local { .. } => None,
        }
    }

    /// The video codec a packet with payload type `params` carries, which is not always the
    /// one the track was announced with (a browser asked for AV1 sends VP8:
    /// `Shard::announced_codecs_first`); the announced one when the packet names none.
    pub fn carried_codec(&self, params: Option<&str0m::format::PayloadParams>) -> VideoCodec {
        use str0m::format::Codec;
        match params.map(|p| p.spec().codec) {
            None => self.codec,
            Some(Codec::Vp8) => VideoCodec::Vp8,
            Some(Codec::Vp9) => VideoCodec::Vp9,
            Some(Codec::H264) => VideoCodec::H264,
            Some(Codec::Av1) => VideoCodec::Av1,
            Some(_) => VideoCodec::Other,
        }
    }
}

/// The codec a track's mime type names.
pub fn codec_from_mime(mime: &str) -> VideoCodec {
    match mime.to_ascii_lowercase().as_str() {
        "video/vp8" => VideoCodec::Vp8,
        "video/vp9" => VideoCodec::Vp9,
        "video/h264" => VideoCodec::H264,
        "video/av1" => VideoCodec::Av1,
        _ => VideoCodec::Other,
    }
}

/// A track one local participant receives: its media section and forwarding state.
pub struct DownTrack {
    pub track: TrackKey,
    pub track_sid: TrackSid,
    pub publisher_sid: ParticipantSid,
    pub kind: MediaKind,
    /// Set once the track's media section is in an offer.
    pub mid: Option<Mid>,
    pub forwarder: Forwarder,
    /// VP8 picture numbering kept continuous across layer switches.
    pub vp8: Vp8Munger,
    /// Publisher payload type → subscriber payload type, learnt on first use.
    pub pt_map: Vec<(Pt, Option<SubscriberPt>)>,
    /// The SSRC of the send stream the last packet left on, checked against `mid` at each use:
    /// str0m finds a stream by SSRC with one hash lookup, by mid only by scanning every send
    /// stream of the connection (`forward::send_stream`).
    pub send_ssrc: Option<Ssrc>,
    /// The subscriber turned this track off (UpdateTrackSettings.disabled).
    pub disabled: bool,
    /// The highest layer the subscriber asked for (UpdateTrackSettings quality or size); the
    /// forwarder's target is the best live layer up to it.
    pub max_layer: Layer,
    /// The frame rate the subscriber asked for (UpdateTrackSettings fps; 0: every frame).
    pub fps: u32,
    /// The highest temporal layer of each simulcast layer within `fps`, from the frame rates
    /// measured where the track arrives (`set_fps`, `follow_frame_rates`).
    pub max_temporal: [u8; MAX_LAYERS],
    /// Set until the first answer that contains this track's media section.
    pub awaiting_answer: bool,
    /// What the subscriber's downlink allows (`downlink.rs`); video only.
    pub grant: Grant,
    /// How soon `grant` may climb a simulcast layer again after falling one.
    pub climb: ClimbBackoff,
    /// The subscriber's priority for this track (UpdateTrackSettings.priority, 1 highest).
    pub priority: Option<std::num::NonZeroU32>,
}

impl DownTrack {
    /// A receiver of track `key` (`sid`, published by `PA_pub`) not yet on a section: what
    /// the negotiation tests start from.
    #[cfg(test)]
    pub(crate) fn for_test(key: u64, sid: &str, kind: MediaKind) -> DownTrack {
        DownTrack {
            track: TrackKey(key),
            track_sid: TrackSid::new(sid),
            publisher_sid: ParticipantSid::new("PA_pub"),
            kind,
            mid: None,
            forwarder: Forwarder::new(if kind.is_audio() { 48_000 } else { 90_000 }),
            vp8: Vp8Munger::default(),
            pt_map: Vec::new(),
            send_ssrc: None,
            disabled: false,
            max_layer: TOP_LAYER,
            fps: 0,
            max_temporal: [crate::temporal::TOP_TEMPORAL; MAX_LAYERS],
            awaiting_answer: true,
            grant: Grant::default(),
            climb: ClimbBackoff::default(),
            priority: None,
        }
    }

    /// The layers this receiver needs to see: while nothing is forwarded yet, every layer up
    /// to the target (it starts on the first keyframe of any); after that, the current layer
    /// and the one it converges to; and the layer it asked for, so that a far origin's
    /// publisher is asked for it (dynacast) even while it is not sent.
    pub fn wanted_layers(&self) -> LayerMask {
        if self.disabled || self.mid.is_none() {
            return LayerMask::NONE;
        }
        let f = &self.forwarder;
        let needed = match (f.current(), f.target()) {
            // Resubscribed and waiting for its first target: any layer up to its request may
            // start it.
            (_, None) => LayerMask::up_to(self.max_layer),
            (None, Some(t)) => LayerMask::up_to(t),
            (Some(c), Some(t)) => LayerMask::NONE.with(c).with(t),
        };
        needed.with(self.max_layer)
    }

    /// The layer to converge to when `best` is the best live layer: the best up to what the
    /// subscriber asked for and its downlink allows; `None` while the downlink pauses it.
    pub fn target_for(&self, best: Option<Layer>) -> Option<Layer> {
        match self.grant {
            Grant::UpTo(cap) => best.map(|b| b.min(self.max_layer).min(cap.layer())),
            Grant::Paused => None,
        }
    }

    /// The temporal layer to forward of simulcast layer `layer`: what the subscriber asked
    /// for, and no more than the downlink allows when the grant stops within that layer.
    /// Above the grant's layer, the base only: a layer the grant fell below is still
    /// forwarded until the lower one's keyframe comes (up to a keyframe interval of a
    /// publisher that does not answer keyframe requests at once), and at every frame it would
    /// overfill the link the grant was lowered for. A layer below the grant's (the one a climb
    /// starts from, waiting for the higher one's keyframe) keeps every frame asked for: the
    /// grant covers all of it.
    pub fn temporal_for(&self, layer: Layer) -> u8 {
        let asked = self.asked_temporal(layer);
        match self.grant {
            Grant::UpTo(cap) if cap.layer() == layer => cap.temporal().min(asked),
            Grant::UpTo(cap) if cap.layer() < layer => 0,
            _ => asked,
        }
    }

    /// [`Self::temporal_for`] of every simulcast layer.
    pub fn temporal_targets(&self) -> [u8; MAX_LAYERS] {
        std::array::from_fn(|l| self.temporal_for(l as Layer))
    }

    /// [`Self::temporal_for`] for an SVC stream (`svc.rs`) arriving as simulcast layer
    /// `stream` and forwarded up to spatial layer `spatial`: the grant's rungs are spatial
    /// layers there, so its temporal cap holds when it stops within `spatial`; what the
    /// subscriber asked for follows the stream's frame rates, measured under `stream`.
    pub fn svc_temporal_for(&self, stream: Layer, spatial: Layer) -> u8 {
        let asked = self.asked_temporal(stream);
        match self.grant {
            Grant::UpTo(cap) if cap.layer() == spatial => cap.temporal().min(asked),
            _ => asked,
        }
    }

    /// The highest temporal layer of simulcast layer `layer` the subscriber asked for.
    pub fn asked_temporal(&self, layer: Layer) -> u8 {
        self.max_temporal[usize::from(layer.min(TOP_LAYER))]
    }

    /// The subscriber asks for `fps` frames a second (0: every frame) of a track whose
    /// frames arrive at `rates`.
    pub fn set_fps(&mut self, fps: u32, rates: &LayerRates) {
        self.fps = fps;
        self.follow_frame_rates(rates);
    }

    /// Map the subscriber's `fps` onto each simulcast layer's temporal layers at the frame
    /// rates measured now (LiveKit's SDKs encode 30 fps cameras, 15 or 5 fps screen shares,
    /// each simulcast layer at its own rate); a layer not measured yet is taken to run at
    /// 30 fps. Run at every rate window (`downlink.rs`) while `fps` is set.
    pub fn follow_frame_rates(&mut self, rates: &LayerRates) {
        let before = self.max_temporal;
        for (layer, max) in self.max_temporal.iter_mut().enumerate() {
            let mfps = rates
                .frame_rates(layer as Layer)
                .unwrap_or(crate::temporal::ASSUMED_MFPS);
            *max = crate::temporal::temporal_for_fps(self.fps, mfps, *max);
        }
        if self.max_temporal != before {
            tracing::debug!(track = %self.track_sid, fps = self.fps, max_temporal = ?self.max_temporal,
                mfps = ?std::array::from_fn::<_, MAX_LAYERS, _>(|l| rates.frame_rates(l as Layer)), "temporal layers for the requested frame rate");
        }
    }
}

/// A receiver's payload types for one codec of the publisher's: the codec's, and RED's when
/// the receiver negotiated redundant audio for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriberPt {
    pub pt: Pt,
    pub red: Option<Pt>,
}

/// What is kept of an unsubscribed track's media section.
#[derive(Debug)]
pub struct ParkedDownTrack {
    pub mid: Mid,
    /// The track it carried last.
    pub sid: TrackSid,
    pub kind: MediaKind,
    /// The client answered the offer that made the section inactive: it may carry another
    /// track now (`SubscriberNegotiation::recycle`).
    pub dormant: bool,
    pub forwarder: Forwarder,
    pub vp8: Vp8Munger,
    pub pt_map: Vec<(Pt, Option<SubscriberPt>)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_masks() {
        assert_eq!(LayerMask::up_to(0), LayerMask(0b1));
        assert_eq!(LayerMask::up_to(2), LayerMask(0b111));
        let m = LayerMask::NONE.with(2).with(0);
        assert!(m.contains(0) && m.contains(2) && !m.contains(1));
        assert_eq!(m.top(), Some(2));
        assert_eq!(LayerMask::NONE.with(1).top(), Some(1));
        assert_eq!(LayerMask::NONE.top(), None);
    }

    fn info(width: u32, height: u32, layers: &[(lk::VideoQuality, u32, u32)]) -> lk::TrackInfo {
        lk::TrackInfo {
            width,
            height,
            layers: layers
                .iter()
                .map(|&(q, width, height)| lk::VideoLayer {
                    quality: q as i32,
                    width,
                    height,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn an_svc_grant_caps_the_temporal_layer_within_the_spatial_layer_it_stops_at() {
        use crate::allocator::Rung;
        use crate::temporal::TOP_TEMPORAL;
        let mut dt = DownTrack::for_test(1, "TR_svc", MediaKind::Video);
        // The stream arrives as simulcast layer 2; the grant stops at spatial layer 1, T0.
        dt.grant = Grant::UpTo(Rung::new(1, 0));
        let spatial = dt.target_for(Some(TOP_LAYER)).unwrap();
        assert_eq!(spatial, 1);
        assert_eq!(
            dt.svc_temporal_for(2, spatial),
            0,
            "S1 at its base frame rate only"
        );
        // A subscriber that asked for LOW only gets S0 at every frame rate: the grant stops
        // above it.
        dt.max_layer = 0;
        let spatial = dt.target_for(Some(TOP_LAYER)).unwrap();
        assert_eq!(dt.svc_temporal_for(2, spatial), TOP_TEMPORAL);
        // What the subscriber asked for (by frame rate) still holds under a wider grant.
        dt.max_layer = TOP_LAYER;
        dt.grant = Grant::UpTo(Rung::TOP);
        dt.max_temporal = [TOP_TEMPORAL, TOP_TEMPORAL, 1];
        assert_eq!(dt.svc_temporal_for(2, 2), 1);
    }

    #[test]
    fn a_layer_above_the_grant_keeps_its_base_and_one_below_every_frame_asked_for() {
        use crate::allocator::Rung;
        use crate::temporal::TOP_TEMPORAL;
        let mut dt = DownTrack::for_test(1, "TR_sim", MediaKind::Video);
        // The grant stops at the middle layer's 7.5 fps: a climb from the low layer waits
        // there at 30 fps, a fall from the top layer at 7.5 fps.
        dt.grant = Grant::UpTo(Rung::new(1, 0));
        assert_eq!(dt.temporal_targets(), [TOP_TEMPORAL, 0, 0]);
        dt.grant = Grant::UpTo(Rung::new(1, 1));
        assert_eq!(dt.temporal_targets(), [TOP_TEMPORAL, 1, 0]);
        // What the subscriber asked for still caps the layer below.
        dt.max_temporal = [1, TOP_TEMPORAL, TOP_TEMPORAL];
        assert_eq!(dt.temporal_targets(), [1, 1, 0]);
        // Under a grant that covers every layer (congestion control off), a subscriber that
        // asked for a lower layer keeps every frame of the layer it leaves.
        dt.max_temporal = [TOP_TEMPORAL; MAX_LAYERS];
        dt.grant = Grant::UpTo(Rung::TOP);
        assert_eq!(dt.temporal_targets(), [TOP_TEMPORAL; MAX_LAYERS]);
    }

    #[test]
    fn an_element_gets_the_smallest_layer_that_covers_it() {
        use lk::VideoQuality::*;
        let hd = info(
            1280,
            720,
            &[(High, 1280, 720), (Low, 320, 180), (Medium, 640, 360)],
        );
        assert_eq!(layer_for_size(&hd, 160, 90), 0);
        assert_eq!(layer_for_size(&hd, 320, 180), 0);
        assert_eq!(layer_for_size(&hd, 350, 197), 0, "within 10 %");
        assert_eq!(layer_for_size(&hd, 480, 270), 1);
        assert_eq!(layer_for_size(&hd, 1280, 720), 2);
        assert_eq!(layer_for_size(&hd, 3840, 2160), 2, "larger than every layer");
        assert_eq!(
            layer_for_size(&hd, 600, 0),
            1,
            "width only: height from the aspect ratio"
        );
        // Portrait: judged on the width.
        let tall = info(
            720,
            1280,
            &[(Low, 180, 320), (Medium, 360, 640), (High, 720, 1280)],
        );
        assert_eq!(layer_for_size(&tall, 180, 320), 0);
        assert_eq!(layer_for_size(&tall, 700, 1250), 2);
        // Two layers only: the top one is MEDIUM.
        let two = info(640, 360, &[(Low, 320, 180), (Medium, 640, 360)]);
        assert_eq!(layer_for_size(&two, 1920, 1080), 1);
        // Nothing announced, or hostile numbers: the top layer, no panic.
        assert_eq!(layer_for_size(&info(0, 0, &[]), 100, 100), 2);
        assert_eq!(layer_for_size(&hd, u32::MAX, u32::MAX), 2);
        let odd = info(1280, 720, &[(Off, 1, 1), (Low, 320, 180)]);
        assert_eq!(layer_for_size(&odd, 100, 50), 0);
    }
}
