//! Data-track frames across places, as media: two nodes, the first with two workers. A frame
//! of alice's (node A, worker 1) crosses each link once however many subscribers are beyond it,
//! reaches only where someone subscribed, arrives with each subscriber's own handle, and stops
//! crossing once the last subscriber beyond a link unsubscribes.

use std::time::{Duration, Instant};

use livekit_protocol as lk;
use lk::signal_request::Message as Req;
use lk::signal_response::Message as Resp;
use pylon_bench::sim::{vp8_packet, Net};
use pylon_core::admin::{AdminRequest, ParticipantUpdate, PermissionUpdate};
use pylon_core::data::DATA_TRACK_LABEL;
use pylon_core::ids::ParticipantIdentity;
use str0m::media::MediaKind;

const A0: usize = 0; // node A, worker 0: the room's home and node A's anchor
const A1: usize = 1; // node A, worker 1
const B0: usize = 2; // node B, its anchor

fn frames(net: &Net, from: usize, to: usize) -> u64 {
    net.relayed_data_frames.get(&(from, to)).copied().unwrap_or(0)
}

/// A data-track packet (version 0) for publisher handle `handle`, frame `i`.
fn packet(handle: u16, i: u16) -> Vec<u8> {
    let mut p = vec![0u8; 12];
    p[0] = 0b0001_1000; // start and final
    p[2..4].copy_from_slice(&handle.to_be_bytes());
    p[4..6].copy_from_slice(&i.to_be_bytes());
    p.extend_from_slice(format!("frame {i}").as_bytes());
    p
}

fn subscribe(net: &mut Net, c: usize, sid: &str, subscribe: bool) {
    let update = lk::update_data_subscription::Update {
        track_sid: sid.into(),
        subscribe,
        options: None,
    };
    net.signal(
        c,
        Req::UpdateDataSubscription(lk::UpdateDataSubscription {
            updates: vec![update],
        }),
    );
    net.run_for(Duration::from_millis(200));
}

/// `publisher` publishes a data track named `name` under its `handle`; the track's sid, as
/// `seen_by` was told.
fn publish_data_track(net: &mut Net, publisher: usize, handle: u32, name: &str, seen_by: usize) -> String {
    net.signal(
        publisher,
        Req::PublishDataTrackRequest(lk::PublishDataTrackRequest {
            pub_handle: handle,
            name: name.into(),
            ..Default::default()
        }),
    );
    net.run_for(Duration::from_millis(300));
    let who = net.clients[publisher].identity.clone();
    let known = net.clients[seen_by].known_participants();
    let track = known[&who].data_tracks.iter().find(|t| t.name == name);
    track.expect("the data track was announced").sid.clone()
}

/// Two nodes of one worker each: alice (node 0, publishing audio, so her publisher connection
/// and its data channels are up) and bob (node 1).
fn alice_and_bob_on_two_nodes() -> (Net, usize, usize) {
    let mut net = Net::with_nodes(&[1, 1], Instant::now());
    let alice = net.join(0, "r", "alice");
    let bob = net.join(1, "r", "bob");
    net.run_for(Duration::from_millis(300));
    net.publish(alice, MediaKind::Audio, "mic");
    net.run_for(Duration::from_secs(1));
    (net, alice, bob)
}

/// The data-track packets client `c` received, in order.
fn received(net: &Net, c: usize) -> Vec<Vec<u8>> {
    net.clients[c]
        .subscriber
        .data_received
        .iter()
        .filter(|d| d.len() >= 12 && d.starts_with(&[0b0001_1000]))
        .cloned()
        .collect()
}

