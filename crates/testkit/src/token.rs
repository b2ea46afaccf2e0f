//! Join tokens for test participants, minted with `pylon_auth::mint`.

use std::time::{SystemTime, UNIX_EPOCH};

use pylon_auth::{Claims, VideoGrant};

/// How long minted tokens stay valid.
pub const TOKEN_VALIDITY_SECS: i64 = 3600;

/// An API key and its secret.
#[derive(Clone, Debug)]
pub struct ApiCredentials {
    pub key: String,
    pub secret: String,
}

impl ApiCredentials {
    /// A token that lets `identity` join `room` with LiveKit's default permissions.
    pub fn join_token(&self, room: &str, identity: &str) -> String {
        self.token_with(room, identity, |_| {})
    }

    /// A join token whose claims `edit` may change (grants, name, metadata, kind, ...).
    pub fn token_with(&self, room: &str, identity: &str, edit: impl FnOnce(&mut Claims)) -> String {
        let now = unix_now();
        let mut claims = Claims {
            iss: self.key.clone(),
            sub: identity.to_string(),
            nbf: Some(now),
            exp: Some(now + TOKEN_VALIDITY_SECS),
            video: Some(VideoGrant {
                room_join: true,
                room: room.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        };
        edit(&mut claims);
        pylon_auth::mint(&claims, self.secret.as_bytes())
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_token_verifies_with_the_same_key() {
        let creds = ApiCredentials {
            key: "k".into(),
            secret: "s".repeat(32),
        };
        let token = creds.join_token("room", "alice");
        let mut keys = pylon_auth::KeySet::new();
        keys.insert("k", &"s".repeat(32)).expect("valid key");
        let claims = pylon_auth::verify(&token, &keys, unix_now()).expect("token verifies");
        assert_eq!(claims.identity(), "alice");
        assert_eq!(claims.video().room, "room");
        assert!(claims.video().room_join);
    }
}
