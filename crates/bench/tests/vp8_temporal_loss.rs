//! A subscriber that gets fewer temporal layers than a VP8 publisher sends (it asked for a
//! lower frame rate, or its link carries less) sees the PictureIDs of the frames it gets
//! renumbered to follow one another. Packets lost between the publisher and the server, and
//! retransmitted later, must go out under their own frame's PictureID (before, a frame's first
//! packet retransmitted after a skipped frame went out under the PictureID of the frame before
//! it: a receiver takes such a frame for one it already has), and must not leave a hole in
//! the numbering: not when the lost packet began a frame the subscriber does not get, nor when
//! a whole frame of that kind was lost (libwebrtc's receiver holds back a frame above the base
//! layer that is not a layer sync and follows a hole, until it gives the hole up 100 pictures
//! later). Deterministic: a shard and str0m clients in memory.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use livekit_protocol as lk;
use pylon_bench::sim::Net;
use pylon_testkit::vp8;
use str0m::media::MediaKind;

/// Frame `i` of a 30 fps stream with libwebrtc's three temporal layers, as two packets: the
/// first begins the frame, the second ends it. Each packet's bytes after the descriptor name
/// the frame, so the receiver can tell which frame a packet belongs to.
fn frame(i: u64) -> [Vec<u8>; 2] {
    let body = [i as u8; 24];
    let (tid, sync) = if i == 0 {
        (0, false)
    } else {
        vp8::temporal_pattern(i)
    };
    let start = if i == 0 {
        vp8::keyframe_start(320, 180, &body)
    } else {
        vp8::delta_start(&body)
    };
    let pid = 1000 + i as u16;
    let tl0 = (i / 4) as u8;
    [
        vp8::with_temporal(&start, pid, tl0, tid, sync),
        vp8::with_temporal(&vp8::continuation(&body), pid, tl0, tid, sync),
    ]
}

/// The frame a received packet belongs to (the last byte of its payload).
fn frame_of(payload: &[u8]) -> u64 {
    u64::from(*payload.last().expect("a payload"))
}

#[test]
fn packets_lost_before_the_server_leave_no_hole_in_a_thinned_vp8_stream() {
    pylon_testkit::init_test_logging();
    let mut net = Net::new(1, std::time::Instant::now());
    let alice = net.join(0, "r", "alice");
    let bob = net.join(0, "r", "bob");
    net.run_for(Duration::from_millis(200));
    let camera = net.publish(alice, MediaKind::Video, "camera");
    net.run_for(Duration::from_secs(1));
    let track = net.clients[bob]
        .known_participants()
        .get("alice")
        .and_then(|p| p.tracks.first().map(|t| t.sid.clone()))
        .expect("bob knows alice's camera");
    // Bob asks for 15 fps: the base layer and T1, every T2 frame skipped.
    let settings = lk::UpdateTrackSettings {
        track_sids: vec![track],
        fps: 15,
        ..Default::default()
    };
    net.signal(bob, lk::signal_request::Message::TrackSetting(settings));
    net.run_for(Duration::from_millis(100));

    let send = |net: &mut Net, i: u64, part: usize| {
        let seq = 1 + 2 * i + part as u64;
        let payload = frame(i)[part].clone();
        let pt = net.vp8_pt(alice);
        net.write_rtp_marked(alice, camera, pt, seq, i as u32 * 3000, part == 1, payload);
        net.run_for(Duration::from_millis(5));
    };
    let mut held: Vec<(u64, usize)> = Vec::new();
    // Three seconds of the stream first, so that the server has measured its frame rates.
    for i in 0..130u64 {
        for part in 0..2 {
            // Lost on the way to the server, retransmitted after the next frame:
            let lost = match i {
                // the first packet of a T2 frame (bob does not get T2);
                101 => part == 0,
                // a whole T2 frame;
                105 => true,
                // the first packet of a T0 frame, with a T2 frame skipped before it comes.
                108 => part == 0,
                _ => false,
            };
            if lost {
                held.push((i, part));
            } else {
                send(&mut net, i, part);
            }
        }
        if i == 90 {
            net.clients[bob].subscriber.recorded = Some(Vec::new());
        }
        if !held.is_empty() && !matches!(i, 101 | 105 | 108) {
            for (f, part) in std::mem::take(&mut held) {
                send(&mut net, f, part);
            }
        }
        net.run_for(Duration::from_millis(28));
    }
    net.run_for(Duration::from_millis(200));

    let received = net.clients[bob].subscriber.recorded.take().unwrap();
    assert!(
        received.len() > 20,
        "bob receives the stream ({} packets)",
        received.len()
    );
    // Every packet bob received has a sequence number of its own.
    let seqs: BTreeSet<u64> = received.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs.len(), received.len(), "a sequence number went out twice");
    // Each frame reaches bob under one PictureID, and no two frames share one.
    let mut pid_of: BTreeMap<u64, BTreeSet<u16>> = BTreeMap::new();
    for (_, p) in &received {
        let pid = vp8::picture_id(p).expect("a PictureID");
        pid_of.entry(frame_of(p)).or_default().insert(pid);
    }
    let mut frames_of: BTreeMap<u16, Vec<u64>> = BTreeMap::new();
    for (f, pids) in &pid_of {
        assert_eq!(
            pids.len(),
            1,
            "frame {f} reached bob under PictureIDs {pids:?}: {pid_of:?}"
        );
        frames_of.entry(*pids.first().unwrap()).or_default().push(*f);
    }
    for (pid, frames) in &frames_of {
        assert_eq!(
            frames.len(),
            1,
            "frames {frames:?} reached bob under one PictureID {pid}"
        );
    }
    // The PictureIDs bob saw leave no hole: his receiver never waits for a frame that will
    // not come.
    let pids: Vec<u16> = frames_of.keys().copied().collect();
    let (first, last) = (pids[0], *pids.last().unwrap());
    let holes: Vec<u16> = (first..=last).filter(|p| !frames_of.contains_key(p)).collect();
    assert!(
        holes.is_empty(),
        "PictureIDs {holes:?} never reached bob (he got frames {:?} as {:?})",
        pid_of.keys().collect::<Vec<_>>(),
        pid_of.values().collect::<Vec<_>>()
    );
    // Bob got the base layer and T1 (and what was lost and came late, which cannot be told
    // apart in time), not the T2 frames that arrived in order.
    for f in [93, 97, 113, 121] {
        assert!(!pid_of.contains_key(&f), "bob got T2 frame {f}: {:?}", pid_of);
    }
    for f in [92, 94, 96, 100, 102, 104, 106, 108, 110, 112] {
        assert!(pid_of.contains_key(&f), "bob did not get frame {f}");
    }
}
