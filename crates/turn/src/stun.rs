//! The STUN message codec (RFC 8489) with the attributes TURN (RFC 8656) uses.
//!
//! Parsing borrows the datagram and allocates nothing; attributes are looked up by walking
//! them. Writing goes into a caller's buffer, which the caller reuses.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub const MAGIC_COOKIE: u32 = 0x2112_A442;
pub const HEADER_LEN: usize = 20;
const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// STUN methods TURN needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Binding,
    Allocate,
    Refresh,
    Send,
    Data,
    CreatePermission,
    ChannelBind,
}

impl Method {
    fn code(self) -> u16 {
        match self {
            Method::Binding => 0x001,
            Method::Allocate => 0x003,
            Method::Refresh => 0x004,
            Method::Send => 0x006,
            Method::Data => 0x007,
            Method::CreatePermission => 0x008,
            Method::ChannelBind => 0x009,
        }
    }
    fn from_code(c: u16) -> Option<Self> {
        Some(match c {
            0x001 => Method::Binding,
            0x003 => Method::Allocate,
            0x004 => Method::Refresh,
            0x006 => Method::Send,
            0x007 => Method::Data,
            0x008 => Method::CreatePermission,
            0x009 => Method::ChannelBind,
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0x000,
            Class::Indication => 0x010,
            Class::Success => 0x100,
            Class::Error => 0x110,
        }
    }
}

fn message_type(method: Method, class: Class) -> u16 {
    let m = method.code();
    (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | class.bits()
}

fn split_type(t: u16) -> (u16, Class) {
    let method = (t & 0x000F) | ((t >> 1) & 0x0070) | ((t >> 2) & 0x0F80);
    let class = match t & 0x0110 {
        0x000 => Class::Request,
        0x010 => Class::Indication,
        0x100 => Class::Success,
        _ => Class::Error,
    };
    (method, class)
}

/// Attribute types.
pub mod attr {
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    pub const USERNAME: u16 = 0x0006;
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    pub const ERROR_CODE: u16 = 0x0009;
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    pub const LIFETIME: u16 = 0x000D;
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    pub const DATA: u16 = 0x0013;
    pub const REALM: u16 = 0x0014;
    pub const NONCE: u16 = 0x0015;
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
    pub const EVEN_PORT: u16 = 0x0018;
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    pub const DONT_FRAGMENT: u16 = 0x001A;
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    pub const PASSWORD_ALGORITHM: u16 = 0x001D;
    pub const USERHASH: u16 = 0x001E;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    pub const RESERVATION_TOKEN: u16 = 0x0022;
    pub const SOFTWARE: u16 = 0x8022;
    pub const FINGERPRINT: u16 = 0x8028;

    /// Comprehension-required attributes this server acts on or may safely ignore.
    /// DONT-FRAGMENT is ignored: the relay never fragments a UDP datagram itself.
    pub(crate) fn understood(t: u16) -> bool {
        matches!(
            t,
            MAPPED_ADDRESS
                | USERNAME
                | MESSAGE_INTEGRITY
                | ERROR_CODE
                | UNKNOWN_ATTRIBUTES
                | CHANNEL_NUMBER
                | LIFETIME
                | XOR_PEER_ADDRESS
                | DATA
                | REALM
                | NONCE
                | XOR_RELAYED_ADDRESS
                | REQUESTED_ADDRESS_FAMILY
                | REQUESTED_TRANSPORT
                | DONT_FRAGMENT
                | XOR_MAPPED_ADDRESS
        )
    }
}

/// Why bytes are not a STUN message we accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("shorter than a STUN header")]
    Short,
    #[error("not STUN (top bits or magic cookie)")]
    NotStun,
    #[error("length field disagrees with the datagram")]
    Length,
    #[error("attribute runs past the end")]
    Attribute,
    #[error("unknown method {0:#x}")]
    Method(u16),
    #[error("FINGERPRINT does not match")]
    Fingerprint,
}

/// A parsed message: the bytes it came from, checked for structure.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    pub method: Method,
    pub class: Class,
    pub transaction: [u8; 12],
    bytes: &'a [u8],
    /// Offset of the MESSAGE-INTEGRITY attribute header, if present.
    integrity_at: Option<usize>,
}

