//! A box's network, as the library, the shim, the gateway (`boxlite-netgw`) and the agent
//! see it: the fixed addresses of the box's private link, the egress policy and its rules,
//! port forwards, the gateway's configuration and the figures it reports.
//!
//! Every box has a private link of its own: the guest is `GUEST_ADDR`/24 on eth0, and the
//! gateway (a user-mode TCP/IP stack in a jailed host process) answers at `GATEWAY_ADDR`,
//! which is also the box's DNS server. The gateway makes the guest's connections from the
//! host's network namespace, so every packet leaving a box passes its policy.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

/// The guest's address on eth0.
pub const GUEST_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
/// The gateway's address: the default route, the DNS server, and the way to the host's own
/// loopback (connections to it are made to 127.0.0.1 on the host, when the policy allows).
pub const GATEWAY_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// The link's prefix length (10.0.2.0/24).
pub const PREFIX_LEN: u8 = 24;
/// The guest NIC's MAC address (locally administered).
pub const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
/// The gateway's MAC address.
pub const GATEWAY_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x02];
/// The guest's MTU (the frame protocol carries frames of up to MTU + 14 bytes).
pub const MTU: usize = 1500;

/// The value of the kernel command line's `boxlite.net=` (`boxlite_protocol::CMDLINE_NETWORK`,
/// which the agent reads) for a VM with a network device.
pub fn guest_cmdline_value() -> String {
    format!("{GUEST_ADDR}/{PREFIX_LEN},{GATEWAY_ADDR},{GATEWAY_ADDR}")
}

/// The descriptors the shim hands the gateway (stdin carries its config as one JSON line).
pub mod gateway_fds {
    /// The unix stream socket to the VMM: frames as a 4-byte big-endian length, then the
    /// Ethernet frame (QEMU's `-netdev stream` and libkrun's `krun_add_net_unixstream`).
    pub const FRAMES: i32 = 3;
    /// A regular file the gateway rewrites with its `NetworkStats` (JSON).
    pub const STATS: i32 = 4;
    /// The forward sockets, in the order of `GatewayConfig::forwards`: a listening TCP
    /// socket or a bound UDP socket each, bound by the shim on the host.
    pub const FIRST_FORWARD: i32 = 5;
}

/// Where a box's traffic may go. Port forwards (inbound) work in every policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "snake_case")]
pub enum EgressPolicy {
    /// Nothing leaves the box (used for network mode "none" with port forwards: the device
    /// exists only for inbound connections). DNS answers REFUSED.
    DenyAll,
    /// Any address but the link-local range (169.254.0.0/16: cloud metadata services),
    /// multicast and broadcast, and the host's own loopback (through `GATEWAY_ADDR`)
    /// unless `allow_host_loopback`.
    Outbound {
        #[serde(default)]
        allow_host_loopback: bool,
    },
    /// Only what a rule allows. DNS answers names that a rule names, NXDOMAIN for the rest.
    AllowList { rules: Vec<AllowRule> },
}

/// One entry of an allow-list: a network, an address or a DNS name, with an optional port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowRule {
    pub target: AllowTarget,
    /// None: every port.
    pub port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllowTarget {
    /// An IPv4 network (an address is a /32). `GATEWAY_ADDR` means the host's loopback.
    Net { addr: Ipv4Addr, prefix_len: u8 },
    /// Exactly this name (lowercase, no trailing dot): the addresses it resolves to are
    /// allowed for as long as the records' TTL says.
    Name { name: String },
    /// `*.suffix`: any name below the suffix (not the suffix itself).
    Subdomains { suffix: String },
}

