//! The open-file limit. Every ICE/TCP connection, WebSocket and relay link is a file
//! descriptor, and distributions start processes with a soft limit of 1024: a node would
//! refuse its thousandth TCP client while the hard limit allows far more. Go raises the soft
//! limit to the hard one at start-up for every program (so LiveKit's server never meets this);
//! Pylon does the same, and says so when even the hard limit is low.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use tracing::{info, warn};

/// Below this many descriptors a busy node runs out (each participant over TCP holds one, each
/// WebSocket one, each connection still in its handshake one).
pub const RECOMMENDED: u64 = 16_384;

/// What the limit was and is after [`raise`]; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub before: Option<u64>,
    pub now: Option<u64>,
    pub hard: Option<u64>,
}

/// Raise the soft open-file limit to the hard one, log what it is, and warn if it is low.
pub fn raise() -> Limits {
    let old = getrlimit(Resource::Nofile);
    let mut limits = Limits {
        before: old.current,
        now: old.current,
        hard: old.maximum,
    };
    if old.current != old.maximum {
        let new = Rlimit {
            current: old.maximum,
            maximum: old.maximum,
        };
        match setrlimit(Resource::Nofile, new) {
            Ok(()) => limits.now = getrlimit(Resource::Nofile).current,
            Err(e) => warn!("could not raise the open-file limit to the hard limit: {e}"),
        }
    }
    let shown = |v: Option<u64>| v.map_or("unlimited".to_string(), |v| v.to_string());
    match limits.now {
        Some(n) if n < RECOMMENDED => warn!(
            limit = n,
            "the open-file limit is low: each TCP client, WebSocket and pending connection holds one; \
             raise it (ulimit -n, LimitNOFILE=, or the container runtime's nofile) to at least {RECOMMENDED}"
        ),
        _ => info!(before = %shown(limits.before), now = %shown(limits.now), "open-file limit"),
    }
    limits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_one() {
        let before = getrlimit(Resource::Nofile);
        // Start low, as a distribution does, to see it raised.
        let low = before.maximum.map_or(1024, |m| m.min(1024));
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(low),
                maximum: before.maximum,
            },
        )
        .unwrap();
        let l = raise();
        assert_eq!(l.before, Some(low));
        assert_eq!(l.now, before.maximum);
        assert_eq!(getrlimit(Resource::Nofile).current, before.maximum);
    }
}
