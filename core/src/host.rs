//! Destination binding: the hosts a secret may be sent to.
//!
//! Every secret carries `allowed_hosts`; the sidecar substitutes a value only if the host it
//! actually dials (never the client's `Host` header) matches one of them. A prompt-injected
//! agent can then at worst send `production/openai/api_key` to `api.openai.com`.
//!
//! Both sides are normalised the same way before comparison: ASCII only, lowercased, one
//! trailing dot stripped, LDH labels (or an IP literal; IPv6 in brackets, IPv4-mapped IPv6
//! folded to IPv4), optional port 1-65535. A name whose last label is all digits is rejected,
//! because URL parsers and resolvers read `127.1` or `10.0.0.010` as IP addresses and the
//! pattern must mean the same thing to us as to the resolver.
//!
//! # Matching
//!
//! * Host comparison is case-insensitive (both sides are lowercased).
//! * `*.example.com` matches exactly one extra label: `a.example.com`, not `a.b.example.com`
//!   and not `example.com`. The wildcard is only ever the whole first label, needs at least two
//!   labels after it (no `*.com`), and never applies to IP literals.
//! * A pattern **with** a port matches only a destination with exactly that port; callers pass
//!   the port they really dial.
//! * A pattern **without** a port matches a destination with no port or a default port
//!   (443 or 80), never another port: `api.openai.com` does not allow `api.openai.com:8443`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;
const DEFAULT_PORTS: [u16; 2] = [443, 80];

/// One `allowed_hosts` entry, e.g. `api.openai.com`, `*.example.com:8443`, `[::1]:8080`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct HostPattern {
    /// Canonical text: what `as_str`, `Display` and serde give back.
    canonical: String,
    host: PatternHost,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum PatternHost {
    /// A name or IP literal in canonical form, compared for equality.
    Exact(String),
    /// `*.suffix`: holds `.suffix`.
    Wildcard(String),
}

/// The host and port a request is actually sent to.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    /// `host[:port]` as displayed, the host a lowercased name, dotted IPv4, or bracketed IPv6
    /// (`[::1]`) as in a URL authority. Rendered once and shared: the sidecar clones a route's
    /// destination and writes it (`Host` header, audit) on every request.
    text: Arc<str>,
    /// Bytes of `text` that are the host.
    host_len: usize,
    port: Option<u16>,
}

/// Why a host pattern or destination is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("host is empty")]
    Empty,
    #[error("host must be ASCII (use the punycode `xn--` form for international names)")]
    NonAscii,
    #[error("host name is longer than {MAX_NAME_LEN} bytes")]
    TooLong,
    #[error("host label `{0}` is invalid (letters, digits and inner hyphens, 1-63 bytes)")]
    InvalidLabel(String),
    #[error("host name ends in a numeric label (`10`, `0x7f`) but is not a valid IPv4 address")]
    NumericName,
    #[error("invalid IPv6 literal `{0}`")]
    InvalidIpv6(String),
    #[error("IPv6 addresses must be written in brackets, e.g. `[::1]:8080`")]
    UnbracketedIpv6,
    #[error("invalid port `{0}` (expected 1-65535)")]
    InvalidPort(String),
    #[error("`*` is only allowed as the whole first label, as in `*.example.com`")]
    MisplacedWildcard,
    #[error("a wildcard needs at least two labels after it (`*.example.com`, not `*.com`)")]
    WildcardTooBroad,
    #[error("a wildcard cannot be used with an IP address")]
    WildcardIp,
}

impl HostError {
    /// The API error code for every host error.
    pub fn code(&self) -> &'static str {
        "invalid_host"
    }
}

impl HostPattern {
    /// Parse an `allowed_hosts` entry; see the module docs.
    pub fn parse(s: &str) -> Result<HostPattern, HostError> {
        let (host_part, port) = split_host_port(s)?;
        let host = match host_part.strip_prefix("*.") {
            Some(suffix) => wildcard_host(suffix)?,
            None => PatternHost::Exact(canonical_host(host_part)?),
        };
        let canonical = render(&host, port);
        Ok(HostPattern {
            canonical,
            host,
            port,
        })
    }

    /// True if a request to `dest` may carry secrets bound to this pattern.
    pub fn matches(&self, dest: &Destination) -> bool {
        self.port_matches(dest.port) && self.host_matches(dest.host())
    }

    pub fn as_str(&self) -> &str {
        &self.canonical
    }

    /// The port this pattern pins, if any.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    fn port_matches(&self, dest_port: Option<u16>) -> bool {
        match (self.port, dest_port) {
            (Some(want), got) => got == Some(want),
            (None, None) => true,
            (None, Some(got)) => DEFAULT_PORTS.contains(&got),
        }
    }

    fn host_matches(&self, dest_host: &str) -> bool {
        match &self.host {
            PatternHost::Exact(host) => host == dest_host,
            PatternHost::Wildcard(dot_suffix) => dest_host
                .strip_suffix(dot_suffix.as_str())
                .is_some_and(|label| !label.is_empty() && !label.contains('.')),
        }
    }
}

impl Destination {
    /// Parse `host` or `host:port` (`Api.OpenAI.com`, `api.openai.com:443`, `[::1]:8080`).
    pub fn parse(s: &str) -> Result<Destination, HostError> {
        let (host, port) = split_host_port(s)?;
        Destination::from_parts(host, port)
    }

