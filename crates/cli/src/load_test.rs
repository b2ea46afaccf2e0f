//! `pylon load-test`: real WebRTC participants (the project's str0m test client) speaking the
//! LiveKit protocol, so it runs against Pylon or any LiveKit server.
//!
//! Publishers send Opus-sized audio at 50 packets/s and VP8 video (simulcast `q`/`h`/`f` at
//! about 150/500/1,700 kbps, 30 fps, a keyframe every 2 s, and one of a layer the server asks
//! for at the next base-layer frame, as libwebrtc answers a PLI) with valid payload descriptors and,
//! as libwebrtc encodes VP8 simulcast, three temporal layers per encoding (7.5, 15 and 30 fps,
//! 40/20/40 % of the bytes).
//! Every payload carries a magic tag and its send time, so subscribers on the same host
//! measure one-way latency. Subscribers count packets, bytes and sequence gaps per track.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;
use pylon_testkit::{
    vp8, ApiCredentials, Client, ClientOptions, LocalTrack, ReceivedRtp, RtpOut, TrackSpec, SIMULCAST_RIDS,
};
use serde::Serialize;
use tokio::sync::Mutex;

/// Marks a payload as ours: the next 8 bytes are the send time in microseconds since the
/// Unix epoch (big endian).
const MAGIC: [u8; 4] = *b"PYLT";
const AUDIO_PAYLOAD: usize = 100;
const AUDIO_INTERVAL: Duration = Duration::from_millis(20);
const FPS: u32 = 30;
const KEYFRAME_EVERY_FRAMES: u32 = 2 * FPS;

/// Whether frame `f` is a keyframe of every layer whether asked for or not.
fn periodic_keyframe(f: u64) -> bool {
    f.is_multiple_of(KEYFRAME_EVERY_FRAMES as u64)
}
const MAX_PAYLOAD: usize = 1100;
const VIDEO_WIDTH: u32 = 1280;
const VIDEO_HEIGHT: u32 = 720;

#[derive(Args, Clone)]
pub struct LoadTestArgs {
    /// Server WebSocket URL.
    #[arg(long, env = "LIVEKIT_URL", default_value = "ws://127.0.0.1:7880")]
    pub(crate) url: String,
    #[arg(long, env = "LIVEKIT_API_KEY", default_value = "devkey")]
    pub(crate) api_key: String,
    #[arg(long, env = "LIVEKIT_API_SECRET", default_value = "secret")]
    pub(crate) api_secret: String,
    /// Room name (with --rooms > 1: a prefix, rooms are `<room>-0`, `<room>-1`, ...).
    #[arg(long, default_value = "load-test")]
    pub(crate) room: String,
    #[arg(long, default_value_t = 1)]
    pub(crate) rooms: usize,
    /// Publishing participants per room (they also subscribe to each other).
    #[arg(long, default_value_t = 1)]
    pub(crate) publishers: usize,
    /// Subscribe-only participants per room.
    #[arg(long, default_value_t = 1)]
    pub(crate) subscribers: usize,
    /// Publishers send audio only.
    #[arg(long)]
    pub(crate) audio_only: bool,
    /// Publishers send one video encoding instead of three simulcast layers.
    #[arg(long)]
    pub(crate) no_simulcast: bool,
    /// Temporal layers per video encoding: 1 is none (no PictureID or TID in the payload
    /// descriptor); more sends three (7.5, 15, 30 fps), as libwebrtc sends VP8 simulcast.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=3))]
    pub(crate) temporal_layers: u8,
    /// Video bitrate of the top layer in kbps (lower layers: 500 and 150 kbps).
    #[arg(long, default_value_t = 1700)]
    pub(crate) video_kbps: u32,
    /// How long to send media after everyone joined, e.g. `10s`, `2m`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) duration: Duration,
    /// Media flows this long before the measured --duration starts, e.g. so that the server's
    /// downlink estimates settle; nothing received or spent during it is counted.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub(crate) warmup: Duration,
    /// Pause between joins.
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    pub(crate) join_interval: Duration,
    /// Print the summary as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// A server process on this host to measure: CPU seconds it spends while media flows
    /// (from /proc, so its own rusage, not wall time) and resident memory per participant.
    /// Repeat it for the nodes of a region: their CPU and memory are summed.
    #[arg(long)]
    pub(crate) server_pid: Vec<u32>,
    /// More servers (nodes of one region): participants are assigned round-robin over --url
    /// and these.
    #[arg(long)]
    pub(crate) also_url: Vec<String>,
    /// Subscribe-only participants join this server instead (e.g. another node of the region).
    #[arg(long)]
    pub(crate) subscriber_url: Option<String>,
    /// The server is Janus (videoroom plugin); --url is its WebSocket API, e.g.
    /// ws://10.203.0.2:8188. The same shape of load, for side-by-side benchmarks.
    #[arg(long)]
    pub(crate) janus: bool,
    /// Address this side's media sockets bind: loopback by default; the host end of a veth
    /// pair when the server runs in another network namespace.
    #[arg(long, default_value = "127.0.0.1")]
    pub(crate) local_ip: std::net::IpAddr,
    /// Subscribe-only participants bind their media sockets to these addresses instead, in
    /// turn (repeat it), so that a benchmark can shape each one's link by address.
    #[arg(long)]
    pub(crate) subscriber_ip: Vec<std::net::IpAddr>,
    /// Every participant uses ICE over TCP (the server's `rtc.tcp_port`) instead of UDP.
    #[arg(long, conflicts_with = "turn")]
    pub(crate) ice_tcp: bool,
    /// Every participant relays through the server's embedded TURN server (`turn.enabled`,
    /// `turn.udp_port`): its only candidate is the relayed address from the join response's
    /// credential.
    #[arg(long)]
    pub(crate) turn: bool,
}

