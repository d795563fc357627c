//! An allow-list's names at work: the addresses their DNS answers give become reachable
//! (on the rule's port, until the TTL ends), the gateway resolves exact names itself, and
//! answers pointing at the host's loopback or the box's link open nothing.
//!
//! Reaching a learned address needs a server at an address that is neither loopback nor
//! anyone else's, so the test re-runs itself in a network namespace of its own (`unshare
//! --net --map-root-user`, needing unshare and ip from util-linux and iproute2), where it
//! puts 198.18.0.1 and 198.18.0.2 (the benchmarking range) on lo. Nothing leaves the
//! namespace.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::Command;
use std::time::Duration;

use common::*;

const INSIDE: &str = "BOXLITE_NETGW_TEST_NETNS";
const LEARNED: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const SHORT_LIVED: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

/// Runs `test` in a new network namespace (re-running this test binary there).
fn in_own_netns(name: &str, test: impl FnOnce()) {
    if std::env::var_os(INSIDE).is_some() {
        for args in [
            &["link", "set", "lo", "up"][..],
            &["addr", "add", "198.18.0.1/32", "dev", "lo"],
            &["addr", "add", "198.18.0.2/32", "dev", "lo"],
        ] {
            let status = Command::new("ip").args(args).status().expect("running ip (iproute2)");
            assert!(status.success(), "ip {args:?}: {status}");
        }
        test();
        return;
    }
    let out = Command::new("unshare")
        .args(["--net", "--map-root-user", "--"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1")
        .output()
        .expect("running unshare (util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stdout.contains("1 passed"), "in its own network namespace: {}\n{stdout}\n{stderr}", out.status);
}

#[test]
fn learned_addresses_become_reachable_on_the_rules_port_until_their_ttl_ends() {
    in_own_netns("learned_addresses_become_reachable_on_the_rules_port_until_their_ttl_ends", || {
        let echo = tcp_echo(&format!("{LEARNED}:0"));
        let other_port = tcp_echo(&format!("{LEARNED}:0"));
        let short_echo = tcp_echo(&format!("{SHORT_LIVED}:{}", echo.port()));
        let loopback = tcp_echo("127.0.0.1:0");
        let (server, _) = dns_server(
            "127.0.0.1:0",
            &[
                ("www.allowed.test", LEARNED, 60),
                ("short.allowed.test", SHORT_LIVED, 1),
                ("a.rebind.test", boxlite_vmspec::network::GATEWAY_ADDR, 60),
                ("b.rebind.test", Ipv4Addr::LOCALHOST, 60),
            ],
        );
        let mut cfg = config(allow_list(&[&format!("*.allowed.test:{}", echo.port()), "*.rebind.test"]));
        cfg.dns_upstreams = vec![server];
        let (gw, link) = start(cfg, vec![]);
        let mut guest = Guest::new(link);
        let target = SocketAddrV4::new(LEARNED, echo.port());

        assert_eq!(guest.connect(target).unwrap_err(), "reset", "not allowed before its name is resolved");
        assert_eq!(guest.resolve(gateway(53), "www.allowed.test", STEP), Some((0, vec![LEARNED])));
        assert_eq!(guest.echo_round_trip(target, b"learned").unwrap(), b"learned");
        assert_eq!(guest.connect(SocketAddrV4::new(LEARNED, other_port.port())).unwrap_err(), "reset", "only on the rule's port");

        // A short TTL: allowed at once, refused once it ended.
        assert_eq!(guest.resolve(gateway(53), "short.allowed.test", STEP), Some((0, vec![SHORT_LIVED])));
        let short = SocketAddrV4::new(SHORT_LIVED, short_echo.port());
        assert_eq!(guest.echo_round_trip(short, b"quick").unwrap(), b"quick");
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(guest.connect(short).unwrap_err(), "reset", "the TTL ended");

        // Answers naming the gateway (the host's loopback) or 127.0.0.1 pass to the guest
        // but open nothing.
        let gateway_addr = boxlite_vmspec::network::GATEWAY_ADDR;
        assert_eq!(guest.resolve(gateway(53), "a.rebind.test", STEP), Some((0, vec![gateway_addr])));
        assert_eq!(guest.connect(gateway(loopback.port())).unwrap_err(), "reset");
        assert_eq!(guest.resolve(gateway(53), "b.rebind.test", STEP), Some((0, vec![Ipv4Addr::LOCALHOST])));
        assert_eq!(guest.connect(SocketAddrV4::new(Ipv4Addr::LOCALHOST, loopback.port())).unwrap_err(), "reset");
        gw.stats_until("the five refusals", |s| s.denied == 5 && s.tcp_connections == 2);
    });
}

#[test]
fn the_gateway_resolves_exact_names_itself() {
    in_own_netns("the_gateway_resolves_exact_names_itself", || {
        let echo = tcp_echo(&format!("{LEARNED}:0"));
        let (server, asked) = dns_server("127.0.0.1:0", &[("pinned.test", LEARNED, 60)]);
        let mut cfg = config(allow_list(&[&format!("pinned.test:{}", echo.port())]));
        cfg.dns_upstreams = vec![server];
        let (gw, link) = start(cfg, vec![]);
        let mut guest = Guest::new(link);
        // The guest never asks; the gateway's own lookup soon allows the address.
        let target = SocketAddrV4::new(LEARNED, echo.port());
        let mut tries = 0;
        let echoed = loop {
            tries += 1;
            match guest.echo_round_trip(target, b"pinned") {
                Ok(echoed) => break echoed,
                Err(_) if tries < 50 => std::thread::sleep(Duration::from_millis(100)),
                Err(e) => panic!("{target} never became reachable: {e}"),
            }
        };
        assert_eq!(echoed, b"pinned");
        assert_eq!(asked.lock().unwrap().first().map(String::as_str), Some("pinned.test"));
        gw.stats_until("the connection", |s| s.tcp_connections == 1 && s.dns_queries == 0);
    });
}
