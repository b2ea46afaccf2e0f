//! A subscriber's SDP holds as many media sections as it ever had subscriptions at once:
//! sections of tracks that went away are recycled for the next tracks of the same kind, with
//! the new track's msid, so publish/unpublish churn neither grows the subscriber's SDP nor
//! what the server keeps per subscriber. Deterministic: a shard and str0m clients in memory.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use livekit_protocol::signal_response::Message as Resp;
use pylon_bench::sim::{vp8_packet, Net};
use str0m::media::{MediaKind, Mid};

fn setup() -> (Net, usize, usize) {
    pylon_testkit::init_test_logging();
    let mut net = Net::new(1, Instant::now());
    let alice = net.join(0, "r", "alice");
    let bob = net.join(0, "r", "bob");
    net.run_for(Duration::from_millis(200));
    (net, alice, bob)
}

/// The last subscriber offer `c` received.
fn last_offer(net: &Net, c: usize) -> livekit_protocol::SessionDescription {
    net.clients[c]
        .signals
        .iter()
        .rev()
        .find_map(|s| match s {
            Resp::Offer(o) => Some(o.clone()),
            _ => None,
        })
        .expect("an offer")
}

/// `a=mid` → `a=msid` stream id of each section of `sdp` that has one.
fn msids(sdp: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for section in sdp.split("\r\nm=").skip(1) {
        let mid = section.lines().find_map(|l| l.strip_prefix("a=mid:"));
        let msid = section.lines().find_map(|l| l.strip_prefix("a=msid:"));
        if let (Some(mid), Some(msid)) = (mid, msid) {
            out.insert(
                mid.to_string(),
                msid.split(' ').next().unwrap_or_default().to_string(),
            );
        }
    }
    out
}

fn sections(sdp: &str) -> usize {
    sdp.matches("\r\nm=").count()
}

/// alice's published track SIDs by name, as bob was last told.
fn track_sid(net: &Net, c: usize, name: &str) -> Option<String> {
    let alice = net.clients[c].known_participants().remove("alice")?;
    alice.tracks.into_iter().find(|t| t.name == name).map(|t| t.sid)
}

/// Stream on alice's `mid` (VP8 payloads; on an audio section they go out as Opus) until bob
/// received `n` packets more (or give up).
fn bob_receives(net: &mut Net, alice: usize, mid: Mid, bob: usize, n: u64, seq: &mut u64) -> bool {
    let before = net.clients[bob].subscriber.rtp_received;
    for _ in 0..400 {
        net.write_rtp(alice, mid, *seq, (*seq as u32) * 3000, vp8_packet(*seq));
        *seq += 1;
        net.run_for(Duration::from_millis(10));
        if net.clients[bob].subscriber.rtp_received >= before + n {
            return true;
        }
    }
    false
}

#[test]
fn five_hundred_publish_unpublish_cycles_leave_the_subscribers_sdp_as_it_was() {
    let (mut net, alice, bob) = setup();
    // Two tracks live throughout, a third published and unpublished 500 times.
    net.publish(alice, MediaKind::Audio, "mic");
    net.run_for(Duration::from_millis(200));
    net.publish(alice, MediaKind::Video, "cam");
    net.run_for(Duration::from_millis(200));
    let churn = net.publish(alice, MediaKind::Video, "screen-0");
    net.run_for(Duration::from_secs(1));
    let first = last_offer(&net, bob);
    assert_eq!(sections(&first.sdp), 4, "data channels, mic, cam, screen-0");
    let mut seq = 0;
    assert!(
        bob_receives(&mut net, alice, churn, bob, 20, &mut seq),
        "media on the first track"
    );

    let mut sids = Vec::new();
    for i in 1..=500 {
        net.unpublish(alice, churn);
        net.run_for(Duration::from_millis(60));
        let name = format!("screen-{i}");
        net.republish(alice, churn, &name);
        net.run_for(Duration::from_millis(60));
        let sid = track_sid(&net, bob, &name).unwrap_or_else(|| panic!("bob was told of {name}"));
        sids.push(sid);
    }
    let last = last_offer(&net, bob);
    let sid = sids.last().expect("500 tracks");

    // Bound: one section per subscription bob ever had at once (here 3) and the data channels,
    // and the same length give or take the digits of version numbers.
    assert_eq!(
        sections(&last.sdp),
        4,
        "the subscriber's SDP kept its sections:\n{}",
        last.sdp
    );
    let grown = last.sdp.len() as f64 / first.sdp.len() as f64;
    assert!(
        grown < 1.02,
        "the offer grew from {} to {} bytes",
        first.sdp.len(),
        last.sdp.len()
    );
    let (parked, msids_kept) = net.shards[0].parked_sections();
    assert!(
        parked <= 1 && msids_kept <= 1,
        "server keeps {parked} parked sections, {msids_kept} msids"
    );

    // The recycled section announces the newest track, and nothing announces an old one.
    let announced = msids(&last.sdp);
    let mid = last
        .mid_to_track_id
        .iter()
        .find(|(_, t)| *t == sid)
        .map(|(m, _)| m.clone())
        .expect("mid_to_track_id names the newest track");
    assert!(
        announced[&mid].ends_with(&format!("|{sid}")),
        "{:?}",
        announced[&mid]
    );
    for old in &sids[..sids.len() - 1] {
        assert!(!last.sdp.contains(old.as_str()), "{old} still in the offer");
    }

    // And media of the newest track reaches bob on it.
    assert!(
        bob_receives(&mut net, alice, churn, bob, 20, &mut seq),
        "media on the 500th track"
    );
}

#[test]
fn a_microphone_published_again_is_heard_on_the_recycled_section() {
    // Audio forwarding starts at any packet, not at a keyframe: a recycled audio section must
    // not wait for one (it did, silently, for ever).
    let (mut net, alice, bob) = setup();
    let mic = net.publish(alice, MediaKind::Audio, "mic-0");
    net.run_for(Duration::from_secs(1));
    let mut seq = 0;
    assert!(
        bob_receives(&mut net, alice, mic, bob, 20, &mut seq),
        "audio of the first microphone"
    );
    let sections_before = sections(&last_offer(&net, bob).sdp);
    for i in 1..=3 {
        net.unpublish(alice, mic);
        net.run_for(Duration::from_millis(100));
        let name = format!("mic-{i}");
        net.republish(alice, mic, &name);
        net.run_for(Duration::from_millis(100));
        assert!(track_sid(&net, bob, &name).is_some(), "bob was told of {name}");
        assert!(
            bob_receives(&mut net, alice, mic, bob, 20, &mut seq),
            "audio of microphone {i}"
        );
    }
    assert_eq!(
        sections(&last_offer(&net, bob).sdp),
        sections_before,
        "the microphones shared one section"
    );
}
