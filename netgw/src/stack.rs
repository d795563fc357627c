//! The gateway's side of the link: a smoltcp interface at `GATEWAY_ADDR` (`GATEWAY_MAC`)
//! that answers ARP and accepts TCP for every destination (any-IP), fed one frame at a time
//! by the event loop, and sending into the bounded queue of frames for the VMM.

use std::hash::{BuildHasher, Hasher};

use boxlite_vmspec::network::{GATEWAY_ADDR, GATEWAY_MAC, MTU, PREFIX_LEN};
use smoltcp::iface::{Config, Interface, PollResult, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};
use tokio::sync::mpsc;

/// Ethernet header plus MTU.
const MAX_LINK_FRAME: usize = MTU + 14;

pub struct Stack {
    pub iface: Interface,
    pub sockets: SocketSet<'static>,
    device: Link,
    started: std::time::Instant,
}

impl Stack {
    /// The interface, sending its frames into `to_vmm`.
    pub fn new(to_vmm: mpsc::Sender<Vec<u8>>) -> Stack {
        let mut device = Link { incoming: None, to_vmm };
        let started = std::time::Instant::now();
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(GATEWAY_MAC)));
        // Initial sequence numbers: a per-process random seed (std's hasher keys are random).
        config.random_seed = std::hash::RandomState::new().build_hasher().finish();
        let mut iface = Interface::new(config, &mut device, Instant::ZERO);
        iface.update_ip_addrs(|addrs| {
            addrs.push(IpCidr::new(IpAddress::Ipv4(GATEWAY_ADDR), PREFIX_LEN)).expect("one address fits");
        });
        // Any-IP: accept traffic for every destination; the route through our own address is
        // what smoltcp's any-IP looks for.
        iface.set_any_ip(true);
        iface.routes_mut().add_default_ipv4_route(GATEWAY_ADDR).expect("one route fits");
        Stack { iface, sockets: SocketSet::new(Vec::new()), device, started }
    }

    /// smoltcp's clock: time since start.
    pub fn now(&self) -> Instant {
        Instant::from_micros(self.started.elapsed().as_micros() as i64)
    }

    /// Processes one frame from the guest, then sends what the sockets have to send.
    pub fn receive(&mut self, frame: Vec<u8>) -> bool {
        self.device.incoming = Some(frame);
        self.poll()
    }

    /// Sends what the sockets have to send (and processes a pending incoming frame).
    pub fn poll(&mut self) -> bool {
        let now = self.now();
        self.iface.poll(now, &mut self.device, &mut self.sockets) == PollResult::SocketStateChanged
    }

    /// When the stack next needs a poll (None: only when something arrives).
    pub fn poll_delay(&mut self) -> Option<std::time::Duration> {
        let now = self.now();
        self.iface.poll_delay(now, &self.sockets).map(|d: Duration| std::time::Duration::from_micros(d.total_micros()))
    }

    /// Whether the queue to the VMM has room. While it has none, the stack's timers wait
    /// for the writer to drain it (it wakes the loop) instead of spinning.
    pub fn link_has_room(&self) -> bool {
        self.device.to_vmm.capacity() > 0
    }

    /// Queues a frame the gateway built itself (UDP); dropped if the queue is full, as a
    /// congested link would.
    pub fn send_frame(&mut self, frame: Vec<u8>) {
        let _ = self.device.to_vmm.try_send(frame);
    }
}

/// The link as smoltcp sees it: at most one incoming frame at a time (the event loop hands
/// them over one by one), and the queue to the VMM, whose bound is smoltcp's backpressure.
struct Link {
    incoming: Option<Vec<u8>>,
    to_vmm: mpsc::Sender<Vec<u8>>,
}

impl Device for Link {
    type RxToken<'a> = Incoming;
    type TxToken<'a> = Outgoing<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(Incoming, Outgoing<'_>)> {
        let frame = self.incoming.take()?;
        Some((Incoming(frame), Outgoing(&self.to_vmm)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Outgoing<'_>> {
        // Only the event loop sends, so the room seen here is still there in consume.
        (self.to_vmm.capacity() > 0).then_some(Outgoing(&self.to_vmm))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MAX_LINK_FRAME;
        caps
    }
}

struct Incoming(Vec<u8>);

impl RxToken for Incoming {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

struct Outgoing<'a>(&'a mpsc::Sender<Vec<u8>>);

impl TxToken for Outgoing<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0u8; len];
        let result = f(&mut frame);
        // A reply to an incoming frame may find the queue full: dropped, like on a busy link.
        let _ = self.0.try_send(frame);
        result
    }
}
