//! What a connected peer can send, driven by arbitrary bytes. A shard in memory with three
//! participants who completed ICE and DTLS ([`crate::sim`]): A publishes VP8 that B watches,
//! and M — the hostile one, publishing video and audio of its own — sends what an input
//! describes: RTP with valid SRTP authentication and arbitrary payloads, sequence numbers and
//! timestamps (the media path: keyframe detection, the VP8 rewriter, forwarding, loss
//! counting); raw datagrams from its own addresses (SRTP and SRTCP with invalid
//! authentication, DTLS records, STUN, anything); data-track packets on its `_data_track`
//! channel (B subscribes to its data track); data channel messages; and RTCP that
//! authenticates, written with the keys of M's own subscriber connection ([`crate::srtcp`]):
//! any content shaped as a sender/receiver report or feedback packet, and transport-wide
//! congestion control feedback claiming whatever the input says (congestion control is on,
//! so it reaches the bandwidth estimator and the allocator). A keeps publishing between M's
//! moves. [`Arena::assert_unharmed`] then checks what users would notice: A and B still in
//! the room, A's media still reaching B.
//!
//! Used by the seeded test `tests/hostile_connected_peer.rs` (in CI) and the fuzz target
//! `fuzz/fuzz_targets/connected_peer.rs`.

use std::time::{Duration, Instant};

use livekit_protocol as lk;
use lk::signal_request::Message as Req;
use pylon_testkit::vp8;
use str0m::media::{MediaKind, Mid};

use crate::sim::{shard_addr, Net};
use crate::srtcp::{SrtcpWriter, Twcc};

/// The hostile participant's moves, chosen by an op's first byte.
const MOVES: u8 = 9;

pub struct Arena {
    pub net: Net,
    a: usize,
    b: usize,
    m: usize,
    a_video: Mid,
    m_video: Mid,
    m_audio: Mid,
    a_seq: u64,
    m_seq: u64,
    m_ts: u32,
    ops: u64,
    /// Writes SRTCP as M's subscriber connection.
    srtcp: SrtcpWriter,
    /// Whether M's forged TWCC feedback may start anywhere (the fuzz target) or only near
    /// the packets it was sent (so that str0m, failing on the former, does not end M early).
    pub forged_twcc_anywhere: bool,
    /// RTP packets M and A wrote since the room was flowing, and the shard's RTP count then.
    m_written: u64,
    a_written: u64,
    rtp_in_at_start: u64,
}

impl Arena {
    /// The room, negotiated and flowing (B has received A's media).
    pub fn new() -> Self {
        let mut net = Net::with_congestion_control(1, Instant::now());
        let a = net.join(0, "r", "a");
        let b = net.join(0, "r", "b");
        let m = net.join(0, "r", "m");
        net.capture_subscriber_keys(m);
        let a_video = net.publish(a, MediaKind::Video, "a-cam");
        let m_video = net.publish(m, MediaKind::Video, "m-cam");
        // One offer at a time: the second track once the first is negotiated.
        net.run_for(Duration::from_millis(500));
        let m_audio = net.publish(m, MediaKind::Audio, "m-mic");
        net.run_for(Duration::from_secs(1));
        // M publishes a data track (handle 1) and B subscribes to it, so M's data-track
        // packets reach the forwarding path.
        net.signal(
            m,
            Req::PublishDataTrackRequest(lk::PublishDataTrackRequest {
                pub_handle: 1,
                name: "m-data".into(),
                ..Default::default()
            }),
        );
        net.run_for(Duration::from_millis(100));
        let data_sid = net.clients[b].known_participants()["m"]
            .data_tracks
            .first()
            .map(|t| t.sid.clone())
            .expect("B was told of M's data track");
        let update = lk::update_data_subscription::Update {
            track_sid: data_sid,
            subscribe: true,
            options: None,
        };
        net.signal(
            b,
            Req::UpdateDataSubscription(lk::UpdateDataSubscription {
                updates: vec![update],
            }),
        );
        net.run_for(Duration::from_millis(100));
        let mut arena = Arena {
            net,
            a,
            b,
            m,
            a_video,
            m_video,
            m_audio,
            a_seq: 1000,
            m_seq: 1000,
            m_ts: 0,
            ops: 0,
            srtcp: SrtcpWriter::from_captured().expect("M's subscriber connection has its keys"),
            forged_twcc_anywhere: true,
            m_written: 0,
            a_written: 0,
            rtp_in_at_start: 0,
        };
        for _ in 0..400 {
            arena.a_sends();
            if arena.net.clients[b].subscriber.rtp_received > 0 && arena.a_seq > 1060 {
                break;
            }
        }
        arena.a_written = 0;
        arena.rtp_in_at_start = arena.net.shards[0].stats().rtp_in;
        arena
    }

