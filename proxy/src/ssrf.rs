//! The SSRF guard: the sidecar must not be a way into the host's own network.
//!
//! An agent (or a prompt injected into one) can name any host in an absolute-form request,
//! including `localhost`, the cloud metadata service at 169.254.169.254 or a name whose DNS
//! points at a private address. The guard resolves the upstream name **once**, refuses the
//! request if any address is internal (loopback, link-local, private, CGNAT, unique-local,
//! unspecified, multicast, broadcast/reserved, and those embedded in IPv4-mapped, NAT64 or 6to4
//! IPv6 forms), and returns the checked address, which is what the proxy dials: no second
//! lookup, so DNS rebinding between check and connect is impossible. Hosts an operator marks
//! `allow_private = true` skip the address check (local test servers, internal APIs).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Why the upstream address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SsrfError {
    #[error("SSRF guard: {host} resolves to {ip}, a {class} address; add a [[hosts]] entry with allow_private = true to allow it")]
    Forbidden {
        host: String,
        ip: IpAddr,
        class: &'static str,
    },
    #[error("cannot resolve upstream host {host}: {reason}")]
    Resolve { host: String, reason: String },
}

/// Resolve `host` (a name, dotted IPv4 or bare IPv6) and check every address; the first
/// address is returned for dialling.
pub async fn checked_address(
    host: &str,
    port: u16,
    allow_private: bool,
) -> Result<SocketAddr, SsrfError> {
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| SsrfError::Resolve {
                host: host.to_owned(),
                reason: e.to_string(),
            })?
            .collect(),
    };
    let first = *addrs.first().ok_or_else(|| SsrfError::Resolve {
        host: host.to_owned(),
        reason: "no addresses".into(),
    })?;
    if !allow_private {
        for addr in &addrs {
            if let Some(class) = forbidden_class(addr.ip()) {
                return Err(SsrfError::Forbidden {
                    host: host.to_owned(),
                    ip: addr.ip(),
                    class,
                });
            }
        }
    }
    Ok(first)
}

/// The kind of internal address `ip` is, or `None` for a public address.
pub fn forbidden_class(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_class(v4),
        IpAddr::V6(v6) => v6_class(v6),
    }
}

fn v4_class(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if ip.is_private() {
        Some("private")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared (CGNAT)")
    } else if a == 0 {
        Some("unspecified")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if a >= 240 {
        Some("reserved or broadcast")
    } else if a == 192 && b == 0 && ip.octets()[2] == 0 {
        Some("IETF protocol assignments")
    } else if a == 198 && (18..20).contains(&b) {
        Some("benchmarking")
    } else {
        None
    }
}

fn v6_class(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = embedded_v4(ip) {
        return v4_class(v4);
    }
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if first & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if first & 0xfe00 == 0xfc00 {
        Some("unique-local")
    } else if first & 0xffc0 == 0xfec0 {
        Some("site-local")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if ip.segments()[..3] == [0x64, 0xff9b, 1] {
        Some("local-use NAT64")
    } else if ip.segments()[..2] == [0x2001, 0] {
        Some("Teredo tunnel")
    } else {
        None
    }
}

/// The IPv4 address carried by IPv4-mapped (`::ffff:a.b.c.d`), IPv4-translated
/// (`::ffff:0:a.b.c.d`), IPv4-compatible (`::a.b.c.d`),
/// NAT64 (`64:ff9b::/96`) and 6to4 (`2002::/16`) addresses.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        Some(v4)
    } else if (s[..6] == [0, 0, 0, 0, 0, 0] && !(s[6] == 0 && s[7] <= 1))
        || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
        || s[..6] == [0, 0, 0, 0, 0xffff, 0]
    {
        Some(low)
    } else if s[0] == 0x2002 {
        Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests;
