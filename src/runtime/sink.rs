//! Delivering an execution's output to a consumer that is not async (the C ABI's callbacks,
//! a binding's): the consumer implements `OutputSink`, and `deliver` pumps both streams into
//! it from a plain thread, in order per stream, never re-entrantly, then waits for the exit.
//!
//! The sink runs outside the Tokio runtime's context, between awaits, so it may block or call
//! back into the library (which blocks on the same runtime) without stalling other boxes.

use crate::runtime::error::{Error, Result};
use crate::runtime::exec::{ExecStatus, Execution, OutputStream};

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Stdout,
    Stderr,
}

/// Receives an execution's output.
pub trait OutputSink {
    /// One chunk of one stream (`data` is only borrowed). Returning false cancels the
    /// execution: its process group is killed and the rest of its output is drained without
    /// being delivered.
    fn output(&mut self, stream: StreamKind, data: &[u8]) -> bool;
}

/// How a delivered execution ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub status: ExecStatus,
    /// The sink asked to stop, so the process group was killed.
    pub cancelled: bool,
}

/// Pumps `stdout` and `stderr` into `sink` until both end, then waits for the process.
/// Blocks the calling thread, which must not be one of `runtime`'s own. The first stream
/// error ends the delivery with that error (the other stream is still drained).
pub fn deliver(
    runtime: &tokio::runtime::Handle,
    execution: &Execution,
    mut stdout: Option<OutputStream>,
    mut stderr: Option<OutputStream>,
    sink: &mut dyn OutputSink,
) -> Result<Delivered> {
    let mut cancelled = false;
    let mut failure: Option<Error> = None;
    while stdout.is_some() || stderr.is_some() {
        let (kind, chunk) = runtime.block_on(async {
            tokio::select! {
                chunk = next(&mut stdout) => (StreamKind::Stdout, chunk),
                chunk = next(&mut stderr) => (StreamKind::Stderr, chunk),
            }
        });
        let stream = match kind {
            StreamKind::Stdout => &mut stdout,
            StreamKind::Stderr => &mut stderr,
        };
        match chunk {
            None => *stream = None,
            Some(Err(e)) => {
                failure.get_or_insert(e);
                *stream = None;
            }
            Some(Ok(data)) if !cancelled => {
                if !sink.output(kind, &data) {
                    cancelled = true;
                    let _ = runtime.block_on(execution.kill());
                }
            }
            Some(Ok(_)) => {} // cancelled: drain without delivering
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let status = runtime.block_on(execution.wait())?;
    Ok(Delivered { status, cancelled })
}

async fn next(stream: &mut Option<OutputStream>) -> Option<Result<Vec<u8>>> {
    match stream {
        Some(s) => s.next_chunk().await,
        None => std::future::pending().await,
    }
}
