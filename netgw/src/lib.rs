//! boxlite-netgw: a box's network gateway. One process per box with a network device, in
//! the host's network namespace, between the VMM's frame socket and the host's network.
//!
//! The guest sees a router at `GATEWAY_ADDR` (a smoltcp interface answering for every
//! address); every TCP connection and UDP flow the guest opens is re-made from this process
//! with ordinary host sockets, after the egress policy allowed it, so no packet from the
//! guest ever reaches the host's network as such. DNS at `GATEWAY_ADDR:53` is answered under
//! the same policy. Port forwards carry host connections and datagrams the other way.
//!
//! Everything the guest sends is untrusted: frames, sizes and queues have bounds, and no
//! input makes the gateway panic. The binary (src/main.rs) reads its config on stdin, takes
//! its descriptors (`gateway_fds`), installs its seccomp policy and runs `gateway::run`.

pub mod dns;
pub mod dns_proxy;
pub mod error;
pub mod event;
pub mod frames;
pub mod gateway;
pub mod packet;
pub mod policy;
pub mod port_pool;
pub mod stack;
pub mod startup;
pub mod stats;
pub mod sys;
pub mod tcp;
pub mod udp;
pub mod upstream;
