//! Forged RTCP from a connected subscriber, written with that client's own SRTP keys
//! (`pylon_bench::srtcp`), against a shard in memory with congestion control on: A publishes
//! video that B and M watch; M lies in its transport-wide congestion control feedback.
//!
//! What must hold: the lies reach str0m's parser and bandwidth estimator (a forged keyframe
//! request is counted, forged loss pauses M's own video) and change nothing another
//! subscriber gets (B receives every packet A sends and is never paused), whatever M claims
//! and however often.

use std::time::Duration;

use livekit_protocol as lk;
use lk::signal_response::Message as Resp;
use pylon_bench::sim::{vp8_packet, Net};
use pylon_bench::srtcp::{SrtcpWriter, Twcc};
use str0m::media::{MediaKind, Mid};

struct Room {
    net: Net,
    a: usize,
    b: usize,
    m: usize,
    a_video: Mid,
    seq: u64,
    writer: SrtcpWriter,
}

impl Room {
    fn new() -> Room {
        let mut net = Net::with_congestion_control(1, std::time::Instant::now());
        let a = net.join(0, "r", "a");
        let b = net.join(0, "r", "b");
        let m = net.join(0, "r", "m");
        net.capture_subscriber_keys(m);
        let a_video = net.publish(a, MediaKind::Video, "a-cam");
        net.run_for(Duration::from_millis(500));
        let mut room = Room {
            net,
            a,
            b,
            m,
            a_video,
            seq: 1,
            writer: SrtcpWriter::from_captured().unwrap_or_else(|e| panic!("{e}")),
        };
        room.send_for(Duration::from_secs(1));
        assert!(
            room.received(m) > 0 && room.received(b) > 0,
            "A's video reaches B and M"
        );
        room
    }

    /// A sends VP8 (a keyframe every 30 packets) at 250 packets a second for `d`; returns how
    /// many packets it wrote.
    fn send_for(&mut self, d: Duration) -> u64 {
        let packets = d.as_millis() as u64 / 4;
        for _ in 0..packets {
            let i = self.seq;
            self.net.write_rtp(
                self.a,
                self.a_video,
                i,
                (i as u32).wrapping_mul(3000),
                vp8_packet(i),
            );
            self.seq += 1;
            self.net.run_for(Duration::from_millis(4));
        }
        packets
    }

    fn received(&self, c: usize) -> u64 {
        self.net.clients[c].subscriber.rtp_received
    }

    /// M's forged RTCP, protected with its keys, delivered from its subscriber address.
    fn forge(&mut self, rtcp: &[u8]) {
        let datagram = self.writer.protect(rtcp);
        let from = self.net.clients[self.m].subscriber.addr;
        self.net.inject(from, 0, &datagram);
    }

