//! boxlite: embeddable micro-VM sandboxes ("boxes") for applications and AI agents.
//!
//! Layers, top to bottom: `ffi` (the C ABI), `runtime` (the Rust core). The per-box
//! `boxlite-shim` executable (src/shim/) and the in-guest agent (guest/) live in their own
//! crates and share the VM spec and protocol defined here and in `boxlite-protocol`.

pub mod ffi;
pub mod runtime;

pub use boxlite_protocol::agent::PingResponse;
pub use runtime::boxes::{BoxMetrics, BoxOptions, BoxStatus, LiteBox};
pub use runtime::engine::{EngineChoice, EngineKind, HostVirtualization};
pub use runtime::error::{Error, PullErrorKind, Result};
pub use runtime::exec::{ExecCommand, ExecErrorKind, ExecMetrics, ExecOutput, ExecStatus, Execution, OutputStream, StdinWriter};
pub use runtime::home::{BoxliteRuntime, InvalidBox, RuntimeMetrics, RuntimeOptions};
pub use runtime::network::{AllowRule, BoundForward, NetworkMode, NetworkOptions, NetworkStats, PortForward, Protocol};
pub use runtime::spec::{DiskFormat, DiskSpec, JailOptions, Protections, VmSpec};
pub use runtime::vm::{BootTimings, GuestBootStep, RootDisk, Vm, VmOptions};
pub use runtime::volumes::Volume;