/// What one participant received over the run.
pub(crate) struct ReceiverStats {
    identity: String,
    video_bytes: u64,
    audio_bytes: u64,
    /// RTP packets received (with the payload bytes, what the link carried).
    packets: u64,
    /// The width of the last keyframe of each video track it received, narrowest first.
    video_widths: Vec<u16>,
    /// One-way latency of every audio packet it received, milliseconds, sorted: on a shaped
    /// link, how long its queue holds what the subscriber hears.
    audio_latency_ms: Vec<f64>,
}

impl ReceiverStats {
    fn of<'a>(identity: &str, tracks: impl Iterator<Item = &'a TrackStats>) -> Self {
        let mut r = ReceiverStats {
            identity: identity.to_string(),
            video_bytes: 0,
            audio_bytes: 0,
            packets: 0,
            video_widths: Vec::new(),
            audio_latency_ms: Vec::new(),
        };
        for t in tracks {
            r.packets += t.packets;
            if t.video {
                r.video_bytes += t.bytes;
                r.video_widths.extend(t.frame_width);
            } else {
                r.audio_bytes += t.bytes;
                r.audio_latency_ms
                    .extend(t.latencies_us.iter().map(|&u| f64::from(u) / 1000.0));
            }
        }
        r.video_widths.sort_unstable();
        r.audio_latency_ms.sort_by(f64::total_cmp);
        r
    }
}

/// A participant's received rates in the summary.
#[derive(Serialize)]
struct ReceiverSummary {
    identity: String,
    video_kbps: f64,
    audio_kbps: f64,
    /// RTP packets per second received, to account for headers on a shaped link.
    packets_per_s: f64,
    video_widths: Vec<u16>,
    /// One-way latency of its audio, median and 95th percentile (ms).
    audio_latency_ms_p50: f64,
    audio_latency_ms_p95: f64,
}

/// A server process measured from /proc.
pub(crate) struct ServerProbe {
    pids: Vec<u32>,
    ticks: f64,
}

impl ServerProbe {
    /// Every measured process together.
    pub(crate) fn sample(&self) -> anyhow::Result<ProcSample> {
        let mut total = ProcSample {
            cpu_s: 0.0,
            rss_kb: 0,
            workers_cpu_s: Vec::new(),
        };
        for pid in &self.pids {
            let s = sample(*pid, self.ticks)?;
            total.cpu_s += s.cpu_s;
            total.rss_kb += s.rss_kb;
            total.workers_cpu_s.extend(s.workers_cpu_s);
        }
        Ok(total)
    }
}

/// What a run gathered, whichever server it ran against.
pub(crate) struct Collected {
    pub joined: usize,
    pub join_ms: Vec<f64>,
    pub errors: Vec<String>,
    pub stats: Vec<TrackStats>,
    /// What each participant received (empty against Janus).
    pub receivers: Vec<ReceiverStats>,
    /// Seconds of media.
    pub measured: f64,
    pub before_join: Option<ProcSample>,
    pub media_start: Option<ProcSample>,
    pub media_end: Option<ProcSample>,
}