#[test]
fn data_track_frames_cross_each_link_once_and_only_where_subscribed() {
    pylon_testkit::init_test_logging();
    let mut net = Net::with_nodes(&[2, 1], Instant::now());
    let carol = net.join(A0, "r", "carol");
    let alice = net.join(A1, "r", "alice");
    let bob = net.join(B0, "r", "bob");
    let dave = net.join(B0, "r", "dave");
    net.run_for(Duration::from_millis(300));
    // Publishing negotiates alice's publisher connection, which carries her data channels.
    net.publish(alice, MediaKind::Audio, "mic");
    net.run_for(Duration::from_secs(1));
    // bob, on node B, is told of alice's data track.
    let sid = publish_data_track(&mut net, alice, 7, "telemetry", bob);

    // Nobody subscribed: nothing crosses any link.
    for i in 0..10 {
        assert!(net.send_on_channel(alice, DATA_TRACK_LABEL, &packet(7, i)));
    }
    net.run_for(Duration::from_millis(200));
    assert_eq!(
        frames(&net, A1, A0) + frames(&net, A0, B0),
        0,
        "no subscriber, no frames relayed"
    );

    // bob and dave (node B) subscribe: each frame crosses the worker link and the node link once.
    subscribe(&mut net, bob, &sid, true);
    subscribe(&mut net, dave, &sid, true);
    let n = 20;
    for i in 100..100 + n {
        assert!(net.send_on_channel(alice, DATA_TRACK_LABEL, &packet(7, i)));
        net.run_for(Duration::from_millis(10));
    }
    net.run_for(Duration::from_millis(200));
    assert_eq!(frames(&net, A1, A0), u64::from(n), "worker link: each frame once");
    assert_eq!(
        frames(&net, A0, B0),
        u64::from(n),
        "node link: each frame once for two subscribers"
    );
    assert_eq!(
        frames(&net, B0, A0) + frames(&net, A0, A1),
        0,
        "nothing comes back"
    );
    for c in [bob, dave] {
        let got = received(&net, c);
        assert_eq!(got.len(), usize::from(n), "client {c} got every frame");
        for (k, p) in got.iter().enumerate() {
            assert_eq!(
                &p[12..],
                format!("frame {}", 100 + k).as_bytes(),
                "in order, payload intact"
            );
            assert_eq!(
                u16::from_be_bytes([p[2], p[3]]),
                1,
                "with its own handle (its first subscription)"
            );
        }
    }
    assert!(received(&net, carol).is_empty(), "carol did not subscribe");

    // bob leaves the subscription: frames still cross once (dave); dave too: none cross.
    subscribe(&mut net, bob, &sid, false);
    let before = frames(&net, A0, B0);
    for i in 200..205 {
        net.send_on_channel(alice, DATA_TRACK_LABEL, &packet(7, i));
        net.run_for(Duration::from_millis(10));
    }
    net.run_for(Duration::from_millis(100));
    assert_eq!(
        frames(&net, A0, B0) - before,
        5,
        "one subscriber beyond the link: still once"
    );
    subscribe(&mut net, dave, &sid, false);
    let before = (frames(&net, A1, A0), frames(&net, A0, B0));
    for i in 300..305 {
        net.send_on_channel(alice, DATA_TRACK_LABEL, &packet(7, i));
        net.run_for(Duration::from_millis(10));
    }
    net.run_for(Duration::from_millis(100));
    assert_eq!(
        (frames(&net, A1, A0), frames(&net, A0, B0)),
        before,
        "nobody subscribed beyond: the wish was withdrawn hop by hop"
    );

    // dave subscribes again, alice unpublishes: dave is told its handle is gone.
    subscribe(&mut net, dave, &sid, true);
    net.signal(
        alice,
        Req::UnpublishDataTrackRequest(lk::UnpublishDataTrackRequest { pub_handle: 7 }),
    );
    net.run_for(Duration::from_millis(300));
    assert!(
        net.clients[dave].known_participants()["alice"]
            .data_tracks
            .is_empty(),
        "dave was told the track is gone"
    );
}

/// The handles bob was last told he has, by track sid.
fn handle_map(net: &Net, c: usize) -> Vec<String> {
    let last = net.clients[c].signals.iter().rev().find_map(|s| match s {
        Resp::DataTrackSubscriberHandles(h) => Some(h),
        _ => None,
    });
    let mut sids: Vec<String> = last
        .map(|h| h.sub_handles.values().map(|t| t.track_sid.clone()).collect())
        .unwrap_or_default();
    sids.sort();
    sids
}

fn set_permission(net: &mut Net, c: usize, grants: Vec<lk::TrackPermission>) {
    net.signal(
        c,
        Req::SubscriptionPermission(lk::SubscriptionPermission {
            all_participants: false,
            track_permissions: grants,
        }),
    );
    net.run_for(Duration::from_millis(300));
}

