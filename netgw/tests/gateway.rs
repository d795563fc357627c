//! The gateway binary against a simulated guest and real servers on the host's loopback:
//! each test starts `boxlite-netgw` as the shim does (config on stdin, fds 3, 4, 5..) with
//! its seccomp policy on, unless the test is about turning it off.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream, UdpSocket};
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use boxlite_vmspec::network::{EgressPolicy, GatewayLimits, GATEWAY_ADDR};
use common::*;

/// How long a test waits to be sure that no answer comes.
const SILENCE: Duration = Duration::from_millis(700);

#[test]
fn the_gateway_address_reaches_the_host_loopback_only_when_the_policy_allows_it() {
    let echo = tcp_echo("127.0.0.1:0");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();

    let (gw, link) = start(config(outbound(true)), vec![]);
    let mut guest = Guest::new(link);
    let message = b"through the gateway, and back".repeat(10000);
    assert_eq!(guest.echo_round_trip(gateway(echo.port()), &message).unwrap(), message);
    // A port nobody listens on: the host refuses, so the guest's connection is reset.
    assert_eq!(guest.connect(gateway(closed.port())).unwrap_err(), "reset");
    let stats = gw.stats_until("one connection and its bytes", |s| s.bytes_in == message.len() as u64);
    assert_eq!((stats.tcp_connections, stats.bytes_out, stats.denied), (1, message.len() as u64, 0), "{stats:?}");

    let (gw, link) = start(config(outbound(false)), vec![]);
    let mut guest = Guest::new(link);
    assert_eq!(guest.connect(gateway(echo.port())).unwrap_err(), "reset");
    // 127.0.0.1 itself is never a destination.
    assert_eq!(guest.connect(SocketAddrV4::new(Ipv4Addr::LOCALHOST, echo.port())).map_err(|e| e.to_string()), Err("reset".into()));
    let stats = gw.stats_until("two denied connections", |s| s.denied == 2);
    assert_eq!(stats.tcp_connections, 0);
}

#[test]
fn an_allow_list_opens_the_ruled_port_and_resets_another_on_the_same_host() {
    let allowed = tcp_echo("127.0.0.1:0");
    let other = tcp_echo("127.0.0.1:0");
    let udp_other = udp_echo("127.0.0.1:0");
    let rule = format!("10.0.2.2:{}", allowed.port());
    let (gw, link) = start(config(allow_list(&[&rule])), vec![]);
    let mut guest = Guest::new(link);
    assert_eq!(guest.echo_round_trip(gateway(allowed.port()), b"allowed").unwrap(), b"allowed");
    assert_eq!(guest.connect(gateway(other.port())).unwrap_err(), "reset");
    // Nor does UDP get to another port: the datagram is dropped and counted.
    let h = guest.udp_bind(5000);
    guest.udp_send(h, gateway(udp_other.port()), b"let me out");
    assert_eq!(guest.udp_recv(h, SILENCE), None);
    let stats = gw.stats_until("the denied SYN and datagram", |s| s.denied == 2);
    assert_eq!((stats.tcp_connections, stats.udp_flows), (1, 0));
}

#[test]
fn udp_flows_carry_datagrams_both_ways() {
    let echo = udp_echo("127.0.0.1:0");
    let (gw, link) = start(config(outbound(true)), vec![]);
    let mut guest = Guest::new(link);
    let h = guest.udp_bind(6000);
    for message in [&b"first"[..], &[0xa5; 1400][..]] {
        guest.udp_send(h, gateway(echo.port()), message);
        let (reply, from) = guest.udp_recv(h, STEP).expect("an echo");
        assert_eq!((&reply[..], from), (message, gateway(echo.port())));
    }
    // Another guest port is another flow.
    let h2 = guest.udp_bind(6001);
    guest.udp_send(h2, gateway(echo.port()), b"second flow");
    assert_eq!(guest.udp_recv(h2, STEP).unwrap().0, b"second flow");
    let stats = gw.stats_until("two flows", |s| s.udp_flows == 2 && s.bytes_in == 1416);
    assert_eq!(stats.bytes_out, 1416);
}

