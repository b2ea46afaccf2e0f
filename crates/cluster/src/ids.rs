//! Typed names of the directory: nodes, regions, relay addresses and fencing epochs.
//!
//! Node ids and region names become parts of Redis keys, so they are restricted to a charset
//! that can never collide with the key schema's separators (`:`, `{`, `}`, space).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest node id or region name accepted (they appear in every key and record).
const MAX_NAME_LEN: usize = 64;

/// A name that could not be parsed into one of this module's types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}")]
pub struct InvalidName {
    pub what: &'static str,
    pub value: String,
    pub reason: &'static str,
}

fn check_name(what: &'static str, s: &str) -> Result<(), InvalidName> {
    let fail = |reason| {
        Err(InvalidName {
            what,
            value: s.to_string(),
            reason,
        })
    };
    if s.is_empty() {
        return fail("empty");
    }
    if s.len() > MAX_NAME_LEN {
        return fail("longer than 64 bytes");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return fail("only ASCII letters, digits, '_', '-' and '.' are allowed");
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, InvalidName> {
                check_name($what, s).map(|()| Self(s.to_string()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = InvalidName;
            fn from_str(s: &str) -> Result<Self, InvalidName> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidName;
            fn try_from(s: String) -> Result<Self, InvalidName> {
                check_name($what, &s).map(|()| Self(s))
            }
        }

        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// One `pylon` process of a region (unique within the region).
    NodeId,
    "node id"
);
name_type!(
    /// One independent deployment; every key of the directory is namespaced by it.
    RegionName,
    "region name"
);

/// Where a node accepts relay links from the other nodes of its region: `host:port`
/// (`[v6]:port` for an IPv6 literal). Kept as text: the host may be a DNS name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RelayAddr(String);

impl RelayAddr {
    pub fn parse(s: &str) -> Result<Self, InvalidName> {
        split_host_port(s)
            .map(|_| Self(s.to_string()))
            .map_err(|reason| InvalidName {
                what: "relay address",
                value: s.to_string(),
                reason,
            })
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RelayAddr {
    type Error = InvalidName;
    fn try_from(s: String) -> Result<Self, InvalidName> {
        Self::parse(&s)
    }
}

impl From<RelayAddr> for String {
    fn from(a: RelayAddr) -> String {
        a.0
    }
}

impl fmt::Display for RelayAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Split `host:port` or `[v6]:port`; the reason is a short phrase for an error message.
pub(crate) fn split_host_port(s: &str) -> Result<(&str, u16), &'static str> {
    let (host, port) = s.rsplit_once(':').ok_or("expected host:port")?;
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.strip_suffix(']').ok_or("unbalanced '[' in an IPv6 host")?,
        None if host.contains(':') => return Err("an IPv6 host must be written [addr]:port"),
        None => host,
    };
    if host.is_empty() {
        return Err("empty host");
    }
    if host
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err("whitespace in the host");
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok((host, p)),
        _ => Err("the port must be a number from 1 to 65535"),
    }
}

/// Fencing token of a room record: issued by Redis each time a node becomes a room's home
/// (creation or take-over), strictly increasing within a region while Redis keeps its data
/// (`max(last + 1, Redis TIME in µs)`, so also across a restart that lost the counter, unless
/// Redis's clock went back). Of two records of one room, the higher epoch is the newer owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Epoch(pub u64);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_reject_key_separators() {
        assert!(NodeId::parse("node-1.a_b").is_ok());
        for bad in ["", "a:b", "a{b", "a}b", "a b", "é", &"x".repeat(65)] {
            assert!(NodeId::parse(bad).is_err(), "{bad:?}");
            assert!(RegionName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn relay_addresses_need_host_and_port() {
        for good in ["10.0.0.1:7890", "pylon-0.pylon:7890", "[::1]:7890"] {
            assert!(RelayAddr::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "host",
            ":7890",
            "host:",
            "host:0",
            "host:70000",
            "::1:7890",
            "[::1:7890",
            "a b:1",
        ] {
            assert!(RelayAddr::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_deserialize_through_validation() {
        let ok: NodeId = serde_json::from_str("\"n1\"").unwrap();
        assert_eq!(ok.as_str(), "n1");
        assert!(serde_json::from_str::<NodeId>("\"n:1\"").is_err());
    }
}
