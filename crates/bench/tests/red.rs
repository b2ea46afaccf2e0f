//! Redundant audio (RFC 2198 RED): a publisher's RED packets reach receivers that negotiated
//! RED byte for byte, and receivers that did not as plain Opus (the primary block), on the
//! node that hosts the publisher and across a node link alike. Deterministic: shards and str0m
//! clients in memory.

use std::time::{Duration, Instant};

use pylon_bench::sim::Net;
use str0m::media::{MediaKind, Mid};

/// A RED payload: one redundant block (the previous frame, 960 ticks back), then `primary`.
fn red_payload(block_pt: u8, previous: &[u8], primary: &[u8]) -> Vec<u8> {
    let len = previous.len() as u16;
    let offset: u16 = 960;
    let mut out = vec![
        0x80 | block_pt,
        (offset >> 6) as u8,
        ((offset & 0x3f) << 2) as u8 | (len >> 8) as u8,
        len as u8,
        block_pt,
    ];
    out.extend_from_slice(previous);
    out.extend_from_slice(primary);
    out
}

/// alice (RED) publishes a microphone; bob (RED) and carol (plain Opus) subscribe, on
/// `shards` (alice, bob, carol).
fn room(mut net: Net, shards: [usize; 3]) -> (Net, usize, usize, usize, Mid) {
    pylon_testkit::init_test_logging();
    let alice = net.join(shards[0], "r", "alice");
    net.enable_red(alice);
    let bob = net.join(shards[1], "r", "bob");
    net.enable_red(bob);
    let carol = net.join(shards[2], "r", "carol");
    net.run_for(Duration::from_millis(200));
    let mic = net.publish(alice, MediaKind::Audio, "mic");
    net.run_for(Duration::from_secs(1));
    (net, alice, bob, carol, mic)
}

fn check(mut net: Net, alice: usize, bob: usize, carol: usize, mic: Mid) {
    let (opus, red) = net.opus_pts(alice, true);
    let red = red.expect("alice's connection negotiated RED");
    let (bob_opus, bob_red) = net.opus_pts(bob, false);
    let bob_red = bob_red.expect("bob's connection negotiated RED");
    let (carol_opus, _) = net.opus_pts(carol, false);

    let mut last = None;
    for seq in 1..=50u64 {
        let primary = vec![seq as u8; 40 + seq as usize];
        let packet = red_payload(*opus, &[seq as u8 - 1; 37], &primary);
        net.write_rtp_as(alice, mic, red, seq, seq as u32 * 960, packet.clone());
        net.run_for(Duration::from_millis(20));
        last = Some((packet, primary));
    }
    let (packet, primary) = last.expect("packets sent");
    assert_eq!(
        net.clients[bob].subscriber.last_rtp,
        Some((bob_red, packet)),
        "bob negotiated RED: the packet as sent"
    );
    assert_eq!(
        net.clients[carol].subscriber.last_rtp,
        Some((carol_opus, primary)),
        "carol did not: its primary block as Opus"
    );

    // Plain Opus from the same publisher reaches both as Opus.
    net.write_rtp_as(alice, mic, opus, 51, 51 * 960, b"plain".to_vec());
    net.run_for(Duration::from_millis(40));
    assert_eq!(
        net.clients[bob].subscriber.last_rtp,
        Some((bob_opus, b"plain".to_vec()))
    );
    assert_eq!(
        net.clients[carol].subscriber.last_rtp,
        Some((carol_opus, b"plain".to_vec()))
    );

    // A RED packet whose block lengths lie is not passed on to carol as Opus; bob still gets
    // it as sent (it is his decoder's to judge).
    let lying = vec![0x80 | *opus, 0, 0x03, 0xff, *opus, 1, 2, 3];
    net.write_rtp_as(alice, mic, red, 52, 52 * 960, lying.clone());
    net.run_for(Duration::from_millis(40));
    assert_eq!(net.clients[bob].subscriber.last_rtp, Some((bob_red, lying)));
    assert_eq!(
        net.clients[carol].subscriber.last_rtp,
        Some((carol_opus, b"plain".to_vec()))
    );
}

#[test]
fn red_reaches_red_receivers_as_sent_and_the_others_as_opus() {
    let (net, alice, bob, carol, mic) = room(Net::new(1, Instant::now()), [0, 0, 0]);
    check(net, alice, bob, carol, mic);
}

#[test]
fn red_crosses_a_node_link_and_is_converted_on_the_far_side() {
    let (net, alice, bob, carol, mic) = room(Net::with_nodes(&[1, 1], Instant::now()), [0, 1, 1]);
    check(net, alice, bob, carol, mic);
}