/// The media every publisher sends: Opus-sized audio every 20 ms and, unless audio-only, VP8
/// frames at 30 fps on one or three layers, due by elapsed time since media started.
#[derive(Clone)]
pub(crate) struct MediaPlan {
    /// Bytes per frame and resolution divisor per layer, lowest first; empty: audio only.
    layers: Vec<(usize, u16)>,
    temporal: bool,
}

/// A frame's share of an average frame's bytes in tenths, by temporal layer, in libwebrtc's
/// three-layer pattern (`vp8::temporal_pattern`): T0 carries 40 % of the bytes at a quarter of
/// the frames, T1 20 % at a quarter, T2 40 % at half.
fn temporal_tenths(tid: u8) -> usize {
    if tid == 0 {
        16
    } else {
        8
    }
}

impl MediaPlan {
    pub(crate) fn new(args: &LoadTestArgs) -> Self {
        let top = args.video_kbps as usize * 1000 / 8 / FPS as usize;
        let layers = if args.audio_only {
            Vec::new()
        } else if args.no_simulcast {
            vec![(top, 1)]
        } else {
            vec![(top * 150 / 1700, 4), (top * 500 / 1700, 2), (top, 1)]
        };
        Self {
            layers,
            temporal: args.temporal_layers > 1,
        }
    }

    pub(crate) fn single_layer(&self) -> bool {
        self.layers.len() == 1
    }

    /// Audio packets due by `elapsed`; `sent` counts those already produced.
    pub(crate) fn audio_due(&self, elapsed: Duration, sent: &mut u64) -> Vec<RtpOut> {
        let due = (elapsed.as_millis() / AUDIO_INTERVAL.as_millis()) as u64 + 1;
        let mut out = Vec::new();
        while *sent < due {
            out.push(RtpOut {
                payload: stamp(AUDIO_PAYLOAD),
                timestamp: (*sent as u32).wrapping_mul(960),
                marker: *sent == 0,
            });
            *sent += 1;
        }
        out
    }

    /// Video packets due by `elapsed`, each with its layer index; `frames` counts frames
    /// already produced. Keyframes only every [`KEYFRAME_EVERY_FRAMES`].
    pub(crate) fn video_due(&self, elapsed: Duration, frames: &mut u64) -> Vec<(usize, RtpOut)> {
        let mut out = Vec::new();
        for f in self.frames_due(elapsed, frames) {
            let key = periodic_keyframe(f);
            for layer in 0..self.layers.len() {
                out.extend(self.layer_frame(f, layer, key).into_iter().map(|r| (layer, r)));
            }
        }
        out
    }

    /// The video frames due by `elapsed` (by number); `frames` counts frames already due.
    pub(crate) fn frames_due(&self, elapsed: Duration, frames: &mut u64) -> std::ops::Range<u64> {
        let due = (elapsed.as_secs_f64() * FPS as f64) as u64 + 1;
        let first = *frames;
        if !self.layers.is_empty() {
            *frames = due.max(first);
        }
        first..*frames
    }

    /// The simulcast layers published.
    pub(crate) fn layer_count(&self) -> usize {
        self.layers.len()
    }

    /// Whether frame `f` can be a keyframe that was asked for: a keyframe starts the temporal
    /// pattern over (its base layer), so it waits for the next base frame (at most three
    /// frames, 100 ms at 30 fps; libwebrtc's encoder answers within a frame or two).
    pub(crate) fn keyframe_may_start(&self, f: u64) -> bool {
        !self.temporal || vp8::temporal_pattern(f).0 == 0
    }

    /// The packets of frame `f` on simulcast layer `layer`, a keyframe or not.
    pub(crate) fn layer_frame(&self, f: u64, layer: usize, keyframe: bool) -> Vec<RtpOut> {
        let ts = (f as u32).wrapping_mul(90_000 / FPS);
        let (tid, sync) = vp8::temporal_pattern(f);
        let (bytes, scale) = self.layers[layer];
        let (w, h) = (
            (VIDEO_WIDTH / scale as u32) as u16,
            (VIDEO_HEIGHT / scale as u32) as u16,
        );
        let (bytes, temporal) = if self.temporal {
            let t = (f as u16 & 0x7fff, (f / 4) as u8, tid, sync);
            (bytes * temporal_tenths(tid) / 10, Some(t))
        } else {
            (bytes, None)
        };
        video_frame(bytes, keyframe, w, h, ts, temporal)
    }
}

