//! Data packets on the `_reliable` / `_lossy` channels.

use livekit_protocol as lk;

use crate::PcKind;

/// Label of the ordered, reliable channel.
pub const RELIABLE_LABEL: &str = "_reliable";
/// Label of the unordered channel without retransmissions.
pub const LOSSY_LABEL: &str = "_lossy";

/// Which channel a packet travels on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataKind {
    Reliable,
    Lossy,
}

impl DataKind {
    pub fn label(self) -> &'static str {
        match self {
            DataKind::Reliable => RELIABLE_LABEL,
            DataKind::Lossy => LOSSY_LABEL,
        }
    }

    pub fn from_label(label: &str) -> Option<Self> {
        match label {
            RELIABLE_LABEL => Some(DataKind::Reliable),
            LOSSY_LABEL => Some(DataKind::Lossy),
            _ => None,
        }
    }
}

/// A data packet received on one of the client's channels.
#[derive(Clone, Debug)]
pub struct ReceivedData {
    pub kind: DataKind,
    /// Which connection it came on (the server uses the subscriber's when it can).
    pub pc: PcKind,
    pub packet: lk::DataPacket,
}

impl ReceivedData {
    /// The user payload, if this is a `UserPacket`.
    pub fn user(&self) -> Option<&lk::UserPacket> {
        match &self.packet.value {
            Some(lk::data_packet::Value::User(u)) => Some(u),
            _ => None,
        }
    }

    /// The user payload bytes, or empty.
    pub fn payload(&self) -> &[u8] {
        self.user().map(|u| u.payload.as_slice()).unwrap_or(&[])
    }
}

/// A `DataPacket` carrying a `UserPacket` with `payload`, for `destinations` (identities;
/// empty = everyone), addressed as current SDKs do: on the outer packet only.
pub fn user_packet(payload: &[u8], destinations: &[&str]) -> lk::DataPacket {
    lk::DataPacket {
        destination_identities: destinations.iter().map(|s| s.to_string()).collect(),
        value: Some(lk::data_packet::Value::User(lk::UserPacket {
            payload: payload.to_vec(),
            ..Default::default()
        })),
        ..Default::default()
    }
}
