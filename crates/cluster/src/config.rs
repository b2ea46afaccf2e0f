//! The `redis:` configuration block (LiveKit's field names) and the connection target it
//! parses into.
//!
//! Supported: one Redis (`address`), or Redis Sentinel (`sentinel_master_name` +
//! `sentinel_addresses`; the master is asked of the sentinels at every (re)connection, so a
//! failover is followed). `use_tls` applies to every connection (sentinels included), with
//! rustls and the system's roots (`SSL_CERT_FILE` / `SSL_CERT_DIR` name a private CA).
//! Refused: Redis Cluster (`cluster_addresses`).

use std::fmt;

use serde::Deserialize;

use crate::ids::split_host_port;

/// LiveKit's `redis:` block, field for field. Parse it with [`RedisConfig::target`].
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    pub address: String,
    pub username: String,
    pub password: String,
    pub db: i64,
    pub use_tls: bool,
    pub sentinel_master_name: String,
    pub sentinel_addresses: Vec<String>,
    pub sentinel_username: String,
    pub sentinel_password: String,
    pub cluster_addresses: Vec<String>,
}

/// A configuration that cannot be used; the operator's to fix. Messages name the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "redis.cluster_addresses is set, but Redis Cluster is not supported: use one Redis \
         (redis.address) or Redis Sentinel (redis.sentinel_master_name and redis.sentinel_addresses)"
    )]
    ClusterUnsupported,
    #[error("redis.address is empty: set it to host:port (or configure Redis Sentinel)")]
    MissingAddress,
    #[error("redis.{field}: {value:?} is not a usable address: {reason}")]
    BadAddress {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("redis.sentinel_master_name is set but redis.sentinel_addresses is empty")]
    SentinelWithoutAddresses,
    #[error("redis.sentinel_addresses is set but redis.sentinel_master_name is empty")]
    SentinelWithoutMasterName,
    #[error("redis.db must be 0 or more, not {0}")]
    NegativeDb(i64),
    #[error("redis.{0}: a username needs a password")]
    UsernameWithoutPassword(&'static str),
    #[error("the redis client refused the configuration: {0}")]
    Client(String),
}

/// One server's address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerAddr {
    pub host: String,
    pub port: u16,
}