#[test]
fn udp_flows_are_bounded_and_close_when_idle() {
    let echo = udp_echo("127.0.0.1:0");
    let mut cfg = config(outbound(true));
    cfg.limits = GatewayLimits { max_udp_flows: 1, udp_idle_timeout_ms: 300, ..GatewayLimits::default() };
    let (gw, link) = start(cfg, vec![]);
    let mut guest = Guest::new(link);
    let (a, b) = (guest.udp_bind(7000), guest.udp_bind(7001));
    guest.udp_send(a, gateway(echo.port()), b"one");
    assert!(guest.udp_recv(a, STEP).is_some());
    guest.udp_send(b, gateway(echo.port()), b"two");
    assert_eq!(guest.udp_recv(b, SILENCE), None, "a second flow is past max_udp_flows");
    gw.stats_until("the refused flow", |s| s.denied == 1);
    // Once the first is idle long enough, there is room again.
    std::thread::sleep(Duration::from_millis(1200));
    guest.udp_send(b, gateway(echo.port()), b"two again");
    assert_eq!(guest.udp_recv(b, STEP).unwrap().0, b"two again");
}

#[test]
fn dns_is_forwarded_under_outbound_and_refused_under_deny_all() {
    let (server, asked) = dns_server("127.0.0.1:0", &[("example.test", Ipv4Addr::new(192, 0, 2, 10), 60)]);
    // The first upstream (IPv6) has nobody listening: the next one is asked.
    let silent = UdpSocket::bind("[::1]:0").unwrap().local_addr().unwrap();
    let mut cfg = config(outbound(false));
    cfg.dns_upstreams = vec![silent, server];
    let (gw, link) = start(cfg.clone(), vec![]);
    let mut guest = Guest::new(link);
    assert_eq!(guest.resolve(gateway(53), "example.test", STEP), Some((0, vec![Ipv4Addr::new(192, 0, 2, 10)])));
    assert_eq!(guest.resolve(gateway(53), "nowhere.test", STEP), Some((3, vec![])), "the upstream's NXDOMAIN passes through");
    gw.stats_until("two queries", |s| s.dns_queries == 2 && s.dns_denied == 0);

    cfg.egress = EgressPolicy::DenyAll;
    let (gw, link) = start(cfg, vec![]);
    let mut guest = Guest::new(link);
    assert_eq!(guest.resolve(gateway(53), "example.test", STEP), Some((5, vec![])), "REFUSED");
    gw.stats_until("the refused query", |s| s.dns_queries == 1 && s.dns_denied == 1);
    assert_eq!(asked.lock().unwrap().as_slice(), ["example.test", "nowhere.test"], "DenyAll asked no upstream");
}

#[test]
fn an_allow_list_resolves_its_names_only_and_a_resolver_of_the_guests_choice_is_just_egress() {
    let (server, asked) = dns_server(
        "127.0.0.1:0",
        &[("www.allowed.test", Ipv4Addr::new(192, 0, 2, 20), 60), ("denied.test", Ipv4Addr::new(192, 0, 2, 21), 60)],
    );
    let mut cfg = config(allow_list(&["*.allowed.test:443"]));
    cfg.dns_upstreams = vec![server];
    let (gw, link) = start(cfg, vec![]);
    let mut guest = Guest::new(link);
    assert_eq!(guest.resolve(gateway(53), "WWW.Allowed.Test", STEP), Some((0, vec![Ipv4Addr::new(192, 0, 2, 20)])));
    assert_eq!(guest.resolve(gateway(53), "denied.test", STEP), Some((3, vec![])), "NXDOMAIN");
    // The test server itself, asked directly through the gateway's address: not allowed.
    assert_eq!(guest.resolve(gateway(server.port()), "denied.test", SILENCE), None);
    let stats = gw.stats_until("the queries", |s| s.dns_queries == 2 && s.dns_denied == 1 && s.denied == 1);
    assert_eq!(stats.udp_flows, 0);
    assert_eq!(asked.lock().unwrap().as_slice(), ["www.allowed.test"], "only the allowed name reached the upstream");
}

