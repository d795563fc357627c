//! A box's network in C: the options' setters (mode, allow rules, host loopback, port
//! forwards, DNS servers), the forwards as bound on the host, and the gateway's figures.
//! Each setter parses its argument at once, so a malformed rule or address fails at the
//! call that passed it; how the options fit together is checked at `boxlite_box_create`.

use std::ffi::{c_char, CString};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::boxes::{boxlite_box_options_t, boxlite_box_t, with_options};
use super::error::boxlite_error_t;
use super::{block_on, free_handle, guard, guard_void, handle, out_arg, out_of_range, sized_len, str_arg, write_sized, SizedStruct};
use crate::runtime::error::Error;
use crate::runtime::network::{parse_dns_server, AllowRule, BoundForward, NetworkMode, PortForward, Protocol};

/// Where a box's outbound traffic may go (`boxlite_box_options_set_network`).
pub type boxlite_network_mode_t = u32;
/// No network device but the loopback (port forwards still work: they are inbound).
pub const BOXLITE_NETWORK_NONE: boxlite_network_mode_t = 0;
/// Anywhere but link-local addresses (cloud metadata) and the host's own loopback (the
/// default).
pub const BOXLITE_NETWORK_OUTBOUND: boxlite_network_mode_t = 1;
/// Only what the allow rules name (`boxlite_box_options_add_network_allow`); DNS answers
/// only the names they name.
pub const BOXLITE_NETWORK_ALLOW_LIST: boxlite_network_mode_t = 2;

/// A transport protocol of a port forward.
pub type boxlite_protocol_t = u32;
pub const BOXLITE_PROTOCOL_TCP: boxlite_protocol_t = 0;
pub const BOXLITE_PROTOCOL_UDP: boxlite_protocol_t = 1;

fn protocol_of(protocol: boxlite_protocol_t) -> Result<Protocol, Error> {
    match protocol {
        BOXLITE_PROTOCOL_TCP => Ok(Protocol::Tcp),
        BOXLITE_PROTOCOL_UDP => Ok(Protocol::Udp),
        other => Err(Error::InvalidOption {
            field: "protocol",
            reason: format!("{other} is not a BOXLITE_PROTOCOL_* value (0 BOXLITE_PROTOCOL_TCP, 1 BOXLITE_PROTOCOL_UDP)"),
        }),
    }
}

fn protocol_code(protocol: Protocol) -> boxlite_protocol_t {
    match protocol {
        Protocol::Tcp => BOXLITE_PROTOCOL_TCP,
        Protocol::Udp => BOXLITE_PROTOCOL_UDP,
    }
}

/// Sets the box's network mode: one of BOXLITE_NETWORK_* (default
/// BOXLITE_NETWORK_OUTBOUND). Errors: BOXLITE_ERROR_INVALID_ARGUMENT for a NULL `options`
/// or an unknown mode. Not thread-safe for the same options object.
///
/// # Safety
/// `options` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_options_set_network(
    options: *mut boxlite_box_options_t,
    mode: boxlite_network_mode_t,
) -> *mut boxlite_error_t {
    // SAFETY: forwarded caller contract.
    unsafe {
        with_options(options, |o| {
            o.network.mode = match mode {
                BOXLITE_NETWORK_NONE => NetworkMode::None,
                BOXLITE_NETWORK_OUTBOUND => NetworkMode::Outbound,
                BOXLITE_NETWORK_ALLOW_LIST => NetworkMode::AllowList,
                other => {
                    return Err(Error::InvalidOption {
                        field: "network",
                        reason: format!(
                            "mode {other} is not a BOXLITE_NETWORK_* value (0 BOXLITE_NETWORK_NONE, 1 BOXLITE_NETWORK_OUTBOUND, \
                             2 BOXLITE_NETWORK_ALLOW_LIST)"
                        ),
                    })
                }
            };
            Ok(())
        })
    }
}

