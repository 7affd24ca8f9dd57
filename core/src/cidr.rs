//! Client-address allowlists: one parser shared by the control plane (which validates a
//! token's `ip_allowlist` at issuance) and the sidecar (which checks it on warm requests), so
//! both sides agree on what an entry means.

use std::net::IpAddr;

use ipnet::IpNet;

/// An `ip_allowlist` entry that is neither a CIDR nor an address. Shows the entry: allowlists
/// are not secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a CIDR or IP address")]
pub struct CidrError(pub String);

/// A CIDR (v4 or v6), or a bare address meaning just that address (`/32`, `/128`). Host bits
/// are cleared, so `10.1.2.3/8` means `10.0.0.0/8`.
pub fn parse_cidr(raw: &str) -> Result<IpNet, CidrError> {
    let s = raw.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map(|net| net.trunc())
        .map_err(|_| CidrError(s.to_owned()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cidrs_and_bare_addresses_of_both_families() {
        for (raw, net) in [
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("10.1.2.3/8", "10.0.0.0/8"),
            (" 192.0.2.7 ", "192.0.2.7/32"),
            ("2001:db8::/32", "2001:db8::/32"),
            ("::1", "::1/128"),
        ] {
            assert_eq!(parse_cidr(raw).unwrap().to_string(), net, "{raw}");
        }
        for bad in ["10.0.0.0/33", "::1/129", "10.0.0", "example.com", ""] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
    }
}
