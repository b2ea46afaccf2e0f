//! Prometheus metrics on `prometheus_port` (LiveKit's key): `GET /metrics` in the text format.
//!
//! The media worker publishes its shard's counters here about once a second; the webhook
//! notifier updates its own counters as it goes. Reading never touches the media path.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::directory::Directory;
use crate::webhook::WebhookStats;

/// What the media worker publishes: its shard's counters and sizes.
#[derive(Debug, Default)]
pub struct ShardGauges {
    pub datagrams_in: AtomicU64,
    pub datagrams_dropped: AtomicU64,
    pub rtp_in: AtomicU64,
    pub rtp_out: AtomicU64,
    pub data_forwarded: AtomicU64,
    pub relay_in: AtomicU64,
    pub relay_out: AtomicU64,
    pub handed_off: AtomicU64,
    pub media_dropped: AtomicU64,
    pub rooms: AtomicU64,
    pub participants: AtomicU64,
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
}

pub fn router(metrics: Metrics) -> Router {
    Router::new().route("/metrics", get(render)).with_state(metrics)
}

async fn render(State(m): State<Metrics>) -> impl IntoResponse {
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let sum = |f: fn(&ShardGauges) -> &AtomicU64| m.workers.iter().map(|g| get(f(g))).sum::<u64>();
    let w = &m.webhook;
    let rooms = match &m.directory {
        Some(d) => d.lock().map_or(0, |d| d.room_count() as u64),
        None => sum(|g| &g.rooms),
    };
    let rows: [(&str, &str, &str, u64); 16] = [
        (
            "pylon_rooms",
            "gauge",
            "Open rooms (a room spread over several workers counts once).",
            rooms,
        ),
        (
            "pylon_participants",
            "gauge",
            "Participants hosted by this node.",
            sum(|g| &g.participants),
        ),
        (
            "pylon_workers",
            "gauge",
            "Media worker threads.",
            m.workers.len() as u64,
        ),
        (
            "pylon_datagrams_received_total",
            "counter",
            "UDP datagrams received on the media port.",
            sum(|g| &g.datagrams_in),
        ),
        (
            "pylon_datagrams_dropped_total",
            "counter",
            "Datagrams that matched no peer or were not parseable.",
            sum(|g| &g.datagrams_dropped),
        ),
        (
            "pylon_rtp_packets_received_total",
            "counter",
            "RTP packets received from publishers.",
            sum(|g| &g.rtp_in),
        ),
        (
            "pylon_rtp_packets_forwarded_total",
            "counter",
            "RTP packets written to subscribers.",
            sum(|g| &g.rtp_out),
        ),
        (
            "pylon_data_packets_forwarded_total",
            "counter",
            "Data packets delivered to participants.",
            sum(|g| &g.data_forwarded),
        ),
        (
            "pylon_worker_relay_messages_sent_total",
            "counter",
            "Messages sent to other workers for rooms spread over workers (state, media, feedback).",
            sum(|g| &g.relay_out),
        ),
        (
            "pylon_worker_relay_messages_received_total",
            "counter",
            "Messages received from other workers for rooms spread over workers.",
            sum(|g| &g.relay_in),
        ),
        (
            "pylon_datagrams_handed_off_total",
            "counter",
            "Datagrams that landed on one worker's socket and were handed to the worker owning their peer.",
            sum(|g| &g.handed_off),
        ),
        (
            "pylon_worker_media_dropped_total",
            "counter",
            "Media messages dropped because the receiving worker was too far behind.",
            sum(|g| &g.media_dropped),
        ),
        (
            "pylon_webhook_events_queued_total",
            "counter",
            "Webhook events queued for delivery (per URL).",
            get(&w.queued),
        ),
        (
            "pylon_webhook_events_delivered_total",
            "counter",
            "Webhook events a receiver acknowledged with 2xx.",
            get(&w.delivered),
        ),
        (
            "pylon_webhook_retries_total",
            "counter",
            "Failed webhook attempts that were retried.",
            get(&w.retries),
        ),
        (
            "pylon_webhook_events_dropped_total",
            "counter",
            "Webhook events lost: queue full or retries exhausted.",
            get(&w.dropped),
        ),
    ];
    let mut body = String::with_capacity(2048);
    write_rows(&mut body, &rows);
    let name = "pylon_worker_participants";
    help_and_type(
        &mut body,
        name,
        "gauge",
        "Participants hosted by each media worker.",
    );
    for (i, g) in m.workers.iter().enumerate() {
        let _ = writeln!(body, "{name}{{worker=\"{i}\"}} {}", get(&g.participants));
    }
    if let Some(r) = &m.relay {
        let pairs: [(&str, &str, &AtomicU64, &AtomicU64); 3] = [
            (
                "pylon_relay_bytes_total",
                "Bytes on the links to other nodes (state frames and media datagrams).",
                &r.bytes_sent,
                &r.bytes_received,
            ),
            (
                "pylon_relay_packets_total",
                "Media packets (datagrams) on the links to other nodes.",
                &r.packets_sent,
                &r.packets_received,
            ),
            (
                "pylon_relay_messages_total",
                "State and feedback messages on the links to other nodes.",
                &r.messages_sent,
                &r.messages_received,
            ),
        ];
        for (name, help, sent, received) in pairs {
            help_and_type(&mut body, name, "counter", help);
            let (sent, received) = (get(sent), get(received));
            let _ = writeln!(
                body,
                "{name}{{direction=\"sent\"}} {sent}\n{name}{{direction=\"received\"}} {received}"
            );
        }
        let rows = [
            (
                "pylon_relay_links",
                "gauge",
                "Links to other nodes that are up.",
                get(&r.links_up),
            ),
            (
                "pylon_relay_media_dropped_total",
                "counter",
                "Relayed media not sent or not understood (queue full, too large, unknown codec).",
                get(&r.media_dropped),
            ),
            (
                "pylon_relay_refused_total",
                "counter",
                "Relay connections refused (wrong secret, garbage, replayed handshake, version).",
                get(&r.refused),
            ),
        ];
        write_rows(&mut body, &rows);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// A metric's `# HELP` and `# TYPE` lines.
fn help_and_type(body: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(body, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Metrics without labels: (name, kind, help, value).
fn write_rows(body: &mut String, rows: &[(&str, &str, &str, u64)]) {
    for (name, kind, help, value) in rows {
        help_and_type(body, name, kind, help);
        let _ = writeln!(body, "{name} {value}");
    }
}
