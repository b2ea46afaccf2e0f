//! Short-lived TURN credentials handed to clients in the join and reconnect responses.
//!
//! Username `"<unix expiry>:<participant sid>"`; password
//! base64(HMAC-SHA256(secret, username)); the secret is derived from an API secret every node
//! of a region shares, so any node verifies any node's credentials. The TURN key is RFC 8489's
//! long-term one, MD5(username ":" realm ":" password), which libwebrtc uses with HMAC-SHA1.
//! As LiveKit does, the expiry is checked when an allocation is made, not on its refreshes:
//! a call does not die when the credential it started with ages out.

use base64::Engine;
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;

pub const REALM: &str = "pylon";

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("username is not <expiry>:<participant>")]
    Malformed,
    #[error("credential expired")]
    Expired,
}

/// The key credentials are minted and checked with.
#[derive(Clone)]
pub struct TurnSecret([u8; 32]);

impl std::fmt::Debug for TurnSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TurnSecret(..)")
    }
}

/// A credential as the client gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub password: String,
}

/// Who a verified username belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub participant: String,
    pub key: [u8; 16],
}

impl TurnSecret {
    pub fn derive(api_secret: &[u8]) -> Self {
        let mut mac = Hmac::<Sha256>::new_from_slice(api_secret).expect("any key length");
        mac.update(b"pylon-turn v1");
        TurnSecret(mac.finalize().into_bytes().into())
    }

    fn password(&self, username: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("any key length");
        mac.update(username.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    }

    pub fn mint(&self, participant: &str, unix_now: u64, ttl_secs: u64) -> Credential {
        let username = format!("{}:{participant}", unix_now + ttl_secs);
        let password = self.password(&username);
        Credential { username, password }
    }

    /// The long-term key for `username`; `unix_now` is checked against its expiry when given.
    pub fn verify(&self, username: &str, expiry_check: Option<u64>) -> Result<Verified, CredentialError> {
        let (expiry, participant) = username.split_once(':').ok_or(CredentialError::Malformed)?;
        let expiry: u64 = expiry.parse().map_err(|_| CredentialError::Malformed)?;
        if participant.is_empty() || participant.len() > 128 {
            return Err(CredentialError::Malformed);
        }
        if expiry_check.is_some_and(|now| now >= expiry) {
            return Err(CredentialError::Expired);
        }
        Ok(Verified {
            participant: participant.to_owned(),
            key: long_term_key(username, REALM, &self.password(username)),
        })
    }
}

/// RFC 8489 §9.2.2: MD5(username ":" realm ":" password).
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_credentials_verify_until_they_expire() {
        let s = TurnSecret::derive(b"secret");
        let c = s.mint("PA_abc", 1_000, 300);
        assert_eq!(c.username, "1300:PA_abc");
        let v = s.verify(&c.username, Some(1_299)).unwrap();
        assert_eq!(v.participant, "PA_abc");
        assert_eq!(v.key, long_term_key(&c.username, REALM, &c.password));
        assert_eq!(s.verify(&c.username, Some(1_300)), Err(CredentialError::Expired));
        assert!(
            s.verify(&c.username, None).is_ok(),
            "refreshes do not check the expiry"
        );
    }

    #[test]
    fn another_secret_gives_another_key() {
        let c = TurnSecret::derive(b"a").mint("PA_x", 0, 300);
        let theirs = TurnSecret::derive(b"b").verify(&c.username, None).unwrap();
        assert_ne!(theirs.key, long_term_key(&c.username, REALM, &c.password));
    }

    #[test]
    fn malformed_usernames_are_refused() {
        let s = TurnSecret::derive(b"a");
        for u in ["", "abc", "x:PA", "100:", "-5:PA"] {
            assert_eq!(s.verify(u, None), Err(CredentialError::Malformed), "{u}");
        }
    }
}
