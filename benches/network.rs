//! Network benchmark (a harness, not a test), qemu engine, one Python box (the image
//! scripts/build-python-image.sh builds) in network mode outbound with one TCP forward:
//!   - guest -> host TCP throughput through the gateway: a program in the box connects to a
//!     server on the host's own address and writes BOXLITE_BENCH_NET_BYTES (default 64 MB);
//!   - the same bytes guest -> host through a forwarded port (the host connects in, the box
//!     writes);
//!   - beside both, host-local TCP over 127.0.0.1 (1 GB);
//!   - connection setup through the gateway (connect() from the box to the host), p50 and
//!     p99 over BOXLITE_BENCH_NET_CONNECTS (default 200), beside connect() on the host.
//!
//! Ratios are printed side by side, then everything as one JSON line. scripts/bench.sh runs it.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::time::Instant;

use boxlite::runtime::network::{NetworkOptions, PortForward, Protocol};
use boxlite::{BoxOptions, BoxliteRuntime, EngineChoice, ExecCommand, RuntimeOptions};

const GUEST: &str = r#"
import json, socket, sys, time
mode, bytes_total = sys.argv[1], int(sys.argv[2])
block = b"\0" * (1 << 20)
def send_all(sock):
    left = bytes_total
    while left > 0:
        n = min(left, len(block)); sock.sendall(block[:n]); left -= n
    sock.shutdown(socket.SHUT_WR); sock.recv(1); sock.close()
if mode == "out":
    send_all(socket.create_connection((sys.argv[3], int(sys.argv[4]))))
elif mode == "serve":
    server = socket.socket(); server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", 5001)); server.listen(1); print("listening", flush=True)
    conn, _ = server.accept(); send_all(conn)
else:
    times = []
    for _ in range(int(sys.argv[5])):
        started = time.perf_counter(); s = socket.create_connection((sys.argv[3], int(sys.argv[4])))
        times.append((time.perf_counter() - started) * 1e3); s.close()
    print(json.dumps(times))
"#;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default).max(1)
}

/// Reads a stream to EOF, then answers one byte (the writer waits for it before it closes,
/// so that its last bytes are known to have arrived). Returns the bytes read.
fn drain(stream: &mut TcpStream) -> usize {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
    let _ = stream.write_all(b"k");
    total
}

fn host_ipv4() -> Ipv4Addr {
    let out = std::process::Command::new("ip").args(["-4", "-o", "addr", "show", "scope", "global"]).output().expect("run ip addr");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().skip_while(|w| *w != "inet").nth(1).and_then(|c| c.split('/').next()?.parse().ok()).unwrap_or_else(|| {
        eprintln!("this host has no global IPv4 address for the box to reach it by");
        std::process::exit(1)
    })
}

