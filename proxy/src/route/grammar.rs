//! The grammar of a `[[routes]]` entry (its prefix and upstream URL) and the destination a
//! host, scheme and port dial. A leaf: the config validates with it and the router routes with
//! it, and it knows neither.

use agent_secret_core::host::{Destination, HostError};
use http::uri::PathAndQuery;
use http::Uri;

/// A parsed `[[routes]] upstream`.
#[derive(Clone, Debug)]
pub struct RouteUpstream {
    pub tls: bool,
    pub port: u16,
    pub destination: Destination,
    /// Always ends with `/`.
    pub base_path: String,
}

impl RouteUpstream {
    /// Parse `https://host[:port][/base/]`.
    pub fn parse(s: &str) -> Result<RouteUpstream, String> {
        let uri: Uri = s.parse().map_err(|e| format!("`{s}` is not a URL: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("`{s}` must start with https:// (or http://)")),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("`{s}` has no host"))?
            .as_str();
        if authority.contains('@') {
            return Err(format!("`{s}` must not contain user info"));
        }
        if uri.query().is_some() {
            return Err(format!("`{s}` must not have a query"));
        }
        let asked = Destination::parse(authority).map_err(|e| format!("`{s}`: {e}"))?;
        let port = asked.port().unwrap_or(default_port(tls));
        let destination = dialled(&asked, tls, port).map_err(|e| format!("`{s}`: {e}"))?;
        let mut base_path = uri.path().to_owned();
        if !base_path.ends_with('/') {
            base_path.push('/');
        }
        Ok(RouteUpstream {
            tls,
            port,
            destination,
            base_path,
        })
    }
}

/// A route prefix starts and ends with `/` and is more than `/` alone.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.len() < 3 || !prefix.starts_with('/') || !prefix.ends_with('/') {
        return Err(format!("`{prefix}` must look like `/name/`"));
    }
    if PathAndQuery::try_from(prefix).is_err() || prefix.contains('?') {
        return Err(format!("`{prefix}` is not a valid URL path"));
    }
    Ok(())
}

pub(crate) fn default_port(tls: bool) -> u16 {
    if tls {
        443
    } else {
        80
    }
}

/// The destination secrets are bound to: the port only when it is not the scheme's default.
pub(crate) fn dialled(asked: &Destination, tls: bool, port: u16) -> Result<Destination, HostError> {
    let port = (port != default_port(tls)).then_some(port);
    let host = asked.host();
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Destination::from_parts(bare, port)
}
