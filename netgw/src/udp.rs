//! UDP through the gateway, outside the TCP/IP stack: the guest's flows out, and the
//! forwards' datagrams in.
//!
//! - A flow out is (guest port, destination): one connected host socket each (made without
//!   bind, so the policy's seccomp filter has no bind), whose replies come back to the
//!   guest as datagrams from that destination.
//! - A forward's peer P is mapped to a port of the gateway's own: datagrams from P reach
//!   the guest's port from `GATEWAY_ADDR:that port`, and what the guest sends to that port
//!   goes back to P through the forward's socket.
//!
//! Flows and mappings together are at most `max_udp_flows`, and close after
//! `udp_idle_timeout_ms` without traffic.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use boxlite_vmspec::network::{gateway_fds, GatewayLimits, NetworkStats, GATEWAY_ADDR};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::log_once;
use crate::event::{Event, FlowId};
use crate::packet;
use crate::policy::Egress;
use crate::port_pool::PortPool;
use crate::stack::Stack;

/// The largest datagram read from a host socket (a UDP datagram's maximum).
const MAX_DATAGRAM: usize = 65535;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FlowKey {
    guest_port: u16,
    dst: SocketAddrV4,
}

struct Flow {
    id: FlowId,
    socket: Arc<UdpSocket>,
    task: JoinHandle<()>,
    last_active: Instant,
}

struct Mapping {
    forward: usize,
    peer: SocketAddr,
    guest_port: u16,
    last_active: Instant,
}

/// A forward's socket and the guest port its datagrams go to.
pub struct UdpForward {
    pub socket: Arc<UdpSocket>,
    pub guest_port: u16,
}

pub struct Udp {
    flows: HashMap<FlowKey, Flow>,
    flow_keys: HashMap<FlowId, FlowKey>,
    /// Forward datagrams: (forward, peer) -> the gateway's port, and back.
    ports_by_peer: HashMap<(usize, SocketAddr), u16>,
    mappings: HashMap<u16, Mapping>,
    ports: PortPool,
    forwards: HashMap<usize, UdpForward>,
    next_id: FlowId,
    limits: GatewayLimits,
    events: mpsc::Sender<Event>,
}

impl Udp {
    pub fn new(limits: GatewayLimits, forwards: HashMap<usize, UdpForward>, events: mpsc::Sender<Event>) -> Udp {
        Udp {
            flows: HashMap::new(),
            flow_keys: HashMap::new(),
            ports_by_peer: HashMap::new(),
            mappings: HashMap::new(),
            ports: PortPool::default(),
            forwards,
            next_id: 0,
            limits,
            events,
        }
    }

    fn count(&self) -> usize {
        self.flows.len() + self.mappings.len()
    }

    fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.limits.udp_idle_timeout_ms.max(1))
    }

    /// A datagram from the guest (not DNS to the gateway: the DNS proxy has those).
    pub fn from_guest(
        &mut self,
        src_port: u16,
        dst: SocketAddrV4,
        payload: &[u8],
        egress: &Egress,
        stats: &mut NetworkStats,
        now: Instant,
    ) {
        if *dst.ip() == GATEWAY_ADDR {
            if let Some(mapping) = self.mappings.get_mut(&dst.port()) {
                // A reply to a forward's peer.
                mapping.last_active = now;
                if let Some(forward) = self.forwards.get(&mapping.forward) {
                    if send_now(&forward.socket, payload, Some(mapping.peer)) {
                        stats.bytes_out += payload.len() as u64;
                    }
                }
                return;
            }
        }
        let key = FlowKey { guest_port: src_port, dst };
        if let Some(flow) = self.flows.get_mut(&key) {
            flow.last_active = now;
            if send_now(&flow.socket, payload, None) {
                stats.bytes_out += payload.len() as u64;
            }
            return;
        }
        let Some(target) = egress.allows(dst, now) else {
            stats.denied += 1;
            return;
        };
        if self.count() >= self.limits.max_udp_flows as usize {
            stats.denied += 1;
            return;
        }
        let socket = match connected_socket(target) {
            Ok(socket) => Arc::new(socket),
            Err(e) => {
                static LOGGED: AtomicBool = AtomicBool::new(false);
                log_once(&LOGGED, format_args!("a UDP socket for a guest flow to {target}: {e}"));
                return;
            }
        };
        let id = self.next_id;
        self.next_id += 1;
        let task = tokio::spawn(relay_replies(id, socket.clone(), self.events.clone()));
        if send_now(&socket, payload, None) {
            stats.bytes_out += payload.len() as u64;
        }
        stats.udp_flows += 1;
        self.flow_keys.insert(id, key);
        self.flows.insert(key, Flow { id, socket, task, last_active: now });
    }

    /// A datagram from the host for flow `id`: to the guest, from the flow's destination.
    pub fn reply(&mut self, id: FlowId, data: &[u8], stack: &mut Stack, stats: &mut NetworkStats, now: Instant) {
        let Some(key) = self.flow_keys.get(&id) else { return };
        let Some(flow) = self.flows.get_mut(key) else { return };
        flow.last_active = now;
        if let Some(frame) = packet::udp_to_guest(key.dst, key.guest_port, data) {
            stats.bytes_in += data.len() as u64;
            stack.send_frame(frame);
        }
    }

    /// A datagram from `peer` to forward `forward`: to the guest's port, from the
    /// gateway's port mapped to `peer`.
    pub fn forwarded(&mut self, forward: usize, peer: SocketAddr, data: &[u8], stack: &mut Stack, stats: &mut NetworkStats, now: Instant) {
        let Some(guest_port) = self.forwards.get(&forward).map(|f| f.guest_port) else { return };
        let port = match self.ports_by_peer.get(&(forward, peer)) {
            Some(port) => *port,
            None => {
                if self.count() >= self.limits.max_udp_flows as usize {
                    return;
                }
                let Some(port) = self.ports.take() else { return };
                self.ports_by_peer.insert((forward, peer), port);
                self.mappings.insert(port, Mapping { forward, peer, guest_port, last_active: now });
                stats.udp_flows += 1;
                port
            }
        };
        if let Some(mapping) = self.mappings.get_mut(&port) {
            mapping.last_active = now;
            if let Some(frame) = packet::udp_to_guest(SocketAddrV4::new(GATEWAY_ADDR, port), mapping.guest_port, data) {
                stats.bytes_in += data.len() as u64;
                stack.send_frame(frame);
            }
        }
    }

    /// Whether flows or forward mappings are open: then `sweep` has idle ones to time out.
    pub fn has_open(&self) -> bool {
        !self.flows.is_empty() || !self.mappings.is_empty()
    }

    /// Closes the flows and mappings idle for `udp_idle_timeout_ms`.
    pub fn sweep(&mut self, now: Instant) {
        let timeout = self.idle_timeout();
        let idle = |last: Instant| now.duration_since(last) >= timeout;
        let expired: Vec<FlowKey> = self.flows.iter().filter(|(_, f)| idle(f.last_active)).map(|(k, _)| *k).collect();
        for key in expired {
            if let Some(flow) = self.flows.remove(&key) {
                self.flow_keys.remove(&flow.id);
                flow.task.abort();
            }
        }
        let expired: Vec<u16> = self.mappings.iter().filter(|(_, m)| idle(m.last_active)).map(|(p, _)| *p).collect();
        for port in expired {
            if let Some(mapping) = self.mappings.remove(&port) {
                self.ports_by_peer.remove(&(mapping.forward, mapping.peer));
                self.ports.give_back(port);
            }
        }
    }

    pub fn shut_down(&mut self) {
        for (_, flow) in self.flows.drain() {
            flow.task.abort();
        }
    }
}

/// A non-blocking UDP socket connected to `target`; connect picks its local address and
/// port (no bind). For flows and for the DNS upstreams.
pub fn connected_socket(target: SocketAddr) -> io::Result<UdpSocket> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(target), socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    socket.set_nonblocking(true)?;
    socket.connect(&target.into())?;
    UdpSocket::from_std(socket.into())
}

/// Sends a datagram if the socket's buffer has room, without waiting (a full buffer drops
/// it, as a congested link would). Straight to the socket: tokio's `try_send` would refuse
/// until the runtime has seen the socket writable once.
fn send_now(socket: &UdpSocket, payload: &[u8], to: Option<SocketAddr>) -> bool {
    let socket = socket2::SockRef::from(socket);
    match to {
        Some(to) => socket.send_to(payload, &to.into()).is_ok(),
        None => socket.send(payload).is_ok(),
    }
}

/// Passes a flow's replies to the event loop (whose queue bound holds this task back).
async fn relay_replies(flow: FlowId, socket: Arc<UdpSocket>, events: mpsc::Sender<Event>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match socket.recv(&mut buf).await {
            Ok(n) => {
                if events.send(Event::UdpReply { flow, data: buf[..n].to_vec() }).await.is_err() {
                    return;
                }
            }
            // An ICMP error from the destination (port unreachable): the flow stays.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(_) => return,
        }
    }
}

/// Passes datagrams to a UDP forward on to the event loop.
pub async fn relay_forward(forward: usize, socket: Arc<UdpSocket>, events: mpsc::Sender<Event>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, peer)) => {
                if events.send(Event::ForwardDatagram { forward, peer, data: buf[..n].to_vec() }).await.is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(e) => {
                eprintln!("boxlite-netgw: the UDP forward socket (fd {}) failed: {e}", gateway_fds::FIRST_FORWARD as usize + forward);
                return;
            }
        }
    }
}
