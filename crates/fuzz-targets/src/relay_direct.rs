//! Datagrams on a node link's direct media port (`pylon_relay::direct`): opening never
//! panics whatever the bytes, nothing but what the peer's key sealed opens, and what one end
//! seals (on any channel) the other opens to the same bytes, once.
use pylon_relay::direct::{channel_sealer, split_keys, HEADER, KEYING_MATERIAL, TAG};

pub fn run(data: &[u8]) {
    let material = [3u8; KEYING_MATERIAL];
    let (mut tx, _) = split_keys(&material, true);
    let mut worker = channel_sealer(&material, true, 7);
    let (_, mut rx) = split_keys(&material, false);
    let mut sealed = Vec::new();
    for chunk in data.split(|b| *b == 0xfe) {
        // Whatever arrives: refused, or (only if it is a real datagram) opened.
        let mut raw = chunk.to_vec();
        if let Ok(plain) = rx.open(&mut raw) {
            assert_eq!(plain.len(), chunk.len() - HEADER - TAG);
        }
        // What the peer seals opens to itself, and a second time is a replay.
        tx.seal(&mut sealed, |b| b.extend_from_slice(chunk));
        assert_eq!(rx.open(&mut sealed.clone()).ok(), Some(chunk));
        assert!(rx.open(&mut sealed).is_err());
        // A worker's channel: its own numbers, the same key.
        worker.seal(&mut sealed, |b| b.extend_from_slice(chunk));
        assert_eq!(rx.open_channel(&mut sealed.clone()).ok(), Some((7, chunk)));
    }
}
