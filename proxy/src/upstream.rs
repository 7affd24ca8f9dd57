//! What is sent upstream for an admitted request: the peer dialled and the request header.
//!
//! Both come from the [`Admission`] alone, never from the client's `Host` header: the
//! address the SSRF guard checked, SNI and `Host` from the dialled host, the origin-form
//! target, the sidecar's own headers (token included) removed and the substituted values in.
//! Plain functions, so what leaves the sidecar is unit-tested without a socket.

use std::sync::Arc;
use std::time::Duration;

use http::header::HOST;
use http::{HeaderName, Uri};
use pingora::http::RequestHeader;
use pingora::prelude::HttpPeer;
use pingora::protocols::tls::CaType;

use crate::admit::Admission;
use crate::auth::is_sidecar_header;

/// The peer to dial: the checked address, TLS (with the configured roots) when the target
/// is https, and SNI from the dialled host.
pub fn peer(
    admission: &Admission,
    upstream_ca: Option<&Arc<CaType>>,
    connect_timeout: Duration,
) -> HttpPeer {
    let target = &admission.target;
    let mut peer = HttpPeer::new(admission.upstream_addr, target.tls, target.sni().to_owned());
    peer.options.connection_timeout = Some(connect_timeout);
    if target.tls {
        peer.options.ca = upstream_ca.cloned();
    }
    peer
}

/// Rewrite the request header pingora is about to send upstream.
pub fn rewrite_request(req: &mut RequestHeader, admission: &Admission) -> pingora::Result<()> {
    let target = &admission.target;
    req.set_uri(Uri::from(target.path_and_query.clone()));
    req.insert_header(HOST, target.host_header())?;
    let sidecar_headers: Vec<HeaderName> = req
        .headers
        .keys()
        .filter(|name| is_sidecar_header(name.as_str()))
        .cloned()
        .collect();
    for name in sidecar_headers {
        req.remove_header(&name);
    }
    for header in &admission.substituted {
        req.remove_header(&header.name);
        for value in &header.values {
            req.append_header(header.name.clone(), value.clone())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
