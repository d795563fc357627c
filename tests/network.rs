//! Networking through the per-box gateway (docs/network.md), with real VMs and real servers
//! on the host: outbound NAT and DNS, the allow-list and attempts to get around it from
//! inside, TCP and UDP port forwards, and the gateway's jail and lifetime.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream, UdpSocket};
use std::time::Duration;

use boxlite::runtime::network::{AllowRule, NetworkMode, NetworkOptions, NetworkStats, PortForward, Protocol};
use boxlite::{BoxOptions, EngineChoice, ExecCommand, Vm};
use common::net::{host_ipv4, DnsServer, HttpServer};
use common::{busybox_root, wait_gone, RunDir};

/// Boots the busybox root with the given network.
async fn boot_with(dir: &RunDir, network: NetworkOptions) -> Vm {
    let mut options = dir.options(EngineChoice::Qemu);
    options.root_disk = Some(busybox_root());
    options.network = network;
    match Vm::boot(options).await {
        Ok(vm) => vm,
        Err(e) => panic!("boot failed: {e}"),
    }
}

/// Polls `read` for up to 3 s until `done` holds; the last value read.
async fn settled<T>(read: impl Fn() -> Option<T>, done: impl Fn(&T) -> bool) -> Option<T> {
    let mut last = None;
    for _ in 0..30 {
        last = read();
        if last.as_ref().is_some_and(&done) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}

/// Runs a shell script in the box: (exit code, stdout, stderr).
async fn sh(vm: &Vm, script: &str) -> (i32, String, String) {
    let out = vm.exec_output(ExecCommand::new("sh").args(["-c", script])).await.expect("exec sh");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let code = out.status.code.unwrap_or_else(|| 128 + out.status.signal.unwrap_or(0));
    (code, text(&out.stdout), text(&out.stderr))
}

/// A fetch: wget's exit code (bounded by a timeout), the body, and its messages.
async fn fetch(vm: &Vm, url: &str) -> (i32, String, String) {
    // (busybox 1.35's `wget -T` crashes on a host name: the timeout comes from `timeout`.)
    sh(vm, &format!("timeout 10 wget -q -O - {url} 2>&1")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_reaches_the_host_and_resolves_names() {
    let host = host_ipv4();
    let web = HttpServer::start(Ipv4Addr::UNSPECIFIED);
    let dns = DnsServer::start(Ipv4Addr::LOCALHOST, &[("web.boxlite.test", host)]);
    let dir = RunDir::new("net-outbound");
    let network = NetworkOptions { dns_servers: vec![dns.addr], ..Default::default() };
    let vm = boot_with(&dir, network).await;

    let (_, links, _) = sh(&vm, "ip -o link show").await;
    let names: Vec<&str> = links.lines().filter_map(|l| l.split(": ").nth(1)).collect();
    assert_eq!(names, ["lo", "eth0"], "{links}");
    assert!(links.lines().all(|l| l.contains(",UP")), "a device is down: {links}");
    let (_, addr, _) = sh(&vm, "ip -o -4 addr show dev eth0").await;
    assert!(addr.contains("inet 10.0.2.15/24"), "{addr}");
    let (_, routes, _) = sh(&vm, "ip route").await;
    assert!(routes.contains("default via 10.0.2.2 dev eth0"), "{routes}");
    let (_, resolv, _) = sh(&vm, "cat /etc/resolv.conf").await;
    assert!(resolv.lines().any(|l| l.trim() == "nameserver 10.0.2.2"), "{resolv}");

    // The name resolves through the gateway's DNS, which asks the test's server.
    let (code, looked_up, err) = sh(&vm, "nslookup web.boxlite.test").await;
    assert!(code == 0 && looked_up.contains(&host.to_string()), "nslookup: {code} {looked_up} {err}");
    assert!(dns.asked().iter().any(|n| n == "web.boxlite.test"), "the upstream never saw the query: {:?}", dns.asked());
    // Plain outbound NAT to the host's own address, by name.
    let (code, body, err) = fetch(&vm, &format!("http://web.boxlite.test:{}/", web.port)).await;
    assert_eq!((code, body.as_str()), (0, format!("served-by-{}\n", web.port).as_str()), "{err}");
    // The host's loopback is not reachable through the gateway unless asked for.
    let (code, _, _) = fetch(&vm, &format!("http://10.0.2.2:{}/", web.port)).await;
    assert_ne!(code, 0, "the host's loopback was reachable without allow_host_loopback");
    // Nor is the link-local range (cloud metadata services live there).
    let (code, _, _) = fetch(&vm, "http://169.254.169.254/").await;
    assert_ne!(code, 0, "169.254.169.254 was reachable");

    // The gateway rewrites its figures at most twice a second.
    let counted = |s: &NetworkStats| s.tcp_connections >= 1 && s.bytes_in > 0 && s.bytes_out > 0 && s.dns_queries >= 1 && s.denied >= 2;
    let stats = settled(|| vm.network_stats(), counted).await;
    assert!(stats.as_ref().is_some_and(counted), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_list_allows_only_its_rules_and_cannot_be_bypassed_from_inside() {
    let host = host_ipv4();
    let allowed = HttpServer::start(Ipv4Addr::UNSPECIFIED);
    let other = HttpServer::start(Ipv4Addr::UNSPECIFIED);
    let zone = [("allowed.boxlite.test", host), ("denied.boxlite.test", host)];
    let dns = DnsServer::start(Ipv4Addr::UNSPECIFIED, &zone);
    let rules = [format!("allowed.boxlite.test:{}", allowed.port), format!("10.0.2.2:{}", allowed.port)];
    let network = NetworkOptions {
        dns_servers: vec![format!("127.0.0.1:{}", dns.addr.port()).parse().unwrap()],
        ..NetworkOptions::allow_list(rules.iter().map(|r| AllowRule::parse(r).unwrap()).collect())
    };
    let dir = RunDir::new("net-allow");
    let vm = boot_with(&dir, network).await;

    let (code, looked_up, err) = sh(&vm, "nslookup allowed.boxlite.test").await;
    assert!(code == 0 && looked_up.contains(&host.to_string()), "nslookup allowed: {code} {looked_up} {err}");
    let ok = format!("served-by-{}\n", allowed.port);
    let (code, body, err) = fetch(&vm, &format!("http://allowed.boxlite.test:{}/", allowed.port)).await;
    assert_eq!((code, body.as_str()), (0, ok.as_str()), "the allowed host:port: {err}");
    // The same host on another port, and another name for the same host: refused.
    let (code, _, _) = fetch(&vm, &format!("http://{host}:{}/", other.port)).await;
    assert_ne!(code, 0, "another port of an allowed host was reachable");
    let (code, _, _) = sh(&vm, "nslookup denied.boxlite.test").await;
    assert_ne!(code, 0, "a name off the list resolved");
    assert!(!dns.asked().iter().any(|n| n == "denied.boxlite.test"), "the gateway forwarded a denied name upstream");
    // The host's loopback through an explicit rule for the gateway address.
    let (code, body, err) = fetch(&vm, &format!("http://10.0.2.2:{}/", allowed.port)).await;
    assert_eq!((code, body.as_str()), (0, ok.as_str()), "10.0.2.2 with a rule: {err}");

    // From inside: another resolver in resolv.conf, a query straight to the test's DNS
    // server, and a route that sends the host's address straight to the link. None helps.
    let direct = format!("{host}:{}", dns.addr.port());
    let (code, _, _) = sh(&vm, &format!("echo nameserver {host} > /etc/resolv.conf; nslookup denied.boxlite.test {direct}")).await;
    assert_ne!(code, 0, "a query sent around the gateway's DNS was answered");
    assert!(!dns.asked().iter().any(|n| n == "denied.boxlite.test"), "a query reached the DNS server around the policy");
    let (_, _, _) = sh(&vm, &format!("ip route add {host}/32 dev eth0; ip route replace default via 10.0.2.2 dev eth0")).await;
    let (code, _, _) = fetch(&vm, &format!("http://{host}:{}/", other.port)).await;
    assert_ne!(code, 0, "a changed route got around the policy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_mode_fetch_fails() {
    let host = host_ipv4();
    let web = HttpServer::start(Ipv4Addr::UNSPECIFIED);
    let dir = RunDir::new("net-none");
    let vm = boot_with(&dir, NetworkOptions::none()).await;
    assert!(vm.spec().network.is_none(), "mode none without forwards runs no gateway");
    let (_, links, _) = sh(&vm, "ip -o link show").await;
    assert_eq!(links.lines().count(), 1, "only lo: {links}");
    let (code, _, _) = fetch(&vm, &format!("http://{host}:{}/", web.port)).await;
    assert_ne!(code, 0, "a box without a network reached the host");
}

/// A Python box (its image has what busybox lacks: a UDP server) serving HTTP on 8000 and
/// UDP echo on 9999, reached from the host through forwards with host port 0.
const SERVE: &str = r#"
import os, socket, sys, threading, http.server
tag = sys.argv[1]
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("hello-from-" + tag + "\n").encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *args): pass
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind(("0.0.0.0", 9999))
def udp_echo():
    while True:
        data, peer = udp.recvfrom(2048); udp.sendto(tag.encode() + b":" + data, peer)
threading.Thread(target=udp_echo, daemon=True).start()
server = http.server.HTTPServer(("0.0.0.0", 8000), Handler)
print("listening", flush=True)  # both sockets are bound: the test may connect now
server.serve_forever()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_and_udp_forwards_reach_servers_in_boxes() {
    let dir = RunDir::new("net-forward");
    let rt = common::qemu_runtime_with_python(&dir);
    let forwards = vec![PortForward::parse("0:8000").unwrap(), PortForward::parse("0:9999/udp").unwrap()];
    // Forwards work in every mode: the second box has no outbound network at all.
    let modes = [NetworkMode::Outbound, NetworkMode::None];
    let mut boxes = Vec::new();
    for (i, mode) in modes.into_iter().enumerate() {
        let network = NetworkOptions { mode, port_forwards: forwards.clone(), ..Default::default() };
        let options = BoxOptions {
            name: Some(format!("web{i}")),
            image: Some(common::PYTHON_IMAGE.into()),
            memory_mib: 384,
            network,
            ..Default::default()
        };
        let lite = rt.create_box(options).unwrap();
        let mut server = lite.exec(ExecCommand::new("python3").args(["-c", SERVE, &format!("web{i}")])).await.expect("start the servers");
        // Python starts slowly under TCG on a loaded host: wait for its word, not a guess.
        let mut stdout = server.take_stdout().expect("the server's stdout");
        let mut said = Vec::new();
        while !String::from_utf8_lossy(&said).contains("listening") {
            match tokio::time::timeout(Duration::from_secs(120), stdout.next_chunk()).await {
                Ok(Some(Ok(chunk))) => said.extend(chunk),
                other => panic!("the server in web{i} never said it listens ({other:?}); said {:?}", String::from_utf8_lossy(&said)),
            }
        }
        boxes.push((lite, server));
    }
    let mut tcp_ports = Vec::new();
    for (i, (lite, _server)) in boxes.iter().enumerate() {
        let bound = lite.forwarded_ports().await.unwrap();
        assert_eq!(bound.len(), 2, "{bound:?}");
        let tcp = bound.iter().find(|b| b.protocol == Protocol::Tcp).unwrap();
        let udp = bound.iter().find(|b| b.protocol == Protocol::Udp).unwrap();
        assert!(tcp.host_port != 0 && udp.host_port != 0, "port 0 was not resolved: {bound:?}");
        assert_eq!(tcp.host_addr, Ipv4Addr::LOCALHOST, "forwards bind 127.0.0.1 unless asked otherwise");
        tcp_ports.push(tcp.host_port);
        let tag = format!("web{i}");
        let body = http_get_retrying(tcp.host_port).unwrap_or_else(|e| panic!("GET through the forward of {tag}: {e}"));
        assert!(body.ends_with(&format!("hello-from-{tag}\n")), "{body}");
        let echoed = udp_echo(udp.host_port, b"ping").unwrap_or_else(|e| panic!("UDP through the forward of {tag}: {e}"));
        assert_eq!(echoed, format!("{tag}:ping").into_bytes());
        let counted = |s: &NetworkStats| s.forwarded_connections >= 1 && s.udp_flows >= 1;
        let stats = settled(|| lite.metrics().network, counted).await;
        assert!(stats.as_ref().is_some_and(counted), "network figures of a running box: {stats:?}");
    }
    assert_ne!(tcp_ports[0], tcp_ports[1], "two boxes forwarding the same guest port share a host port");
    for (lite, server) in boxes {
        server.kill().await.ok();
        lite.stop().await.unwrap();
    }
}

/// A GET over a forward; the server in the box may still be starting, so refusals are retried.
fn http_get_retrying(port: u16) -> Result<String, String> {
    let mut last = String::new();
    for _ in 0..100 {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(mut stream) => {
                stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let _ = stream.write_all(b"GET / HTTP/1.0\r\n\r\n");
                let mut response = String::new();
                match stream.read_to_string(&mut response) {
                    Ok(_) if response.starts_with("HTTP/1.0 200") => return Ok(response),
                    Ok(_) => last = format!("answer {response:?}"),
                    Err(e) => last = e.to_string(),
                }
            }
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(last)
}

fn udp_echo(port: u16, payload: &[u8]) -> Result<Vec<u8>, String> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut buf = [0u8; 2048];
    let mut last = String::new();
    for _ in 0..40 {
        socket.send_to(payload, ("127.0.0.1", port)).map_err(|e| e.to_string())?;
        match socket.recv_from(&mut buf) {
            Ok((len, _)) => return Ok(buf[..len].to_vec()),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_is_jailed_and_dies_with_the_box() {
    let dir = RunDir::new("net-jail");
    let forward = PortForward::parse("0:80").unwrap();
    let vm = boot_with(&dir, NetworkOptions { port_forwards: vec![forward], ..Default::default() }).await;
    let record = std::fs::read(vm.spec().protections_file()).expect("protections.json");
    let protections: boxlite::Protections = serde_json::from_slice(&record).unwrap();
    assert!(protections.seccomp.iter().any(|p| p == "netgw"), "{protections:?}");
    let gateway = *vm.helper_pids().last().expect("the gateway's pid");
    let status = std::fs::read_to_string(format!("/proc/{gateway}/status")).unwrap();
    let field = |name: &str| status.lines().find(|l| l.starts_with(name)).unwrap_or_default().split_whitespace().nth(1).unwrap_or_default();
    assert_eq!(field("Seccomp:"), "2", "the gateway runs without its seccomp filter:\n{status}");
    assert_eq!(field("NoNewPrivs:"), "1", "{status}");
    let uid = boxlite::runtime::spec::JAIL_ID_BASE + gateway;
    assert_eq!(field("Uid:"), uid.to_string(), "the gateway runs as a uid of its own");
    assert_eq!(protections.network_gateway_uid, Some(uid));
    let forwarded = vm.forwarded_ports()[0];
    assert_eq!(forwarded.guest_port, 80);
    assert!(TcpStream::connect(("127.0.0.1", forwarded.host_port)).is_ok(), "the forward's host socket is not listening");

    // Idle, the gateway sleeps: no timer wakes it (it had a 500 ms maintenance tick).
    let wakeups = || -> u64 {
        let tasks = std::fs::read_dir(format!("/proc/{gateway}/task")).unwrap();
        tasks
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("status")).ok())
            .flat_map(|status| {
                status
                    .lines()
                    .filter(|l| l.contains("ctxt_switches"))
                    .map(|l| l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap())
                    .collect::<Vec<_>>()
            })
            .sum()
    };
    // The guest's own frames would wake it too, but an idle guest sends none: eth0 has no
    // IPv6 (its router solicitations went on for good, at a doubling interval). The 500 ms
    // tick made 18 wakeups in this window. 3 s first: the forward's connection above is over.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = wakeups();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let woke = wakeups() - before;
    assert!(woke <= 1, "the idle gateway woke {woke} times in 4 s");

    // kill -9 of the shim takes the gateway with it, and its port is free again.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(vm.shim_pid() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    let alive = wait_gone(&[gateway], Duration::from_secs(10));
    assert!(alive.is_empty(), "the gateway outlived its shim");
    assert!(std::net::TcpListener::bind(("127.0.0.1", forwarded.host_port)).is_ok(), "the forward's port stayed taken");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_dies_stops_its_vm() {
    let dir = RunDir::new("net-gateway-dies");
    let vm = boot_with(&dir, NetworkOptions::default()).await;
    let gateway = *vm.helper_pids().last().expect("the gateway's pid");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(gateway as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    // The shim stops the VM rather than leave a box whose network vanished.
    let alive = wait_gone(&[vm.shim_pid(), vm.vmm_pid()], Duration::from_secs(10));
    assert!(alive.is_empty(), "the VM outlived its gateway: {alive:?}");
    let log = std::fs::read_to_string(vm.spec().shim_log()).unwrap();
    assert!(log.contains("the network gateway exited; stopping the VM"), "{log}");
}
