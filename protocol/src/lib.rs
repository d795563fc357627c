//! The boxlite host <-> guest protocol: messages and async ttrpc stubs generated at build
//! time from `proto/agent.proto` (package `boxlite.agent.v1`), plus the constants both sides
//! must agree on.

/// Messages of `boxlite.agent.v1`.
#[allow(
    clippy::all,
    dead_code,
    missing_docs,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    trivial_casts,
    unused_results,
    unused_mut,
    unused_imports
)]
pub mod agent {
    include!(concat!(env!("OUT_DIR"), "/agent.rs"));
}

/// The async ttrpc client (`GuestClient`) and server trait (`Guest`) of `boxlite.agent.v1`.
#[allow(clippy::all, dead_code, missing_docs, non_camel_case_types, non_snake_case, unused_imports)]
pub mod agent_ttrpc {
    include!(concat!(env!("OUT_DIR"), "/agent_ttrpc.rs"));
}

/// The vsock port the agent serves ttrpc on.
pub const AGENT_VSOCK_PORT: u32 = 1024;

/// The host vsock port the agent dials as soon as it serves: the host listens there before
/// the VM starts, so it learns the agent is up without polling, and the connection carries
/// ttrpc like any other. (Polling the guest port while the guest boots was not only slower:
/// vhost-device-vsock 0.3 sometimes wedges a connection requested before the guest's vsock
/// driver is up, and the agent then never answers.)
pub const AGENT_HOST_PORT: u32 = 1025;

/// What the agent writes on the console when its dial to [`AGENT_HOST_PORT`] failed and it
/// waits for the host to connect to its own port instead; the host looks for it in the
/// console log's tail, and then dials.
pub const CONSOLE_AGENT_AWAITS_HOST: &str = "waiting for the host to connect";

/// Kernel command-line key that overrides [`AGENT_VSOCK_PORT`] (`boxlite.port=N`).
pub const CMDLINE_AGENT_PORT: &str = "boxlite.port";

/// The largest write the agent puts on a vsock stream in one call. vhost-device-vsock 0.3
/// drops the multi-buffer packets an unpatched Linux 6.12 builds for writes above 32 KiB,
/// and the stream then stalls silently. Our kernel keeps packets linear (build-kernel.sh,
/// patch 5); the cap keeps the agent working on a kernel without it (BOXLITE_KERNEL), and
/// 1 MiB writes measured no faster (exec stdout 58-66 MB/s against 55-64).
pub const GUEST_VSOCK_MAX_WRITE: usize = 16 * 1024;

/// Kernel command-line key naming the block device the agent mounts as the box's root
/// (`boxlite.root=/dev/vda`); without it, processes run in the initramfs.
pub const CMDLINE_ROOT_DEVICE: &str = "boxlite.root";

/// Kernel command-line key for the root's mount mode: `ro` or `rw` (default).
pub const CMDLINE_ROOT_MODE: &str = "boxlite.root_mode";

/// Kernel command-line key telling the agent to configure the box's network device (eth0):
/// `boxlite.net=<addr>/<prefix>,<gateway>,<dns>`, e.g. `boxlite.net=10.0.2.15/24,10.0.2.2,10.0.2.2`
/// (IPv4 only). The agent gives eth0 the address, adds a default route via the gateway, and
/// makes `/etc/resolv.conf` in the box's root name the DNS server. Absent: the VM has no
/// network device, and the agent leaves the network and resolv.conf alone.
pub const CMDLINE_NETWORK: &str = "boxlite.net";

/// The most bytes one ReadOutput response may carry. Well under ttrpc's 4 MiB frame limit.
pub const MAX_OUTPUT_CHUNK: u32 = 1024 * 1024;

/// The most bytes one WriteStdin request may carry.
pub const MAX_STDIN_CHUNK: usize = 1024 * 1024;

/// The most bytes one CopyInWrite request or CopyOutRead response may carry (Files service).
pub const MAX_COPY_CHUNK: u32 = 1024 * 1024;

/// The most copies (in and out together) the agent keeps open at once.
pub const MAX_OPEN_COPIES: usize = 16;

/// The longest exec id either side accepts.
pub const MAX_EXEC_ID: usize = 64;

/// Whether `id` may name an execution: 1 to [`MAX_EXEC_ID`] of `[A-Za-z0-9_-]`.
pub fn valid_exec_id(id: &str) -> bool {
    (1..=MAX_EXEC_ID).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Kernel command-line key listing the volumes the agent mounts (docs/volumes.md):
/// `boxlite.volumes=TAG:PATH:MODE[,TAG:PATH:MODE...]`, e.g.
/// `boxlite.volumes=vol0:/data:rw,vol1:/srv/my%20docs:ro`. TAG is a virtio-fs tag, PATH the
/// absolute mount point inside the box's root (escaped with [`escape_cmdline_path`]), MODE
/// `ro` or `rw`. Absent: no volumes.
pub const CMDLINE_VOLUMES: &str = "boxlite.volumes";

/// One entry of [`CMDLINE_VOLUMES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMount {
    pub tag: String,
    pub guest_path: String,
    pub read_only: bool,
}

