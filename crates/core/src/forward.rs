//! Media forwarding in two steps: **identify** a packet (which track, which layer, is it a
//! keyframe) where it enters the room — a publisher's connection here, or a relay from the
//! place that hosts the publisher — then **fan it out** to the track's sinks: local receivers
//! (each with its own forwarder) and the places that relay it onward (once per place, only
//! the layers wanted there, never back over the tier it came from).
//!
//! Hot path: nothing here allocates per packet. The payload is an `Arc` shared by every
//! receiver and every relay; rewrites are patches str0m applies while serialising.

use std::time::Instant;

use str0m::format::{Codec, PayloadParams};
use str0m::media::{Mid, Pt};
use str0m::rtp::{RtpPacket, RtpWrite, Ssrc, Vp8Descriptor};
use tracing::{debug, info};

use crate::forwarder::{layer_for_rid, Decision, TOP_LAYER};
use crate::ids::{ParticipantKey, PlaceId, RelayTrackId, Tier, TrackKey};
use crate::keyframe::{is_keyframe_start, VideoCodec};
use crate::peer::PeerRef;
use crate::relay::{MediaExtensions, MediaPacket, RelayMessage, RelayRtp};
use crate::shard::{kind_index, Shard};
use crate::svc::vp9_layers;
use crate::temporal::vp8_temporal;
use crate::track::{Origin, Sink, SubscriberPt};

impl Shard {
    /// Identify an RTP packet from a hosted publisher and fan it out.
    pub(crate) fn on_publisher_rtp(&mut self, now: Instant, key: ParticipantKey, pkt: RtpPacket) {
        self.stats.rtp_in += 1;
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let rtc = &mut p.publisher.rtc;
        let Some((mid, rid)) = rtc
            .direct_api()
            .stream_rx(&pkt.header.ssrc)
            .map(|s| (s.mid(), s.rid()))
        else {
            return;
        };
        // A RED payload type (RFC 2198) names its primary codec's parameters.
        let pt = pkt.header.payload_type;
        let params = rtc
            .codec_config()
            .find(|c| c.pt() == pt || c.red() == Some(pt))
            .copied();
        let red = params.is_some_and(|c| c.red() == Some(pt));
        let Some(tkey) = self.track_by_mid(key, mid) else {
            return;
        };
        let Some(t) = self.tracks.get_mut(&tkey) else {
            return;
        };
        let layer = layer_for_rid(rid.as_deref());
        let codec = t.carried_codec(params.as_ref());
        let Origin::Local { layer_seen, rids, .. } = &mut t.origin else {
            return;
        };
        // Padding-only packets (bandwidth probes) take sequence numbers but carry no media:
        // they must neither make a simulcast layer look alive nor go to subscribers, whose own
        // sender pads as needed.
        let lost = t.loss[layer as usize].record(*pkt.seq_no);
        self.stats.lost_in += lost;
        t.upstream[0] += 1;
        t.upstream[1] += lost;
        if pkt.payload.is_empty() {
            return;
        }
        self.stats.media_in[kind_index(t.kind)].add(pkt.payload.len());
        if let Some(level) = pkt.header.ext_vals.audio_level {
            t.speech.observe(level);
        }
        if layer_seen.iter().all(Option::is_none) {
            let carried = params.map(|c| c.spec().codec);
            info!(track = %t.sid, codec = ?carried, red, "first media of a published track");
            if t.kind.is_video() && codec != t.codec {
                info!(track = %t.sid, announced = %t.info.mime_type, codec = ?carried, "published track carries another codec than it was announced with; forwarded as what it carries");
            }
        }
        layer_seen[layer as usize] = Some(now);
        rids[layer as usize] = rid;
        let media = MediaPacket {
            layer,
            best: t.best_layer(now),
            seq: *pkt.seq_no,
            timestamp: pkt.header.timestamp,
            marker: pkt.header.marker,
            keyframe: t.kind.is_audio() || is_keyframe_start(codec, &pkt.payload),
            params,
            red,
            ext: MediaExtensions::from_received(&pkt.header.ext_vals),
            payload: pkt.payload,
        };
        self.fan_out(now, tkey, &media, None);
    }

