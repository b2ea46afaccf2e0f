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
    /// Id of one webhook event, stable across delivery retries.
    EventId,
    "EV_"
);

/// Handle of a signalling session (one WebSocket), assigned by the runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

/// Index of a participant inside a shard. Stable for the participant's lifetime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantKey(pub u64);

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
