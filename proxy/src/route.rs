//! Where a request goes: the one host and port the sidecar will dial, decided once per request.
//!
//! Two ways in. **Forward mode**: the agent uses the sidecar as `HTTP_PROXY` and sends
//! absolute-form requests (`GET http://api.example.com/x`); the sidecar originates TLS to the
//! named host unless a `[[hosts]]` rule marks it `plaintext`. **Route mode**: SDKs with a base
//! URL call `http://127.0.0.1:8080/openai/v1/...` and the longest `[[routes]]` prefix picks the
//! upstream. CONNECT is refused: tunnelled TLS would hide the headers the sidecar must rewrite.
//!
//! Everything downstream — destination binding of secrets, the SSRF guard, the outbound Host
//! header and TLS SNI — uses the [`Target`] decided here, never the client's `Host` header.

use std::sync::Arc;

use agent_secret_core::host::Destination;
use http::uri::PathAndQuery;
use http::{Method, Uri};
use pingora::http::authority::{raw_target_authority, RawTargetAuthority};

use crate::config::{HostRule, ProxyConfig, ScrubMode};

pub(crate) mod grammar;
pub use grammar::{check_prefix, RouteUpstream};
use grammar::{default_port, dialled};

/// How the agent addressed the sidecar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Forward,
    Route,
}

/// The upstream a request is sent to.
#[derive(Clone, Debug)]
pub struct Target {
    pub mode: Mode,
    pub tls: bool,
    /// Port actually dialled.
    pub port: u16,
    /// Host and port as secrets are bound to them: the port only when it is not the scheme's
    /// default (`api.openai.com`, `127.0.0.1:18080`).
    pub destination: Destination,
    /// Outbound origin-form request target.
    pub path_and_query: PathAndQuery,
    /// The `[[hosts]]` rule for this destination, if any (shared with the router: a request
    /// does not copy it).
    pub rule: Option<Arc<HostRule>>,
}

/// Longest-prefix route table plus the host rules, built once from the config.
#[derive(Clone, Debug)]
pub struct Router {
    /// Sorted by prefix length, longest first.
    routes: Vec<(String, RouteUpstream)>,
    hosts: Vec<Arc<HostRule>>,
}

/// Why a request has no usable target. Mapped to a response in `crate::denial`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error(
        "CONNECT tunnels are not supported: send plain http:// requests through the proxy (the sidecar originates TLS) or use route mode, e.g. http://127.0.0.1:8080/<route-prefix>/..."
    )]
    Connect,
    #[error("no [[routes]] prefix matches `{0}`; send absolute-form requests (HTTP_PROXY) or configure a route")]
    NoRoute(String),
    #[error("invalid request target: {0}")]
    BadTarget(String),
}

impl Router {
    pub fn new(config: &ProxyConfig) -> Result<Router, String> {
        let mut routes = config
            .routes
            .iter()
            .map(|r| {
                check_prefix(&r.prefix)?;
                Ok((r.prefix.clone(), RouteUpstream::parse(&r.upstream)?))
            })
            .collect::<Result<Vec<_>, String>>()?;
        routes.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Ok(Router {
            routes,
            hosts: config.hosts.iter().cloned().map(Arc::new).collect(),
        })
    }

    /// The target of a request with this method, raw request target and parsed URI.
    pub fn target(
        &self,
        method: &Method,
        raw_target: &[u8],
        uri: &Uri,
    ) -> Result<Target, RouteError> {
        if method == Method::CONNECT {
            return Err(RouteError::Connect);
        }
        match raw_target_authority(raw_target) {
            RawTargetAuthority::Absolute {
                scheme,
                authority,
                path_and_query,
            } => self.forward(scheme, authority, path_and_query),
            RawTargetAuthority::AmbiguousAuthority => Err(RouteError::BadTarget(
                "ambiguous absolute-form target".into(),
            )),
            RawTargetAuthority::None => self.route(uri),
        }
    }

