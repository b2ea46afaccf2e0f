//! Which worker owns a datagram that landed on this worker's socket but belongs to none of
//! its peers.
//!
//! Every worker has its own `SO_REUSEPORT` socket on the one media port; the kernel spreads
//! flows over them by a hash of the 4-tuple, so a client's packets land on one socket that is
//! usually not its worker's. The landing worker looks the flow up here and hands the datagram
//! over. Each worker keeps its own table, fed by messages (no lock, no shared map):
//! - **ufrags**: every worker announces its peers' ICE username fragments to the others, so a
//!   STUN request from a new address is routed by its USERNAME;
//! - **addresses**: once the owner's str0m accepted a STUN request (integrity checked), the
//!   owner tells the worker the request landed on that the address is its own; from then on
//!   DTLS, SRTP and SCTP from that address follow it there.
//!
//! Addresses are only learnt from owners, after integrity, so a client spraying STUN from new
//! ports cannot grow the table.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::directory::WorkerId;

#[derive(Default)]
pub struct Demux {
    ufrags: HashMap<String, WorkerId>,
    addrs: HashMap<SocketAddr, WorkerId>,
}

impl Demux {
    /// The worker owning a datagram from `source`, if another worker told us.
    pub fn owner(&self, source: SocketAddr, datagram: &[u8]) -> Option<WorkerId> {
        if let Some(w) = self.addrs.get(&source) {
            return Some(*w);
        }
        self.owner_by_ufrag(datagram)
    }

    /// The worker owning the peer a STUN request is for, by its USERNAME (ICE/TCP connections
    /// are routed only this way: addresses here are UDP sources).
    pub fn owner_by_ufrag(&self, datagram: &[u8]) -> Option<WorkerId> {
        let stun = str0m::ice::StunMessage::parse(datagram).ok()?;
        let (local, _remote) = stun.split_username()?;
        self.ufrags.get(local).copied()
    }

    pub fn set_ufrag(&mut self, ufrag: String, owner: Option<WorkerId>) {
        match owner {
            Some(w) => self.ufrags.insert(ufrag, w),
            None => self.ufrags.remove(&ufrag),
        };
    }

    pub fn set_address(&mut self, addr: SocketAddr, owner: Option<WorkerId>) {
        match owner {
            Some(w) => self.addrs.insert(addr, w),
            None => self.addrs.remove(&addr),
        };
    }

    pub fn len(&self) -> (usize, usize) {
        (self.ufrags.len(), self.addrs.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_route_everything_and_unknown_sources_route_nothing() {
        let mut d = Demux::default();
        let a: SocketAddr = "10.0.0.9:5000".parse().unwrap();
        assert_eq!(d.owner(a, &[0x80, 0x60, 0, 1]), None);
        d.set_address(a, Some(3));
        assert_eq!(
            d.owner(a, &[0x80, 0x60, 0, 1]),
            Some(3),
            "RTP follows the address"
        );
        d.set_address(a, None);
        assert_eq!(d.owner(a, &[0x80, 0x60, 0, 1]), None);
    }

    /// An ICE connectivity check with USERNAME, PRIORITY and a (made-up) MESSAGE-INTEGRITY
    /// (RFC 8489 §14.3, §14.5; RFC 8445 §7.1.1): routing reads the username, checks nothing.
    fn binding_request(username: &str) -> Vec<u8> {
        let mut attr = vec![0x00, 0x06, 0, username.len() as u8];
        attr.extend_from_slice(username.as_bytes());
        while attr.len() % 4 != 0 {
            attr.push(0);
        }
        attr.extend_from_slice(&[0x00, 0x24, 0, 4, 0x6e, 0, 0x1e, 0xff]);
        attr.extend_from_slice(&[0x00, 0x08, 0, 20]);
        attr.extend_from_slice(&[9; 20]);
        let mut m = vec![0x00, 0x01, 0, attr.len() as u8, 0x21, 0x12, 0xa4, 0x42];
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&attr);
        m
    }

    #[test]
    fn stun_from_a_new_address_routes_by_its_username() {
        let mut d = Demux::default();
        let src: SocketAddr = "10.0.0.9:5000".parse().unwrap();
        d.set_ufrag("abcd".into(), Some(2));
        assert_eq!(d.owner(src, &binding_request("abcd:wxyz")), Some(2));
        assert_eq!(d.owner(src, &binding_request("zzzz:wxyz")), None, "unknown ufrag");
        d.set_ufrag("abcd".into(), None);
        assert_eq!(d.owner(src, &binding_request("abcd:wxyz")), None);
    }

    #[test]
    fn garbage_that_is_not_stun_routes_nowhere() {
        let mut d = Demux::default();
        d.set_ufrag("abcd".into(), Some(1));
        let src: SocketAddr = "10.0.0.9:5000".parse().unwrap();
        assert_eq!(d.owner(src, b"abcd:efgh"), None);
        assert_eq!(d.owner(src, &[]), None);
    }
}
