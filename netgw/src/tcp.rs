//! TCP through the gateway: the guest's outbound connections and the forwards' inbound
//! ones. Each is a smoltcp socket on the link spliced to a host `TcpStream` by a task of
//! its own, with fixed buffers both ways:
//!
//! - guest -> host: the stack's receive buffer, then at most `GUEST_TO_HOST_CHUNKS` chunks
//!   queued for the task; when the queue is full the stack's window closes.
//! - host -> guest: the task reads only with credit (`HOST_TO_GUEST_CREDIT` bytes not yet
//!   in the stack's send buffer); when the guest does not read, the host is not read.
//!
//! A guest SYN is held while the host connection is made (`connect_timeout_ms`): on success
//! a socket listening on exactly that endpoint takes the SYN; on failure, or when the
//! policy or `max_tcp_connections` says no, the SYN reaches the stack with no socket for it
//! and the stack answers RST, so the guest sees "connection refused".
//! FIN travels both ways (half-close); a reset on either side resets the other.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddrV4;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use boxlite_vmspec::network::{GatewayLimits, NetworkStats, GATEWAY_ADDR, GUEST_ADDR};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, IpEndpoint, IpListenEndpoint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::JoinHandle;

use crate::error::log_once;
use crate::event::{ConnId, Event, Tuple};
use crate::packet::TcpSegment;
use crate::policy::Egress;
use crate::port_pool::PortPool;
use crate::stack::Stack;

/// The stack's receive and send buffers, each.
const SOCKET_BUFFER: usize = 64 * 1024;
/// The most read from, or queued for, the host at once.
const CHUNK: usize = 16 * 1024;
/// Bytes read from the host that the stack has not taken yet.
const HOST_TO_GUEST_CREDIT: usize = 2 * CHUNK;
/// Chunks from the guest queued for the host.
const GUEST_TO_HOST_CHUNKS: usize = 2;
/// A connection whose guest does not acknowledge our FIN for this long is reset.
const CLOSE_TIMEOUT: smoltcp::time::Duration = smoltcp::time::Duration::from_secs(60);

enum ToHost {
    Data(Vec<u8>),
    /// The guest sent FIN: shut the host connection's sending half.
    Finish,
}

struct Conn {
    handle: SocketHandle,
    tuple: Tuple,
    /// The gateway's own port, for a forwarded connection.
    forward_port: Option<u16>,
    /// None once the guest's FIN went to the host, or the host side failed.
    to_host: Option<mpsc::Sender<ToHost>>,
    from_host: VecDeque<Vec<u8>>,
    /// How much of `from_host`'s first chunk the stack took.
    from_host_offset: usize,
    credit: Arc<Semaphore>,
    guest_finished: bool,
    host_finished: bool,
    closed_to_guest: bool,
    task: JoinHandle<()>,
}

/// A guest SYN waiting for its host connection.
struct Connecting {
    syn: Vec<u8>,
    task: JoinHandle<()>,
}

pub struct Tcp {
    conns: HashMap<ConnId, Conn>,
    by_tuple: HashMap<Tuple, ConnId>,
    connecting: HashMap<Tuple, Connecting>,
    ports: PortPool,
    next_id: ConnId,
    limits: GatewayLimits,
    events: mpsc::Sender<Event>,
    wake: Arc<Notify>,
}

impl Tcp {
    pub fn new(limits: GatewayLimits, events: mpsc::Sender<Event>, wake: Arc<Notify>) -> Tcp {
        Tcp {
            conns: HashMap::new(),
            by_tuple: HashMap::new(),
            connecting: HashMap::new(),
            ports: PortPool::default(),
            next_id: 0,
            limits,
            events,
            wake,
        }
    }

    /// Connections open or being made (what `max_tcp_connections` bounds).
    pub fn count(&self) -> usize {
        self.conns.len() + self.connecting.len()
    }

