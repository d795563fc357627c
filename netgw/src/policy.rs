//! The egress policy as the gateway applies it: which (address, port) the guest may reach
//! and where on the host that is, which names its DNS questions may ask, and the addresses
//! an allow-list learns from the answers to those questions (for as long as their TTL).
//!
//! Addresses that are never a destination, whatever the policy: 0.0.0.0/8, 127.0.0.0/8
//! (the host's loopback is reached through `GATEWAY_ADDR`, when allowed), multicast and
//! 240.0.0.0/4 (broadcast included), and the rest of the box's own link. An allow-list
//! never learns those from DNS, nor link-local addresses or `GATEWAY_ADDR`: a name's DNS
//! records, which whoever runs the name's zone controls, must not open the host's loopback
//! or the cloud metadata service (DNS rebinding); only a network rule can.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use boxlite_vmspec::network::{AllowTarget, EgressPolicy, GATEWAY_ADDR, GUEST_ADDR, PREFIX_LEN};

/// A learned address lives at least this long, whatever its TTL says.
pub const MIN_TTL: Duration = Duration::from_secs(1);
/// ...and at most this long.
pub const MAX_TTL: Duration = Duration::from_secs(3600);
/// Learned (address, port) entries kept at once.
pub const MAX_LEARNED: usize = 4096;

/// What the DNS proxy does with a question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsVerdict {
    /// Answer REFUSED: the box may not resolve anything.
    Refuse,
    /// Answer NXDOMAIN: no rule names it.
    NoSuchName,
    /// Ask the upstreams; learn the answer's A records for these ports (None: any port),
    /// unless the list is empty (a policy that needs no learning).
    Forward { learn_ports: Vec<Option<u16>> },
}

pub struct Egress {
    policy: EgressPolicy,
    /// address -> (port or any, expiry), at most `MAX_LEARNED` entries in all.
    learned: HashMap<Ipv4Addr, Vec<(Option<u16>, Instant)>>,
    learned_count: usize,
}

impl Egress {
    pub fn new(policy: EgressPolicy) -> Egress {
        Egress { policy, learned: HashMap::new(), learned_count: 0 }
    }

    /// Where on the host a connection or datagram to `dst` goes, if the policy allows it.
    pub fn allows(&self, dst: SocketAddrV4, now: Instant) -> Option<SocketAddr> {
        let (addr, port) = (*dst.ip(), dst.port());
        let host = if addr == GATEWAY_ADDR { Ipv4Addr::LOCALHOST } else { addr };
        let target = Some(SocketAddr::V4(SocketAddrV4::new(host, port)));
        if port == 0 || (addr != GATEWAY_ADDR && never_a_destination(addr)) {
            return None;
        }
        match &self.policy {
            EgressPolicy::DenyAll => None,
            EgressPolicy::Outbound { allow_host_loopback } => {
                let allowed = if addr == GATEWAY_ADDR { *allow_host_loopback } else { !is_link_local(addr) };
                allowed.then_some(target?)
            }
            EgressPolicy::AllowList { rules } => {
                let by_rule = rules.iter().any(|r| r.matches_addr(addr, port));
                let by_name =
                    self.learned.get(&addr).is_some_and(|e| e.iter().any(|(p, until)| *until > now && p.is_none_or(|p| p == port)));
                (by_rule || by_name).then_some(target?)
            }
        }
    }

    /// What to do with a DNS question for `name` (None: not a host name).
    pub fn dns(&self, name: Option<&str>) -> DnsVerdict {
        match &self.policy {
            EgressPolicy::DenyAll => DnsVerdict::Refuse,
            EgressPolicy::Outbound { .. } => DnsVerdict::Forward { learn_ports: Vec::new() },
            EgressPolicy::AllowList { .. } => match name {
                Some(name) => {
                    let ports = self.ports_for(name);
                    if ports.is_empty() {
                        DnsVerdict::NoSuchName
                    } else {
                        DnsVerdict::Forward { learn_ports: ports }
                    }
                }
                None => DnsVerdict::NoSuchName,
            },
        }
    }

    /// The ports the rules naming `name` allow (None: any), empty if no rule names it.
    pub fn ports_for(&self, name: &str) -> Vec<Option<u16>> {
        let EgressPolicy::AllowList { rules } = &self.policy else { return Vec::new() };
        let ports: Vec<Option<u16>> = rules.iter().filter(|r| r.matches_name(name)).map(|r| r.port).collect();
        if ports.contains(&None) {
            return vec![None];
        }
        let mut unique = ports;
        unique.sort_unstable();
        unique.dedup();
        unique
    }

