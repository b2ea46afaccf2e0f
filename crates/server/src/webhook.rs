//! Webhook delivery: signed, at-least-once, in order per URL, never blocking the media path.
//!
//! The media worker hands events to [`Notifier::notify`], which only does a `try_send` into a
//! bounded queue per URL; a full queue drops the event, counts it (metric + one log line per
//! burst) and reports the count in the next delivered event's `num_dropped`. One task per URL
//! delivers events strictly in order (so per-room order holds), retrying each with
//! exponential backoff until the receiver answers 2xx. The event id is minted once by the
//! shard, so retries carry the same id and receivers can deduplicate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use http_body_util::Full;
use hyper::{Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use livekit_protocol as lk;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// Events waiting per URL before new ones are dropped (and counted).
pub const QUEUE_CAPACITY: usize = 10_000;
/// First retry delay; doubles per attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// An event still undelivered after this long is given up (counted as dropped).
const GIVE_UP_AFTER: Duration = Duration::from_secs(600);
/// Per-request timeout, so a hung receiver cannot stall its queue forever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how to sign.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    pub urls: Vec<Uri>,
    pub api_key: String,
    pub secret: Vec<u8>,
    /// Events buffered per URL before new ones are dropped (and counted).
    pub queue_size: usize,
}

/// Counters, shared with the metrics endpoint.
#[derive(Debug, Default)]
pub struct WebhookStats {
    pub queued: AtomicU64,
    pub delivered: AtomicU64,
    pub retries: AtomicU64,
    pub dropped: AtomicU64,
    /// Events queued or in delivery now (all URLs).
    pub pending: AtomicU64,
}

/// Handle the media worker uses to emit events.
#[derive(Clone)]
pub struct Notifier {
    queues: Vec<(Uri, mpsc::Sender<Box<lk::WebhookEvent>>, Arc<AtomicU64>)>,
    pub stats: Arc<WebhookStats>,
}

impl Notifier {
    /// A notifier with no URLs: every event is discarded without cost.
    pub fn disabled() -> Self {
        Self {
            queues: Vec::new(),
            stats: Arc::default(),
        }
    }

    /// Start one delivery task per URL on the current tokio runtime.
    pub fn spawn(config: WebhookConfig) -> Self {
        let stats = Arc::new(WebhookStats::default());
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let queues = config
            .urls
            .iter()
            .map(|url| {
                let (tx, rx) = mpsc::channel(config.queue_size.max(1));
                let dropped_since = Arc::new(AtomicU64::new(0));
                let task = Delivery {
                    url: url.clone(),
                    client: client.clone(),
                    api_key: config.api_key.clone(),
                    secret: config.secret.clone(),
                    stats: stats.clone(),
                    dropped_since: dropped_since.clone(),
                };
                tokio::spawn(task.run(rx));
                (url.clone(), tx, dropped_since)
            })
            .collect();
        Self { queues, stats }
    }

    /// Queue an event for every URL; never waits.
    pub fn notify(&self, event: Box<lk::WebhookEvent>) {
        for (url, tx, dropped_since) in &self.queues {
            match tx.try_send(event.clone()) {
                Ok(()) => {
                    self.stats.queued.fetch_add(1, Ordering::Relaxed);
                    self.stats.pending.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    let total = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    if dropped_since.fetch_add(1, Ordering::Relaxed) == 0 {
                        warn!(%url, total, event = %event.event, "webhook queue full; dropping events");
                    }
                }
            }
        }
    }
}

struct Delivery {
    url: Uri,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    api_key: String,
    secret: Vec<u8>,
    stats: Arc<WebhookStats>,
    dropped_since: Arc<AtomicU64>,
}

impl Delivery {
    #[allow(deprecated)] // `num_dropped` is still the field the SDK receivers read
    async fn run(self, mut rx: mpsc::Receiver<Box<lk::WebhookEvent>>) {
        while let Some(mut event) = rx.recv().await {
            let dropped = self.dropped_since.swap(0, Ordering::Relaxed);
            event.num_dropped = i32::try_from(dropped).unwrap_or(i32::MAX);
            let body = match serde_json::to_vec(&*event) {
                Ok(b) => Bytes::from(b),
                Err(e) => {
                    warn!("webhook event not serializable: {e}");
                    self.stats.pending.fetch_sub(1, Ordering::Relaxed);
                    continue;
                }
            };
            self.deliver(&event, body).await;
            self.stats.pending.fetch_sub(1, Ordering::Relaxed);
        }
    }

    async fn deliver(&self, event: &lk::WebhookEvent, body: Bytes) {
        let started = tokio::time::Instant::now();
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.attempt(body.clone()).await {
                Ok(()) => {
                    self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                    debug!(url = %self.url, id = %event.id, event = %event.event, "webhook delivered");
                    return;
                }
                Err(why) => {
                    if started.elapsed() > GIVE_UP_AFTER {
                        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                        self.dropped_since.fetch_add(1, Ordering::Relaxed);
                        warn!(url = %self.url, id = %event.id, "webhook given up after retries: {why}");
                        return;
                    }
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    info!(url = %self.url, id = %event.id, event = %event.event, "webhook failed, retrying: {why}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    async fn attempt(&self, body: Bytes) -> Result<(), String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let token = pylon_auth::sign_webhook(&body, &self.api_key, &self.secret, now);
        let req = Request::post(self.url.clone())
            .header("content-type", "application/webhook+json")
            .header("user-agent", "LiveKit")
            .header("authorization", token)
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, self.client.request(req))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("receiver answered {}", resp.status()))
        }
    }
}
