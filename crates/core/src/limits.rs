//! Size limits on user-supplied strings, with LiveKit's defaults (`limit.*` in livekit.yaml).

use std::collections::HashMap;

/// Longest room name, in bytes.
pub const MAX_ROOM_NAME_LEN: usize = 256;
/// Longest participant identity, in bytes.
pub const MAX_IDENTITY_LEN: usize = 256;
/// Longest participant display name, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// Largest participant or room metadata, in bytes.
pub const MAX_METADATA_SIZE: usize = 64_000;
/// Largest total size of a participant's attributes (keys + values), in bytes.
pub const MAX_ATTRIBUTES_SIZE: usize = 64_000;
/// Most tracks one participant may have announced (AddTrack) and not yet published, and most
/// it may publish: a client cannot grow the server's state without bound.
pub const MAX_PENDING_TRACKS: usize = 32;
pub const MAX_PUBLISHED_TRACKS: usize = 64;
/// Most data tracks one participant may publish, and most it may receive at once.
pub const MAX_DATA_TRACKS: usize = 64;
pub const MAX_DATA_SUBSCRIPTIONS: usize = 1024;
/// Longest data track name, in bytes (LiveKit's).
pub const MAX_DATA_TRACK_NAME_LEN: usize = 256;
/// Subscription changes read from one `UpdateDataSubscription`; the rest are dropped.
pub const MAX_DATA_SUBSCRIPTION_UPDATES: usize = 256;
/// Largest data-track packet forwarded, header included: the SDKs' transport MTU (16,000
/// bytes, `TRANSPORT_MTU` in rust-sdks, `TRANSPORT_MTU_BYTES` in JS). A larger one is dropped,
/// so a hostile publisher cannot make every subscriber's channel carry 64 KiB messages.
pub const MAX_DATA_TRACK_PACKET: usize = 16_000;
/// Most media sections (`m=` lines) a client's offer may have. Every section of an offer becomes
/// state in the peer connection (on `/rtc/v1` a `recvonly` one gets a send stream with its
/// resend buffer), so a hostile offer must not have thousands. A client has one per track it
/// publishes and, single-PC, one per subscription of its session.
pub const MAX_OFFER_SECTIONS: usize = 1024;

/// An offer's text with more than [`MAX_OFFER_SECTIONS`] media sections is refused.
pub fn check_offer_sections(sdp: &str) -> Result<(), String> {
    let sections = sdp.lines().filter(|l| l.starts_with("m=")).count();
    if sections > MAX_OFFER_SECTIONS {
        return Err(format!(
            "{sections} media sections, more than {MAX_OFFER_SECTIONS}"
        ));
    }
    Ok(())
}

/// Which limit a value broke.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LimitError {
    #[error("room name length exceeds {MAX_ROOM_NAME_LEN} bytes")]
    RoomName,
    #[error("participant identity length exceeds {MAX_IDENTITY_LEN} bytes")]
    Identity,
    #[error("participant name length exceeds {MAX_NAME_LEN} bytes")]
    Name,
    #[error("metadata size exceeds {MAX_METADATA_SIZE} bytes")]
    Metadata,
    #[error("attributes size exceeds {MAX_ATTRIBUTES_SIZE} bytes")]
    Attributes,
}

pub fn check_room_name(s: &str) -> Result<(), LimitError> {
    (s.len() <= MAX_ROOM_NAME_LEN)
        .then_some(())
        .ok_or(LimitError::RoomName)
}

pub fn check_identity(s: &str) -> Result<(), LimitError> {
    (s.len() <= MAX_IDENTITY_LEN)
        .then_some(())
        .ok_or(LimitError::Identity)
}

pub fn check_name(s: &str) -> Result<(), LimitError> {
    (s.len() <= MAX_NAME_LEN).then_some(()).ok_or(LimitError::Name)
}

pub fn check_metadata(s: &str) -> Result<(), LimitError> {
    (s.len() <= MAX_METADATA_SIZE)
        .then_some(())
        .ok_or(LimitError::Metadata)
}

/// Attributes after applying `update` to `current` (empty value deletes) must fit.
pub fn check_attributes(
    current: &HashMap<String, String>,
    update: &HashMap<String, String>,
) -> Result<(), LimitError> {
    let mut merged = current.clone();
    apply_attributes(&mut merged, update);
    let size: usize = merged.iter().map(|(k, v)| k.len() + v.len()).sum();
    (size <= MAX_ATTRIBUTES_SIZE)
        .then_some(())
        .ok_or(LimitError::Attributes)
}

/// Apply an attribute update (an empty value deletes the key).
pub fn apply_attributes(current: &mut HashMap<String, String>, update: &HashMap<String, String>) {
    for (k, v) in update {
        if v.is_empty() {
            current.remove(k);
        } else {
            current.insert(k.clone(), v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_accept_the_boundary_and_refuse_one_more() {
        assert!(check_metadata(&"x".repeat(MAX_METADATA_SIZE)).is_ok());
        assert_eq!(
            check_metadata(&"x".repeat(MAX_METADATA_SIZE + 1)),
            Err(LimitError::Metadata)
        );
        assert_eq!(check_room_name(&"r".repeat(257)), Err(LimitError::RoomName));
    }

    #[test]
    fn attribute_deletions_count_before_the_check() {
        let big: HashMap<_, _> = [("a".to_string(), "x".repeat(MAX_ATTRIBUTES_SIZE - 1))].into();
        let add: HashMap<_, _> = [("b".to_string(), "yy".to_string())].into();
        assert_eq!(check_attributes(&big, &add), Err(LimitError::Attributes));
        let replace: HashMap<_, _> =
            [("a".to_string(), String::new()), ("b".to_string(), "yy".into())].into();
        assert!(check_attributes(&big, &replace).is_ok());
    }
}
