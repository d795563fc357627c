//! The host side of the guest protocol: connecting to the agent through the engine's vsock
//! socket and calling it over ttrpc. Everything the agent sends is untrusted: ttrpc bounds
//! each frame (4 MiB), the handshake line is bounded here, and every call has a deadline.

use std::time::Duration;

use boxlite_protocol::agent::{PingRequest, PingResponse, ShutdownRequest, StatsRequest};
use boxlite_protocol::agent_ttrpc::{ExecutionClient, FilesClient, GuestClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::runtime::error::{quoted, MAX_QUOTED_MESSAGE};
use crate::runtime::spec::HostToGuestEndpoint;

/// Longest reply to `CONNECT <port>` we read (`OK <u32>\n` fits many times over).
const MAX_HANDSHAKE_REPLY: usize = 64;

/// What the agent reports of the guest (untrusted: the numbers are the guest's word).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuestStats {
    pub cpu_busy_ms: u64,
    pub memory_total_kib: u64,
    pub memory_available_kib: u64,
    pub uptime_us: u64,
}

/// A ttrpc connection to one guest agent.
#[derive(Clone)]
pub struct AgentClient {
    guest: GuestClient,
    execution: ExecutionClient,
    files: FilesClient,
}

impl AgentClient {
    /// Connects to the agent's port. Fails fast (rather than hanging) when the guest is not
    /// listening yet, so that callers can retry until their deadline.
    pub async fn connect(endpoint: &HostToGuestEndpoint, timeout: Duration) -> Result<AgentClient, String> {
        tokio::time::timeout(timeout, open_guest_stream(endpoint))
            .await
            .unwrap_or_else(|_| Err(format!("no answer from {} within {timeout:?}", endpoint.socket.display())))
            .map(AgentClient::over)
    }

    pub async fn ping(&self, timeout: Duration) -> Result<PingResponse, String> {
        self.guest.ping(context(timeout), &PingRequest::default()).await.map_err(agent_error)
    }

    pub async fn stats(&self, timeout: Duration) -> Result<GuestStats, String> {
        let stats = self.guest.stats(context(timeout), &StatsRequest::default()).await.map_err(agent_error)?;
        Ok(GuestStats {
            cpu_busy_ms: stats.cpu_busy_ms,
            memory_total_kib: stats.memory_total_kib,
            memory_available_kib: stats.memory_available_kib,
            uptime_us: stats.uptime_us,
        })
    }

    pub async fn shutdown(&self, timeout: Duration) -> Result<(), String> {
        self.guest.shutdown(context(timeout), &ShutdownRequest::default()).await.map(|_| ()).map_err(agent_error)
    }
}

impl AgentClient {
    /// A client over a connection that already leads to the agent (e.g. the one the agent
    /// dialed to the host when it came up).
    pub fn over(stream: UnixStream) -> AgentClient {
        let socket = ttrpc::asynchronous::transport::Socket::new(stream);
        let client = ttrpc::asynchronous::Client::new(socket);
        AgentClient {
            guest: GuestClient::new(client.clone()),
            execution: ExecutionClient::new(client.clone()),
            files: FilesClient::new(client),
        }
    }

    /// The Execution service on the same connection (see `runtime::exec`).
    pub(crate) fn execution(&self) -> &ExecutionClient {
        &self.execution
    }

    /// The Files service on the same connection (see `runtime::files`).
    pub(crate) fn files(&self) -> &FilesClient {
        &self.files
    }
}

/// A stream to a guest port: the endpoint's socket, through the vsock backend's
/// `CONNECT <port>` handshake where it has one. What follows the `OK` line is the guest's.
/// Unbounded in time: callers put their deadline around it.
pub async fn open_guest_stream(endpoint: &HostToGuestEndpoint) -> Result<UnixStream, String> {
    let mut stream = UnixStream::connect(&endpoint.socket).await.map_err(|e| format!("connect {}: {e}", endpoint.socket.display()))?;
    if let Some(line) = &endpoint.connect_line {
        stream.write_all(line.as_bytes()).await.map_err(|e| format!("send {line:?}: {e}"))?;
        let reply = read_line(&mut stream).await?;
        if !reply.starts_with("OK ") {
            return Err(format!("vsock backend answered {reply:?} to {:?}", line.trim_end()));
        }
    }
    Ok(stream)
}

/// A ttrpc call context with a deadline: every request to the guest carries one.
pub(crate) fn context(timeout: Duration) -> ttrpc::context::Context {
    ttrpc::context::with_timeout(timeout.as_nanos().min(i64::MAX as u128) as i64)
}

/// A failed call, for a message: a ttrpc status carries the agent's own text, of any length.
fn agent_error(error: ttrpc::Error) -> String {
    quoted(&error.to_string(), MAX_QUOTED_MESSAGE)
}

/// Reads one `\n`-terminated line byte by byte: whatever follows belongs to ttrpc.
async fn read_line(stream: &mut UnixStream) -> Result<String, String> {
    let mut line = Vec::with_capacity(16);
    loop {
        let byte = stream.read_u8().await.map_err(|e| format!("reading the vsock handshake: {e}"))?;
        if byte == b'\n' {
            return Ok(String::from_utf8_lossy(&line).into_owned());
        }
        if line.len() == MAX_HANDSHAKE_REPLY {
            return Err(format!("vsock handshake reply longer than {MAX_HANDSHAKE_REPLY} bytes"));
        }
        line.push(byte);
    }
}