/// Adds a rule to the box's allow-list (network mode BOXLITE_NETWORK_ALLOW_LIST; a rule
/// with another mode fails `boxlite_box_create`). `rule` (copied) is a network
/// (`10.0.0.0/8`), an address with an optional port (`192.0.2.7:443`), or a DNS name with
/// an optional port (`pypi.org:443`, `*.github.com`: the names below github.com); the
/// gateway address 10.0.2.2 stands for the host's own loopback. Errors:
/// BOXLITE_ERROR_INVALID_ARGUMENT for NULL arguments, non-UTF-8 text or a malformed rule
/// (the message says what is wrong with it and the forms a rule takes). Not thread-safe
/// for the same options object.
///
/// # Safety
/// `options` is NULL or live; `rule` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_options_add_network_allow(
    options: *mut boxlite_box_options_t,
    rule: *const c_char,
) -> *mut boxlite_error_t {
    // SAFETY: forwarded caller contracts.
    unsafe {
        with_options(options, |o| {
            let rule = AllowRule::parse(str_arg(rule, "rule")?).map_err(|reason| Error::InvalidOption { field: "network", reason })?;
            o.network.allow.push(rule);
            Ok(())
        })
    }
}

/// Lets the box reach the host's own 127.0.0.1 through its gateway address (10.0.2.2), in
/// network mode BOXLITE_NETWORK_OUTBOUND (with another mode, `true` fails
/// `boxlite_box_create`; in an allow-list, add a rule for 10.0.2.2[:PORT] instead). Off by
/// default: services on the host's loopback often trust whoever connects. Errors:
/// BOXLITE_ERROR_INVALID_ARGUMENT for a NULL `options`. Not thread-safe for the same
/// options object.
///
/// # Safety
/// `options` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_options_set_allow_host_loopback(
    options: *mut boxlite_box_options_t,
    allow: bool,
) -> *mut boxlite_error_t {
    // SAFETY: forwarded caller contract.
    unsafe {
        with_options(options, |o| {
            o.network.allow_host_loopback = allow;
            Ok(())
        })
    }
}

/// Forwards `host_addr`:`host_port` on the host to `guest_port` in the box, for
/// `protocol` (BOXLITE_PROTOCOL_TCP or BOXLITE_PROTOCOL_UDP). `host_addr` (copied) is an
/// IPv4 or IPv6 address (`"0.0.0.0"`, `"::1"`; brackets allowed); NULL means 127.0.0.1.
/// `host_port` 0 lets the host pick a free port when the box starts (read it back with
/// `boxlite_box_forwarded_port`). Forwards work in every network mode, BOXLITE_NETWORK_NONE
/// included. The host port is bound when the box starts, so a port in use fails
/// `boxlite_box_start`; a host address and port forwarded twice fail `boxlite_box_create`.
/// Errors: BOXLITE_ERROR_INVALID_ARGUMENT for a NULL `options`, an unknown protocol, a
/// malformed address or a `guest_port` of 0. Not thread-safe for the same options object.
///
/// # Safety
/// `options` is NULL or live; `host_addr` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_options_add_port_forward(
    options: *mut boxlite_box_options_t,
    protocol: boxlite_protocol_t,
    host_addr: *const c_char,
    host_port: u16,
    guest_port: u16,
) -> *mut boxlite_error_t {
    // SAFETY: forwarded caller contracts.
    unsafe {
        with_options(options, |o| {
            let protocol = protocol_of(protocol)?;
            let host_addr = if host_addr.is_null() { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { parse_ip(str_arg(host_addr, "host_addr")?)? };
            if guest_port == 0 {
                return Err(Error::InvalidOption { field: "guest_port", reason: "is 0; a guest port is 1 to 65535".into() });
            }
            o.network.port_forwards.push(PortForward { protocol, host_addr, host_port, guest_port });
            Ok(())
        })
    }
}

/// An IP address, IPv6 optionally in brackets.
fn parse_ip(text: &str) -> Result<IpAddr, Error> {
    let bare = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')).unwrap_or(text);
    bare.parse().map_err(|_| Error::InvalidOption {
        field: "host_addr",
        reason: format!("{text:?} is not an IP address; write one such as 127.0.0.1, 0.0.0.0 or ::1 (NULL means 127.0.0.1)"),
    })
}

/// Adds an upstream DNS server for the box's queries (the box asks its gateway, which
/// asks these; none added: the host's /etc/resolv.conf servers). `addr` (copied) is
/// `"IP"` (port 53) or `"IP:PORT"` (`"[IPv6]:PORT"` for IPv6). Not for network mode
/// BOXLITE_NETWORK_NONE (that fails `boxlite_box_create`, as do more than 8 servers).
/// Errors: BOXLITE_ERROR_INVALID_ARGUMENT for NULL arguments, non-UTF-8 text, a malformed
/// address or port 0. Not thread-safe for the same options object.
///
/// # Safety
/// `options` is NULL or live; `addr` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_options_add_dns_server(
    options: *mut boxlite_box_options_t,
    addr: *const c_char,
) -> *mut boxlite_error_t {
    // SAFETY: forwarded caller contracts.
    unsafe {
        with_options(options, |o| {
            let server = parse_dns_server(str_arg(addr, "addr")?)?;
            o.network.dns_servers.push(server);
            Ok(())
        })
    }
}