    /// A packet of a track relayed here from the place that hosts its publisher.
    pub(crate) fn on_relay_rtp(&mut self, now: Instant, from: PlaceId, r: RelayRtp) {
        let Some(&tkey) = self.relayed.get(&(from, r.track)) else {
            return;
        };
        if let Some(t) = self.tracks.get_mut(&tkey) {
            if let Origin::Relayed { best, .. } = &mut t.origin {
                *best = r.packet.best;
            }
            if let Some(level) = r.packet.ext.audio_level {
                t.speech.observe(level);
            }
        }
        self.fan_out(now, tkey, &r.packet, Some(from.tier));
    }

    /// Send one packet to every sink of the track. `arrived_over` is the tier of the link it
    /// came in on (`None`: from a publisher here). The last packet of an SVC layer frame
    /// without a marker waits for the next packet, which tells whether it ended its picture
    /// (`svc::PictureEnds`).
    fn fan_out(&mut self, now: Instant, tkey: TrackKey, m: &MediaPacket, arrived_over: Option<Tier>) {
        let (released, withheld) = match self.tracks.get_mut(&tkey) {
            Some(t) if t.svc && t.carried_codec(m.params.as_ref()) == VideoCodec::Vp9 => {
                t.picture_ends.arrive(m, vp9_layers(&m.payload), now)
            }
            Some(_) => (None, false),
            None => return,
        };
        if let Some(r) = released {
            self.fan_out_packet(now, tkey, &r.packet, arrived_over, r.next_layer);
        }
        if !withheld {
            self.fan_out_packet(now, tkey, m, arrived_over, 0);
        }
    }

    /// Release the SVC packets that waited [`crate::svc::HOLD_LIMIT`] for a next packet that
    /// did not come (a stream that stopped), as the ends of their pictures.
    pub(crate) fn expire_picture_ends(&mut self, now: Instant) {
        let mut expired = std::mem::take(&mut self.fanout_tracks);
        expired.clear();
        expired.extend(
            self.tracks
                .iter_mut()
                .filter_map(|(k, t)| Some((*k, t.picture_ends.expire(now)?))),
        );
        for (tkey, packet) in expired.drain(..) {
            let over = self.tracks.get(&tkey).and_then(|t| t.arrival_tier());
            self.fan_out_packet(now, tkey, &packet, over, 0);
        }
        self.fanout_tracks = expired;
    }

