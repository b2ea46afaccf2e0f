//! The `join_request` query parameter of `/rtc/v1` (single peer connection signalling).
//!
//! Today's SDKs put the whole `JoinRequest` in the WebSocket URL: URL-safe base64 of a
//! `WrappedJoinRequest`, whose `join_request` bytes are the protobuf `JoinRequest`, plain or
//! gzipped (livekit-client gzips when the browser has `CompressionStream`; the Rust SDK when
//! that is smaller). livekit-client keeps the `=` padding (percent-encoded in the URL, decoded
//! by the query parser), the Rust SDK too; both forms are taken. The request carries the
//! client's info and settings and, on a fresh join, the publisher offer (`docs/single-pc.md`
//! §1.1).
//!
//! Sans-IO and bounded: the decoded and the decompressed sizes are capped at
//! [`MAX_JOIN_REQUEST`], so a small hostile parameter cannot expand into a large allocation.

use std::io::Read;

use base64::Engine;
use livekit_protocol as lk;
use prost::Message;

/// The largest join request taken, before and after decompression (LiveKit's limit too). An
/// uncompressed request with a publisher offer is 10–15 KB.
pub const MAX_JOIN_REQUEST: usize = 1 << 20;

/// Why a `join_request` parameter was refused; the edge answers 400 with this text.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JoinRequestError {
    #[error("join_request is required")]
    Missing,
    #[error("join request too large")]
    TooLarge,
    #[error("cannot base64 decode wrapped join request")]
    Base64,
    #[error("cannot unmarshal wrapped join request")]
    Wrapped,
    #[error("unknown join request compression {0}")]
    Compression(i32),
    #[error("cannot read decompressed join request")]
    Decompress,
    #[error("cannot unmarshal join request")]
    Request,
}

/// Decode the `join_request` parameter (URL-safe base64, padded or not; standard base64 is
/// taken too).
pub fn decode(param: &str) -> Result<lk::JoinRequest, JoinRequestError> {
    if param.is_empty() {
        return Err(JoinRequestError::Missing);
    }
    // Base64 grows by 4/3: anything longer decodes to more than the limit.
    if param.len() > MAX_JOIN_REQUEST / 3 * 4 + 4 {
        return Err(JoinRequestError::TooLarge);
    }
    let trimmed = param.trim_end_matches('=');
    let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let standard = base64::engine::general_purpose::STANDARD_NO_PAD;
    let bytes = url_safe
        .decode(trimmed)
        .or_else(|_| standard.decode(trimmed))
        .map_err(|_| JoinRequestError::Base64)?;
    let wrapped = lk::WrappedJoinRequest::decode(bytes.as_slice()).map_err(|_| JoinRequestError::Wrapped)?;
    use lk::wrapped_join_request::Compression;
    let raw = match Compression::try_from(wrapped.compression) {
        Ok(Compression::None) => wrapped.join_request,
        Ok(Compression::Gzip) => gunzip(&wrapped.join_request)?,
        Err(_) => return Err(JoinRequestError::Compression(wrapped.compression)),
    };
    lk::JoinRequest::decode(raw.as_slice()).map_err(|_| JoinRequestError::Request)
}

/// Gunzip at most `MAX_JOIN_REQUEST` bytes; more is refused, not truncated.
fn gunzip(gz: &[u8]) -> Result<Vec<u8>, JoinRequestError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .take(MAX_JOIN_REQUEST as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| JoinRequestError::Decompress)?;
    if out.len() > MAX_JOIN_REQUEST {
        return Err(JoinRequestError::TooLarge);
    }
    Ok(out)
}

/// Encode a join request as an SDK does (tests, the load generator): URL-safe base64 with
/// padding, optionally gzipped.
pub fn encode(req: &lk::JoinRequest, gzip: bool) -> String {
    use std::io::Write;
    let raw = req.encode_to_vec();
    let (compression, bytes) = if gzip {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&raw).expect("writing to a Vec cannot fail");
        let gz = enc.finish().expect("writing to a Vec cannot fail");
        (lk::wrapped_join_request::Compression::Gzip, gz)
    } else {
        (lk::wrapped_join_request::Compression::None, raw)
    };
    let wrapped = lk::WrappedJoinRequest {
        compression: compression as i32,
        join_request: bytes,
    };
    base64::engine::general_purpose::URL_SAFE.encode(wrapped.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> lk::JoinRequest {
        lk::JoinRequest {
            client_info: Some(lk::ClientInfo {
                sdk: lk::client_info::Sdk::Js as i32,
                protocol: 17,
                ..Default::default()
            }),
            connection_settings: Some(lk::ConnectionSettings {
                auto_subscribe: true,
                ..Default::default()
            }),
            publisher_offer: Some(lk::SessionDescription {
                r#type: "offer".into(),
                sdp: "v=0\r\n".repeat(100),
                id: 1,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn plain_and_gzipped_padded_and_unpadded_decode_to_the_request() {
        for gzip in [false, true] {
            let param = encode(&request(), gzip);
            assert_eq!(decode(&param), Ok(request()));
            assert_eq!(decode(param.trim_end_matches('=')), Ok(request()));
        }
    }

    #[test]
    fn garbage_is_refused_with_the_step_that_failed() {
        assert_eq!(decode(""), Err(JoinRequestError::Missing));
        assert_eq!(decode("!!!"), Err(JoinRequestError::Base64));
        // A field tag of 0 is not protobuf.
        assert_eq!(decode("AA"), Err(JoinRequestError::Wrapped));
        let bad_gzip = lk::WrappedJoinRequest {
            compression: 1,
            join_request: b"not gzip".to_vec(),
        };
        let param = base64::engine::general_purpose::URL_SAFE.encode(bad_gzip.encode_to_vec());
        assert_eq!(decode(&param), Err(JoinRequestError::Decompress));
        let unknown = lk::WrappedJoinRequest {
            compression: 7,
            join_request: vec![],
        };
        let param = base64::engine::general_purpose::URL_SAFE.encode(unknown.encode_to_vec());
        assert_eq!(decode(&param), Err(JoinRequestError::Compression(7)));
    }

    #[test]
    fn a_gzip_bomb_is_refused_without_inflating_it() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&vec![0u8; 64 << 20]).unwrap();
        let gz = enc.finish().unwrap();
        assert!(gz.len() < 200 << 10, "64 MiB of zeros gzips small");
        let wrapped = lk::WrappedJoinRequest {
            compression: 1,
            join_request: gz,
        };
        let param = base64::engine::general_purpose::URL_SAFE.encode(wrapped.encode_to_vec());
        assert_eq!(decode(&param), Err(JoinRequestError::TooLarge));
    }
}