    /// A segment from the guest; returns it if the stack should process it now.
    pub fn from_guest(
        &mut self,
        segment: TcpSegment,
        frame: Vec<u8>,
        egress: &Egress,
        stats: &mut NetworkStats,
        now: Instant,
    ) -> Option<Vec<u8>> {
        let tuple = Tuple { guest_port: segment.src_port, remote: segment.dst };
        if !segment.opens || self.by_tuple.contains_key(&tuple) {
            return Some(frame);
        }
        if self.connecting.contains_key(&tuple) {
            // A retransmitted SYN while the host connection is being made.
            return None;
        }
        let Some(target) = egress.allows(segment.dst, now) else {
            stats.denied += 1;
            return Some(frame);
        };
        if self.count() >= self.limits.max_tcp_connections as usize {
            stats.denied += 1;
            return Some(frame);
        }
        let timeout = std::time::Duration::from_millis(self.limits.connect_timeout_ms.max(1));
        let events = self.events.clone();
        let task = tokio::spawn(async move {
            let result = match tokio::time::timeout(timeout, TcpStream::connect(target)).await {
                Ok(result) => result,
                Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
            };
            let _ = events.send(Event::Connected { tuple, result }).await;
        });
        self.connecting.insert(tuple, Connecting { syn: frame, task });
        None
    }

    /// The host connection for a held SYN is made (or not); returns the SYN for the stack.
    pub fn connected(
        &mut self,
        tuple: Tuple,
        result: io::Result<TcpStream>,
        stack: &mut Stack,
        stats: &mut NetworkStats,
    ) -> Option<Vec<u8>> {
        let connecting = self.connecting.remove(&tuple)?;
        if let Ok(stream) = result {
            let mut socket = new_socket();
            let endpoint = IpListenEndpoint { addr: Some(IpAddress::Ipv4(*tuple.remote.ip())), port: tuple.remote.port() };
            if socket.listen(endpoint).is_ok() {
                let handle = stack.sockets.add(socket);
                self.add(handle, tuple, None, stream);
                stats.tcp_connections += 1;
            }
        }
        Some(connecting.syn)
    }

    /// A host client connected to a forward: connect to the guest's `guest_port` from the
    /// gateway's address and a port of its own.
    pub fn accepted(&mut self, guest_port: u16, stream: TcpStream, stack: &mut Stack, stats: &mut NetworkStats) {
        if self.count() >= self.limits.max_tcp_connections as usize {
            static LOGGED: AtomicBool = AtomicBool::new(false);
            log_once(&LOGGED, format_args!("forwarded connections are refused while max_tcp_connections are open"));
            return;
        }
        let Some(port) = self.ports.take() else { return };
        let mut socket = new_socket();
        socket.set_timeout(Some(smoltcp::time::Duration::from_millis(self.limits.connect_timeout_ms.max(1))));
        let remote = IpEndpoint::new(IpAddress::Ipv4(GUEST_ADDR), guest_port);
        let local = IpEndpoint::new(IpAddress::Ipv4(GATEWAY_ADDR), port);
        if socket.connect(stack.iface.context(), remote, local).is_err() {
            self.ports.give_back(port);
            return;
        }
        let handle = stack.sockets.add(socket);
        self.add(handle, Tuple { guest_port, remote: SocketAddrV4::new(GATEWAY_ADDR, port) }, Some(port), stream);
        stats.forwarded_connections += 1;
    }

    fn add(&mut self, handle: SocketHandle, tuple: Tuple, forward_port: Option<u16>, stream: TcpStream) {
        let id = self.next_id;
        self.next_id += 1;
        let (to_host, queue) = mpsc::channel(GUEST_TO_HOST_CHUNKS);
        let credit = Arc::new(Semaphore::new(HOST_TO_GUEST_CREDIT));
        let task = tokio::spawn(splice_host(id, stream, queue, credit.clone(), self.events.clone(), self.wake.clone()));
        self.by_tuple.insert(tuple, id);
        self.conns.insert(
            id,
            Conn {
                handle,
                tuple,
                forward_port,
                to_host: Some(to_host),
                from_host: VecDeque::new(),
                from_host_offset: 0,
                credit,
                guest_finished: false,
                host_finished: false,
                closed_to_guest: false,
                task,
            },
        );
    }

