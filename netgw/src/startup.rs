//! What the gateway has before its first frame: the config (one JSON line on stdin) and the
//! descriptors the shim passed, each checked to be what `gateway_fds` says it is, so that a
//! wiring mistake fails at start with a message naming the descriptor.

use std::fs::File;
use std::io::{BufRead, Read};
use std::net::{TcpListener, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;

use boxlite_vmspec::network::{gateway_fds, GatewayConfig, Protocol};
use nix::sys::socket::{getsockopt, sockopt, SockType};

use crate::error::Error;

/// The longest config line accepted.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;
/// The most DNS upstreams tried per query.
const MAX_UPSTREAMS: usize = 8;

/// A forward's host socket, as bound by the shim.
pub enum ForwardSocket {
    Tcp { listener: TcpListener, guest_port: u16 },
    Udp { socket: UdpSocket, guest_port: u16 },
}

pub struct Startup {
    pub config: GatewayConfig,
    /// fd 3: the VMM's frames.
    pub frames: UnixStream,
    /// fd 4: where the stats go.
    pub stats: File,
    /// fd 5..: in the order of `config.forwards`.
    pub forwards: Vec<ForwardSocket>,
}

/// Reads the config from `input` and takes the descriptors.
pub fn take(input: impl Read) -> Result<Startup, Error> {
    let config = read_config(input)?;
    if config.dns_upstreams.len() > MAX_UPSTREAMS {
        return Err(Error::ConfigInvalid(format!("{} dns_upstreams; at most {MAX_UPSTREAMS}", config.dns_upstreams.len())));
    }
    let count = 2 + config.forwards.len();
    let fds = crate::sys::take_inherited_fds(gateway_fds::FRAMES, count).map_err(|e| Error::Descriptor {
        fd: gateway_fds::FRAMES,
        role: "the frame socket, the stats file and one socket per forward",
        cause: format!("{e}; the shim passes fds 3, 4 and 5.. (one per forward) without close-on-exec"),
    })?;
    let mut fds = fds.into_iter();
    let frames = fds.next().expect("count >= 2");
    let stats = fds.next().expect("count >= 2");
    check_socket(&frames, gateway_fds::FRAMES, "the VMM's frame socket", SockType::Stream, false)?;
    let stats_kind = File::from(stats);
    match stats_kind.metadata() {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err(bad(gateway_fds::STATS, "the stats file", "not a regular file".into())),
        Err(e) => return Err(bad(gateway_fds::STATS, "the stats file", e.to_string())),
    }
    let mut forwards = Vec::with_capacity(config.forwards.len());
    for (i, (target, fd)) in config.forwards.iter().zip(fds).enumerate() {
        let number = gateway_fds::FIRST_FORWARD + i as i32;
        forwards.push(match target.protocol {
            Protocol::Tcp => {
                check_socket(&fd, number, "a TCP forward's listening socket", SockType::Stream, true)?;
                let listener = TcpListener::from(fd);
                listener.set_nonblocking(true).map_err(|e| bad(number, "a TCP forward's listening socket", e.to_string()))?;
                ForwardSocket::Tcp { listener, guest_port: target.guest_port }
            }
            Protocol::Udp => {
                check_socket(&fd, number, "a UDP forward's bound socket", SockType::Datagram, false)?;
                let socket = UdpSocket::from(fd);
                socket.set_nonblocking(true).map_err(|e| bad(number, "a UDP forward's bound socket", e.to_string()))?;
                ForwardSocket::Udp { socket, guest_port: target.guest_port }
            }
        });
    }
    let frames = UnixStream::from(frames);
    frames.set_nonblocking(true).map_err(|e| bad(gateway_fds::FRAMES, "the VMM's frame socket", e.to_string()))?;
    Ok(Startup { config, frames, stats: stats_kind, forwards })
}

/// One JSON line, at most `MAX_CONFIG_BYTES`.
pub fn read_config(input: impl Read) -> Result<GatewayConfig, Error> {
    let mut line = Vec::new();
    let mut bounded = std::io::BufReader::new(input.take(MAX_CONFIG_BYTES as u64 + 1));
    bounded.read_until(b'\n', &mut line).map_err(Error::ConfigRead)?;
    if line.len() > MAX_CONFIG_BYTES {
        return Err(Error::ConfigTooLong { limit: MAX_CONFIG_BYTES });
    }
    serde_json::from_slice(&line).map_err(Error::ConfigParse)
}

fn check_socket(fd: &OwnedFd, number: i32, role: &'static str, kind: SockType, listening: bool) -> Result<(), Error> {
    let actual = getsockopt(&fd.as_fd(), sockopt::SockType).map_err(|e| bad(number, role, format!("not a socket ({e})")))?;
    if actual != kind {
        return Err(bad(number, role, format!("a {actual:?} socket where a {kind:?} one is needed")));
    }
    if listening {
        let accepts = getsockopt(&fd.as_fd(), sockopt::AcceptConn).map_err(|e| bad(number, role, e.to_string()))?;
        if !accepts {
            return Err(bad(number, role, "not listening (the shim calls listen before passing it)".into()));
        }
    }
    Ok(())
}

fn bad(fd: i32, role: &'static str, cause: String) -> Error {
    Error::Descriptor { fd, role, cause }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_is_one_bounded_json_line() {
        let line = br#"{"egress":{"policy":"deny_all"},"dns_upstreams":[],"forwards":[]}
trailing garbage is never read"#;
        let config = read_config(&line[..]).unwrap();
        assert!(config.seccomp, "seccomp is on unless the config says otherwise");
        assert_eq!(config.limits.max_tcp_connections, 1024);
        let long = vec![b' '; MAX_CONFIG_BYTES + 10];
        assert!(matches!(read_config(&long[..]), Err(Error::ConfigTooLong { .. })));
        assert!(matches!(read_config(&b"{}\n"[..]), Err(Error::ConfigParse(_))));
        assert!(matches!(read_config(&b""[..]), Err(Error::ConfigParse(_))));
    }
}
