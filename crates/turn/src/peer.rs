//! Which peers a relay may reach.
//!
//! A LiveKit client only ever talks to the SFU, so the relay reaches exactly the node's own
//! media sockets and nothing else. Everything else is refused, and the refusal is classified
//! for the log and metrics, so an attempt on loopback or a cloud metadata service stands out.
//! Peers written in an IPv6 form that embeds an IPv4 address (mapped, compatible, NAT64, 6to4)
//! are classified by that IPv4 address: the trick that got past coturn's loopback ban.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Why a peer address is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    Unspecified,
    Loopback,
    /// RFC 1918, RFC 6598 (carrier-grade NAT), IPv6 unique-local.
    Private,
    /// 169.254/16 (169.254.169.254 is the cloud metadata service) and fe80::/10.
    LinkLocal,
    Multicast,
    /// Documentation, benchmarking, reserved and other special-purpose ranges.
    Reserved,
    /// A routable address that is not this node's media socket.
    NotTheNode,
    /// The node's address, on a port that is not its media port.
    NotTheMediaPort,
    /// The peer's family is not the relay's.
    Family,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Unspecified => "unspecified",
            Refusal::Loopback => "loopback",
            Refusal::Private => "private",
            Refusal::LinkLocal => "link_local",
            Refusal::Multicast => "multicast",
            Refusal::Reserved => "reserved",
            Refusal::NotTheNode => "not_the_node",
            Refusal::NotTheMediaPort => "not_the_media_port",
            Refusal::Family => "family",
        }
    }
}

/// The IPv4 address an IPv6 address stands for, if it embeds one.
pub fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let o = ip.octets();
    let tail = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    // IPv4-compatible ::a.b.c.d (deprecated, but routed by some stacks); not :: and ::1.
    if s[..6] == [0; 6] && u32::from(tail) > 1 {
        return Some(tail);
    }
    // NAT64 well-known prefix 64:ff9b::/96 and the local-use 64:ff9b:1::/48.
    if (s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]) || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) {
        return Some(tail);
    }
    // 6to4 2002:AABB:CCDD::/16.
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    None
}

fn classify_v4(ip: Ipv4Addr) -> Option<Refusal> {
    let o = ip.octets();
    Some(if ip.is_unspecified() || o[0] == 0 {
        Refusal::Unspecified
    } else if ip.is_loopback() {
        Refusal::Loopback
    } else if ip.is_private() || (o[0] == 100 && (o[1] & 0xC0) == 64) {
        Refusal::Private
    } else if ip.is_link_local() {
        Refusal::LinkLocal
    } else if ip.is_multicast() {
        Refusal::Multicast
    } else if ip.is_broadcast()
        || ip.is_documentation()
        || o[0] >= 240
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        || (o[0] == 198 && (o[1] & 0xFE) == 18)
    {
        Refusal::Reserved
    } else {
        return None;
    })
}

/// The class of a special-purpose address, or `None` for an ordinary routable one.
pub fn classify(ip: IpAddr) -> Option<Refusal> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_ipv4(v6) {
                return Some(classify_v4(v4).unwrap_or(Refusal::NotTheNode));
            }
            let s = v6.segments();
            Some(if v6.is_unspecified() {
                Refusal::Unspecified
            } else if v6.is_loopback() {
                Refusal::Loopback
            } else if v6.is_unique_local() {
                Refusal::Private
            } else if v6.is_unicast_link_local() {
                Refusal::LinkLocal
            } else if v6.is_multicast() {
                Refusal::Multicast
            } else if (s[0] == 0x2001 && (s[1] == 0xdb8 || s[1] == 0)) || s[..4] == [0x100, 0, 0, 0] {
                Refusal::Reserved
            } else {
                return None;
            })
        }
    }
}

/// The node's media sockets: the only peers a relay reaches.
#[derive(Clone, Debug)]
pub struct PeerPolicy {
    media: Vec<SocketAddr>,
}

