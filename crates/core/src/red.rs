//! RFC 2198 redundant audio (RED), as libwebrtc and livekit-client send Opus: each packet
//! carries the current frame (the *primary* block) after copies of earlier ones. Pylon forwards
//! RED untouched to receivers that negotiated it and the primary block alone, as plain Opus,
//! to those that did not. Parsing only; a hostile payload is refused, never trusted.
//!
//! ```text
//! redundant block header (4 bytes): |1| block PT (7) | timestamp offset (14) | length (10) |
//! primary block header (1 byte):    |0| block PT (7) |
//! then the redundant blocks' bytes in order, then the primary block's.
//! ```

use std::ops::Range;

/// Redundant blocks a packet may announce before its primary one. libwebrtc sends one or two;
/// the bound keeps a hostile header run from costing more than a few comparisons.
pub const MAX_REDUNDANT_BLOCKS: usize = 16;

/// Why a payload is not RED this parser accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedError {
    /// The headers end before the primary block's header.
    Truncated,
    /// More redundant blocks than [`MAX_REDUNDANT_BLOCKS`].
    TooManyBlocks,
    /// The redundant blocks' lengths run past the payload.
    BlocksOverrun,
}

impl std::fmt::Display for RedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RedError::Truncated => "RED headers truncated",
            RedError::TooManyBlocks => "too many RED blocks",
            RedError::BlocksOverrun => "RED block lengths exceed the payload",
        })
    }
}

impl std::error::Error for RedError {}

/// Where the primary block of RED `payload` lies (possibly empty: a frame of DTX silence).
pub fn primary(payload: &[u8]) -> Result<Range<usize>, RedError> {
    let mut at = 0;
    let (mut blocks, mut redundant_bytes) = (0, 0usize);
    loop {
        let first = *payload.get(at).ok_or(RedError::Truncated)?;
        if first & 0x80 == 0 {
            // The primary block's one-byte header ends the header run.
            at += 1;
            break;
        }
        if blocks == MAX_REDUNDANT_BLOCKS {
            return Err(RedError::TooManyBlocks);
        }
        let header = payload.get(at..at + 4).ok_or(RedError::Truncated)?;
        redundant_bytes += usize::from(header[2] & 0x03) << 8 | usize::from(header[3]);
        blocks += 1;
        at += 4;
    }
    let start = at + redundant_bytes;
    if start > payload.len() {
        return Err(RedError::BlocksOverrun);
    }
    Ok(start..payload.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A RED payload of `blocks` (redundant ones first, each with a timestamp offset) and
    /// `primary`, all of payload type 111.
    fn red(redundant: &[(u16, &[u8])], primary: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for (offset, block) in redundant {
            let len = block.len() as u16;
            out.push(0x80 | 111);
            out.push((offset >> 6) as u8);
            out.push(((offset & 0x3f) << 2) as u8 | (len >> 8) as u8);
            out.push(len as u8);
        }
        out.push(111);
        for (_, block) in redundant {
            out.extend_from_slice(block);
        }
        out.extend_from_slice(primary);
        out
    }

    #[test]
    fn finds_the_primary_block_after_redundant_ones() {
        let p = red(&[(960, b"older"), (1920, &[7u8; 300])], b"current");
        assert_eq!(&p[primary(&p).unwrap()], b"current");
        let p = red(&[], b"alone");
        assert_eq!(&p[primary(&p).unwrap()], b"alone");
    }

    #[test]
    fn an_empty_primary_block_is_a_silent_frame() {
        let p = red(&[(960, b"older")], b"");
        assert!(primary(&p).unwrap().is_empty());
    }

    #[test]
    fn hostile_headers_are_refused() {
        assert_eq!(primary(&[]), Err(RedError::Truncated));
        assert_eq!(primary(&[0x80 | 111, 0, 0]), Err(RedError::Truncated));
        // Lengths that claim more than there is.
        assert_eq!(
            primary(&[0x80 | 111, 0, 0x03, 0xff, 111, 1, 2]),
            Err(RedError::BlocksOverrun)
        );
        // A run of redundant headers with no end.
        let endless: Vec<u8> = [0x80 | 111, 0, 0, 0].repeat(MAX_REDUNDANT_BLOCKS + 1);
        assert_eq!(primary(&endless), Err(RedError::TooManyBlocks));
    }
}
