//! A simulcast publisher (three VP8 layers, `q`/`h`/`f`) is accepted and the subscriber gets
//! exactly one layer: the best one that is flowing. When the top layer stops, forwarding moves
//! to the next one at its keyframe, with sequence numbers and VP8 PictureIDs continuing (a
//! receiver drops frames whose PictureID goes backwards, keyframes included).

use std::time::Duration;

use pylon_testkit::{vp8, Client, LocalTrack, RtpOut, Server, TrackSpec, SIMULCAST_RIDS};

/// Each layer's encoder numbers its pictures independently; the top layer's count is behind
/// the lowest one's, as happens when it starts later.
fn picture_id_base(rid: &str) -> u32 {
    match rid {
        "q" => 30_000,
        "h" => 20_000,
        _ => 100,
    }
}

/// Each payload names its layer after the VP8 header: `L<rid>-<frame>`.
fn frame(rid: &str, n: u32, keyframe: bool) -> RtpOut {
    let body = format!("L{rid}-{n:05}").into_bytes();
    let payload = if keyframe {
        vp8::keyframe_start(320, 180, &body)
    } else {
        vp8::delta_start(&body)
    };
    let picture_id = ((picture_id_base(rid) + n) & 0x7fff) as u16;
    RtpOut {
        payload: vp8::with_picture_id(&payload, picture_id),
        timestamp: n.wrapping_mul(3000),
        marker: true,
    }
}

fn layer_of(payload: &[u8]) -> Option<char> {
    // `L<rid>-`: the descriptor's PictureID bytes may themselves contain an `L`.
    payload
        .windows(3)
        .find(|w| w[0] == b'L' && w[2] == b'-')
        .map(|w| w[1] as char)
}

fn send(a: &Client, video: &LocalTrack, rids: &[&str], n: u32, keyframe: bool) {
    for rid in rids {
        a.write_rtp_layer(video, rid, frame(rid, n, keyframe))
            .expect("write");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_gets_the_best_flowing_layer_and_falls_back_at_a_keyframe() {
    pylon_testkit::init_test_logging();
    let server = Server::start(env!("CARGO_BIN_EXE_pylon"), "simulcast")
        .await
        .expect("server starts");
    let mut b = server.client("sc", "b").await.expect("b joins");
    let mut a = server.client("sc", "a").await.expect("a joins");
    let video = a
        .publish(TrackSpec::video("cam", 1280, 720).with_simulcast())
        .await
        .expect("simulcast track published");
    assert_eq!(
        video.info.codecs.first().map_or(0, |c| c.layers.len()),
        3,
        "TrackInfo lists the three layers: {:?}",
        video.info
    );

    // All three layers at 30 fps, a keyframe every 10 frames, until b has 40 frames.
    let mut n = 0;
    let sid = video.sid.clone();
    while b.observed().rtp_of(&sid).len() < 40 {
        assert!(
            n < 600,
            "b received too little: {} packets",
            b.observed().rtp_of(&sid).len()
        );
        send(&a, &video, &SIMULCAST_RIDS, n, n % 10 == 0);
        n += 1;
        b.settle(Duration::from_millis(33)).await;
    }
    // At the very start the layers arrive one by one (q first), so forwarding may begin on a
    // lower layer; once `f` is forwarded, nothing else is.
    let got: Vec<char> = b
        .observed()
        .rtp_of(&sid)
        .iter()
        .filter_map(|p| layer_of(&p.payload))
        .collect();
    let first_f = got.iter().position(|&l| l == 'f').expect("b gets the top layer");
    assert!(first_f <= 3, "b took too long to reach the top layer: {got:?}");
    assert!(
        got[first_f..].iter().all(|&l| l == 'f'),
        "b got other layers after the best: {got:?}"
    );

    // The top layer stops; the others continue. After the staleness window b must be on `h`.
    let before = b.observed().rtp_of(&sid).len();
    for _ in 0..120 {
        send(&a, &video, &["q", "h"], n, n % 10 == 0);
        n += 1;
        b.settle(Duration::from_millis(33)).await;
    }
    let packets = b.observed().rtp_of(&sid).to_vec();
    let after: Vec<char> = packets[before..]
        .iter()
        .filter_map(|p| layer_of(&p.payload))
        .collect();
    assert!(after.contains(&'h'), "b never moved to layer h: {after:?}");
    assert!(
        !after.contains(&'q'),
        "b got the lowest layer while a better one flowed: {after:?}"
    );
    let first_h = packets[before..]
        .iter()
        .find(|p| layer_of(&p.payload) == Some('h'))
        .expect("an h packet");
    assert!(
        vp8::is_keyframe_start(&first_h.payload),
        "the switch did not happen at a keyframe"
    );
    // Sequence numbers continue without going back: one stream for b, whatever the layer.
    let seqs: Vec<u64> = packets.iter().map(|p| p.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] > w[0]),
        "sequence numbers went backwards at the switch"
    );
    // One packet per frame here, so each PictureID is the previous one plus one, across both
    // switches (up from the start layer to `f`, whose count is behind, and down to `h`).
    let ids: Vec<u16> = packets
        .iter()
        .map(|p| vp8::picture_id(&p.payload).expect("PictureID kept"))
        .collect();
    assert!(
        ids.windows(2).all(|w| w[1] == (w[0] + 1) & 0x7fff),
        "PictureIDs are not continuous across layer switches: {ids:?}"
    );
}
