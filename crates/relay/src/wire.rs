//! The relay messages on the wire: protobuf frames (prost), versioned by field numbers so a
//! node one release behind reads what it knows and skips the rest (rolling upgrades run
//! mixed versions).
//!
//! State and feedback travel on the link's reliable stream as length-prefixed frames; media
//! (`Rtp`) travels as QUIC datagrams, one frame per datagram. A codec's parameters cross once
//! per link and direction (`Codec`, on the stream) and media names them by a one-byte id.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use livekit_protocol as lk;
use prost::Message;
use pylon_core::command::{SubscriptionPermission, TrackPermission};
use pylon_core::data::{DataKind, Destinations};
use pylon_core::ids::{DataTrackSid, ParticipantIdentity, ParticipantSid, RelayTrackId, RoomName, TrackSid};
use pylon_core::relay::{DataOut, MediaExtensions, MediaPacket, ParticipantState, RelayMessage, RelayRtp};
use pylon_core::track::LayerMask;
use str0m::format::PayloadParams;
use str0m::rtp::{AbsCaptureTime, VideoOrientation};

/// Largest frame accepted on a link's stream: a snapshot of a big room's participants fits
/// with room to spare; more is refused (the peer is misbehaving).
pub const MAX_FRAME: usize = 4 << 20;

/// Codec ids a link direction may use (one byte; media names its codec by it).
pub const MAX_CODECS: usize = 255;

/// Why a frame was refused. The peer is at fault in every case.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("frame does not decode: {0}")]
    Decode(String),
    #[error("invalid {0}")]
    Invalid(&'static str),
    #[error("media names codec {0}, which was never announced")]
    UnknownCodec(u32),
    #[error("more than {MAX_CODECS} codecs on one link")]
    TooManyCodecs,
}

/// One frame.
#[derive(Clone, PartialEq, Message)]
pub struct Frame {
    #[prost(oneof = "Body", tags = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14")]
    pub body: Option<Body>,
}

/// What a frame carries.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Body {
    #[prost(message, tag = "1")]
    Hello(Hello),
    #[prost(message, tag = "2")]
    Bye(Bye),
    #[prost(message, tag = "3")]
    Participant(Participant),
    #[prost(message, tag = "4")]
    Left(Left),
    #[prost(message, tag = "5")]
    Data(Data),
    #[prost(message, tag = "6")]
    Wish(Wish),
    #[prost(message, tag = "7")]
    Keyframe(Keyframe),
    #[prost(message, tag = "8")]
    Rtp(Rtp),
    #[prost(message, tag = "9")]
    Codec(Codec),
    /// Between regions: which node is the sender region's gateway (home) for which rooms.
    #[prost(message, tag = "10")]
    Homes(Homes),
    #[prost(message, tag = "11")]
    Quality(Quality),
    #[prost(message, tag = "12")]
    DataWish(DataWish),
    #[prost(message, tag = "13")]
    DataFrame(DataFrame),
    /// Media straight over UDP (`direct.rs`), between nodes of one region.
    #[prost(message, tag = "14")]
    Direct(Direct),
}

