//! Data packets (`_reliable` / `_lossy` channels): the forwarding rules of LiveKit.
//!
//! A packet from a participant is decoded once, its sender fields are overwritten with the
//! sender's real sid and identity (no forging), reliable duplicates are dropped by sequence,
//! and the destination filter is taken from the packet. The packet is re-encoded once and the
//! same bytes go to every destination.

use livekit_protocol::{data_packet, DataPacket};
use prost::Message;

use crate::ids::{ParticipantIdentity, ParticipantSid};

/// Which channel a packet travels on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataKind {
    Reliable,
    Lossy,
}

/// The data channel labels LiveKit's SDKs open.
pub const RELIABLE_LABEL: &str = "_reliable";
pub const LOSSY_LABEL: &str = "_lossy";
/// The channel data-track packets travel on (unordered, no retransmits; `datatrack.rs`).
pub const DATA_TRACK_LABEL: &str = "_data_track";

impl DataKind {
    pub fn from_label(label: &str) -> Option<DataKind> {
        match label {
            RELIABLE_LABEL => Some(DataKind::Reliable),
            LOSSY_LABEL => Some(DataKind::Lossy),
            _ => None,
        }
    }
}

/// Who sent a packet, as the server knows it.
#[derive(Clone, Copy, Debug)]
pub struct DataSender<'a> {
    pub sid: &'a ParticipantSid,
    pub identity: &'a ParticipantIdentity,
    pub can_publish_data: bool,
    pub hidden: bool,
    pub agent: bool,
}

/// Which participants a packet goes to. Empty lists mean everyone but the sender.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Destinations {
    pub identities: Vec<String>,
    pub sids: Vec<String>,
}

impl Destinations {
    pub fn everyone(&self) -> bool {
        self.identities.is_empty() && self.sids.is_empty()
    }

    pub fn includes(&self, sid: &ParticipantSid, identity: &ParticipantIdentity) -> bool {
        self.everyone()
            || self.identities.iter().any(|i| i == identity.as_str())
            || self.sids.iter().any(|s| s == sid.as_str())
    }
}

/// A packet ready to forward: encoded once, sent to every destination.
#[derive(Debug)]
pub struct Forward {
    pub kind: DataKind,
    pub bytes: Vec<u8>,
    pub to: Destinations,
}

/// Why a packet was not forwarded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DataError {
    #[error("data packet is not a valid DataPacket: {0}")]
    Malformed(String),
    #[error("sender may not publish data")]
    NotAllowed,
    #[error("reliable packet sequence {seq} already seen (last {last})")]
    Duplicate { seq: u32, last: u32 },
    #[error("packet type is not forwarded between participants")]
    NotForwarded,
}

