//! The test bench: the real `boxlite-netgw` binary with its descriptors laid out as the
//! shim lays them out, a simulated guest (a second smoltcp interface at `GUEST_ADDR` on the
//! other end of the frame socket), and small servers on the host's loopback.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use boxlite_vmspec::network::{
    EgressPolicy, ForwardTarget, GatewayConfig, GatewayLimits, NetworkStats, Protocol, GATEWAY_ADDR, GUEST_ADDR, GUEST_MAC, PREFIX_LEN,
};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::{tcp, udp};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpEndpoint};

/// How long any one step may take before the test fails.
pub const STEP: Duration = Duration::from_secs(5);

/// A config with `egress`, no upstreams or forwards, default limits, seccomp on, except
/// when tracing the gateway's syscalls (`BOXLITE_NETGW_TRACE`, see `start_raw`).
pub fn config(egress: EgressPolicy) -> GatewayConfig {
    let seccomp = std::env::var_os(TRACE_ENV).is_none();
    GatewayConfig { egress, dns_upstreams: Vec::new(), forwards: Vec::new(), limits: GatewayLimits::default(), seccomp }
}

/// When set to a directory, each gateway runs under `strace -f` writing its trace there
/// (`trace-<pid>-<n>`), with seccomp off, to measure the syscalls its policy must allow.
pub const TRACE_ENV: &str = "BOXLITE_NETGW_TRACE";

pub fn outbound(allow_host_loopback: bool) -> EgressPolicy {
    EgressPolicy::Outbound { allow_host_loopback }
}

pub fn allow_list(rules: &[&str]) -> EgressPolicy {
    EgressPolicy::AllowList { rules: rules.iter().map(|r| boxlite_vmspec::network::AllowRule::parse(r).unwrap()).collect() }
}

// ---------------------------------------------------------------------------------------
// The gateway process.

static UNIQUE: AtomicUsize = AtomicUsize::new(0);

pub struct Gateway {
    pub child: Child,
    stats_path: PathBuf,
    stderr: Arc<Mutex<String>>,
}

/// A forward socket for the gateway and the config entry it goes with.
pub struct Forward {
    pub fd: OwnedFd,
    pub target: ForwardTarget,
}

pub fn tcp_forward(guest_port: u16) -> (Forward, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    (Forward { fd: listener.into(), target: ForwardTarget { protocol: Protocol::Tcp, guest_port } }, addr)
}

/// A UDP forward bound on `addr` (IPv4 or IPv6).
pub fn udp_forward(addr: &str, guest_port: u16) -> (Forward, SocketAddr) {
    let socket = UdpSocket::bind(addr).unwrap();
    let addr = socket.local_addr().unwrap();
    (Forward { fd: socket.into(), target: ForwardTarget { protocol: Protocol::Udp, guest_port } }, addr)
}

/// Starts the gateway with `config` (its `forwards` replaced by those of `forwards`);
/// returns it and the guest's end of the frame socket.
pub fn start(mut config: GatewayConfig, forwards: Vec<Forward>) -> (Gateway, UnixStream) {
    config.forwards = forwards.iter().map(|f| f.target).collect();
    let mut line = serde_json::to_vec(&config).unwrap();
    line.push(b'\n');
    let (guest_end, gateway_end) = UnixStream::pair().unwrap();
    let gateway = start_raw(&line, gateway_end.into(), forwards.into_iter().map(|f| f.fd).collect());
    (gateway, guest_end)
}