    fn forward(&self, scheme: &[u8], authority: &[u8], path: &[u8]) -> Result<Target, RouteError> {
        let https = if scheme.eq_ignore_ascii_case(b"https") {
            true
        } else if scheme.eq_ignore_ascii_case(b"http") {
            false
        } else {
            return Err(RouteError::BadTarget(
                "only http:// and https:// targets are proxied".into(),
            ));
        };
        let authority = std::str::from_utf8(authority)
            .map_err(|_| RouteError::BadTarget("authority is not ASCII".into()))?;
        // User info is refused outright and never echoed: it would be the agent's password,
        // and the host parser's error quotes what it cannot parse.
        if authority.contains('@') {
            return Err(RouteError::BadTarget(
                "user info (`user:password@`) in the target is not allowed".into(),
            ));
        }
        let asked = Destination::parse(authority)
            .map_err(|e| RouteError::BadTarget(format!("bad target host: {e}")))?;
        let rule = self.rule(&asked);
        let tls = https || !rule.is_some_and(|r| r.plaintext);
        let port = asked.port().unwrap_or(default_port(tls));
        let destination =
            dialled(&asked, tls, port).map_err(|e| RouteError::BadTarget(e.to_string()))?;
        // The rule is looked up again for the normalised destination (`host:443` → `host`).
        let rule = self.rule(&destination).or(rule).cloned();
        Ok(Target {
            mode: Mode::Forward,
            tls,
            port,
            destination,
            path_and_query: origin_form(path)?,
            rule,
        })
    }

    fn route(&self, uri: &Uri) -> Result<Target, RouteError> {
        let path = uri.path();
        // `/openai/../x` would leave the route's base path once the upstream normalises it.
        if path.split('/').any(is_dot_segment) {
            return Err(RouteError::BadTarget(
                "route-mode paths may not contain `.` or `..` segments".into(),
            ));
        }
        let (prefix, upstream) = self
            .routes
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix.as_str()))
            .ok_or_else(|| RouteError::NoRoute(path.to_owned()))?;
        let query = uri.query();
        let mut joined = String::with_capacity(
            upstream.base_path.len()
                + (path.len() - prefix.len())
                + query.map_or(0, |q| q.len() + 1),
        );
        joined.push_str(&upstream.base_path);
        joined.push_str(&path[prefix.len()..]);
        if let Some(query) = query {
            joined.push('?');
            joined.push_str(query);
        }
        let path_and_query = PathAndQuery::try_from(joined)
            .map_err(|e| RouteError::BadTarget(format!("routed path: {e}")))?;
        Ok(Target {
            mode: Mode::Route,
            tls: upstream.tls,
            port: upstream.port,
            destination: upstream.destination.clone(),
            path_and_query,
            rule: self.rule(&upstream.destination).cloned(),
        })
    }

    fn rule(&self, dest: &Destination) -> Option<&Arc<HostRule>> {
        self.hosts.iter().find(|rule| rule.name.matches(dest))
    }
}

impl Target {
    /// The outbound `Host` header: the dialled host, with the port when it is not the default.
    pub fn host_header(&self) -> &str {
        self.destination.as_str()
    }

    /// The name for TLS SNI and certificate verification (IPv6 without brackets).
    pub fn sni(&self) -> &str {
        let host = self.destination.host();
        host.strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
    }

    /// May a request without placeholders go here? Routes are explicit operator wiring;
    /// forward-mode hosts need `pass_through = true`.
    pub fn pass_through_allowed(&self) -> bool {
        self.mode == Mode::Route || self.rule.as_ref().is_some_and(|r| r.pass_through)
    }

    pub fn allow_private(&self) -> bool {
        self.rule.as_ref().is_some_and(|r| r.allow_private)
    }

    pub fn scrub_mode(&self) -> ScrubMode {
        self.rule.as_ref().map_or(ScrubMode::Full, |r| r.scrub)
    }
}

/// Origin-form target from the bytes after the absolute-form authority.
fn origin_form(raw: &[u8]) -> Result<PathAndQuery, RouteError> {
    let bad = |e: http::uri::InvalidUri| RouteError::BadTarget(format!("path: {e}"));
    match raw.first() {
        None => Ok(PathAndQuery::from_static("/")),
        Some(b'/') => PathAndQuery::try_from(raw).map_err(bad),
        Some(b'?') => {
            let mut with_slash = Vec::with_capacity(raw.len() + 1);
            with_slash.push(b'/');
            with_slash.extend_from_slice(raw);
            PathAndQuery::try_from(with_slash.as_slice()).map_err(bad)
        }
        Some(_) => Err(RouteError::BadTarget("path must start with `/`".into())),
    }
}

#[cfg(test)]
mod tests;

/// `.` or `..`, also percent-encoded (`%2e`, `%2E`). Checked on every route-mode request,
/// so without allocating.
fn is_dot_segment(segment: &str) -> bool {
    fn after_dot(s: &str) -> Option<&str> {
        s.strip_prefix('.').or_else(|| {
            s.get(..3)
                .filter(|p| p.eq_ignore_ascii_case("%2e"))
                .map(|_| &s[3..])
        })
    }
    match after_dot(segment) {
        Some("") => true,
        Some(rest) => after_dot(rest) == Some(""),
        None => false,
    }
}