/// Writes the host port bound for the running box's forward of `guest_port` over
/// `protocol` (a BOXLITE_PROTOCOL_* value) to `*out_host_port`: the port asked for, or the
/// one the host picked for a forward of host port 0. If several host addresses forward
/// that guest port, the port of the forward added first is written (list them all with
/// `boxlite_box_port_forwards`). Errors: BOXLITE_ERROR_INVALID_ARGUMENT (NULLs, an unknown
/// protocol), BOXLITE_ERROR_INVALID_STATE (the box is not running), BOXLITE_ERROR_NOT_FOUND
/// (no such forward; the message lists the box's forwards). Thread-safe.
///
/// # Safety
/// `out_host_port` is NULL or valid for writing; `box` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_forwarded_port(
    out_host_port: *mut u16,
    r#box: *const boxlite_box_t,
    protocol: boxlite_protocol_t,
    guest_port: u16,
) -> *mut boxlite_error_t {
    guard(|| {
        out_arg(out_host_port, "out_host_port")?;
        let protocol = protocol_of(protocol)?;
        // SAFETY: NULL or live (caller's contract).
        let lite_box = &unsafe { handle(r#box, "box") }?.lite_box;
        let forwards = block_on(lite_box.forwarded_ports())?;
        let Some(found) = forwards.iter().find(|f| f.protocol == protocol && f.guest_port == guest_port) else {
            let listed = if forwards.is_empty() {
                "it has none; add them with boxlite_box_options_add_port_forward before boxlite_box_create".to_string()
            } else {
                let all =
                    forwards.iter().map(|f| format!("{} -> {}/{}", SocketAddr::new(f.host_addr, f.host_port), f.guest_port, f.protocol));
                format!("its forwards: {}", all.collect::<Vec<_>>().join(", "))
            };
            return Err(Error::NotFound {
                what: format!("a {protocol} forward to guest port {guest_port} in box {} ({listed})", lite_box.id()),
            });
        };
        // SAFETY: checked non-NULL above.
        unsafe { *out_host_port = found.host_port };
        Ok(())
    })
}

/// The forwards of a running box as bound on the host (`boxlite_box_port_forwards`), a
/// snapshot.
pub struct boxlite_port_forward_list_t {
    forwards: Vec<BoundForward>,
    /// The host addresses as text, one per forward, owned by the list.
    host_addrs: Vec<CString>,
}

/// One port forward as bound on the host (`boxlite_port_forward_list_get`). A sized
/// struct: set `size` first (BOXLITE_PORT_FORWARD_INIT).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct boxlite_port_forward_t {
    /// Set by the caller to the size of the struct it was compiled with.
    pub size: u32,
    /// BOXLITE_PROTOCOL_TCP or BOXLITE_PROTOCOL_UDP.
    pub protocol: boxlite_protocol_t,
    /// The host address listened on ("127.0.0.1", "::1", ...): NUL-terminated, owned by
    /// the list (valid until `boxlite_port_forward_list_free`).
    pub host_addr: *const c_char,
    /// The host port as bound (never 0: a port the host picked is shown as picked).
    pub host_port: u16,
    pub guest_port: u16,
}

// SAFETY: repr(C), plain data (a borrowed pointer), a u32 size first.
unsafe impl SizedStruct for boxlite_port_forward_t {}

/// Lists the running box's port forwards as bound on the host, in the order they were
/// added. On success `*out` owns the list (free with `boxlite_port_forward_list_free`); it
/// is a snapshot (a restart may pick other ports). Errors: BOXLITE_ERROR_INVALID_ARGUMENT
/// for NULLs, BOXLITE_ERROR_INVALID_STATE if the box is not running. Thread-safe.
///
/// # Safety
/// `out` is NULL or valid for writing a pointer; `box` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_port_forwards(
    out: *mut *mut boxlite_port_forward_list_t,
    r#box: *const boxlite_box_t,
) -> *mut boxlite_error_t {
    guard(|| {
        out_arg(out, "out")?;
        // SAFETY: NULL or live (caller's contract).
        let lite_box = &unsafe { handle(r#box, "box") }?.lite_box;
        let forwards = block_on(lite_box.forwarded_ports())?;
        let host_addrs = forwards.iter().map(|f| CString::new(f.host_addr.to_string()).expect("an address holds no NUL")).collect();
        // SAFETY: checked non-NULL above.
        unsafe { *out = Box::into_raw(Box::new(boxlite_port_forward_list_t { forwards, host_addrs })) };
        Ok(())
    })
}

/// The number of forwards in the list. Errors: BOXLITE_ERROR_INVALID_ARGUMENT for NULLs.
/// Thread-safe.
///
/// # Safety
/// `out` is NULL or valid for writing; `list` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_port_forward_list_len(out: *mut usize, list: *const boxlite_port_forward_list_t) -> *mut boxlite_error_t {
    guard(|| {
        out_arg(out, "out")?;
        // SAFETY: NULL or live (caller's contract).
        let len = unsafe { handle(list, "list") }?.forwards.len();
        // SAFETY: checked non-NULL above.
        unsafe { *out = len };
        Ok(())
    })
}

/// Writes the list's forward number `index` (0-based) to `*out`, a sized struct (its
/// `size` set by the caller); its `host_addr` is owned by the list. Errors:
/// BOXLITE_ERROR_INVALID_ARGUMENT for NULLs, a `size` under 4 or an index past the end.
/// Thread-safe.
///
/// # Safety
/// `out` is NULL or valid for writing `out->size` bytes; `list` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_port_forward_list_get(
    out: *mut boxlite_port_forward_t,
    list: *const boxlite_port_forward_list_t,
    index: usize,
) -> *mut boxlite_error_t {
    guard(|| {
        // SAFETY: valid for its size or NULL (caller's contract).
        unsafe { sized_len(out, "out") }?;
        // SAFETY: NULL or live (caller's contract).
        let list = unsafe { handle(list, "list") }?;
        let forward = list.forwards.get(index).ok_or_else(|| out_of_range(index, list.forwards.len()))?;
        let c = boxlite_port_forward_t {
            size: std::mem::size_of::<boxlite_port_forward_t>() as u32,
            protocol: protocol_code(forward.protocol),
            host_addr: list.host_addrs[index].as_ptr(),
            host_port: forward.host_port,
            guest_port: forward.guest_port,
        };
        // SAFETY: valid for `out->size` bytes (caller's contract).
        unsafe { write_sized(out, c, "out") }
    })
}

