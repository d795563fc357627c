//! The box's network, as the kernel command line declares it
//! (`boxlite.net=<addr>/<prefix>,<gateway>,<dns>`, present only when the VM has a network
//! device): eth0's address and default route, and the DNS server that the box's processes
//! find in /etc/resolv.conf.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use boxlite_protocol::CMDLINE_NETWORK;
use nix::mount::{mount, MsFlags};

use crate::log;
use crate::rootfs::{self, Root};
use crate::sys;

/// The box's network device: the VMM gives the VM one virtio-net device, and the kernel
/// names it eth0 (nothing in the guest renames interfaces).
const INTERFACE: &str = "eth0";

/// How long the agent waits for eth0 to appear. virtio-net is probed before the kernel
/// starts /init, so it is normally there at once; the wait covers a late probe.
const INTERFACE_WAIT: Duration = Duration::from_secs(1);
const INTERFACE_POLL: Duration = Duration::from_millis(10);

/// Where the agent keeps the box's resolv.conf when it mounts it into the box's root: in the
/// agent's own /run (a tmpfs that pid1 mounts), never in the box's disk.
const RESOLV_CONF_SOURCE: &str = "/run/boxlite/resolv.conf";

/// The IPv4 settings of eth0, from `boxlite.net=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    /// The box's address on eth0.
    pub addr: Ipv4Addr,
    /// The link's prefix length (0 to 32).
    pub prefix_len: u8,
    /// The default route's next hop; on the link (checked when parsing).
    pub gateway: Ipv4Addr,
    /// The one DNS server in the box's resolv.conf.
    pub dns: Ipv4Addr,
}

impl Network {
    /// The first `boxlite.net=` on the kernel command line: `Ok(None)` when there is none (the
    /// VM has no network device), an error naming the value and its fault when it is bad.
    pub fn from_cmdline(cmdline: &str) -> Result<Option<Network>, String> {
        let prefix = format!("{CMDLINE_NETWORK}=");
        let Some(value) = cmdline.split_whitespace().find_map(|word| word.strip_prefix(&prefix)) else {
            return Ok(None);
        };
        Network::parse(value)
            .map(Some)
            .map_err(|e| format!("bad {CMDLINE_NETWORK}={value:?} on the kernel command line (want <addr>/<prefix>,<gateway>,<dns>): {e}"))
    }

    fn parse(value: &str) -> Result<Network, String> {
        let fields: Vec<&str> = value.split(',').collect();
        let [addr_prefix, gateway, dns] = fields[..] else {
            return Err(format!("{} comma-separated fields instead of 3", fields.len()));
        };
        let (addr, prefix_len) = addr_prefix.split_once('/').ok_or_else(|| format!("address {addr_prefix:?} has no /prefix"))?;
        let ipv4 = |what: &str, text: &str| text.parse::<Ipv4Addr>().map_err(|_| format!("{what} {text:?} is not an IPv4 address"));
        let addr = ipv4("address", addr)?;
        let prefix_len = match prefix_len.parse::<u8>() {
            Ok(len) if len <= 32 => len,
            _ => return Err(format!("prefix length {prefix_len:?} is not a number from 0 to 32")),
        };
        let gateway = ipv4("gateway", gateway)?;
        let dns = ipv4("DNS server", dns)?;
        if addr.is_unspecified() || addr.is_multicast() || addr.is_broadcast() {
            return Err(format!("{addr} cannot be an interface's address"));
        }
        let network = Network { addr, prefix_len, gateway, dns };
        // The default route is added without "onlink", so the kernel needs the gateway inside
        // eth0's own network; say so here rather than fail later with ENETUNREACH.
        let mask = u32::from(network.netmask());
        if u32::from(gateway) & mask != u32::from(addr) & mask || gateway == addr {
            return Err(format!("gateway {gateway} is not another address on {addr}/{prefix_len}"));
        }
        Ok(network)
    }

    /// The netmask of `prefix_len` (24: 255.255.255.0).
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(self.prefix_len)).unwrap_or(0))
    }
}

