//! A program in a box with a vsock stream of its own: the guest kernel must deliver writes
//! of any size through qemu's vsock backend (guest/kernel/build-kernel.sh, patch 5). Needs
//! the Python test image (scripts/build-python-image.sh; scripts/test.sh builds it).

mod common;

use std::time::Duration;

use boxlite::runtime::agent::open_guest_stream;
use boxlite::runtime::spec::HostToGuestEndpoint;
use boxlite::{BoxOptions, ExecCommand, NetworkMode, NetworkOptions};
use common::{qemu_runtime_with_python, RunDir, PYTHON_IMAGE};
use tokio::io::AsyncReadExt;

const PORT: u32 = 5001;
const WRITE: usize = 4 << 20;
const WRITES: usize = 4;

/// Listens on PORT, says so, then sends WRITES blocks of WRITE zero bytes, one sendall each.
const SENDER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
s.bind((socket.VMADDR_CID_ANY, int(sys.argv[1])))
s.listen(1)
print("listening", flush=True)
c, _ = s.accept()
block = bytes(int(sys.argv[2]))
for _ in range(int(sys.argv[3])):
    c.sendall(block)
c.close()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_programs_large_vsock_writes_all_arrive() {
    let dir = RunDir::new("guest-vsock");
    let rt = qemu_runtime_with_python(&dir);
    let options = BoxOptions {
        image: Some(PYTHON_IMAGE.into()),
        memory_mib: 384,
        network: NetworkOptions { mode: NetworkMode::None, ..Default::default() },
        ..Default::default()
    };
    let lite = rt.create_box(options).unwrap();
    let args = [SENDER.to_string(), PORT.to_string(), WRITE.to_string(), WRITES.to_string()];
    let mut sender = lite.exec(ExecCommand::new("python3").arg("-c").args(args)).await.expect("start the sender");
    let mut said = Vec::new();
    let mut stdout = sender.take_stdout().expect("the sender's stdout");
    while !said.ends_with(b"listening\n") {
        match tokio::time::timeout(Duration::from_secs(120), stdout.next_chunk()).await {
            Ok(Some(Ok(chunk))) => said.extend(chunk),
            other => panic!("the sender never listened: {other:?}, said {:?}", String::from_utf8_lossy(&said)),
        }
    }

    // The host reaches a guest port the way the library reaches the agent: through the vsock
    // backend's socket, `CONNECT <port>`, answered `OK <port>`.
    let endpoint = HostToGuestEndpoint { socket: lite.dir().join("vmm/vsock.sock"), connect_line: Some(format!("CONNECT {PORT}\n")) };
    let connect = tokio::time::timeout(Duration::from_secs(10), open_guest_stream(&endpoint));
    let mut stream = connect.await.expect("no answer to CONNECT within 10 s").expect("a stream to the sender's port");

    // Unpatched, the first packet over ~32 KiB is dropped by the backend and nothing more
    // arrives: the count says where it stopped.
    let mut received = 0usize;
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        match tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buffer)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => {
                assert!(buffer[..n].iter().all(|&b| b == 0), "the bytes arrive as sent");
                received += n;
            }
            Ok(Err(e)) => panic!("read after {received} bytes: {e}"),
            Err(_) => panic!("stalled: {received} of {} bytes arrived, then none for 20 s", WRITE * WRITES),
        }
    }
    assert_eq!(received, WRITE * WRITES);
    assert!(sender.wait().await.unwrap().success());
    lite.stop().await.unwrap();
}