fn main() {
    let bytes = env_or("BOXLITE_BENCH_NET_BYTES", 64_000_000);
    let connects = env_or("BOXLITE_BENCH_NET_CONNECTS", 200);
    let layout = boxlite::runtime::helpers::cache_dir().join("test-images/python");
    if !layout.join("index.json").is_file() {
        eprintln!("{} is missing: run scripts/build-python-image.sh", layout.display());
        std::process::exit(1);
    }
    let host = host_ipv4();
    let sink = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind the host sink");
    let sink_port = sink.local_addr().unwrap().port();

    let runtime = tokio::runtime::Runtime::new().expect("starting the async runtime");
    let home = std::env::temp_dir().join(format!("boxlite-bench-net-{}", std::process::id()));
    let result = runtime.block_on(async {
        let rt = BoxliteRuntime::new(RuntimeOptions { home: Some(home.clone()), engine: EngineChoice::Qemu, ..Default::default() })?;
        rt.images().import_layout(&layout, Some("3"), "localhost/boxlite/python:3")?;
        let network = NetworkOptions { port_forwards: vec![PortForward::parse("0:5001").unwrap()], ..Default::default() };
        let lite =
            rt.create_box(BoxOptions { image: Some("localhost/boxlite/python:3".into()), memory_mib: 512, network, ..Default::default() })?;
        let py = |args: Vec<String>| ExecCommand::new("python3").args([String::from("-c"), GUEST.to_string()].into_iter().chain(args));
        lite.exec_output(ExecCommand::new("true")).await?; // boot

        // Guest -> host through the gateway.
        let accept = std::thread::spawn(move || {
            let (mut stream, _) = sink.accept().expect("accept");
            let started = Instant::now();
            let n = drain(&mut stream);
            (n, started.elapsed().as_secs_f64(), sink)
        });
        let out = lite.exec_output(py(vec!["out".into(), bytes.to_string(), host.to_string(), sink_port.to_string()])).await?;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let (received, gateway_seconds, sink) = accept.join().unwrap();
        assert_eq!(received, bytes);

        // Guest -> host through the forwarded port.
        let forward = lite.forwarded_ports().await?.into_iter().find(|f| f.protocol == Protocol::Tcp).expect("the forward");
        let mut server = lite.exec(py(vec!["serve".into(), bytes.to_string()])).await?;
        let mut stdout = server.take_stdout().expect("stdout");
        let _ = stdout.next_chunk().await; // "listening"
        let started = Instant::now();
        let mut stream = TcpStream::connect(("127.0.0.1", forward.host_port)).expect("connect to the forward");
        let received = drain(&mut stream);
        let forward_seconds = started.elapsed().as_secs_f64();
        assert_eq!(received, bytes);
        server.wait().await?;

        // Connection setup from the box to the host.
        let acceptor = std::thread::spawn(move || {
            for stream in sink.incoming().take(connects) {
                drop(stream);
            }
        });
        let out =
            lite.exec_output(py(vec!["connect".into(), "0".into(), host.to_string(), sink_port.to_string(), connects.to_string()])).await?;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        acceptor.join().unwrap();
        let connect_ms: Vec<f64> = serde_json::from_slice(&out.stdout).expect("the box's timings");
        lite.stop().await?;
        Ok::<_, boxlite::Error>((gateway_seconds, forward_seconds, connect_ms))
    });
    let _ = std::fs::remove_dir_all(&home);
    let (gateway_seconds, forward_seconds, mut box_connect_ms) = result.unwrap_or_else(|e| {
        eprintln!("network benchmark failed: {e}");
        std::process::exit(1)
    });

    // The host's own figures.
    let local_bytes = 1usize << 30;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let writer = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let block = vec![0u8; 1 << 20];
        for _ in 0..local_bytes >> 20 {
            stream.write_all(&block).unwrap();
        }
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let _ = stream.read(&mut [0u8; 1]);
    });
    let (mut stream, _) = listener.accept().unwrap();
    let started = Instant::now();
    assert_eq!(drain(&mut stream), local_bytes);
    let local_seconds = started.elapsed().as_secs_f64();
    writer.join().unwrap();
    let acceptor = std::thread::spawn(move || {
        for stream in listener.incoming().take(connects) {
            drop(stream);
        }
    });
    let mut host_connect_ms: Vec<f64> = (0..connects)
        .map(|_| {
            let started = Instant::now();
            let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
            let ms = started.elapsed().as_secs_f64() * 1e3;
            drop(stream);
            ms
        })
        .collect();
    acceptor.join().unwrap();

    box_connect_ms.sort_by(f64::total_cmp);
    host_connect_ms.sort_by(f64::total_cmp);
    let mbs = |n: usize, s: f64| n as f64 / 1e6 / s;
    let (gateway_mbs, forward_mbs, local_mbs) = (mbs(bytes, gateway_seconds), mbs(bytes, forward_seconds), mbs(local_bytes, local_seconds));
    let (b50, b99) = (percentile(&box_connect_ms, 50.0), percentile(&box_connect_ms, 99.0));
    let (h50, h99) = (percentile(&host_connect_ms, 50.0), percentile(&host_connect_ms, 99.0));
    println!("\nnetwork benchmark: qemu engine (TCG), {bytes} bytes guest -> host, {connects} connects\n");
    println!("{:<44}{:>12}{:>12}{:>10}", "metric", "box", "host lo", "box/host");
    println!("{:<44}{:>12.1}{:>12.1}{:>10.3}", "TCP guest -> host via the gateway (MB/s)", gateway_mbs, local_mbs, gateway_mbs / local_mbs);
    println!("{:<44}{:>12.1}{:>12.1}{:>10.3}", "TCP guest -> host via a forward (MB/s)", forward_mbs, local_mbs, forward_mbs / local_mbs);
    println!("{:<44}{:>12.3}{:>12.3}{:>10.1}", "connect() through the gateway p50 (ms)", b50, h50, b50 / h50);
    println!("{:<44}{:>12.3}{:>12.3}{:>10.1}", "connect() through the gateway p99 (ms)", b99, h99, b99 / h99);
    println!(
        "\n{}",
        serde_json::json!({
            "tcp_mb_per_s": { "gateway": gateway_mbs, "forward": forward_mbs, "host_loopback": local_mbs, "box_bytes": bytes, "host_bytes": local_bytes },
            "connect_ms": { "box_p50": b50, "box_p99": b99, "host_p50": h50, "host_p99": h99, "runs": connects },
        })
    );
}
