//! Loss on the subscriber's link is repaired: the subscriber's client drops every 7th RTP
//! datagram before decryption, NACKs the gaps, and the server resends from its cache, so every
//! video payload still arrives (some out of order, which shows the repair happened). Also
//! over a downlink that delivers everything 450 ms late (a long or bufferbloated path), where
//! a NACK reaches the server more than 450 ms after the packet left: the resend cache must
//! reach back that far.

use std::time::Duration;

use pylon_testkit::{vp8, ClientOptions, RtpOut, Server, TrackSpec};

const FRAMES: usize = 150;

fn frame(prefix: u8, i: usize) -> RtpOut {
    let mut body = vec![prefix];
    body.extend(format!("frame-{i:05}").bytes());
    body.resize(600, 0x33);
    RtpOut {
        payload: if i == 0 {
            vp8::keyframe_start(640, 360, &body)
        } else {
            vp8::delta_start(&body)
        },
        timestamp: (i as u32).wrapping_mul(3000),
        marker: true,
    }
}

fn measured_index(payload: &[u8]) -> Option<usize> {
    let at = payload.windows(6).position(|w| w == b"frame-")?;
    let prefix = *payload.get(at.checked_sub(1)?)?;
    if prefix != b'M' {
        return None;
    }
    std::str::from_utf8(payload.get(at + 6..at + 11)?)
        .ok()?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_video_packets_are_resent_on_nack() {
    let lossy = ClientOptions {
        drop_every_nth_rtp: Some(7),
        ..ClientOptions::default()
    };
    resent_on_nack("nack_rtx", lossy, Duration::ZERO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_video_packets_are_resent_on_nack_over_a_long_round_trip() {
    // Lighter loss than above: this client asks again every 100 ms for what is still on its
    // way (up to 5 times), and str0m stops resending while resends are over 15 % of a
    // stream's bytes in the last second.
    let lossy_and_late = ClientOptions {
        drop_every_nth_rtp: Some(50),
        downlink_delay: Some(Duration::from_millis(450)),
        ..ClientOptions::default()
    };
    // Long enough for sender and receiver reports to give the server the round trip (its
    // stats come every 2 s).
    resent_on_nack("nack_rtx_late", lossy_and_late, Duration::from_secs(5)).await;
}

/// `b` joins with `opts`, `a` publishes; after `warm_up` of video, every measured frame must
/// reach `b`, some out of order.
async fn resent_on_nack(name: &str, opts: ClientOptions, warm_up: Duration) {
    pylon_testkit::init_test_logging();
    let server = Server::start(env!("CARGO_BIN_EXE_pylon"), name)
        .await
        .expect("server starts");
    let mut b = server.client_with("nack", "b", opts).await.expect("b joins");
    let mut a = server.client("nack", "a").await.expect("a joins");
    let video = a
        .publish(TrackSpec::video("cam", 640, 360))
        .await
        .expect("published");

    // Warm up with keyframes until b receives video.
    let sid = video.sid.clone();
    for i in 0.. {
        assert!(i < 300, "no video reached b");
        a.write_rtp(&video, frame(b'W', 0)).expect("write");
        b.settle(Duration::from_millis(20)).await;
        if !b.observed().rtp_of(&sid).is_empty() {
            break;
        }
    }
    let warm = std::time::Instant::now();
    for i in 1.. {
        if warm.elapsed() >= warm_up {
            break;
        }
        a.write_rtp(&video, frame(b'W', i)).expect("write");
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    for i in 0..FRAMES {
        a.write_rtp(&video, frame(b'M', i)).expect("write");
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    // A loss is only noticed when a later packet arrives: keep the stream going a little.
    for i in 0..20 {
        a.write_rtp(&video, frame(b'T', FRAMES + i)).expect("write");
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let arrived = b
        .wait_until_for(
            "every measured frame despite the loss",
            Duration::from_secs(20),
            |o| {
                let mut got: Vec<usize> = o
                    .rtp_of(&sid)
                    .iter()
                    .filter_map(|p| measured_index(&p.payload))
                    .collect();
                got.sort_unstable();
                got.dedup();
                got.len() == FRAMES
            },
        )
        .await;
    let order: Vec<usize> = b
        .observed()
        .rtp_of(&sid)
        .iter()
        .filter_map(|p| measured_index(&p.payload))
        .collect();
    let mut unique = order.clone();
    unique.sort_unstable();
    unique.dedup();
    assert!(
        arrived.is_ok(),
        "{} of {FRAMES} frames arrived: {unique:?}",
        unique.len()
    );
    assert!(
        order.windows(2).any(|w| w[1] < w[0]),
        "no packet arrived out of order, so nothing was lost and resent: {order:?}"
    );
}
