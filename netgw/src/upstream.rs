//! Asking the upstream DNS servers (`dns_upstreams`, host addresses from the config): for
//! the guest's queries, and for the allow-list's exact names, which the gateway keeps
//! resolved itself so that their addresses are allowed even if the guest never asks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};

use crate::dns::{self, Question};
use crate::event::Event;
use crate::udp::connected_socket;

/// How long one upstream has to answer before the next is asked.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest response read from an upstream.
const MAX_RESPONSE: usize = 65535;
/// When the gateway's own lookup of a name failed, it tries again this much later.
const RETRY_AFTER: Duration = Duration::from_secs(30);
/// The gateway's own lookups re-run when the TTL ends; the addresses stay allowed this much
/// longer, so that an answer arriving a little late leaves no gap.
const REFRESH_GRACE: Duration = Duration::from_secs(5);

/// Sends `query` to each upstream in turn until one answers it (`dns::answers`), each
/// within `UPSTREAM_TIMEOUT`; datagrams that do not answer it are ignored.
pub async fn ask(upstreams: &[SocketAddr], query: &[u8], question: &Question) -> Option<Vec<u8>> {
    for upstream in upstreams {
        if let Ok(Some(answer)) = tokio::time::timeout(UPSTREAM_TIMEOUT, ask_one(*upstream, query, question)).await {
            return Some(answer);
        }
    }
    None
}

async fn ask_one(upstream: SocketAddr, query: &[u8], question: &Question) -> Option<Vec<u8>> {
    let socket = connected_socket(upstream).ok()?;
    socket.send(query).await.ok()?;
    let mut buf = vec![0u8; MAX_RESPONSE];
    loop {
        let n = match socket.recv(&mut buf).await {
            Ok(n) => n,
            Err(_) => return None,
        };
        if dns::answers(&buf[..n], question) {
            buf.truncate(n);
            return Some(buf);
        }
    }
}

/// Keeps `name` resolved: an A query to the upstreams now and whenever the answer's
/// shortest TTL ends (clamped by the policy's bounds), reporting each answer's records.
/// Runs until the event loop goes away.
pub async fn keep_resolved(name: String, upstreams: Arc<[SocketAddr]>, permits: Arc<Semaphore>, events: mpsc::Sender<Event>) {
    let mut id: u16 = std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), &name) as u16;
    loop {
        id = id.wrapping_add(1);
        let Some((query, question)) = dns::a_query(id, &name) else { return };
        let answer = {
            let Ok(_permit) = permits.acquire().await else { return };
            ask(&upstreams, &query, &question).await
        };
        let records = answer.as_deref().map(dns::a_records).unwrap_or_default();
        let next = match records.iter().map(|(_, ttl)| *ttl).min() {
            Some(ttl) => Duration::from_secs(u64::from(ttl)).clamp(crate::policy::MIN_TTL, crate::policy::MAX_TTL),
            None => RETRY_AFTER,
        };
        if !records.is_empty() && events.send(Event::Resolved { name: name.clone(), records, grace: REFRESH_GRACE }).await.is_err() {
            return;
        }
        tokio::time::sleep(next).await;
    }
}