impl ServerAddr {
    fn parse(field: &'static str, s: &str) -> Result<Self, ConfigError> {
        let (host, port) = split_host_port(s.trim()).map_err(|reason| ConfigError::BadAddress {
            field,
            value: s.to_string(),
            reason,
        })?;
        Ok(Self {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// ACL credentials (Redis 6+ `AUTH [username] password`). Never printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: Option<String>,
    pub password: Option<String>,
}

impl Credentials {
    fn parse(field: &'static str, username: &str, password: &str) -> Result<Self, ConfigError> {
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let c = Self {
            username: non_empty(username),
            password: non_empty(password),
        };
        if c.username.is_some() && c.password.is_none() {
            return Err(ConfigError::UsernameWithoutPassword(field));
        }
        Ok(c)
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Where the directory's Redis is and how to talk to it: the parsed form of [`RedisConfig`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub server: Server,
    /// Credentials for the Redis server (the master, under Sentinel).
    pub credentials: Credentials,
    pub db: i64,
    /// TLS on every connection, sentinels included.
    pub tls: bool,
}

/// How the Redis server is found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Server {
    /// One Redis at a fixed address.
    Direct(ServerAddr),
    /// The current master of `master_name`, asked of the first sentinel that answers.
    Sentinel {
        master_name: String,
        sentinels: Vec<ServerAddr>,
        credentials: Credentials,
    },
}

impl Target {
    /// One Redis at `addr`, no credentials, db 0, no TLS (what the tests use).
    pub fn direct(host: impl Into<String>, port: u16) -> Self {
        Self {
            server: Server::Direct(ServerAddr {
                host: host.into(),
                port,
            }),
            credentials: Credentials::default(),
            db: 0,
            tls: false,
        }
    }
}

impl RedisConfig {
    /// Parse into a target. Sentinel is used when `sentinel_master_name` is set (then
    /// `address` is ignored, as LiveKit does).
    pub fn target(&self) -> Result<Target, ConfigError> {
        if !self.cluster_addresses.is_empty() {
            return Err(ConfigError::ClusterUnsupported);
        }
        if self.db < 0 {
            return Err(ConfigError::NegativeDb(self.db));
        }
        let credentials = Credentials::parse("username", &self.username, &self.password)?;
        let server = self.server()?;
        Ok(Target {
            server,
            credentials,
            db: self.db,
            tls: self.use_tls,
        })
    }

    fn server(&self) -> Result<Server, ConfigError> {
        let master_name = self.sentinel_master_name.trim();
        match (master_name.is_empty(), self.sentinel_addresses.is_empty()) {
            (false, true) => Err(ConfigError::SentinelWithoutAddresses),
            (true, false) => Err(ConfigError::SentinelWithoutMasterName),
            (false, false) => Ok(Server::Sentinel {
                master_name: master_name.to_string(),
                sentinels: (self.sentinel_addresses.iter())
                    .map(|a| ServerAddr::parse("sentinel_addresses", a))
                    .collect::<Result<_, _>>()?,
                credentials: Credentials::parse(
                    "sentinel_username",
                    &self.sentinel_username,
                    &self.sentinel_password,
                )?,
            }),
            (true, true) if self.address.trim().is_empty() => Err(ConfigError::MissingAddress),
            (true, true) => Ok(Server::Direct(ServerAddr::parse("address", &self.address)?)),
        }
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |s: &str| if s.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("RedisConfig")
            .field("address", &self.address)
            .field("username", &self.username)
            .field("password", &redact(&self.password))
            .field("db", &self.db)
            .field("use_tls", &self.use_tls)
            .field("sentinel_master_name", &self.sentinel_master_name)
            .field("sentinel_addresses", &self.sentinel_addresses)
            .field("sentinel_username", &self.sentinel_username)
            .field("sentinel_password", &redact(&self.sentinel_password))
            .field("cluster_addresses", &self.cluster_addresses)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Target, ConfigError> {
        let c: RedisConfig = serde_yaml::from_str(yaml).expect("valid yaml");
        c.target()
    }

    #[test]
    fn one_redis_with_credentials_and_tls() {
        let t =
            parse("address: redis.example:6380\nusername: u\npassword: p\ndb: 2\nuse_tls: true\n").unwrap();
        assert_eq!(
            t.server,
            Server::Direct(ServerAddr {
                host: "redis.example".into(),
                port: 6380
            })
        );
        assert_eq!(t.credentials.username.as_deref(), Some("u"));
        assert_eq!(t.db, 2);
        assert!(t.tls);
    }

    #[test]
    fn sentinel_wins_over_address() {
        let t = parse(
            "address: ignored:1\nsentinel_master_name: mymaster\nsentinel_addresses: [a:26379, '[::1]:26380']\n\
             sentinel_password: sp\n",
        )
        .unwrap();
        let Server::Sentinel {
            master_name,
            sentinels,
            credentials,
        } = t.server
        else {
            panic!("expected sentinel");
        };
        assert_eq!(master_name, "mymaster");
        assert_eq!(
            sentinels[1],
            ServerAddr {
                host: "::1".into(),
                port: 26380
            }
        );
        assert_eq!(credentials.password.as_deref(), Some("sp"));
    }

    #[test]
    fn cluster_is_refused_with_advice() {
        let e = parse("cluster_addresses: [a:1, b:2]\n").unwrap_err();
        assert_eq!(e, ConfigError::ClusterUnsupported);
        let msg = e.to_string();
        assert!(msg.contains("not supported") && msg.contains("Sentinel"), "{msg}");
    }

    #[test]
    fn incomplete_configs_are_refused() {
        assert_eq!(parse("db: 0\n").unwrap_err(), ConfigError::MissingAddress);
        assert_eq!(
            parse("sentinel_master_name: m\n").unwrap_err(),
            ConfigError::SentinelWithoutAddresses
        );
        assert_eq!(
            parse("sentinel_addresses: [a:1]\n").unwrap_err(),
            ConfigError::SentinelWithoutMasterName
        );
        assert_eq!(
            parse("address: a:1\ndb: -1\n").unwrap_err(),
            ConfigError::NegativeDb(-1)
        );
        assert!(matches!(
            parse("address: a\n").unwrap_err(),
            ConfigError::BadAddress { .. }
        ));
        assert_eq!(
            parse("address: a:1\nusername: u\n").unwrap_err(),
            ConfigError::UsernameWithoutPassword("username")
        );
        assert!(
            serde_yaml::from_str::<RedisConfig>("adress: a:1\n").is_err(),
            "unknown field"
        );
    }

    #[test]
    fn secrets_are_never_printed() {
        let c: RedisConfig =
            serde_yaml::from_str("address: a:1\npassword: hunter2\nsentinel_password: s3cret\n").unwrap();
        let printed = format!("{c:?} {:?}", c.target());
        assert!(
            !printed.contains("hunter2") && !printed.contains("s3cret"),
            "{printed}"
        );
    }
}