/// Apply the forwarding rules to one packet received from `sender` on `kind`.
/// `last_reliable_seq` is the highest reliable sequence seen from this sender; it is updated.
pub fn forward(
    bytes: &[u8],
    kind: DataKind,
    sender: DataSender<'_>,
    last_reliable_seq: &mut u32,
) -> Result<Forward, DataError> {
    if !sender.can_publish_data {
        return Err(DataError::NotAllowed);
    }
    let mut packet = DataPacket::decode(bytes).map_err(|e| DataError::Malformed(e.to_string()))?;
    if kind == DataKind::Reliable && packet.sequence > 0 {
        if packet.sequence <= *last_reliable_seq {
            return Err(DataError::Duplicate {
                seq: packet.sequence,
                last: *last_reliable_seq,
            });
        }
        *last_reliable_seq = packet.sequence;
    }
    match &packet.value {
        Some(data_packet::Value::Metrics(_)) => return Err(DataError::NotForwarded),
        Some(data_packet::Value::Transcription(_)) if !sender.agent => return Err(DataError::NotForwarded),
        _ => {}
    }
    let (sid, identity) = if sender.hidden {
        (String::new(), String::new())
    } else {
        (
            sender.sid.as_str().to_string(),
            sender.identity.as_str().to_string(),
        )
    };
    #[allow(deprecated)]
    {
        packet.kind = match kind {
            DataKind::Reliable => data_packet::Kind::Reliable as i32,
            DataKind::Lossy => data_packet::Kind::Lossy as i32,
        };
    }
    packet.participant_sid = sid.clone();
    packet.participant_identity = identity.clone();
    let mut to = Destinations {
        identities: packet.destination_identities.clone(),
        sids: vec![],
    };
    if let Some(data_packet::Value::User(user)) = &mut packet.value {
        user.participant_sid = sid;
        user.participant_identity = identity;
        if to.identities.is_empty() {
            to.identities = user.destination_identities.clone();
        }
        user.destination_identities = to.identities.clone();
        to.sids = user.destination_sids.clone();
    }
    packet.destination_identities = to.identities.clone();
    Ok(Forward {
        kind,
        bytes: packet.encode_to_vec(),
        to,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use livekit_protocol::UserPacket;

    fn sender<'a>(sid: &'a ParticipantSid, id: &'a ParticipantIdentity) -> DataSender<'a> {
        DataSender {
            sid,
            identity: id,
            can_publish_data: true,
            hidden: false,
            agent: false,
        }
    }

    fn user_packet(forged: &str, to: &[&str], seq: u32) -> Vec<u8> {
        DataPacket {
            participant_identity: forged.into(),
            destination_identities: to.iter().map(|s| s.to_string()).collect(),
            sequence: seq,
            value: Some(data_packet::Value::User(UserPacket {
                participant_identity: forged.into(),
                payload: b"hi".to_vec(),
                ..Default::default()
            })),
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn forged_identity_is_overwritten() {
        let (sid, id) = (ParticipantSid::new("PA_a"), ParticipantIdentity::new("alice"));
        let mut last = 0;
        let f = forward(
            &user_packet("mallory", &[], 0),
            DataKind::Lossy,
            sender(&sid, &id),
            &mut last,
        )
        .unwrap();
        let p = DataPacket::decode(f.bytes.as_slice()).unwrap();
        assert_eq!(p.participant_identity, "alice");
        assert_eq!(p.participant_sid, "PA_a");
        let Some(data_packet::Value::User(u)) = p.value else {
            panic!("user packet")
        };
        assert_eq!(u.participant_identity, "alice");
        assert!(f.to.everyone());
    }

    #[test]
    fn destinations_are_kept_and_mirrored() {
        let (sid, id) = (ParticipantSid::new("PA_a"), ParticipantIdentity::new("alice"));
        let mut last = 0;
        let f = forward(
            &user_packet("", &["bob"], 0),
            DataKind::Reliable,
            sender(&sid, &id),
            &mut last,
        )
        .unwrap();
        assert!(f
            .to
            .includes(&ParticipantSid::new("PA_b"), &ParticipantIdentity::new("bob")));
        assert!(!f
            .to
            .includes(&ParticipantSid::new("PA_c"), &ParticipantIdentity::new("carol")));
    }

    #[test]
    fn reliable_duplicates_are_dropped_and_sequence_kept() {
        let (sid, id) = (ParticipantSid::new("PA_a"), ParticipantIdentity::new("alice"));
        let mut last = 0;
        let f = forward(
            &user_packet("", &[], 5),
            DataKind::Reliable,
            sender(&sid, &id),
            &mut last,
        )
        .unwrap();
        assert_eq!(DataPacket::decode(f.bytes.as_slice()).unwrap().sequence, 5);
        let again = forward(
            &user_packet("", &[], 5),
            DataKind::Reliable,
            sender(&sid, &id),
            &mut last,
        );
        assert_eq!(again.unwrap_err(), DataError::Duplicate { seq: 5, last: 5 });
    }

    #[test]
    fn garbage_is_malformed() {
        let (sid, id) = (ParticipantSid::new("PA_a"), ParticipantIdentity::new("alice"));
        let mut last = 0;
        let r = forward(&[0xff, 0xff, 0xff], DataKind::Lossy, sender(&sid, &id), &mut last);
        assert!(matches!(r, Err(DataError::Malformed(_))));
    }

    #[test]
    fn sender_without_permission_is_refused() {
        let (sid, id) = (ParticipantSid::new("PA_a"), ParticipantIdentity::new("alice"));
        let mut last = 0;
        let s = DataSender {
            can_publish_data: false,
            ..sender(&sid, &id)
        };
        let r = forward(&user_packet("", &[], 0), DataKind::Lossy, s, &mut last);
        assert_eq!(r.unwrap_err(), DataError::NotAllowed);
    }
}