    /// Build from a host (name, IPv4, or IPv6 with or without brackets) and an optional port,
    /// as taken apart by a URL parser.
    pub fn from_parts(host: &str, port: Option<u16>) -> Result<Destination, HostError> {
        if port == Some(0) {
            return Err(HostError::InvalidPort("0".into()));
        }
        if !host.is_ascii() {
            return Err(HostError::NonAscii);
        }
        let host = match host.parse::<Ipv6Addr>() {
            Ok(ip) => canonical_ip(IpAddr::V6(ip)),
            Err(_) => canonical_host(host)?,
        };
        let host_len = host.len();
        let mut text = host;
        if let Some(p) = port {
            use fmt::Write as _;
            let _ = write!(text, ":{p}");
        }
        Ok(Destination {
            text: text.into(),
            host_len,
            port,
        })
    }

    /// The normalised host: lowercased name, dotted IPv4, or bracketed IPv6.
    pub fn host(&self) -> &str {
        &self.text[..self.host_len]
    }

    /// `host[:port]`, as [`Display`](fmt::Display) writes it, without formatting.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn port(&self) -> Option<u16> {
        self.port
    }
}

/// Split `host[:port]` / `[v6][:port]`, validating the port.
fn split_host_port(s: &str) -> Result<(&str, Option<u16>), HostError> {
    if s.is_empty() {
        return Err(HostError::Empty);
    }
    if !s.is_ascii() {
        return Err(HostError::NonAscii);
    }
    let (host, port) = if s.starts_with('[') {
        split_bracketed(s)?
    } else {
        match s.split_once(':') {
            Some((_, rest)) if rest.contains(':') => return Err(HostError::UnbracketedIpv6),
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        }
    };
    Ok((host, port.map(parse_port).transpose()?))
}

fn split_bracketed(s: &str) -> Result<(&str, Option<&str>), HostError> {
    let end = s
        .find(']')
        .ok_or_else(|| HostError::InvalidIpv6(s.to_owned()))?;
    let (host, rest) = s.split_at(end + 1);
    match rest {
        "" => Ok((host, None)),
        _ => match rest.strip_prefix(':') {
            Some(port) => Ok((host, Some(port))),
            None => Err(HostError::InvalidIpv6(s.to_owned())),
        },
    }
}

fn parse_port(p: &str) -> Result<u16, HostError> {
    let valid = !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
    match p.parse::<u16>() {
        Ok(port) if valid && port != 0 => Ok(port),
        _ => Err(HostError::InvalidPort(p.to_owned())),
    }
}

/// Canonical form of a non-wildcard host: bracketed IPv6, dotted IPv4 or a lowercased name.
fn canonical_host(host: &str) -> Result<String, HostError> {
    if host.starts_with('[') {
        return host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .and_then(|inner| inner.parse::<Ipv6Addr>().ok())
            .map(|ip| canonical_ip(IpAddr::V6(ip)))
            .ok_or_else(|| HostError::InvalidIpv6(host.to_owned()));
    }
    let name = strip_trailing_dot(host)?;
    if let Ok(ip) = name.parse::<Ipv4Addr>() {
        return Ok(canonical_ip(IpAddr::V4(ip)));
    }
    canonical_name(name)
}

fn canonical_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => format!("[{v6}]"),
        },
        IpAddr::V4(v4) => v4.to_string(),
    }
}

fn strip_trailing_dot(host: &str) -> Result<&str, HostError> {
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() {
        return Err(HostError::Empty);
    }
    Ok(name)
}

/// Validate an LDH name (no IP) and lowercase it.
fn canonical_name(name: &str) -> Result<String, HostError> {
    if name.len() > MAX_NAME_LEN {
        return Err(HostError::TooLong);
    }
    for label in name.split('.') {
        validate_label(label)?;
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    if is_numeric_label(last) {
        return Err(HostError::NumericName);
    }
    Ok(name.to_ascii_lowercase())
}

/// A label URL parsers treat as a number (`10`, `0x7f`), making the whole host an IPv4 address.
fn is_numeric_label(label: &str) -> bool {
    let hex = label
        .strip_prefix("0x")
        .or_else(|| label.strip_prefix("0X"));
    match hex {
        Some(digits) => digits.bytes().all(|b| b.is_ascii_hexdigit()),
        None => label.bytes().all(|b| b.is_ascii_digit()),
    }
}

fn validate_label(label: &str) -> Result<(), HostError> {
    if label.contains('*') {
        return Err(HostError::MisplacedWildcard);
    }
    let ldh = label
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let ok = ldh
        && (1..=MAX_LABEL_LEN).contains(&label.len())
        && !label.starts_with('-')
        && !label.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(HostError::InvalidLabel(label.to_owned()))
    }
}

fn wildcard_host(suffix: &str) -> Result<PatternHost, HostError> {
    let name = strip_trailing_dot(suffix)?;
    if name.starts_with('[') || name.parse::<Ipv4Addr>().is_ok() {
        return Err(HostError::WildcardIp);
    }
    let name = canonical_name(name)?;
    if !name.contains('.') {
        return Err(HostError::WildcardTooBroad);
    }
    Ok(PatternHost::Wildcard(format!(".{name}")))
}

fn render(host: &PatternHost, port: Option<u16>) -> String {
    let host = match host {
        PatternHost::Exact(h) => h.clone(),
        PatternHost::Wildcard(dot_suffix) => format!("*{dot_suffix}"),
    };
    match port {
        Some(p) => format!("{host}:{p}"),
        None => host,
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical)
    }
}

impl fmt::Debug for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostPattern({:?})", self.canonical)
    }
}

impl FromStr for HostPattern {
    type Err = HostError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HostPattern::parse(s)
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Destination({:?})", self.as_str())
    }
}

impl FromStr for Destination {
    type Err = HostError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Destination::parse(s)
    }
}

impl Serialize for HostPattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.canonical)
    }
}

impl<'de> Deserialize<'de> for HostPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        HostPattern::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Destination {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Destination {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Destination::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
