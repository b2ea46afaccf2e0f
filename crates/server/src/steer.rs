//! Flow steering: the worker that owns a peer takes the peer's datagrams off the kernel's
//! spread with a socket of its own, connected to the peer.
//!
//! Every worker's media socket is bound to the node's one UDP port with `SO_REUSEPORT`, and
//! the kernel spreads flows over them by a hash of the addresses, not by who owns the peer:
//! with N workers, (N-1)/N of a room's flows land on a worker that does not own them and are
//! handed over (`handoff.rs`) — a copy, a message and a wake-up of a second thread for every
//! datagram. Once the owner has learnt a peer's address (a STUN request its str0m accepted)
//! and the address landed elsewhere, it binds one more socket to the same port and connects
//! it to the peer. Linux delivers a datagram to a connected socket whose addresses match
//! before it picks a member of the reuseport group by hash, and a connected member takes no
//! other flow nor moves the others (checked on Linux 6.18). From then on the peer's datagrams
//! reach its owner directly; the hand-off stays for a flow's first packets, for a peer whose
//! address the kernel routes from another local address than the one it sent to (the
//! connected socket then matches nothing), and past [`MAX_STEERED`] flows per worker.
//!
//! Sending is unchanged: everything leaves from the worker's main socket, on the same port.
//! The connected sockets sit in one epoll set per worker, itself registered with the worker's
//! runtime, so a wake-up costs the same however many flows are steered.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};

use rustix::event::epoll;
use tokio::io::unix::AsyncFd;

/// Connected sockets one worker keeps at most (each is a file descriptor); flows beyond it
/// are handed over as before. Lower when the open-file limit is ([`cap`]).
pub const MAX_STEERED: usize = 4096;

/// How many flows each of `workers` workers may steer: [`MAX_STEERED`], or less so that
/// steering never holds more than a quarter of the open-file limit. The rest stays for what
/// must have a descriptor (WebSockets, ICE/TCP clients, relay links, TURN ports).
pub fn cap(workers: usize) -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    match limit {
        Some(n) => MAX_STEERED.min((n / 4 / workers.max(1) as u64) as usize),
        None => MAX_STEERED,
    }
}

/// Ready flows taken from the epoll set per wake-up.
const EVENTS: usize = 64;

/// `epoll_wait` without waiting: the runtime already said the set is ready.
const ZERO: rustix::event::Timespec = rustix::event::Timespec {
    tv_sec: 0,
    tv_nsec: 0,
};

/// One steered flow: a socket on the media port, connected to the peer.
struct Flow {
    socket: std::net::UdpSocket,
    udp: quinn_udp::UdpSocketState,
}

/// A worker's steered flows.
pub struct Steered {
    epoll: AsyncFd<OwnedFd>,
    flows: HashMap<u64, Flow>,
    by_peer: HashMap<SocketAddr, u64>,
    next_token: u64,
    /// The most flows this set holds ([`cap`]).
    max: usize,
    events: Vec<epoll::Event>,
    ready: Vec<u64>,
    /// A flow was left with datagrams to read ([`Self::more`]): look again without waiting.
    pending: bool,
}

impl Steered {
    /// An empty set of at most `max` flows; must be called inside the worker's runtime.
    pub fn new(max: usize) -> io::Result<Self> {
        let fd = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let empty = epoll::Event {
            flags: epoll::EventFlags::empty(),
            data: epoll::EventData::new_u64(0),
        };
        // `AsyncFd::new` is deprecated for `unsafe fn register` (the descriptor must stay open
        // and the same while registered). Here the `AsyncFd` owns the `OwnedFd` and never
        // hands it out, which is that condition; the workspace forbids `unsafe`.
        #[allow(deprecated)]
        let epoll = AsyncFd::new(fd)?;
        Ok(Self {
            epoll,
            flows: HashMap::new(),
            by_peer: HashMap::new(),
            next_token: 0,
            max,
            events: vec![empty; EVENTS],
            ready: Vec::with_capacity(EVENTS),
            pending: false,
        })
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Steer `peer`'s datagrams to a socket on `bind` connected to it. `Ok(false)`: already
    /// steered, or the set is full.
    pub fn add(&mut self, bind: SocketAddr, peer: SocketAddr) -> io::Result<bool> {
        if self.by_peer.contains_key(&peer) || self.flows.len() >= self.max {
            return Ok(false);
        }
        let socket = connected_socket(bind, peer)?;
        let udp = quinn_udp::UdpSocketState::new((&socket).into())?;
        let token = self.next_token;
        self.next_token += 1;
        epoll::add(
            self.epoll.get_ref(),
            socket.as_fd(),
            epoll::EventData::new_u64(token),
            epoll::EventFlags::IN,
        )?;
        self.flows.insert(token, Flow { socket, udp });
        self.by_peer.insert(peer, token);
        Ok(true)
    }

    /// Stop steering `peer` (its datagrams land on the reuseport group again). Closing the
    /// socket takes it out of the epoll set.
    pub fn remove(&mut self, peer: SocketAddr) -> bool {
        match self.by_peer.remove(&peer) {
            Some(token) => self.flows.remove(&token).is_some(),
            None => false,
        }
    }

    /// Wait until a steered flow has datagrams, and note which ([`Self::take_ready`]).
    /// Cancel-safe: nothing is read from the flows here.
    ///
    /// The runtime's readiness is cleared before the set is asked what is ready, so one wake-up
    /// costs one `epoll_wait`: every datagram that reaches a flow from then on wakes the set
    /// again (the kernel signals a nested epoll set at each arrival, not only when it goes from
    /// empty to ready). A flow read only up to the bound is the exception: [`Self::more`] says
    /// so, and the next call looks without waiting (the set is level-triggered).
    pub async fn wait(&mut self) -> io::Result<()> {
        loop {
            if !std::mem::take(&mut self.pending) {
                self.epoll.readable().await?.clear_ready();
            }
            let n = epoll::wait(self.epoll.get_ref(), &mut self.events[..], Some(&ZERO))?;
            if n > 0 {
                self.ready.extend(self.events[..n].iter().map(|e| e.data.u64()));
                return Ok(());
            }
        }
    }

    /// A flow still holds datagrams after this turn's reads.
    pub fn more(&mut self) {
        self.pending = true;
    }

    /// The flows found ready by [`Self::wait`] (the list is handed back by
    /// [`Self::give_back_ready`] to keep its allocation).
    pub fn take_ready(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.ready)
    }