impl AllowRule {
    /// Parses `CIDR`, `IP[:PORT]`, `NAME[:PORT]` or `*.NAME[:PORT]`
    /// (e.g. `10.0.0.0/8`, `192.0.2.7:443`, `pypi.org:443`, `*.github.com`).
    pub fn parse(text: &str) -> Result<AllowRule, String> {
        let text = text.trim();
        let bad = |why: &str| {
            Err(format!(
                "allow rule {text:?}: {why}; write a network (10.0.0.0/8), an address with an optional port \
                 (192.0.2.7:443) or a DNS name with an optional port (pypi.org:443, *.github.com)"
            ))
        };
        if text.is_empty() {
            return bad("it is empty");
        }
        if let Some((addr, prefix)) = text.split_once('/') {
            let Ok(addr) = addr.parse::<Ipv4Addr>() else {
                return if addr.parse::<std::net::Ipv6Addr>().is_ok() {
                    bad("IPv6 is not routed by the gateway")
                } else {
                    bad("not an IPv4 network")
                };
            };
            let Some(prefix_len) = prefix.parse::<u8>().ok().filter(|p| *p <= 32) else {
                return bad("the prefix length must be 0 to 32");
            };
            let mask = prefix_mask(prefix_len);
            if u32::from(addr) & !mask != 0 {
                return bad("the address has bits set past the prefix length");
            }
            return Ok(AllowRule { target: AllowTarget::Net { addr, prefix_len }, port: None });
        }
        if text.contains("::") || text.starts_with('[') || text.matches(':').count() > 1 {
            return bad("IPv6 is not routed by the gateway");
        }
        let (host, port) = match text.rsplit_once(':') {
            Some((host, port)) => match port.parse::<u16>() {
                Ok(p) if p > 0 => (host, Some(p)),
                _ => return bad("the port must be 1 to 65535"),
            },
            None => (text, None),
        };
        if let Ok(addr) = host.parse::<Ipv4Addr>() {
            return Ok(AllowRule { target: AllowTarget::Net { addr, prefix_len: 32 }, port });
        }
        let (subdomains, name) = match host.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, host),
        };
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        if let Err(why) = check_dns_name(&name) {
            return bad(&why);
        }
        let target = if subdomains { AllowTarget::Subdomains { suffix: name } } else { AllowTarget::Name { name } };
        Ok(AllowRule { target, port })
    }

    /// Whether a connection to `addr:port` matches this rule's network (name rules never
    /// match an address directly: the gateway learns their addresses by resolving them).
    pub fn matches_addr(&self, addr: Ipv4Addr, port: u16) -> bool {
        let port_ok = self.port.unwrap_or(port) == port;
        match &self.target {
            AllowTarget::Net { addr: net, prefix_len } => {
                let mask = prefix_mask(*prefix_len);
                port_ok && u32::from(addr) & mask == u32::from(*net) & mask
            }
            _ => false,
        }
    }

    /// Whether this rule names `name` (lowercase, no trailing dot).
    pub fn matches_name(&self, name: &str) -> bool {
        match &self.target {
            AllowTarget::Name { name: n } => n == name,
            AllowTarget::Subdomains { suffix } => {
                name.len() > suffix.len() + 1 && name.ends_with(suffix.as_str()) && {
                    let cut = name.len() - suffix.len();
                    name.as_bytes()[cut - 1] == b'.'
                }
            }
            AllowTarget::Net { .. } => false,
        }
    }
}

impl fmt::Display for AllowRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            AllowTarget::Net { addr, prefix_len: 32 } => write!(f, "{addr}")?,
            AllowTarget::Net { addr, prefix_len } => return write!(f, "{addr}/{prefix_len}"),
            AllowTarget::Name { name } => write!(f, "{name}")?,
            AllowTarget::Subdomains { suffix } => write!(f, "*.{suffix}")?,
        }
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => Ok(()),
        }
    }
}

fn prefix_mask(prefix_len: u8) -> u32 {
    if prefix_len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix_len))
    }
}

/// A DNS name as RFC 1035 allows it (letters, digits, hyphens and underscores per label,
/// labels of 1 to 63 bytes, 253 in all).
fn check_dns_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 253 {
        return Err("a DNS name has 1 to 253 characters".into());
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each label of a DNS name has 1 to 63 characters".into());
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') || label.starts_with('-') {
            return Err(format!("{label:?} is not a DNS label (letters, digits, '-', '_')"));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// A host port forwarded to a guest port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortForward {
    pub protocol: Protocol,
    /// The host address to listen on (127.0.0.1 unless asked otherwise).
    pub host_addr: IpAddr,
    /// 0: the host picks a free port, reported once the box runs.
    pub host_port: u16,
    pub guest_port: u16,
}

