//! Frames from the guest, sorted before the TCP/IP stack sees them (so that the policy can
//! act on a TCP SYN first, and UDP never enters the stack), and the UDP frames the gateway
//! builds itself. Only well-formed IPv4 from `GUEST_ADDR` and ARP get through: a frame from
//! another source address, a fragment, IPv6 or a bad checksum is ignored.

use std::net::SocketAddrV4;

use boxlite_vmspec::network::{GATEWAY_MAC, GUEST_ADDR, GUEST_MAC, MTU};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, TcpPacket, UdpPacket,
    UdpRepr,
};

const ETHERNET_HEADER: usize = 14;
const IPV4_HEADER: usize = 20;
const UDP_HEADER: usize = 8;
/// The largest UDP payload that fits one frame on the link (the gateway does not fragment).
pub const MAX_UDP_PAYLOAD: usize = MTU - IPV4_HEADER - UDP_HEADER;

/// What a frame from the guest is.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// ARP: for the stack.
    Arp,
    /// A TCP segment: for the stack, after the SYN check.
    Tcp(TcpSegment),
    /// A UDP datagram from the guest's `src_port` to `dst`.
    Udp { src_port: u16, dst: SocketAddrV4, payload: &'a [u8] },
    /// Anything else (ICMP, IPv6, malformed, spoofed): dropped.
    Ignored,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSegment {
    pub src_port: u16,
    pub dst: SocketAddrV4,
    /// SYN without ACK or RST: a new connection.
    pub opens: bool,
}

pub fn classify(frame: &[u8]) -> Inbound<'_> {
    let Ok(eth) = EthernetFrame::new_checked(frame) else { return Inbound::Ignored };
    let to_us = eth.dst_addr() == EthernetAddress(GATEWAY_MAC) || eth.dst_addr().is_broadcast();
    if !to_us || eth.src_addr() != EthernetAddress(GUEST_MAC) {
        return Inbound::Ignored;
    }
    match eth.ethertype() {
        EthernetProtocol::Arp => Inbound::Arp,
        EthernetProtocol::Ipv4 => classify_ipv4(&frame[ETHERNET_HEADER..]),
        _ => Inbound::Ignored,
    }
}

fn classify_ipv4(packet: &[u8]) -> Inbound<'_> {
    let Ok(ip) = Ipv4Packet::new_checked(packet) else { return Inbound::Ignored };
    if ip.version() != 4 || !ip.verify_checksum() || ip.src_addr() != GUEST_ADDR || ip.more_frags() || ip.frag_offset() != 0 {
        return Inbound::Ignored;
    }
    let header_len = usize::from(ip.header_len());
    let total_len = usize::from(ip.total_len());
    let Some(payload) = packet.get(header_len..total_len) else { return Inbound::Ignored };
    let (src, dst) = (IpAddress::Ipv4(ip.src_addr()), IpAddress::Ipv4(ip.dst_addr()));
    match ip.next_header() {
        IpProtocol::Tcp => {
            let Ok(tcp) = TcpPacket::new_checked(payload) else { return Inbound::Ignored };
            if !tcp.verify_checksum(&src, &dst) {
                return Inbound::Ignored;
            }
            let opens = tcp.syn() && !tcp.ack() && !tcp.rst();
            Inbound::Tcp(TcpSegment { src_port: tcp.src_port(), dst: SocketAddrV4::new(ip.dst_addr(), tcp.dst_port()), opens })
        }
        IpProtocol::Udp => {
            let Ok(udp) = UdpPacket::new_checked(payload) else { return Inbound::Ignored };
            // A zero checksum means none was computed (allowed over IPv4).
            if udp.checksum() != 0 && !udp.verify_checksum(&src, &dst) || udp.dst_port() == 0 {
                return Inbound::Ignored;
            }
            let Some(data) = payload.get(UDP_HEADER..usize::from(udp.len())) else { return Inbound::Ignored };
            Inbound::Udp { src_port: udp.src_port(), dst: SocketAddrV4::new(ip.dst_addr(), udp.dst_port()), payload: data }
        }
        _ => Inbound::Ignored,
    }
}

