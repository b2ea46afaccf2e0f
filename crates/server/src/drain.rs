//! Draining: what a node does when told to stop (SIGTERM, as Kubernetes does before it
//! removes a pod; Ctrl-C likewise).
//!
//! 1. At once: `/readyz` answers 503 (the load balancer stops sending clients) and new joins
//!    are refused with 503; resumes of sessions hosted here still work and rooms go on.
//! 2. After `drain.migrate_after` (sooner if everyone hosted here has left): every
//!    participant hosted here is told to reconnect (LiveKit `Leave`, action `RECONNECT`): the
//!    SDKs come back through the load balancer and land on another node; the others in their
//!    rooms see them leave and rejoin.
//! 3. Once nobody is hosted here (or `drain.timeout` after the signal): a node alone closes
//!    its rooms (`room_finished`), webhooks still queued get a moment to go out, and the
//!    process exits 0. A node of a region leaves its rooms to the other nodes instead (their
//!    homes move by takeover).
//!
//! A second SIGTERM (or Ctrl-C) exits at once.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use pylon_core::admin::AdminRequest;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

use crate::config::DrainConfig;
use crate::node::Node;
use crate::webhook::WebhookStats;

/// How often the drain looks whether the node is empty.
const POLL: Duration = Duration::from_millis(100);
/// At most this long for queued webhooks to go out before the process exits.
const WEBHOOK_FLUSH: Duration = Duration::from_secs(2);

/// Resolve when the process should stop serving: after a signal and the drain it starts.
pub async fn on_signal(config: DrainConfig, node: Arc<Node>, webhooks: Arc<WebhookStats>) {
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        warn!("no SIGTERM handler: the node cannot drain");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    node.draining.store(true, Ordering::Relaxed);
    info!(
        participants = node.hosted(),
        migrate_after_s = config.migrate_after.as_secs(),
        "told to stop: draining (not ready, new joins refused; participants move to other nodes after migrate_after)"
    );
    tokio::select! {
        () = drain(config, &node, &webhooks) => info!("drained; exiting"),
        () = tokio::time::sleep(config.timeout) => warn!(
            participants = node.hosted(),
            "drain.timeout reached with participants still here; exiting"
        ),
        _ = term.recv() => info!("told to stop again: exiting at once"),
        _ = tokio::signal::ctrl_c() => info!("told to stop again: exiting at once"),
    }
}

async fn drain(config: DrainConfig, node: &Node, webhooks: &WebhookStats) {
    // Participants keep their node until `migrate_after`, unless they all leave before:
    // a node hosting nobody has nothing to wait for. They go by themselves more often than
    // it seems: one that drops its connection resumes through the load balancer, lands on
    // another node, rejoins there, and that join replaces its session here.
    let _ = tokio::time::timeout(config.migrate_after, nobody_hosted(node)).await;
    let hosted = node.hosted();
    if hosted > 0 {
        info!(
            participants = hosted,
            "asking this node's participants to reconnect to another node"
        );
        node.evict_all();
    }
    nobody_hosted(node).await;
    if node.cluster.is_none() {
        // Alone, nobody else will finish the rooms: close them now (room_finished).
        for room in node.room_names() {
            let _ = node.admin(AdminRequest::DeleteRoom { room }).await;
        }
    }
    let flushed = tokio::time::timeout(WEBHOOK_FLUSH, async {
        loop {
            let queued = webhooks.queued.load(Ordering::Relaxed);
            let done = webhooks.delivered.load(Ordering::Relaxed) + webhooks.dropped.load(Ordering::Relaxed);
            if done >= queued {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
    })
    .await;
    if flushed.is_err() {
        warn!("webhooks still queued when the node stopped");
    }
}

/// Resolve once the node hosts nobody.
async fn nobody_hosted(node: &Node) {
    while node.hosted() > 0 {
        tokio::time::sleep(POLL).await;
    }
}
