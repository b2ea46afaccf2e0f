//! The node's relay endpoint: one UDP socket (`relay.port`) that accepts links from other
//! nodes and dials them, authenticates every connection, and hands established links to the
//! node.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tracing::{debug, info, warn};

use crate::auth::{self, Peer};
use crate::link::{self, close, RelayStats};
use crate::{tls, Inbound, RelayError};

/// What a node's relay endpoint needs.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// Where to listen (UDP).
    pub bind: SocketAddr,
    /// This node's name, unique in the cluster.
    pub node: String,
    pub region: String,
    /// Who may link: nodes of this region holding the cluster's secret, nodes of other
    /// regions holding the regions' secret.
    pub secrets: auth::Secrets,
    /// Send media to nodes of this region by UDP beside QUIC (`direct.rs`), where the path
    /// carries it; between regions media always goes by QUIC.
    pub direct_media: bool,
}

/// A node's relay endpoint.
pub struct Relay {
    endpoint: quinn::Endpoint,
    me: Peer,
    direct_media: bool,
    secrets: Arc<auth::Secrets>,
    inbound: Arc<dyn Inbound>,
    stats: Arc<RelayStats>,
    complaints: Complaints,
}

/// Failures are logged once per peer address until a link with it is up again (a peer that
/// keeps dialling with a wrong secret, or a region cut off for a minute, would otherwise log
/// every attempt); every failure is counted in `RelayStats::refused`.
#[derive(Default)]
struct Complaints(Mutex<HashSet<IpAddr>>);

/// Addresses remembered at most; past it the set starts over (a flood of sources then logs
/// at most this many lines per round).
const MAX_COMPLAINTS: usize = 1024;

impl Complaints {
    /// Whether this failure is the first from `ip` since its last success.
    fn first(&self, ip: IpAddr) -> bool {
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= MAX_COMPLAINTS {
            seen.clear();
        }
        seen.insert(ip)
    }

    fn clear(&self, ip: IpAddr) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(&ip);
    }
}

/// Log a failure at warn the first time for its address, at debug after that.
macro_rules! complain {
    ($relay:expr, $addr:expr, $($arg:tt)+) => {
        if $relay.complaints.first($addr.ip()) {
            warn!(addr = %$addr, $($arg)+);
        } else {
            debug!(addr = %$addr, $($arg)+);
        }
    };
}

impl Relay {
    /// Bind the endpoint and start accepting links. Needs a tokio runtime.
    pub fn bind(config: RelayConfig, inbound: Arc<dyn Inbound>) -> Result<Arc<Relay>, RelayError> {
        if config.secrets.cluster.is_empty() || config.secrets.regions.as_ref().is_some_and(Vec::is_empty) {
            return Err(RelayError::Setup("a relay secret is empty".into()));
        }
        let mut endpoint = quinn::Endpoint::server(tls::server_config()?, config.bind)
            .map_err(|e| RelayError::Setup(format!("binding relay port {}: {e}", config.bind)))?;
        endpoint.set_default_client_config(tls::client_config()?);
        let relay = Arc::new(Relay {
            endpoint,
            me: Peer {
                node: config.node,
                region: config.region,
            },
            direct_media: config.direct_media,
            secrets: Arc::new(config.secrets),
            inbound,
            stats: Arc::default(),
            complaints: Complaints::default(),
        });
        tokio::spawn(relay.clone().accept_loop());
        Ok(relay)
    }

    pub fn local_addr(&self) -> Result<SocketAddr, RelayError> {
        self.endpoint
            .local_addr()
            .map_err(|e| RelayError::Setup(e.to_string()))
    }

    pub fn stats(&self) -> &Arc<RelayStats> {
        &self.stats
    }

    /// Dial `addr` and, once both sides proved the secret, report the link to the node.
    pub fn dial(self: &Arc<Self>, addr: SocketAddr) {
        let relay = self.clone();
        tokio::spawn(async move {
            let result = async {
                let connecting = relay
                    .endpoint
                    .connect(addr, "pylon-relay")
                    .map_err(|e| auth::Refusal::Io(e.to_string()))?;
                let conn = connecting.await.map_err(|e| auth::Refusal::Io(e.to_string()))?;
                match auth::dial(&conn, &relay.secrets, &relay.me).await {
                    Ok(peer) => Ok((conn, peer)),
                    Err(why) => {
                        conn.close(close::REFUSED.into(), why.to_string().as_bytes());
                        Err(why)
                    }
                }
            }
            .await;
            match result {
                Ok((conn, peer)) => relay.established(conn, peer, addr, true),
                Err(why) => {
                    relay.stats.refused.fetch_add(1, Ordering::Relaxed);
                    complain!(
                        relay,
                        addr,
                        "relay link to {addr} not established (logged once until it is): {why}"
                    );
                }
            }
        });
    }

    async fn accept_loop(self: Arc<Self>) {
        while let Some(incoming) = self.endpoint.accept().await {
            let relay = self.clone();
            tokio::spawn(async move {
                let from = incoming.remote_address();
                let conn = match incoming.await {
                    Ok(c) => c,
                    Err(e) => {
                        relay.stats.refused.fetch_add(1, Ordering::Relaxed);
                        complain!(
                            relay,
                            from,
                            "relay connection refused (logged once per address): {e}"
                        );
                        return;
                    }
                };
                match auth::accept(&conn, &relay.secrets, &relay.me).await {
                    Ok(peer) => relay.established(conn, peer, from, false),
                    Err(why) => {
                        relay.stats.refused.fetch_add(1, Ordering::Relaxed);
                        complain!(relay, from, "relay link refused (logged once per address): {why}");
                        conn.close(close::REFUSED.into(), why.to_string().as_bytes());
                    }
                }
            });
        }
    }

    fn established(&self, conn: quinn::Connection, peer: Peer, addr: SocketAddr, dialed: bool) {
        self.complaints.clear(addr.ip());
        info!(peer = %peer.node, region = %peer.region, %addr, dialed, "relay link up");
        let direct = self.direct_media && peer.region == self.me.region;
        link::start(
            conn,
            peer,
            dialed,
            direct,
            self.inbound.clone(),
            self.stats.clone(),
        );
    }

    /// This node as it introduces itself to peers.
    pub fn me(&self) -> &Peer {
        &self.me
    }

    /// Close every link and stop accepting.
    pub fn close(&self) {
        self.endpoint.close(close::DONE.into(), b"node stopping");
    }
}