    pub fn give_back_ready(&mut self, mut ready: Vec<u64>) {
        ready.clear();
        self.ready = ready;
    }

    /// Read a batch of datagrams from flow `token` (as the main socket's receive does: each
    /// `meta[i]` describes `bufs[i]`). `Ok(0)` when the flow is gone.
    pub fn recv(
        &self,
        token: u64,
        bufs: &mut [std::io::IoSliceMut<'_>],
        meta: &mut [quinn_udp::RecvMeta],
    ) -> io::Result<usize> {
        match self.flows.get(&token) {
            Some(f) => f.udp.recv((&f.socket).into(), bufs, meta),
            None => Ok(0),
        }
    }
}

/// A UDP socket bound to `bind` in the media port's reuseport group, connected to `peer`.
fn connected_socket(bind: SocketAddr, peer: SocketAddr) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.set_cloexec(true)?;
    socket.bind(&bind.into())?;
    socket.connect(&peer.into())?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn group_socket(addr: SocketAddr) -> std::net::UdpSocket {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        s.set_reuse_port(true).unwrap();
        s.bind(&addr.into()).unwrap();
        s.into()
    }

    /// Which of `sockets` each client's datagram reaches (index), `None` for none.
    fn landing(
        sockets: &[&std::net::UdpSocket],
        clients: &[std::net::UdpSocket],
        port: u16,
    ) -> Vec<Option<usize>> {
        for (i, c) in clients.iter().enumerate() {
            c.send_to(&[i as u8], ("127.0.0.1", port)).unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
        let mut got = vec![None; clients.len()];
        for (k, s) in sockets.iter().enumerate() {
            s.set_nonblocking(true).unwrap();
            let mut b = [0u8; 8];
            while let Ok((n, _)) = s.recv_from(&mut b) {
                assert_eq!(n, 1);
                got[b[0] as usize] = Some(k);
            }
        }
        got
    }

    /// The kernel behaviour steering relies on: a connected member of the reuseport group
    /// takes its peer's datagrams, and no other flow moves.
    #[test]
    fn a_connected_member_takes_its_peers_flow_and_moves_no_other() {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let bind = probe.local_addr().unwrap();
        drop(probe);
        let (a, b) = (group_socket(bind), group_socket(bind));
        let clients: Vec<_> = (0..24)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let before = landing(&[&a, &b], &clients, bind.port());
        assert!(
            before.iter().all(Option::is_some),
            "every flow lands on the group: {before:?}"
        );
        let steered: Vec<_> = (0..4)
            .map(|i| connected_socket(bind, clients[i].local_addr().unwrap()).unwrap())
            .collect();
        let mut all = vec![&a, &b];
        all.extend(steered.iter());
        let after = landing(&all, &clients, bind.port());
        for (i, landed) in after[..4].iter().enumerate() {
            assert_eq!(*landed, Some(2 + i), "client {i} reaches its connected socket");
        }
        assert_eq!(after[4..], before[4..], "the other flows stay where they landed");
    }

    #[test]
    fn steering_keeps_to_a_quarter_of_the_open_file_limit() {
        let per_worker = cap(2);
        assert!(per_worker <= MAX_STEERED);
        if let Some(n) = rustix::process::getrlimit(rustix::process::Resource::Nofile).current {
            assert!(per_worker as u64 * 2 <= n / 4);
        }
    }

    #[tokio::test]
    async fn a_steered_flow_wakes_the_set_and_is_read_from_it() {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let bind = probe.local_addr().unwrap();
        drop(probe);
        let _group = group_socket(bind);
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut set = Steered::new(1).unwrap();
        assert!(set.add(bind, client.local_addr().unwrap()).unwrap());
        assert!(
            !set.add(bind, client.local_addr().unwrap()).unwrap(),
            "added once"
        );
        let other = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(
            !set.add(bind, other.local_addr().unwrap()).unwrap(),
            "past the cap"
        );
        assert_eq!(set.len(), 1);
        client.send_to(b"hello", bind).unwrap();
        tokio::time::timeout(Duration::from_secs(5), set.wait())
            .await
            .expect("the set wakes")
            .unwrap();
        let ready = set.take_ready();
        assert_eq!(ready.len(), 1);
        let mut buf = vec![0u8; 2048];
        let mut meta = [quinn_udp::RecvMeta::default()];
        let n = set
            .recv(ready[0], &mut [std::io::IoSliceMut::new(&mut buf)], &mut meta)
            .unwrap();
        assert_eq!(n, 1);
        assert_eq!(&buf[..meta[0].len], b"hello");
        assert_eq!(meta[0].addr, client.local_addr().unwrap());
        set.give_back_ready(ready);
        assert!(set.remove(client.local_addr().unwrap()));
        assert!(set.is_empty());
    }
}
