//! Errors of the directory, classified by whose fault they are.

use std::time::Duration;

use redis::RedisError;

/// What went wrong talking to the directory.
///
/// The node's rooms never depend on the directory being reachable: an `Unavailable` error
/// means "try again later" (and turn not-ready), never "close the room".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    /// Redis could not be reached, dropped the connection, did not answer in time, is still
    /// loading its data set, or is a replica (a failover is under way). Transient.
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    /// Redis refused the command: credentials, ACL permissions, memory limit, a disabled
    /// command. The operator's to fix; retrying will not help.
    #[error("redis refused the command: {0}")]
    Refused(String),
    /// Data under a key of the directory is not what this crate writes (another program wrote
    /// there, or a key was corrupted). The key is named so an operator can inspect or delete it.
    #[error("malformed data at {key}: {reason}")]
    Malformed { key: String, reason: String },
}

impl DirectoryError {
    /// Worth retrying later without anyone's intervention.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    pub(crate) fn malformed(key: &str, reason: impl Into<String>) -> Self {
        Self::Malformed {
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn timed_out(after: Duration) -> Self {
        Self::Unavailable(format!("no answer within {after:?}"))
    }

    /// Classify an error of the client or the server; `key` names the data concerned.
    pub(crate) fn from_redis(e: &RedisError, key: &str) -> Self {
        match e.code() {
            // `MALFORMED` is raised by this crate's scripts on data they cannot read.
            Some("WRONGTYPE") | Some("MALFORMED") => {
                return Self::malformed(key, e.detail().unwrap_or("value of the wrong type"))
            }
            Some("LOADING" | "MASTERDOWN" | "READONLY" | "TRYAGAIN" | "BUSY") => {
                return Self::Unavailable(e.to_string())
            }
            Some("NOAUTH" | "WRONGPASS" | "NOPERM") => return Self::Refused(e.to_string()),
            _ => {}
        }
        match e.kind() {
            redis::ErrorKind::AuthenticationFailed | redis::ErrorKind::InvalidClientConfig => {
                Self::Refused(e.to_string())
            }
            redis::ErrorKind::IoError
            | redis::ErrorKind::MasterNameNotFoundBySentinel
            | redis::ErrorKind::EmptySentinelList => Self::Unavailable(e.to_string()),
            redis::ErrorKind::TypeError | redis::ErrorKind::ParseError => Self::malformed(key, e.to_string()),
            _ if e.is_unrecoverable_error() => Self::Unavailable(e.to_string()),
            _ => Self::Refused(e.to_string()),
        }
    }
}

/// Whether the connection that produced `e` must be replaced before the next command.
pub(crate) fn needs_new_connection(e: &RedisError) -> bool {
    // READONLY: the server was demoted to a replica by a failover; under Sentinel a new
    // connection goes to the new master.
    e.is_io_error() || e.is_unrecoverable_error() || e.code() == Some("READONLY")
}

/// Whether `e` says the connection was already dead when the command was written, so the
/// command never reached a live server and may be sent again on a new connection.
pub(crate) fn was_dead_connection(e: &RedisError) -> bool {
    e.is_connection_dropped() || e.is_connection_refusal()
}