    /// RTP packets M wrote, and how many of them the shard took in (its RTP count, less A's).
    pub fn hostile_rtp(&self) -> (u64, u64) {
        let taken = self.net.shards[0].stats().rtp_in - self.rtp_in_at_start;
        (self.m_written, taken.saturating_sub(self.a_written))
    }

    /// One valid packet from A (a keyframe every 30).
    fn a_sends(&mut self) {
        let i = self.a_seq;
        let body = [0x42u8; 200];
        let payload = if i.is_multiple_of(30) {
            vp8::keyframe_start(320, 180, &body)
        } else {
            vp8::delta_start(&body)
        };
        self.net
            .write_rtp(self.a, self.a_video, i, (i as u32).wrapping_mul(3000), payload);
        self.a_seq += 1;
        self.a_written += 1;
        self.net.run_for(Duration::from_millis(4));
    }

    /// Apply one move: `op[0]` picks it, the rest is its material.
    pub fn apply(&mut self, op: &[u8]) {
        let Some((&kind, rest)) = op.split_first() else {
            return;
        };
        let m = self.m;
        let (publisher, subscriber) = (
            self.net.clients[m].publisher.addr,
            self.net.clients[m].subscriber.addr,
        );
        let server = shard_addr(0);
        match kind % MOVES {
            // RTP that authenticates, on M's video or audio, with a sequence number that
            // moves by what the first byte says (forwards, backwards, far) and any payload.
            0 | 1 => {
                // Mostly forwards with small gaps, sometimes back a little (reordering,
                // duplicates); rarely one packet far off either way, which does not move the
                // stream (str0m rejects most of those itself, and a stream thrown far back
                // would never reach the media path again).
                let b = rest.first().map_or(16, |b| i64::from(*b as i8));
                let seq = match b {
                    -128..=-121 | 121..=127 => self.m_seq.saturating_add_signed(b * 1000).max(1),
                    -4..=0 => {
                        self.m_seq = self.m_seq.saturating_add_signed(b - 1).max(1);
                        self.m_seq
                    }
                    _ => {
                        self.m_seq += 1 + b.rem_euclid(3) as u64;
                        self.m_seq
                    }
                };
                self.m_ts = self
                    .m_ts
                    .wrapping_add(u32::from(rest.get(1).copied().unwrap_or(0)) * 90);
                let mid = if kind % MOVES == 0 {
                    self.m_video
                } else {
                    self.m_audio
                };
                let payload = rest.get(2..).unwrap_or_default().to_vec();
                self.net.write_rtp(m, mid, seq, self.m_ts, payload);
                self.m_written += 1;
            }
            // Anything at all, from M's publisher or subscriber address.
            2 => self.net.to_shards.push_back((publisher, server, rest.to_vec())),
            3 => self.net.to_shards.push_back((subscriber, server, rest.to_vec())),
            // Shaped like RTCP (version 2, a sender/receiver/feedback packet type), so the
            // demultiplexer hands it to SRTCP; its authentication fails.
            4 => {
                let d = rtcp_shaped(rest, 12);
                self.net.to_shards.push_back((subscriber, server, d));
            }
            // A data-track packet: a version-0 header for M's track (handle 1) or another handle,
            // the rest of the header and the payload from the input.
            5 => {
                let mut d = rest.to_vec();
                if d.len() < pylon_core::datatrack::HEADER_LEN {
                    d.resize(pylon_core::datatrack::HEADER_LEN, 0);
                }
                if d[0] & 1 == 0 {
                    d[0] &= 0x1f;
                    d[2..4].copy_from_slice(&1u16.to_be_bytes());
                }
                self.net
                    .send_on_channel(m, pylon_core::data::DATA_TRACK_LABEL, &d);
            }
            // A data channel message.
            6 => {
                self.net.send_data(m, rest);
            }
            // RTCP that authenticates from M's subscriber connection: a header with a report
            // or feedback packet type (SR, RR, SDES, BYE, APP, RTPFB, PSFB), the rest as given.
            7 => {
                let datagram = self.srtcp.protect(&rtcp_shaped(rest, 8));
                self.net.to_shards.push_back((subscriber, server, datagram));
            }
            // Transport-wide congestion control feedback that authenticates, about the packets
            // M was sent (or others): where it starts, how many, when they arrived and which
            // did, all from the input.
            _ => {
                let byte = |i: usize| rest.get(i).copied().unwrap_or(0);
                let word = |i: usize| u16::from_be_bytes([byte(i), byte(i + 1)]);
                let newest = self.net.clients[m].subscriber.last_twcc.unwrap_or(0);
                let pattern = rest.get(8..).filter(|p| !p.is_empty()).unwrap_or(&[0xff]);
                // Anywhere in the 16-bit space, or (the seeded test) near what was sent: a
                // base "before" the first packet makes str0m's TWCC parser overflow in a
                // build with overflow checks, and M is ended (see `forged_feedback.rs`).
                let base = if self.forged_twcc_anywhere {
                    newest.wrapping_add(word(0))
                } else {
                    newest
                        .saturating_sub(u16::from(byte(0)))
                        .wrapping_add(u16::from(byte(8)) % 64)
                };
                let report = Twcc {
                    sender: 1,
                    media: self.net.clients[m].subscriber.last_ssrc.unwrap_or(0),
                    base,
                    // Up to 1,400 packets (a feedback datagram of up to 1.6 kB).
                    count: word(2) % 1401,
                    ref_time_64ms: u32::from(word(4)) << 8 | u32::from(byte(6)),
                    fb_count: byte(7),
                    delta_250us: byte(1),
                };
                let bytes =
                    report.to_bytes(|i| pattern[usize::from(i / 8) % pattern.len()] >> (i % 8) & 1 == 1);
                let datagram = self.srtcp.protect(&bytes);
                self.net.to_shards.push_back((subscriber, server, datagram));
            }
        }
        // Time moves on, so the client's pacer sends what M wrote.
        self.net.run_for(crate::sim::STEP);
        self.ops += 1;
        if self.ops.is_multiple_of(4) {
            self.a_sends();
        }
    }

