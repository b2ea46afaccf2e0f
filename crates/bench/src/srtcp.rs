//! SRTCP a test writes itself, with the keys of a client it owns: the RTCP a hostile client
//! could send but str0m's client API never writes (forged transport-wide congestion control
//! feedback, arbitrary feedback packets).
//!
//! A client peer built with [`capturing_provider`] runs its DTLS through a wrapper of str0m's
//! own crypto provider that records the SRTP keying material the handshake exports. That is
//! no privilege a real client lacks: every client knows its own keys. [`SrtcpWriter`] then
//! protects RTCP with the client's outgoing keys (RFC 7714, AEAD_AES_256_GCM, the profile
//! str0m negotiates with itself; RFC 3711's key derivation), so the server's str0m
//! authenticates it and hands its content to the RTCP parser and the bandwidth estimator.
//!
//! The keys are kept per thread: the in-memory simulation ([`crate::sim`]) runs on one thread,
//! and only one peer per test uses the capturing provider.

use std::cell::RefCell;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use str0m::config::{CryptoProvider, DtlsCert, KeyingMaterial};
use str0m::crypto::dtls::{
    DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, ProtocolVersion, SrtpProfile,
};
use str0m::crypto::{AeadAes256Gcm, AeadAes256GcmCipher, CryptoError};

/// RFC 3711 §4.3.2 key derivation labels for SRTCP.
const LABEL_RTCP_KEY: u8 = 3;
const LABEL_RTCP_SALT: u8 = 5;

/// What the last handshake of a capturing peer on this thread exported: the keying
/// material, its profile, and whether the peer was the DTLS client.
type Captured = (KeyingMaterial, SrtpProfile, bool);

thread_local! {
    static CAPTURED: RefCell<Option<Captured>> = const { RefCell::new(None) };
}

fn inner() -> &'static CryptoProvider {
    static INNER: OnceLock<CryptoProvider> = OnceLock::new();
    INNER.get_or_init(str0m::crypto::from_feature_flags)
}

/// str0m's crypto provider, with DTLS instances that record the keys they export.
pub fn capturing_provider() -> Arc<CryptoProvider> {
    let mut p = inner().clone();
    p.dtls_provider = &CaptureDtls;
    Arc::new(p)
}

#[derive(Debug)]
struct CaptureDtls;

impl DtlsProvider for CaptureDtls {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        inner().dtls_provider.generate_certificate()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        dtls_version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        let dtls = inner().dtls_provider.new_dtls(cert, now, dtls_version, mtu)?;
        Ok(Box::new(CaptureInstance(dtls)))
    }

    fn is_test(&self) -> bool {
        inner().dtls_provider.is_test()
    }
}

/// A DTLS instance that passes everything through and keeps the exported keying material.
#[derive(Debug)]
struct CaptureInstance(Box<dyn DtlsInstance>);

impl DtlsInstance for CaptureInstance {
    fn set_active(&mut self, active: bool) {
        self.0.set_active(active)
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.0.handle_packet(packet)
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        let out = self.0.poll_output(buf);
        if let DtlsOutput::KeyingMaterial(mat, profile) = &out {
            let keys = (KeyingMaterial::new(mat), *profile, self.0.is_active());
            CAPTURED.with(|c| *c.borrow_mut() = Some(keys));
        }
        out
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.0.handle_timeout(now)
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.0.send_application_data(data)
    }

    fn is_active(&self) -> bool {
        self.0.is_active()
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.0.protocol_version()
    }

    fn is_closing(&self) -> bool {
        self.0.is_closing()
    }

    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.0.close()
    }
}

/// Writes SRTCP as the capturing peer would: its outgoing RTCP key and salt.
pub struct SrtcpWriter {
    cipher: Box<dyn AeadAes256GcmCipher>,
    salt: [u8; AeadAes256Gcm::SALT_LEN],
    /// The next SRTCP index (31 bits). str0m's receiver keeps no replay window for SRTCP,
    /// so this index space may overlap the peer's own.
    index: u32,
}

impl std::fmt::Debug for SrtcpWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtcpWriter")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl SrtcpWriter {
    /// From the keys the last capturing handshake on this thread exported (taken, so the
    /// next capturing peer starts clean). `Err` says why not: no handshake yet, or a
    /// profile this writer does not implement.
    pub fn from_captured() -> Result<Self, String> {
        let (mat, profile, active) = CAPTURED
            .with(|c| c.borrow_mut().take())
            .ok_or("no capturing peer finished its DTLS handshake on this thread")?;
        if profile != SrtpProfile::AEAD_AES_256_GCM {
            return Err(format!(
                "SRTP profile {profile:?}: only AEAD_AES_256_GCM is written here"
            ));
        }
        const ML: usize = AeadAes256Gcm::KEY_LEN;
        const SL: usize = AeadAes256Gcm::SALT_LEN;
        if mat.len() != 2 * (ML + SL) {
            return Err(format!("keying material of {} bytes", mat.len()));
        }
        // RFC 5764 §4.2: client key, server key, client salt, server salt. A peer sends with
        // its own role's half.
        let (k, s) = if active { (0, 2 * ML) } else { (ML, 2 * ML + SL) };
        let master_key = &mat[k..k + ML];
        let master_salt = &mat[s..s + SL];
        let srtp = inner().srtp_provider;
        let mut key = [0u8; ML];
        derive(master_key, master_salt, LABEL_RTCP_KEY, &mut key);
        let mut salt = [0u8; SL];
        derive(master_key, master_salt, LABEL_RTCP_SALT, &mut salt);
        Ok(SrtcpWriter {
            cipher: srtp.aead_aes_256_gcm().create_cipher(key, true),
            salt,
            index: 0x4000_0000,
        })
    }

    /// Protect one RTCP packet (or compound): its first 8 bytes (header and sender SSRC)
    /// stay clear and are authenticated, the rest is encrypted; then the tag and the E flag
    /// with the SRTCP index (RFC 7714 §9). Shorter input is padded to 8 bytes.
    pub fn protect(&mut self, rtcp: &[u8]) -> Vec<u8> {
        let mut clear = rtcp.to_vec();
        if clear.len() < 8 {
            clear.resize(8, 0);
        }
        let index = self.index;
        self.index = (self.index + 1) & 0x7fff_ffff;
        let e_and_index = (0x8000_0000 | index).to_be_bytes();
        let ssrc = u32::from_be_bytes([clear[4], clear[5], clear[6], clear[7]]);
        let iv = AeadAes256Gcm::rtcp_iv(self.salt, ssrc, index);
        let mut aad = [0u8; AeadAes256Gcm::RTCP_AAD_LEN];
        aad[..8].copy_from_slice(&clear[..8]);
        aad[8..].copy_from_slice(&e_and_index);
        let body = &clear[8..];
        let mut out = vec![0u8; 8 + body.len() + AeadAes256Gcm::TAG_LEN + 4];
        out[..8].copy_from_slice(&clear[..8]);
        let sealed = 8 + body.len() + AeadAes256Gcm::TAG_LEN;
        self.cipher
            .encrypt(&iv, &aad, body, &mut out[8..sealed])
            .expect("AES-GCM encrypts any length");
        out[sealed..].copy_from_slice(&e_and_index);
        out
    }
}

