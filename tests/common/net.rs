//! Real servers on the host for the network tests: an HTTP server that says which port it
//! answered on, and a DNS server with a fixed zone that records every name it was asked.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::{Arc, Mutex};

/// An HTTP/1.0 server on `bind` answering every request with `served-by-<port>`.
pub struct HttpServer {
    pub port: u16,
}

impl HttpServer {
    pub fn start(bind: Ipv4Addr) -> HttpServer {
        let listener = TcpListener::bind((bind, 0)).expect("bind the test HTTP server");
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let mut request = [0u8; 4096];
                    let _ = stream.read(&mut request);
                    let body = format!("served-by-{port}\n");
                    let _ = write!(stream, "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                });
            }
        });
        HttpServer { port }
    }
}

/// A UDP DNS server answering A queries from its zone (NXDOMAIN for other names; AAAA and
/// other types of known names get an empty answer).
pub struct DnsServer {
    pub addr: SocketAddr,
    asked: Arc<Mutex<Vec<String>>>,
}

impl DnsServer {
    pub fn start(bind: Ipv4Addr, zone: &[(&str, Ipv4Addr)]) -> DnsServer {
        let socket = UdpSocket::bind((bind, 0)).expect("bind the test DNS server");
        let addr = socket.local_addr().unwrap();
        let zone: HashMap<String, Ipv4Addr> = zone.iter().map(|(n, a)| (n.to_string(), *a)).collect();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let log = asked.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while let Ok((len, peer)) = socket.recv_from(&mut buf) {
                if let Some((name, reply)) = answer(&buf[..len], &zone) {
                    log.lock().unwrap().push(name);
                    let _ = socket.send_to(&reply, peer);
                }
            }
        });
        DnsServer { addr, asked }
    }

    /// Every name asked so far, lowercase.
    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

/// The reply to one query: header with QR and RA set, the question, and an A record.
fn answer(query: &[u8], zone: &HashMap<String, Ipv4Addr>) -> Option<(String, Vec<u8>)> {
    if query.len() < 12 || u16::from_be_bytes([query[4], query[5]]) != 1 {
        return None;
    }
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = *query.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    let question_end = at + 4;
    query.get(..question_end)?;
    let name = labels.join(".");
    let found = zone.get(&name);
    let mut reply = query[..question_end].to_vec();
    reply[2] = 0x80 | (query[2] & 0x01); // QR, RD copied
    reply[3] = 0x80 | if found.is_some() { 0 } else { 3 }; // RA, NOERROR or NXDOMAIN
    reply[6..12].copy_from_slice(&[0, 0, 0, 0, 0, 0]);
    if let (Some(addr), 1) = (found, qtype) {
        reply[7] = 1;
        reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        reply.extend_from_slice(&addr.octets());
    }
    Some((name, reply))
}

/// This host's first IPv4 address that is not loopback: the address a box reaches the host
/// by through plain outbound NAT. Panics (the test cannot run) when there is none.
pub fn host_ipv4() -> Ipv4Addr {
    let out = std::process::Command::new("ip").args(["-4", "-o", "addr", "show", "scope", "global"]).output().expect("run ip addr");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next()?.parse().ok())
        .unwrap_or_else(|| panic!("this host has no global IPv4 address for the box to reach it by (`ip -4 addr`: {text:?})"))
}