#[test]
fn a_tcp_forward_reaches_a_guest_listener_under_deny_all() {
    let (forward, host_addr) = tcp_forward(8080);
    let (unserved, unserved_addr) = tcp_forward(8081);
    let (gw, link) = start(config(EgressPolicy::DenyAll), vec![forward, unserved]);
    let mut guest = Guest::new(link);
    let listener = guest.listen(8080);
    let client = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(host_addr).unwrap();
        stream.set_read_timeout(Some(STEP)).unwrap();
        stream.write_all(b"hello guest").unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).unwrap();
        reply
    });
    guest.accept(listener);
    let request = guest.read_to_end(listener);
    assert_eq!(request, b"hello guest");
    let remote = guest.tcp(listener).remote_endpoint().unwrap();
    assert_eq!(remote.addr, smoltcp::wire::IpAddress::Ipv4(GATEWAY_ADDR), "forwarded connections come from the gateway");
    guest.send_all(listener, b"hello host");
    guest.tcp(listener).close();
    guest.until("the client to finish", |_| client.is_finished().then_some(()));
    assert_eq!(client.join().unwrap(), b"hello host");

    // Nobody listens on the guest's 8081: the host client's connection ends at once.
    let mut stream = TcpStream::connect(unserved_addr).unwrap();
    stream.set_read_timeout(Some(STEP)).unwrap();
    let reader = std::thread::spawn(move || stream.read(&mut [0u8; 16]).map_err(|e| e.kind()));
    guest.until("the refused forward to end", |_| reader.is_finished().then_some(()));
    assert!(matches!(reader.join().unwrap(), Ok(0) | Err(std::io::ErrorKind::ConnectionReset)));
    let stats = gw.stats_until("the forwarded connections", |s| s.forwarded_connections == 2 && s.bytes_in == 11);
    assert_eq!((stats.bytes_out, stats.tcp_connections), (10, 0));
}

#[test]
fn a_udp_forward_maps_each_peer_to_a_gateway_port() {
    // Bound on IPv6, as a forward may be.
    let (forward, host_addr) = udp_forward("[::1]:0", 5353);
    let (gw, link) = start(config(EgressPolicy::DenyAll), vec![forward]);
    let mut guest = Guest::new(link);
    let h = guest.udp_bind(5353);
    let peers: Vec<UdpSocket> = (0..2).map(|_| UdpSocket::bind("[::1]:0").unwrap()).collect();
    let mut gateway_ports = Vec::new();
    for (i, peer) in peers.iter().enumerate() {
        peer.set_nonblocking(true).unwrap();
        peer.send_to(format!("query {i}").as_bytes(), host_addr).unwrap();
        let (data, from) = guest.udp_recv(h, STEP).expect("the forwarded datagram");
        assert_eq!(data, format!("query {i}").as_bytes());
        assert_eq!(*from.ip(), GATEWAY_ADDR);
        gateway_ports.push(from.port());
        guest.udp_send(h, from, format!("answer {i}").as_bytes());
        let mut buf = [0u8; 64];
        let (n, source) = guest.until("the guest's answer", |_| peer.recv_from(&mut buf).ok());
        assert_eq!((&buf[..n], source), (format!("answer {i}").as_bytes(), host_addr));
    }
    assert_ne!(gateway_ports[0], gateway_ports[1], "two peers, two gateway ports");
    gw.stats_until("two forwarded flows", |s| s.udp_flows == 2 && s.bytes_in == 14 && s.bytes_out == 16);
}

