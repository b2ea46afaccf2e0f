//! What a hosted participant's peer connections report: connection state, media sections
//! added and changed, data channels, received RTP and keyframe requests.

use std::time::Instant;

use str0m::bwe::BweKind;
use str0m::{Event, IceConnectionState};
use tracing::{debug, info};

use crate::peer::{PcKind, PeerRef};
use crate::shard::{event, Shard};

impl Shard {
    pub(crate) fn on_event(&mut self, now: Instant, peer: PeerRef, e: Event) {
        let PeerRef { key, pc } = peer;
        match e {
            Event::RtpPacket(pkt) if pc == PcKind::Publisher => self.on_publisher_rtp(now, key, pkt),
            Event::Connected => self.on_connected(now, peer),
            Event::IceConnectionStateChange(state) => {
                if let Some(p) = self.participants.get_mut(&key) {
                    debug!(participant = %p.sid, ?pc, ?state, "ice state");
                    if state == IceConnectionState::Disconnected {
                        p.peer_mut(pc).connected = false;
                    }
                }
            }
            Event::MediaAdded(m) if pc == PcKind::Publisher && m.direction.is_receiving() => {
                self.on_received_media(now, key, m.mid, m.kind)
            }
            Event::MediaChanged(m) if pc == PcKind::Publisher => {
                let kind = self
                    .participants
                    .get_mut(&key)
                    .and_then(|p| p.publisher.rtc.media(m.mid).map(|x| x.kind()));
                let published = self.track_by_mid(key, m.mid);
                match (m.direction.is_receiving(), published, kind) {
                    (false, Some(t), _) => self.unpublish(now, key, t),
                    (true, None, Some(kind)) => self.on_received_media(now, key, m.mid, kind),
                    _ => {}
                }
            }
            // Counters for the metrics: NACKs and loss subscribers report, NACKs sent to
            // publishers (str0m answers and sends them itself); loss, packets and round trips
            // for connection quality.
            Event::MediaEgressStats(st) if self.is_down(peer) => {
                if let Some(p) = self.participants.get_mut(&key) {
                    let lost = st.remote.map_or(0, |r| r.packets_lost);
                    let [nacks, lost, sent] =
                        p.peer_mut(pc)
                            .stream_totals
                            .update(st.mid, st.rid, [st.nacks, lost, st.packets]);
                    self.stats.nacks_in += nacks;
                    self.stats.lost_out += lost;
                    p.link.down_sent += sent;
                    p.link.down_lost += lost;
                    if let Some(rtt) = st.rtt {
                        let fresh = p.peer_mut(pc).stream_totals.fresh_rtt(st.mid, st.rid, rtt);
                        if let Some(rtt) = fresh {
                            p.downlink.on_rtt(now, rtt);
                        }
                        p.link.rtt_seen(rtt);
                        if let Some(window) = p.resend.on_rtt(now, rtt) {
                            debug!(participant = %p.sid, ?rtt, ?window, "resend window");
                            crate::subscribe::size_resend_caches(p, window);
                        }
                    }
                }
            }
            Event::MediaIngressStats(st) if pc == PcKind::Publisher => {
                if let Some(p) = self.participants.get_mut(&key) {
                    let [nacks, ..] = p.publisher.stream_totals.update(st.mid, st.rid, [st.nacks, 0, 0]);
                    self.stats.nacks_out += nacks;
                }
            }
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, can_probe }) if self.is_down(peer) => {
                if let Some(p) = self.participants.get_mut(&key) {
                    tracing::trace!(participant = %p.sid, estimate = estimate.as_u64(), can_probe, "bandwidth estimate");
                    p.downlink.estimate = can_probe.then(|| estimate.as_u64());
                }
            }
            Event::ChannelOpen(id, label) => self.on_channel_open(peer, id, &label),
            Event::ChannelClose(id) => self.on_channel_close(peer, id),
            Event::ChannelData(d) if pc == PcKind::Publisher => self.on_channel_data(now, key, d),
            Event::KeyframeRequest(r) if self.is_down(peer) => {
                debug!(mid = %r.mid, kind = ?r.kind, "subscriber asks for a keyframe");
                self.stats.plis_in += 1;
                let track = self
                    .participants
                    .get(&key)
                    .and_then(|p| p.downtrack_by_mid(r.mid))
                    .map(|d| d.track);
                if let Some(t) = track {
                    self.request_keyframe(now, t);
                }
            }
            _ => {}
        }
    }

    fn on_connected(&mut self, now: Instant, peer: PeerRef) {
        let PeerRef { key, pc } = peer;
        let now_ms = self.unix_ms(now);
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        p.peer_mut(pc).connected = true;
        info!(participant = %p.sid, ?pc, "peer connection up");
        let down = p.down_pc();
        let primary = if p.permission.can_subscribe {
            down
        } else {
            PcKind::Publisher
        };
        if pc == primary && !p.active {
            p.active = true;
            p.bump_version();
            let room = p.room.clone();
            self.stats.joins_connected += 1;
            (self.stats.join_latency).observe(now_ms.saturating_sub(p.joined_at_ms).max(0) as u64);
            let info = self.info_of(key);
            self.announce(key);
            let room_info = self.room_info(&room);
            self.webhook(now, event::PARTICIPANT_JOINED, room_info, info, None);
        }
        if pc == down {
            // Single PC: tracks bound before the connection was up had their keyframe asked
            // for too early to arrive; ask again now.
            let early: Vec<_> = match self.participants.get(&key) {
                Some(p) if p.single_pc() => p
                    .downtracks
                    .values()
                    .filter(|d| d.mid.is_some())
                    .map(|d| d.track)
                    .collect(),
                _ => Vec::new(),
            };
            for t in early {
                self.request_keyframe(now, t);
            }
            self.auto_subscribe_all(now, key);
        }
    }

    /// Whether `peer` is the connection a participant's subscribed media leaves on.
    fn is_down(&self, peer: PeerRef) -> bool {
        self.participants
            .get(&peer.key)
            .is_some_and(|p| p.down_pc() == peer.pc)
    }
}
