//! The few DNS message operations the gateway needs (RFC 1035), parsed by hand with a bound
//! on every read: the question of a query, answers made locally (REFUSED, NXDOMAIN,
//! SERVFAIL, truncated), whether a response answers a query, the A records of a response,
//! and an A query for the names the gateway resolves itself.

use std::net::Ipv4Addr;

pub const HEADER_LEN: usize = 12;
/// A name on the wire is at most 255 bytes.
const MAX_NAME_WIRE: usize = 255;
/// Compression pointers followed in one name before giving up.
const MAX_POINTERS: usize = 16;
/// Resource records read from one response.
const MAX_RECORDS: usize = 64;

pub const TYPE_A: u16 = 1;
pub const CLASS_IN: u16 = 1;

pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_NXDOMAIN: u8 = 3;
pub const RCODE_REFUSED: u8 = 5;

const FLAG_QR: u16 = 0x8000;
const FLAG_TC: u16 = 0x0200;
const FLAG_RD: u16 = 0x0100;
const FLAG_RA: u16 = 0x0080;
const OPCODE_MASK: u16 = 0x7800;

/// The one question of a standard query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub id: u16,
    /// Lowercase, dots between labels, no trailing dot; None when a label holds a byte a
    /// host name never has (such a name matches no allow rule).
    pub name: Option<String>,
    pub qtype: u16,
    pub qclass: u16,
    /// The question's bytes as sent (name, type, class), for echoing and comparing.
    wire: Vec<u8>,
}

/// The question of a query: QR clear, opcode QUERY, exactly one question.
pub fn parse_query(msg: &[u8]) -> Option<Question> {
    let header = Header::parse(msg)?;
    if header.flags & FLAG_QR != 0 || header.flags & OPCODE_MASK != 0 || header.qdcount != 1 {
        return None;
    }
    parse_question(msg, header.id)
}

/// Whether `response` is an answer to the query whose question is `question`: same id, QR
/// set, and the same question (names compared without case, as RFC 1035 says).
pub fn answers(response: &[u8], question: &Question) -> bool {
    let Some(header) = Header::parse(response) else { return false };
    if header.id != question.id || header.flags & FLAG_QR == 0 || header.qdcount != 1 {
        return false;
    }
    match parse_question(response, header.id) {
        Some(q) => q.wire.eq_ignore_ascii_case(&question.wire),
        None => false,
    }
}

/// A response to `query` with no records and `rcode`.
pub fn reply(query: &[u8], question: &Question, rcode: u8) -> Vec<u8> {
    let query_flags = query.get(2..4).map_or(0, |f| u16::from_be_bytes([f[0], f[1]]));
    let flags = FLAG_QR | (query_flags & (OPCODE_MASK | FLAG_RD)) | FLAG_RA | u16::from(rcode & 0x0f);
    header_and_question(question, flags)
}

/// `response` cut to its header and question with TC set, for when it does not fit in
/// one datagram to the guest (the guest may retry over TCP).
pub fn truncated(response: &[u8], question: &Question) -> Vec<u8> {
    let flags = response.get(2..4).map_or(FLAG_QR, |f| u16::from_be_bytes([f[0], f[1]]));
    header_and_question(question, flags | FLAG_QR | FLAG_TC)
}

fn header_and_question(question: &Question, flags: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + question.wire.len());
    out.extend_from_slice(&question.id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&question.wire);
    out
}

/// An A query for `name` (recursion desired); None if `name` is not a valid host name.
pub fn a_query(id: u16, name: &str) -> Option<(Vec<u8>, Question)> {
    let mut wire = Vec::with_capacity(name.len() + 6);
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return None;
        }
        wire.push(label.len() as u8);
        wire.extend_from_slice(label.as_bytes());
    }
    wire.push(0);
    if wire.len() > MAX_NAME_WIRE {
        return None;
    }
    wire.extend_from_slice(&TYPE_A.to_be_bytes());
    wire.extend_from_slice(&CLASS_IN.to_be_bytes());
    let mut msg = Vec::with_capacity(HEADER_LEN + wire.len());
    msg.extend_from_slice(&id.to_be_bytes());
    msg.extend_from_slice(&FLAG_RD.to_be_bytes());
    msg.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    msg.extend_from_slice(&wire);
    let question = parse_query(&msg)?;
    Some((msg, question))
}

