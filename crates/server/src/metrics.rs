//! Prometheus metrics on `prometheus_port` (LiveKit's key): `GET /metrics`, encoded by the
//! `prometheus-client` crate in the OpenMetrics text format.
//!
//! LiveKit's names where the concept exists (an operator's LiveKit dashboards keep working),
//! Pylon's own under `pylon_`. Every value is read at scrape time ([`Collector`]) from what
//! its owner publishes: each media worker copies its shard's counters here about once a
//! second (never per packet: the media path takes no lock and touches no shared cache line),
//! the webhook notifier and the relay count as they go, the cluster lists its links.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use pylon_core::shard::{LatencyHistogram, ShardStats, KIND_AUDIO, KIND_VIDEO};

use crate::directory::Directory;
use crate::health::Health;
use crate::node::Node;
use crate::webhook::WebhookStats;

/// What the media worker publishes: its shard's counters and sizes.
#[derive(Debug, Default)]
pub struct ShardGauges {
    pub datagrams_in: AtomicU64,
    pub datagrams_dropped: AtomicU64,
    pub handed_off: AtomicU64,
    /// Peers' flows taken off other workers' sockets now (`steer.rs`).
    pub steered_flows: AtomicU64,
    pub media_dropped: AtomicU64,
    pub rooms: AtomicU64,
    pub participants: AtomicU64,
    pub tracks_published: AtomicU64,
    pub tracks_subscribed: AtomicU64,
    /// Media bytes per second in and out over the last publishing interval.
    pub bytes_per_sec: AtomicU64,
    /// Share of the last interval the worker spent working, in thousandths.
    pub busy_permille: AtomicU64,
    /// The shard's counters as of the last publishing (copied once a second).
    pub stats: Mutex<ShardStats>,
}