    pub fn host_data(&mut self, conn: ConnId, data: Vec<u8>) {
        if let Some(conn) = self.conns.get_mut(&conn) {
            conn.from_host.push_back(data);
        }
    }

    pub fn host_finished(&mut self, conn: ConnId) {
        if let Some(conn) = self.conns.get_mut(&conn) {
            conn.host_finished = true;
        }
    }

    /// The host side failed: reset the guest's side (the stack sends the RST on its next poll).
    pub fn host_failed(&mut self, conn: ConnId, stack: &mut Stack) {
        if let Some(conn) = self.conns.get_mut(&conn) {
            conn.to_host = None;
            conn.from_host.clear();
            stack.sockets.get_mut::<tcp::Socket>(conn.handle).abort();
        }
    }

    /// Moves data between the stack's sockets and the host tasks as far as the buffers
    /// allow, and passes FINs on. Returns whether anything moved (the stack has news).
    pub fn pump(&mut self, stack: &mut Stack, stats: &mut NetworkStats) -> bool {
        let mut moved = false;
        for conn in self.conns.values_mut() {
            let socket = stack.sockets.get_mut::<tcp::Socket>(conn.handle);
            moved |= pump_one(conn, socket, stats);
        }
        moved
    }

    /// Removes the connections that are over: reset, fully closed, or a listening socket
    /// whose SYN never came (or was reset before the handshake ended).
    pub fn sweep(&mut self, stack: &mut Stack) {
        let over: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, conn)| {
                let socket = stack.sockets.get::<tcp::Socket>(conn.handle);
                // Over once what the guest sent is queued for the host (or the host side
                // failed), and a closed socket has sent any RST it owed.
                match socket.state() {
                    tcp::State::Listen => true,
                    tcp::State::TimeWait => conn.to_host.is_none(),
                    tcp::State::Closed => conn.to_host.is_none() && socket.remote_endpoint().is_none(),
                    _ => false,
                }
            })
            .map(|(id, _)| *id)
            .collect();
        for id in over {
            let Some(conn) = self.conns.remove(&id) else { continue };
            stack.sockets.remove(conn.handle);
            self.by_tuple.remove(&conn.tuple);
            if let Some(port) = conn.forward_port {
                self.ports.give_back(port);
            }
            // Closed both ways: the task ends once its last bytes are written. Otherwise
            // the host connection goes too.
            if !(conn.guest_finished && conn.host_finished) {
                conn.task.abort();
            }
        }
    }

    /// Stops every host connection (the gateway is exiting).
    pub fn shut_down(&mut self) {
        for (_, conn) in self.conns.drain() {
            conn.task.abort();
        }
        for (_, connecting) in self.connecting.drain() {
            connecting.task.abort();
        }
    }
}

fn new_socket() -> tcp::Socket<'static> {
    let mut socket = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER]), tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER]));
    // The gateway relays what the other side wrote as it comes; batching is the ends' job.
    socket.set_nagle_enabled(false);
    socket
}

