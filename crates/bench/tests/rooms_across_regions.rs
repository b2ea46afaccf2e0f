//! A room across two regions, in memory: when the region link goes down the far region's
//! participants stay for the grace period, shown `LOST`; a link back within it restores them
//! (`EXCELLENT`) with media, and nobody left; a link down for longer makes them leave.

use std::time::{Duration, Instant};

use livekit_protocol as lk;
use pylon_bench::sim::{vp8_packet, Client, Net};
use str0m::media::{MediaKind, Mid};

const EU: usize = 0;
const US: usize = 1;
const GRACE: Duration = Duration::from_secs(5);

fn stream(net: &mut Net, c: usize, mid: Mid, from: u64, n: u64) {
    for i in from..from + n {
        net.write_rtp(c, mid, 1000 + i, (i as u32) * 3000, vp8_packet(i));
        net.run_for(Duration::from_millis(10));
    }
}

/// The qualities `client` was told for the participant of `sid`, in order.
fn qualities(client: &Client, sid: &str) -> Vec<lk::ConnectionQuality> {
    (client.signals.iter())
        .filter_map(|s| match s {
            lk::signal_response::Message::ConnectionQuality(u) => Some(u),
            _ => None,
        })
        .flat_map(|u| u.updates.iter())
        .filter(|q| q.participant_sid == sid)
        .filter_map(|q| lk::ConnectionQuality::try_from(q.quality).ok())
        .collect()
}

#[test]
fn a_silent_region_is_kept_for_the_grace_period_then_leaves() {
    pylon_testkit::init_test_logging();
    let mut net = Net::with_regions(&[1, 1], GRACE, Instant::now());
    let alice = net.join(EU, "r", "alice");
    let bob = net.join(US, "r", "bob");
    net.run_for(Duration::from_millis(300));
    let cam = net.publish(alice, MediaKind::Video, "cam");
    net.run_for(Duration::from_secs(2));
    stream(&mut net, alice, cam, 0, 100);
    assert!(
        net.clients[bob].subscriber.rtp_received > 50,
        "bob receives alice across regions"
    );
    let alice_sid = net.clients[bob].known_participants()["alice"].sid.clone();

    // A short partition: alice is shown LOST and stays; media resumes after the heal.
    net.cut_link(EU, US);
    assert_eq!(
        qualities(&net.clients[bob], &alice_sid),
        [lk::ConnectionQuality::Lost]
    );
    net.run_for(GRACE - Duration::from_secs(2));
    assert!(
        net.clients[bob].known_participants().contains_key("alice"),
        "kept during the grace period"
    );
    net.heal_link(EU, US);
    assert_eq!(
        qualities(&net.clients[bob], &alice_sid),
        [lk::ConnectionQuality::Lost, lk::ConnectionQuality::Excellent]
    );
    let before = net.clients[bob].subscriber.rtp_received;
    stream(&mut net, alice, cam, 100, 100);
    assert!(
        net.clients[bob].subscriber.rtp_received > before + 50,
        "media resumes after the heal"
    );
    let left = |net: &Net| {
        (net.clients[bob].signals.iter()).any(|s| match s {
            lk::signal_response::Message::Update(u) => u.participants.iter().any(|p| {
                p.identity == "alice" && p.state == lk::participant_info::State::Disconnected as i32
            }),
            _ => false,
        })
    };
    assert!(
        !left(&net),
        "a partition shorter than the grace period makes nobody leave"
    );

    // A long one: alice leaves bob's room once the grace period is over, not before.
    net.cut_link(EU, US);
    net.run_for(GRACE - Duration::from_secs(1));
    assert!(
        !left(&net),
        "still kept one second before the end of the grace period"
    );
    net.run_for(Duration::from_secs(2));
    assert!(left(&net), "gone after the grace period");
    assert!(!net.clients[bob].known_participants().contains_key("alice"));
    // And bob left alice's room the same way.
    assert!(!net.clients[alice].known_participants().contains_key("bob"));
}