impl<'a> Message<'a> {
    /// Parse one whole message. Attributes after MESSAGE-INTEGRITY other than FINGERPRINT
    /// are ignored, as RFC 8489 says.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ParseError> {
        if bytes.len() < HEADER_LEN {
            return Err(ParseError::Short);
        }
        let t = u16::from_be_bytes([bytes[0], bytes[1]]);
        if t & 0xC000 != 0 || u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) != MAGIC_COOKIE {
            return Err(ParseError::NotStun);
        }
        let len = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
        if len % 4 != 0 || HEADER_LEN + len != bytes.len() {
            return Err(ParseError::Length);
        }
        let (code, class) = split_type(t);
        let method = Method::from_code(code).ok_or(ParseError::Method(code))?;
        let mut transaction = [0u8; 12];
        transaction.copy_from_slice(&bytes[8..20]);
        let mut integrity_at = None;
        let mut at = HEADER_LEN;
        while at < bytes.len() {
            if at + 4 > bytes.len() {
                return Err(ParseError::Attribute);
            }
            let kind = u16::from_be_bytes([bytes[at], bytes[at + 1]]);
            let alen = usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]));
            let end = at + 4 + alen;
            if end > bytes.len() {
                return Err(ParseError::Attribute);
            }
            if kind == attr::MESSAGE_INTEGRITY && integrity_at.is_none() {
                if alen != 20 {
                    return Err(ParseError::Attribute);
                }
                integrity_at = Some(at);
            }
            if kind == attr::FINGERPRINT {
                if alen != 4 || end.next_multiple_of(4) != bytes.len() {
                    return Err(ParseError::Attribute);
                }
                let want = u32::from_be_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]);
                if crc32fast::hash(&bytes[..at]) ^ FINGERPRINT_XOR != want {
                    return Err(ParseError::Fingerprint);
                }
            }
            at = end.next_multiple_of(4);
        }
        Ok(Message {
            method,
            class,
            transaction,
            bytes,
            integrity_at,
        })
    }

    /// The attributes that count: up to MESSAGE-INTEGRITY.
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes {
            bytes: self.bytes,
            at: HEADER_LEN,
            end: self.integrity_at.unwrap_or(self.bytes.len()),
        }
    }

    /// The first attribute of this type.
    pub fn get(&self, kind: u16) -> Option<&'a [u8]> {
        self.attributes().find(|(k, _)| *k == kind).map(|(_, v)| v)
    }

    /// Comprehension-required attributes this server does not know (for a 420).
    pub fn unknown_required(&self) -> impl Iterator<Item = u16> + 'a {
        self.attributes()
            .map(|(k, _)| k)
            .filter(|k| *k < 0x8000 && !attr::understood(*k))
    }

    pub fn has_integrity(&self) -> bool {
        self.integrity_at.is_some()
    }

    /// Check MESSAGE-INTEGRITY (HMAC-SHA1) with `key`.
    pub fn verify_integrity(&self, key: &[u8]) -> bool {
        let Some(at) = self.integrity_at else {
            return false;
        };
        // The length field counts up to the end of MESSAGE-INTEGRITY.
        let covered_len = (at + 24 - HEADER_LEN) as u16;
        let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(key) else {
            return false;
        };
        mac.update(&self.bytes[..2]);
        mac.update(&covered_len.to_be_bytes());
        mac.update(&self.bytes[4..at]);
        mac.verify_slice(&self.bytes[at + 4..at + 24]).is_ok()
    }

    pub fn username(&self) -> Option<&'a str> {
        self.get(attr::USERNAME).and_then(|v| std::str::from_utf8(v).ok())
    }

    pub fn nonce(&self) -> Option<&'a [u8]> {
        self.get(attr::NONCE)
    }

    pub fn lifetime(&self) -> Option<u32> {
        let v = self.get(attr::LIFETIME)?;
        Some(u32::from_be_bytes(v.try_into().ok()?))
    }

    pub fn channel_number(&self) -> Option<u16> {
        let v = self.get(attr::CHANNEL_NUMBER)?;
        (v.len() == 4).then(|| u16::from_be_bytes([v[0], v[1]]))
    }

    /// REQUESTED-TRANSPORT's protocol number (17 = UDP).
    pub fn requested_transport(&self) -> Option<u8> {
        let v = self.get(attr::REQUESTED_TRANSPORT)?;
        (v.len() == 4).then_some(v[0])
    }

    /// REQUESTED-ADDRESS-FAMILY: `Some(false)` for IPv4, `Some(true)` for IPv6.
    pub fn requested_family_v6(&self) -> Option<Result<bool, ()>> {
        let v = self.get(attr::REQUESTED_ADDRESS_FAMILY)?;
        Some(match v.first() {
            Some(0x01) if v.len() == 4 => Ok(false),
            Some(0x02) if v.len() == 4 => Ok(true),
            _ => Err(()),
        })
    }

    pub fn xor_address(&self, kind: u16) -> Option<SocketAddr> {
        decode_xor_address(self.get(kind)?, &self.transaction)
    }

    /// Every XOR-PEER-ADDRESS (CreatePermission may carry several).
    pub fn peer_addresses(&self) -> impl Iterator<Item = Option<SocketAddr>> + 'a {
        let tx = self.transaction;
        self.attributes()
            .filter(|(k, _)| *k == attr::XOR_PEER_ADDRESS)
            .map(move |(_, v)| decode_xor_address(v, &tx))
    }

    pub fn error_code(&self) -> Option<u16> {
        let v = self.get(attr::ERROR_CODE)?;
        (v.len() >= 4).then(|| u16::from(v[2] & 0x7) * 100 + u16::from(v[3]))
    }
}

