//! The gateway's event loop: the only owner of the stack, the connection and flow tables,
//! the policy and the figures. Frames from the VMM and reports from the tasks come in one
//! at a time; after each, the stack is polled, data moved between sockets and tasks, and
//! finished connections removed. Nothing here blocks: tasks do the waiting.

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::{Duration, Instant};

use boxlite_vmspec::network::{EgressPolicy, NetworkStats, GATEWAY_ADDR};
use tokio::sync::{mpsc, Notify};

use crate::dns_proxy::{DnsProxy, DNS_PORT};
use crate::error::Error;
use crate::event::Event;
use crate::frames;
use crate::packet::{self, Inbound};
use crate::policy::Egress;
use crate::stack::Stack;
use crate::startup::{ForwardSocket, Startup};
use crate::stats::{self, StatsFile};
use crate::tcp::{self, Tcp};
use crate::udp::{self, Udp, UdpForward};
use crate::upstream;

/// Frames read from the VMM and not yet processed (the reader waits beyond that).
const FRAMES_IN: usize = 64;
/// Frames queued for the VMM (the stack holds back beyond that; built UDP frames drop).
const FRAMES_OUT: usize = 256;
/// Reports from the tasks queued for the loop (the tasks wait beyond that).
const EVENTS: usize = 256;
/// Reports handled per loop turn before the stack is polled again.
const EVENTS_PER_TURN: usize = 64;
/// The allow-list names the gateway keeps resolved itself, at most.
const MAX_RESOLVED_NAMES: usize = 256;
/// Stack polls and data moves per turn, at most.
const SETTLE_ROUNDS: usize = 8;

pub struct Gateway {
    stack: Stack,
    tcp: Tcp,
    udp: Udp,
    dns: DnsProxy,
    egress: Egress,
    stats: NetworkStats,
    stats_file: StatsFile,
    /// TCP forward index -> guest port.
    tcp_forwards: HashMap<usize, u16>,
    frames_in: mpsc::Receiver<Result<Vec<u8>, Error>>,
    events: mpsc::Receiver<Event>,
    wake: Arc<Notify>,
}

impl Gateway {
    /// Registers the descriptors with the runtime and spawns the tasks (which run once the
    /// runtime does). Call inside the runtime's context, before seccomp.
    pub fn start(startup: Startup) -> Result<Gateway, Error> {
        let Startup { config, frames, stats, forwards } = startup;
        let setup = |what: &str, e: std::io::Error| Error::Setup(format!("{what}: {e}"));
        let frames = tokio::net::UnixStream::from_std(frames).map_err(|e| setup("registering the frame socket", e))?;
        let (frames_tx, frames_in) = mpsc::channel(FRAMES_IN);
        let (to_vmm, frames_out) = mpsc::channel(FRAMES_OUT);
        let (events_tx, events) = mpsc::channel(EVENTS);
        let wake = Arc::new(Notify::new());
        let (reader, writer) = frames.into_split();
        tokio::spawn(frames::read_loop(reader, frames_tx));
        tokio::spawn(frames::write_loop(writer, frames_out, wake.clone()));

        let mut tcp_forwards = HashMap::new();
        let mut udp_forwards = HashMap::new();
        for (index, forward) in forwards.into_iter().enumerate() {
            match forward {
                ForwardSocket::Tcp { listener, guest_port } => {
                    let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| setup("registering a TCP forward", e))?;
                    tcp_forwards.insert(index, guest_port);
                    tokio::spawn(tcp::accept_forward(index, listener, events_tx.clone()));
                }
                ForwardSocket::Udp { socket, guest_port } => {
                    let socket = Arc::new(tokio::net::UdpSocket::from_std(socket).map_err(|e| setup("registering a UDP forward", e))?);
                    tokio::spawn(udp::relay_forward(index, socket.clone(), events_tx.clone()));
                    udp_forwards.insert(index, UdpForward { socket, guest_port });
                }
            }
        }