/// An Ethernet frame carrying a UDP datagram from `src` to the guest's `dst_port`; None if
/// the payload does not fit one frame.
pub fn udp_to_guest(src: SocketAddrV4, dst_port: u16, payload: &[u8]) -> Option<Vec<u8>> {
    if payload.len() > MAX_UDP_PAYLOAD {
        return None;
    }
    let udp = UdpRepr { src_port: src.port(), dst_port };
    let ip = Ipv4Repr {
        src_addr: *src.ip(),
        dst_addr: GUEST_ADDR,
        next_header: IpProtocol::Udp,
        payload_len: UDP_HEADER + payload.len(),
        hop_limit: 64,
    };
    let eth =
        EthernetRepr { src_addr: EthernetAddress(GATEWAY_MAC), dst_addr: EthernetAddress(GUEST_MAC), ethertype: EthernetProtocol::Ipv4 };
    let mut frame = vec![0u8; ETHERNET_HEADER + IPV4_HEADER + UDP_HEADER + payload.len()];
    let checksums = ChecksumCapabilities::default();
    let mut eth_frame = EthernetFrame::new_unchecked(&mut frame[..]);
    eth.emit(&mut eth_frame);
    let mut ip_packet = Ipv4Packet::new_unchecked(eth_frame.payload_mut());
    ip.emit(&mut ip_packet, &checksums);
    let mut udp_packet = UdpPacket::new_unchecked(ip_packet.payload_mut());
    udp.emit(
        &mut udp_packet,
        &IpAddress::Ipv4(*src.ip()),
        &IpAddress::Ipv4(GUEST_ADDR),
        payload.len(),
        |buf| buf.copy_from_slice(payload),
        &checksums,
    );
    Some(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// A UDP frame from the guest, built by swapping a gateway-to-guest frame's ends.
    fn from_guest(dst: SocketAddrV4, src_port: u16, payload: &[u8]) -> Vec<u8> {
        let udp = UdpRepr { src_port, dst_port: dst.port() };
        let ip = Ipv4Repr {
            src_addr: GUEST_ADDR,
            dst_addr: *dst.ip(),
            next_header: IpProtocol::Udp,
            payload_len: 8 + payload.len(),
            hop_limit: 64,
        };
        let eth = EthernetRepr {
            src_addr: EthernetAddress(GUEST_MAC),
            dst_addr: EthernetAddress(GATEWAY_MAC),
            ethertype: EthernetProtocol::Ipv4,
        };
        let mut frame = vec![0u8; 42 + payload.len()];
        let caps = ChecksumCapabilities::default();
        let mut e = EthernetFrame::new_unchecked(&mut frame[..]);
        eth.emit(&mut e);
        let mut i = Ipv4Packet::new_unchecked(e.payload_mut());
        ip.emit(&mut i, &caps);
        let mut u = UdpPacket::new_unchecked(i.payload_mut());
        udp.emit(&mut u, &GUEST_ADDR.into(), &(*dst.ip()).into(), payload.len(), |b| b.copy_from_slice(payload), &caps);
        frame
    }

    #[test]
    fn udp_from_the_guest_is_classified_and_spoofing_is_ignored() {
        let dst = SocketAddrV4::new(Ipv4Addr::new(1, 1, 1, 1), 53);
        let frame = from_guest(dst, 40000, b"hello");
        assert_eq!(classify(&frame), Inbound::Udp { src_port: 40000, dst, payload: b"hello" });
        // A corrupted payload fails the checksum.
        let mut bad = frame.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(classify(&bad), Inbound::Ignored);
        // Another source address (checksums fixed up by rebuilding) is ignored.
        let mut spoofed = frame.clone();
        spoofed[26..30].copy_from_slice(&[10, 0, 2, 99]);
        let mut ip = Ipv4Packet::new_unchecked(&mut spoofed[14..]);
        ip.fill_checksum();
        assert_eq!(classify(&spoofed), Inbound::Ignored);
        // Every truncation is ignored or still well-formed, never a panic.
        for cut in 0..frame.len() {
            let _ = classify(&frame[..cut]);
        }
    }

    #[test]
    fn frames_to_the_guest_parse_back_and_oversized_payloads_are_refused() {
        let src = SocketAddrV4::new(Ipv4Addr::new(8, 8, 8, 8), 53);
        let frame = udp_to_guest(src, 40000, b"answer").unwrap();
        let eth = EthernetFrame::new_checked(&frame[..]).unwrap();
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert!(ip.verify_checksum() && ip.dst_addr() == GUEST_ADDR && ip.src_addr() == *src.ip());
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(udp.verify_checksum(&IpAddress::Ipv4(*src.ip()), &IpAddress::Ipv4(GUEST_ADDR)));
        assert_eq!((udp.dst_port(), udp.payload()), (40000, &b"answer"[..]));
        assert_eq!(frame.len(), 14 + 20 + 8 + 6);
        assert!(udp_to_guest(src, 1, &vec![0; MAX_UDP_PAYLOAD]).is_some());
        assert!(udp_to_guest(src, 1, &vec![0; MAX_UDP_PAYLOAD + 1]).is_none());
    }
}