/// The sender's end of the link's direct media path: its UDP port (at the address the link
/// reaches it at), or, with `confirmed`, that the receiver's probes arrived there (so the
/// receiver may send media that way from now on).
#[derive(Clone, PartialEq, Message)]
pub struct Direct {
    #[prost(uint32, tag = "1")]
    pub port: u32,
    #[prost(bool, tag = "2")]
    pub confirmed: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct DataWish {
    #[prost(string, tag = "1")]
    pub room: String,
    /// The data track's `DTR_` sid.
    #[prost(string, tag = "2")]
    pub track: String,
    #[prost(bool, tag = "3")]
    pub subscribe: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct DataFrame {
    #[prost(string, tag = "1")]
    pub room: String,
    #[prost(string, tag = "2")]
    pub track: String,
    /// The data-track packet, with the publisher's handle.
    #[prost(bytes = "vec", tag = "3")]
    pub packet: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Quality {
    #[prost(string, tag = "1")]
    pub room: String,
    /// `livekit.ConnectionQuality`.
    #[prost(int32, tag = "2")]
    pub quality: i32,
    #[prost(string, repeated, tag = "3")]
    pub sids: Vec<String>,
}

/// Rooms of the sender's region and the node that is each one's home there (its gateway to
/// other regions), with the address that node's relay is dialled at.
#[derive(Clone, PartialEq, Message)]
pub struct Homes {
    #[prost(message, repeated, tag = "1")]
    pub rooms: Vec<RoomHome>,
}

#[derive(Clone, PartialEq, Eq, Message)]
pub struct RoomHome {
    #[prost(string, tag = "1")]
    pub room: String,
    #[prost(string, tag = "2")]
    pub node: String,
    #[prost(string, tag = "3")]
    pub address: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Hello {
    #[prost(string, tag = "1")]
    pub room: String,
    #[prost(bool, tag = "2")]
    pub reply: bool,
    #[prost(message, repeated, tag = "3")]
    pub participants: Vec<State>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Bye {
    #[prost(string, tag = "1")]
    pub room: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Participant {
    #[prost(string, tag = "1")]
    pub room: String,
    #[prost(message, optional, tag = "2")]
    pub state: Option<State>,
}

#[derive(Clone, PartialEq, Message)]
pub struct State {
    #[prost(message, optional, tag = "1")]
    pub info: Option<lk::ParticipantInfo>,
    #[prost(message, repeated, tag = "2")]
    pub tracks: Vec<TrackName>,
    #[prost(message, optional, tag = "3")]
    pub allow: Option<Permission>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TrackName {
    #[prost(string, tag = "1")]
    pub sid: String,
    #[prost(uint64, tag = "2")]
    pub id: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Permission {
    #[prost(bool, tag = "1")]
    pub all_participants: bool,
    #[prost(message, repeated, tag = "2")]
    pub grants: Vec<Grant>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Grant {
    #[prost(string, tag = "1")]
    pub participant_sid: String,
    #[prost(string, tag = "2")]
    pub participant_identity: String,
    #[prost(bool, tag = "3")]
    pub all_tracks: bool,
    #[prost(string, repeated, tag = "4")]
    pub tracks: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Left {
    #[prost(string, tag = "1")]
    pub room: String,
    #[prost(string, tag = "2")]
    pub sid: String,
    #[prost(message, optional, tag = "3")]
    pub info: Option<lk::ParticipantInfo>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Data {
    #[prost(string, tag = "1")]
    pub room: String,
    /// 0 reliable, 1 lossy.
    #[prost(uint32, tag = "2")]
    pub kind: u32,
    #[prost(bytes = "vec", tag = "3")]
    pub bytes: Vec<u8>,
    #[prost(string, repeated, tag = "4")]
    pub identities: Vec<String>,
    #[prost(string, repeated, tag = "5")]
    pub sids: Vec<String>,
    #[prost(string, tag = "6")]
    pub from: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Wish {
    #[prost(uint64, tag = "1")]
    pub track: u64,
    #[prost(uint32, tag = "2")]
    pub layers: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct Keyframe {
    #[prost(uint64, tag = "1")]
    pub track: u64,
}

/// A codec's parameters, named by `id` on this link from now on.
#[derive(Clone, PartialEq, Message)]
pub struct Codec {
    #[prost(uint32, tag = "1")]
    pub id: u32,
    /// str0m's `PayloadParams`, as JSON.
    #[prost(string, tag = "2")]
    pub params: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Rtp {
    #[prost(uint64, tag = "1")]
    pub track: u64,
    #[prost(uint32, tag = "2")]
    pub layer: u32,
    /// The best live layer + 1 (0: none).
    #[prost(uint32, tag = "3")]
    pub best: u32,
    #[prost(uint64, tag = "4")]
    pub seq: u64,
    #[prost(uint32, tag = "5")]
    pub timestamp: u32,
    /// Bit 0: marker; bit 1: starts a keyframe; bit 2: RED (RFC 2198) payload.
    #[prost(uint32, tag = "6")]
    pub flags: u32,
    /// Codec id + 1 (0: no codec parameters).
    #[prost(uint32, tag = "7")]
    pub codec: u32,
    #[prost(sint32, optional, tag = "8")]
    pub audio_level: Option<i32>,
    #[prost(bool, optional, tag = "9")]
    pub voice_activity: Option<bool>,
    #[prost(uint32, optional, tag = "10")]
    pub video_orientation: Option<u32>,
    /// Capture time, nanoseconds since the Unix epoch.
    #[prost(uint64, optional, tag = "11")]
    pub capture_time_ns: Option<u64>,
    #[prost(sint64, optional, tag = "12")]
    pub clock_offset: Option<i64>,
    #[prost(bytes = "bytes", tag = "15")]
    pub payload: bytes::Bytes,
}

const MARKER: u32 = 1;
const KEYFRAME: u32 = 2;
/// The payload is RFC 2198 redundant audio of the codec named.
const RED: u32 = 4;

/// The codecs one direction of a link has named so far.
#[derive(Default)]
pub struct CodecTable {
    codecs: Vec<PayloadParams>,
}

impl CodecTable {
    /// The id of `p`, and whether it is new (its `Codec` frame must go first).
    fn id_of(&mut self, p: &PayloadParams) -> Result<(u32, bool), WireError> {
        if let Some(i) = self
            .codecs
            .iter()
            .position(|c| c.pt() == p.pt() && c.spec() == p.spec())
        {
            return Ok((i as u32, false));
        }
        if self.codecs.len() >= MAX_CODECS {
            return Err(WireError::TooManyCodecs);
        }
        self.codecs.push(*p);
        Ok((self.codecs.len() as u32 - 1, true))
    }

    /// Learn a codec the peer announced.
    pub fn learn(&mut self, c: &Codec) -> Result<(), WireError> {
        let params: PayloadParams =
            serde_json::from_str(&c.params).map_err(|_| WireError::Invalid("codec parameters"))?;
        let id = c.id as usize;
        if id >= MAX_CODECS {
            return Err(WireError::TooManyCodecs);
        }
        if id >= self.codecs.len() {
            self.codecs.resize(id + 1, params);
        }
        self.codecs[id] = params;
        Ok(())
    }

    fn get(&self, id: u32) -> Result<PayloadParams, WireError> {
        self.codecs
            .get(id as usize)
            .copied()
            .ok_or(WireError::UnknownCodec(id))
    }
}

/// Encode a message. Media comes back as `(Some(codec frame if new), rtp frame)`.
pub fn encode(msg: &RelayMessage, codecs: &mut CodecTable) -> Result<(Option<Frame>, Frame), WireError> {
    let body = match msg {
        RelayMessage::Hello {
            room,
            reply,
            participants,
        } => Body::Hello(Hello {
            room: room.as_str().to_string(),
            reply: *reply,
            participants: participants.iter().map(state_to_wire).collect(),
        }),
        RelayMessage::Bye { room } => Body::Bye(Bye {
            room: room.as_str().to_string(),
        }),
        RelayMessage::Participant { room, state } => Body::Participant(Participant {
            room: room.as_str().to_string(),
            state: Some(state_to_wire(state)),
        }),
        RelayMessage::Left { room, sid, info } => Body::Left(Left {
            room: room.as_str().to_string(),
            sid: sid.as_str().to_string(),
            info: Some((**info).clone()),
        }),
        RelayMessage::Data { room, packet } => Body::Data(Data {
            room: room.as_str().to_string(),
            kind: match packet.kind {
                DataKind::Reliable => 0,
                DataKind::Lossy => 1,
            },
            bytes: packet.bytes.clone(),
            identities: packet.to.identities.clone(),
            sids: packet.to.sids.clone(),
            from: packet
                .from
                .as_ref()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
        }),
        RelayMessage::Wish { track, layers } => Body::Wish(Wish {
            track: track.0,
            layers: u32::from(layers.0),
        }),
        RelayMessage::Keyframe { track } => Body::Keyframe(Keyframe { track: track.0 }),
        RelayMessage::Quality { room, quality, sids } => Body::Quality(Quality {
            room: room.as_str().to_string(),
            quality: *quality as i32,
            sids: sids.iter().map(|s| s.as_str().to_string()).collect(),
        }),
        RelayMessage::DataWish {
            room,
            track,
            subscribe,
        } => Body::DataWish(DataWish {
            room: room.as_str().to_string(),
            track: track.to_string(),
            subscribe: *subscribe,
        }),
        RelayMessage::DataFrame { room, track, packet } => Body::DataFrame(DataFrame {
            room: room.as_str().to_string(),
            track: track.to_string(),
            packet: packet.to_vec(),
        }),
        RelayMessage::Rtp(r) => return encode_rtp(r, codecs),
    };
    Ok((None, Frame { body: Some(body) }))
}

fn encode_rtp(r: &RelayRtp, codecs: &mut CodecTable) -> Result<(Option<Frame>, Frame), WireError> {
    let m = &r.packet;
    let mut announce = None;
    let codec = match &m.params {
        Some(p) => {
            let (id, new) = codecs.id_of(p)?;
            if new {
                let params = serde_json::to_string(p).map_err(|_| WireError::Invalid("codec parameters"))?;
                announce = Some(Frame {
                    body: Some(Body::Codec(Codec { id, params })),
                });
            }
            id + 1
        }
        None => 0,
    };
    let ext = &m.ext;
    let capture = ext.abs_capture_time.as_ref();
    let rtp = Rtp {
        track: r.track.0,
        layer: u32::from(m.layer),
        best: m.best.map_or(0, |b| u32::from(b) + 1),
        seq: m.seq,
        timestamp: m.timestamp,
        flags: if m.marker { MARKER } else { 0 }
            | if m.keyframe { KEYFRAME } else { 0 }
            | if m.red { RED } else { 0 },
        codec,
        audio_level: ext.audio_level.map(i32::from),
        voice_activity: ext.voice_activity,
        video_orientation: ext.video_orientation.map(|o| o as u32),
        capture_time_ns: capture
            .and_then(|c| c.capture_time.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos() as u64),
        clock_offset: capture.and_then(|c| c.clock_offset),
        // One copy into the datagram is the link's cost; the core's payload stays shared.
        payload: bytes::Bytes::copy_from_slice(&m.payload),
    };
    Ok((
        announce,
        Frame {
            body: Some(Body::Rtp(rtp)),
        },
    ))
}

/// Decode one frame into a message (a `Codec` frame updates `codecs` and yields nothing).
/// A frame whose body this version does not know (a message type added by a newer peer, which
/// prost reads as no body) yields nothing too: links between versions stay up during a
/// rolling upgrade, and new message types can be added without cutting them.
pub fn decode(frame: Frame, codecs: &mut CodecTable) -> Result<Option<RelayMessage>, WireError> {
    let Some(body) = frame.body else {
        return Ok(None);
    };
    Ok(Some(match body {
        Body::Hello(h) => RelayMessage::Hello {
            room: room(h.room)?,
            reply: h.reply,
            participants: h
                .participants
                .into_iter()
                .map(state_from_wire)
                .collect::<Result<_, _>>()?,
        },
        Body::Bye(b) => RelayMessage::Bye { room: room(b.room)? },
        Body::Participant(p) => RelayMessage::Participant {
            room: room(p.room)?,
            state: Box::new(state_from_wire(
                p.state.ok_or(WireError::Invalid("participant state"))?,
            )?),
        },
        Body::Left(l) => RelayMessage::Left {
            room: room(l.room)?,
            sid: ParticipantSid::parse(&l.sid).ok_or(WireError::Invalid("participant sid"))?,
            info: Box::new(l.info.ok_or(WireError::Invalid("participant info"))?),
        },
        Body::Data(d) => RelayMessage::Data {
            room: room(d.room)?,
            packet: Arc::new(DataOut {
                kind: if d.kind == 1 {
                    DataKind::Lossy
                } else {
                    DataKind::Reliable
                },
                bytes: d.bytes,
                to: Destinations {
                    identities: d.identities,
                    sids: d.sids,
                },
                from: ParticipantSid::parse(&d.from),
            }),
        },
        Body::Wish(w) => RelayMessage::Wish {
            track: RelayTrackId(w.track),
            layers: LayerMask(u8::try_from(w.layers).map_err(|_| WireError::Invalid("layer mask"))?),
        },
        Body::Keyframe(k) => RelayMessage::Keyframe {
            track: RelayTrackId(k.track),
        },
        Body::Codec(c) => {
            codecs.learn(&c)?;
            return Ok(None);
        }
        // Not a room's message: the link reads it before decoding (`link.rs`).
        Body::Homes(_) | Body::Direct(_) => return Ok(None),
        Body::Rtp(r) => RelayMessage::Rtp(rtp_from_wire(r, codecs)?),
        Body::Quality(q) => RelayMessage::Quality {
            room: room(q.room)?,
            quality: lk::ConnectionQuality::try_from(q.quality)
                .map_err(|_| WireError::Invalid("connection quality"))?,
            sids: (q.sids.iter())
                .map(|s| ParticipantSid::parse(s).ok_or(WireError::Invalid("participant sid")))
                .collect::<Result<_, _>>()?,
        },
        Body::DataWish(w) => RelayMessage::DataWish {
            room: room(w.room)?,
            track: DataTrackSid::parse(&w.track).ok_or(WireError::Invalid("data track sid"))?,
            subscribe: w.subscribe,
        },
        Body::DataFrame(f) => RelayMessage::DataFrame {
            room: room(f.room)?,
            track: DataTrackSid::parse(&f.track).ok_or(WireError::Invalid("data track sid"))?,
            packet: f.packet.into(),
        },
    }))
}

fn rtp_from_wire(r: Rtp, codecs: &CodecTable) -> Result<RelayRtp, WireError> {
    let layer = |v: u32| {
        u8::try_from(v)
            .ok()
            .filter(|l| usize::from(*l) < pylon_core::forwarder::MAX_LAYERS)
    };
    let params = match r.codec {
        0 => None,
        n => Some(codecs.get(n - 1)?),
    };
    let capture_time = r.capture_time_ns.map(|ns| AbsCaptureTime {
        capture_time: UNIX_EPOCH + Duration::from_nanos(ns),
        clock_offset: r.clock_offset,
    });
    let packet = MediaPacket {
        layer: layer(r.layer).ok_or(WireError::Invalid("layer"))?,
        best: match r.best {
            0 => None,
            b => Some(layer(b - 1).ok_or(WireError::Invalid("best layer"))?),
        },
        seq: r.seq,
        timestamp: r.timestamp,
        marker: r.flags & MARKER != 0,
        keyframe: r.flags & KEYFRAME != 0,
        params,
        red: r.flags & RED != 0,
        ext: MediaExtensions {
            audio_level: r.audio_level.and_then(|v| i8::try_from(v).ok()),
            voice_activity: r.voice_activity,
            video_orientation: r
                .video_orientation
                .and_then(|v| u8::try_from(v).ok())
                .map(VideoOrientation::from),
            abs_capture_time: capture_time.filter(|c| c.capture_time > SystemTime::UNIX_EPOCH),
        },
        payload: Arc::from(&r.payload[..]),
    };
    Ok(RelayRtp {
        track: RelayTrackId(r.track),
        packet,
    })
}

fn room(name: String) -> Result<RoomName, WireError> {
    pylon_core::limits::check_room_name(&name).map_err(|_| WireError::Invalid("room name"))?;
    if name.is_empty() {
        return Err(WireError::Invalid("room name"));
    }
    Ok(RoomName::new(name))
}

fn state_to_wire(s: &ParticipantState) -> State {
    State {
        info: Some(s.info.clone()),
        tracks: s
            .tracks
            .iter()
            .map(|(sid, id)| TrackName {
                sid: sid.as_str().to_string(),
                id: id.0,
            })
            .collect(),
        allow: s.subscribe_allow.as_ref().map(|p| Permission {
            all_participants: p.all_participants,
            grants: p
                .grants
                .iter()
                .map(|g| Grant {
                    participant_sid: g
                        .participant_sid
                        .as_ref()
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default(),
                    participant_identity: g
                        .participant_identity
                        .as_ref()
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default(),
                    all_tracks: g.all_tracks,
                    // Data tracks' `DTR_` sids travel in the same list (older nodes skip them).
                    tracks: (g.tracks.iter().map(|t| t.as_str().to_string()))
                        .chain(g.data_tracks.iter().map(|t| t.to_string()))
                        .collect(),
                })
                .collect(),
        }),
    }
}

fn state_from_wire(s: State) -> Result<ParticipantState, WireError> {
    let info = s.info.ok_or(WireError::Invalid("participant info"))?;
    ParticipantSid::parse(&info.sid).ok_or(WireError::Invalid("participant sid"))?;
    let tracks = s
        .tracks
        .into_iter()
        .map(|t| {
            Ok((
                TrackSid::parse(&t.sid).ok_or(WireError::Invalid("track sid"))?,
                RelayTrackId(t.id),
            ))
        })
        .collect::<Result<_, WireError>>()?;
    Ok(ParticipantState {
        info,
        tracks,
        subscribe_allow: s.allow.map(|p| SubscriptionPermission {
            all_participants: p.all_participants,
            grants: p
                .grants
                .into_iter()
                .map(|g| TrackPermission {
                    participant_sid: ParticipantSid::parse(&g.participant_sid),
                    participant_identity: (!g.participant_identity.is_empty())
                        .then(|| ParticipantIdentity::new(g.participant_identity)),
                    all_tracks: g.all_tracks,
                    tracks: g.tracks.iter().filter_map(|t| TrackSid::parse(t)).collect(),
                    data_tracks: g.tracks.iter().filter_map(|t| DataTrackSid::parse(t)).collect(),
                })
                .collect(),
        }),
    })
}

/// Decode bytes into a frame.
pub fn frame(bytes: &[u8]) -> Result<Frame, WireError> {
    Frame::decode(bytes).map_err(|e| WireError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pylon_core::ids::RoomName;

    #[test]
    fn data_track_wishes_and_frames_roundtrip_and_bad_sids_are_refused() {
        let room = RoomName::new("r");
        let track = DataTrackSid::parse("DTR_abc").unwrap();
        let msg = RelayMessage::DataWish {
            room: room.clone(),
            track: track.clone(),
            subscribe: true,
        };
        let RelayMessage::DataWish {
            track: t, subscribe, ..
        } = roundtrip(msg)
        else {
            panic!("data wish expected")
        };
        assert_eq!((t, subscribe), (track.clone(), true));
        let packet: Arc<[u8]> = Arc::from(&[0u8, 0, 0, 7, 1, 2, 3, 4, 5, 6, 7, 8, 42][..]);
        let msg = RelayMessage::DataFrame {
            room,
            track: track.clone(),
            packet: packet.clone(),
        };
        let RelayMessage::DataFrame {
            track: t, packet: p, ..
        } = roundtrip(msg)
        else {
            panic!("data frame expected")
        };
        assert_eq!((t, &p[..]), (track, &packet[..]));
        let bad = Frame {
            body: Some(Body::DataWish(DataWish {
                room: "r".into(),
                track: "TR_notadatatrack".into(),
                subscribe: true,
            })),
        };
        let bytes = bad.encode_to_vec();
        assert_eq!(
            decode(super::frame(&bytes).unwrap(), &mut CodecTable::default()).err(),
            Some(WireError::Invalid("data track sid"))
        );
    }

    fn roundtrip(msg: RelayMessage) -> RelayMessage {
        let mut tx = CodecTable::default();
        let mut rx = CodecTable::default();
        let (codec, frame) = encode(&msg, &mut tx).unwrap();
        if let Some(c) = codec {
            let bytes = c.encode_to_vec();
            assert!(decode(super::frame(&bytes).unwrap(), &mut rx).unwrap().is_none());
        }
        let bytes = frame.encode_to_vec();
        decode(super::frame(&bytes).unwrap(), &mut rx).unwrap().unwrap()
    }

    #[test]
    fn state_messages_survive_the_wire() {
        let info = lk::ParticipantInfo {
            sid: "PA_abc".into(),
            identity: "alice".into(),
            version: 7,
            ..Default::default()
        };
        let state = ParticipantState {
            info: info.clone(),
            tracks: vec![(TrackSid::new("TR_x"), RelayTrackId(42))],
            subscribe_allow: Some(SubscriptionPermission {
                all_participants: false,
                grants: vec![TrackPermission {
                    participant_identity: Some(ParticipantIdentity::new("bob")),
                    all_tracks: true,
                    ..Default::default()
                }],
            }),
        };
        let msg = RelayMessage::Hello {
            room: RoomName::new("r"),
            reply: true,
            participants: vec![state.clone()],
        };
        let RelayMessage::Hello {
            participants, reply, ..
        } = roundtrip(msg)
        else {
            panic!("hello expected")
        };
        assert!(reply);
        assert_eq!(participants[0].info, info);
        assert_eq!(participants[0].tracks, state.tracks);
        assert_eq!(participants[0].subscribe_allow, state.subscribe_allow);
    }

    #[test]
    fn media_keeps_its_fields_and_names_codecs_once() {
        let params = str0m::RtcConfig::new()
            .clear_codecs()
            .enable_vp8(true)
            .codec_config()
            .params()[0];
        let packet = MediaPacket {
            layer: 2,
            best: Some(1),
            seq: 1 << 40,
            timestamp: 9,
            marker: true,
            keyframe: true,
            params: Some(params),
            red: true,
            ext: MediaExtensions {
                audio_level: Some(-30),
                ..Default::default()
            },
            payload: Arc::from(&b"vp8"[..]),
        };
        let msg = RelayMessage::Rtp(RelayRtp {
            track: RelayTrackId(5),
            packet,
        });
        let mut tx = CodecTable::default();
        let (first, _) = encode(&msg, &mut tx).unwrap();
        let (second, _) = encode(&msg, &mut tx).unwrap();
        assert!(first.is_some() && second.is_none(), "a codec is announced once");
        let RelayMessage::Rtp(r) = roundtrip(msg) else {
            panic!("rtp expected")
        };
        let p = r.packet;
        assert_eq!(
            (p.layer, p.best, p.seq, p.timestamp, p.marker, p.keyframe, p.red),
            (2, Some(1), 1 << 40, 9, true, true, true)
        );
        assert_eq!(p.ext.audio_level, Some(-30));
        assert_eq!(p.params.map(|c| c.pt()), Some(params.pt()));
        assert_eq!(&p.payload[..], b"vp8");
    }

    #[test]
    fn connection_quality_survives_the_wire_and_garbage_is_refused() {
        let msg = RelayMessage::Quality {
            room: RoomName::new("r"),
            quality: lk::ConnectionQuality::Lost,
            sids: vec![ParticipantSid::parse("PA_abc").unwrap()],
        };
        let RelayMessage::Quality { quality, sids, .. } = roundtrip(msg) else {
            panic!("quality expected")
        };
        assert_eq!(
            (quality, sids[0].as_str()),
            (lk::ConnectionQuality::Lost, "PA_abc")
        );
        let mut rx = CodecTable::default();
        for (quality, sid) in [(42, "PA_abc"), (3, "not a sid")] {
            let f = Frame {
                body: Some(Body::Quality(Quality {
                    room: "r".into(),
                    quality,
                    sids: vec![sid.into()],
                })),
            };
            assert!(decode(f, &mut rx).is_err(), "{quality} {sid}");
        }
    }

    #[test]
    fn hostile_frames_are_refused_not_panicked_on() {
        let mut rx = CodecTable::default();
        assert!(frame(&[0xff, 0xff, 0xff]).is_err());
        // A message type of a newer version (field 60 of the frame, unknown here) is
        // skipped, not an error that would close the link.
        let newer = frame(&[0xe2, 0x03, 0x02, 0x08, 0x01]).unwrap();
        assert!(newer.body.is_none());
        assert!(matches!(decode(newer, &mut rx), Ok(None)));
        let unknown_codec = Frame {
            body: Some(Body::Rtp(Rtp {
                codec: 7,
                ..Default::default()
            })),
        };
        assert_eq!(
            decode(unknown_codec, &mut rx).unwrap_err(),
            WireError::UnknownCodec(6)
        );
        let bad_layer = Frame {
            body: Some(Body::Rtp(Rtp {
                layer: 9,
                ..Default::default()
            })),
        };
        assert!(decode(bad_layer, &mut rx).is_err());
        let huge_codec = Frame {
            body: Some(Body::Codec(Codec {
                id: 100_000,
                params: "{}".into(),
            })),
        };
        assert!(decode(huge_codec, &mut rx).is_err());
        let no_room = Frame {
            body: Some(Body::Bye(Bye { room: String::new() })),
        };
        assert!(decode(no_room, &mut rx).is_err());
    }
}
