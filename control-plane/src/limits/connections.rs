//! Caps on concurrent connections, per client address and in total, checked before the TLS
//! handshake so that a flood of idle sockets from one address cannot use up the server's file
//! descriptors or crowd out other clients.
//!
//! A permit is held for a connection's whole life; dropping it gives the slot back, and an
//! address whose last connection closed is forgotten, so the map is bounded by live sockets.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::ClientAddr;

/// Why a connection was refused (a metric label: a closed set).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionRefusal {
    PerIp,
    Total,
}

impl ConnectionRefusal {
    pub const ALL: [ConnectionRefusal; 2] = [Self::PerIp, Self::Total];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::PerIp => "per_ip",
            Self::Total => "total",
        }
    }
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_addr: HashMap<ClientAddr, usize>,
}

pub struct ConnectionTracker {
    per_ip_cap: usize,
    total_cap: usize,
    counts: Arc<Mutex<Counts>>,
}

/// One admitted connection; its slot is released on drop.
pub struct ConnectionPermit {
    addr: ClientAddr,
    counts: Arc<Mutex<Counts>>,
}

/// The counts stay consistent even if a holder panicked: every critical section is a few
/// integer updates that cannot leave them half-written.
fn lock(counts: &Mutex<Counts>) -> MutexGuard<'_, Counts> {
    counts.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ConnectionTracker {
    pub fn new(per_ip_cap: usize, total_cap: usize) -> ConnectionTracker {
        ConnectionTracker {
            per_ip_cap: per_ip_cap.max(1),
            total_cap: total_cap.max(1),
            counts: Arc::default(),
        }
    }

    /// A slot for a new connection from `ip`, or why there is none.
    pub fn admit(&self, ip: IpAddr) -> Result<ConnectionPermit, ConnectionRefusal> {
        let addr = ClientAddr::of(ip);
        let mut counts = lock(&self.counts);
        if counts.total >= self.total_cap {
            return Err(ConnectionRefusal::Total);
        }
        let of_addr = counts.per_addr.entry(addr).or_insert(0);
        if *of_addr >= self.per_ip_cap {
            return Err(ConnectionRefusal::PerIp);
        }
        *of_addr += 1;
        counts.total += 1;
        Ok(ConnectionPermit {
            addr,
            counts: self.counts.clone(),
        })
    }

    /// Open connections from `ip`'s address (for tests and diagnostics).
    pub fn open_from(&self, ip: IpAddr) -> usize {
        lock(&self.counts)
            .per_addr
            .get(&ClientAddr::of(ip))
            .copied()
            .unwrap_or(0)
    }

    /// Open connections in total.
    pub fn open(&self) -> usize {
        lock(&self.counts).total
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut counts = lock(&self.counts);
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_addr.get_mut(&self.addr) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_addr.remove(&self.addr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_address_gets_at_most_its_cap_and_its_slots_come_back() {
        let tracker = ConnectionTracker::new(2, 100);
        let a = tracker.admit(ip("192.0.2.1")).unwrap();
        let _b = tracker.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(
            tracker.admit(ip("192.0.2.1")).err(),
            Some(ConnectionRefusal::PerIp)
        );
        // Another address is unaffected.
        let _c = tracker.admit(ip("192.0.2.2")).unwrap();
        drop(a);
        let _d = tracker.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(tracker.open(), 3);
    }

    #[test]
    fn the_total_cap_holds_across_addresses_and_closed_addresses_are_forgotten() {
        let tracker = ConnectionTracker::new(10, 2);
        let a = tracker.admit(ip("192.0.2.1")).unwrap();
        let b = tracker.admit(ip("192.0.2.2")).unwrap();
        assert_eq!(
            tracker.admit(ip("192.0.2.3")).err(),
            Some(ConnectionRefusal::Total)
        );
        drop((a, b));
        assert_eq!(tracker.open(), 0);
        assert!(lock(&tracker.counts).per_addr.is_empty());
    }
}