/// Escapes a path for the kernel command line: every byte but ASCII letters, digits and
/// `/._-` becomes `%XX`, so the value holds no space, quote, comma or colon.
pub fn escape_cmdline_path(path: &[u8]) -> String {
    let mut out = String::with_capacity(path.len());
    for &byte in path {
        if byte.is_ascii_alphanumeric() || b"/._-".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The inverse of [`escape_cmdline_path`]; `None` for a malformed escape.
pub fn unescape_cmdline_path(escaped: &str) -> Option<Vec<u8>> {
    let bytes = escaped.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The value of [`CMDLINE_VOLUMES`] for these mounts.
pub fn volumes_cmdline_value(mounts: &[VolumeMount]) -> String {
    let entries: Vec<String> = mounts
        .iter()
        .map(|m| format!("{}:{}:{}", m.tag, escape_cmdline_path(m.guest_path.as_bytes()), if m.read_only { "ro" } else { "rw" }))
        .collect();
    entries.join(",")
}

/// Parses the value of [`CMDLINE_VOLUMES`]: tags of `[A-Za-z0-9_-]`, absolute UTF-8 paths.
pub fn parse_volumes_cmdline_value(value: &str) -> Result<Vec<VolumeMount>, String> {
    let mut mounts = Vec::new();
    for entry in value.split(',').filter(|e| !e.is_empty()) {
        let mut fields = entry.split(':');
        let (Some(tag), Some(path), Some(mode), None) = (fields.next(), fields.next(), fields.next(), fields.next()) else {
            return Err(format!("{entry:?} is not TAG:PATH:MODE"));
        };
        if tag.is_empty() || !tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b)) {
            return Err(format!("{entry:?}: bad tag"));
        }
        let path = unescape_cmdline_path(path).and_then(|p| String::from_utf8(p).ok()).ok_or_else(|| format!("{entry:?}: bad path"))?;
        if !path.starts_with('/') || path.as_bytes().contains(&0) {
            return Err(format!("{entry:?}: the path must be absolute"));
        }
        let read_only = match mode {
            "ro" => true,
            "rw" => false,
            _ => return Err(format!("{entry:?}: the mode must be ro or rw")),
        };
        mounts.push(VolumeMount { tag: tag.to_string(), guest_path: path, read_only });
    }
    Ok(mounts)
}

/// A `Write` that hands what it is given to `send` in chunks of at most MAX_COPY_CHUNK bytes
/// (full ones, and the rest on flush): the copy streams of the Files service on both sides.
/// `send` may block (a bounded channel's `blocking_send`), so that a slow reader slows the
/// writer down.
pub struct ChunkWriter<S: FnMut(Vec<u8>) -> std::io::Result<()>> {
    send: S,
    buffer: Vec<u8>,
}

impl<S: FnMut(Vec<u8>) -> std::io::Result<()>> ChunkWriter<S> {
    pub fn new(send: S) -> Self {
        ChunkWriter { send, buffer: Vec::new() }
    }

    fn send_buffer(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        (self.send)(std::mem::take(&mut self.buffer))
    }
}

impl<S: FnMut(Vec<u8>) -> std::io::Result<()>> std::io::Write for ChunkWriter<S> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buffer.capacity() == 0 {
            self.buffer.reserve_exact(MAX_COPY_CHUNK as usize);
        }
        let n = data.len().min(MAX_COPY_CHUNK as usize - self.buffer.len());
        self.buffer.extend_from_slice(&data[..n]);
        if self.buffer.len() == MAX_COPY_CHUNK as usize {
            self.send_buffer()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send_buffer()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn exec_ids_are_short_plain_words() {
        assert!(valid_exec_id("exec-1") && valid_exec_id("h_0123abcdef") && valid_exec_id(&"a".repeat(MAX_EXEC_ID)));
        for bad in ["", "a b", "../x", "é", "a\n", &"a".repeat(MAX_EXEC_ID + 1)] {
            assert!(!valid_exec_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_chunk_writer_sends_full_chunks_then_the_rest_on_flush() {
        let mut sizes = Vec::new();
        let mut writer = ChunkWriter::new(|chunk: Vec<u8>| {
            sizes.push(chunk.len());
            Ok(())
        });
        writer.write_all(&vec![7u8; MAX_COPY_CHUNK as usize * 2 + 10]).unwrap();
        writer.flush().unwrap();
        writer.flush().unwrap(); // nothing left: no empty chunk
        drop(writer);
        assert_eq!(sizes, vec![MAX_COPY_CHUNK as usize, MAX_COPY_CHUNK as usize, 10]);
    }

    #[test]
    fn the_chunk_writer_passes_on_the_senders_error() {
        let mut writer = ChunkWriter::new(|_| Err(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "gone")));
        assert_eq!(writer.write_all(&vec![0u8; MAX_COPY_CHUNK as usize]).unwrap_err().kind(), std::io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn volume_paths_survive_the_command_line() {
        let mounts = vec![
            VolumeMount { tag: "vol0".into(), guest_path: "/data".into(), read_only: false },
            VolumeMount { tag: "vol1".into(), guest_path: "/my docs/a,b:c%d\u{e9}".into(), read_only: true },
        ];
        let value = volumes_cmdline_value(&mounts);
        assert_eq!(value, "vol0:/data:rw,vol1:/my%20docs/a%2Cb%3Ac%25d%C3%A9:ro");
        assert!(!value.contains(' '));
        assert_eq!(parse_volumes_cmdline_value(&value).unwrap(), mounts);
        assert!(parse_volumes_cmdline_value("vol0:relative:rw").is_err());
        assert!(parse_volumes_cmdline_value("vol0:/x:rx").is_err());
        assert!(parse_volumes_cmdline_value("vol0:/x%2").is_err());
        assert!(parse_volumes_cmdline_value("v o:/x:ro").is_err());
    }
}
