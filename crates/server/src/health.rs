//! Honest liveness: a node whose media worker died or stopped turning is not alive.
//!
//! Every worker stamps the time of each loop turn (it turns at least every housekeeping
//! interval, 500 ms, even when idle). The watchdog checks them: a worker thread that ended
//! (a panic) or has not turned for [`STALL_AFTER`] makes `/healthz` answer 503 at once, every
//! session is told to reconnect (LiveKit `Leave` with action `RECONNECT`, so the SDKs come
//! back through the load balancer to a healthy node), and the process exits with
//! [`EXIT_WORKER_FAILED`] so its supervisor (Kubernetes) restarts it. Other workers' rooms are
//! not touched meanwhile: each worker owns its own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::error;

use crate::worker::WorkerHealth;

/// A worker that has not turned for this long is stuck.
pub const STALL_AFTER: Duration = Duration::from_secs(2);
/// How often the watchdog looks.
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// Time the sessions get to deliver their Leave before the process exits.
const NOTICE_GRACE: Duration = Duration::from_secs(1);
/// Exit status of a node whose worker failed (EX_SOFTWARE).
pub const EXIT_WORKER_FAILED: i32 = 70;

pub struct Health {
    failing: AtomicBool,
    /// Flips to `true` when the node fails; every session pump watches it.
    notice: watch::Sender<bool>,
    workers: Vec<Arc<WorkerHealth>>,
    epoch: Instant,
}

impl Health {
    pub fn new(workers: Vec<Arc<WorkerHealth>>, epoch: Instant) -> Self {
        Self {
            failing: AtomicBool::new(false),
            notice: watch::channel(false).0,
            workers,
            epoch,
        }
    }

    /// Whether the node is alive (what `/healthz` answers).
    pub fn alive(&self) -> bool {
        !self.failing.load(Ordering::Relaxed)
    }

    /// A receiver that sees `true` once the node fails.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.notice.subscribe()
    }

    /// The first worker that is dead or stuck, and why.
    fn failed_worker(&self, threads: &[std::thread::JoinHandle<()>]) -> Option<(usize, &'static str)> {
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        for (i, w) in self.workers.iter().enumerate() {
            if threads.get(i).is_some_and(|t| t.is_finished()) {
                return Some((i, "its thread ended (panic)"));
            }
            let last = w.last_turn_ms.load(Ordering::Relaxed);
            if now_ms.saturating_sub(last) > STALL_AFTER.as_millis() as u64 {
                return Some((i, "it stopped turning"));
            }
        }
        None
    }
}

/// Watch the workers; on a failure, fail the node and exit the process.
pub async fn watchdog(health: Arc<Health>, threads: Vec<std::thread::JoinHandle<()>>) {
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        let Some((worker, why)) = health.failed_worker(&threads) else {
            continue;
        };
        error!(
            worker,
            "media worker failed: {why}; telling every participant to reconnect and exiting"
        );
        health.failing.store(true, Ordering::Relaxed);
        let _ = health.notice.send(true);
        tokio::time::sleep(NOTICE_GRACE).await;
        std::process::exit(EXIT_WORKER_FAILED);
    }
}
