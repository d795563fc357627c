//! The one error type of the boxlite crate. Every variant names the operation, the cause and,
//! where there is one, the fix.

use std::path::PathBuf;
use std::time::Duration;

use crate::runtime::engine::EngineKind;
use crate::runtime::exec::ExecErrorKind;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The requested engine cannot run on this host (e.g. krun without hardware KVM).
    #[error("the {engine} engine cannot run on this host: {reason}. {fix}")]
    EngineUnavailable { engine: EngineKind, reason: String, fix: String },

    /// A value in the options or spec is out of range or malformed.
    #[error("invalid {field}: {reason}")]
    InvalidOption { field: &'static str, reason: String },

    /// Another runtime holds this home directory.
    #[error("{} is in use by another boxlite runtime{}; use another home (BOXLITE_HOME) or stop that process", home.display(), holder_pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    HomeLocked { home: PathBuf, holder_pid: Option<u32> },

    /// No such object.
    #[error("{what} does not exist")]
    NotFound { what: String },

    /// The object is in a state that does not allow the operation.
    #[error("{what}: {reason}")]
    InvalidState { what: String, reason: String },

    /// A helper (shim, kernel, initramfs, qemu, vsock backend) could not be found.
    #[error("cannot find {what}: looked in {searched}. {fix}")]
    HelperNotFound { what: &'static str, searched: String, fix: String },

    /// A file system or process operation on the host failed.
    #[error("{op}: {source}")]
    Io {
        op: String,
        #[source]
        source: std::io::Error,
    },

    /// The shim exited before or while the VM was in use.
    #[error("the box's shim exited ({status}); last lines of {log}:\n{log_tail}\nlast lines of {console}:\n{console_tail}")]
    ShimExited { status: String, log: PathBuf, log_tail: String, console: PathBuf, console_tail: String },

    /// The shim reported an error before the VM started.
    #[error("the shim could not start the VM: {message}")]
    ShimFailed { message: String },

    /// The guest agent did not answer within the boot deadline.
    #[error("the guest agent did not answer within {timeout:?} (last attempt: {last_error}); last lines of {console}:\n{console_tail}")]
    AgentTimeout { timeout: Duration, last_error: String, console: PathBuf, console_tail: String },

    /// The agent would not start a process; `kind` says why.
    #[error("cannot run {program:?} in the box ({kind}): {message}")]
    ExecRefused { program: String, kind: ExecErrorKind, message: String },

    /// An image (or its manifest, config, blob or layout) is malformed or failed verification.
    #[error("invalid image: {what}")]
    InvalidImage { what: String },

    /// A registry refused or failed a pull.
    #[error("pulling {reference}: {reason}")]
    Pull { reference: String, kind: PullErrorKind, reason: String },

    /// An image layer has an entry that would break out of the root, or is malformed.
    #[error("refusing image layer entry {entry:?}: {reason}")]
    UnsafeLayer { entry: String, reason: String },

    /// The guest sent something the protocol does not allow (it is untrusted input).
    #[error("the guest broke the protocol: {what}")]
    GuestProtocol { what: String },

    /// A bounded wait ended with the execution still running (not a failure of it).
    #[error("{what} is still running")]
    StillRunning { what: String },

    /// A call to the guest agent failed.
    #[error("agent call {rpc} failed: {cause}")]
    Agent { rpc: &'static str, cause: String },

    /// A copy into or out of a box failed: `path` is the file it is about (in the box, or
    /// on the host), `kind` says why, `cause` names the failure.
    #[error("{op}: {path}: {cause}")]
    Copy { op: &'static str, path: String, kind: CopyErrorKind, cause: String },
}

/// Why a copy failed, for callers that act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyErrorKind {
    /// The source, or the destination's parent, does not exist.
    NotFound,
    /// The copy cannot be done as asked (a directory onto a file, a bad path).
    Invalid,
    /// A file system call failed (in the box or on the host).
    Io,
    /// The box's archive broke the rules (an entry leaving the destination, a malformed
    /// stream): the box is not to be trusted.
    Unsafe,
}

/// Why a pull failed, for callers that act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullErrorKind {
    /// Wrong or missing credentials.
    Unauthorized,
    /// The registry has no such repository, tag or digest.
    NotFound,
    /// The registry answered plain HTTP to an HTTPS request.
    InsecureRegistry,
    /// The caller's progress callback asked to stop.
    Cancelled,
    /// Anything else (network, protocol, server errors).
    Other,
}

impl Error {
    pub(crate) fn io(op: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { op: op.into(), source }
    }
}

/// The most bytes of a guest- or image-supplied name (path, link target, id, platform) a
/// message quotes.
pub(crate) const MAX_QUOTED_NAME: usize = 256;
/// The most bytes of guest- or image-supplied free text (an agent's error message) a
/// message quotes.
pub(crate) const MAX_QUOTED_MESSAGE: usize = 1024;

/// Text the guest or an image supplied, fit for quoting in a message: at most `max` bytes,
/// cut on a char boundary, and a cut says how long the whole was. Whoever controls the text
/// must not control the size of our errors (a 4 KB layer path, a 4 MB agent message).
pub(crate) fn quoted(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &text[..end], text.len())
}

#[cfg(test)]
mod tests {
    use super::quoted;

    #[test]
    fn quoted_keeps_short_text_and_cuts_long_text_on_a_char_boundary() {
        assert_eq!(quoted("short", 10), "short");
        assert_eq!(quoted("exactly10!", 10), "exactly10!");
        assert_eq!(quoted(&"x".repeat(4096), 8), "xxxxxxxx... (4096 bytes)");
        // 'é' is two bytes: a cut at byte 3 of "aéé" would split the second one.
        assert_eq!(quoted("aéé", 4), "aé... (5 bytes)");
        assert_eq!(quoted("ééé", 1), "... (6 bytes)");
    }
}
