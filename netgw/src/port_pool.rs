//! The gateway's own ports on the link (`GATEWAY_ADDR:port`), the source of forwarded TCP
//! connections and UDP datagrams: taken from the dynamic range, given back when done.

use std::collections::HashSet;

const FIRST: u16 = 49152;
const COUNT: u32 = 65536 - FIRST as u32;

#[derive(Default)]
pub struct PortPool {
    in_use: HashSet<u16>,
    next: u32,
}

impl PortPool {
    /// A free port, or None when all 16384 are in use.
    pub fn take(&mut self) -> Option<u16> {
        for _ in 0..COUNT {
            let port = FIRST + (self.next % COUNT) as u16;
            self.next = (self.next + 1) % COUNT;
            if self.in_use.insert(port) {
                return Some(port);
            }
        }
        None
    }

    pub fn give_back(&mut self, port: u16) {
        self.in_use.remove(&port);
    }

    pub fn is_taken(&self, port: u16) -> bool {
        self.in_use.contains(&port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_unique_until_given_back() {
        let mut pool = PortPool::default();
        let a = pool.take().unwrap();
        let b = pool.take().unwrap();
        assert!(a != b && a >= FIRST && pool.is_taken(a));
        pool.give_back(a);
        assert!(!pool.is_taken(a));
        let mut all = PortPool::default();
        let taken: HashSet<u16> = (0..COUNT).map(|_| all.take().unwrap()).collect();
        assert_eq!(taken.len(), COUNT as usize);
        assert_eq!(all.take(), None);
    }
}