/// The A records (class IN) of a response's answer section, with their TTLs in seconds;
/// empty if the response is malformed or not a success.
pub fn a_records(response: &[u8]) -> Vec<(Ipv4Addr, u32)> {
    let mut found = Vec::new();
    let Some(header) = Header::parse(response) else { return found };
    if header.flags & FLAG_QR == 0 || header.flags & 0x000f != 0 {
        return found;
    }
    let mut at = HEADER_LEN;
    for _ in 0..header.qdcount.min(4) {
        let Some(end) = skip_name(response, at) else { return found };
        at = end + 4;
    }
    if header.qdcount > 4 {
        return found;
    }
    for _ in 0..usize::from(header.ancount).min(MAX_RECORDS) {
        let Some(end) = skip_name(response, at) else { return found };
        let Some(fixed) = response.get(end..end + 10) else { return found };
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let class = u16::from_be_bytes([fixed[2], fixed[3]]);
        let ttl = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
        let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let Some(rdata) = response.get(end + 10..end + 10 + rdlen) else { return found };
        if rtype == TYPE_A && class == CLASS_IN && rdlen == 4 {
            // RFC 2181: a TTL with the top bit set is treated as zero.
            let ttl = if ttl > i32::MAX as u32 { 0 } else { ttl };
            found.push((Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]), ttl));
        }
        at = end + 10 + rdlen;
    }
    found
}

struct Header {
    id: u16,
    flags: u16,
    qdcount: u16,
    ancount: u16,
}

impl Header {
    fn parse(msg: &[u8]) -> Option<Header> {
        let h = msg.get(..HEADER_LEN)?;
        let word = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
        Some(Header { id: word(0), flags: word(2), qdcount: word(4), ancount: word(6) })
    }
}

fn parse_question(msg: &[u8], id: u16) -> Option<Question> {
    let (name, end) = read_name(msg, HEADER_LEN)?;
    let fixed = msg.get(end..end + 4)?;
    Some(Question {
        id,
        name,
        qtype: u16::from_be_bytes([fixed[0], fixed[1]]),
        qclass: u16::from_be_bytes([fixed[2], fixed[3]]),
        wire: question_wire(msg, HEADER_LEN, end + 4)?,
    })
}

/// The question as uncompressed bytes (a query's question is never compressed, but a
/// response's copy may point elsewhere; expanding both makes them comparable).
fn question_wire(msg: &[u8], start: usize, end: usize) -> Option<Vec<u8>> {
    let mut wire = Vec::with_capacity(end - start);
    walk_name(msg, start, |label| {
        wire.push(label.len() as u8);
        wire.extend_from_slice(label);
    })?;
    wire.push(0);
    wire.extend_from_slice(msg.get(end - 4..end)?);
    Some(wire)
}

/// Reads a name at `at`: (the name as text, the offset after it in the message).
fn read_name(msg: &[u8], at: usize) -> Option<(Option<String>, usize)> {
    let mut text = String::new();
    let mut host_name = true;
    let end = walk_name(msg, at, |label| {
        if !label.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_') {
            host_name = false;
        }
        if !text.is_empty() {
            text.push('.');
        }
        text.extend(label.iter().map(|b| b.to_ascii_lowercase() as char));
    })?;
    Some(((host_name && !text.is_empty()).then_some(text), end))
}

fn skip_name(msg: &[u8], at: usize) -> Option<usize> {
    walk_name(msg, at, |_| {})
}

