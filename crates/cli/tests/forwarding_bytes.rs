//! A subscriber receives exactly the RTP payloads a publisher sent, byte for byte, on an
//! Opus track and a VP8 track: over UDP, and with both participants on ICE over TCP (the
//! server's passive TCP candidate, RFC 4571 frames), and with both relayed through the node's
//! embedded TURN server (ChannelData to the TURN port, relayed to the media port).
//!
//! B joins first; A publishes both tracks. A sends warm-up packets (prefixed `W`) until B
//! receives some on both tracks, which proves the subscription is negotiated and video
//! forwarding has started at a keyframe. Then A sends the measured packets (prefixed `M`):
//! B's measured packets, in sequence order, must equal A's, payloads and marker bits.

use std::time::Duration;

use pylon_testkit::{
    vp8, Client, ClientOptions, LocalTrack, ReceivedRtp, RtpOut, Server, ServerOptions, TrackSpec, Transport,
};

const AUDIO_PACKETS: usize = 200;
const VIDEO_PACKETS: usize = 100;
/// Packets are sent in rounds of two audio and one video packet, one round per tick, so
/// loopback socket buffers never overflow.
const TICK: Duration = Duration::from_millis(5);
const AUDIO_TICKS_PER_PACKET: u32 = 960; // 20 ms at 48 kHz
const VIDEO_TICKS_PER_FRAME: u32 = 3000; // 30 fps at 90 kHz
const WARMUP_LIMIT: Duration = Duration::from_secs(15);

/// A distinct payload body: a label, then bytes derived from the index, of varying length.
fn body(label: &str, i: usize) -> Vec<u8> {
    let mut b = format!("{label}-{i:05}|").into_bytes();
    let len = 40 + (i * 37) % 900;
    b.extend((0..len).map(|j| (i.wrapping_mul(31) ^ j.wrapping_mul(7)) as u8));
    b
}

fn audio_packet(prefix: u8, i: usize) -> RtpOut {
    let mut payload = vec![prefix];
    payload.extend(body("audio", i));
    RtpOut {
        payload,
        timestamp: AUDIO_TICKS_PER_PACKET.wrapping_mul(i as u32),
        marker: i == 0,
    }
}

/// One packet per frame: the first a keyframe, the rest delta frames; every packet ends a
/// frame, so every marker bit is set.
fn video_packet(prefix: u8, i: usize) -> RtpOut {
    let mut b = vec![prefix];
    b.extend(body("video", i));
    let payload = if i == 0 {
        vp8::keyframe_start(640, 480, &b)
    } else {
        vp8::delta_start(&b)
    };
    RtpOut {
        payload,
        timestamp: VIDEO_TICKS_PER_FRAME.wrapping_mul(i as u32),
        marker: true,
    }
}

/// The phase byte (`W` warm-up, `M` measured) of a payload: after the VP8 headers for video.
fn phase(payload: &[u8], video: bool) -> Option<u8> {
    let at = match (video, vp8::is_keyframe_start(payload)) {
        (false, _) => 0,
        (true, true) => vp8::keyframe_start(0, 0, &[]).len(),
        (true, false) => vp8::delta_start(&[]).len(),
    };
    payload.get(at).copied()
}

/// The measured packets received, in sequence order, duplicates (retransmissions) removed.
fn measured(received: &[ReceivedRtp], video: bool) -> Vec<(Vec<u8>, bool)> {
    let mut packets: Vec<&ReceivedRtp> = received
        .iter()
        .filter(|p| phase(&p.payload, video) == Some(b'M'))
        .collect();
    packets.sort_by_key(|p| p.seq);
    packets.dedup_by_key(|p| p.seq);
    packets
        .into_iter()
        .map(|p| (p.payload.to_vec(), p.marker))
        .collect()
}