/// Gives eth0 its address, brings it up and adds the default route via the gateway, waiting
/// up to `INTERFACE_WAIT` for eth0 to appear. Failures are logged: the box still serves,
/// without a (working) network.
pub fn configure_interface(network: &Network) {
    if !wait_for_interface() {
        log!("network: {INTERFACE} did not appear within {} ms; the box has no network", INTERFACE_WAIT.as_millis());
        return;
    }
    let Network { addr, prefix_len, gateway, .. } = *network;
    disable_ipv6();
    let result = sys::set_interface_ipv4(INTERFACE, addr, network.netmask())
        .map_err(|e| format!("set its address {addr}/{prefix_len}: {e}"))
        .and_then(|()| sys::set_interface_up(INTERFACE).map_err(|e| format!("bring it up: {e}")))
        .and_then(|()| sys::add_default_route(gateway).map_err(|e| format!("add the default route via {gateway}: {e}")));
    match result {
        Ok(()) => log!("network: {INTERFACE} {addr}/{prefix_len}, default route via {gateway}"),
        Err(e) => log!("network: cannot configure {INTERFACE}: {e}; the box's network will not work"),
    }
}

/// No IPv6 on eth0: the gateway carries IPv4 only, and an IPv6 interface sends frames for
/// good (router solicitations at a doubling interval, MLD reports), each waking the
/// gateway and the host. Before the interface goes up, so not even the first ones leave.
fn disable_ipv6() {
    let knob = format!("/proc/sys/net/ipv6/conf/{INTERFACE}/disable_ipv6");
    match std::fs::write(&knob, "1") {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {} // a kernel without IPv6
        Err(e) => log!("network: cannot turn IPv6 off on {INTERFACE} ({knob}: {e}); it will send IPv6 frames the gateway drops"),
    }
}

fn wait_for_interface() -> bool {
    let present = Path::new("/sys/class/net").join(INTERFACE);
    let deadline = Instant::now() + INTERFACE_WAIT;
    loop {
        if present.exists() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(INTERFACE_POLL);
    }
}

/// The contents of the box's /etc/resolv.conf.
fn resolv_conf(network: &Network) -> String {
    let mut text = String::from("# Provided by boxlite at boot, from the box's network settings.\n");
    let _ = writeln!(text, "nameserver {}", network.dns);
    text
}

/// Makes /etc/resolv.conf in the box's root name the network's DNS server. Failures are
/// logged: the box still serves, but name lookups in it may fail.
///
/// In the initramfs (no box disk) the agent's root is the box's root, a tmpfs that lives as
/// long as the VM: the file is written there directly. On a box disk the image's file is left
/// untouched: the file is written to `RESOLV_CONF_SOURCE` and bind-mounted over the image's
/// /etc/resolv.conf, so the box reads ours while the disk keeps its own (as Docker does).
pub fn provide_resolv_conf(root: &Root, network: &Network) {
    let contents = resolv_conf(network);
    let result = if root.path == Path::new("/") { write_initramfs_resolv_conf(&contents) } else { mount_resolv_conf(root, &contents) };
    match result {
        Ok(()) => log!("network: /etc/resolv.conf names DNS server {}", network.dns),
        Err(e) => log!("network: /etc/resolv.conf not provided: {e}; name lookups in the box may fail"),
    }
}

fn write_initramfs_resolv_conf(contents: &str) -> Result<(), String> {
    std::fs::create_dir_all("/etc").map_err(|e| format!("mkdir /etc: {e}"))?;
    std::fs::write("/etc/resolv.conf", contents).map_err(|e| format!("write /etc/resolv.conf: {e}"))
}