/// Iterator over `(type, value)` of a message's attributes.
pub struct Attributes<'a> {
    bytes: &'a [u8],
    at: usize,
    end: usize,
}

impl<'a> Iterator for Attributes<'a> {
    type Item = (u16, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        if self.at + 4 > self.end {
            return None;
        }
        let b = self.bytes;
        let kind = u16::from_be_bytes([b[self.at], b[self.at + 1]]);
        let len = usize::from(u16::from_be_bytes([b[self.at + 2], b[self.at + 3]]));
        let value = b.get(self.at + 4..self.at + 4 + len)?;
        self.at = (self.at + 4 + len).next_multiple_of(4);
        Some((kind, value))
    }
}

fn decode_xor_address(v: &[u8], tx: &[u8; 12]) -> Option<SocketAddr> {
    if v.len() < 4 {
        return None;
    }
    let port = u16::from_be_bytes([v[2], v[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
    let ip = match (v[1], v.len()) {
        (0x01, 8) => {
            let x = u32::from_be_bytes([v[4], v[5], v[6], v[7]]) ^ MAGIC_COOKIE;
            IpAddr::V4(Ipv4Addr::from(x))
        }
        (0x02, 20) => {
            let mut key = [0u8; 16];
            key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            key[4..].copy_from_slice(tx);
            let mut o = [0u8; 16];
            for i in 0..16 {
                o[i] = v[4 + i] ^ key[i];
            }
            IpAddr::V6(Ipv6Addr::from(o))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Writes one message into a reused buffer.
pub struct Writer<'b> {
    buf: &'b mut Vec<u8>,
    transaction: [u8; 12],
}

impl<'b> Writer<'b> {
    pub fn new(buf: &'b mut Vec<u8>, method: Method, class: Class, transaction: [u8; 12]) -> Self {
        buf.clear();
        buf.extend_from_slice(&message_type(method, class).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&transaction);
        Writer { buf, transaction }
    }

    fn set_len(&mut self) {
        let len = (self.buf.len() - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
    }

    pub fn raw(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(&kind.to_be_bytes());
        self.buf.extend_from_slice(&(value.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(value);
        let padded = self.buf.len().next_multiple_of(4);
        self.buf.resize(padded, 0);
        self
    }

    pub fn u32(&mut self, kind: u16, v: u32) -> &mut Self {
        self.raw(kind, &v.to_be_bytes())
    }

    pub fn xor_address(&mut self, kind: u16, addr: SocketAddr) -> &mut Self {
        let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
        let mut v = [0u8; 20];
        v[2..4].copy_from_slice(&port.to_be_bytes());
        let n = match addr.ip() {
            IpAddr::V4(ip) => {
                v[1] = 0x01;
                v[4..8].copy_from_slice(&(u32::from(ip) ^ MAGIC_COOKIE).to_be_bytes());
                8
            }
            IpAddr::V6(ip) => {
                v[1] = 0x02;
                let mut key = [0u8; 16];
                key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
                key[4..].copy_from_slice(&self.transaction);
                for (i, b) in ip.octets().iter().enumerate() {
                    v[4 + i] = b ^ key[i];
                }
                20
            }
        };
        self.raw(kind, &v[..n])
    }

    pub fn error(&mut self, code: u16, reason: &str) -> &mut Self {
        let mut v = Vec::with_capacity(4 + reason.len());
        v.extend_from_slice(&[0, 0, (code / 100) as u8, (code % 100) as u8]);
        v.extend_from_slice(reason.as_bytes());
        self.raw(attr::ERROR_CODE, &v)
    }

    /// MESSAGE-INTEGRITY over what is written so far.
    pub fn integrity(&mut self, key: &[u8]) -> &mut Self {
        let covered = (self.buf.len() + 24 - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&covered.to_be_bytes());
        let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(self.buf);
        let tag = mac.finalize().into_bytes();
        self.raw(attr::MESSAGE_INTEGRITY, &tag)
    }

    /// FINGERPRINT, then the final length. Ends the message.
    pub fn fingerprint(&mut self) {
        let covered = (self.buf.len() + 8 - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&covered.to_be_bytes());
        let crc = crc32fast::hash(self.buf) ^ FINGERPRINT_XOR;
        self.raw(attr::FINGERPRINT, &crc.to_be_bytes());
        self.set_len();
    }

    /// Ends the message without FINGERPRINT.
    pub fn finish(&mut self) {
        self.set_len();
    }
}

/// Frames on a TURN TCP/TLS stream (RFC 8656 §12.5): how long the frame at the start of
/// `buf` is, once its first four bytes are there. `Err` when the bytes are neither STUN nor
/// ChannelData: the stream is garbage and is closed.
pub fn stream_frame_len(buf: &[u8]) -> Option<Result<usize, ()>> {
    if buf.len() < 4 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    Some(match buf[0] >> 6 {
        0b00 => Ok(HEADER_LEN + len),
        0b01 => Ok((4 + len).next_multiple_of(4)),
        _ => Err(()),
    })
}

/// A ChannelData message (RFC 8656 §12.4): channel number and payload.
pub fn parse_channel_data(buf: &[u8]) -> Option<(u16, &[u8])> {
    if buf.len() < 4 {
        return None;
    }
    let channel = u16::from_be_bytes([buf[0], buf[1]]);
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    if !(0x4000..=0x4FFF).contains(&channel) {
        return None;
    }
    buf.get(4..4 + len).map(|d| (channel, d))
}

pub fn write_channel_data(buf: &mut Vec<u8>, channel: u16, data: &[u8], pad: bool) {
    buf.clear();
    buf.extend_from_slice(&channel.to_be_bytes());
    buf.extend_from_slice(&(data.len() as u16).to_be_bytes());
    buf.extend_from_slice(data);
    if pad {
        let padded = buf.len().next_multiple_of(4);
        buf.resize(padded, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5769 §2.1, the sample request (short-term credential).
    const RFC5769_REQUEST: [u8; 108] = [
        0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa,
        0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74, 0x65, 0x73, 0x74, 0x20,
        0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e, 0x00, 0x01, 0xff, 0x80, 0x29, 0x00,
        0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36, 0x00, 0x06, 0x00, 0x09, 0x65, 0x76, 0x74, 0x6a,
        0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20, 0x20, 0x00, 0x08, 0x00, 0x14, 0x9a, 0xea, 0xa7, 0x0c, 0xbf,
        0xd8, 0xcb, 0x56, 0x78, 0x1e, 0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49, 0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28,
        0x00, 0x04, 0xe5, 0x7a, 0x3b, 0xcf,
    ];

    #[test]
    fn rfc5769_sample_request_checks_out() {
        let m = Message::parse(&RFC5769_REQUEST).expect("fingerprint and structure");
        assert_eq!(m.method, Method::Binding);
        assert_eq!(m.class, Class::Request);
        assert_eq!(m.username(), Some("evtj:h6vY"));
        assert!(m.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBt"));
        assert!(!m.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBu"));
    }

    #[test]
    fn a_flipped_bit_fails_the_fingerprint() {
        let mut b = RFC5769_REQUEST;
        b[30] ^= 1;
        assert_eq!(Message::parse(&b).unwrap_err(), ParseError::Fingerprint);
    }

    #[test]
    fn written_messages_parse_and_verify() {
        let tx = [7u8; 12];
        let mut buf = Vec::new();
        let v4: SocketAddr = "192.0.2.1:32853".parse().unwrap();
        let v6: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853".parse().unwrap();
        Writer::new(&mut buf, Method::Allocate, Class::Success, tx)
            .xor_address(attr::XOR_RELAYED_ADDRESS, v4)
            .xor_address(attr::XOR_MAPPED_ADDRESS, v6)
            .u32(attr::LIFETIME, 600)
            .raw(attr::USERNAME, b"abcde")
            .integrity(b"key")
            .fingerprint();
        let m = Message::parse(&buf).unwrap();
        assert_eq!((m.method, m.class), (Method::Allocate, Class::Success));
        assert_eq!(m.xor_address(attr::XOR_RELAYED_ADDRESS), Some(v4));
        assert_eq!(m.xor_address(attr::XOR_MAPPED_ADDRESS), Some(v6));
        assert_eq!(m.lifetime(), Some(600));
        assert_eq!(m.username(), Some("abcde"));
        assert!(m.verify_integrity(b"key"));
        assert!(!m.verify_integrity(b"other"));
    }

    #[test]
    fn the_error_code_round_trips() {
        let mut buf = Vec::new();
        Writer::new(&mut buf, Method::Allocate, Class::Error, [1; 12])
            .error(438, "Stale Nonce")
            .fingerprint();
        assert_eq!(Message::parse(&buf).unwrap().error_code(), Some(438));
    }

    #[test]
    fn truncated_and_lying_lengths_are_refused() {
        let mut buf = Vec::new();
        Writer::new(&mut buf, Method::Binding, Class::Request, [1; 12])
            .raw(attr::SOFTWARE, b"x")
            .finish();
        assert!(Message::parse(&buf).is_ok());
        assert_eq!(
            Message::parse(&buf[..buf.len() - 4]).unwrap_err(),
            ParseError::Length
        );
        let mut lying = buf.clone();
        lying[22..24].copy_from_slice(&200u16.to_be_bytes());
        assert_eq!(Message::parse(&lying).unwrap_err(), ParseError::Attribute);
        assert_eq!(Message::parse(&buf[..10]).unwrap_err(), ParseError::Short);
    }

    #[test]
    fn stream_frames_are_sized_by_kind() {
        assert_eq!(stream_frame_len(&[0x00, 0x01, 0x00, 0x08]), Some(Ok(28)));
        assert_eq!(stream_frame_len(&[0x40, 0x00, 0x00, 0x05]), Some(Ok(12)));
        assert_eq!(stream_frame_len(&[0xC0, 0x00, 0x00, 0x05]), Some(Err(())));
        assert_eq!(stream_frame_len(&[0x40, 0x00]), None);
    }

    #[test]
    fn channel_data_round_trips_and_refuses_bad_numbers() {
        let mut buf = Vec::new();
        write_channel_data(&mut buf, 0x4001, b"hello", true);
        assert_eq!(buf.len(), 12);
        assert_eq!(parse_channel_data(&buf), Some((0x4001, &b"hello"[..])));
        write_channel_data(&mut buf, 0x3FFF, b"x", false);
        assert_eq!(parse_channel_data(&buf), None);
    }
}