/// Frees a forward list. NULL does nothing.
///
/// # Safety
/// `list` is NULL or live, and not used afterwards (nor the strings taken from it).
#[no_mangle]
pub unsafe extern "C" fn boxlite_port_forward_list_free(list: *mut boxlite_port_forward_list_t) {
    // SAFETY: NULL or from Box::into_raw, given up by the caller.
    guard_void(|| unsafe { free_handle(list) })
}

/// What a box's network gateway counts (`boxlite_box_network_stats`), since the box
/// started. A sized struct: set `size` first (BOXLITE_NETWORK_STATS_INIT).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct boxlite_network_stats_t {
    /// Set by the caller to the size of the struct it was compiled with.
    pub size: u32,
    /// Payload bytes from the box to the host's network (TCP and UDP), forwards included.
    pub bytes_out: u64,
    /// Payload bytes from the host's network to the box.
    pub bytes_in: u64,
    /// TCP connections the box opened that the policy allowed.
    pub tcp_connections: u64,
    /// TCP connections through port forwards (host -> box).
    pub forwarded_connections: u64,
    /// UDP flows opened (outbound and forwarded).
    pub udp_flows: u64,
    /// Connections and datagrams refused by the policy.
    pub denied: u64,
    pub dns_queries: u64,
    /// DNS queries answered NXDOMAIN or REFUSED by the policy.
    pub dns_denied: u64,
}

