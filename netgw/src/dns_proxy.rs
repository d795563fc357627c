//! The box's DNS server at `GATEWAY_ADDR:53` (UDP): the policy decides each question
//! (`Egress::dns`), allowed ones go to the upstreams (at most `max_dns_in_flight` at once;
//! past that the guest gets SERVFAIL), and an allow-list learns the A records of their
//! answers before the guest sees them, so that its next connection finds them allowed.
//!
//! A query the guest sends to any other resolver is not DNS to the gateway: it is a UDP
//! flow like any other, under the policy.

use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boxlite_vmspec::network::{NetworkStats, GATEWAY_ADDR};
use tokio::sync::{mpsc, Semaphore};

use crate::dns;
use crate::event::{DnsAnswer, Event};
use crate::packet;
use crate::policy::{DnsVerdict, Egress};
use crate::stack::Stack;
use crate::upstream;

pub const DNS_PORT: u16 = 53;

pub struct DnsProxy {
    upstreams: Arc<[SocketAddr]>,
    /// Queries to the upstreams in flight, the guest's and the gateway's own.
    pub permits: Arc<Semaphore>,
    events: mpsc::Sender<Event>,
}

impl DnsProxy {
    pub fn new(upstreams: Vec<SocketAddr>, max_in_flight: u32, events: mpsc::Sender<Event>) -> DnsProxy {
        DnsProxy { upstreams: upstreams.into(), permits: Arc::new(Semaphore::new(max_in_flight as usize)), events }
    }

    pub fn upstreams(&self) -> Arc<[SocketAddr]> {
        self.upstreams.clone()
    }

    /// A query from the guest's `guest_port`: answered now, or sent upstream.
    pub fn query(&mut self, guest_port: u16, query: &[u8], egress: &Egress, stack: &mut Stack, stats: &mut NetworkStats) {
        stats.dns_queries += 1;
        let Some(question) = dns::parse_query(query) else { return };
        let rcode = match egress.dns(question.name.as_deref()) {
            DnsVerdict::Refuse => dns::RCODE_REFUSED,
            DnsVerdict::NoSuchName => dns::RCODE_NXDOMAIN,
            DnsVerdict::Forward { learn_ports } => match self.permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    let (upstreams, events, query) = (self.upstreams.clone(), self.events.clone(), query.to_vec());
                    tokio::spawn(async move {
                        let answer = upstream::ask(&upstreams, &query, &question).await;
                        drop(permit);
                        let _ = events.send(Event::DnsAnswer(DnsAnswer { guest_port, query, answer, learn_ports })).await;
                    });
                    return;
                }
                Err(_) => {
                    send(stack, guest_port, &dns::reply(query, &question, dns::RCODE_SERVFAIL));
                    return;
                }
            },
        };
        stats.dns_denied += 1;
        send(stack, guest_port, &dns::reply(query, &question, rcode));
    }

    /// The upstreams' answer to a guest's query: learn what the policy learns, then pass it
    /// on (SERVFAIL if none came; cut to its question with TC if it does not fit a frame).
    pub fn answer(&mut self, answered: DnsAnswer, egress: &mut Egress, stack: &mut Stack, now: Instant) {
        let DnsAnswer { guest_port, query, answer, learn_ports } = answered;
        let query = &query[..];
        let Some(question) = dns::parse_query(query) else { return };
        let Some(answer) = answer else {
            send(stack, guest_port, &dns::reply(query, &question, dns::RCODE_SERVFAIL));
            return;
        };
        if !learn_ports.is_empty() {
            egress.learn(&learn_ports, &dns::a_records(&answer), Duration::ZERO, now);
        }
        if answer.len() > packet::MAX_UDP_PAYLOAD {
            send(stack, guest_port, &dns::truncated(&answer, &question));
        } else {
            send(stack, guest_port, &answer);
        }
    }
}

fn send(stack: &mut Stack, guest_port: u16, message: &[u8]) {
    if let Some(frame) = packet::udp_to_guest(SocketAddrV4::new(GATEWAY_ADDR, DNS_PORT), guest_port, message) {
        stack.send_frame(frame);
    }
}