impl ShardGauges {
    fn stats(&self) -> ShardStats {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Everything the endpoint reports.
#[derive(Clone, Default)]
pub struct Metrics {
    /// One per media worker.
    pub workers: Vec<Arc<ShardGauges>>,
    pub webhook: Arc<WebhookStats>,
    /// Counts rooms once however many workers hold them (read on each scrape).
    pub directory: Option<Arc<Mutex<Directory>>>,
    /// The node's links to other nodes (with a region).
    pub relay: Option<Arc<pylon_relay::RelayStats>>,
    /// Readiness, draining and the cluster's links (set once the node is built).
    pub node: Option<(Arc<Node>, Arc<Health>)>,
    /// The ICE/TCP listener.
    pub tcp: Arc<crate::tcp::TcpStats>,
    /// The embedded TURN server (zeros when `turn.enabled` is off).
    pub turn: Arc<crate::turn::TurnStats>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

pub fn router(metrics: Metrics) -> Router {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(metrics));
    Router::new()
        .route("/metrics", get(render))
        .with_state(Arc::new(registry))
}

async fn render(State(registry): State<Arc<Registry>>) -> impl IntoResponse {
    let mut body = String::with_capacity(8192);
    // Invariant: writing to a String cannot fail, and our collector only writes.
    let _ = prometheus_client::encoding::text::encode(&mut body, &registry);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}

/// Writes one metric family at a time.
struct Out<'a, 'b>(&'a mut DescriptorEncoder<'b>);

type Labels<'a> = [(&'static str, &'a str)];

impl Out<'_, '_> {
    /// A counter; `name` without the `_total` the encoder appends.
    fn counter(&mut self, name: &str, help: &str, v: u64) -> fmt::Result {
        let c = ConstCounter::new(v);
        c.encode(self.0.encode_descriptor(name, help, None, c.metric_type())?)
    }

    fn gauge<V>(&mut self, name: &str, help: &str, v: V) -> fmt::Result
    where
        ConstGauge<V>: EncodeMetric,
    {
        let g = ConstGauge::new(v);
        g.encode(self.0.encode_descriptor(name, help, None, g.metric_type())?)
    }

    fn counters(&mut self, name: &str, help: &str, rows: &[(&Labels<'_>, u64)]) -> fmt::Result {
        let mut family = self.0.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (labels, v) in rows {
            ConstCounter::new(*v).encode(family.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn gauges<V: Copy>(&mut self, name: &str, help: &str, rows: &[(&Labels<'_>, V)]) -> fmt::Result
    where
        ConstGauge<V>: EncodeMetric,
    {
        let mut family = self.0.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (labels, v) in rows {
            ConstGauge::new(*v).encode(family.encode_family(labels)?)?;
        }
        Ok(())
    }

    /// A histogram of milliseconds (the encoder makes the buckets cumulative).
    fn histogram_ms(&mut self, name: &str, help: &str, h: &LatencyHistogram) -> fmt::Result {
        let buckets: Vec<(f64, u64)> = (h.buckets.iter().enumerate())
            // The encoder writes `f64::MAX` as `+Inf`.
            .map(|(i, n)| {
                (
                    LatencyHistogram::BOUNDS_MS.get(i).map_or(f64::MAX, |b| *b as f64),
                    *n,
                )
            })
            .collect();
        let mut m = self
            .0
            .encode_descriptor(name, help, None, MetricType::Histogram)?;
        m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            h.sum_ms as f64,
            h.count,
            &buckets,
            None,
        )
    }
}

/// One gauge summed over the workers.
pub fn sum(workers: &[Arc<ShardGauges>], f: fn(&ShardGauges) -> &AtomicU64) -> u64 {
    workers.iter().map(|g| f(g).load(Ordering::Relaxed)).sum()
}

/// The sum of every worker's shard counters.
fn total(workers: &[Arc<ShardGauges>]) -> ShardStats {
    let mut t = ShardStats::default();
    for w in workers {
        t.add(&w.stats());
    }
    t
}

impl Collector for Metrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let sum = |f: fn(&ShardGauges) -> &AtomicU64| sum(&self.workers, f);
        let s = total(&self.workers);
        let rooms = match &self.directory {
            Some(d) => d.lock().map_or(0, |d| d.room_count() as u64),
            None => sum(|g| &g.rooms),
        };
        let mut out = Out(&mut encoder);
        let o = &mut out;

        // LiveKit's names.
        o.gauge("livekit_room_total", "Open rooms on this node.", rooms as i64)?;
        let participants = sum(|g| &g.participants);
        o.gauge(
            "livekit_participant_total",
            "Participants hosted by this node.",
            participants as i64,
        )?;
        o.gauge(
            "livekit_track_published_total",
            "Tracks published by participants hosted here.",
            sum(|g| &g.tracks_published) as i64,
        )?;
        o.gauge(
            "livekit_track_subscribed_total",
            "Subscriptions of participants hosted here.",
            sum(|g| &g.tracks_subscribed) as i64,
        )?;
        // Both families have the same four label sets: (direction, type).
        const MEDIA: [(&str, &str, bool, usize); 4] = [
            ("incoming", "audio", true, KIND_AUDIO),
            ("incoming", "video", true, KIND_VIDEO),
            ("outgoing", "audio", false, KIND_AUDIO),
            ("outgoing", "video", false, KIND_VIDEO),
        ];
        let labels = MEDIA.map(|(d, t, _, _)| [("direction", d), ("type", t)]);
        let count = |incoming: bool, k: usize| if incoming { s.media_in[k] } else { s.media_out[k] };
        let packets: Vec<(&Labels<'_>, u64)> = (labels.iter().zip(MEDIA))
            .map(|(l, (_, _, incoming, k))| (&l[..], count(incoming, k).packets))
            .collect();
        o.counters(
            "livekit_packet",
            "RTP media packets: incoming from publishers, outgoing to subscribers.",
            &packets,
        )?;
        // LiveKit's name has no `_total`: a gauge-typed family that only grows.
        let bytes: Vec<(&Labels<'_>, i64)> = (labels.iter().zip(MEDIA))
            .map(|(l, (_, _, incoming, k))| (&l[..], count(incoming, k).bytes as i64))
            .collect();
        o.gauges(
            "livekit_packet_bytes",
            "RTP media bytes (payload and fixed header), by direction and kind.",
            &bytes,
        )?;
        let inc: &Labels<'_> = &[("direction", "incoming")];
        let outg: &Labels<'_> = &[("direction", "outgoing")];
        o.counters(
            "livekit_packet_loss",
            "Media packets lost: incoming, sent by publishers and never received; outgoing, reported lost by subscribers.",
            &[(inc, s.lost_in), (outg, s.lost_out)],
        )?;
        o.counters(
            "livekit_nack",
            "NACKs: incoming, received from subscribers; outgoing, sent to publishers.",
            &[(inc, s.nacks_in), (outg, s.nacks_out)],
        )?;
        o.counters(
            "livekit_pli",
            "Keyframe requests (PLI): incoming, from subscribers; outgoing, sent to publishers.",
            &[(inc, s.plis_in), (outg, s.plis_out)],
        )?;
        o.counters(
            "livekit_participant_join",
            "Joins by how far they got: signal_connected (a JoinResponse sent), rtc_connected (media connected).",
            &[
                (&[("state", "signal_connected")], s.joins_signalled),
                (&[("state", "rtc_connected")], s.joins_connected),
            ],
        )?;
        o.histogram_ms(
            "livekit_session_join_latency_ms",
            "Milliseconds from a join request to its first peer connection up.",
            &s.join_latency,
        )?;

        // Pylon's own: health.
        if let Some((node, health)) = &self.node {
            o.gauge(
                "pylon_ready",
                "1 while /readyz answers 200.",
                i64::from(node.unready(health).is_none()),
            )?;
            o.gauge(
                "pylon_draining",
                "1 once the node was told to stop.",
                i64::from(node.is_draining()),
            )?;
        }
        o.gauge(
            "pylon_workers",
            "Media worker threads.",
            self.workers.len() as i64,
        )?;
        let ids: Vec<String> = (0..self.workers.len()).map(|i| i.to_string()).collect();
        let labels: Vec<[(&str, &str); 1]> = ids.iter().map(|i| [("worker", i.as_str())]).collect();
        let busy: Vec<(&Labels<'_>, f64)> = (labels.iter().zip(&self.workers))
            .map(|(l, g)| (&l[..], get(&g.busy_permille) as f64 / 1000.0))
            .collect();
        o.gauges(
            "pylon_worker_busy_ratio",
            "Share of the last second each media worker spent working (not waiting for input).",
            &busy,
        )?;
        let hosted: Vec<(&Labels<'_>, i64)> = (labels.iter().zip(&self.workers))
            .map(|(l, g)| (&l[..], get(&g.participants) as i64))
            .collect();
        o.gauges(
            "pylon_worker_participants",
            "Participants hosted by each media worker.",
            &hosted,
        )?;

        // Pylon's own series from before the LiveKit names (kept: operators scrape them).
        o.gauge(
            "pylon_rooms",
            "Open rooms (a room spread over several workers counts once).",
            rooms as i64,
        )?;
        o.gauge(
            "pylon_participants",
            "Participants hosted by this node.",
            participants as i64,
        )?;
        let rows: [(&str, &str, u64); 8] = [
            ("pylon_datagrams_received", "UDP datagrams received on the media port.", sum(|g| &g.datagrams_in)),
            (
                "pylon_datagrams_dropped",
                "Datagrams that matched no peer or were not parseable.",
                sum(|g| &g.datagrams_dropped),
            ),
            ("pylon_rtp_packets_received", "RTP packets received from publishers.", s.rtp_in),
            ("pylon_rtp_packets_forwarded", "RTP packets written to subscribers.", s.rtp_out),
            ("pylon_data_packets_forwarded", "Data packets delivered to participants.", s.data_packets_forwarded),
            (
                "pylon_worker_relay_messages_sent",
                "Messages sent to other workers for rooms spread over workers (state, media, feedback).",
                s.relay_out,
            ),
            (
                "pylon_worker_relay_messages_received",
                "Messages received from other workers for rooms spread over workers.",
                s.relay_in,
            ),
            (
                "pylon_datagrams_handed_off",
                "Datagrams that landed on one worker's socket and were handed to the worker owning their peer.",
                sum(|g| &g.handed_off),
            ),
        ];
        for (name, help, v) in rows {
            o.counter(name, help, v)?;
        }
        o.gauge(
            "pylon_steered_flows",
            "Peers' UDP flows the owning worker receives on a connected socket of its own instead of by hand-off from the worker the kernel hashed them to.",
            sum(|g| &g.steered_flows) as i64,
        )?;
        o.counter(
            "pylon_worker_media_dropped",
            "Media messages dropped because the receiving worker was too far behind.",
            sum(|g| &g.media_dropped),
        )?;
        let t = &self.tcp;
        o.counter(
            "pylon_ice_tcp_connections_accepted",
            "ICE/TCP connections accepted on rtc.tcp_port.",
            get(&t.accepted),
        )?;
        o.counter(
            "pylon_ice_tcp_connections_refused",
            "ICE/TCP connections closed on accept because too many were still in their handshake.",
            get(&t.refused),
        )?;
        o.gauge(
            "pylon_ice_tcp_connections",
            "ICE/TCP connections open now.",
            t.open.load(std::sync::atomic::Ordering::Relaxed) as i64,
        )?;

        // Embedded TURN.
        let t = &self.turn;
        o.gauge(
            "pylon_turn_allocations",
            "TURN allocations (relay ports) held now.",
            t.allocations.load(std::sync::atomic::Ordering::Relaxed) as i64,
        )?;
        o.counter(
            "pylon_turn_allocations_made",
            "TURN allocations made.",
            get(&t.allocations_total),
        )?;
        o.counter(
            "pylon_turn_auth_failures",
            "TURN requests refused for a wrong, expired or foreign credential or nonce.",
            get(&t.auth_failures),
        )?;
        o.counter(
            "pylon_turn_dropped",
            "TURN datagrams dropped: not STUN, no allocation, channel or permission.",
            get(&t.dropped),
        )?;
        let refusals = t.peer_refusals.lock().map(|r| r.clone()).unwrap_or_default();
        let labels: Vec<[(&str, &str); 1]> = refusals.iter().map(|(c, _)| [("class", *c)]).collect();
        let rows: Vec<(&Labels<'_>, u64)> = labels
            .iter()
            .map(|l| &l[..])
            .zip(refusals.iter().map(|(_, v)| *v))
            .collect();
        o.counters(
            "pylon_turn_peer_refusals",
            "TURN permissions and channels refused because the peer is not this node's media port, by the address's class.",
            &rows,
        )?;

        // Webhooks.
        let w = &self.webhook;
        o.gauge(
            "pylon_webhook_queue",
            "Webhook events queued or in delivery now.",
            get(&w.pending) as i64,
        )?;
        o.counter(
            "pylon_webhook_events_queued",
            "Webhook events queued for delivery (per URL).",
            get(&w.queued),
        )?;
        o.counter(
            "pylon_webhook_events_delivered",
            "Webhook events a receiver acknowledged with 2xx.",
            get(&w.delivered),
        )?;
        o.counter(
            "pylon_webhook_retries",
            "Failed webhook attempts that were retried.",
            get(&w.retries),
        )?;
        o.counter(
            "pylon_webhook_events_dropped",
            "Webhook events lost: queue full or retries exhausted.",
            get(&w.dropped),
        )?;

        // Relay links (with a region).
        if let Some(r) = &self.relay {
            let pairs: [(&str, &str, &AtomicU64, &AtomicU64); 4] = [
                (
                    "pylon_relay_bytes",
                    "Bytes on the links to other nodes (state frames and media datagrams).",
                    &r.bytes_sent,
                    &r.bytes_received,
                ),
                (
                    "pylon_relay_packets",
                    "Media packets (datagrams) on the links to other nodes.",
                    &r.packets_sent,
                    &r.packets_received,
                ),
                (
                    "pylon_relay_direct_packets",
                    "Of the media packets, those sent or received by UDP beside QUIC (relay.direct_media).",
                    &r.direct_sent,
                    &r.direct_received,
                ),
                (
                    "pylon_relay_messages",
                    "State and feedback messages on the links to other nodes.",
                    &r.messages_sent,
                    &r.messages_received,
                ),
            ];
            for (name, help, sent, received) in pairs {
                o.counters(
                    name,
                    help,
                    &[
                        (&[("direction", "sent")], get(sent)),
                        (&[("direction", "received")], get(received)),
                    ],
                )?;
            }
            o.counter(
                "pylon_relay_media_dropped",
                "Relayed media not sent or not understood (queue full, too large, unknown codec).",
                get(&r.media_dropped),
            )?;
            o.counter(
                "pylon_relay_refused",
                "Relay connections refused (wrong secret, garbage, replayed handshake, version).",
                get(&r.refused),
            )?;
        }
        if let Some(cluster) = self.node.as_ref().and_then(|(n, _)| n.cluster.as_ref()) {
            let links = cluster.link_report();
            let labels: Vec<[(&str, &str); 2]> = links
                .iter()
                .map(|(node, region, _)| [("peer", node.as_str()), ("region", region.as_str())])
                .collect();
            let up: Vec<(&Labels<'_>, i64)> = labels.iter().map(|l| (&l[..], 1)).collect();
            o.gauges(
                "pylon_relay_links",
                "Links up to other nodes (1 per peer; region is the peer's).",
                &up,
            )?;
            let rtt: Vec<(&Labels<'_>, f64)> = labels
                .iter()
                .zip(&links)
                .map(|(l, (_, _, rtt))| (&l[..], rtt.as_secs_f64()))
                .collect();
            o.gauges(
                "pylon_relay_rtt_seconds",
                "Round-trip time of each link up (QUIC's smoothed estimate).",
                &rtt,
            )?;
        }
        Ok(())
    }
}