/// Starts the gateway with `stdin` as its config, `frames` as fd 3, a new stats file as
/// fd 4 and `forwards` from fd 5 on, the way the shim lays them out.
pub fn start_raw(stdin: &[u8], frames: OwnedFd, forwards: Vec<OwnedFd>) -> Gateway {
    let n = UNIQUE.fetch_add(1, Ordering::SeqCst);
    let stats_path = std::env::temp_dir().join(format!("netgw-test-{}-{n}.json", std::process::id()));
    let stats = File::options().read(true).write(true).create(true).truncate(true).open(&stats_path).unwrap();
    let mut fds: Vec<OwnedFd> = vec![frames, stats.into()];
    fds.extend(forwards);
    // Copies above every target, so that no dup2 in the child overwrites a source.
    let copies: Vec<OwnedFd> = fds
        .iter()
        .map(|fd| {
            let raw = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(100)).unwrap();
            // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
            unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) }
        })
        .collect();
    let plan: Vec<(RawFd, RawFd)> = copies.iter().enumerate().map(|(i, fd)| (fd.as_raw_fd(), 3 + i as RawFd)).collect();
    let binary = env!("CARGO_BIN_EXE_boxlite-netgw");
    let mut command = match std::env::var_os(TRACE_ENV) {
        Some(dir) => {
            let mut strace = Command::new("strace");
            let out = PathBuf::from(dir).join(format!("trace-{}-{n}", std::process::id()));
            strace.arg("-f").arg("-qq").arg("-o").arg(out).arg(binary);
            strace
        }
        None => Command::new(binary),
    };
    command.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped());
    // SAFETY: the closure runs between fork and exec and only calls dup2 (async-signal-safe)
    // on descriptor numbers that stay open in the parent until spawn returns.
    unsafe {
        command.pre_exec(move || {
            for &(source, target) in &plan {
                if libc::dup2(source, target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    drop((copies, fds));
    let mut input = child.stdin.take().unwrap();
    let _ = input.write_all(stdin);
    drop(input);
    let stderr = Arc::new(Mutex::new(String::new()));
    let mut pipe = child.stderr.take().unwrap();
    let sink = stderr.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    Gateway { child, stats_path, stderr }
}

impl Gateway {
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The stats file as last written (default figures if not yet written).
    pub fn stats(&self) -> NetworkStats {
        let text = std::fs::read_to_string(&self.stats_path).unwrap_or_default();
        if text.is_empty() {
            return NetworkStats::default();
        }
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("the stats file is not NetworkStats JSON ({e}): {text:?}"))
    }

    /// Waits (the file is rewritten every 500 ms) until the stats satisfy `check`.
    pub fn stats_until(&self, what: &str, check: impl Fn(&NetworkStats) -> bool) -> NetworkStats {
        let deadline = Instant::now() + STEP;
        loop {
            let stats = self.stats();
            if check(&stats) {
                return stats;
            }
            assert!(Instant::now() < deadline, "stats never showed {what}: {stats:?}\nstderr: {}", self.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + STEP;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the stderr reader catch up.
                std::thread::sleep(Duration::from_millis(50));
                return status;
            }
            assert!(Instant::now() < deadline, "the gateway did not exit; stderr: {}", self.stderr());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The `Seccomp:` line of /proc/<pid>/status (0: off, 2: filter).
    pub fn seccomp_mode(&self) -> u32 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("Seccomp:")).expect("a Seccomp line");
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.stats_path);
        if std::thread::panicking() {
            eprintln!("gateway stderr:\n{}", self.stderr());
        }
    }
}

// ---------------------------------------------------------------------------------------
// The guest: a smoltcp interface speaking the frame protocol over the socket's other end.

struct Link {
    incoming: mpsc::Receiver<Vec<u8>>,
    queue: VecDeque<Vec<u8>>,
    out: UnixStream,
}

impl Device for Link {
    type RxToken<'a> = Incoming;
    type TxToken<'a> = Outgoing<'a>;

    fn receive(&mut self, _: smoltcp::time::Instant) -> Option<(Incoming, Outgoing<'_>)> {
        while let Ok(frame) = self.incoming.try_recv() {
            self.queue.push_back(frame);
        }
        let frame = self.queue.pop_front()?;
        Some((Incoming(frame), Outgoing(&mut self.out)))
    }

    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<Outgoing<'_>> {
        Some(Outgoing(&mut self.out))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps
    }
}

struct Incoming(Vec<u8>);

impl RxToken for Incoming {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

struct Outgoing<'a>(&'a mut UnixStream);

impl TxToken for Outgoing<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0u8; 4 + len];
        frame[..4].copy_from_slice(&(len as u32).to_be_bytes());
        let result = f(&mut frame[4..]);
        // The gateway may be gone (tests of its exit); the guest does not care.
        let _ = self.0.write_all(&frame);
        result
    }
}

