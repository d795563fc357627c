//! The gateway's errors, each naming what failed, and the exit code each one ends it with.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::frames::MAX_FRAME;

/// Exit status: the VM closed its frame socket (the normal end).
pub const EXIT_VM_GONE: i32 = 0;
/// Exit status: the frame protocol was broken or fd 3 failed while the VM ran.
pub const EXIT_RUNTIME: i32 = 1;
/// Exit status: the config or the descriptors were unusable; no frame was read.
pub const EXIT_STARTUP: i32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the config from stdin: {0}")]
    ConfigRead(io::Error),
    #[error("the config on stdin is longer than {limit} bytes; send one JSON line")]
    ConfigTooLong { limit: usize },
    #[error("the config on stdin is not a GatewayConfig (one JSON line): {0}")]
    ConfigParse(serde_json::Error),
    #[error("the config on stdin: {0}")]
    ConfigInvalid(String),
    #[error("descriptor {fd} ({role}): {cause}")]
    Descriptor { fd: i32, role: &'static str, cause: String },
    #[error("setting up: {0}")]
    Setup(String),
    #[error("building the tokio runtime: {0}")]
    Runtime(io::Error),
    #[error("{0}")]
    Seccomp(String),
    #[error("frame protocol on fd 3: a frame of {len} bytes (must be 1 to {MAX_FRAME}); is the VMM speaking the length-prefixed stream protocol?")]
    FrameLength { len: u32 },
    #[error("reading frames from fd 3: {0}")]
    FrameRead(io::Error),
}

impl Error {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::FrameLength { .. } | Error::FrameRead(_) => EXIT_RUNTIME,
            _ => EXIT_STARTUP,
        }
    }
}

/// Logs `message` the first time `flag` is passed: for conditions the guest or a host
/// client can repeat at will, so that they cannot flood the shim's log.
pub fn log_once(flag: &AtomicBool, message: std::fmt::Arguments<'_>) {
    if !flag.swap(true, Ordering::Relaxed) {
        eprintln!("boxlite-netgw: {message} (logged once)");
    }
}
