//! What a relayed media packet costs on a node link: two relay endpoints in one process on
//! loopback, one sends `--packets` 1,100-byte media messages to the other; prints the process
//! CPU time per packet (both ends: encode, encrypt, send, receive, decrypt, decode).
//!
//!   cargo run --release -p pylon-relay --example link_cost -- --packets 200000

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pylon_core::ids::RelayTrackId;
use pylon_core::relay::{MediaExtensions, MediaPacket, RelayMessage, RelayRtp};
use pylon_relay::{Inbound, LinkHandle, Receiver, Relay, RelayConfig};
use tokio::sync::mpsc;

struct Count(Arc<AtomicU64>, mpsc::UnboundedSender<LinkHandle>);

struct Counter(Arc<AtomicU64>);

impl Inbound for Count {
    fn link_up(&self, link: LinkHandle) -> Box<dyn Receiver> {
        let _ = self.1.send(link);
        Box::new(Counter(self.0.clone()))
    }
    fn link_down(&self, _: &LinkHandle) {}
}

impl Receiver for Counter {
    fn message(&mut self, msg: RelayMessage) {
        if matches!(msg, RelayMessage::Rtp(_)) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<f64> = rest.split_whitespace().filter_map(|v| v.parse().ok()).collect();
    // utime and stime: fields 14 and 15 of the line, 11 and 12 after the name (in ticks).
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let packets: u64 = std::env::args()
        .skip_while(|a| a != "--packets")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let received = Arc::new(AtomicU64::new(0));
    let node = |name: &str| {
        let (tx, rx) = mpsc::unbounded_channel();
        let config = RelayConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            node: name.into(),
            region: "bench".into(),
            secrets: pylon_relay::Secrets::cluster(b"bench secret"),
            direct_media: std::env::var_os("PYLON_QUIC_MEDIA").is_none(),
        };
        (
            Relay::bind(config, Arc::new(Count(received.clone(), tx))).unwrap(),
            rx,
        )
    };
    let (a, mut a_rx) = node("a");
    let (b, _b_rx) = node("b");
    a.dial(b.local_addr().unwrap());
    let link = a_rx.recv().await.unwrap();
    let params = str0m::RtcConfig::new()
        .clear_codecs()
        .enable_vp8(true)
        .codec_config()
        .params()[0];
    let payload: Arc<[u8]> = Arc::from(vec![0x5a; 1100]);
    let msg = |seq: u64| {
        RelayMessage::Rtp(RelayRtp {
            track: RelayTrackId(1),
            packet: MediaPacket {
                layer: 0,
                best: Some(0),
                seq,
                timestamp: seq as u32,
                marker: true,
                keyframe: false,
                params: Some(params),
                red: false,
                ext: MediaExtensions::default(),
                payload: payload.clone(),
            },
        })
    };
    link.send(msg(0));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (cpu0, wall0, got0) = (cpu_seconds(), Instant::now(), received.load(Ordering::Relaxed));
    // Paced in bursts the link's congestion control accepts (media is not retried).
    for burst in 0..packets / 50 {
        for i in 0..50 {
            link.send(msg(1 + burst * 50 + i));
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = received.load(Ordering::Relaxed) - got0;
    let cpu = cpu_seconds() - cpu0;
    println!(
        "{{\"sent\":{packets},\"received\":{got},\"cpu_us_per_received_packet\":{:.2},\"wall_s\":{:.2}}}",
        cpu * 1e6 / got.max(1) as f64,
        wall0.elapsed().as_secs_f64()
    );
}