impl PortForward {
    /// Parses docker's form: `[HOST_ADDR:]HOST_PORT:GUEST_PORT[/tcp|/udp]`, or `GUEST_PORT`
    /// alone (host port picked). IPv6 host addresses go in brackets: `[::1]:8080:80`.
    pub fn parse(text: &str) -> Result<PortForward, String> {
        let bad = |why: &str| {
            Err(format!(
                "port forward {text:?}: {why}; write [HOST_ADDR:]HOST_PORT:GUEST_PORT[/tcp|/udp] \
                 (e.g. 8080:80, 127.0.0.1:0:53/udp; host port 0 picks a free one)"
            ))
        };
        let (ports, protocol) = match text.rsplit_once('/') {
            Some((ports, "tcp")) => (ports, Protocol::Tcp),
            Some((ports, "udp")) => (ports, Protocol::Udp),
            Some(_) => return bad("the protocol must be tcp or udp"),
            None => (text, Protocol::Tcp),
        };
        let (addr, rest) = if let Some(rest) = ports.strip_prefix('[') {
            let Some((addr, rest)) = rest.split_once("]:") else { return bad("an IPv6 address needs ']:' after it") };
            (Some(addr), rest)
        } else if ports.matches(':').count() == 2 {
            let (addr, rest) = ports.split_once(':').expect("two colons");
            (Some(addr), rest)
        } else {
            (None, ports)
        };
        let host_addr = match addr {
            Some(a) => match a.parse::<IpAddr>() {
                Ok(ip) => ip,
                Err(_) => return bad(&format!("{a:?} is not an IP address")),
            },
            None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        let (host_port, guest_port) = match rest.split_once(':') {
            Some((h, g)) => (h, g),
            None => ("0", rest),
        };
        let Ok(host_port) = host_port.parse::<u16>() else { return bad("the host port must be 0 to 65535") };
        let Some(guest_port) = guest_port.parse::<u16>().ok().filter(|p| *p > 0) else {
            return bad("the guest port must be 1 to 65535");
        };
        Ok(PortForward { protocol, host_addr, host_port, guest_port })
    }
}

impl fmt::Display for PortForward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addr = SocketAddr::new(self.host_addr, self.host_port);
        write!(f, "{addr}:{}/{}", self.guest_port, self.protocol)
    }
}

/// The network part of a VM spec (absent: the VM has no device but its loopback).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkSpec {
    pub egress: EgressPolicy,
    /// Upstream DNS servers the gateway forwards the box's queries to.
    pub dns_upstreams: Vec<SocketAddr>,
    pub forwards: Vec<PortForward>,
    /// The gateway program (absolute path, resolved by the library).
    pub gateway: std::path::PathBuf,
}

/// What the gateway reads on stdin (one JSON line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayConfig {
    pub egress: EgressPolicy,
    pub dns_upstreams: Vec<SocketAddr>,
    /// One per forward descriptor (`gateway_fds::FIRST_FORWARD` + index): the protocol of
    /// the socket and the guest port its traffic goes to.
    pub forwards: Vec<ForwardTarget>,
    #[serde(default)]
    pub limits: GatewayLimits,
    /// Install the `netgw` seccomp policy on itself once set up (off only when the box's
    /// seccomp protection is turned off, for debugging).
    #[serde(default = "seccomp_on")]
    pub seccomp: bool,
}

fn seccomp_on() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardTarget {
    pub protocol: Protocol,
    pub guest_port: u16,
}

/// Bounds on what one box can make its gateway hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GatewayLimits {
    /// TCP connections open at once (outbound and forwarded together).
    pub max_tcp_connections: u32,
    /// UDP flows (guest port, destination) open at once.
    pub max_udp_flows: u32,
    /// A UDP flow with no traffic for this long is closed.
    pub udp_idle_timeout_ms: u64,
    /// An outbound connect that takes longer fails (the guest sees a reset).
    pub connect_timeout_ms: u64,
    /// DNS queries in flight at once.
    pub max_dns_in_flight: u32,
}

