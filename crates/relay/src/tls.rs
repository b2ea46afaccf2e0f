//! The QUIC layer's TLS: encryption, not identity.
//!
//! Every node makes a throwaway self-signed certificate at start and accepts any certificate
//! from a peer: who the peer is gets proven one layer up (`auth.rs`), by a proof over this
//! TLS session's exported keying material made with the cluster's shared secret. So there is
//! no CA to run, and a certificate says nothing anyone relies on.

use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::RelayError;

/// The application protocol both ends speak.
pub const ALPN: &[u8] = b"pylon-relay/1";

/// A link with nothing to say sends a keep-alive this often...
const KEEP_ALIVE: Duration = Duration::from_secs(1);
/// ...and one that hears nothing for this long is down.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Datagrams waiting to be read before QUIC drops new ones.
const DATAGRAM_RECEIVE_BUFFER: usize = 4 << 20;
/// Inside a region paths carry 1,500-byte packets; a media datagram is an RTP payload of up to
/// ~1,200 bytes plus ~60 bytes of framing.
const INITIAL_MTU: u16 = 1400;
/// Bytes in flight a link may start with: several keyframes of the largest simulcast layer.
const INITIAL_WINDOW: u64 = 1 << 20;

fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(KEEP_ALIVE));
    t.max_idle_timeout(Some(
        IDLE_TIMEOUT.try_into().expect("5 s is a valid idle timeout"),
    ));
    t.datagram_receive_buffer_size(Some(DATAGRAM_RECEIVE_BUFFER));
    t.initial_mtu(INITIAL_MTU);
    // Media on a link is app-limited (the publishers' own congestion control sets its rate),
    // so the window never grows past its start: a keyframe burst larger than the default
    // 10-packet window waited for acknowledgements (delayed up to 25 ms) and showed up as
    // the region hop's latency tail.
    let mut cc = quinn::congestion::CubicConfig::default();
    cc.initial_window(INITIAL_WINDOW);
    t.congestion_controller_factory(Arc::new(cc));
    Arc::new(t)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A fresh self-signed certificate and the server side of the link's QUIC.
pub fn server_config() -> Result<quinn::ServerConfig, RelayError> {
    let cert = rcgen::generate_simple_self_signed(vec!["pylon-relay".into()])
        .map_err(|e| RelayError::Setup(format!("certificate: {e}")))?;
    let der = CertificateDer::from(cert.cert);
    let key = PrivateKeyDer::from(PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der()));
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| RelayError::Setup(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![der], key)
        .map_err(|e| RelayError::Setup(e.to_string()))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicServerConfig::try_from(tls).map_err(|e| RelayError::Setup(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(transport());
    Ok(config)
}

/// The dialling side: any certificate is accepted (see the module comment).
pub fn client_config() -> Result<quinn::ClientConfig, RelayError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| RelayError::Setup(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicClientConfig::try_from(tls).map_err(|e| RelayError::Setup(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(transport());
    Ok(config)
}

/// Accepts any server certificate; the signature over the handshake is still checked, so
/// the session keys are the server's (and the peer is authenticated by `auth.rs`).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