/// CPU time and resident memory of a process, from /proc.
#[derive(Clone, Debug)]
pub(crate) struct ProcSample {
    cpu_s: f64,
    rss_kb: u64,
    /// CPU seconds of each media worker thread (`pylon-media-<i>`), by worker index.
    workers_cpu_s: Vec<f64>,
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The command name and CPU ticks (user + system) of a `/proc/.../stat` line.
fn stat_cpu_ticks(stat: &str) -> (&str, f64) {
    // The command name is in parentheses and may hold spaces; fields after it follow ") ".
    let name = stat
        .split_once('(')
        .and_then(|(_, r)| r.rsplit_once(')'))
        .map_or("", |(n, _)| n);
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let ticks = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (name, ticks)
}

/// CPU ticks of each `pylon-media-<i>` thread of `pid`, by `i`.
fn worker_ticks(pid: u32) -> Vec<f64> {
    let mut workers: Vec<(usize, f64)> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("stat")).ok())
        .filter_map(|stat| {
            let (name, ticks) = stat_cpu_ticks(&stat);
            let i = name.strip_prefix("pylon-media-")?.parse().ok()?;
            Some((i, ticks))
        })
        .collect();
    workers.sort_by_key(|(i, _)| *i);
    workers.into_iter().map(|(_, t)| t).collect()
}

fn sample(pid: u32, ticks: f64) -> anyhow::Result<ProcSample> {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("process {pid}"))?;
    let (_, cpu) = stat_cpu_ticks(&stat);
    let workers_cpu_s = worker_ticks(pid).into_iter().map(|t| t / ticks).collect();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(ProcSample {
        cpu_s: cpu / ticks,
        rss_kb,
        workers_cpu_s,
    })
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("invalid duration unit in {s:?} (ms, s or m)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// What one participant received on one track.
#[derive(Default)]
pub(crate) struct TrackStats {
    pub video: bool,
    /// Width of the last video keyframe received: which simulcast layer arrives.
    frame_width: Option<u16>,
    packets: u64,
    bytes: u64,
    /// Highest and lowest extended sequence number seen.
    seq_range: Option<(u64, u64)>,
    latencies_us: Vec<u32>,
}

impl TrackStats {
    fn add(&mut self, p: &ReceivedRtp) {
        self.add_packet(p.seq, &p.payload, p.received_at);
    }

    /// Count one packet with extended sequence `seq` received at `received_at`.
    pub(crate) fn add_packet(&mut self, seq: u64, payload: &[u8], received_at: SystemTime) {
        self.packets += 1;
        self.bytes += payload.len() as u64;
        if self.video {
            if let Some((w, _)) = pylon_testkit::vp8::keyframe_size(payload) {
                self.frame_width = Some(w);
            }
        }
        self.seq_range = Some(match self.seq_range {
            None => (seq, seq),
            Some((lo, hi)) => (lo.min(seq), hi.max(seq)),
        });
        if let Some(sent) = sent_at(payload) {
            let recv = received_at
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_micros() as u64;
            self.latencies_us
                .push(recv.saturating_sub(sent).min(u32::MAX as u64) as u32);
        }
    }

    fn lost(&self) -> u64 {
        self.seq_range
            .map(|(lo, hi)| (hi - lo + 1).saturating_sub(self.packets))
            .unwrap_or(0)
    }
}

/// Where the send time sits in a payload we generated: after an audio payload's start, a
/// keyframe's, delta frame's or continuation's descriptor and header, with or without the
/// five bytes of temporal-layer descriptor extensions.
fn sent_at(payload: &[u8]) -> Option<u64> {
    let at = [0usize, 11, 4, 1, 16, 9, 6]
        .into_iter()
        .find(|&at| payload.get(at..at + 4) == Some(&MAGIC[..]))?;
    let b = payload.get(at + 4..at + 12)?;
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

fn stamp(len: usize) -> Vec<u8> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64;
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&MAGIC);
    v.extend_from_slice(&now.to_be_bytes());
    v.resize(len.max(12), 0x5a);
    v
}

/// One video frame of `bytes` on one layer, split into packets; `temporal` (PictureID,
/// TL0PICIDX, temporal layer, layer sync) adds those to every packet's descriptor.
fn video_frame(
    bytes: usize,
    keyframe: bool,
    width: u16,
    height: u16,
    timestamp: u32,
    temporal: Option<(u16, u8, u8, bool)>,
) -> Vec<RtpOut> {
    let n = bytes.div_ceil(MAX_PAYLOAD).max(1);
    (0..n)
        .map(|i| {
            let body = stamp(bytes / n);
            let payload = match (i, keyframe) {
                (0, true) => vp8::keyframe_start(width, height, &body),
                (0, false) => vp8::delta_start(&body),
                _ => vp8::continuation(&body),
            };
            let payload = match temporal {
                Some((picture_id, tl0, tid, sync)) => {
                    vp8::with_temporal(&payload, picture_id, tl0, tid, sync)
                }
                None => payload,
            };
            RtpOut {
                payload,
                timestamp,
                marker: i == n - 1,
            }
        })
        .collect()
}