// SAFETY: repr(C), plain data, a u32 size first.
unsafe impl SizedStruct for boxlite_network_stats_t {}

/// Writes the running box's network figures to `*out`, a sized struct (its `size` set by
/// the caller). The gateway rewrites them as it goes, so they may lag a moment behind the
/// traffic; all are 0 until it has written its first. Errors:
/// BOXLITE_ERROR_INVALID_ARGUMENT for NULLs or a `size` under 4,
/// BOXLITE_ERROR_INVALID_STATE if the box is not running or has no network device
/// (BOXLITE_NETWORK_NONE without port forwards). Thread-safe.
///
/// # Safety
/// `out` is NULL or valid for writing `out->size` bytes; `box` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_network_stats(out: *mut boxlite_network_stats_t, r#box: *const boxlite_box_t) -> *mut boxlite_error_t {
    guard(|| {
        // SAFETY: valid for its size or NULL (caller's contract).
        unsafe { sized_len(out, "out") }?;
        // SAFETY: NULL or live (caller's contract).
        let lite_box = &unsafe { handle(r#box, "box") }?.lite_box;
        let network = &lite_box.options().network;
        if network.mode == NetworkMode::None && network.port_forwards.is_empty() {
            return Err(Error::InvalidState {
                what: format!("box {}", lite_box.id()),
                reason: "it has no network device (network mode none without port forwards), so nothing is counted".into(),
            });
        }
        let stats = block_on(lite_box.network_stats())?.unwrap_or_default();
        let c = boxlite_network_stats_t {
            size: std::mem::size_of::<boxlite_network_stats_t>() as u32,
            bytes_out: stats.bytes_out,
            bytes_in: stats.bytes_in,
            tcp_connections: stats.tcp_connections,
            forwarded_connections: stats.forwarded_connections,
            udp_flows: stats.udp_flows,
            denied: stats.denied,
            dns_queries: stats.dns_queries,
            dns_denied: stats.dns_denied,
        };
        // SAFETY: valid for `out->size` bytes (caller's contract).
        unsafe { write_sized(out, c, "out") }
    })
}

#[cfg(test)]
mod tests {
    use super::super::boxes::{boxlite_box_options_free, boxlite_box_options_new};
    use super::super::error::{boxlite_error_code, boxlite_error_free, boxlite_error_message, BOXLITE_ERROR_INVALID_ARGUMENT};
    use super::*;

    /// The code and message of an error (freed), or None for success.
    fn result(error: *mut boxlite_error_t) -> Option<(i32, String)> {
        if error.is_null() {
            return None;
        }
        // SAFETY: a live error from the library, freed once here.
        unsafe {
            let parts = (boxlite_error_code(error), std::ffi::CStr::from_ptr(boxlite_error_message(error)).to_string_lossy().into_owned());
            boxlite_error_free(error);
            Some(parts)
        }
    }

    fn rejected(error: *mut boxlite_error_t, why: &str) {
        let (code, message) = result(error).expect("the call should have failed");
        assert_eq!(code, BOXLITE_ERROR_INVALID_ARGUMENT, "{message}");
        assert!(message.contains(why), "{message:?} should say {why:?}");
    }

    #[test]
    fn setters_parse_at_once_and_say_why() {
        let mut options = std::ptr::null_mut();
        // SAFETY: the options are live until freed at the end; the strings are NUL-terminated.
        unsafe {
            assert!(result(boxlite_box_options_new(&mut options)).is_none());
            rejected(boxlite_box_options_set_network(options, 7), "mode 7 is not a BOXLITE_NETWORK_* value");
            rejected(boxlite_box_options_add_network_allow(options, c"10.0.0.1/8".as_ptr()), "bits set past the prefix length");
            rejected(boxlite_box_options_add_network_allow(options, std::ptr::null()), "rule: is NULL");
            rejected(boxlite_box_options_add_port_forward(options, 2, std::ptr::null(), 0, 80), "not a BOXLITE_PROTOCOL_* value");
            rejected(
                boxlite_box_options_add_port_forward(options, BOXLITE_PROTOCOL_TCP, c"localhost".as_ptr(), 0, 80),
                "not an IP address",
            );
            rejected(
                boxlite_box_options_add_port_forward(options, BOXLITE_PROTOCOL_TCP, std::ptr::null(), 0, 0),
                "guest port is 1 to 65535",
            );
            rejected(boxlite_box_options_add_dns_server(options, c"192.0.2.53:0".as_ptr()), "port 0");
            rejected(boxlite_box_options_add_dns_server(options, c"dns.example".as_ptr()), "not a DNS server address");
            rejected(boxlite_box_options_set_network(std::ptr::null_mut(), BOXLITE_NETWORK_NONE), "options: is NULL");

            assert!(result(boxlite_box_options_set_network(options, BOXLITE_NETWORK_ALLOW_LIST)).is_none());
            assert!(result(boxlite_box_options_add_network_allow(options, c"*.github.com".as_ptr())).is_none());
            assert!(result(boxlite_box_options_add_port_forward(options, BOXLITE_PROTOCOL_UDP, c"[::1]".as_ptr(), 5353, 53)).is_none());
            assert!(result(boxlite_box_options_add_port_forward(options, BOXLITE_PROTOCOL_TCP, std::ptr::null(), 0, 8080)).is_none());
            assert!(result(boxlite_box_options_add_dns_server(options, c"192.0.2.53".as_ptr())).is_none());
            assert!(result(boxlite_box_options_add_dns_server(options, c"[2001:db8::53]:5353".as_ptr())).is_none());
            let network = &(*options).options.network;
            assert_eq!(network.mode, NetworkMode::AllowList);
            assert_eq!(network.allow, vec![AllowRule::parse("*.github.com").unwrap()]);
            assert_eq!(
                network.port_forwards,
                vec![PortForward::parse("[::1]:5353:53/udp").unwrap(), PortForward::parse("0:8080").unwrap()]
            );
            assert_eq!(network.dns_servers, vec!["192.0.2.53:53".parse().unwrap(), "[2001:db8::53]:5353".parse().unwrap()]);
            network.validate().unwrap();
            boxlite_box_options_free(options);
        }
    }
}
