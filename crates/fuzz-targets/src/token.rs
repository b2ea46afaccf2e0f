//! Access-token verification on arbitrary strings.

pub fn run(data: &[u8]) {
    let mut keys = pylon_auth::KeySet::new();
    keys.insert("key", "a-secret-of-at-least-32-bytes-long-000")
        .unwrap();
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = pylon_auth::verify(s, &keys, 1_800_000_000);
    }
}