    /// The stream states client `c` was told for A's video, in order.
    fn stream_states(&self, c: usize) -> Vec<lk::StreamState> {
        self.net.clients[c]
            .signals
            .iter()
            .filter_map(|s| match s {
                Resp::StreamStateUpdate(u) => Some(u.stream_states.iter().map(|i| i.state())),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// M's subscriber connection: the SSRC it receives A's video on and the newest
    /// transport-wide sequence number it saw.
    fn m_stream(&self) -> (u32, u16) {
        let peer = &self.net.clients[self.m].subscriber;
        (
            peer.last_ssrc.expect("M received media"),
            peer.last_twcc
                .expect("the server numbers M's packets transport-wide"),
        )
    }
}

#[test]
fn forged_srtcp_is_authenticated_and_reaches_the_server() {
    let mut room = Room::new();
    let (ssrc, _) = room.m_stream();
    let before = room.net.shards[0].stats().plis_in;
    room.forge(&pylon_bench::srtcp::pli(1, ssrc));
    assert_eq!(
        room.net.shards[0].stats().plis_in,
        before + 1,
        "the forged keyframe request was taken as M's"
    );
}

#[test]
fn forged_loss_pauses_only_the_forgers_own_video() {
    let mut room = Room::new();
    let (b, m) = (room.b, room.m);
    // From now on the server hears only M's forged feedback: its genuine RTCP is lost.
    let m_addr = room.net.clients[m].subscriber.addr;
    room.net.rtcp_lost_from.push(m_addr);
    // Without feedback M's estimate stands still: its video goes on.
    room.send_for(Duration::from_secs(2));
    assert!(room.stream_states(m).is_empty(), "silence alone paused nothing");
    let b_before = room.received(b);
    let mut written = 0;
    let (ssrc, mut reported) = room.m_stream();
    let mut fb_count = 0u8;
    for round in 0..50u32 {
        written += room.send_for(Duration::from_millis(100));
        // Every 100 ms: of the packets since the last report, only one in eight arrived,
        // each 20 ms after the one before.
        let (_, newest) = room.m_stream();
        let count = newest.wrapping_sub(reported);
        if count > 0 {
            let report = Twcc {
                sender: 1,
                media: ssrc,
                base: reported.wrapping_add(1),
                count,
                ref_time_64ms: round * 2,
                fb_count,
                delta_250us: 80,
            };
            room.forge(&report.to_bytes(|i| i % 8 == 0));
            fb_count = fb_count.wrapping_add(1);
            reported = newest;
        }
    }
    let m_states = room.stream_states(m);
    assert!(
        m_states.contains(&lk::StreamState::Paused),
        "M's forged loss lowered M's own estimate until its video paused (told: {m_states:?})"
    );
    let b_got = room.received(b) - b_before;
    assert!(
        b_got * 100 >= written * 98,
        "B received {b_got} of A's {written} packets while M forged"
    );
    assert!(
        !room.stream_states(b).contains(&lk::StreamState::Paused),
        "B's video was never paused"
    );
}

#[test]
fn absurd_feedback_at_thousands_a_second_harms_nobody_else() {
    let mut room = Room::new();
    let (b, m) = (room.b, room.m);
    let b_before = room.received(b);
    let (ssrc, newest) = room.m_stream();
    let plis_before = room.net.shards[0].stats().plis_in;
    let mut written = 0;
    for round in 0..400u32 {
        written += room.send_for(Duration::from_millis(4));
        // Six forged reports per 4 ms (1,500 a second), each absurd in its own way.
        let r = round as u16;
        let report = |base: u16, count: u16, ref_time_64ms: u32, fb_count: u8, delta_250us: u8| Twcc {
            sender: 1,
            media: ssrc,
            base,
            count,
            ref_time_64ms,
            fb_count,
            delta_250us,
        };
        // (report, whether it says its packets arrived)
        let absurd = [
            // Thousands of packets, all received at once: an endless link (5 kB of feedback).
            (
                report(newest.wrapping_sub(100), 5000, round, round as u8, 0),
                true,
            ),
            // Packets the server never sent, far ahead, the reference time at its end.
            (
                report(newest.wrapping_add(30_000), 500, 0x00ff_ffff, 0, 255),
                true,
            ),
            // The reference time jumping back and forth, the feedback count repeating.
            (
                report(
                    newest.wrapping_add(r),
                    14,
                    if round % 2 == 0 { 0 } else { 0x00ff_fff0 },
                    7,
                    1,
                ),
                true,
            ),
            // Nothing reported.
            (report(0, 0, round, 1, 0), false),
            // Everything lost.
            (report(newest, 1000, round, 2, 0), false),
        ];
        for (twcc, received) in absurd {
            room.forge(&twcc.to_bytes(|_| received));
        }
        // A report whose count (65,535) its 14 statuses do not cover.
        let mut short = report(newest, 14, round, 3, 4).to_bytes(|_| true);
        short[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        room.forge(&short);
        // And a keyframe request: the server authenticated what M wrote all along.
        room.forge(&pylon_bench::srtcp::pli(1, ssrc));
    }
    assert_eq!(
        room.net.shards[0].stats().plis_in,
        plis_before + 400,
        "every forged PLI was taken"
    );
    // M is still in the room; B got what A sent.
    assert!(room.net.shards[0].participant_count() == 3, "nobody was removed");
    let b_got = room.received(b) - b_before;
    assert!(
        b_got * 100 >= written * 98,
        "B received {b_got} of A's {written} packets while M forged"
    );
    assert!(!room.stream_states(b).contains(&lk::StreamState::Paused));
    assert!(room.received(m) > 0);
}

#[test]
fn a_str0m_panic_on_forged_feedback_ends_only_the_forger() {
    let mut room = Room::new();
    let (a, b, m) = (room.a, room.b, room.m);
    let (ssrc, newest) = room.m_stream();
    // Feedback for packets "before" the first one M was sent (fewer than 32,768 were): str0m
    // extends the base sequence number below zero, to just under 2^64, and overflows adding
    // the count (a panic where overflow is checked, as in tests and fuzzing; a wrap in
    // release builds).
    assert!(newest < 30_000);
    let report = Twcc {
        sender: 1,
        media: ssrc,
        base: 65_500,
        count: 100,
        ref_time_64ms: 1,
        fb_count: 1,
        delta_250us: 4,
    };
    let b_before = room.received(b);
    room.forge(&report.to_bytes(|_| true));
    let written = room.send_for(Duration::from_secs(1));
    let b_got = room.received(b) - b_before;
    assert!(
        b_got * 100 >= written * 98,
        "B received {b_got} of A's {written} packets"
    );
    let known = room.net.clients[b].known_participants();
    assert!(known.contains_key("a"), "B still sees A");
    assert!(!room.net.clients[a].closed && !room.net.clients[b].closed);
    if cfg!(debug_assertions) {
        // This build checks overflow: str0m panicked, and only M was ended, told to
        // reconnect (LiveKit's MEDIA_FAILURE).
        assert_eq!(room.net.shards[0].participant_count(), 2, "M was ended");
        let leave = room.net.clients[m].signals.iter().find_map(|s| match s {
            Resp::Leave(l) => Some(l.clone()),
            _ => None,
        });
        let leave = leave.expect("M was told to leave");
        assert_eq!(leave.reason(), lk::DisconnectReason::MediaFailure);
        assert_eq!(leave.action(), lk::leave_request::Action::Reconnect);
        assert!(!known.contains_key("m"), "B was told M left");
    }
}
