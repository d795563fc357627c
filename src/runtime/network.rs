//! A box's network as the library's user sets it: the mode (none, outbound, allow-list),
//! port forwards and DNS servers; checked at create and turned into the VM spec's
//! `NetworkSpec` at boot. The policy itself is enforced by the per-box gateway process
//! (`boxlite-netgw`), outside the guest (docs/network.md).

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use boxlite_vmspec::network::{AllowRule, AllowTarget, BoundForward, NetworkStats, PortForward, Protocol};
use boxlite_vmspec::network::{EgressPolicy, NetworkSpec};

use crate::runtime::error::{Error, Result};
use crate::runtime::helpers;

/// Where a box's outbound traffic may go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// No network device but the loopback (port forwards still work: they are inbound).
    None,
    /// Anywhere but link-local addresses (cloud metadata) and the host's own loopback.
    #[default]
    Outbound,
    /// Only what `NetworkOptions::allow` names; DNS answers only the names it names.
    AllowList,
}

impl NetworkMode {
    /// Parses `none`, `outbound` or `allow-list` (the CLI's and the C API's words).
    pub fn parse(text: &str) -> Result<NetworkMode> {
        match text {
            "none" => Ok(NetworkMode::None),
            "outbound" => Ok(NetworkMode::Outbound),
            "allow-list" | "allow_list" | "allowlist" => Ok(NetworkMode::AllowList),
            _ => Err(Error::InvalidOption { field: "network", reason: format!("{text:?}: use none, outbound or allow-list") }),
        }
    }
}

/// The most allow rules, forwards and DNS servers a box may have: a spec is one line of at
/// most 1 MiB, and the gateway checks every rule on every new connection.
const MAX_ALLOW_RULES: usize = 1024;
const MAX_FORWARDS: usize = 256;
const MAX_DNS_SERVERS: usize = 8;

/// A box's network. The default: full outbound, the host's DNS servers, no forwards.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetworkOptions {
    pub mode: NetworkMode,
    /// The allow-list (mode `AllowList` only).
    pub allow: Vec<AllowRule>,
    /// Let the box reach the host's own 127.0.0.1 through its gateway address (10.0.2.2),
    /// in mode `Outbound`. Off by default: services on the host's loopback often trust
    /// whoever connects. (In an allow-list, a rule naming 10.0.2.2 does the same.)
    pub allow_host_loopback: bool,
    /// Host ports forwarded into the box (TCP and UDP; host port 0 picks one).
    pub port_forwards: Vec<PortForward>,
    /// Upstream DNS servers for the box's queries; empty: the host's /etc/resolv.conf.
    pub dns_servers: Vec<SocketAddr>,
}

impl NetworkOptions {
    /// No device but the loopback.
    pub fn none() -> NetworkOptions {
        NetworkOptions { mode: NetworkMode::None, ..Default::default() }
    }

    /// Only what the rules allow.
    pub fn allow_list(rules: Vec<AllowRule>) -> NetworkOptions {
        NetworkOptions { mode: NetworkMode::AllowList, allow: rules, ..Default::default() }
    }

    /// Checks what can be checked before the box runs (ports in use show at start).
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason: String| Err(Error::InvalidOption { field: "network", reason });
        if !self.allow.is_empty() && self.mode != NetworkMode::AllowList {
            return invalid(format!("allow rules ({}) need network mode allow-list", self.allow[0]));
        }
        if self.allow_host_loopback && self.mode != NetworkMode::Outbound {
            return invalid(
                "allow_host_loopback is for network mode outbound; in an allow-list, add a rule for 10.0.2.2[:PORT] instead".into(),
            );
        }
        if self.allow.len() > MAX_ALLOW_RULES {
            return invalid(format!("{} allow rules; at most {MAX_ALLOW_RULES}", self.allow.len()));
        }
        if self.port_forwards.len() > MAX_FORWARDS {
            return invalid(format!("{} port forwards; at most {MAX_FORWARDS}", self.port_forwards.len()));
        }
        if self.dns_servers.len() > MAX_DNS_SERVERS {
            return invalid(format!("{} DNS servers; at most {MAX_DNS_SERVERS}", self.dns_servers.len()));
        }
        if let Some(server) = self.dns_servers.iter().find(|s| s.port() == 0) {
            return invalid(format!("DNS server {server}: port 0; DNS servers listen on a port (usually 53)"));
        }
        if self.mode == NetworkMode::None && !self.dns_servers.is_empty() {
            return invalid("DNS servers need a network mode other than none".into());
        }
        let mut host_ends = HashSet::new();
        let mut guest_ends = HashSet::new();
        for forward in &self.port_forwards {
            if forward.guest_port == 0 {
                return invalid(format!("port forward {forward}: the guest port must be 1 to 65535"));
            }
            if forward.host_port != 0 && !host_ends.insert((forward.protocol, forward.host_addr, forward.host_port)) {
                return invalid(format!(
                    "port forward {forward}: that host address and port are forwarded twice; give each forward its own host port (or 0)"
                ));
            }
            if !guest_ends.insert((forward.protocol, forward.guest_port, forward.host_addr)) {
                return invalid(format!(
                    "port forward {forward}: the guest port is forwarded twice from the same host address; one forward per guest port and host address"
                ));
            }
        }
        Ok(())
    }

    /// The VM spec's network: None when the box gets no device (mode none without forwards).
    pub(crate) fn spec(&self) -> Result<Option<NetworkSpec>> {
        let egress = match self.mode {
            NetworkMode::None if self.port_forwards.is_empty() => return Ok(None),
            NetworkMode::None => EgressPolicy::DenyAll,
            NetworkMode::Outbound => EgressPolicy::Outbound { allow_host_loopback: self.allow_host_loopback },
            NetworkMode::AllowList => EgressPolicy::AllowList { rules: self.allow.clone() },
        };
        let dns_upstreams = match (&egress, self.dns_servers.is_empty()) {
            (EgressPolicy::DenyAll, _) => Vec::new(),
            (_, false) => self.dns_servers.clone(),
            (_, true) => host_dns_servers(Path::new("/etc/resolv.conf")),
        };
        if dns_upstreams.is_empty() && egress != EgressPolicy::DenyAll {
            tracing::warn!("no DNS server in /etc/resolv.conf and none given: names will not resolve in the box");
        }
        let gateway = std::fs::canonicalize(helpers::netgw()?).map_err(|e| Error::io("resolve the boxlite-netgw path", e))?;
        Ok(Some(NetworkSpec { egress, dns_upstreams, forwards: self.port_forwards.clone(), gateway }))
    }
}

