//! A room spread over several places (worker shards) behaves as one: participants see each
//! other, media and data cross, mute, unpublish and leave propagate, and each track crosses
//! each link once however many receivers are on the far side. Deterministic: shards and
//! str0m clients in memory on a virtual clock, relays delivered as worker threads do.

use std::time::{Duration, Instant};

use prost::Message;
use pylon_bench::sim::{vp8_packet, Net};
use pylon_core::command::SignalCommand;
use pylon_core::ids::TrackSid;
use pylon_testkit::vp8;
use str0m::media::{MediaKind, Mid};

/// Publish VP8 from `c` until every client in `watchers` received media (or give up).
fn stream_until_received(net: &mut Net, c: usize, mid: Mid, watchers: &[usize], packets: u64) -> u64 {
    let mut sent = 0;
    for i in 0..packets {
        net.write_rtp(c, mid, 1000 + i, (i as u32) * 3000, vp8_packet(i));
        sent += 1;
        net.run_for(Duration::from_millis(10));
        if i > 50
            && watchers
                .iter()
                .all(|w| net.clients[*w].subscriber.rtp_received > 0)
        {
            break;
        }
    }
    sent
}

fn setup(shards: usize) -> Net {
    pylon_testkit::init_test_logging();
    Net::new(shards, Instant::now())
}

#[test]
fn participants_on_two_places_see_each_other_and_media_crosses_once_per_link() {
    let mut net = setup(2);
    let alice = net.join(0, "r", "alice");
    let bob = net.join(1, "r", "bob");
    let carol = net.join(1, "r", "carol");
    net.run_for(Duration::from_millis(200));
    let mid = net.publish(alice, MediaKind::Video, "cam");
    net.run_for(Duration::from_secs(2));
    for w in [bob, carol] {
        let known = net.clients[w].known_participants();
        let a = known.get("alice").expect("alice is visible on the other place");
        assert_eq!(a.tracks.len(), 1, "alice's track is announced across places");
    }
    assert!(net.clients[alice].known_participants().contains_key("bob"));

    stream_until_received(&mut net, alice, mid, &[bob, carol], 400);
    // Steady state: count what crosses the link for a known number of packets.
    let before_relayed = net.relayed_rtp.get(&(0, 1)).copied().unwrap_or(0);
    let before: Vec<u64> = [bob, carol]
        .iter()
        .map(|w| net.clients[*w].subscriber.rtp_received)
        .collect();
    let n = 100;
    for i in 0..n {
        let payload = vp8::delta_start(&[0x11u8; 200]);
        net.write_rtp(alice, mid, 5000 + i, (i as u32) * 3000, payload);
        net.run_for(Duration::from_millis(4));
    }
    net.run_for(Duration::from_millis(100));
    let relayed = net.relayed_rtp.get(&(0, 1)).copied().unwrap_or(0) - before_relayed;
    assert_eq!(
        relayed, n,
        "each packet crosses the link once for two receivers there"
    );
    for (w, b) in [bob, carol].iter().zip(before) {
        let got = net.clients[*w].subscriber.rtp_received - b;
        assert!(got >= n * 9 / 10, "receiver {w} got {got} of {n}");
    }
    assert_eq!(
        net.relayed_rtp.get(&(1, 0)).copied().unwrap_or(0),
        0,
        "nothing flows back"
    );
}

#[test]
fn data_packets_reach_other_places_but_not_the_sender() {
    let mut net = setup(2);
    let alice = net.join(0, "r", "alice");
    let bob = net.join(1, "r", "bob");
    let _mid = net.publish(alice, MediaKind::Audio, "mic");
    net.run_for(Duration::from_secs(2));
    let packet = pylon_testkit::user_packet(b"hello across", &[]).encode_to_vec();
    assert!(net.send_data(alice, &packet), "alice's data channel is open");
    net.run_for(Duration::from_millis(200));
    let got: Vec<_> = net.clients[bob].subscriber.data_received.clone();
    assert_eq!(got.len(), 1, "bob got alice's packet once");
    assert!(net.clients[alice].subscriber.data_received.is_empty());
}