    /// The exact names of an allow-list, which the gateway resolves itself.
    pub fn names_to_resolve(&self) -> Vec<String> {
        let EgressPolicy::AllowList { rules } = &self.policy else { return Vec::new() };
        let mut names: Vec<String> = rules
            .iter()
            .filter_map(|r| match &r.target {
                AllowTarget::Name { name } => Some(name.clone()),
                _ => None,
            })
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Allows `addrs` (from a DNS answer: address, TTL seconds) on `ports` until their TTL
    /// (clamped to MIN_TTL..MAX_TTL) plus `grace` ends. Returns how many were learned.
    pub fn learn(&mut self, ports: &[Option<u16>], addrs: &[(Ipv4Addr, u32)], grace: Duration, now: Instant) -> usize {
        let mut learned = 0;
        for &(addr, ttl) in addrs {
            if never_learned(addr) {
                continue;
            }
            let until = now + Duration::from_secs(u64::from(ttl)).clamp(MIN_TTL, MAX_TTL) + grace;
            for &port in ports {
                if self.remember(addr, port, until, now) {
                    learned += 1;
                }
            }
        }
        learned
    }

    fn remember(&mut self, addr: Ipv4Addr, port: Option<u16>, until: Instant, now: Instant) -> bool {
        if let Some(entry) = self.learned.get_mut(&addr).and_then(|e| e.iter_mut().find(|(p, _)| *p == port)) {
            entry.1 = entry.1.max(until);
            return true;
        }
        if self.learned_count >= MAX_LEARNED {
            self.forget_expired(now);
            if self.learned_count >= MAX_LEARNED {
                return false;
            }
        }
        self.learned.entry(addr).or_default().push((port, until));
        self.learned_count += 1;
        true
    }

    /// Drops learned entries whose time is up.
    pub fn forget_expired(&mut self, now: Instant) {
        let mut count = 0;
        self.learned.retain(|_, entries| {
            entries.retain(|(_, until)| *until > now);
            count += entries.len();
            !entries.is_empty()
        });
        self.learned_count = count;
    }
}

/// Never a destination under any policy (see the module doc).
fn never_a_destination(addr: Ipv4Addr) -> bool {
    let on_our_link = u32::from(addr) >> (32 - PREFIX_LEN) == u32::from(GUEST_ADDR) >> (32 - PREFIX_LEN);
    addr.octets()[0] == 0 || addr.is_loopback() || addr.is_multicast() || addr.octets()[0] >= 240 || on_our_link
}

fn is_link_local(addr: Ipv4Addr) -> bool {
    addr.is_link_local()
}

/// Never allowed because a DNS answer says so.
fn never_learned(addr: Ipv4Addr) -> bool {
    never_a_destination(addr) || is_link_local(addr) || addr == GATEWAY_ADDR
}

#[cfg(test)]
mod tests {
    use super::*;
    use boxlite_vmspec::network::AllowRule;

    fn v4(a: [u8; 4], port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::from(a), port)
    }

    fn allow_list(rules: &[&str]) -> Egress {
        Egress::new(EgressPolicy::AllowList { rules: rules.iter().map(|r| AllowRule::parse(r).unwrap()).collect() })
    }

