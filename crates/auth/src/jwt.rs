//! HS256 JSON Web Tokens as LiveKit uses them: verification and minting.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::{Claims, KeySet};

/// Clock skew tolerated on `exp` and `nbf`, in seconds (LiveKit's server uses 60 s).
pub const LEEWAY_SECS: i64 = 60;

/// Tokens longer than this are refused before any parsing (LiveKit tokens are ~1 KiB).
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Why a token was refused. Every variant is the client's fault (HTTP 401).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token is too long")]
    TooLong,
    #[error("token is not a JWT (expected three dot-separated parts)")]
    Malformed,
    #[error("token part is not valid base64url")]
    BadEncoding,
    #[error("token header or claims are not valid JSON: {0}")]
    BadJson(String),
    #[error("unsupported token algorithm {0:?}: only HS256 is accepted")]
    UnsupportedAlgorithm(String),
    #[error("token has no issuer (api key)")]
    MissingIssuer,
    #[error("unknown api key {0:?}")]
    UnknownKey(String),
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has no expiry")]
    MissingExpiry,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
}

#[derive(Deserialize)]
struct Header {
    #[serde(default)]
    alg: String,
}

/// Verify `token` against `keys` at unix time `now` and return its claims.
pub fn verify(token: &str, keys: &KeySet, now: i64) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLong);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(TokenError::Malformed);
    };
    let header: Header = decode_json(h)?;
    if header.alg != "HS256" {
        return Err(TokenError::UnsupportedAlgorithm(header.alg));
    }
    let claims: Claims = decode_json(c)?;
    if claims.iss.is_empty() {
        return Err(TokenError::MissingIssuer);
    }
    let secret = keys
        .secret(&claims.iss)
        .ok_or_else(|| TokenError::UnknownKey(claims.iss.clone()))?;
    let signature = URL_SAFE_NO_PAD.decode(s).map_err(|_| TokenError::BadEncoding)?;
    let signed_len = h.len() + 1 + c.len();
    let mut mac = hmac_for(secret);
    mac.update(&token.as_bytes()[..signed_len]);
    mac.verify_slice(&signature)
        .map_err(|_| TokenError::BadSignature)?;
    check_times(&claims, now)?;
    Ok(claims)
}

fn check_times(claims: &Claims, now: i64) -> Result<(), TokenError> {
    let exp = claims.exp.ok_or(TokenError::MissingExpiry)?;
    if now > exp.saturating_add(LEEWAY_SECS) {
        return Err(TokenError::Expired);
    }
    if let Some(nbf) = claims.nbf {
        if now < nbf.saturating_sub(LEEWAY_SECS) {
            return Err(TokenError::NotYetValid);
        }
    }
    Ok(())
}

fn decode_json<T: for<'de> Deserialize<'de>>(part: &str) -> Result<T, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| TokenError::BadEncoding)?;
    serde_json::from_slice(&bytes).map_err(|e| TokenError::BadJson(e.to_string()))
}

fn hmac_for(secret: &[u8]) -> Hmac<Sha256> {
    // Invariant: HMAC accepts keys of any length.
    Hmac::<Sha256>::new_from_slice(secret).expect("hmac takes any key length")
}

/// Sign arbitrary claims JSON with HS256.
pub fn sign_hs256(claims_json: &[u8], secret: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims_json);
    let mut mac = hmac_for(secret);
    mac.update(header.as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{header}.{body}.{sig}")
}

/// Mint a token for `claims` (whose `iss` must name `api_key`).
pub fn mint(claims: &Claims, secret: &[u8]) -> String {
    // Invariant: `Claims` serializes to JSON infallibly (string keys, plain values).
    let json = serde_json::to_vec(claims).expect("claims serialize");
    sign_hs256(&json, secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::VideoGrant;

    const NOW: i64 = 1_800_000_000;

    fn keys() -> KeySet {
        let mut k = KeySet::new();
        k.insert("key", "a-secret-of-at-least-32-bytes-long-000").unwrap();
        k
    }

    fn claims() -> Claims {
        Claims {
            iss: "key".into(),
            sub: "alice".into(),
            exp: Some(NOW + 600),
            video: Some(VideoGrant {
                room_join: true,
                room: "r".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn token(c: &Claims) -> String {
        mint(c, b"a-secret-of-at-least-32-bytes-long-000")
    }

    #[test]
    fn minted_token_verifies() {
        let c = verify(&token(&claims()), &keys(), NOW).unwrap();
        assert_eq!(c.identity(), "alice");
        assert!(c.video().room_join);
    }

    #[test]
    fn wrong_secret_is_bad_signature() {
        let t = mint(&claims(), b"another-secret-of-at-least-32-bytes!!");
        assert_eq!(verify(&t, &keys(), NOW), Err(TokenError::BadSignature));
    }

    #[test]
    fn expired_beyond_leeway_is_refused() {
        let t = token(&claims());
        assert!(verify(&t, &keys(), NOW + 600 + LEEWAY_SECS).is_ok());
        assert_eq!(
            verify(&t, &keys(), NOW + 601 + LEEWAY_SECS),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn missing_expiry_is_refused() {
        let t = token(&Claims {
            exp: None,
            ..claims()
        });
        assert_eq!(verify(&t, &keys(), NOW), Err(TokenError::MissingExpiry));
    }

    #[test]
    fn alg_none_is_refused() {
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        let c = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims()).unwrap());
        let t = format!("{h}.{c}.");
        assert_eq!(
            verify(&t, &keys(), NOW),
            Err(TokenError::UnsupportedAlgorithm("none".into()))
        );
    }

    #[test]
    fn unknown_key_is_refused() {
        let t = token(&Claims {
            iss: "other".into(),
            ..claims()
        });
        assert_eq!(
            verify(&t, &keys(), NOW),
            Err(TokenError::UnknownKey("other".into()))
        );
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for t in [
            "",
            "a",
            "a.b",
            "a.b.c.d",
            "...",
            "\u{0}.\u{1}.\u{2}",
            "e30.e30.e30",
        ] {
            assert!(verify(t, &keys(), NOW).is_err(), "{t:?}");
        }
    }

    #[test]
    fn not_yet_valid_is_refused() {
        let t = token(&Claims {
            nbf: Some(NOW + 3600),
            ..claims()
        });
        assert_eq!(verify(&t, &keys(), NOW), Err(TokenError::NotYetValid));
    }
}

/// Sign a webhook body as LiveKit does: a 5-minute HS256 token whose `sha256` claim is the
/// standard base64 of the body's SHA-256, sent as the raw `Authorization` header value.
pub fn sign_webhook(body: &[u8], api_key: &str, secret: &[u8], now: i64) -> String {
    use base64::engine::general_purpose::STANDARD;
    use sha2::Digest;
    let claims = Claims {
        iss: api_key.to_string(),
        nbf: Some(now),
        exp: Some(now + 300),
        sha256: STANDARD.encode(Sha256::digest(body)),
        ..Default::default()
    };
    mint(&claims, secret)
}

#[cfg(test)]
mod webhook_tests {
    use super::*;

    #[test]
    fn webhook_token_carries_body_hash() {
        let mut keys = KeySet::new();
        keys.insert("key", "a-secret-of-at-least-32-bytes-long-000")
            .unwrap();
        let t = sign_webhook(b"{}", "key", b"a-secret-of-at-least-32-bytes-long-000", 1_000);
        let c = verify(&t, &keys, 1_000).unwrap();
        assert_eq!(c.sha256, "RBNvo1WzZ4oRRq0W9+hknpT7T8If536DEMBg9hyq/4o=");
    }
}
