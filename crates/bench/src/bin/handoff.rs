//! Hand-off micro-benchmark: what a datagram costs when it lands on a worker that does not
//! host its peer (with N workers, (N-1)/N of ingress does).
//!
//! Two shards as two workers hold them: the owner hosts a connected publisher (in the
//! in-memory network of `pylon_bench::sim`), the landing worker hosts nobody. The publisher's
//! datagrams go to the owner either directly (`measured_direct`) or through the landing
//! worker's path (`measured_handoff`): its shard's miss, the demux lookup, the copy into a
//! pooled buffer, the owner's inbox (the same tokio queue and message type the workers use),
//! the owner's receive, and the buffer's way home. callgrind counts each function
//! (`bench/handoff.sh`); the difference per datagram is the hand-off. Not in it: the wake-up
//! of a sleeping owner thread (at most one per receive batch, a futex or eventfd write).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pylon_bench::sim::{self, Datagram, Net, STEP};
use pylon_core::{Received, Shard, ShardConfig};
use pylon_server::demux::Demux;
use pylon_server::handoff::{give_back, Pool};
use pylon_server::worker::Inbox;
use pylon_testkit::vp8;
use str0m::media::MediaKind;
use str0m::Input;
use tokio::sync::mpsc;

const PAYLOAD: usize = 1000;

/// The owner takes each datagram as it came off its own socket.
#[inline(never)]
fn measured_direct(owner: &mut Shard, now: Instant, input: &[Datagram]) {
    for (src, dst, data) in input {
        let _ = owner.receive(now, *src, *dst, data);
        while owner.poll_output().is_some() {}
    }
}

/// Each datagram lands on the other worker first and is handed over.
#[inline(never)]
fn measured_handoff(path: &mut Path, owner: &mut Shard, now: Instant, input: &[Datagram]) {
    for (src, dst, data) in input {
        if path.landing.receive(now, *src, *dst, data) == Received::NotMine {
            if let (Some(_), Some(h)) = (path.demux.owner(*src, data), path.pool.package(1, *src, data)) {
                let _ = path.tx.send(Inbox::Datagram(h));
            }
        }
        while let Ok(Inbox::Datagram(h)) = path.rx.try_recv() {
            let _ = owner.receive(now, h.source, *dst, &h.buf);
            give_back(&path.returns, h.buf);
        }
        while owner.poll_output().is_some() {}
    }
}

/// The landing worker's side, and the owner's inbox.
struct Path {
    landing: Shard,
    demux: Demux,
    pool: Pool,
    returns: std::sync::mpsc::SyncSender<Vec<u8>>,
    tx: mpsc::UnboundedSender<Inbox>,
    rx: mpsc::UnboundedReceiver<Inbox>,
}

fn main() {
    let rounds: usize = std::env::args()
        .skip_while(|a| a != "--rounds")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let mut net = Net::new(1, Instant::now());
    let publisher = net.join(0, "bench", "publisher");
    let mid = net.publish(publisher, MediaKind::Video, "cam");
    net.run_for(Duration::from_secs(3));
    assert!(
        net.clients[publisher].publisher.connected,
        "publisher never connected"
    );
    let source: SocketAddr = net.clients[publisher].publisher.addr;

    let (tx, rx) = mpsc::unbounded_channel();
    let pool = Pool::default();
    let mut path = Path {
        landing: Shard::new(ShardConfig::new(sim::shard_addr(1)), net.now, 0, 9),
        demux: Demux::default(),
        returns: pool.returns(),
        pool,
        tx,
        rx,
    };
    path.demux.set_address(source, Some(0));

    let mut seq = 1000u64;
    let mut batch = |net: &mut Net, n: usize| -> Vec<Datagram> {
        for _ in 0..n {
            let payload = vp8::delta_start(&[0x42u8; PAYLOAD]);
            net.write_rtp(publisher, mid, seq, seq as u32 * 3000, payload);
            seq += 1;
        }
        let now = net.now;
        let peer = &mut net.clients[publisher].publisher;
        peer.rtc.handle_input(Input::Timeout(now)).expect("timeout");
        let mut out = VecDeque::new();
        Net::poll_peer(peer, &mut out);
        out.into_iter()
            .filter(|(_, dst, _)| *dst == sim::shard_addr(0))
            .collect()
    };
    let (mut direct, mut handed) = (0usize, 0usize);
    for _ in 0..rounds {
        let a = batch(&mut net, 10);
        measured_direct(&mut net.shards[0], net.now, &a);
        direct += a.len();
        let b = batch(&mut net, 10);
        measured_handoff(&mut path, &mut net.shards[0], net.now, &b);
        handed += b.len();
        net.run_for(STEP * 5);
    }
    let stats = net.shards[0].stats();
    println!(
        "{}",
        serde_json::json!({
            "datagrams_direct": direct,
            "datagrams_handed_off": handed,
            "rtp_received_by_owner": stats.rtp_in,
        })
    );
}
