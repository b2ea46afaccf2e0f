//! Media on the shard: peer connection events, publishing and subscribing tracks, the
//! subscriber offer/answer cycle, RTP fan-out and data-channel delivery.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use livekit_protocol as lk;
use lk::signal_response::Message as Resp;
use str0m::channel::{ChannelConfig, ChannelData, ChannelId, Reliability};
use str0m::format::Codec;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Pt};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, Vp8Descriptor};
use str0m::{Event, IceConnectionState};
use tracing::{debug, info, warn};

use crate::data::{self, DataKind, DataSender};
use crate::forwarder::{layer_for_rid, Decision, Forwarder, MAX_LAYERS};
use crate::ids::{ParticipantKey, TrackSid};
use crate::keyframe::{is_keyframe_start, VideoCodec};
use crate::participant::{DownTrack, LayerSeen, ParkedDownTrack, PcKind, PublishedTrack, TrackKey};
use crate::shard::{update, Shard};
use crate::vp8_munger::Vp8Munger;

/// Keyframe requests to one publisher track are sent at most this often.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

/// Resend cache of a forwarded video stream: about 1 s at 500 packets/s, past any useful NACK.
const RTX_CACHE_VIDEO: (usize, Duration) = (512, Duration::from_secs(1));
/// Audio is not resent (no NACK for Opus); a token cache.
const RTX_CACHE_AUDIO: (usize, Duration) = (16, Duration::from_millis(200));

impl Shard {
    pub(crate) fn on_event(&mut self, now: Instant, key: ParticipantKey, pc: PcKind, e: Event) {
        match e {
            Event::RtpPacket(pkt) if pc == PcKind::Publisher => self.forward_rtp(now, key, pkt),
            Event::Connected => self.on_connected(now, key, pc),
            Event::IceConnectionStateChange(state) => {
                if let Some(p) = self.participants.get(&key) {
                    debug!(participant = %p.sid, ?pc, ?state, "ice state");
                }
                if state == IceConnectionState::Disconnected {
                    if let Some(p) = self.participants.get_mut(&key) {
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
                let published = self.participants.get(&key).and_then(|p| p.track_by_mid(m.mid));
                match (m.direction.is_receiving(), published, kind) {
                    (false, Some(i), _) => self.unpublish(now, key, i),
                    (true, None, Some(kind)) => self.on_received_media(now, key, m.mid, kind),
                    _ => {}
                }
            }
            Event::ChannelOpen(id, label) => self.on_channel_open(key, pc, id, &label),
            Event::ChannelClose(id) => {
                if let Some(p) = self.participants.get_mut(&key) {
                    match pc {
                        PcKind::Publisher => p.pub_channels.open.remove(&id),
                        PcKind::Subscriber => p.sub_channels.open.remove(&id),
                    };
                }
            }
            Event::ChannelData(d) if pc == PcKind::Publisher => self.on_channel_data(now, key, d),
            Event::KeyframeRequest(r) if pc == PcKind::Subscriber => {
                debug!(mid = %r.mid, kind = ?r.kind, "subscriber asks for a keyframe");
                let found = self
                    .participants
                    .get(&key)
                    .and_then(|p| p.downtrack_by_mid(r.mid))
                    .map(|d| (d.publisher, d.track));
                if let Some((publisher, tkey)) = found {
                    self.request_keyframe(now, publisher, tkey);
                }
            }
            _ => {}
        }
    }

    fn on_connected(&mut self, now: Instant, key: ParticipantKey, pc: PcKind) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        p.peer_mut(pc).connected = true;
        info!(participant = %p.sid, ?pc, "peer connection up");
        let primary = if p.permission.can_subscribe {
            PcKind::Subscriber
        } else {
            PcKind::Publisher
        };
        if pc == primary && !p.active {
            p.active = true;
            p.bump_version();
            let (info, room) = (p.info(), p.room.clone());
            self.broadcast_participant(key);
            let room_info = self.room_info(&room);
            self.webhook(
                now,
                crate::shard::event::PARTICIPANT_JOINED,
                room_info,
                Some(info),
                None,
            );
        }
        if pc == PcKind::Subscriber {
            self.auto_subscribe_all(now, key);
        }
    }

    /// The client offered a media section it sends on: match it to a pending AddTrack.
    fn on_received_media(&mut self, now: Instant, key: ParticipantKey, mid: Mid, kind: MediaKind) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let msid_track = p
            .publisher
            .rtc
            .media(mid)
            .map(|m| m.track_id().to_string())
            .unwrap_or_default();
        p.unmatched_media.retain(|(m, _, _)| *m != mid);
        p.unmatched_media.push((mid, kind, msid_track));
        self.match_unmatched_media(now, key);
    }

