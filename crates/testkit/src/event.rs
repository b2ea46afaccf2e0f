//! What the client's event loop reports, and the record a [`crate::Client`] keeps of it.

use std::collections::{HashMap, HashSet};

use livekit_protocol as lk;
use str0m::media::{Mid, Rid};

use crate::data::{DataKind, ReceivedData};
use crate::track::{ReceivedRtp, RemoteTrack};
use crate::PcKind;

/// One thing that happened to the client, in order.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // few per client; boxing buys nothing here
pub enum ClientEvent {
    ParticipantUpdate(Vec<lk::ParticipantInfo>),
    Leave(lk::LeaveRequest),
    /// Any other server message the client does not act on itself.
    Signal(Box<lk::signal_response::Message>),
    Connected(PcKind),
    Disconnected(PcKind),
    ChannelOpen(PcKind, DataKind),
    TrackSubscribed(RemoteTrack),
    TrackUnsubscribed(Mid),
    Rtp(ReceivedRtp),
    Data(ReceivedData),
    /// The server asked for a keyframe on one of our published tracks (of one simulcast
    /// layer, by rid).
    KeyframeRequest(Mid, Option<Rid>),
    /// The signalling connection closed; media stops soon after.
    SignalClosed,
    /// The event loop stopped (the reason is in the string).
    Stopped(String),
}

/// Everything a client has observed so far. Tests wait on conditions over this.
#[derive(Debug, Default)]
pub struct Observed {
    /// Latest info per participant sid (others and ourselves), by `version`.
    pub participants: HashMap<String, lk::ParticipantInfo>,
    /// Every `ParticipantInfo` received in updates, in arrival order.
    pub updates: Vec<lk::ParticipantInfo>,
    pub leaves: Vec<lk::LeaveRequest>,
    /// Other server messages, in arrival order.
    pub signals: Vec<lk::signal_response::Message>,
    /// Subscribed tracks by mid.
    pub remote_tracks: HashMap<Mid, RemoteTrack>,
    /// Received RTP per track sid (only when the client records media).
    pub rtp: HashMap<String, Vec<ReceivedRtp>>,
    pub rtp_packets: u64,
    pub rtp_bytes: u64,
    pub data: Vec<ReceivedData>,
    pub connected: HashSet<PcKind>,
    pub channels: HashSet<(PcKind, DataKind)>,
    /// Keyframe requests not yet taken (`Client::take_keyframe_requests`).
    pub keyframe_requests: Vec<(Mid, Option<Rid>)>,
    pub signal_closed: bool,
    pub stopped: Option<String>,
    /// Whether RTP payloads are kept in `rtp` (counters always run).
    pub(crate) record_media: bool,
}

impl Observed {
    pub(crate) fn new(record_media: bool) -> Self {
        Self {
            record_media,
            ..Default::default()
        }
    }

    pub(crate) fn apply(&mut self, e: ClientEvent) {
        match e {
            ClientEvent::ParticipantUpdate(infos) => {
                for info in infos {
                    let newer = self
                        .participants
                        .get(&info.sid)
                        .is_none_or(|old| info.version >= old.version);
                    if newer {
                        self.participants.insert(info.sid.clone(), info.clone());
                    }
                    self.updates.push(info);
                }
            }
            ClientEvent::Leave(l) => self.leaves.push(l),
            ClientEvent::Signal(m) => self.signals.push(*m),
            ClientEvent::Connected(pc) => {
                self.connected.insert(pc);
            }
            ClientEvent::Disconnected(pc) => {
                self.connected.remove(&pc);
            }
            ClientEvent::ChannelOpen(pc, kind) => {
                self.channels.insert((pc, kind));
            }
            ClientEvent::TrackSubscribed(t) => {
                self.remote_tracks.insert(t.mid, t);
            }
            ClientEvent::TrackUnsubscribed(mid) => {
                if let Some(t) = self.remote_tracks.get_mut(&mid) {
                    t.active = false;
                }
            }
            ClientEvent::Rtp(p) => {
                self.rtp_packets += 1;
                self.rtp_bytes += p.payload.len() as u64;
                if self.record_media {
                    self.rtp.entry(p.track_sid.clone()).or_default().push(p);
                }
            }
            ClientEvent::Data(d) => self.data.push(d),
            ClientEvent::KeyframeRequest(mid, rid) => self.keyframe_requests.push((mid, rid)),
            ClientEvent::SignalClosed => self.signal_closed = true,
            ClientEvent::Stopped(why) => self.stopped = Some(why),
        }
    }

    /// The subscribed track with this `TR_` sid.
    pub fn remote_track(&self, track_sid: &str) -> Option<&RemoteTrack> {
        self.remote_tracks.values().find(|t| t.track_sid == track_sid)
    }

    /// RTP received for a track (empty if none or not recorded).
    pub fn rtp_of(&self, track_sid: &str) -> &[ReceivedRtp] {
        self.rtp.get(track_sid).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Whether the subscriber connection is up with both data channels open.
    pub fn subscriber_ready(&self) -> bool {
        self.connected.contains(&PcKind::Subscriber)
            && self.channels.contains(&(PcKind::Subscriber, DataKind::Reliable))
            && self.channels.contains(&(PcKind::Subscriber, DataKind::Lossy))
    }

    /// Data packets whose user payload equals `payload`.
    pub fn data_with_payload<'a>(&'a self, payload: &'a [u8]) -> impl Iterator<Item = &'a ReceivedData> + 'a {
        self.data.iter().filter(move |d| d.payload() == payload)
    }
}
