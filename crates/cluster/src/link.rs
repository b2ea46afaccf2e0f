//! The connection to Redis: made lazily, replaced after a failure, bounded in time.
//!
//! One multiplexed connection is shared by every caller (commands are pipelined on it). It is
//! made on first use, so a node starts while Redis is down; it is dropped after an I/O error,
//! a timeout or a `READONLY` answer, and the next command makes a new one — through the
//! sentinels under Sentinel, so a failover is followed. Every operation (connecting included)
//! has a deadline: a directory call never hangs a caller for longer than that.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{
    AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, RedisConnectionInfo, RedisResult, TlsMode,
};

use crate::config::{ConfigError, Credentials, Server, ServerAddr, Target};
use crate::error::{needs_new_connection, was_dead_connection, DirectoryError};

/// Deadline of one directory operation, connecting included. Long enough for a Redis under
/// load, short enough that a renewal loop ticking every second notices an outage at once.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// The connection in use, numbered so that a failure only discards the connection that failed
/// (not a newer one another caller already made).
struct Current {
    id: u64,
    conn: MultiplexedConnection,
}

enum Connector {
    Direct(redis::Client),
    Sentinel {
        sentinel: Box<Sentinel>,
        master_name: String,
        master: SentinelNodeConnectionInfo,
    },
}

pub(crate) struct Link {
    current: Mutex<Option<Current>>,
    /// Held while connecting, so concurrent callers wait for one attempt instead of each
    /// making their own.
    connector: tokio::sync::Mutex<Connector>,
    next_id: AtomicU64,
    config: AsyncConnectionConfig,
}

impl Link {
    /// No I/O: the first operation connects.
    pub(crate) fn new(target: &Target) -> Result<Self, ConfigError> {
        Ok(Self {
            current: Mutex::new(None),
            connector: tokio::sync::Mutex::new(Connector::new(target)?),
            next_id: AtomicU64::new(1),
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(COMMAND_TIMEOUT)
                .set_response_timeout(COMMAND_TIMEOUT),
        })
    }

    /// Run `op` on the connection within [`COMMAND_TIMEOUT`]; `key` names the data concerned
    /// in a `Malformed` error.
    pub(crate) async fn run<T, F, Fut>(&self, key: &str, op: F) -> Result<T, DirectoryError>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        self.run_within(COMMAND_TIMEOUT, key, op).await
    }

    /// As [`Link::run`], with another deadline. A command that failed because the connection
    /// it was given had died in the meantime (Redis restarted) never reached a server, so it
    /// is sent once more on a new connection.
    pub(crate) async fn run_within<T, F, Fut>(
        &self,
        deadline: Duration,
        key: &str,
        op: F,
    ) -> Result<T, DirectoryError>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let mut used = None;
        let attempt = async {
            let (id, conn, reused) = self.connection().await?;
            used = Some(id);
            match op(conn).await {
                Err(e) if reused && was_dead_connection(&e) => {
                    self.discard(id);
                    let (id, conn, _) = self.connection().await?;
                    used = Some(id);
                    op(conn).await
                }
                other => other,
            }
        };
        match tokio::time::timeout(deadline, attempt).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if let (true, Some(id)) = (needs_new_connection(&e), used) {
                    self.discard(id);
                }
                Err(DirectoryError::from_redis(&e, key))
            }
            Err(_elapsed) => {
                // The connection may be half-dead (a blackholed peer): start afresh.
                if let Some(id) = used {
                    self.discard(id);
                }
                Err(DirectoryError::timed_out(deadline))
            }
        }
    }

    /// The current connection, or a new one; and whether it was already there.
    async fn connection(&self) -> RedisResult<(u64, MultiplexedConnection, bool)> {
        if let Some(c) = self.existing() {
            return Ok((c.0, c.1, true));
        }
        let mut connector = self.connector.lock().await;
        if let Some(c) = self.existing() {
            return Ok((c.0, c.1, true));
        }
        let conn = connector.connect(&self.config).await?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        *self.lock_current() = Some(Current {
            id,
            conn: conn.clone(),
        });
        Ok((id, conn, false))
    }

    fn existing(&self) -> Option<(u64, MultiplexedConnection)> {
        self.lock_current().as_ref().map(|c| (c.id, c.conn.clone()))
    }

    fn discard(&self, id: u64) {
        let mut current = self.lock_current();
        if current.as_ref().is_some_and(|c| c.id == id) {
            *current = None;
        }
    }

    fn lock_current(&self) -> std::sync::MutexGuard<'_, Option<Current>> {
        // Nothing panics while holding this lock (it only swaps an Option), so a poisoned
        // lock still holds a consistent value.
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Connector {
    fn new(target: &Target) -> Result<Self, ConfigError> {
        let refused = |e: redis::RedisError| ConfigError::Client(e.to_string());
        let redis = redis_info(&target.credentials, target.db);
        Ok(match &target.server {
            Server::Direct(addr) => Self::Direct(
                redis::Client::open(ConnectionInfo {
                    addr: address(addr, target.tls),
                    redis,
                })
                .map_err(refused)?,
            ),
            Server::Sentinel {
                master_name,
                sentinels,
                credentials,
            } => {
                let sentinels = (sentinels.iter())
                    .map(|s| ConnectionInfo {
                        addr: address(s, target.tls),
                        redis: redis_info(credentials, 0),
                    })
                    .collect();
                Self::Sentinel {
                    sentinel: Box::new(Sentinel::build(sentinels).map_err(refused)?),
                    master_name: master_name.clone(),
                    master: SentinelNodeConnectionInfo {
                        tls_mode: target.tls.then_some(TlsMode::Secure),
                        redis_connection_info: Some(redis),
                    },
                }
            }
        })
    }

    async fn connect(&mut self, config: &AsyncConnectionConfig) -> RedisResult<MultiplexedConnection> {
        ensure_crypto_provider();
        match self {
            Self::Direct(client) => client.get_multiplexed_async_connection_with_config(config).await,
            Self::Sentinel {
                sentinel,
                master_name,
                master,
            } => {
                let client = sentinel.async_master_for(master_name, Some(master)).await?;
                client.get_multiplexed_async_connection_with_config(config).await
            }
        }
    }
}

fn address(addr: &ServerAddr, tls: bool) -> ConnectionAddr {
    let host = addr.host.clone();
    if tls {
        ConnectionAddr::TcpTls {
            host,
            port: addr.port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(host, addr.port)
    }
}

fn redis_info(credentials: &Credentials, db: i64) -> RedisConnectionInfo {
    RedisConnectionInfo {
        db,
        username: credentials.username.clone(),
        password: credentials.password.clone(),
        ..RedisConnectionInfo::default()
    }
}

/// rustls needs a process-wide crypto provider when more than one is compiled in; install
/// aws-lc-rs (already the workspace's) unless someone installed one first.
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another installer is fine: any provider will do.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
}
