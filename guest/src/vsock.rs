//! The agent's vsock listener, with writes capped at [`GUEST_VSOCK_MAX_WRITE`].

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use boxlite_protocol::GUEST_VSOCK_MAX_WRITE;
use futures::stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_vsock::{VsockAddr, VsockListener, VsockStream, VMADDR_CID_ANY};

/// Listens on `port` for any CID and yields connections whose writes never exceed
/// [`GUEST_VSOCK_MAX_WRITE`] bytes per call.
pub fn listen(port: u32) -> io::Result<ttrpc::asynchronous::transport::Listener> {
    let listener = VsockListener::bind(VsockAddr::new(VMADDR_CID_ANY, port))
        .map_err(|e| io::Error::new(e.kind(), format!("bind vsock port {port}: {e}")))?;
    let accepted = stream::unfold(listener, |listener| async move {
        let next = listener.accept().await.map(|(stream, _peer)| CappedWrites(stream));
        Some((next, listener))
    });
    Ok(ttrpc::asynchronous::transport::Listener::new(accepted))
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
