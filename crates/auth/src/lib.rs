//! LiveKit access tokens: parsing, HS256 verification, grants and minting.
//!
//! Pure functions, no clock reads: callers pass `now` as unix seconds. The rules follow
//! LiveKit's server (`exp` required, 60 s leeway, `iss` names the API key, identity from
//! `sub` with `jti` as fallback) so tokens minted by any LiveKit server SDK verify here.

mod claims;
mod jwt;
mod keys;

pub use claims::{Claims, ParticipantPermission, VideoGrant};
pub use jwt::{mint, sign_hs256, sign_webhook, verify, TokenError, LEEWAY_SECS};
pub use keys::{ApiKey, KeyError, KeySet};