/// `IP`, `[IPv6]` (port 53), `IP:PORT` or `[IPv6]:PORT`.
pub fn parse_dns_server(text: &str) -> Result<SocketAddr, Error> {
    let server = text
        .parse::<SocketAddr>()
        .ok()
        .or_else(|| {
            text.strip_prefix('[')
                .and_then(|t| t.strip_suffix(']'))
                .unwrap_or(text)
                .parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .ok_or_else(|| Error::InvalidOption {
            field: "dns",
            reason: format!("{text:?} is not a DNS server address; write IP or IP:PORT (192.0.2.53, 192.0.2.53:5353, [2001:db8::53]:53)"),
        })?;
    if server.port() == 0 {
        return Err(Error::InvalidOption { field: "dns", reason: format!("{text:?}: port 0; DNS servers listen on a port (usually 53)") });
    }
    Ok(server)
}

/// The `nameserver` lines of a resolv.conf, as port-53 addresses (at most `MAX_DNS_SERVERS`).
fn host_dns_servers(resolv_conf: &Path) -> Vec<SocketAddr> {
    let text = std::fs::read_to_string(resolv_conf).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next()).flatten()
        })
        // A zone index (fe80::1%eth0) cannot be parsed as IpAddr: such servers are skipped.
        .filter_map(|addr| addr.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .take(MAX_DNS_SERVERS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked_with_reasons() {
        let forward = PortForward::parse("8080:80").unwrap();
        let cases = [
            (NetworkOptions { allow: vec![AllowRule::parse("pypi.org").unwrap()], ..Default::default() }, "need network mode allow-list"),
            (NetworkOptions { allow_host_loopback: true, ..NetworkOptions::none() }, "for network mode outbound"),
            (NetworkOptions { port_forwards: vec![forward, forward], ..Default::default() }, "forwarded twice"),
            (NetworkOptions { dns_servers: vec!["10.0.0.1:0".parse().unwrap()], ..Default::default() }, "port 0"),
        ];
        for (options, why) in cases {
            let err = options.validate().unwrap_err().to_string();
            assert!(err.contains(why), "{options:?}: {err}");
        }
        let two_boxes_same_guest_port = NetworkOptions {
            port_forwards: vec![PortForward::parse("0:80").unwrap(), PortForward::parse("0:80/udp").unwrap()],
            ..Default::default()
        };
        two_boxes_same_guest_port.validate().unwrap();
        NetworkOptions::default().validate().unwrap();
    }

    #[test]
    fn modes_parse() {
        assert_eq!(NetworkMode::parse("allow-list").unwrap(), NetworkMode::AllowList);
        assert!(NetworkMode::parse("bridge").unwrap_err().to_string().contains("none, outbound or allow-list"));
    }

    #[test]
    fn host_dns_servers_come_from_nameserver_lines() {
        let dir = std::env::temp_dir().join(format!("boxlite-resolv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("resolv.conf");
        std::fs::write(&file, "# comment\nsearch example\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nnameserver ::1\n").unwrap();
        let servers = host_dns_servers(&file);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(servers, vec!["192.0.2.53:53".parse().unwrap(), "[::1]:53".parse().unwrap()]);
    }
}