#[test]
fn max_tcp_connections_resets_the_next_syn() {
    let echo = tcp_echo("127.0.0.1:0");
    let mut cfg = config(outbound(true));
    cfg.limits.max_tcp_connections = 1;
    let (gw, link) = start(cfg, vec![]);
    let mut guest = Guest::new(link);
    let first = guest.connect(gateway(echo.port())).unwrap();
    assert_eq!(guest.connect(gateway(echo.port())).unwrap_err(), "reset");
    gw.stats_until("the refused SYN", |s| s.denied == 1 && s.tcp_connections == 1);
    // Once the first is closed (and the guest's last ACK, which smoltcp delays, is out),
    // there is room again, and again: finished connections go.
    guest.tcp(first).close();
    guest.read_to_end(first);
    for i in 0..3 {
        guest.idle(Duration::from_millis(50));
        let echoed = guest.echo_round_trip(gateway(echo.port()), b"again");
        assert_eq!(echoed, Ok(b"again".to_vec()), "round trip {i}; {:?}", gw.stats());
    }
    gw.stats_until("four connections", |s| s.tcp_connections == 4 && s.denied == 1);
}

#[test]
fn a_reset_from_the_host_resets_the_guests_connection() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut request = [0u8; 5];
        (&stream).read_exact(&mut request).unwrap();
        // Linger 0: close sends RST, not FIN.
        socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO)).unwrap();
        request
    });
    let (_gw, link) = start(config(outbound(true)), vec![]);
    let mut guest = Guest::new(link);
    let h = guest.connect(gateway(port)).unwrap();
    guest.send_all(h, b"reset");
    let state = guest.until("the reset", |g| match g.tcp(h).state() {
        smoltcp::socket::tcp::State::Established => None,
        state => Some(state),
    });
    assert_eq!(state, smoltcp::socket::tcp::State::Closed, "a reset, not a FIN (CloseWait)");
    assert_eq!(&server.join().unwrap(), b"reset");
}

#[test]
fn a_bad_frame_length_ends_the_gateway_with_an_error() {
    for len in [0u32, 65535 + 14 + 1] {
        let (mut gw, mut link) = start(config(outbound(false)), vec![]);
        link.write_all(&len.to_be_bytes()).unwrap();
        let status = gw.wait();
        assert_eq!(status.code(), Some(1), "length {len}: {status:?}; stderr: {}", gw.stderr());
        assert!(gw.stderr().contains(&format!("frame protocol on fd 3: a frame of {len} bytes")), "{}", gw.stderr());
    }
}

#[test]
fn eof_on_the_frame_socket_ends_the_gateway_cleanly_with_final_stats() {
    let echo = udp_echo("127.0.0.1:0");
    let (mut gw, link) = start(config(outbound(true)), vec![]);
    let mut guest = Guest::new(link);
    let h = guest.udp_bind(9000);
    guest.udp_send(h, gateway(echo.port()), b"last words");
    assert!(guest.udp_recv(h, STEP).is_some());
    drop(guest);
    let status = gw.wait();
    assert_eq!(status.code(), Some(0), "{status:?}; stderr: {}", gw.stderr());
    // Written at exit, whatever the 500 ms schedule says.
    let stats = gw.stats();
    assert_eq!((stats.udp_flows, stats.bytes_out, stats.bytes_in), (1, 10, 10));
    assert!(gw.stderr().contains("the VM closed its frame socket"), "{}", gw.stderr());
}