#[derive(Serialize)]
struct Summary {
    participants: usize,
    joined: usize,
    join_ms_p50: f64,
    join_ms_p99: f64,
    duration_s: f64,
    tracks: usize,
    packets: u64,
    bytes: u64,
    audio_kbps_per_track: f64,
    video_kbps_per_track: f64,
    loss_pct: f64,
    latency_ms_p50: f64,
    latency_ms_p99: f64,
    latency_ms_max: f64,
    /// With --server-pid: the server's CPU seconds while media flowed, per packet the
    /// subscribers received (each is one forwarded egress packet).
    #[serde(skip_serializing_if = "Option::is_none")]
    server_cpu_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_cpu_us_per_packet: Option<f64>,
    /// Growth of the server's resident memory from before the first join to the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    server_rss_growth_kb: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_rss_kb: Option<u64>,
    /// With --server-pid against Pylon: each media worker's share of the workers' CPU while
    /// media flowed (how evenly the forwarding is spread).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    server_worker_cpu_share: Vec<f64>,
    /// What each participant received (payload bitrates, and the widths of the video layers
    /// reaching it), in join order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    receivers: Vec<ReceiverSummary>,
    errors: Vec<String>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

struct Participant {
    identity: String,
    client: Client,
    stats: HashMap<String, TrackStats>,
}

type Shared = Arc<Mutex<Vec<Participant>>>;

/// Publish audio (and video) on `client` until `stop`.
async fn publish(client: &mut Client, args: &LoadTestArgs, n: usize) -> anyhow::Result<Vec<LocalTrack>> {
    let mut tracks = vec![client.publish(TrackSpec::audio(&format!("a{n}"))).await?];
    if !args.audio_only {
        let mut spec = TrackSpec::video(&format!("v{n}"), VIDEO_WIDTH, VIDEO_HEIGHT);
        if !args.no_simulcast {
            spec = spec.with_simulcast();
        }
        tracks.push(client.publish(spec).await?);
    }
    Ok(tracks)
}

/// Send media on every publisher's tracks until `until`, paced by a 10 ms tick.
async fn send_media(
    shared: Shared,
    tracks: Vec<(usize, Vec<LocalTrack>)>,
    args: LoadTestArgs,
    until: Instant,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let start = Instant::now();
    let plan = MediaPlan::new(&args);
    let (mut audio_sent, mut frames_sent) = (0u64, 0u64);
    // Per publisher, the layers (bit per layer) a keyframe was asked for and not yet sent.
    let mut asked = vec![0u8; tracks.len()];
    while Instant::now() < until {
        tick.tick().await;
        let elapsed = start.elapsed();
        let mut parts = shared.lock().await;
        for rtp in plan.audio_due(elapsed, &mut audio_sent) {
            for (i, t) in &tracks {
                let _ = parts[*i].client.write_rtp(&t[0], rtp.clone());
            }
        }
        for ((i, t), asked) in tracks.iter().zip(asked.iter_mut()) {
            for (mid, rid) in parts[*i].client.take_keyframe_requests() {
                let Some(video) = t.get(1).filter(|v| v.mid == mid) else {
                    continue;
                };
                let layer = SIMULCAST_RIDS
                    .iter()
                    .position(|r| rid == Some((*r).into()))
                    .filter(|_| !video.simulcast.is_empty())
                    .unwrap_or(0);
                *asked |= 1 << layer;
            }
        }
        for f in plan.frames_due(elapsed, &mut frames_sent) {
            let periodic = periodic_keyframe(f);
            for (layer, rid) in SIMULCAST_RIDS.iter().enumerate().take(plan.layer_count()) {
                let bit = 1u8 << layer;
                let shared_frame = plan.layer_frame(f, layer, periodic);
                // Generated for the first publisher whose keyframe request it answers.
                let mut answer: Option<Vec<RtpOut>> = None;
                for ((i, t), asked) in tracks.iter().zip(asked.iter_mut()) {
                    let video = &t[1];
                    let key = !periodic && *asked & bit != 0 && plan.keyframe_may_start(f);
                    if periodic || key {
                        *asked &= !bit;
                    }
                    let packets = if key {
                        answer.get_or_insert_with(|| plan.layer_frame(f, layer, true))
                    } else {
                        &shared_frame
                    };
                    for rtp in packets {
                        let _ = if video.simulcast.is_empty() {
                            parts[*i].client.write_rtp(video, rtp.clone())
                        } else {
                            parts[*i].client.write_rtp_layer(video, rid, rtp.clone())
                        };
                    }
                }
            }
        }
    }
}

pub async fn run(args: LoadTestArgs) -> anyhow::Result<()> {
    let total = args.rooms * (args.publishers + args.subscribers);
    anyhow::ensure!(total > 0, "nothing to do: no publishers or subscribers");
    let probe = (!args.server_pid.is_empty()).then(|| ServerProbe {
        pids: args.server_pid.clone(),
        ticks: clock_ticks_per_second(),
    });
    eprintln!(
        "load-test: {} room(s) x ({} publishers + {} subscribers) against {}{}",
        args.rooms,
        args.publishers,
        args.subscribers,
        args.url,
        if args.janus { " (Janus videoroom)" } else { "" }
    );
    anyhow::ensure!(
        !args.janus || (args.warmup.is_zero() && args.subscriber_ip.is_empty()),
        "--warmup and --subscriber-ip are for LiveKit servers, not --janus"
    );
    let collected = if args.janus {
        crate::janus::run(&args, probe.as_ref()).await?
    } else {
        run_livekit(&args, probe.as_ref()).await?
    };
    let summary = summarize(total, collected);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_table(&summary);
    }
    anyhow::ensure!(summary.joined > 0, "no participant could join");
    anyhow::ensure!(summary.packets > 0, "no media was received");
    Ok(())
}