    pub(crate) fn match_unmatched_media(&mut self, now: Instant, key: ParticipantKey) {
        loop {
            let Some(p) = self.participants.get_mut(&key) else {
                return;
            };
            let found = p
                .unmatched_media
                .iter()
                .enumerate()
                .find_map(|(ui, (_, kind, msid))| {
                    let want = if kind.is_audio() {
                        lk::TrackType::Audio
                    } else {
                        lk::TrackType::Video
                    } as i32;
                    p.pending_tracks
                        .iter()
                        .position(|t| &t.cid == msid)
                        .or_else(|| p.pending_tracks.iter().position(|t| t.info.r#type == want))
                        .map(|pi| (ui, pi))
                });
            let Some((ui, pi)) = found else { return };
            let (mid, kind, _) = p.unmatched_media.remove(ui);
            let pending = p.pending_tracks.remove(pi);
            self.publish(now, key, mid, kind, pending.info);
        }
    }

    fn publish(
        &mut self,
        now: Instant,
        key: ParticipantKey,
        mid: Mid,
        kind: MediaKind,
        mut info: lk::TrackInfo,
    ) {
        let tkey = TrackKey(self.next_track);
        self.next_track += 1;
        let Some(sid) = TrackSid::parse(&info.sid) else {
            return;
        };
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        info.mid = mid.to_string();
        let codec = match info.mime_type.as_str() {
            "video/VP8" => VideoCodec::Vp8,
            "video/VP9" => VideoCodec::Vp9,
            "video/H264" => VideoCodec::H264,
            "video/AV1" => VideoCodec::Av1,
            _ => VideoCodec::Other,
        };
        info!(participant = %p.sid, track = %sid, %mid, mime = %info.mime_type, "track published");
        p.tracks.push(PublishedTrack {
            key: tkey,
            sid: sid.clone(),
            info,
            mid,
            kind,
            codec,
            layers: [LayerSeen::default(); MAX_LAYERS],
            layer_rids: [None; MAX_LAYERS],
            subscribers: Vec::new(),
            last_keyframe_request: None,
        });
        p.bump_version();
        let (participant, track) = (p.info(), p.tracks.last().map(|t| t.info.clone()));
        let room_name = p.room.clone();
        let room = self.room_info(&room_name);
        self.tracks.insert(sid, (key, tkey));
        self.webhook(
            now,
            crate::shard::event::TRACK_PUBLISHED,
            room,
            Some(participant),
            track,
        );
        self.broadcast_participant(key);
        self.auto_subscribe_to_publisher(now, key);
    }

    /// Remove a published track: unsubscribe everyone, tell the room.
    pub(crate) fn unpublish(&mut self, now: Instant, key: ParticipantKey, index: usize) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let t = p.tracks.remove(index);
        p.bump_version();
        info!(participant = %p.sid, track = %t.sid, "track unpublished");
        let (who, room) = (p.info(), p.room.clone());
        self.tracks.remove(&t.sid);
        for sub in t.subscribers {
            self.unsubscribe(sub, t.key);
        }
        // Nobody can resubscribe to a track that is gone.
        for s in self.participants.values_mut() {
            s.negotiation.parked.remove(&t.key);
        }
        let room_info = self.room_info(&room);
        self.webhook(
            now,
            crate::shard::event::TRACK_UNPUBLISHED,
            room_info,
            Some(who),
            Some(t.info),
        );
        self.broadcast_participant(key);
    }

    pub(crate) fn may_subscribe(
        &self,
        sub: ParticipantKey,
        publisher: ParticipantKey,
        tkey: TrackKey,
    ) -> bool {
        let (Some(s), Some(p)) = (self.participants.get(&sub), self.participants.get(&publisher)) else {
            return false;
        };
        let Some(t) = p.tracks.iter().find(|t| t.key == tkey) else {
            return false;
        };
        sub != publisher
            && s.room == p.room
            && s.permission.can_subscribe
            && p.allows(&s.sid, &s.identity, &t.sid)
    }

    /// Subscribe every auto-subscribing, connected member of the room to `publisher`'s tracks.
    pub(crate) fn auto_subscribe_to_publisher(&mut self, now: Instant, publisher: ParticipantKey) {
        let Some(p) = self.participants.get(&publisher) else {
            return;
        };
        let Some(room) = self.rooms.get(&p.room) else {
            return;
        };
        let tracks: Vec<TrackKey> = p.tracks.iter().map(|t| t.key).collect();
        let subs: Vec<ParticipantKey> = room
            .participants
            .iter()
            .copied()
            .filter(|k| {
                self.participants
                    .get(k)
                    .is_some_and(|s| s.auto_subscribe && s.subscriber.connected)
            })
            .collect();
        for sub in subs {
            for &t in &tracks {
                if self.may_subscribe(sub, publisher, t) {
                    self.subscribe(now, sub, publisher, t);
                }
            }
        }
    }

    /// Subscribe `sub` to every track in its room (its subscriber connection just came up).
    pub(crate) fn auto_subscribe_all(&mut self, now: Instant, sub: ParticipantKey) {
        let Some(s) = self.participants.get(&sub) else {
            return;
        };
        if !s.auto_subscribe {
            return;
        }
        let Some(room) = self.rooms.get(&s.room) else {
            return;
        };
        let all: Vec<(ParticipantKey, TrackKey)> = room
            .participants
            .iter()
            .filter_map(|k| self.participants.get(k))
            .flat_map(|p| p.tracks.iter().map(move |t| (p.key, t.key)))
            .collect();
        for (publisher, t) in all {
            if self.may_subscribe(sub, publisher, t) {
                self.subscribe(now, sub, publisher, t);
            }
        }
    }

    pub(crate) fn subscribe(
        &mut self,
        _now: Instant,
        sub: ParticipantKey,
        publisher: ParticipantKey,
        tkey: TrackKey,
    ) {
        let Some(p) = self.participants.get_mut(&publisher) else {
            return;
        };
        let publisher_sid = p.sid.clone();
        let Some(t) = p.tracks.iter_mut().find(|t| t.key == tkey) else {
            return;
        };
        let (track_sid, kind) = (t.sid.clone(), t.kind);
        let clock_rate = if kind.is_audio() { 48_000 } else { 90_000 };
        let Some(s) = self.participants.get_mut(&sub) else {
            return;
        };
        if s.downtracks.contains_key(&tkey) {
            return;
        }
        debug!(subscriber = %s.sid, track = %track_sid, "subscribing");
        let (mid, forwarder, vp8, pt_map) = match s.negotiation.parked.remove(&tkey) {
            Some(parked) => {
                // Resubscription: reuse the parked section; forwarding resumes at the next
                // keyframe with sequence numbers continuing where they stopped.
                let mut forwarder = parked.forwarder;
                forwarder.set_target(None);
                s.negotiation.removes.retain(|m| *m != parked.mid);
                s.negotiation.reactivate.push(parked.mid);
                (Some(parked.mid), forwarder, parked.vp8, parked.pt_map)
            }
            None => {
                s.negotiation.adds.push(tkey);
                (None, Forwarder::new(clock_rate), Vp8Munger::default(), Vec::new())
            }
        };
        s.downtracks.insert(
            tkey,
            DownTrack {
                publisher_sid,
                track: tkey,
                track_sid,
                publisher,
                kind,
                mid,
                forwarder,
                vp8,
                pt_map,
                disabled: false,
                awaiting_answer: true,
            },
        );
        let p = self.participants.get_mut(&publisher).expect("looked up above");
        if let Some(t) = p.tracks.iter_mut().find(|t| t.key == tkey) {
            t.subscribers.push(sub);
        }
        self.negotiate(sub);
    }

    pub(crate) fn unsubscribe(&mut self, sub: ParticipantKey, tkey: TrackKey) {
        let Some(s) = self.participants.get_mut(&sub) else {
            return;
        };
        let Some(dt) = s.downtracks.remove(&tkey) else {
            return;
        };
        debug!(subscriber = %s.sid, track = %dt.track_sid, "unsubscribing");
        match dt.mid {
            Some(mid) => {
                s.negotiation.removes.push(mid);
                s.negotiation.reactivate.retain(|m| *m != mid);
                s.negotiation.parked.insert(
                    tkey,
                    ParkedDownTrack {
                        mid,
                        forwarder: dt.forwarder,
                        vp8: dt.vp8,
                        pt_map: dt.pt_map,
                    },
                );
            }
            None => s.negotiation.adds.retain(|k| *k != tkey),
        }
        if let Some(p) = self.participants.get_mut(&dt.publisher) {
            if let Some(t) = p.tracks.iter_mut().find(|t| t.key == tkey) {
                t.subscribers.retain(|k| *k != sub);
            }
        }
        self.negotiate(sub);
    }

    /// Make (or schedule) a subscriber offer carrying every queued change.
    pub(crate) fn negotiate(&mut self, key: ParticipantKey) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        if p.negotiation.pending.is_some() {
            p.negotiation.again = true;
            return;
        }
        let adds = std::mem::take(&mut p.negotiation.adds);
        let removes = std::mem::take(&mut p.negotiation.removes);
        let reactivate = std::mem::take(&mut p.negotiation.reactivate);
        let mut api = p.subscriber.rtc.sdp_api();
        if !p.negotiation.channels_created {
            p.negotiation.channels_created = true;
            api.add_channel_with_config(ChannelConfig {
                label: "_reliable".into(),
                ordered: true,
                reliability: Reliability::Reliable,
                ..Default::default()
            });
            api.add_channel_with_config(ChannelConfig {
                label: "_lossy".into(),
                ordered: false,
                reliability: Reliability::MaxRetransmits { retransmits: 0 },
                ..Default::default()
            });
        }
        if std::mem::take(&mut p.negotiation.ice_restart) {
            // New local credentials: an offer with unchanged ufrag/pwd is not a restart to
            // the answerer (RFC 8445 §9), and libwebrtc would keep its old, dead state.
            api.ice_restart(false);
        }
        for tkey in adds {
            let Some(dt) = p.downtracks.get_mut(&tkey) else {
                continue;
            };
            if dt.mid.is_some() {
                continue;
            }
            let stream = format!("{}|{}", dt.publisher_sid, dt.track_sid);
            let track = dt.track_sid.as_str().to_string();
            dt.mid = Some(api.add_media(dt.kind, Direction::SendOnly, Some(stream), Some(track), None));
        }
        for mid in removes {
            api.set_direction(mid, Direction::Inactive);
        }
        for mid in reactivate {
            api.set_direction(mid, Direction::SendOnly);
        }
        let Some((offer, pending)) = api.apply() else {
            return;
        };
        p.negotiation.last_offer_id += 1;
        let id = p.negotiation.last_offer_id;
        p.negotiation.pending = Some((id, pending));
        let mid_to_track_id: HashMap<String, String> = p
            .downtracks
            .values()
            .filter_map(|d| d.mid.map(|m| (m.to_string(), d.track_sid.as_str().to_string())))
            .collect();
        let sd = lk::SessionDescription {
            r#type: "offer".into(),
            sdp: offer.to_sdp_string(),
            id,
            mid_to_track_id,
        };
        let session = p.session;
        self.send(session, Resp::Offer(sd));
        self.remember_ufrag(key, PcKind::Subscriber);
        self.dirty.push((key, PcKind::Subscriber));
    }