/// Binds `RESOLV_CONF_SOURCE` over the root's /etc/resolv.conf.
///
/// The mount target is whatever the name /etc/resolv.conf itself is in the root, found with
/// openat2(RESOLVE_IN_ROOT | O_NOFOLLOW): /etc may be a symlink (kept inside the root), but the
/// last component is not followed. When it is a symlink (systemd images point it at
/// ../run/systemd/resolve/stub-resolv.conf, resolvconf at /run/resolvconf/resolv.conf) the
/// mount goes over the link itself, not over its target: the target is usually missing (no
/// resolver daemon runs in a box, and the image's /run is empty) and creating it would write
/// directories into the disk, and may be impossible on a read-only root; mounting over the
/// link writes nothing and works read-only, and a lookup of /etc/resolv.conf crosses the
/// mount before the link would be followed, so processes read our file. Since the link is
/// never followed it cannot lead out of the root either. The mount goes through
/// /proc/self/fd/N of the descriptor that was checked, so the kernel mounts on exactly that
/// file and never walks the box's path again.
///
/// When the root has no /etc/resolv.conf at all, an empty file is created to mount over (the
/// one trace left on the disk), if /etc exists and is writable.
fn mount_resolv_conf(root: &Root, contents: &str) -> Result<(), String> {
    let source = Path::new(RESOLV_CONF_SOURCE);
    if let Some(dir) = source.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    }
    std::fs::write(source, contents).map_err(|e| format!("write {RESOLV_CONF_SOURCE}: {e}"))?;
    let target = match root.open_in_root("/etc/resolv.conf", libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC) {
        Ok(fd) => {
            let stat = rootfs::fstat(&fd).map_err(|e| format!("stat the box's /etc/resolv.conf: {e}"))?;
            match stat.st_mode & libc::S_IFMT {
                libc::S_IFREG | libc::S_IFLNK => fd,
                _ => return Err("the box's /etc/resolv.conf is neither a file nor a symlink".to_string()),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_mount_target(root)?,
        Err(e) => return Err(format!("open the box's /etc/resolv.conf: {e}")),
    };
    let target_path = format!("/proc/self/fd/{}", target.as_raw_fd());
    mount(Some(source), target_path.as_str(), None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(|e| format!("bind-mount {RESOLV_CONF_SOURCE} over the box's /etc/resolv.conf: {e}"))
}

/// Creates an empty /etc/resolv.conf in the root to mount over.
fn create_mount_target(root: &Root) -> Result<OwnedFd, String> {
    let etc = root
        .open_in_root("/etc", libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .map_err(|e| format!("the box has no /etc/resolv.conf to mount over, and its /etc cannot be opened: {e}"))?;
    // /proc/self/fd/N names the directory just resolved inside the root; O_CREAT | O_EXCL
    // (create_new) never follows a symlink that may have appeared meanwhile.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(format!("/proc/self/fd/{}/resolv.conf", etc.as_raw_fd()))
        .map_err(|e| format!("the box has no /etc/resolv.conf to mount over, and one cannot be created (read-only root?): {e}"))?;
    Ok(file.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = "10.0.2.15/24,10.0.2.2,10.0.2.2";

    fn parse(cmdline: &str) -> Result<Option<Network>, String> {
        Network::from_cmdline(cmdline)
    }

    fn parse_value(value: &str) -> Result<Option<Network>, String> {
        parse(&format!("console=hvc0 {CMDLINE_NETWORK}={value} boxlite.port=1024"))
    }

    #[test]
    fn the_hosts_value_parses() {
        let network = parse_value(SPEC).unwrap().unwrap();
        let expected = Network {
            addr: Ipv4Addr::new(10, 0, 2, 15),
            prefix_len: 24,
            gateway: Ipv4Addr::new(10, 0, 2, 2),
            dns: Ipv4Addr::new(10, 0, 2, 2),
        };
        assert_eq!(network, expected);
        assert_eq!(network.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        // The key may come anywhere on the line; the DNS server need not be on the link.
        let other = parse(&format!("{CMDLINE_NETWORK}=192.168.7.9/16,192.168.0.1,1.1.1.1 quiet")).unwrap().unwrap();
        assert_eq!((other.prefix_len, other.gateway, other.dns), (16, Ipv4Addr::new(192, 168, 0, 1), Ipv4Addr::new(1, 1, 1, 1)));
        assert_eq!(other.netmask(), Ipv4Addr::new(255, 255, 0, 0));
    }

    #[test]
    fn netmasks_cover_every_prefix_edge() {
        let with_prefix = |prefix_len| Network { prefix_len, ..parse_value(SPEC).unwrap().unwrap() }.netmask();
        assert_eq!(with_prefix(0), Ipv4Addr::new(0, 0, 0, 0));
        assert_eq!(with_prefix(1), Ipv4Addr::new(128, 0, 0, 0));
        assert_eq!(with_prefix(31), Ipv4Addr::new(255, 255, 255, 254));
        assert_eq!(with_prefix(32), Ipv4Addr::new(255, 255, 255, 255));
    }

    #[test]
    fn no_key_means_no_network() {
        assert_eq!(parse(""), Ok(None));
        assert_eq!(parse("console=hvc0 boxlite.root=/dev/vda boxlite.port=1024"), Ok(None));
        // Only the exact key counts.
        assert_eq!(parse(&format!("{CMDLINE_NETWORK}x={SPEC} x{CMDLINE_NETWORK}={SPEC}")), Ok(None));
    }

    #[test]
    fn malformed_values_are_errors_that_say_why() {
        for (value, why) in [
            ("", "1 comma-separated fields"),
            ("10.0.2.15/24", "1 comma-separated fields"),
            ("10.0.2.15/24,10.0.2.2", "2 comma-separated fields"),
            ("10.0.2.15/24,10.0.2.2,10.0.2.2,", "4 comma-separated fields"),
            ("10.0.2.15/24,10.0.2.2,10.0.2.2,8.8.8.8", "4 comma-separated fields"),
            ("10.0.2.15,10.0.2.2,10.0.2.2", "has no /prefix"),
            ("10.0.2.256/24,10.0.2.2,10.0.2.2", "address \"10.0.2.256\""),
            ("10.0.2/24,10.0.2.2,10.0.2.2", "address \"10.0.2\""),
            ("fd00::15/64,10.0.2.2,10.0.2.2", "address \"fd00::15\""),
            ("/24,10.0.2.2,10.0.2.2", "address \"\""),
            ("10.0.2.15/33,10.0.2.2,10.0.2.2", "prefix length \"33\""),
            ("10.0.2.15/255,10.0.2.2,10.0.2.2", "prefix length \"255\""),
            ("10.0.2.15/-1,10.0.2.2,10.0.2.2", "prefix length \"-1\""),
            ("10.0.2.15/,10.0.2.2,10.0.2.2", "prefix length \"\""),
            ("10.0.2.15/24/8,10.0.2.2,10.0.2.2", "prefix length \"24/8\""),
            ("10.0.2.15/24,,10.0.2.2", "gateway \"\""),
            ("10.0.2.15/24,gateway,10.0.2.2", "gateway \"gateway\""),
            ("10.0.2.15/24,10.0.2.2,", "DNS server \"\""),
            ("10.0.2.15/24,10.0.2.2,dns.example", "DNS server \"dns.example\""),
            ("0.0.0.0/24,0.0.0.2,10.0.2.2", "cannot be an interface's address"),
            ("224.0.0.1/24,224.0.0.2,10.0.2.2", "cannot be an interface's address"),
            ("10.0.2.15/24,10.0.3.2,10.0.2.2", "gateway 10.0.3.2 is not another address on 10.0.2.15/24"),
            ("10.0.2.15/32,10.0.2.2,10.0.2.2", "gateway 10.0.2.2 is not another address on 10.0.2.15/32"),
            ("10.0.2.15/24,10.0.2.15,10.0.2.2", "gateway 10.0.2.15 is not another address"),
        ] {
            let error = parse_value(value).expect_err(value);
            assert!(error.contains(why), "{value:?}: {error:?} does not say {why:?}");
            assert!(error.contains(&format!("{CMDLINE_NETWORK}={value:?}")), "{value:?}: {error:?} does not quote the value");
        }
    }

    #[test]
    fn resolv_conf_names_the_dns_server() {
        let network = Network { dns: Ipv4Addr::new(192, 0, 2, 53), ..parse_value(SPEC).unwrap().unwrap() };
        let text = resolv_conf(&network);
        let nameservers: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(nameservers, ["nameserver 192.0.2.53"]);
        assert!(text.ends_with('\n'));
    }
}