    #[test]
    fn outbound_allows_the_internet_but_not_the_special_ranges() {
        let now = Instant::now();
        let open = Egress::new(EgressPolicy::Outbound { allow_host_loopback: false });
        assert_eq!(open.allows(v4([93, 184, 216, 34], 443), now), Some("93.184.216.34:443".parse().unwrap()));
        for denied in [
            [169, 254, 169, 254],
            [127, 0, 0, 1],
            [0, 0, 0, 0],
            [224, 0, 0, 251],
            [255, 255, 255, 255],
            [10, 0, 2, 3],
            GATEWAY_ADDR.octets(),
        ] {
            assert_eq!(open.allows(v4(denied, 80), now), None, "{denied:?}");
        }
        let loopback = Egress::new(EgressPolicy::Outbound { allow_host_loopback: true });
        assert_eq!(loopback.allows(SocketAddrV4::new(GATEWAY_ADDR, 8080), now), Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(loopback.allows(v4([127, 0, 0, 1], 8080), now), None, "the loopback is reached through the gateway only");
        assert_eq!(Egress::new(EgressPolicy::DenyAll).allows(v4([1, 1, 1, 1], 53), now), None);
    }

    #[test]
    fn allow_lists_allow_their_networks_and_ports() {
        let now = Instant::now();
        let egress = allow_list(&["10.2.2.2:8080", "192.0.2.0/24", "169.254.169.254:80", "pypi.org:443"]);
        assert_eq!(egress.allows(SocketAddrV4::new(GATEWAY_ADDR, 8080), now), None);
        assert!(egress.allows(v4([10, 2, 2, 2], 8080), now).is_some());
        assert!(egress.allows(v4([10, 2, 2, 2], 8081), now).is_none());
        assert!(egress.allows(v4([192, 0, 2, 200], 1), now).is_some());
        assert!(egress.allows(v4([169, 254, 169, 254], 80), now).is_some(), "a network rule may name the metadata service");
        let gateway = allow_list(&["10.0.2.2:5432"]);
        assert_eq!(gateway.allows(SocketAddrV4::new(GATEWAY_ADDR, 5432), now), Some("127.0.0.1:5432".parse().unwrap()));
        assert_eq!(gateway.allows(SocketAddrV4::new(GATEWAY_ADDR, 5433), now), None);
    }

    #[test]
    fn names_are_answered_by_rule_and_their_addresses_learned_until_the_ttl() {
        let now = Instant::now();
        let mut egress = allow_list(&["pypi.org:443", "pypi.org:80", "*.github.com"]);
        assert_eq!(egress.dns(Some("pypi.org")), DnsVerdict::Forward { learn_ports: vec![Some(80), Some(443)] });
        assert_eq!(egress.dns(Some("api.github.com")), DnsVerdict::Forward { learn_ports: vec![None] });
        assert_eq!(egress.dns(Some("evil.org")), DnsVerdict::NoSuchName);
        assert_eq!(egress.dns(None), DnsVerdict::NoSuchName);
        assert_eq!(egress.names_to_resolve(), vec!["pypi.org".to_string()]);
        let addr = v4([151, 101, 0, 223], 443);
        assert!(egress.allows(addr, now).is_none());
        assert_eq!(egress.learn(&[Some(443)], &[(*addr.ip(), 60)], Duration::ZERO, now), 1);
        assert!(egress.allows(addr, now).is_some());
        assert!(egress.allows(v4([151, 101, 0, 223], 22), now).is_none());
        assert!(egress.allows(addr, now + Duration::from_secs(61)).is_none(), "expired with its TTL");
        // A zero TTL still lives MIN_TTL; a huge one at most MAX_TTL.
        egress.learn(&[None], &[(Ipv4Addr::new(1, 1, 1, 1), 0), (Ipv4Addr::new(2, 2, 2, 2), u32::MAX)], Duration::ZERO, now);
        assert!(egress.allows(v4([1, 1, 1, 1], 9), now + MIN_TTL / 2).is_some());
        assert!(egress.allows(v4([2, 2, 2, 2], 9), now + MAX_TTL + Duration::from_secs(1)).is_none());
        egress.forget_expired(now + MAX_TTL * 2);
        assert_eq!(egress.learned_count, 0);
    }

    #[test]
    fn dns_answers_never_open_the_loopback_the_link_or_metadata() {
        let now = Instant::now();
        let mut egress = allow_list(&["rebind.example"]);
        let hostile =
            [GATEWAY_ADDR, Ipv4Addr::LOCALHOST, Ipv4Addr::new(169, 254, 169, 254), Ipv4Addr::new(10, 0, 2, 15), Ipv4Addr::UNSPECIFIED];
        let records: Vec<_> = hostile.iter().map(|a| (*a, 60)).collect();
        assert_eq!(egress.learn(&[None], &records, Duration::ZERO, now), 0);
        for addr in hostile {
            assert!(egress.allows(SocketAddrV4::new(addr, 80), now).is_none(), "{addr}");
        }
    }

    #[test]
    fn the_learned_set_is_bounded() {
        let now = Instant::now();
        let mut egress = allow_list(&["many.example"]);
        let records: Vec<_> = (0..MAX_LEARNED as u32 + 100).map(|i| (Ipv4Addr::from(0x0b00_0000 + i), 60)).collect();
        assert_eq!(egress.learn(&[None], &records, Duration::ZERO, now), MAX_LEARNED);
        // Once the old ones expire, new ones fit again.
        let later = now + Duration::from_secs(120);
        assert_eq!(egress.learn(&[None], &[(Ipv4Addr::new(12, 0, 0, 1), 60)], Duration::ZERO, later), 1);
        assert_eq!(egress.learned_count, 1);
    }
}