#[test]
fn unusable_config_or_descriptors_fail_the_start_with_exit_2() {
    let (_, gateway_end) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut gw = start_raw(b"{\"egress\": 7}\n", gateway_end.into(), vec![]);
    assert_eq!(gw.wait().code(), Some(2));
    assert!(gw.stderr().contains("not a GatewayConfig"), "{}", gw.stderr());

    // A datagram socket where the frame stream belongs.
    let datagram: OwnedFd = UdpSocket::bind("127.0.0.1:0").unwrap().into();
    let line = serde_json::to_vec(&config(EgressPolicy::DenyAll)).unwrap();
    let mut gw = start_raw(&line, datagram, vec![]);
    assert_eq!(gw.wait().code(), Some(2));
    assert!(gw.stderr().contains("descriptor 3 (the VMM's frame socket)"), "{}", gw.stderr());

    // A forward the config names but the shim did not pass.
    let mut cfg = config(EgressPolicy::DenyAll);
    cfg.forwards = vec![boxlite_vmspec::network::ForwardTarget { protocol: boxlite_vmspec::network::Protocol::Tcp, guest_port: 80 }];
    let (_, gateway_end) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut gw = start_raw(&serde_json::to_vec(&cfg).unwrap(), gateway_end.into(), vec![]);
    assert_eq!(gw.wait().code(), Some(2));
    assert!(gw.stderr().contains("fd 5 is not open"), "{}", gw.stderr());
}

#[test]
fn seccomp_is_on_unless_the_config_turns_it_off() {
    if std::env::var_os(TRACE_ENV).is_some() {
        eprintln!("not checked while tracing: the pid seen is strace's");
        return;
    }
    let echo = udp_echo("127.0.0.1:0");
    for seccomp in [true, false] {
        let mut cfg = config(outbound(true));
        cfg.seccomp = seccomp;
        let (mut gw, link) = start(cfg, vec![]);
        let mut guest = Guest::new(link);
        // Serving (so the policy is in place), then its mode.
        let h = guest.udp_bind(9100);
        guest.udp_send(h, gateway(echo.port()), b"ping");
        assert!(guest.udp_recv(h, STEP).is_some());
        assert_eq!(gw.seccomp_mode(), if seccomp { 2 } else { 0 });
        drop(guest);
        let status = gw.wait();
        assert_eq!(status.code(), Some(0), "seccomp {seccomp}: {status:?} (signal {:?}); stderr: {}", status.signal(), gw.stderr());
    }
}

#[test]
fn hostile_frames_leave_the_gateway_serving() {
    let echo = udp_echo("127.0.0.1:0");
    let (mut gw, mut link) = start(config(outbound(true)), vec![]);
    // A fixed-seed generator: the same frames every run.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let header = |frame: &mut Vec<u8>, ethertype: [u8; 2]| {
        frame.extend_from_slice(&boxlite_vmspec::network::GATEWAY_MAC);
        frame.extend_from_slice(&boxlite_vmspec::network::GUEST_MAC);
        frame.extend_from_slice(&ethertype);
    };
    let mut stream = Vec::new();
    for i in 0..3000 {
        let len = 1 + (next() % 1600) as usize;
        let mut frame = Vec::with_capacity(len + 14);
        match i % 4 {
            // Random bytes; IPv4 with random headers; ARP with random bodies; IPv4 from the
            // guest's address with a valid-looking start and random rest.
            0 => {}
            1 => header(&mut frame, [0x08, 0x00]),
            2 => header(&mut frame, [0x08, 0x06]),
            _ => {
                header(&mut frame, [0x08, 0x00]);
                frame.extend_from_slice(&[0x45, 0, (len >> 8) as u8, len as u8, 0, 0, 0x40, 0, 64, [6, 17][i % 2], 0, 0, 10, 0, 2, 15]);
            }
        }
        while frame.len() < len {
            frame.push(next() as u8);
        }
        frame.truncate(len.max(1));
        stream.extend_from_slice(&(frame.len() as u32).to_be_bytes());
        stream.extend_from_slice(&frame);
    }
    link.write_all(&stream).unwrap();
    let mut guest = Guest::new(link);
    let h = guest.udp_bind(9200);
    guest.udp_send(h, gateway(echo.port()), b"still there?");
    assert_eq!(guest.udp_recv(h, STEP).map(|(d, _)| d), Some(b"still there?".to_vec()), "stderr: {}", gw.stderr());
    assert!(gw.child.try_wait().unwrap().is_none());
}