/// RFC 3711 §4.3.1 with AES-256 in counter mode as the PRF (RFC 6188): the session key or
/// salt for `label`, key derivation rate 0.
fn derive(master_key: &[u8], master_salt: &[u8], label: u8, out: &mut [u8]) {
    let srtp = inner().srtp_provider;
    let mut x = [0u8; 16];
    x[..master_salt.len()].copy_from_slice(master_salt);
    x[7] ^= label;
    let mut block = [0u8; 32];
    for (round, chunk) in out.chunks_mut(16).enumerate() {
        x[14..].copy_from_slice(&(round as u16).to_be_bytes());
        srtp.srtp_aes_256_ecb_round(master_key, &x, &mut block);
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
}

/// A transport-wide congestion control feedback packet (RTPFB, FMT 15;
/// draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1), written as a client would, with
/// whatever it claims.
#[derive(Clone, Copy, Debug)]
pub struct Twcc {
    /// The SSRC of the feedback's sender and of the media (any of the connection's).
    pub sender: u32,
    pub media: u32,
    /// The first transport-wide sequence number reported, and how many are reported.
    pub base: u16,
    pub count: u16,
    /// The arrival time of the first reported packet, in 64 ms units (24 bits).
    pub ref_time_64ms: u32,
    /// The feedback packet count.
    pub fb_count: u8,
    /// Each arrival after the one before, in 250 µs units.
    pub delta_250us: u8,
}

impl Twcc {
    /// The packet: packet `base + i` reported received when `received(i)`. Status chunks are
    /// one-bit status vectors, deltas one byte each.
    pub fn to_bytes(&self, received: impl Fn(u16) -> bool) -> Vec<u8> {
        let mut p = vec![0x80 | 15, 205, 0, 0];
        p.extend_from_slice(&self.sender.to_be_bytes());
        p.extend_from_slice(&self.media.to_be_bytes());
        p.extend_from_slice(&self.base.to_be_bytes());
        p.extend_from_slice(&self.count.to_be_bytes());
        p.extend_from_slice(&(self.ref_time_64ms & 0x00ff_ffff).to_be_bytes()[1..]);
        p.push(self.fb_count);
        let mut deltas = Vec::new();
        for start in (0..self.count).step_by(14) {
            // T = 1 (status vector), S = 0 (one-bit symbols), then 14 symbols (1 = received).
            let mut chunk: u16 = 0x8000;
            for bit in 0..14u16 {
                let i = start.saturating_add(bit);
                if i < self.count && received(i) {
                    chunk |= 1 << (13 - bit);
                    deltas.push(self.delta_250us);
                }
            }
            p.extend_from_slice(&chunk.to_be_bytes());
        }
        p.extend_from_slice(&deltas);
        while p.len() % 4 != 0 {
            p.push(0);
        }
        let words = (p.len() / 4 - 1) as u16;
        p[2..4].copy_from_slice(&words.to_be_bytes());
        p
    }
}

/// A picture loss indication (PSFB, FMT 1) from `sender` for `media`.
pub fn pli(sender: u32, media: u32) -> Vec<u8> {
    let mut p = vec![0x81, 206, 0, 2];
    p.extend_from_slice(&sender.to_be_bytes());
    p.extend_from_slice(&media.to_be_bytes());
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twcc_packets_are_whole_words_with_the_right_length() {
        let report = Twcc {
            sender: 1,
            media: 2,
            base: 100,
            count: 20,
            ref_time_64ms: 5,
            fb_count: 0,
            delta_250us: 4,
        };
        let p = report.to_bytes(|i| i % 2 == 0);
        // 20 bytes of header, two status chunks, ten one-byte deltas, padding to a word.
        assert_eq!(p.len(), 36);
        assert_eq!(usize::from(u16::from_be_bytes([p[2], p[3]])), p.len() / 4 - 1);
        assert_eq!(&p[12..16], &[0, 100, 0, 20]);
    }

    #[test]
    fn without_a_handshake_there_is_no_writer() {
        assert!(SrtcpWriter::from_captured().is_err());
    }
}
