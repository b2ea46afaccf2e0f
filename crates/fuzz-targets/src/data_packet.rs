//! Data-packet forwarding rules on arbitrary bytes.
use pylon_core::data::{forward, DataKind, DataSender};
use pylon_core::ids::{ParticipantIdentity, ParticipantSid};

pub fn run(data: &[u8]) {
    let (sid, id) = (ParticipantSid::new("PA_a"), ParticipantIdentity::new("a"));
    let sender = DataSender {
        sid: &sid,
        identity: &id,
        can_publish_data: true,
        hidden: false,
        agent: false,
    };
    let mut last = 0;
    for kind in [DataKind::Reliable, DataKind::Lossy] {
        if let Ok(f) = forward(data, kind, sender, &mut last) {
            // Whatever we forward must itself be a valid packet with the real sender.
            let p = <livekit_protocol::DataPacket as prost::Message>::decode(f.bytes.as_slice()).unwrap();
            assert_eq!(p.participant_identity, "a");
        }
    }
}