    /// After an answer, size the new send streams' resend caches and ask publishers for
    /// keyframes for every video track just added.
    pub(crate) fn request_keyframes_for_new_downtracks(&mut self, now: Instant, key: ParticipantKey) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let fresh: Vec<(ParticipantKey, TrackKey, Mid, MediaKind)> = p
            .downtracks
            .values_mut()
            .filter(|d| d.awaiting_answer)
            .filter_map(|d| {
                let mid = d.mid?;
                d.awaiting_answer = false;
                Some((d.publisher, d.track, mid, d.kind))
            })
            .collect();
        // Resends are kept for the NACK window only (str0m's default, 3 s and 1,024 packets per
        // stream, was most of the memory per subscribed video track); audio is never resent.
        let mut api = p.subscriber.rtc.direct_api();
        for &(_, _, mid, kind) in &fresh {
            if let Some(tx) = api.stream_tx_by_mid(mid, None) {
                let (packets, age) = if kind.is_video() {
                    RTX_CACHE_VIDEO
                } else {
                    RTX_CACHE_AUDIO
                };
                tx.set_rtx_cache(packets, age, Some(0.15));
            }
        }
        for (publisher, tkey, _, _) in fresh {
            self.request_keyframe(now, publisher, tkey);
        }
    }

    /// Ask a publisher for a keyframe on every layer it sends, throttled per track.
    pub(crate) fn request_keyframe(&mut self, now: Instant, publisher: ParticipantKey, tkey: TrackKey) {
        let Some(p) = self.participants.get_mut(&publisher) else {
            return;
        };
        let Some(t) = p.tracks.iter_mut().find(|t| t.key == tkey) else {
            return;
        };
        if t.kind.is_audio() {
            return;
        }
        if t.last_keyframe_request
            .is_some_and(|at| now < at + KEYFRAME_REQUEST_INTERVAL)
        {
            return;
        }
        t.last_keyframe_request = Some(now);
        let (mid, rids) = (t.mid, t.layer_rids);
        let mut api = p.publisher.rtc.direct_api();
        let mut any = false;
        for rid in rids.iter().flatten() {
            if let Some(rx) = api.stream_rx_by_mid(mid, Some(*rid)) {
                rx.request_keyframe(KeyframeRequestKind::Pli);
                any = true;
            }
        }
        if !any {
            if let Some(rx) = api.stream_rx_by_mid(mid, None) {
                rx.request_keyframe(KeyframeRequestKind::Pli);
                any = true;
            }
        }
        debug!(publisher = %p.sid, %mid, sent = any, "keyframe request");
        self.dirty.push((publisher, PcKind::Publisher));
    }

    /// Fan one received RTP packet out to every subscriber of its track.
    fn forward_rtp(&mut self, now: Instant, key: ParticipantKey, pkt: RtpPacket) {
        self.stats.rtp_in += 1;
        // Padding-only packets (bandwidth probes) carry no media: they must neither make a
        // simulcast layer look alive nor go to subscribers, whose own sender pads as needed.
        if pkt.payload.is_empty() {
            return;
        }
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let ssrc = pkt.header.ssrc;
        let Some((mid, rid)) = p
            .publisher
            .rtc
            .direct_api()
            .stream_rx(&ssrc)
            .map(|s| (s.mid(), s.rid()))
        else {
            return;
        };
        let Some(index) = p.track_by_mid(mid) else { return };
        let pub_pt = pkt.header.payload_type;
        let pub_params = p.publisher.rtc.codec_config().find(|c| c.pt() == pub_pt).copied();
        let t = &mut p.tracks[index];
        let layer = layer_for_rid(rid.as_deref());
        t.layers[layer as usize].last_packet = Some(now);
        t.layer_rids[layer as usize] = rid;
        let best = t.best_layer(now);
        let (tkey, kind, codec) = (t.key, t.kind, t.codec);
        let keyframe = kind.is_audio() || is_keyframe_start(codec, &pkt.payload);
        // Parsed once per packet; each subscriber's rewrite is a patch str0m applies on send.
        let vp8 = match codec {
            VideoCodec::Vp8 => Vp8Descriptor::parse(&pkt.payload).ok(),
            _ => None,
        };
        let mut fanout = std::mem::take(&mut self.fanout);
        fanout.clear();
        fanout.extend_from_slice(&t.subscribers);
        let ext = forwarded_extensions(&pkt.header.ext_vals);
        let mut want_keyframe = false;
        for &sub in &fanout {
            let Some(s) = self.participants.get_mut(&sub) else {
                continue;
            };
            let Some(dt) = s.downtracks.get_mut(&tkey) else {
                continue;
            };
            let Some(sub_mid) = dt.mid else { continue };
            if dt.disabled {
                continue;
            }
            if kind.is_video() && dt.forwarder.target() != best {
                debug!(subscriber = %s.sid, track = %dt.track_sid, from = ?dt.forwarder.target(), to = ?best, "layer target");
                dt.forwarder.set_target(best);
            }
            let decision = dt
                .forwarder
                .on_packet(layer, *pkt.seq_no, pkt.header.timestamp, keyframe, now);
            let Decision::Forward {
                seq,
                timestamp,
                switched,
            } = decision
            else {
                want_keyframe |= dt.forwarder.wants_keyframe() && Some(layer) == dt.forwarder.target();
                continue;
            };
            let Some(pt) = map_pt(&mut dt.pt_map, pub_pt, pub_params.as_ref(), &s.subscriber.rtc) else {
                continue;
            };
            let mut api = s.subscriber.rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(sub_mid, None) else {
                continue;
            };
            // Hot path: the payload is shared (Arc clone), nothing is copied or allocated here.
            let write = RtpWrite::new(pt, seq.into(), timestamp, now, pkt.payload.clone())
                .marker(pkt.header.marker)
                .ext_vals(ext.clone())
                .nackable(kind.is_video());
            let patch = vp8
                .as_ref()
                .and_then(|d| dt.vp8.rewrite(&pkt.payload, d, seq, switched));
            let write = match patch {
                Some(patch) => write.vp8_patch(patch),
                None => write,
            };
            tx.write_rtp(write);
            self.stats.rtp_out += 1;
            self.dirty.push((sub, PcKind::Subscriber));
        }
        self.fanout = fanout;
        if want_keyframe {
            self.request_keyframe(now, key, tkey);
        }
    }

    fn on_channel_open(&mut self, key: ParticipantKey, pc: PcKind, id: ChannelId, label: &str) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let kind = match label {
            "_reliable" => DataKind::Reliable,
            "_lossy" => DataKind::Lossy,
            _ => return,
        };
        debug!(participant = %p.sid, ?pc, label, "data channel open");
        match pc {
            PcKind::Publisher => p.pub_channels.open.insert(id, kind),
            PcKind::Subscriber => p.sub_channels.open.insert(id, kind),
        };
    }

    fn on_channel_data(&mut self, _now: Instant, key: ParticipantKey, d: ChannelData) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
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
        let Some(r) = self.rooms.get(&room) else { return };
        let members = r.participants.clone();
        for member in members {
            if member == key {
                continue;
            }
            let Some(m) = self.participants.get_mut(&member) else {
                continue;
            };
            if !fwd.to.includes(&m.sid, &m.identity) {
                continue;
            }
            let (channel, pc) = match m.sub_channels.find(fwd.kind) {
                Some(c) => (c, PcKind::Subscriber),
                None => match m.pub_channels.find(fwd.kind) {
                    Some(c) => (c, PcKind::Publisher),
                    None => continue,
                },
            };
            if let Some(mut ch) = m.peer_mut(pc).rtc.channel(channel) {
                match ch.write(true, &fwd.bytes) {
                    Ok(true) => self.stats.data_packets_forwarded += 1,
                    Ok(false) => debug!(participant = %m.sid, "data channel full; packet dropped"),
                    Err(e) => debug!(participant = %m.sid, "data channel write failed: {e}"),
                }
            }
            self.dirty.push((member, pc));
        }
    }

    /// Deliver a server-originated packet (RoomService.SendData) to a room.
    pub fn send_data(
        &mut self,
        now: Instant,
        room: &crate::ids::RoomName,
        bytes: &[u8],
        kind: DataKind,
        to: &data::Destinations,
    ) {
        let Some(r) = self.rooms.get(room) else { return };
        for member in r.participants.clone() {
            let Some(m) = self.participants.get_mut(&member) else {
                continue;
            };
            if !to.includes(&m.sid, &m.identity) {
                continue;
            }
            let Some(channel) = m.sub_channels.find(kind) else {
                continue;
            };
            if let Some(mut ch) = m.subscriber.rtc.channel(channel) {
                let _ = ch.write(true, bytes);
            }
            self.dirty.push((member, PcKind::Subscriber));
        }
        self.drain_dirty(now);
    }

    /// A participant update for everyone in `room` (used after resume and by the API).
    pub fn room_snapshot(&self, room: &crate::ids::RoomName) -> Option<lk::signal_response::Message> {
        let r = self.rooms.get(room)?;
        let infos = r
            .participants
            .iter()
            .filter_map(|k| self.participants.get(k))
            .filter(|p| !p.permission.hidden)
            .map(|p| p.info())
            .collect();
        Some(update(infos))
    }
}

/// The header extensions that describe the media itself and travel to subscribers; the
/// transport ones (mid, rid, transport-cc, abs-send-time) are the subscriber link's own.
fn forwarded_extensions(e: &ExtensionValues) -> ExtensionValues {
    ExtensionValues {
        audio_level: e.audio_level,
        voice_activity: e.voice_activity,
        video_orientation: e.video_orientation,
        abs_capture_time: e.abs_capture_time,
        ..Default::default()
    }
}

/// The subscriber's payload type for a publisher payload type, cached per downtrack.
fn map_pt(
    cache: &mut Vec<(Pt, Option<Pt>)>,
    pub_pt: Pt,
    pub_params: Option<&str0m::format::PayloadParams>,
    sub_rtc: &str0m::Rtc,
) -> Option<Pt> {
    if let Some((_, mapped)) = cache.iter().find(|(p, _)| *p == pub_pt) {
        return *mapped;
    }
    let mapped = pub_params.and_then(|params| {
        let cfg = sub_rtc.codec_config();
        cfg.match_params(*params)
            .or_else(|| cfg.find(|c| c.spec().codec == params.spec().codec && c.spec().codec != Codec::H264))
            .map(|c| c.pt())
    });
    cache.push((pub_pt, mapped));
    mapped
}
