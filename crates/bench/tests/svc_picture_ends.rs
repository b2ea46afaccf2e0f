//! VP9 SVC pictures whose upper spatial layers the publisher's encoder dropped arrive with no
//! RTP marker at all (libwebrtc under load); a receiver would never complete them and stall
//! until the next key picture. The shard ends such a picture where the next one begins
//! (`svc::PictureEnds`). Deterministic: a shard and str0m clients in memory.

use std::time::Duration;

use pylon_bench::sim::Net;
use str0m::media::MediaKind;

/// One VP9 packet that is a whole layer frame (B and E): non-flexible mode, a 15-bit picture
/// id, spatial layer `sid`, temporal layer 0; `inter` sets P (not a key picture).
fn layer_frame(picture: u16, sid: u8, inter: bool) -> Vec<u8> {
    let b0 = 0x80 | 0x20 | 0x08 | 0x04 | if inter { 0x40 } else { 0 };
    let mut p = vec![b0, 0x80 | (picture >> 8) as u8, picture as u8, sid << 1, 0];
    p.extend_from_slice(&[0x5a; 8]);
    p
}

#[test]
fn a_picture_without_its_upper_layers_reaches_the_receiver_ended() {
    pylon_testkit::init_test_logging();
    let mut net = Net::new(1, std::time::Instant::now());
    let alice = net.join(0, "r", "alice");
    net.enable_vp9(alice);
    let bob = net.join(0, "r", "bob");
    net.enable_vp9(bob);
    net.run_for(Duration::from_millis(200));
    let camera = net.publish(alice, MediaKind::Video, "camera");
    net.run_for(Duration::from_secs(1));
    let pt = net.vp9_pt(alice);

    let mut seq = 0;
    let mut send = |net: &mut Net, picture: u16, sid: u8, marker: bool| {
        seq += 1;
        let payload = layer_frame(picture, sid, picture > 0);
        net.write_rtp_marked(
            alice,
            camera,
            pt,
            seq,
            u32::from(picture) * 3000,
            marker,
            payload.clone(),
        );
        net.run_for(Duration::from_millis(10));
        payload
    };
    let received = |net: &Net| {
        let s = &net.clients[bob].subscriber;
        (s.last_rtp.as_ref().map(|(_, p)| p.clone()), s.last_marker)
    };

    // A key picture with its three layers; the encoder marks the last.
    send(&mut net, 0, 0, false);
    send(&mut net, 0, 1, false);
    let top = send(&mut net, 0, 2, true);
    assert_eq!(
        received(&net),
        (Some(top), Some(true)),
        "bob receives the whole key picture"
    );
    // Pictures with every layer: their ends are marked as the encoder marked them.
    for picture in 1..4 {
        send(&mut net, picture, 0, false);
        send(&mut net, picture, 1, false);
        let top = send(&mut net, picture, 2, true);
        assert_eq!(received(&net), (Some(top), Some(true)));
    }
    // The encoder dropped S2 of picture 4 and sent S1 without a marker.
    send(&mut net, 4, 0, false);
    let s1 = send(&mut net, 4, 1, false);
    // The next picture begins: picture 4 reached bob ended at its S1.
    send(&mut net, 5, 0, false);
    assert_eq!(
        received(&net),
        (Some(s1), Some(true)),
        "the picture without S2 ends at its S1 for bob"
    );
    let s1 = send(&mut net, 5, 1, false);
    // The stream stops after S1 of picture 5: it is released, ended, once it waited long
    // enough for a next packet.
    net.run_for(Duration::from_secs(1));
    assert_eq!(
        received(&net),
        (Some(s1), Some(true)),
        "the last picture ends too"
    );
}