#[test]
fn a_grant_naming_one_data_track_allows_only_it_and_its_revocation_ends_it_across_nodes() {
    pylon_testkit::init_test_logging();
    let (mut net, alice, bob) = alice_and_bob_on_two_nodes();
    let x = publish_data_track(&mut net, alice, 7, "x", bob);
    let y = publish_data_track(&mut net, alice, 8, "y", bob);

    // alice lets bob have x only (a grant naming the data track by its DTR_ sid).
    set_permission(
        &mut net,
        alice,
        vec![lk::TrackPermission {
            participant_identity: "bob".into(),
            track_sids: vec![x.clone()],
            ..Default::default()
        }],
    );
    subscribe(&mut net, bob, &x, true);
    subscribe(&mut net, bob, &y, true);
    assert_eq!(handle_map(&net, bob), vec![x.clone()], "bob holds x, not y");
    for i in 0..5 {
        net.send_on_channel(alice, DATA_TRACK_LABEL, &packet(7, i));
        net.send_on_channel(alice, DATA_TRACK_LABEL, &packet(8, 100 + i));
        net.run_for(Duration::from_millis(10));
    }
    net.run_for(Duration::from_millis(100));
    let got = received(&net, bob);
    assert_eq!(got.len(), 5, "bob got x's frames and none of y's");
    assert_eq!(frames(&net, 0, 1), 5, "y never crossed the link");

    // alice revokes: bob is told, loses the handle, and x stops crossing.
    set_permission(&mut net, alice, Vec::new());
    assert!(
        net.clients[bob].signals.iter().any(|s| matches!(
            s,
            Resp::SubscriptionPermissionUpdate(u) if u.track_sid == x && !u.allowed
        )),
        "bob was told x is no longer allowed"
    );
    assert!(handle_map(&net, bob).is_empty(), "bob holds nothing");
    let before = frames(&net, 0, 1);
    for i in 10..15 {
        net.send_on_channel(alice, DATA_TRACK_LABEL, &packet(7, i));
        net.run_for(Duration::from_millis(10));
    }
    net.run_for(Duration::from_millis(100));
    assert_eq!(frames(&net, 0, 1), before, "nothing crosses once revoked");
}

#[test]
fn losing_can_publish_data_ends_the_data_tracks_everywhere() {
    pylon_testkit::init_test_logging();
    let (mut net, alice, bob) = alice_and_bob_on_two_nodes();
    let x = publish_data_track(&mut net, alice, 7, "x", bob);
    subscribe(&mut net, bob, &x, true);
    assert_eq!(handle_map(&net, bob), vec![x.clone()]);

    // The Room API takes alice's can_publish_data away (as LiveKit: her tracks end, everyone
    // sees them gone, bob's handle goes).
    let update = ParticipantUpdate {
        permission: Some(PermissionUpdate {
            can_publish: true,
            can_subscribe: true,
            can_publish_data: false,
            ..Default::default()
        }),
        ..Default::default()
    };
    let now = net.now;
    net.shards[0]
        .admin(
            now,
            AdminRequest::UpdateParticipant {
                room: Net::room("r"),
                identity: ParticipantIdentity::new("alice"),
                update: Box::new(update),
            },
        )
        .expect("alice is hosted on node 0");
    net.run_for(Duration::from_millis(300));
    assert!(
        net.clients[bob].known_participants()["alice"]
            .data_tracks
            .is_empty(),
        "bob sees alice's data track gone"
    );
    assert!(handle_map(&net, bob).is_empty(), "bob's handle is gone");
    let before = frames(&net, 0, 1);
    net.send_on_channel(alice, DATA_TRACK_LABEL, &packet(7, 1));
    net.run_for(Duration::from_millis(100));
    assert_eq!(frames(&net, 0, 1), before, "her packets go nowhere");
}

