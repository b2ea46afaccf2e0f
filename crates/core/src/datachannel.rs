//! Data packets on the `_reliable` / `_lossy` data channels: received from a hosted
//! participant, checked by LiveKit's rules (`data.rs`), delivered to the matching participants
//! here and relayed once to each other place of the room, which delivers to its own.

use std::sync::Arc;
use std::time::Instant;

use livekit_protocol as lk;
use str0m::channel::{ChannelData, ChannelId};
use tracing::{debug, warn};

use crate::data::{self, DataKind, DataSender, Destinations, DATA_TRACK_LABEL};
use crate::ids::{ParticipantKey, RoomName};
use crate::peer::{PcKind, PeerRef};
use crate::relay::{DataOut, RelayMessage};
use crate::shard::Shard;

impl Shard {
    pub(crate) fn on_channel_open(&mut self, peer: PeerRef, id: ChannelId, label: &str) {
        let Some(p) = self.participants.get_mut(&peer.key) else {
            return;
        };
        if label == DATA_TRACK_LABEL {
            debug!(participant = %p.sid, pc = ?peer.pc, label, "data channel open");
            match peer.pc {
                PcKind::Publisher => p.pub_channels.track = Some(id),
                PcKind::Subscriber => p.sub_channels.track = Some(id),
            }
            return;
        }
        let Some(kind) = DataKind::from_label(label) else {
            return;
        };
        debug!(participant = %p.sid, pc = ?peer.pc, label, "data channel open");
        match peer.pc {
            PcKind::Publisher => p.pub_channels.open.insert(id, kind),
            PcKind::Subscriber => p.sub_channels.open.insert(id, kind),
        };
    }

    pub(crate) fn on_channel_close(&mut self, peer: PeerRef, id: ChannelId) {
        if let Some(p) = self.participants.get_mut(&peer.key) {
            let channels = match peer.pc {
                PcKind::Publisher => &mut p.pub_channels,
                PcKind::Subscriber => &mut p.sub_channels,
            };
            channels.open.remove(&id);
            if channels.track == Some(id) {
                channels.track = None;
            }
        }
    }

    pub(crate) fn on_channel_data(&mut self, now: Instant, key: ParticipantKey, d: ChannelData) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        if p.pub_channels.track == Some(d.id) {
            return self.on_data_track_packet(now, key, d);
        }
        let Some(kind) = p.pub_channels.open.get(&d.id).copied() else {
            return;
        };
        let sender = DataSender {
            sid: &p.sid,
            identity: &p.identity,
            can_publish_data: p.permission.can_publish_data,
            hidden: p.permission.hidden,
            agent: p.permission.agent || p.kind == lk::participant_info::Kind::Agent as i32,
        };
        let mut last = p.last_reliable_seq;
        let result = data::forward(&d.data, kind, sender, &mut last);
        p.last_reliable_seq = last;
        let fwd = match result {
            Ok(f) => f,
            Err(data::DataError::Duplicate { .. } | data::DataError::NotForwarded) => return,
            Err(e) => {
                if !std::mem::replace(&mut p.warned_data, true) {
                    warn!(participant = %p.sid, "data packet dropped: {e}");
                }
                return;
            }
        };
        let room = p.room.clone();
        let out = Arc::new(DataOut {
            kind: fwd.kind,
            bytes: fwd.bytes,
            to: fwd.to,
            from: Some(p.sid.clone()),
        });
        self.deliver_data(&room, &out);
        let links = self.rooms.get(&room).map(|r| r.links.clone()).unwrap_or_default();
        for place in links {
            let msg = RelayMessage::Data {
                room: room.clone(),
                packet: out.clone(),
            };
            self.relay(place, msg);
        }
    }

    /// Write a packet to every matching participant of `room` hosted here, on their
    /// server-created channel of its kind (or, before that exists, their own).
    pub(crate) fn deliver_data(&mut self, room: &RoomName, out: &DataOut) {
        let Some(r) = self.rooms.get(room) else { return };
        let mut members = std::mem::take(&mut self.fanout);
        members.clear();
        members.extend_from_slice(&r.members);
        for &member in &members {
            let Some(m) = self.participants.get_mut(&member) else {
                continue;
            };
            if out.from.as_ref() == Some(&m.sid) || !out.to.includes(&m.sid, &m.identity) {
                continue;
            }
            let Some((channel, pc)) = m.data_channel(|c| c.find(out.kind)) else {
                continue;
            };
            if m.write_data(pc, channel, &out.bytes) {
                self.stats.data_packets_forwarded += 1;
            }
            self.dirty.push(PeerRef { key: member, pc });
        }
        self.fanout = members;
    }

    /// Deliver a server-originated packet (RoomService.SendData) to the room's participants
    /// hosted here (the runtime asks every place of the room).
    pub fn send_data(
        &mut self,
        now: Instant,
        room: &RoomName,
        bytes: Vec<u8>,
        kind: DataKind,
        to: Destinations,
    ) {
        let out = DataOut {
            kind,
            bytes,
            to,
            from: None,
        };
        self.deliver_data(room, &out);
        self.drain_dirty(now);
    }
}
