//! What the library and `boxlite-shim` share, and nothing more: the VM spec the library
//! sends the shim, the events the shim reports back, the protections it records, the engine
//! kinds with the host's virtualisation, and the qemu and vhost-device-vsock argument lists.
//! The shim depends on this crate alone (Firecracker's jailer depends on small utility
//! crates, never on the VMM), so it links neither the registry client nor the C ABI.

pub mod engine;
pub mod network;
pub mod qemu;
pub mod spec;