fn pump_one(conn: &mut Conn, socket: &mut tcp::Socket<'static>, stats: &mut NetworkStats) -> bool {
    let mut moved = false;
    if socket.state() == tcp::State::Established && socket.timeout().is_some() && !conn.closed_to_guest {
        // A forward's connect timeout: it applies to the handshake only.
        socket.set_timeout(None);
    }
    // Guest -> host.
    if let Some(to_host) = &conn.to_host {
        while socket.can_recv() {
            let permit = match to_host.try_reserve() {
                Ok(permit) => permit,
                Err(TrySendError::Full(())) | Err(TrySendError::Closed(())) => break,
            };
            let Ok(data) = socket.recv(|buf| {
                let n = buf.len().min(CHUNK);
                (n, buf[..n].to_vec())
            }) else {
                break;
            };
            stats.bytes_out += data.len() as u64;
            permit.send(ToHost::Data(data));
            moved = true;
        }
        // The guest sent FIN (or reset: the host then gets FIN too, after the data).
        let fin_received = matches!(
            socket.state(),
            tcp::State::CloseWait | tcp::State::LastAck | tcp::State::Closing | tcp::State::TimeWait | tcp::State::Closed
        );
        if fin_received && !socket.can_recv() {
            if let Ok(permit) = to_host.try_reserve() {
                permit.send(ToHost::Finish);
                conn.guest_finished = true;
                moved = true;
            }
        }
    }
    if conn.guest_finished {
        conn.to_host = None;
    }
    // Host -> guest.
    while let Some(front) = conn.from_host.front() {
        let sent = match socket.send_slice(&front[conn.from_host_offset..]) {
            Ok(n) if n > 0 => n,
            _ => break,
        };
        conn.from_host_offset += sent;
        stats.bytes_in += sent as u64;
        conn.credit.add_permits(sent);
        moved = true;
        if conn.from_host_offset == front.len() {
            conn.from_host.pop_front();
            conn.from_host_offset = 0;
        }
    }
    if conn.host_finished && conn.from_host.is_empty() && !conn.closed_to_guest {
        socket.close();
        socket.set_timeout(Some(CLOSE_TIMEOUT));
        conn.closed_to_guest = true;
        moved = true;
    }
    moved
}

/// The host side of one connection: reads from the host with credit, writes what the guest
/// sent, shuts down the sending half on the guest's FIN.
async fn splice_host(
    conn: ConnId,
    stream: TcpStream,
    mut to_host: mpsc::Receiver<ToHost>,
    credit: Arc<Semaphore>,
    events: mpsc::Sender<Event>,
    wake: Arc<Notify>,
) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let read_side = async {
        loop {
            let Ok(permit) = credit.acquire_many(CHUNK as u32).await else { return };
            permit.forget();
            let mut buf = vec![0u8; CHUNK];
            match reader.read(&mut buf).await {
                Ok(0) => {
                    credit.add_permits(CHUNK);
                    let _ = events.send(Event::HostFinished { conn }).await;
                    return;
                }
                Ok(n) => {
                    credit.add_permits(CHUNK - n);
                    buf.truncate(n);
                    if events.send(Event::HostData { conn, data: buf }).await.is_err() {
                        return;
                    }
                }
                Err(_) => {
                    let _ = events.send(Event::HostFailed { conn }).await;
                    return;
                }
            }
        }
    };
    let write_side = async {
        while let Some(message) = to_host.recv().await {
            match message {
                ToHost::Data(data) => {
                    if writer.write_all(&data).await.is_err() {
                        let _ = events.send(Event::HostFailed { conn }).await;
                        return;
                    }
                    // Room in the queue: the event loop may take more from the guest.
                    wake.notify_one();
                }
                ToHost::Finish => {
                    let _ = writer.shutdown().await;
                    return;
                }
            }
        }
    };
    tokio::join!(read_side, write_side);
}

/// Hands the connections a TCP forward's listener accepts to the event loop.
pub async fn accept_forward(forward: usize, listener: TcpListener, events: mpsc::Sender<Event>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                if events.send(Event::Accepted { forward, stream }).await.is_err() {
                    return;
                }
            }
            // Out of descriptors or memory, or a client gone before accept: try again soon.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::ECONNABORTED)) => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => {
                eprintln!(
                    "boxlite-netgw: the TCP forward listener (fd {}) failed: {e}",
                    boxlite_vmspec::network::gateway_fds::FIRST_FORWARD as usize + forward
                );
                return;
            }
        }
    }
}