fn has_warmup(b: &mut Client, track: &LocalTrack) -> bool {
    let video = track.kind.is_video();
    b.observed()
        .rtp_of(&track.sid)
        .iter()
        .any(|p| phase(&p.payload, video) == Some(b'W'))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_receives_published_payloads_byte_for_byte() {
    byte_for_byte(Transport::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_ice_tcp_subscriber_receives_published_payloads_byte_for_byte() {
    byte_for_byte(Transport::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_turn_subscriber_receives_published_payloads_byte_for_byte() {
    byte_for_byte(Transport::Turn).await;
}

async fn byte_for_byte(transport: Transport) {
    pylon_testkit::init_test_logging();
    let name = format!("forwarding_bytes_{transport:?}").to_lowercase();
    let mut server_opts = ServerOptions::new(env!("CARGO_BIN_EXE_pylon"), name);
    if transport == Transport::Turn {
        let turn_port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("a free port")
            .port();
        server_opts.extra_yaml = format!(
            "turn:\n  enabled: true\n  udp_port: {turn_port}\n  relay_range_start: 31000\n  relay_range_end: 31999\n"
        );
    }
    let server = Server::start_with(server_opts).await.expect("server starts");
    let opts = || ClientOptions {
        transport,
        ..ClientOptions::default()
    };
    let mut b = server.client_with("bytes", "b", opts()).await.expect("b joins");
    let mut a = server.client_with("bytes", "a", opts()).await.expect("a joins");
    let audio = a.publish(TrackSpec::audio("mic")).await.expect("audio published");
    let video = a
        .publish(TrackSpec::video("cam", 640, 480))
        .await
        .expect("video published");

    // Warm-up: keyframes and audio until B has both tracks flowing.
    let started = std::time::Instant::now();
    let mut i = 0;
    while !(has_warmup(&mut b, &audio) && has_warmup(&mut b, &video)) {
        assert!(
            started.elapsed() < WARMUP_LIMIT,
            "no warm-up media reached b within {WARMUP_LIMIT:?}; server log: {}",
            server.log_path().display()
        );
        a.write_rtp(&audio, audio_packet(b'W', i)).expect("write");
        a.write_rtp(&video, video_packet(b'W', 0)).expect("write");
        i += 1;
        b.settle(Duration::from_millis(20)).await;
    }

    let sent_audio: Vec<RtpOut> = (0..AUDIO_PACKETS).map(|i| audio_packet(b'M', i)).collect();
    let sent_video: Vec<RtpOut> = (0..VIDEO_PACKETS).map(|i| video_packet(b'M', i)).collect();
    for round in 0..AUDIO_PACKETS.max(VIDEO_PACKETS * 2) {
        if let Some(p) = sent_audio.get(round) {
            a.write_rtp(&audio, p.clone()).expect("write audio");
        }
        if round % 2 == 0 {
            if let Some(p) = sent_video.get(round / 2) {
                a.write_rtp(&video, p.clone()).expect("write video");
            }
        }
        if round % 2 == 1 {
            tokio::time::sleep(TICK).await;
        }
    }

    let expect_audio: Vec<(Vec<u8>, bool)> =
        sent_audio.iter().map(|p| (p.payload.clone(), p.marker)).collect();
    let expect_video: Vec<(Vec<u8>, bool)> =
        sent_video.iter().map(|p| (p.payload.clone(), p.marker)).collect();
    let (audio_sid, video_sid) = (audio.sid.clone(), video.sid.clone());
    let arrived = b
        .wait_until("all measured packets at b", |o| {
            measured(o.rtp_of(&audio_sid), false).len() >= AUDIO_PACKETS
                && measured(o.rtp_of(&video_sid), true).len() >= VIDEO_PACKETS
        })
        .await;
    // Late duplicates or extra packets would show up in the comparison below.
    b.settle(Duration::from_millis(200)).await;
    let got_audio = measured(b.observed().rtp_of(&audio_sid), false);
    let got_video = measured(b.observed().rtp_of(&video_sid), true);
    if let Err(e) = arrived {
        panic!(
            "{e}: b has {} of {AUDIO_PACKETS} audio and {} of {VIDEO_PACKETS} video packets; server log {}",
            got_audio.len(),
            got_video.len(),
            server.log_path().display()
        );
    }
    assert!(got_audio == expect_audio, "audio payloads differ");
    assert!(got_video == expect_video, "video payloads differ");
}
