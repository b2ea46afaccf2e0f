//! A packet forwarded to a subscriber leaves in the turn it arrived in. The shard writes it
//! into the subscriber's connection and then releases what it wrote (`Rtc::release_rtp`); it
//! never waits for the subscriber's next timer. (With congestion control on, str0m's pacer
//! decides when packets leave, and the shard gives the connection a full timeout tick.)
//! Deterministic: shards and str0m clients in memory, the clock standing still while the
//! packets cross. Releasing moves none of the connection's other deadlines, save one: a
//! stream's first packet schedules its sender reports, which must then go out on time, with
//! congestion control off or on.

use std::time::{Duration, Instant};

use pylon_bench::sim::Net;
use str0m::media::MediaKind;
use str0m::Input;

fn forwarded_in_the_same_turn(mut net: Net, kind: MediaKind) {
    pylon_testkit::init_test_logging();
    let alice = net.join(0, "r", "alice");
    let bob = net.join(0, "r", "bob");
    net.run_for(Duration::from_millis(200));
    let mid = net.publish(alice, kind, "t");
    net.run_for(Duration::from_secs(1));

    let mut seq = 1u64;
    let payload = |seq: u64| match kind {
        MediaKind::Audio => vec![0x42; 100],
        MediaKind::Video => pylon_bench::sim::vp8_packet(seq),
    };
    // Until bob receives (subscription negotiated, keyframe through), with timers running.
    while net.clients[bob].subscriber.rtp_received == 0 {
        assert!(seq < 500, "bob never received the track");
        net.write_rtp(alice, mid, seq, seq as u32 * 960, payload(seq));
        seq += 1;
        net.run_for(Duration::from_millis(20));
    }
    net.run_for(Duration::from_millis(200));

    // Now the clock stands still: alice sends 20 packets, the shard takes them and is only
    // polled for output (no `Shard::handle_timeout`), and bob must have all 20.
    let before = net.clients[bob].subscriber.rtp_received;
    for _ in 0..20 {
        net.write_rtp(alice, mid, seq, seq as u32 * 960, payload(seq));
        seq += 1;
    }
    let now = net.now;
    let publisher = &mut net.clients[alice].publisher;
    publisher.rtc.handle_input(Input::Timeout(now)).expect("timeout");
    Net::poll_peer(publisher, &mut net.to_shards);
    net.settle();
    assert_eq!(
        net.clients[bob].subscriber.rtp_received - before,
        20,
        "every packet alice sent reaches bob without a timer firing on the server"
    );
}

#[test]
fn audio_leaves_at_once() {
    forwarded_in_the_same_turn(Net::new(1, Instant::now()), MediaKind::Audio);
}

#[test]
fn video_leaves_at_once() {
    forwarded_in_the_same_turn(Net::new(1, Instant::now()), MediaKind::Video);
}

/// The server's RTCP sender reports for a forwarded video stream reach the subscriber once a
/// second (str0m's interval for video), the first within a second of the stream's start:
/// lip sync and the SDKs' receive stats depend on them.
#[test]
fn sender_reports_follow_a_forwarded_stream() {
    sender_reports_follow(Net::new(1, Instant::now()));
}

/// The same with congestion control on: the pacer then asks for a timeout after every packet
/// it releases, and str0m does only the send side's part of those at which nothing else is
/// due (vendor patch 0009); the reports must still go out when they are due.
#[test]
fn sender_reports_follow_a_paced_stream() {
    sender_reports_follow(Net::with_congestion_control(1, Instant::now()));
}

fn sender_reports_follow(mut net: Net) {
    pylon_testkit::init_test_logging();
    let alice = net.join(0, "r", "alice");
    let bob = net.join(0, "r", "bob");
    net.run_for(Duration::from_millis(200));
    let mid = net.publish(alice, MediaKind::Video, "cam");
    net.run_for(Duration::from_secs(1));
    let mut first = None;
    for seq in 1..=200u64 {
        net.write_rtp(
            alice,
            mid,
            seq,
            seq as u32 * 3000,
            pylon_bench::sim::vp8_packet(seq),
        );
        net.run_for(Duration::from_millis(33));
        if first.is_none() && net.clients[bob].subscriber.rtp_received > 0 {
            first = Some(net.now);
        }
    }
    let first = first.expect("bob receives the stream");
    let reports: Vec<_> = net.clients[bob]
        .subscriber
        .sender_reports
        .iter()
        .filter(|&&at| at >= first)
        .collect();
    let window = net.now - first;
    assert!(
        reports.len() as u64 + 1 >= window.as_secs(),
        "{} sender reports in {window:?} of media",
        reports.len()
    );
    let to_first = *reports[0] - first;
    assert!(
        to_first <= Duration::from_millis(1100),
        "the first sender report came {to_first:?} after the stream started"
    );
}
