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

/// Kernel command-line key that overrides [`AGENT_VSOCK_PORT`] (`boxlite.port=N`).
pub const CMDLINE_AGENT_PORT: &str = "boxlite.port";

/// The largest write the guest puts on a vsock stream in one call. vhost-device-vsock 0.3
/// rejects the multi-buffer packets Linux 6.12 builds for writes above 32 KiB, and the
/// stream then stalls silently; 16 KiB writes always travel as linear packets.
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