impl PeerPolicy {
    pub fn new(media: Vec<SocketAddr>) -> Self {
        PeerPolicy { media }
    }

    pub fn media(&self) -> &[SocketAddr] {
        &self.media
    }

    fn refuse_other(ip: IpAddr) -> Refusal {
        classify(ip).unwrap_or(Refusal::NotTheNode)
    }

    /// CreatePermission: by IP only (RFC 8656 §9).
    pub fn check_ip(&self, ip: IpAddr, relay_v6: bool) -> Result<(), Refusal> {
        if ip.is_ipv6() != relay_v6 {
            // A v6 form of the node's v4 address is still refused, but say why it is dangerous.
            return Err(classify(ip).unwrap_or(Refusal::Family));
        }
        if self.media.iter().any(|m| m.ip() == ip) {
            Ok(())
        } else {
            Err(Self::refuse_other(ip))
        }
    }

    /// ChannelBind and Send: the whole transport address.
    pub fn check_addr(&self, peer: SocketAddr, relay_v6: bool) -> Result<(), Refusal> {
        self.check_ip(peer.ip(), relay_v6)?;
        if self.media.contains(&peer) {
            Ok(())
        } else {
            Err(Refusal::NotTheMediaPort)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_dangerous_addresses_are_classified() {
        let cases = [
            ("127.0.0.1", Refusal::Loopback),
            ("10.0.0.1", Refusal::Private),
            ("172.16.5.4", Refusal::Private),
            ("192.168.1.1", Refusal::Private),
            ("100.100.100.200", Refusal::Private),
            ("169.254.169.254", Refusal::LinkLocal),
            ("0.0.0.0", Refusal::Unspecified),
            ("0.1.2.3", Refusal::Unspecified),
            ("224.0.0.1", Refusal::Multicast),
            ("255.255.255.255", Refusal::Reserved),
            ("198.18.0.1", Refusal::Reserved),
            ("::1", Refusal::Loopback),
            ("::", Refusal::Unspecified),
            ("fd00:ec2::254", Refusal::Private),
            ("fe80::1", Refusal::LinkLocal),
            ("ff02::1", Refusal::Multicast),
            ("::ffff:127.0.0.1", Refusal::Loopback),
            ("::127.0.0.1", Refusal::Loopback),
            ("64:ff9b::a9fe:a9fe", Refusal::LinkLocal),
            ("2002:7f00:1::", Refusal::Loopback),
            ("2001:db8::1", Refusal::Reserved),
        ];
        for (s, want) in cases {
            assert_eq!(classify(ip(s)), Some(want), "{s}");
        }
        assert_eq!(classify(ip("8.8.8.8")), None);
        assert_eq!(classify(ip("2606:4700::1111")), None);
    }

    #[test]
    fn only_the_node_media_socket_is_reachable() {
        let node: SocketAddr = "10.200.0.1:7882".parse().unwrap();
        let p = PeerPolicy::new(vec![node]);
        assert_eq!(p.check_ip(node.ip(), false), Ok(()));
        assert_eq!(p.check_addr(node, false), Ok(()));
        assert_eq!(
            p.check_addr("10.200.0.1:7880".parse().unwrap(), false),
            Err(Refusal::NotTheMediaPort)
        );
        assert_eq!(p.check_ip(ip("10.0.0.1"), false), Err(Refusal::Private));
        assert_eq!(p.check_ip(ip("127.0.0.1"), false), Err(Refusal::Loopback));
        assert_eq!(p.check_ip(ip("8.8.8.8"), false), Err(Refusal::NotTheNode));
        assert_eq!(p.check_ip(ip("::ffff:10.200.0.1"), false), Err(Refusal::Private));
        assert_eq!(p.check_ip(ip("::1"), false), Err(Refusal::Loopback));
        assert_eq!(p.check_ip(ip("2606:4700::1111"), false), Err(Refusal::Family));
    }
}