pub struct Guest {
    iface: Interface,
    pub sockets: SocketSet<'static>,
    link: Link,
    started: Instant,
    next_port: u16,
}

impl Guest {
    pub fn new(stream: UnixStream) -> Guest {
        let (tx, incoming) = mpsc::channel();
        let mut reader = stream.try_clone().unwrap();
        std::thread::spawn(move || loop {
            let mut prefix = [0u8; 4];
            if reader.read_exact(&mut prefix).is_err() {
                return;
            }
            let mut frame = vec![0u8; u32::from_be_bytes(prefix) as usize];
            if reader.read_exact(&mut frame).is_err() || tx.send(frame).is_err() {
                return;
            }
        });
        let mut link = Link { incoming, queue: VecDeque::new(), out: stream };
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(GUEST_MAC)));
        config.random_seed = UNIQUE.fetch_add(1, Ordering::SeqCst) as u64 * 7919;
        let mut iface = Interface::new(config, &mut link, smoltcp::time::Instant::ZERO);
        iface.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::Ipv4(GUEST_ADDR), PREFIX_LEN)).unwrap());
        iface.routes_mut().add_default_ipv4_route(GATEWAY_ADDR).unwrap();
        Guest { iface, sockets: SocketSet::new(Vec::new()), link, started: Instant::now(), next_port: 40000 }
    }

    pub fn poll(&mut self) {
        let now = smoltcp::time::Instant::from_micros(self.started.elapsed().as_micros() as i64);
        self.iface.poll(now, &mut self.link, &mut self.sockets);
    }

    /// Polls until `f` says done, for at most `STEP`.
    pub fn until<T>(&mut self, what: &str, mut f: impl FnMut(&mut Guest) -> Option<T>) -> T {
        self.until_for(STEP, what, &mut f).unwrap_or_else(|| panic!("the guest waited {STEP:?} for {what}"))
    }

    /// Polls until `f` says done or `limit` passes (None).
    pub fn until_for<T>(&mut self, limit: Duration, _what: &str, mut f: impl FnMut(&mut Guest) -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + limit;
        loop {
            self.poll();
            if let Some(done) = f(self) {
                return Some(done);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Keeps polling for `time` (delayed ACKs go out).
    pub fn idle(&mut self, time: Duration) {
        let _: Option<()> = self.until_for(time, "nothing", |_| None);
    }

    fn port(&mut self) -> u16 {
        self.next_port += 1;
        self.next_port
    }

    pub fn tcp(&mut self, h: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(h)
    }

    fn new_tcp(&mut self) -> tcp::Socket<'static> {
        tcp::Socket::new(tcp::SocketBuffer::new(vec![0; 65536]), tcp::SocketBuffer::new(vec![0; 65536]))
    }

    /// Opens a connection to `remote`: Ok once established, Err("reset") if refused.
    pub fn connect(&mut self, remote: SocketAddrV4) -> Result<SocketHandle, String> {
        let port = self.port();
        let mut socket = self.new_tcp();
        socket.connect(self.iface.context(), IpEndpoint::new(IpAddress::Ipv4(*remote.ip()), remote.port()), port).unwrap();
        let h = self.sockets.add(socket);
        let state = self.until(&format!("the connection to {remote} to settle"), |g| match g.tcp(h).state() {
            tcp::State::SynSent => None,
            state => Some(state),
        });
        match state {
            tcp::State::Established => Ok(h),
            tcp::State::Closed => Err("reset".into()),
            other => Err(format!("in state {other}")),
        }
    }

    pub fn listen(&mut self, port: u16) -> SocketHandle {
        let mut socket = self.new_tcp();
        socket.listen(port).unwrap();
        self.sockets.add(socket)
    }

    /// Waits until the listener `h` has a connection past the handshake.
    pub fn accept(&mut self, h: SocketHandle) {
        self.until("a connection to the listener", |g| {
            (!matches!(g.tcp(h).state(), tcp::State::Listen | tcp::State::SynReceived)).then_some(())
        });
    }

    pub fn send_all(&mut self, h: SocketHandle, data: &[u8]) {
        let mut sent = 0;
        self.until("the data to go out", |g| {
            sent += g.tcp(h).send_slice(&data[sent..]).unwrap_or(0);
            (sent == data.len()).then_some(())
        });
    }

    /// Reads until the other side's FIN; the data read.
    pub fn read_to_end(&mut self, h: SocketHandle) -> Vec<u8> {
        let mut data = Vec::new();
        self.until("the other side's FIN", |g| {
            let socket = g.tcp(h);
            while socket.can_recv() {
                let _ = socket.recv(|b| {
                    data.extend_from_slice(b);
                    (b.len(), ())
                });
            }
            (!socket.may_recv()).then_some(())
        });
        data
    }

    pub fn read_exact(&mut self, h: SocketHandle, n: usize) -> Vec<u8> {
        let mut data = Vec::new();
        self.until(&format!("{n} bytes"), |g| {
            let socket = g.tcp(h);
            while socket.can_recv() && data.len() < n {
                let _ = socket.recv(|b| {
                    let take = b.len().min(n - data.len());
                    data.extend_from_slice(&b[..take]);
                    (take, ())
                });
            }
            (data.len() == n).then_some(())
        });
        data
    }

    /// Sends `data`, sends FIN, reads until FIN: an echo's round trip with half-close.
    pub fn echo_round_trip(&mut self, remote: SocketAddrV4, data: &[u8]) -> Result<Vec<u8>, String> {
        let h = self.connect(remote)?;
        self.send_all(h, data);
        self.tcp(h).close();
        let echoed = self.read_to_end(h);
        self.until("the connection to close", |g| matches!(g.tcp(h).state(), tcp::State::Closed | tcp::State::TimeWait).then_some(()));
        // The last ACK waits for smoltcp's ACK delay; a socket removed before would owe it.
        self.idle(Duration::from_millis(30));
        self.sockets.remove(h);
        Ok(echoed)
    }

    pub fn udp_bind(&mut self, port: u16) -> SocketHandle {
        let meta = || vec![udp::PacketMetadata::EMPTY; 16];
        let mut socket = udp::Socket::new(udp::PacketBuffer::new(meta(), vec![0; 65536]), udp::PacketBuffer::new(meta(), vec![0; 65536]));
        socket.bind(port).unwrap();
        self.sockets.add(socket)
    }

    pub fn udp_send(&mut self, h: SocketHandle, to: SocketAddrV4, data: &[u8]) {
        let to = IpEndpoint::new(IpAddress::Ipv4(*to.ip()), to.port());
        self.sockets.get_mut::<udp::Socket>(h).send_slice(data, to).unwrap();
        self.poll();
    }

    /// The next datagram within `limit`: (data, sender).
    pub fn udp_recv(&mut self, h: SocketHandle, limit: Duration) -> Option<(Vec<u8>, SocketAddrV4)> {
        self.until_for(limit, "a datagram", |g| {
            let socket = g.sockets.get_mut::<udp::Socket>(h);
            socket.recv().ok().map(|(data, meta)| {
                let IpAddress::Ipv4(addr) = meta.endpoint.addr;
                (data.to_vec(), SocketAddrV4::new(addr, meta.endpoint.port))
            })
        })
    }

    /// Asks `server` for `name`'s A records: (rcode, addresses), None without an answer.
    pub fn resolve(&mut self, server: SocketAddrV4, name: &str, limit: Duration) -> Option<(u8, Vec<Ipv4Addr>)> {
        let port = self.port();
        let h = self.udp_bind(port);
        let (query, _) = boxlite_netgw::dns::a_query(0x4242, name).unwrap();
        self.udp_send(h, server, &query);
        let answer = self.udp_recv(h, limit);
        self.sockets.remove(h);
        let (answer, from) = answer?;
        assert_eq!(from, server, "the answer comes from the server asked");
        assert_eq!(&answer[..2], &[0x42, 0x42], "the answer has the query's id");
        Some((answer[3] & 0x0f, boxlite_netgw::dns::a_records(&answer).into_iter().map(|(a, _)| a).collect()))
    }
}

impl Drop for Guest {
    /// The VM going away: its end of the frame socket closes (the reader thread's clone too).
    fn drop(&mut self) {
        let _ = self.link.out.shutdown(std::net::Shutdown::Both);
    }
}

pub fn gateway(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(GATEWAY_ADDR, port)
}

// ---------------------------------------------------------------------------------------
// Servers on the host, each living at most a minute.

const SERVER_LIFETIME: Duration = Duration::from_secs(60);

/// A TCP server on `addr` that echoes what it reads and closes after the client's FIN.
pub fn tcp_echo(addr: &str) -> SocketAddr {
    let listener = TcpListener::bind(addr).unwrap();
    let local = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let deadline = Instant::now() + SERVER_LIFETIME;
        while Instant::now() < deadline {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    stream.set_nonblocking(false).unwrap();
                    stream.set_read_timeout(Some(SERVER_LIFETIME)).unwrap();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 8192];
                        while let Ok(n) = stream.read(&mut buf) {
                            if n == 0 || stream.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = stream.shutdown(std::net::Shutdown::Write);
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    });
    local
}

