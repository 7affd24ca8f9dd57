//! Abuse limits of the control plane: connection hygiene of the HTTPS listener and request rate
//! limits of the API.
//!
//! Every limit is configured (`[server]`, `[rate_limits]` in `config/control-plane.toml`), and
//! every refusal is counted in a metric labelled from a closed set ([`Limit`]). The state is
//! bounded by live subjects: connection counts are dropped with their last connection, and the
//! keyed rate limiters, penalty box and alert windows are pruned by `service::limits::janitor`.

mod auth_failures;
mod connections;
mod rates;

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use crate::config::{RateLimitsConfig, ServerConfig};

pub use auth_failures::AuthFailures;
pub use connections::{ConnectionPermit, ConnectionRefusal, ConnectionTracker};
pub use rates::{AlertWindows, Limit, RateLimits, Refused};

/// All limits of one control plane, shared by its connections and requests.
pub struct Limits {
    pub server: ServerConfig,
    pub connections: ConnectionTracker,
    pub rates: RateLimits,
    pub auth_failures: AuthFailures,
    /// One `alert.raised` event per tripped subject per window.
    pub alerts: AlertWindows,
}

impl Limits {
    /// Limits from validated settings (see `Config::validate`; a zero rate is raised to 1).
    pub fn new(server: &ServerConfig, rates: &RateLimitsConfig) -> Limits {
        let window = Duration::from_secs(rates.alert_window_seconds.max(1));
        Limits {
            server: server.clone(),
            connections: ConnectionTracker::new(
                server.max_connections_per_ip,
                server.max_connections,
            ),
            rates: RateLimits::new(rates),
            auth_failures: AuthFailures::new(rates.auth_failures_per_ip, window),
            alerts: AlertWindows::new(window),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::new(&ServerConfig::default(), &RateLimitsConfig::default())
    }
}

/// The subject of a per-address limit: an IPv4 address, or the /64 network of an IPv6 address
/// (one host usually holds a whole /64, so counting single IPv6 addresses would let it mint
/// fresh subjects at will). IPv4-mapped IPv6 addresses count as their IPv4 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientAddr(IpAddr);

impl ClientAddr {
    pub fn of(ip: IpAddr) -> ClientAddr {
        match ip {
            IpAddr::V4(v4) => ClientAddr(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientAddr(IpAddr::V4(v4)),
                None => {
                    let network = u128::from(v6) & !((1u128 << 64) - 1);
                    ClientAddr(IpAddr::V6(network.into()))
                }
            },
        }
    }
}

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => v4.fmt(f),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ipv6_addresses_of_one_64_are_one_subject() {
        let a = ClientAddr::of("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = ClientAddr::of("2001:db8:1:2:ffff::9".parse().unwrap());
        let other = ClientAddr::of("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, other);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn ipv4_mapped_addresses_count_as_ipv4() {
        let mapped = ClientAddr::of("::ffff:192.0.2.7".parse().unwrap());
        assert_eq!(mapped, ClientAddr::of("192.0.2.7".parse().unwrap()));
        assert_eq!(mapped.to_string(), "192.0.2.7");
    }
}