/// Calls `label` for each label of the name at `at`, following compression pointers (at
/// most `MAX_POINTERS`, at most `MAX_NAME_WIRE` bytes of labels); returns the offset just
/// after the name where it started (after its first pointer, if any).
fn walk_name(msg: &[u8], mut at: usize, mut label: impl FnMut(&[u8])) -> Option<usize> {
    let mut end = None;
    let mut pointers = 0;
    let mut length = 0;
    loop {
        let len = *msg.get(at)?;
        match len & 0xc0 {
            0x00 => {
                if len == 0 {
                    return Some(end.unwrap_or(at + 1));
                }
                let bytes = msg.get(at + 1..at + 1 + usize::from(len))?;
                length += usize::from(len) + 1;
                if length > MAX_NAME_WIRE {
                    return None;
                }
                label(bytes);
                at += 1 + usize::from(len);
            }
            0xc0 => {
                let low = *msg.get(at + 1)?;
                pointers += 1;
                if pointers > MAX_POINTERS {
                    return None;
                }
                end.get_or_insert(at + 2);
                at = usize::from(u16::from_be_bytes([len & 0x3f, low]));
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(id: u16, name: &str) -> Vec<u8> {
        a_query(id, name).unwrap().0
    }

    /// A response to `query` with the given A records, the first answer's owner compressed.
    fn response(query: &[u8], records: &[([u8; 4], u32)]) -> Vec<u8> {
        let mut msg = query.to_vec();
        msg[2] |= 0x80;
        msg[6..8].copy_from_slice(&(records.len() as u16).to_be_bytes());
        for (addr, ttl) in records {
            msg.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
            msg.extend_from_slice(&ttl.to_be_bytes());
            msg.extend_from_slice(&[0, 4]);
            msg.extend_from_slice(addr);
        }
        msg
    }

    #[test]
    fn queries_parse_to_a_lowercase_name() {
        let mut msg = query(7, "PyPI.org");
        let q = parse_query(&msg).unwrap();
        assert_eq!((q.id, q.name.as_deref(), q.qtype, q.qclass), (7, Some("pypi.org"), TYPE_A, CLASS_IN));
        // A label holding a dot is not a host name: it can match no rule.
        msg = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 8];
        msg.extend_from_slice(b"pypi.org\0\0\x01\0\x01");
        assert_eq!(parse_query(&msg).unwrap().name, None);
        // A response is not a query.
        assert!(parse_query(&response(&query(1, "a.b"), &[])).is_none());
    }

    #[test]
    fn local_answers_echo_the_question() {
        let msg = query(0x1234, "blocked.example");
        let q = parse_query(&msg).unwrap();
        let nx = reply(&msg, &q, RCODE_NXDOMAIN);
        assert_eq!(&nx[..2], &[0x12, 0x34]);
        assert_eq!(nx[3] & 0x0f, RCODE_NXDOMAIN);
        assert!(answers(&nx, &q));
        assert!(a_records(&nx).is_empty());
        let tc = truncated(&response(&msg, &[([1, 2, 3, 4], 60)]), &q);
        assert!(answers(&tc, &q) && tc[2] & 0x02 != 0 && a_records(&tc).is_empty());
    }

    #[test]
    fn a_records_come_with_their_ttl_and_other_answers_do_not_match() {
        let msg = query(9, "pypi.org");
        let q = parse_query(&msg).unwrap();
        let resp = response(&msg, &[([151, 101, 0, 223], 300), ([151, 101, 64, 223], 0x8000_0000)]);
        assert!(answers(&resp, &q));
        assert_eq!(a_records(&resp), vec![(Ipv4Addr::new(151, 101, 0, 223), 300), (Ipv4Addr::new(151, 101, 64, 223), 0)]);
        let other = parse_query(&query(9, "pypi.com")).unwrap();
        assert!(!answers(&resp, &other));
        let mut wrong_id = resp.clone();
        wrong_id[1] ^= 1;
        assert!(!answers(&wrong_id, &q));
    }

    #[test]
    fn hostile_messages_are_refused_without_panics() {
        // A pointer to itself, a pointer past the end, a label past the end, reserved bits.
        let mut looped = query(1, "a.b");
        looped.truncate(HEADER_LEN);
        looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert!(parse_query(&looped).is_none());
        for tail in [&[0xc0u8, 0xff][..], &[5, b'a'], &[0x80, 1], &[]] {
            let mut msg = query(1, "a.b")[..HEADER_LEN].to_vec();
            msg.extend_from_slice(tail);
            assert!(parse_query(&msg).is_none(), "{tail:?}");
            assert!(a_records(&msg).is_empty());
        }
        // Every prefix of a valid response, and every single-byte corruption of it.
        let resp = response(&query(3, "x.example"), &[([10, 0, 0, 1], 5), ([10, 0, 0, 2], 5)]);
        for cut in 0..resp.len() {
            let _ = a_records(&resp[..cut]);
            let _ = parse_query(&resp[..cut]);
        }
        for i in 0..resp.len() {
            for v in [0u8, 0x3f, 0xc0, 0xff] {
                let mut bad = resp.clone();
                bad[i] = v;
                let _ = a_records(&bad);
                let _ = parse_query(&bad);
            }
        }
        // A record count larger than the message: what is there is read, no more.
        let mut many = resp.clone();
        many[6..8].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(a_records(&many).len(), 2);
    }

    #[test]
    fn names_longer_than_dns_allows_are_refused() {
        assert!(a_query(1, &"a".repeat(64)).is_none());
        let long = vec!["abcdefghi"; 26].join(".");
        assert!(long.len() > 255 && a_query(1, &long).is_none());
        assert!(a_query(1, "").is_none());
    }
}
