//! A packet forwarded to a subscriber leaves in the turn it arrived in. The shard writes it
//! into the subscriber's connection and then releases what it wrote (`Rtc::release_rtp`); it
//! never waits for the subscriber's next timer. (With congestion control on, str0m's pacer
//! decides when packets leave, and the shard gives the connection a full timeout tick.)
//! Deterministic: shards and str0m clients in memory, the clock standing still while the
//! packets cross.

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