/// A UDP server on `addr` that sends each datagram back to its sender.
pub fn udp_echo(addr: &str) -> SocketAddr {
    let socket = UdpSocket::bind(addr).unwrap();
    let local = socket.local_addr().unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    std::thread::spawn(move || {
        let deadline = Instant::now() + SERVER_LIFETIME;
        let mut buf = [0u8; 65536];
        while Instant::now() < deadline {
            if let Ok((n, peer)) = socket.recv_from(&mut buf) {
                let _ = socket.send_to(&buf[..n], peer);
            }
        }
    });
    local
}

/// A tiny DNS server on `addr`: one A record per name of `names` (name, address, TTL),
/// NXDOMAIN for the rest. Returns its address and the names it was asked, in order.
pub fn dns_server(addr: &str, names: &[(&str, Ipv4Addr, u32)]) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let socket = UdpSocket::bind(addr).unwrap();
    let local = socket.local_addr().unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let names: HashMap<String, (Ipv4Addr, u32)> = names.iter().map(|(n, a, ttl)| (n.to_string(), (*a, *ttl))).collect();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let log = asked.clone();
    std::thread::spawn(move || {
        let deadline = Instant::now() + SERVER_LIFETIME;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            let Ok((n, peer)) = socket.recv_from(&mut buf) else { continue };
            let query = &buf[..n];
            // Header, then uncompressed labels, then type and class: all a query has here.
            let mut at = 12;
            let mut labels = Vec::new();
            while at < n && query[at] != 0 {
                let len = query[at] as usize;
                labels.push(String::from_utf8_lossy(&query[at + 1..at + 1 + len]).to_lowercase());
                at += 1 + len;
            }
            let question_end = at + 5;
            let name = labels.join(".");
            log.lock().unwrap().push(name.clone());
            let mut reply = query[..question_end].to_vec();
            reply[2] |= 0x80;
            reply[3] |= 0x80;
            match names.get(&name) {
                Some((addr, ttl)) => {
                    reply[7] = 1;
                    reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
                    reply.extend_from_slice(&ttl.to_be_bytes());
                    reply.extend_from_slice(&[0, 4]);
                    reply.extend_from_slice(&addr.octets());
                }
                None => reply[3] |= 3,
            }
            let _ = socket.send_to(&reply, peer);
        }
    });
    (local, asked)
}
