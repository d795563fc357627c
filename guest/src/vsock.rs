//! The agent's vsock connections, with writes capped at [`GUEST_VSOCK_MAX_WRITE`]: the one
//! it dials to the host when it is ready, and any the host opens to its port later.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use boxlite_protocol::{CONSOLE_AGENT_AWAITS_HOST, GUEST_VSOCK_MAX_WRITE};
use futures::stream::{self, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_vsock::{VsockAddr, VsockListener, VsockStream, VMADDR_CID_ANY, VMADDR_CID_HOST};

use crate::log;

/// How long the agent keeps trying to reach the host's ready port.
const DIAL_HOST_FOR: Duration = Duration::from_secs(10);

/// Listens on `port`, dials the host's `host_port`, and yields both kinds of connection.
pub fn connections(port: u32, host_port: u32) -> io::Result<ttrpc::asynchronous::transport::Listener> {
    let listener = VsockListener::bind(VsockAddr::new(VMADDR_CID_ANY, port))
        .map_err(|e| io::Error::new(e.kind(), format!("bind vsock port {port}: {e}")))?;
    let accepted = stream::unfold(listener, |listener| async move {
        let next = listener.accept().await.map(|(stream, _peer)| CappedWrites(stream));
        Some((next, listener))
    });
    let dialed = stream::once(dial_host(host_port)).filter_map(move |result| async move {
        match result {
            Ok(stream) => Some(Ok(stream)),
            Err(e) => {
                log!("could not reach the host on vsock port {host_port} ({e}); {CONSOLE_AGENT_AWAITS_HOST}");
                None
            }
        }
    });
    Ok(ttrpc::asynchronous::transport::Listener::new(stream::select(dialed, accepted)))
}

/// Connects to the host (CID 2), retrying briefly: the host listens before the VM starts,
/// so the first attempt normally succeeds.
async fn dial_host(port: u32) -> io::Result<CappedWrites> {
    let started = Instant::now();
    loop {
        match VsockStream::connect(VsockAddr::new(VMADDR_CID_HOST, port)).await {
            Ok(stream) => {
                crate::boot::step_done("host_connected");
                return Ok(CappedWrites(stream));
            }
            Err(e) if started.elapsed() > DIAL_HOST_FOR => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// A vsock stream whose writes are split into pieces of at most [`GUEST_VSOCK_MAX_WRITE`].
pub struct CappedWrites(VsockStream);

impl AsyncRead for CappedWrites {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for CappedWrites {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let len = buf.len().min(GUEST_VSOCK_MAX_WRITE);
        Pin::new(&mut self.get_mut().0).poll_write(cx, &buf[..len])
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}
