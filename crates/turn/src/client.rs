//! The client side of TURN requests: what a test or a benchmark sends, written with the same
//! codec. Real clients (libwebrtc in the SDKs and Chromium, coturn's `turnutils_uclient`) are
//! what the e2e tests use; this is for raw requests a real client would never make.

use crate::credentials::long_term_key;
use crate::stun::{attr, Class, Message, Method, Writer};
use std::net::SocketAddr;

/// A client's credential state: the key, and the realm and nonce once challenged.
#[derive(Clone, Debug)]
pub struct Session {
    pub username: String,
    pub key: [u8; 16],
    pub realm: Vec<u8>,
    pub nonce: Vec<u8>,
}

impl Session {
    pub fn new(username: &str, password: &str, realm: &str) -> Self {
        Session {
            username: username.to_owned(),
            key: long_term_key(username, realm, password),
            realm: realm.as_bytes().to_vec(),
            nonce: Vec::new(),
        }
    }

    /// Take the nonce (and realm) from a 401 or 438.
    pub fn challenged(&mut self, reply: &Message<'_>) {
        if let Some(n) = reply.nonce() {
            self.nonce = n.to_vec();
        }
        if let Some(r) = reply.get(attr::REALM) {
            self.realm = r.to_vec();
        }
    }

    fn signed(&self, w: &mut Writer<'_>) {
        w.raw(attr::USERNAME, self.username.as_bytes())
            .raw(attr::REALM, &self.realm)
            .raw(attr::NONCE, &self.nonce)
            .integrity(&self.key)
            .fingerprint();
    }

    pub fn allocate(&self, buf: &mut Vec<u8>, tx: [u8; 12]) {
        let mut w = Writer::new(buf, Method::Allocate, Class::Request, tx);
        w.raw(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        self.signed(&mut w);
    }

    pub fn refresh(&self, buf: &mut Vec<u8>, tx: [u8; 12], lifetime: u32) {
        let mut w = Writer::new(buf, Method::Refresh, Class::Request, tx);
        w.u32(attr::LIFETIME, lifetime);
        self.signed(&mut w);
    }

    pub fn create_permission(&self, buf: &mut Vec<u8>, tx: [u8; 12], peer: SocketAddr) {
        let mut w = Writer::new(buf, Method::CreatePermission, Class::Request, tx);
        w.xor_address(attr::XOR_PEER_ADDRESS, peer);
        self.signed(&mut w);
    }

    pub fn channel_bind(&self, buf: &mut Vec<u8>, tx: [u8; 12], channel: u16, peer: SocketAddr) {
        let mut w = Writer::new(buf, Method::ChannelBind, Class::Request, tx);
        w.u32(attr::CHANNEL_NUMBER, u32::from(channel) << 16)
            .xor_address(attr::XOR_PEER_ADDRESS, peer);
        self.signed(&mut w);
    }
}

/// An unauthenticated Allocate: the first request of every client, answered with 401.
pub fn allocate_unauthenticated(buf: &mut Vec<u8>, tx: [u8; 12]) {
    Writer::new(buf, Method::Allocate, Class::Request, tx)
        .raw(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
        .fingerprint();
}

/// A Send indication (unauthenticated, as RFC 8656 has it).
pub fn send_indication(buf: &mut Vec<u8>, tx: [u8; 12], peer: SocketAddr, data: &[u8]) {
    Writer::new(buf, Method::Send, Class::Indication, tx)
        .xor_address(attr::XOR_PEER_ADDRESS, peer)
        .raw(attr::DATA, data)
        .fingerprint();
}
