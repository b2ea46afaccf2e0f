//! Prometheus metrics on `prometheus_port` (LiveKit's key): `GET /metrics` in the text format.
//!
//! The media worker publishes its shard's counters here about once a second; the webhook
//! notifier updates its own counters as it goes. Reading never touches the media path.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::webhook::WebhookStats;

/// What the media worker publishes: its shard's counters and sizes.
#[derive(Debug, Default)]
pub struct ShardGauges {
    pub datagrams_in: AtomicU64,
    pub datagrams_dropped: AtomicU64,
    pub rtp_in: AtomicU64,
    pub rtp_out: AtomicU64,
    pub data_forwarded: AtomicU64,
    pub rooms: AtomicU64,
    pub participants: AtomicU64,
}

/// Everything the endpoint reports.
#[derive(Clone, Default)]
pub struct Metrics {
    pub shard: Arc<ShardGauges>,
    pub webhook: Arc<WebhookStats>,
}

pub fn router(metrics: Metrics) -> Router {
    Router::new().route("/metrics", get(render)).with_state(metrics)
}

async fn render(State(m): State<Metrics>) -> impl IntoResponse {
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let s = &m.shard;
    let w = &m.webhook;
    let rows: [(&str, &str, &str, u64); 11] = [
        ("pylon_rooms", "gauge", "Open rooms.", get(&s.rooms)),
        (
            "pylon_participants",
            "gauge",
            "Participants in all rooms.",
            get(&s.participants),
        ),
        (
            "pylon_datagrams_received_total",
            "counter",
            "UDP datagrams received on the media port.",
            get(&s.datagrams_in),
        ),
        (
            "pylon_datagrams_dropped_total",
            "counter",
            "Datagrams that matched no peer or were not parseable.",
            get(&s.datagrams_dropped),
        ),
        (
            "pylon_rtp_packets_received_total",
            "counter",
            "RTP packets received from publishers.",
            get(&s.rtp_in),
        ),
        (
            "pylon_rtp_packets_forwarded_total",
            "counter",
            "RTP packets written to subscribers.",
            get(&s.rtp_out),
        ),
        (
            "pylon_data_packets_forwarded_total",
            "counter",
            "Data packets delivered to participants.",
            get(&s.data_forwarded),
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
    for (name, kind, help, value) in rows {
        let _ = writeln!(body, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
