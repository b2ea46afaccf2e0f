//! Typed identifiers: names chosen by users and sids minted by the server.
//!
//! Sids follow LiveKit's format: a prefix (`RM_`, `PA_`, `TR_`) and 12 characters of the
//! shortuuid base57 alphabet. The Python SDK unwraps on the prefix, so it must be exact.

use std::fmt;

use rand::Rng;

const ALPHABET: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
const SID_RANDOM_LEN: usize = 12;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Self {
                Self(s.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

macro_rules! sid {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        string_id!($(#[$doc])* $name);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// Mint a fresh random sid.
            pub fn generate(rng: &mut impl Rng) -> Self {
                let mut s = String::with_capacity($prefix.len() + SID_RANDOM_LEN);
                s.push_str($prefix);
                for _ in 0..SID_RANDOM_LEN {
                    s.push(ALPHABET[rng.random_range(0..ALPHABET.len())] as char);
                }
                Self(s)
            }

            /// Accept a sid received from a client if it carries the right prefix.
            pub fn parse(s: &str) -> Option<Self> {
                (s.starts_with($prefix) && s.len() > $prefix.len() && s.len() <= 64)
                    .then(|| Self(s.to_string()))
            }
        }
    };
}

string_id!(
    /// A room's name, global across nodes and regions.
    RoomName
);
string_id!(
    /// A participant's identity (the token's `sub`), unique within a room.
    ParticipantIdentity
);
sid!(
    /// Server-assigned id of one room instance.
    RoomSid,
    "RM_"
);
sid!(
    /// Server-assigned id of one participant session.
    ParticipantSid,
    "PA_"
);
sid!(
    /// Server-assigned id of one published track.
    TrackSid,
    "TR_"
);

sid!(
    /// Server-assigned id of one published data track.
    DataTrackSid,
    "DTR_"
);

sid!(
    /// Id of one webhook event, stable across delivery retries.
    EventId,
    "EV_"
);

/// Handle of a signalling session (one WebSocket), assigned by the runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

/// Index of a participant inside a shard (one hosted here, or a mirror of one hosted at
/// another place). Stable for the participant's lifetime; never reused within a shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantKey(pub u64);

/// Index of a track inside a shard (published here, or mirrored from another place). Cheaper
/// than its sid on the media path; never reused within a shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrackKey(pub u64);

/// How a track is named on a relay: the [`TrackKey`] it has at its origin place. Unique per
/// origin, so a receiver keys mirrors by (place, id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayTrackId(pub u64);

impl From<TrackKey> for RelayTrackId {
    fn from(k: TrackKey) -> Self {
        RelayTrackId(k.0)
    }
}

/// The kind of link between two places of a room. The places of one tier are fully meshed, so
/// media and state that arrive over a link of one tier never travel on over a link of the same
/// tier (split horizon): nothing loops and each track crosses each link once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tier {
    /// Another media worker thread of this node (in-process hand-off).
    Worker,
    /// Another node of this region (node relay).
    Node,
    /// Another region (region link).
    Region,
}

/// Another place a room has an instance at, as seen from this shard: the tier of the link and
/// an index the runtime assigns within that tier (a worker's number, a node's, a region's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PlaceId {
    pub tier: Tier,
    pub index: u32,
}

impl PlaceId {
    pub const fn worker(index: u32) -> Self {
        Self {
            tier: Tier::Worker,
            index,
        }
    }
}

impl fmt::Display for PlaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = match self.tier {
            Tier::Worker => "worker",
            Tier::Node => "node",
            Tier::Region => "region",
        };
        write!(f, "{t}-{}", self.index)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "S{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn sids_have_livekit_shape() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let sid = ParticipantSid::generate(&mut rng);
        assert!(sid.as_str().starts_with("PA_"));
        assert_eq!(sid.as_str().len(), 15);
        assert!(sid.as_str()[3..].bytes().all(|b| ALPHABET.contains(&b)));
    }

    #[test]
    fn parse_checks_prefix() {
        assert!(TrackSid::parse("TR_abc").is_some());
        assert!(TrackSid::parse("PA_abc").is_none());
        assert!(TrackSid::parse("TR_").is_none());
    }
}
