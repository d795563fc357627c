//! What the gateway's tasks (host connections, UDP sockets, DNS lookups, forward listeners)
//! report to its one event loop, which alone owns the TCP/IP stack and the tables, and the
//! ids they report by.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use tokio::net::TcpStream;

/// A TCP connection of the gateway's.
pub type ConnId = u64;
/// A UDP flow out of the guest.
pub type FlowId = u64;

/// A TCP connection as the guest sees it: its own port and the other end's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub guest_port: u16,
    pub remote: SocketAddrV4,
}

/// The upstreams' answer to a guest's DNS query.
pub struct DnsAnswer {
    pub guest_port: u16,
    pub query: Vec<u8>,
    /// None: no upstream answered in time.
    pub answer: Option<Vec<u8>>,
    /// The ports to allow the answer's addresses on (empty: learn nothing).
    pub learn_ports: Vec<Option<u16>>,
}

pub enum Event {
    /// The host connection for a guest's SYN is made, or failed (or timed out).
    Connected {
        tuple: Tuple,
        result: io::Result<TcpStream>,
    },
    /// Bytes the host sent on a connection (already counted against its credit).
    HostData {
        conn: ConnId,
        data: Vec<u8>,
    },
    /// The host closed its sending half: FIN to the guest once the data is through.
    HostFinished {
        conn: ConnId,
    },
    /// The host connection failed either way: reset the guest's.
    HostFailed {
        conn: ConnId,
    },
    /// A host client connected to a TCP forward's listener.
    Accepted {
        forward: usize,
        stream: TcpStream,
    },
    /// A datagram from the host for a guest's UDP flow.
    UdpReply {
        flow: FlowId,
        data: Vec<u8>,
    },
    /// A datagram to a UDP forward from `peer`.
    ForwardDatagram {
        forward: usize,
        peer: SocketAddr,
        data: Vec<u8>,
    },
    DnsAnswer(DnsAnswer),
    /// The gateway's own lookup of an allow-list name found these A records (TTL seconds);
    /// allow them `grace` past their TTL.
    Resolved {
        name: String,
        records: Vec<(Ipv4Addr, u32)>,
        grace: Duration,
    },
}