    /// [`Self::fan_out`] for one packet. `next_layer`: the spatial layer that follows this one
    /// in its picture, when known (a receiver forwarded the layers below it ends its picture
    /// here); 0 otherwise.
    fn fan_out_packet(
        &mut self,
        now: Instant,
        tkey: TrackKey,
        m: &MediaPacket,
        arrived_over: Option<Tier>,
        next_layer: crate::forwarder::Layer,
    ) {
        let Some(t) = self.tracks.get_mut(&tkey) else {
            return;
        };
        let kind = t.kind;
        let codec = t.carried_codec(m.params.as_ref());
        // Parsed once per packet; each receiver's rewrite is a patch str0m applies on send.
        let (vp8, temporal, vp9) = match codec {
            VideoCodec::Vp8 => (
                Vp8Descriptor::parse(&m.payload).ok(),
                vp8_temporal(&m.payload),
                None,
            ),
            VideoCodec::Vp9 => {
                let l = vp9_layers(&m.payload);
                (None, l.map(|l| l.temporal), l)
            }
            _ => (None, None, None),
        };
        // One stream carrying spatial layers: each subscriber gets the layers up to its own
        // (`svc.rs`) rather than a simulcast stream of its own.
        t.svc |= vp9.is_some_and(|l| l.sid > 0);
        let svc = vp9.filter(|_| t.svc);
        let (tid, frame_start) = temporal.map_or((0, false), |t| (t.tid, t.frame_start));
        t.rates.add(m.layer, tid, frame_start, m.payload.len());
        if let Some(l) = svc {
            t.spatial.add(l.sid, m.payload.len());
        }
        let relayed = !t.is_local();
        let mut sinks = std::mem::take(&mut self.sinks);
        sinks.clear();
        sinks.extend(t.sinks.iter().filter(|s| {
            let onward = arrived_over.is_none_or(|tier| s.place.tier != tier);
            onward && (s.layers.contains(m.layer) || Some(m.layer) == m.best)
        }));
        let mut fanout = std::mem::take(&mut self.fanout);
        fanout.clear();
        fanout.extend_from_slice(&t.subscribers);
        for sink in &sinks {
            self.relay_rtp(*sink, tkey, m);
        }
        self.sinks = sinks;

        let ext = m.ext.to_values();
        let cc = self.config.congestion_control.enabled;
        // RED for receivers that did not negotiate it: the primary block, cut out once per
        // packet (the one allocation on this path, and only while such a receiver listens).
        let mut primary: Option<Option<std::sync::Arc<[u8]>>> = None;
        let mut want_keyframe = false;
        let mut wishes_changed = false;
        for &sub in &fanout {
            let Some(s) = self.participants.get_mut(&sub) else {
                continue;
            };
            let down = s.down_pc();
            let Some(dt) = s.downtracks.get_mut(&tkey) else {
                continue;
            };
            let Some(sub_mid) = dt.mid else { continue };
            if dt.disabled {
                continue;
            }
            let target = match svc {
                // The stream is the only one: the subscriber's layer is chosen within it.
                Some(_) => dt.target_for(m.best).map(|_| m.layer),
                None => dt.target_for(m.best),
            };
            if kind.is_video() && dt.forwarder.target() != target {
                debug!(subscriber = %s.sid, track = %dt.track_sid, from = ?dt.forwarder.target(), to = ?target, "layer target");
                dt.forwarder.set_target(target);
                wishes_changed = true;
            }
            if let Some(target) = target {
                if svc.is_some() {
                    // The grant stops at a spatial layer, and at a temporal layer within it.
                    let spatial = dt.target_for(Some(TOP_LAYER)).unwrap_or(0);
                    dt.forwarder.set_spatial_target(spatial);
                    dt.forwarder
                        .set_temporal_target(dt.svc_temporal_for(target, spatial));
                } else {
                    dt.forwarder.set_temporal_targets(dt.temporal_targets());
                }
            }
            let decision = match svc {
                Some(l) => dt.forwarder.on_svc_packet(m.layer, m.seq, m.timestamp, l, now),
                None => dt
                    .forwarder
                    .on_packet(m.layer, m.seq, m.timestamp, m.keyframe, temporal, now),
            };
            let (seq, timestamp, switched, end_of_picture) = match decision {
                Decision::Forward {
                    seq,
                    timestamp,
                    switched,
                    end_of_picture,
                } => (
                    seq,
                    timestamp,
                    switched,
                    // The picture goes on with a layer above this receiver's.
                    end_of_picture || dt.forwarder.spatial() < next_layer,
                ),
                Decision::Skip => {
                    if let Some(d) = &vp8 {
                        dt.vp8.skip(&m.payload, d);
                    }
                    want_keyframe |= dt.forwarder.wants_key_picture();
                    continue;
                }
                Decision::Drop => {
                    want_keyframe |= dt.forwarder.wants_keyframe() && Some(m.layer) == dt.forwarder.target();
                    continue;
                }
            };
            if switched {
                // The target above is where the subscriber is going; this is when it got there
                // (the keyframe the switch waited for).
                debug!(subscriber = %s.sid, track = %dt.track_sid, layer = m.layer, "layer switched");
            }
            wishes_changed |= switched;
            // A connection str0m failed on is ended at the next housekeeping; nothing more
            // is written to it.
            if down_peer(&mut s.subscriber, &mut s.publisher).failed {
                continue;
            }
            let settled = !dt.awaiting_answer;
            let Some(sub_pt) = map_pt(
                &mut dt.pt_map,
                m.params.as_ref(),
                &down_peer(&mut s.subscriber, &mut s.publisher).rtc,
                settled,
            ) else {
                continue;
            };
            let (pt, payload) = match (m.red, sub_pt.red) {
                (false, _) => (sub_pt.pt, m.payload.clone()),
                (true, Some(red)) => (red, m.payload.clone()),
                (true, None) => {
                    let cut = primary.get_or_insert_with(|| match crate::red::primary(&m.payload) {
                        Ok(range) => Some(std::sync::Arc::from(&m.payload[range])),
                        Err(e) => {
                            debug!(track = %dt.track_sid, "RED packet not forwarded: {e}");
                            None
                        }
                    });
                    let Some(cut) = cut else { continue };
                    (sub_pt.pt, cut.clone())
                }
            };
            let paced = cc && kind.is_video() && s.downlink.paced();
            let mut api = down_peer(&mut s.subscriber, &mut s.publisher).rtc.direct_api();
            let Some(tx) = send_stream(&mut api, &mut dt.send_ssrc, sub_mid) else {
                continue;
            };
            // With congestion control on, str0m paces what it sends at 1.1x its estimate. The
            // allocator already fits the layers into the estimate, so forwarded media leaves
            // unpaced (LiveKit does not pace either), except video into a narrow downlink,
            // where one frame in a burst can overflow the link's queue (`Downlink::paced`).
            // Audio is never held behind video; probes stay paced.
            if cc {
                tx.set_unpaced(!paced);
            }
            // A paced stream's queue at a switch holds the old layer's frames that the link has
            // not taken yet: when the estimate falls fast (a link narrowed), seconds of the
            // layer it could no longer carry. The switch's keyframe needs none of them, and
            // sent they would keep the narrowed link's queue full for as long. More than
            // `DISCARD_BACKLOG_OVER` of them go, and the numbering closes over them.
            let stale = switched
                && paced
                && tx
                    .queue_info()
                    .is_some_and(|q| s.downlink.backlog_is_stale(q.byte_size()));
            let seq = if stale {
                let (packets, bytes) = tx.discard_unsent();
                if packets > 0 {
                    dt.forwarder.rewind(packets as u64);
                    dt.vp8.rewind(packets as u64);
                    debug!(subscriber = %s.sid, track = %dt.track_sid, packets, bytes, "unsent video of the old layer discarded at a switch");
                }
                seq.wrapping_sub(packets as u64)
            } else {
                seq
            };
            // Hot path: the payload is shared (Arc clone), nothing is copied or allocated here.
            let write = RtpWrite::new(pt, seq.into(), timestamp, now, payload)
                .marker(m.marker || end_of_picture)
                .ext_vals(ext.clone())
                .nackable(kind.is_video());
            let patch = vp8
                .as_ref()
                .and_then(|d| dt.vp8.rewrite(&m.payload, d, seq, switched));
            let write = match patch {
                Some(patch) => write.vp8_patch(patch),
                None => write,
            };
            tx.write_rtp(write);
            self.stats.rtp_out += 1;
            self.stats.media_out[kind_index(kind)].add(m.payload.len());
            self.written.push(PeerRef { key: sub, pc: down });
        }
        self.fanout = fanout;
        if want_keyframe {
            self.request_keyframe(now, tkey);
        }
        if relayed && wishes_changed {
            self.update_wish(tkey);
        }
    }