    /// Split `input` into moves (each a length byte, then that many bytes) and apply them.
    pub fn run(&mut self, input: &[u8]) {
        let mut rest = input;
        while let Some((&len, tail)) = rest.split_first() {
            let n = usize::from(len).min(tail.len());
            self.apply(&tail[..n]);
            rest = &tail[n..];
        }
    }

    /// A and B are still in the room, and A's next packets reach B.
    pub fn assert_unharmed(&mut self) {
        self.net.run_for(Duration::from_millis(200));
        let shard = &self.net.shards[0];
        assert!(shard.participant_count() >= 2, "A and B are still hosted");
        let known = self.net.clients[self.b].known_participants();
        assert!(known.contains_key("a"), "B still sees A");
        // Keyframes first: M's moves may have made B's forwarder wait for one.
        let before = self.net.clients[self.b].subscriber.rtp_received;
        for _ in 0..100 {
            self.a_sends();
        }
        self.net.run_for(Duration::from_millis(200));
        let got = self.net.clients[self.b].subscriber.rtp_received - before;
        assert!(
            got >= 60,
            "B received {got} of A's 100 packets after the hostile moves"
        );
    }
}

/// `bytes`, at least `min_len` long, with an RTCP header's first two bytes: version 2 and a
/// sender/receiver report or feedback packet type (SR, RR, SDES, BYE, APP, RTPFB, PSFB).
fn rtcp_shaped(bytes: &[u8], min_len: usize) -> Vec<u8> {
    let mut d = bytes.to_vec();
    if d.len() < min_len {
        d.resize(min_len, 0);
    }
    d[0] = 0x80 | (d[0] & 0x1f);
    d[1] = 200 + d[1] % 7;
    d
}

impl Default for Arena {
    fn default() -> Self {
        Self::new()
    }
}
