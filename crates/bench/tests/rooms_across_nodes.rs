//! The same relay seam across two tiers: two nodes, the first with two workers. Node A's
//! anchor (its first worker holding the room) passes what its other worker publishes to node
//! B, and what node B sends to its other worker; nothing goes sideways within a tier, so
//! nothing loops, and each track crosses each link once.

use std::time::{Duration, Instant};

use prost::Message;
use pylon_bench::sim::{vp8_packet, Net};
use pylon_core::command::SignalCommand;
use str0m::media::{MediaKind, Mid};

const A0: usize = 0; // node A, worker 0: the room's home and node A's anchor
const A1: usize = 1; // node A, worker 1
const B0: usize = 2; // node B, its anchor

fn stream(net: &mut Net, c: usize, mid: Mid, from: u64, n: u64) {
    for i in from..from + n {
        net.write_rtp(c, mid, 1000 + i, (i as u32) * 3000, vp8_packet(i));
        net.run_for(Duration::from_millis(10));
    }
}

fn relayed(net: &Net, from: usize, to: usize) -> u64 {
    net.relayed_rtp.get(&(from, to)).copied().unwrap_or(0)
}

#[test]
fn a_room_across_two_nodes_and_two_workers_is_one_room() {
    pylon_testkit::init_test_logging();
    let mut net = Net::with_nodes(&[2, 1], Instant::now());
    let carol = net.join(A0, "r", "carol");
    let alice = net.join(A1, "r", "alice");
    let bob = net.join(B0, "r", "bob");
    let dave = net.join(B0, "r", "dave");
    net.run_for(Duration::from_millis(300));
    let cam = net.publish(alice, MediaKind::Video, "cam");
    net.run_for(Duration::from_secs(2));

    // Everyone sees everyone, whatever the tier between them.
    for (who, c) in [("alice", alice), ("bob", bob), ("carol", carol), ("dave", dave)] {
        let mut known: Vec<String> = net.clients[c]
            .known_participants()
            .into_keys()
            .filter(|k| k != who)
            .collect();
        known.sort();
        let mut want: Vec<&str> = ["alice", "bob", "carol", "dave"]
            .into_iter()
            .filter(|n| *n != who)
            .collect();
        want.sort();
        assert_eq!(known, want, "{who} sees the room");
    }
    assert_eq!(
        net.clients[bob].known_participants()["alice"].tracks.len(),
        1,
        "alice's track reached node B"
    );

    // alice's video reaches node B through node A's anchor: once per link.
    stream(&mut net, alice, cam, 0, 300);
    for c in [bob, dave, carol] {
        assert!(
            net.clients[c].subscriber.rtp_received > 100,
            "client {c} receives alice"
        );
    }
    let before = (relayed(&net, A1, A0), relayed(&net, A0, B0));
    let n = 100;
    stream(&mut net, alice, cam, 300, n);
    net.run_for(Duration::from_millis(100));
    assert_eq!(
        relayed(&net, A1, A0) - before.0,
        n,
        "worker link: each packet once"
    );
    assert_eq!(
        relayed(&net, A0, B0) - before.1,
        n,
        "node link: each packet once for two receivers"
    );
    assert_eq!(
        relayed(&net, B0, A0) + relayed(&net, A0, A1),
        0,
        "nothing comes back"
    );

    // The other way: bob publishes on node B, alice (node A's other worker) receives.
    let bob_cam = net.publish(bob, MediaKind::Video, "cam");
    net.run_for(Duration::from_secs(1));
    let got = net.clients[alice].subscriber.rtp_received;
    stream(&mut net, bob, bob_cam, 0, 300);
    assert!(
        net.clients[alice].subscriber.rtp_received > got + 100,
        "alice receives bob across both tiers"
    );
    assert_eq!(
        relayed(&net, A1, A0) - before.0 - n,
        0,
        "alice's worker relays nothing of bob's back"
    );

    // A data packet from node B reaches both workers of node A, once each.
    let packet = pylon_testkit::user_packet(b"from node B", &[]).encode_to_vec();
    assert!(net.send_data(bob, &packet));
    net.run_for(Duration::from_millis(200));
    for c in [alice, carol, dave] {
        let n = net.clients[c].subscriber.data_received.len();
        assert_eq!(n, 1, "client {c} got bob's packet once");
    }

    // alice leaves: node B hears it through the anchor.
    net.command(alice, SignalCommand::Leave);
    net.run_for(Duration::from_millis(200));
    assert!(!net.clients[bob].known_participants().contains_key("alice"));
    assert!(!net.clients[carol].known_participants().contains_key("alice"));
}