    fn relay_rtp(&mut self, sink: Sink, tkey: TrackKey, m: &MediaPacket) {
        // The payload is an `Arc`: cloning the packet copies no media.
        let r = RelayRtp {
            track: RelayTrackId::from(tkey),
            packet: m.clone(),
        };
        self.relay(sink.place, RelayMessage::Rtp(r));
    }
}

/// The subscriber's payload types for the publisher's codec, cached per receiver by the
/// publisher's payload type once the client's answer `settled` them (str0m drops RED from
/// the codec configuration when the answer does not keep it).
fn map_pt(
    cache: &mut Vec<(Pt, Option<SubscriberPt>)>,
    params: Option<&PayloadParams>,
    sub_rtc: &str0m::Rtc,
    settled: bool,
) -> Option<SubscriberPt> {
    let params = params?;
    let pub_pt = params.pt();
    if let Some((_, mapped)) = cache.iter().find(|(p, _)| *p == pub_pt) {
        return *mapped;
    }
    let cfg = sub_rtc.codec_config();
    let mapped = cfg
        .match_params(*params)
        .or_else(|| cfg.find(|c| c.spec().codec == params.spec().codec && c.spec().codec != Codec::H264))
        .map(|c| SubscriberPt {
            pt: c.pt(),
            red: c.red(),
        });
    if settled {
        cache.push((pub_pt, mapped));
    }
    mapped
}

/// The subscriber's send stream on section `mid`: by the SSRC the last lookup found (`ssrc`),
/// one hash lookup, while that stream is still the section's; else by mid, which scans every
/// send stream of the connection (3 % of the audio room's server CPU with three tracks, and
/// growing with the tracks a subscriber receives), remembering its SSRC.
fn send_stream<'a>(
    api: &'a mut str0m::change::DirectApi<'_>,
    ssrc: &mut Option<Ssrc>,
    mid: Mid,
) -> Option<&'a mut str0m::rtp::StreamTx> {
    if let Some(known) = *ssrc {
        if api
            .stream_tx(&known)
            .is_some_and(|tx| tx.mid() == mid && tx.rid().is_none())
        {
            return api.stream_tx(&known);
        }
    }
    let tx = api.stream_tx_by_mid(mid, None)?;
    *ssrc = Some(tx.ssrc());
    Some(tx)
}