/// Join, send and receive through the LiveKit protocol.
async fn run_livekit(args: &LoadTestArgs, probe: Option<&ServerProbe>) -> anyhow::Result<Collected> {
    let creds = ApiCredentials {
        key: args.api_key.clone(),
        secret: args.api_secret.clone(),
    };
    let shared: Shared = Arc::new(Mutex::new(Vec::new()));
    let mut publishing: Vec<(usize, Vec<LocalTrack>)> = Vec::new();
    let mut join_ms = Vec::new();
    let mut errors = Vec::new();
    let opts = ClientOptions {
        sdk: "pylon-load-test".into(),
        local_ip: args.local_ip,
        transport: if args.ice_tcp {
            pylon_testkit::Transport::Tcp
        } else if args.turn {
            pylon_testkit::Transport::Turn
        } else {
            pylon_testkit::Transport::Udp
        },
        ..ClientOptions::default()
    };
    let before_join = probe.map(|p| p.sample()).transpose()?;
    for room_i in 0..args.rooms {
        let room = if args.rooms == 1 {
            args.room.clone()
        } else {
            format!("{}-{room_i}", args.room)
        };
        for n in 0..args.publishers + args.subscribers {
            let publisher = n < args.publishers;
            let identity = format!("{}-{room_i}-{n}", if publisher { "pub" } else { "sub" });
            let url = match &args.subscriber_url {
                Some(u) if !publisher => u,
                _ => {
                    let urls = 1 + args.also_url.len();
                    match n % urls {
                        0 => &args.url,
                        i => &args.also_url[i - 1],
                    }
                }
            };
            let mut opts = opts.clone();
            if !publisher && !args.subscriber_ip.is_empty() {
                let i = room_i * args.subscribers + n - args.publishers;
                opts.local_ip = args.subscriber_ip[i % args.subscriber_ip.len()];
            }
            let started = Instant::now();
            let joined = async {
                let mut c = Client::connect_with(url, &creds.join_token(&room, &identity), opts).await?;
                c.wait_until("the subscriber connection", |o| o.subscriber_ready())
                    .await?;
                let tracks = if publisher {
                    publish(&mut c, args, n).await?
                } else {
                    Vec::new()
                };
                anyhow::Ok((c, tracks))
            }
            .await;
            match joined {
                Ok((client, tracks)) => {
                    join_ms.push(started.elapsed().as_secs_f64() * 1000.0);
                    let mut parts = shared.lock().await;
                    if !tracks.is_empty() {
                        publishing.push((parts.len(), tracks));
                    }
                    parts.push(Participant {
                        identity: identity.clone(),
                        client,
                        stats: HashMap::new(),
                    });
                }
                Err(e) => errors.push(format!("{identity}: {e:#}")),
            }
            tokio::time::sleep(args.join_interval).await;
        }
    }
    let joined = shared.lock().await.len();
    eprintln!(
        "load-test: {joined}/{} joined; sending media for {:?}",
        args.rooms * (args.publishers + args.subscribers),
        args.duration
    );

    let measure_from = Instant::now() + args.warmup;
    let until = measure_from + args.duration;
    let sender = tokio::spawn(send_media(shared.clone(), publishing, args.clone(), until));
    let mut media_start = None;
    let mut last_packets = 0u64;
    // Collect while sending, and a little after so packets in flight arrive.
    let drain_until = until + Duration::from_millis(500);
    let mut next_progress = Instant::now() + Duration::from_secs(1);
    while Instant::now() < drain_until {
        if media_start.is_none() && Instant::now() >= measure_from {
            // The warm-up is over: what arrived so far is not counted.
            media_start = Some(probe.map(|p| p.sample()).transpose()?);
            eprintln!("load-test: measuring for {:?}", args.duration);
            let mut parts = shared.lock().await;
            for p in parts.iter_mut() {
                p.client.take_rtp();
                p.stats.clear();
            }
            last_packets = 0;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut parts = shared.lock().await;
        let mut packets = 0;
        for p in parts.iter_mut() {
            for (sid, rtp) in p.client.take_rtp() {
                let video = p
                    .client
                    .observed()
                    .remote_track(&sid)
                    .is_some_and(|t| t.kind.is_video());
                let s = p.stats.entry(sid).or_default();
                s.video = video;
                for pkt in &rtp {
                    s.add(pkt);
                }
            }
            packets += p.stats.values().map(|s| s.packets).sum::<u64>();
        }
        drop(parts);
        if Instant::now() >= next_progress {
            next_progress += Duration::from_secs(1);
            eprintln!(
                "load-test: {:>5.1}s  {joined} participants  {:>8} packets received  {:>7} pkt/s",
                Instant::now()
                    .saturating_duration_since(measure_from)
                    .as_secs_f64(),
                packets,
                packets - last_packets
            );
            last_packets = packets;
        }
    }
    sender.await.context("media sender")?;
    let media_end = probe.map(|p| p.sample()).transpose()?;
    let media_start = media_start.flatten();
    let measured = Instant::now()
        .saturating_duration_since(measure_from)
        .min(args.duration)
        .as_secs_f64()
        .max(0.001);
    let mut parts = std::mem::take(&mut *shared.lock().await);
    let receivers = parts
        .iter()
        .map(|p| ReceiverStats::of(&p.identity, p.stats.values()))
        .collect();
    let stats = parts
        .iter_mut()
        .flat_map(|p| std::mem::take(&mut p.stats).into_values())
        .collect();
    for p in parts.drain(..) {
        let _ = p.client.leave().await;
    }
    Ok(Collected {
        joined,
        join_ms,
        errors,
        stats,
        receivers,
        measured,
        before_join,
        media_start,
        media_end,
    })
}

fn summarize(total: usize, c: Collected) -> Summary {
    let Collected {
        joined,
        mut join_ms,
        errors,
        stats,
        receivers,
        measured,
        before_join,
        media_start,
        media_end,
    } = c;
    let (mut audio_bits, mut audio_tracks, mut video_bits, mut video_tracks) = (0u64, 0u64, 0u64, 0u64);
    let (mut packets, mut bytes, mut lost) = (0u64, 0u64, 0u64);
    let mut lat: Vec<f64> = Vec::new();
    for s in &stats {
        packets += s.packets;
        bytes += s.bytes;
        lost += s.lost();
        if s.video {
            video_bits += s.bytes * 8;
            video_tracks += 1;
        } else {
            audio_bits += s.bytes * 8;
            audio_tracks += 1;
        }
        lat.extend(s.latencies_us.iter().map(|&u| u as f64 / 1000.0));
    }
    lat.sort_by(f64::total_cmp);
    join_ms.sort_by(f64::total_cmp);
    let per_track = |bits: u64, n: u64| {
        if n == 0 {
            0.0
        } else {
            bits as f64 / n as f64 / measured / 1000.0
        }
    };
    let summary = Summary {
        participants: total,
        joined,
        join_ms_p50: percentile(&join_ms, 0.5),
        join_ms_p99: percentile(&join_ms, 0.99),
        duration_s: measured,
        tracks: stats.len(),
        packets,
        bytes,
        audio_kbps_per_track: per_track(audio_bits, audio_tracks),
        video_kbps_per_track: per_track(video_bits, video_tracks),
        loss_pct: if packets + lost == 0 {
            0.0
        } else {
            lost as f64 * 100.0 / (packets + lost) as f64
        },
        latency_ms_p50: percentile(&lat, 0.5),
        latency_ms_p99: percentile(&lat, 0.99),
        latency_ms_max: lat.last().copied().unwrap_or(0.0),
        server_cpu_s: media_start
            .as_ref()
            .zip(media_end.as_ref())
            .map(|(a, b)| b.cpu_s - a.cpu_s),
        server_cpu_us_per_packet: media_start
            .as_ref()
            .zip(media_end.as_ref())
            .filter(|_| packets > 0)
            .map(|(a, b)| (b.cpu_s - a.cpu_s) * 1e6 / packets as f64),
        server_rss_growth_kb: before_join
            .as_ref()
            .zip(media_end.as_ref())
            .map(|(a, b)| b.rss_kb.saturating_sub(a.rss_kb)),
        server_rss_kb: media_end.as_ref().map(|s| s.rss_kb),
        server_worker_cpu_share: worker_shares(media_start.as_ref(), media_end.as_ref()),
        receivers: receivers
            .into_iter()
            .map(|r| ReceiverSummary {
                identity: r.identity,
                video_kbps: r.video_bytes as f64 * 8.0 / measured / 1000.0,
                audio_kbps: r.audio_bytes as f64 * 8.0 / measured / 1000.0,
                packets_per_s: r.packets as f64 / measured,
                audio_latency_ms_p50: percentile(&r.audio_latency_ms, 0.5),
                audio_latency_ms_p95: percentile(&r.audio_latency_ms, 0.95),
                video_widths: r.video_widths,
            })
            .collect(),
        errors,
    };
    summary
}

/// Each worker's share of the workers' CPU between two samples.
fn worker_shares(start: Option<&ProcSample>, end: Option<&ProcSample>) -> Vec<f64> {
    let (Some(a), Some(b)) = (start, end) else {
        return Vec::new();
    };
    if a.workers_cpu_s.len() != b.workers_cpu_s.len() {
        return Vec::new();
    }
    let used: Vec<f64> = a
        .workers_cpu_s
        .iter()
        .zip(&b.workers_cpu_s)
        .map(|(x, y)| (y - x).max(0.0))
        .collect();
    let total: f64 = used.iter().sum();
    if total <= 0.0 {
        return Vec::new();
    }
    used.iter().map(|u| u / total).collect()
}

fn print_table(s: &Summary) {
    let rows: BTreeMap<&str, String> = [
        (
            "1 participants joined",
            format!("{}/{}", s.joined, s.participants),
        ),
        (
            "2 join time p50 / p99",
            format!("{:.0} ms / {:.0} ms", s.join_ms_p50, s.join_ms_p99),
        ),
        ("3 subscribed tracks", s.tracks.to_string()),
        ("4 packets received", s.packets.to_string()),
        (
            "5 bitrate per track",
            format!(
                "audio {:.0} kbps, video {:.0} kbps",
                s.audio_kbps_per_track, s.video_kbps_per_track
            ),
        ),
        ("6 loss", format!("{:.2} %", s.loss_pct)),
        (
            "7 latency p50 / p99 / max",
            format!(
                "{:.2} / {:.2} / {:.2} ms",
                s.latency_ms_p50, s.latency_ms_p99, s.latency_ms_max
            ),
        ),
    ]
    .into_iter()
    .chain(s.server_cpu_us_per_packet.map(|us| {
        (
            "8 server CPU per packet",
            format!("{us:.2} us ({:.2} CPU s)", s.server_cpu_s.unwrap_or(0.0)),
        )
    }))
    .chain((!s.server_worker_cpu_share.is_empty()).then(|| {
        let shares: Vec<String> = s
            .server_worker_cpu_share
            .iter()
            .map(|x| format!("{:.0} %", x * 100.0))
            .collect();
        ("8 media CPU per worker", shares.join(" / "))
    }))
    .chain(s.server_rss_kb.map(|kb| {
        (
            "9 server memory",
            format!(
                "{} MiB resident, +{} KiB since before the joins",
                kb / 1024,
                s.server_rss_growth_kb.unwrap_or(0)
            ),
        )
    }))
    .collect();
    println!("\nload-test summary ({:.1} s of media)", s.duration_s);
    for (k, v) in rows {
        println!("  {:<28} {v}", &k[2..]);
    }
    for e in &s.errors {
        println!("  error: {e}");
    }
}