#[test]
fn mute_unpublish_and_leave_propagate_across_places() {
    let mut net = setup(2);
    let alice = net.join(0, "r", "alice");
    let bob = net.join(1, "r", "bob");
    let mid = net.publish(alice, MediaKind::Video, "cam");
    net.run_for(Duration::from_secs(2));
    stream_until_received(&mut net, alice, mid, &[bob], 400);
    let track = net.clients[bob].known_participants()["alice"].tracks[0]
        .sid
        .clone();

    net.command(
        alice,
        SignalCommand::Mute {
            track: TrackSid::new(track.clone()),
            muted: true,
        },
    );
    net.run_for(Duration::from_millis(100));
    assert!(
        net.clients[bob].known_participants()["alice"].tracks[0].muted,
        "mute crossed"
    );

    net.unpublish(alice, mid);
    net.run_for(Duration::from_millis(300));
    assert!(
        net.clients[bob].known_participants()["alice"].tracks.is_empty(),
        "unpublish crossed"
    );
    let before = net.relayed_rtp.get(&(0, 1)).copied().unwrap_or(0);
    net.run_for(Duration::from_millis(300));
    assert_eq!(
        net.relayed_rtp.get(&(0, 1)).copied().unwrap_or(0),
        before,
        "nothing relayed after unpublish"
    );

    net.command(alice, SignalCommand::Leave);
    net.run_for(Duration::from_millis(100));
    assert!(
        !net.clients[bob].known_participants().contains_key("alice"),
        "leave crossed"
    );
}

#[test]
fn publishers_on_both_places_reach_everyone() {
    let mut net = setup(2);
    let alice = net.join(0, "r", "alice");
    let bob = net.join(1, "r", "bob");
    let dave = net.join(0, "r", "dave");
    let a = net.publish(alice, MediaKind::Video, "cam");
    let b = net.publish(bob, MediaKind::Video, "cam");
    net.run_for(Duration::from_secs(2));
    for i in 0..300u64 {
        for (c, mid) in [(alice, a), (bob, b)] {
            net.write_rtp(c, mid, 1000 + i, (i as u32) * 3000, vp8_packet(i));
        }
        net.run_for(Duration::from_millis(10));
    }
    // dave (place 0) receives alice (local) and bob (relayed): two tracks' worth.
    let mids = net.clients[dave].subscriber.media.len();
    assert_eq!(mids, 2, "dave subscribed to both publishers");
    assert!(
        net.clients[dave].subscriber.rtp_received > 300,
        "{}",
        net.clients[dave].subscriber.rtp_received
    );
    assert!(
        net.clients[alice].subscriber.rtp_received > 100,
        "alice receives bob across places"
    );
    assert!(
        net.clients[bob].subscriber.rtp_received > 100,
        "bob receives alice across places"
    );
}

#[test]
fn a_join_on_a_new_place_lists_everyone_already_in_the_room() {
    use livekit_protocol::signal_response::Message as Resp;
    let mut net = setup(2);
    let _alice = net.join(0, "r", "alice");
    let _carol = net.join(0, "r", "carol");
    net.run_for(Duration::from_millis(100));
    // Bob's instance on place 1 is new: its join response waits for place 0's snapshot.
    let bob = net.join(1, "r", "bob");
    net.run_for(Duration::from_millis(20));
    let Some(Resp::Join(join)) = net.clients[bob].signals.first() else {
        panic!(
            "the join response comes first: {:?}",
            net.clients[bob]
                .signals
                .iter()
                .map(std::mem::discriminant)
                .collect::<Vec<_>>()
        )
    };
    let mut others: Vec<_> = join
        .other_participants
        .iter()
        .map(|p| p.identity.as_str())
        .collect();
    others.sort();
    assert_eq!(others, ["alice", "carol"]);
}