/// The connection subscribed media leaves on (`Participant::down_pc`), from the participant's
/// fields: `peer_mut` would borrow the whole participant while a downtrack is borrowed.
fn down_peer<'a>(
    subscriber: &'a mut Option<crate::peer::Peer>,
    publisher: &'a mut crate::peer::Peer,
) -> &'a mut crate::peer::Peer {
    subscriber.as_mut().unwrap_or(publisher)
}

#[cfg(test)]
mod tests {
    use str0m::media::MediaKind;
    use str0m::Rtc;

    use super::*;

    /// str0m reads a mid back without its padding on every RTP header that carries one
    /// (`vendor/patches/str0m-0006-id-without-a-loop.patch`): what it reads is what
    /// `str::trim` makes of the stored bytes, whatever they hold.
    #[test]
    fn a_mid_reads_back_as_its_trimmed_bytes() {
        let cases: [&[u8]; 10] = [
            b"",
            b"0",
            b"a0",
            b"video_camera_123",
            b"sixteen_bytes_ok",
            b" lead",
            b"tail\t",
            b"in side",
            b"\t",
            b"\x0b\x0cx\r\n",
        ];
        for bytes in cases {
            let mut stored = [b' '; 16];
            stored[..bytes.len()].copy_from_slice(bytes);
            let mid = Mid::from_array(stored);
            let expected = std::str::from_utf8(&stored).unwrap().trim();
            assert_eq!(&*mid, expected, "{bytes:?}");
        }
        assert_eq!(&*Mid::from("a0"), "a0");
        assert_eq!(&*Mid::from("x".repeat(20).as_str()), "x".repeat(16));
        let accent = Mid::from_array(*b"caf\xc3\xa9           ");
        assert_eq!(&*accent, "caf\u{e9}");
    }

    /// A mid or rid read from an RTP header (str0m's `From<&str>`, once per packet, without
    /// allocating since vendor patch 0008): one byte per character, `_` for anything not ASCII
    /// alphanumeric, cut at the id's length.
    #[test]
    fn a_mid_from_a_header_keeps_one_byte_per_character() {
        assert_eq!(&*Mid::from("0"), "0");
        assert_eq!(&*Mid::from("v-1 x"), "v_1_x");
        assert_eq!(&*Mid::from("caf\u{e9}"), "caf_");
        assert_eq!(&*Mid::from("\u{e9}".repeat(20).as_str()), "_".repeat(16));
        assert_eq!(&*Mid::from("abcdefghijklmnopq"), "abcdefghijklmnop");
        assert_eq!(&*Mid::from(""), "");
        assert_eq!(&*str0m::media::Rid::from("hq"), "hq");
        assert_eq!(&*str0m::media::Rid::from("123456789"), "12345678");
    }

    #[test]
    fn a_send_stream_is_found_by_its_remembered_ssrc_and_by_mid_when_that_is_stale() {
        let mut rtc = Rtc::builder().set_rtp_mode(true).build(Instant::now());
        let (mine, other) = (Mid::from("a0"), Mid::from("a1"));
        let mut api = rtc.direct_api();
        for (mid, ssrc) in [(mine, 1111), (other, 3333)] {
            api.declare_media(mid, MediaKind::Audio);
            api.declare_stream_tx(Ssrc::from(ssrc), None, mid, None);
        }
        let mut found =
            |remembered: &mut Option<Ssrc>| send_stream(&mut api, remembered, mine).map(|tx| tx.ssrc());

        // Found by mid the first time, and remembered.
        let mut remembered = None;
        assert_eq!(found(&mut remembered), Some(Ssrc::from(1111)));
        assert_eq!(remembered, Some(Ssrc::from(1111)));
        assert_eq!(found(&mut remembered), Some(Ssrc::from(1111)));
        // An SSRC no stream has any more (the section was renegotiated): found by mid again.
        remembered = Some(Ssrc::from(2222));
        assert_eq!(found(&mut remembered), Some(Ssrc::from(1111)));
        assert_eq!(remembered, Some(Ssrc::from(1111)));
        // Another section's stream is never taken for this section's.
        remembered = Some(Ssrc::from(3333));
        assert_eq!(found(&mut remembered), Some(Ssrc::from(1111)));
        assert_eq!(remembered, Some(Ssrc::from(1111)));
    }
}
