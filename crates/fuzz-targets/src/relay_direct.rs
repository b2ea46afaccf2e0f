//! Datagrams on a node link's direct media port (`pylon_relay::direct`): opening never
//! panics whatever the bytes, nothing but what the peer's key sealed opens, and what one end
//! seals the other opens to the same bytes, once.
use pylon_relay::direct::{split_keys, HEADER, KEYING_MATERIAL, TAG};

pub fn run(data: &[u8]) {
    let material = [3u8; KEYING_MATERIAL];
    let (mut tx, _) = split_keys(&material, true);
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
    }
}
