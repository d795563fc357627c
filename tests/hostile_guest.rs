//! The guest is untrusted: a fake agent on a unix socket answers with frames no honest
//! agent sends, and the host must turn each into an error, without allocating what the
//! frame claims and without hanging past its deadline.

use std::time::{Duration, Instant};

use boxlite::runtime::agent::AgentClient;
use boxlite::runtime::spec::HostToGuestEndpoint;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

const RESPONSE: u8 = 2;

/// Serves one connection: reads one request frame, answers `header(len, stream, type)` and
/// `body`, then keeps the connection open.
async fn fake_agent(name: &str, announced_len: u32, body: Vec<u8>) -> HostToGuestEndpoint {
    let socket = std::env::temp_dir().join(format!("boxlite-hostile-{}-{name}.sock", std::process::id()));
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).unwrap();
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut header = [0u8; 10];
        conn.read_exact(&mut header).await.unwrap();
        let request_len = u32::from_be_bytes(header[0..4].try_into().unwrap()) as usize;
        let mut request = vec![0u8; request_len];
        conn.read_exact(&mut request).await.unwrap();
        let mut reply = announced_len.to_be_bytes().to_vec();
        reply.extend_from_slice(&header[4..8]); // same stream id
        reply.extend_from_slice(&[RESPONSE, 0]);
        reply.extend_from_slice(&body);
        conn.write_all(&reply).await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(conn);
    });
    HostToGuestEndpoint { socket, connect_line: None }
}

fn rss_mib() -> f64 {
    boxlite::runtime::vm::rss_kib(std::process::id()).unwrap() as f64 / 1024.0
}

#[tokio::test]
async fn a_frame_announcing_a_gigabyte_is_an_error_not_an_allocation() {
    let endpoint = fake_agent("oversize", 1 << 30, vec![0xAB; 64 * 1024]).await;
    let client = AgentClient::connect(&endpoint, Duration::from_secs(2)).await.unwrap();
    let before = rss_mib();
    let started = Instant::now();
    let result = client.ping(Duration::from_secs(2)).await;
    let grew = rss_mib() - before;
    let _ = std::fs::remove_file(&endpoint.socket);
    let error = result.expect_err("a 1 GiB frame must not be accepted");
    eprintln!("error after {:?}: {error}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(4), "the call outlived its deadline");
    assert!(grew < 64.0, "RSS grew {grew:.1} MiB for a frame that claimed 1 GiB");
}

#[tokio::test]
async fn a_garbled_response_is_an_error() {
    let garbage = vec![0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 0x01, 0x02];
    let endpoint = fake_agent("garbled", garbage.len() as u32, garbage).await;
    let client = AgentClient::connect(&endpoint, Duration::from_secs(2)).await.unwrap();
    let result = client.ping(Duration::from_secs(2)).await;
    let _ = std::fs::remove_file(&endpoint.socket);
    let error = result.expect_err("garbage must not decode as a PingResponse");
    eprintln!("error: {error}");
}

#[tokio::test]
async fn a_vsock_backend_that_answers_nonsense_to_connect_is_refused() {
    let socket = std::env::temp_dir().join(format!("boxlite-hostile-{}-handshake.sock", std::process::id()));
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).unwrap();
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        // An endless line: the handshake reader must stop at its bound.
        let _ = conn.write_all(&vec![b'x'; 1 << 20]).await;
    });
    let endpoint = HostToGuestEndpoint { socket: socket.clone(), connect_line: Some("CONNECT 1024\n".into()) };
    let error = match AgentClient::connect(&endpoint, Duration::from_secs(2)).await {
        Ok(_) => panic!("a backend that never says OK must not yield a client"),
        Err(e) => e,
    };
    let _ = std::fs::remove_file(&socket);
    assert!(error.contains("longer than 64 bytes"), "{error}");
}
