//! The frame protocol on fd 3, shared by QEMU's `-netdev stream` and libkrun's
//! `krun_add_net_unixstream`: each Ethernet frame preceded by its length as a 4-byte
//! big-endian integer. The reader turns a bad length into an error (the stream cannot be
//! resynchronised) and EOF into the end; the writer batches queued frames into few writes.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};

use crate::error::Error;

/// The largest frame accepted: a 64 KiB IP packet and its Ethernet header.
pub const MAX_FRAME: usize = 65535 + 14;
/// How many bytes of queued frames the writer puts in one write.
const WRITE_BATCH: usize = 64 * 1024;

/// Reads the next frame; `Ok(None)` at EOF (the VM is gone), also in the middle of a frame.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Option<Vec<u8>>, Error> {
    let mut prefix = [0u8; 4];
    if !read_all_or_eof(reader, &mut prefix).await? {
        return Ok(None);
    }
    let len = u32::from_be_bytes(prefix);
    if len == 0 || len as usize > MAX_FRAME {
        return Err(Error::FrameLength { len });
    }
    let mut frame = vec![0u8; len as usize];
    if !read_all_or_eof(reader, &mut frame).await? {
        eprintln!("boxlite-netgw: the VM closed its frame socket in the middle of a frame");
        return Ok(None);
    }
    Ok(Some(frame))
}

/// Fills `buf`; false at EOF (before or within it).
async fn read_all_or_eof<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut [u8]) -> Result<bool, Error> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]).await {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(false),
            Err(e) => return Err(Error::FrameRead(e)),
        }
    }
    Ok(true)
}

/// Appends `frame` with its length prefix.
pub fn encode_into(out: &mut Vec<u8>, frame: &[u8]) {
    out.extend_from_slice(&(frame.len() as u32).to_be_bytes());
    out.extend_from_slice(frame);
}

/// Reads frames until EOF or an error and hands them on; the channel's bound holds the VMM
/// back when the gateway is busy. Ends by dropping `frames` (EOF) or after sending an error.
pub async fn read_loop<R: AsyncRead + Unpin>(reader: R, frames: mpsc::Sender<Result<Vec<u8>, Error>>) {
    let mut reader = tokio::io::BufReader::with_capacity(MAX_FRAME + 4, reader);
    loop {
        match read_frame(&mut reader).await {
            Ok(Some(frame)) => {
                if frames.send(Ok(frame)).await.is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(e) => {
                let _ = frames.send(Err(e)).await;
                return;
            }
        }
    }
}

/// Writes the frames queued for the guest; `drained` is told after each write, so that the
/// gateway retries what it held back while the queue was full. Ends when the queue closes
/// or the VMM stops reading (the reader then sees EOF).
pub async fn write_loop<W: AsyncWrite + Unpin>(mut writer: W, mut frames: mpsc::Receiver<Vec<u8>>, drained: Arc<Notify>) {
    let mut batch = Vec::with_capacity(WRITE_BATCH + MAX_FRAME + 4);
    while let Some(frame) = frames.recv().await {
        batch.clear();
        encode_into(&mut batch, &frame);
        while batch.len() < WRITE_BATCH {
            match frames.try_recv() {
                Ok(frame) => encode_into(&mut batch, &frame),
                Err(_) => break,
            }
        }
        if let Err(e) = writer.write_all(&batch).await {
            eprintln!("boxlite-netgw: writing frames to fd 3: {e}");
            return;
        }
        drained.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    #[test]
    fn frames_round_trip_and_eof_ends_the_stream() {
        let mut bytes = Vec::new();
        encode_into(&mut bytes, b"first");
        encode_into(&mut bytes, &[7u8; 1514]);
        let mut reader = &bytes[..];
        assert_eq!(block_on(read_frame(&mut reader)).unwrap().unwrap(), b"first");
        assert_eq!(block_on(read_frame(&mut reader)).unwrap().unwrap().len(), 1514);
        assert!(block_on(read_frame(&mut reader)).unwrap().is_none());
        // EOF in the middle of a frame is the VM going away too.
        let mut cut = &bytes[..7];
        assert!(block_on(read_frame(&mut cut)).unwrap().is_none());
    }

    #[test]
    fn zero_and_oversized_lengths_are_protocol_errors() {
        for len in [0u32, MAX_FRAME as u32 + 1, u32::MAX] {
            let bytes = len.to_be_bytes();
            let mut reader = &bytes[..];
            match block_on(read_frame(&mut reader)) {
                Err(Error::FrameLength { len: got }) => assert_eq!(got, len),
                other => panic!("length {len}: {other:?}"),
            }
        }
        let mut max = (MAX_FRAME as u32).to_be_bytes().to_vec();
        max.resize(4 + MAX_FRAME, 0);
        assert_eq!(block_on(read_frame(&mut &max[..])).unwrap().unwrap().len(), MAX_FRAME);
    }
}