impl Default for GatewayLimits {
    fn default() -> Self {
        GatewayLimits {
            max_tcp_connections: 1024,
            max_udp_flows: 256,
            udp_idle_timeout_ms: 60_000,
            connect_timeout_ms: 10_000,
            max_dns_in_flight: 64,
        }
    }
}

/// A forward as bound on the host: `host_port` is the real port, never 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundForward {
    pub protocol: Protocol,
    pub host_addr: IpAddr,
    pub host_port: u16,
    pub guest_port: u16,
}

/// What the gateway counts for its box (it rewrites the stats file with these as JSON).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetworkStats {
    /// Payload bytes from the guest to the host's network (TCP and UDP), forwards included.
    pub bytes_out: u64,
    /// Payload bytes from the host's network to the guest.
    pub bytes_in: u64,
    /// TCP connections the guest opened that the policy allowed.
    pub tcp_connections: u64,
    /// TCP connections through port forwards (host -> guest).
    pub forwarded_connections: u64,
    /// UDP flows opened (outbound and forwarded).
    pub udp_flows: u64,
    /// Connections and datagrams refused by the policy.
    pub denied: u64,
    pub dns_queries: u64,
    /// Queries answered NXDOMAIN or REFUSED by the policy.
    pub dns_denied: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_rules_parse_networks_addresses_and_names() {
        let net = AllowRule::parse("10.0.0.0/8").unwrap();
        assert!(net.matches_addr(Ipv4Addr::new(10, 9, 8, 7), 1));
        assert!(!net.matches_addr(Ipv4Addr::new(11, 0, 0, 1), 1));
        let addr = AllowRule::parse("192.0.2.7:443").unwrap();
        assert!(addr.matches_addr(Ipv4Addr::new(192, 0, 2, 7), 443));
        assert!(!addr.matches_addr(Ipv4Addr::new(192, 0, 2, 7), 80));
        let name = AllowRule::parse("PyPI.org.:443").unwrap();
        assert_eq!(name, AllowRule { target: AllowTarget::Name { name: "pypi.org".into() }, port: Some(443) });
        assert!(name.matches_name("pypi.org") && !name.matches_name("evil-pypi.org"));
        let wild = AllowRule::parse("*.github.com").unwrap();
        assert!(wild.matches_name("api.github.com") && !wild.matches_name("github.com") && !wild.matches_name("xgithub.com"));
        assert_eq!(wild.to_string(), "*.github.com");
        assert_eq!(addr.to_string(), "192.0.2.7:443");
    }

    #[test]
    fn bad_allow_rules_say_why() {
        for (text, why) in [
            ("", "empty"),
            ("10.0.0.1/8", "bits set"),
            ("10.0.0.0/33", "0 to 32"),
            ("::1", "IPv6"),
            ("2001:db8::/32", "IPv6"),
            ("pypi.org:0", "1 to 65535"),
            ("bad name", "DNS label"),
        ] {
            let err = AllowRule::parse(text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn port_forwards_parse_dockers_form() {
        let f = PortForward::parse("8080:80").unwrap();
        assert_eq!(f, PortForward { protocol: Protocol::Tcp, host_addr: Ipv4Addr::LOCALHOST.into(), host_port: 8080, guest_port: 80 });
        let f = PortForward::parse("0.0.0.0:0:53/udp").unwrap();
        assert_eq!((f.protocol, f.host_addr, f.host_port, f.guest_port), (Protocol::Udp, Ipv4Addr::UNSPECIFIED.into(), 0, 53));
        let f = PortForward::parse("[::1]:9000:90").unwrap();
        assert_eq!(f.host_addr, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(PortForward::parse("80").unwrap().host_port, 0);
        assert_eq!(PortForward::parse("8080:80/udp").unwrap().to_string(), "127.0.0.1:8080:80/udp");
        for text in ["80/sctp", "x:80", "8080:0", "70000:80", "host:1:2"] {
            assert!(PortForward::parse(text).is_err(), "{text}");
        }
    }
}
