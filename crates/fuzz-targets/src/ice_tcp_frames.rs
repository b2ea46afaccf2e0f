//! RFC 4571 framing of the ICE/TCP media port: an arbitrary byte stream, read in arbitrary
//! pieces (the first byte seeds the piece sizes), never panics, never yields a frame over the
//! limit, and yields the same frames however it is split.
use pylon_server::framing::{Deframer, FrameError, MAX_FRAME};

fn frames(stream: &[u8], piece: impl Fn(usize) -> usize) -> (Vec<Vec<u8>>, Option<FrameError>) {
    let mut d = Deframer::default();
    let (mut out, mut at, mut i) = (Vec::new(), 0, 0);
    while at < stream.len() {
        let spare = d.spare();
        assert!(!spare.is_empty());
        let n = piece(i).clamp(1, spare.len()).min(stream.len() - at);
        spare[..n].copy_from_slice(&stream[at..at + n]);
        d.commit(n);
        (at, i) = (at + n, i + 1);
        while let Some(f) = d.next_frame() {
            match f {
                Ok(f) => {
                    assert!(!f.is_empty() && f.len() <= MAX_FRAME);
                    out.push(f.to_vec());
                }
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

pub fn run(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let whole = frames(stream, |_| usize::MAX);
    let pieces = frames(stream, |i| 1 + (seed as usize * 31 + i * 7) % 97);
    assert_eq!(whole, pieces);
}
