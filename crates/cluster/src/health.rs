//! Is Redis reachable right now (for `/readyz`).

use std::time::Duration;

use crate::directory::Directory;
use crate::error::DirectoryError;
use crate::reply;

/// Deadline of a probe, connecting included: a readiness check must answer quickly.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

impl Directory {
    /// `Ok` if Redis answered `PING` within [`PROBE_TIMEOUT`]. Reconnects if needed, so the
    /// probe turns `Ok` again as soon as Redis is back.
    pub async fn probe(&self) -> Result<(), DirectoryError> {
        let ping = redis::cmd("PING");
        let ping = &ping;
        let answer = (self.link())
            .run_within(PROBE_TIMEOUT, "PING", |mut c| async move {
                ping.query_async(&mut c).await
            })
            .await?;
        match reply::bytes(&answer) {
            Some(b"PONG") => Ok(()),
            _ => Err(DirectoryError::malformed(
                "PING",
                format!("unexpected answer {answer:?}"),
            )),
        }
    }
}