        let egress = Egress::new(config.egress.clone());
        let dns = DnsProxy::new(config.dns_upstreams.clone(), config.limits.max_dns_in_flight, events_tx.clone());
        for name in egress.names_to_resolve().into_iter().take(MAX_RESOLVED_NAMES) {
            tokio::spawn(upstream::keep_resolved(name, dns.upstreams(), dns.permits.clone(), events_tx.clone()));
        }
        eprintln!(
            "boxlite-netgw: serving {} with {} DNS upstream(s) and {} forward(s); seccomp {}",
            describe(&config.egress),
            config.dns_upstreams.len(),
            config.forwards.len(),
            if config.seccomp { "on" } else { "off" }
        );
        Ok(Gateway {
            stack: Stack::new(to_vmm),
            tcp: Tcp::new(config.limits, events_tx.clone(), wake.clone()),
            udp: Udp::new(config.limits, udp_forwards, events_tx),
            dns,
            egress,
            stats: NetworkStats::default(),
            stats_file: StatsFile::new(stats),
            tcp_forwards,
            frames_in,
            events,
            wake,
        })
    }

    /// Runs until the VMM closes the frame socket (Ok, with the final figures) or breaks the
    /// frame protocol (Err). The stats file is written either way.
    pub async fn run(mut self) -> Result<NetworkStats, Error> {
        let mut maintenance = tokio::time::interval(stats::INTERVAL);
        maintenance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            let idle = Duration::from_secs(3600);
            let poll_in = if self.stack.link_has_room() { self.stack.poll_delay().unwrap_or(idle) } else { idle };
            // Maintenance only while there is some (UDP flows to time out, figures to write):
            // an idle box's gateway sleeps until a frame or a connection comes. Learned
            // allow-list entries need none: `allows` checks their time, `remember` drops stale ones.
            let maintenance_due = self.udp.has_open() || !self.stats_file.holds(&self.stats);
            tokio::select! {
                frame = self.frames_in.recv() => match frame {
                    Some(Ok(frame)) => self.frame(frame),
                    Some(Err(e)) => break Err(e),
                    None => break Ok(()),
                },
                Some(event) = self.events.recv() => self.event(event),
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(poll_in) => {}
                _ = maintenance.tick(), if maintenance_due => self.maintain(),
            }
            for _ in 0..EVENTS_PER_TURN {
                match self.events.try_recv() {
                    Ok(event) => self.event(event),
                    Err(_) => break,
                }
            }
            self.settle();
        };
        self.tcp.shut_down();
        self.udp.shut_down();
        self.stats_file.write(&self.stats);
        result.map(|()| self.stats)
    }

    fn frame(&mut self, frame: Vec<u8>) {
        let now = Instant::now();
        match packet::classify(&frame) {
            Inbound::Arp => {
                self.stack.receive(frame);
            }
            Inbound::Tcp(segment) => {
                if let Some(frame) = self.tcp.from_guest(segment, frame, &self.egress, &mut self.stats, now) {
                    self.stack.receive(frame);
                }
            }
            Inbound::Udp { src_port, dst, payload } => {
                if dst == SocketAddrV4::new(GATEWAY_ADDR, DNS_PORT) {
                    self.dns.query(src_port, payload, &self.egress, &mut self.stack, &mut self.stats);
                } else {
                    self.udp.from_guest(src_port, dst, payload, &self.egress, &mut self.stats, now);
                }
            }
            Inbound::Ignored => {}
        }
    }

    fn event(&mut self, event: Event) {
        let now = Instant::now();
        match event {
            Event::Connected { tuple, result } => {
                if let Some(syn) = self.tcp.connected(tuple, result, &mut self.stack, &mut self.stats) {
                    self.stack.receive(syn);
                }
            }
            Event::HostData { conn, data } => self.tcp.host_data(conn, data),
            Event::HostFinished { conn } => self.tcp.host_finished(conn),
            Event::HostFailed { conn } => self.tcp.host_failed(conn, &mut self.stack),
            Event::Accepted { forward, stream } => {
                if let Some(guest_port) = self.tcp_forwards.get(&forward) {
                    self.tcp.accepted(*guest_port, stream, &mut self.stack, &mut self.stats);
                }
            }
            Event::UdpReply { flow, data } => self.udp.reply(flow, &data, &mut self.stack, &mut self.stats, now),
            Event::ForwardDatagram { forward, peer, data } => {
                self.udp.forwarded(forward, peer, &data, &mut self.stack, &mut self.stats, now)
            }
            Event::DnsAnswer(answered) => self.dns.answer(answered, &mut self.egress, &mut self.stack, now),
            Event::Resolved { name, records, grace } => {
                let ports = self.egress.ports_for(&name);
                self.egress.learn(&ports, &records, grace, now);
            }
        }
    }

    /// Polls the stack and moves data until neither has news (bounded), then removes the
    /// connections that are over.
    fn settle(&mut self) {
        for _ in 0..SETTLE_ROUNDS {
            let changed = self.stack.poll();
            let moved = self.tcp.pump(&mut self.stack, &mut self.stats);
            if !changed && !moved {
                break;
            }
        }
        self.tcp.sweep(&mut self.stack);
    }

    fn maintain(&mut self) {
        let now = Instant::now();
        self.udp.sweep(now);
        self.egress.forget_expired(now);
        self.stats_file.maybe_write(&self.stats, now);
    }
}

fn describe(policy: &EgressPolicy) -> String {
    match policy {
        EgressPolicy::DenyAll => "deny_all".into(),
        EgressPolicy::Outbound { allow_host_loopback } => {
            format!("outbound (host loopback {})", if *allow_host_loopback { "allowed" } else { "denied" })
        }
        EgressPolicy::AllowList { rules } => format!("allow_list of {} rule(s)", rules.len()),
    }
}
