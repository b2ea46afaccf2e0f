//! Pylon's runtime: configuration, the HTTP/WebSocket edge, the node's directory and its
//! media workers, wired together by [`run`].

pub mod api;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod demux;
pub mod directory;
pub mod drain;
pub mod egress;
mod fault;
pub mod fdlimit;
pub mod framing;
pub mod handoff;
pub mod health;
pub mod http;
pub mod metrics;
pub mod node;
pub mod region_api;
pub mod session;
pub mod steer;
pub mod tcp;
pub mod turn;
pub mod webhook;
pub mod wire;
pub mod worker;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use tracing::info;

pub use config::{Config, ConfigError, Overrides};

/// Run a node until the process is told to stop.
pub async fn run(config: Config) -> anyhow::Result<()> {
    fdlimit::raise();
    let notifier = match &config.webhook {
        Some(w) => webhook::Notifier::spawn(w.clone()),
        None => webhook::Notifier::disabled(),
    };
    let directory = Arc::new(Mutex::new(directory::Directory::new(
        config.workers,
        config.room_spread_threshold,
        config.room.clone(),
    )));
    let metrics = metrics::Metrics {
        workers: (0..config.workers).map(|_| Default::default()).collect(),
        webhook: notifier.stats.clone(),
        directory: Some(directory.clone()),
        relay: None,
        node: None,
        tcp: Default::default(),
        turn: Default::default(),
    };
    let (cluster_tx, cluster_rx) = tokio::sync::mpsc::unbounded_channel();
    let shared = worker::Shared {
        directory: directory.clone(),
        cluster: config.cluster.is_some().then_some(cluster_tx),
        notifier,
        epoch: Instant::now(),
    };
    let workers = worker::spawn(
        config.workers,
        config.udp_bind_addr(),
        config.shard_config(),
        shared.clone(),
        &metrics.workers,
    )
    .with_context(|| format!("binding UDP media port {}", config.udp_bind_addr()))?;
    if let Some(addr) = config.tcp_bind_addr() {
        let listener = tcp::bind(addr)
            .await
            .with_context(|| format!("binding ICE/TCP media port {addr} (rtc.tcp_port; 0 turns it off)"))?;
        tokio::spawn(tcp::serve(listener, workers.handles.clone(), metrics.tcp.clone()));
    }
    if let Some(t) = &config.turn {
        turn::start(t.clone(), metrics.turn.clone()).await?;
    }
    let health = Arc::new(health::Health::new(
        workers.handles.iter().map(|h| h.health.clone()).collect(),
        shared.epoch,
    ));
    tokio::spawn(health::watchdog(health.clone(), workers.threads));
    let cluster = match &config.cluster {
        Some(c) => Some(
            cluster::Cluster::start(
                c.clone(),
                workers.handles.clone(),
                directory.clone(),
                config.room.clone(),
                cluster_rx,
            )
            .context("starting the node's region membership")?,
        ),
        None => None,
    };
    let mut metrics = metrics;
    let webhooks = metrics.webhook.clone();
    metrics.relay = cluster.as_ref().and_then(|c| c.relay_stats());
    let node = Arc::new(node::Node {
        workers: workers.handles,
        directory,
        cluster: cluster.clone(),
        draining: Default::default(),
        gauges: metrics.workers.clone(),
        limits: config.limits,
    });
    metrics.node = Some((node.clone(), health.clone()));
    if let Some(port) = config.prometheus_port {
        let addr = std::net::SocketAddr::new(config.bind, port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding prometheus_port {addr}"))?;
        info!(%addr, "metrics on /metrics");
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, metrics::router(metrics)).await {
                tracing::warn!("metrics endpoint stopped: {e}");
            }
        });
    }
    let node_for_drain = node.clone();
    let state = Arc::new(http::AppState {
        keys: config.keys.clone(),
        single_pc: config.single_peer_connection,
        node,
        health,
        next_session: AtomicU64::new(1),
    });
    let listener = tokio::net::TcpListener::bind(config.http_addr())
        .await
        .with_context(|| format!("binding HTTP port {}", config.http_addr()))?;
    info!(
        http = %config.http_addr(),
        udp = %config.udp_bind_addr(),
        tcp = ?config.tcp_bind_addr(),
        node_ip = %config.node_ip,
        workers = config.workers,
        dev = config.dev,
        "pylon listening"
    );
    let mut app = http::router(state);
    if let Some(demo) = config.demo.clone() {
        app = app.merge(demo::router(demo));
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(drain::on_signal(config.drain, node_for_drain, webhooks))
        .await
        .context("http server")?;
    if let Some(c) = cluster {
        c.shutdown().await;
    }
    Ok(())
}