#[test]
fn a_publisher_flooding_its_data_track_does_not_starve_anyones_media() {
    pylon_testkit::init_test_logging();
    let mut net = Net::new(1, Instant::now());
    let bob = net.join(0, "r", "bob");
    let alice = net.join(0, "r", "alice");
    net.run_for(Duration::from_millis(300));
    let cam = net.publish(alice, MediaKind::Video, "cam");
    net.run_for(Duration::from_secs(1));
    let sid = publish_data_track(&mut net, alice, 7, "flood", bob);
    subscribe(&mut net, bob, &sid, true);
    for i in 0..100 {
        net.write_rtp(alice, cam, 1000 + i, (i as u32) * 3000, vp8_packet(i));
        net.run_for(Duration::from_millis(10));
    }
    assert!(
        net.clients[bob].subscriber.rtp_received > 50,
        "bob receives alice's video"
    );

    // alice pushes 50 packets of 1,000 bytes every 10 ms (40 Mbit/s) beside her video.
    let video_before = net.clients[bob].subscriber.rtp_received;
    let mut big = packet(7, 0);
    big.resize(1000, 0xab);
    let (mut sent, rounds) = (0u64, 300u64);
    for i in 100..100 + rounds {
        net.write_rtp(alice, cam, 1000 + i, (i as u32) * 3000, vp8_packet(i));
        for _ in 0..50 {
            sent += u64::from(net.send_on_channel(alice, DATA_TRACK_LABEL, &big));
        }
        net.run_for(Duration::from_millis(10));
    }
    net.run_for(Duration::from_millis(200));
    let video = net.clients[bob].subscriber.rtp_received - video_before;
    assert!(
        video >= rounds * 95 / 100,
        "bob got {video} of alice's {rounds} video packets during the flood"
    );
    let data = received(&net, bob).len() as u64;
    assert!(data > 0, "some of the flood reached bob");
    eprintln!("flood: alice wrote {sent} data packets, bob received {data}; video {video}/{rounds}");
}

#[test]
fn hostile_data_track_packets_reach_nobody_and_disturb_nothing() {
    pylon_testkit::init_test_logging();
    let mut net = Net::with_nodes(&[2, 1], Instant::now());
    let mallory = net.join(A0, "r", "mallory");
    let alice = net.join(A1, "r", "alice");
    let bob = net.join(B0, "r", "bob");
    net.run_for(Duration::from_millis(300));
    for c in [alice, mallory] {
        net.publish(c, MediaKind::Audio, "mic");
    }
    net.run_for(Duration::from_secs(1));
    let sid = publish_data_track(&mut net, alice, 7, "telemetry", bob);
    subscribe(&mut net, bob, &sid, true);

    // alice's oversized, truncated, future-version and unknown-handle packets, and mallory's
    // packets for alice's handle (a track mallory never published): none is forwarded.
    let mut oversized = packet(7, 1);
    oversized.resize(pylon_core::limits::MAX_DATA_TRACK_PACKET + 1, 0xee);
    let mut version_1 = packet(7, 2);
    version_1[0] |= 0b0010_0000;
    let hostile = [
        oversized,
        packet(7, 3)[..11].to_vec(),
        version_1,
        packet(99, 4),
        packet(0, 5),
    ];
    for p in &hostile {
        net.send_on_channel(alice, DATA_TRACK_LABEL, p);
        net.run_for(Duration::from_millis(10));
    }
    for i in 0..5 {
        net.send_on_channel(mallory, DATA_TRACK_LABEL, &packet(7, 10 + i));
        net.run_for(Duration::from_millis(10));
    }
    net.run_for(Duration::from_millis(200));
    assert!(received(&net, bob).is_empty(), "bob got a hostile packet");
    assert_eq!(frames(&net, A1, A0), 0, "a hostile packet crossed a link");

    // The largest packet the SDKs send still goes through, and so do alice's next frames.
    let mut largest = packet(7, 20);
    largest.resize(pylon_core::limits::MAX_DATA_TRACK_PACKET, 0x11);
    net.send_on_channel(alice, DATA_TRACK_LABEL, &largest);
    for i in 21..24 {
        net.send_on_channel(alice, DATA_TRACK_LABEL, &packet(7, i));
        net.run_for(Duration::from_millis(10));
    }
    net.run_for(Duration::from_millis(200));
    let got = received(&net, bob);
    let sizes: Vec<usize> = got.iter().map(Vec::len).collect();
    assert_eq!(
        sizes,
        [pylon_core::limits::MAX_DATA_TRACK_PACKET, 20, 20, 20],
        "bob got the 16,000-byte packet and the three after it"
    );
    for (c, others) in [
        (alice, ["mallory", "bob"]),
        (mallory, ["alice", "bob"]),
        (bob, ["alice", "mallory"]),
    ] {
        let known = net.clients[c].known_participants();
        for other in others {
            let state = known.get(other).map(|p| p.state());
            assert!(
                state.is_some_and(|s| s != lk::participant_info::State::Disconnected),
                "client {c} sees {other} as {state:?}"
            );
        }
    }
}
