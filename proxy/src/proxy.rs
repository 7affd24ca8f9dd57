//! The pingora `ProxyHttp` implementation: thin glue between pingora's phases and the pure
//! modules that decide.
//!
//! * `request_filter`: route ([`crate::route`]), authenticate ([`crate::auth`]), find
//!   placeholders ([`crate::inject`]), SSRF-check the upstream ([`crate::ssrf`]), resolve and
//!   decrypt ([`crate::resolver`]), reserve audit room, substitute. Any refusal is written here
//!   as JSON ([`crate::denial`]) and the request ends.
//! * `upstream_peer`: dial the address the SSRF guard checked, TLS with SNI from the dialled host.
//! * `upstream_request_filter`: origin-form target, Host from the dialled host, sidecar headers
//!   removed, substituted values inserted.
//! * `response_filter` / `response_body_filter`: scrub injected values from headers and the
//!   streamed body ([`crate::scrub`]); an encoding the scrubber cannot read is a 502 decided
//!   before any byte of the body is sent.
//!
//! Per-request state lives in [`RequestCtx`]. Request bodies stream untouched; redirects are
//! passed back to the agent, never followed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_secret_core::api::SidecarAuditEvent;
use agent_secret_core::path::SecretPath;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use chrono::Utc;
use http::header::{
    CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, HOST, TRANSFER_ENCODING, USER_AGENT,
};
use http::{HeaderName, HeaderValue, Method, StatusCode, Uri};
use pingora::http::ResponseHeader;
use pingora::prelude::HttpPeer;
use pingora::protocols::tls::CaType;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType};

use crate::audit::Audit;
use crate::auth::{is_sidecar_header, AgentToken, PROXY_AUTHENTICATE};
use crate::cache::CachedGrant;
use crate::config::ScrubMode;
use crate::denial::Denial;
use crate::inject::{self, Substituted};
use crate::metrics::Metrics;
use crate::rate_limit::{Limited, RateLimits};
use crate::resolver::{Resolved, Resolver};
use crate::route::{Router, Target};
use crate::scrub::{BodyScrubber, ScrubSet};
use crate::ssrf;

/// The sidecar's `ProxyHttp`.
pub struct SecretProxy {
    pub(crate) router: Router,
    pub(crate) resolver: Resolver,
    pub(crate) audit: Audit,
    pub(crate) metrics: Metrics,
    /// System roots plus `extra_ca_file`, when one is configured.
    pub(crate) upstream_ca: Option<Arc<CaType>>,
    pub(crate) upstream_connect_timeout: Duration,
    /// Placeholder caps (`[limits]`).
    pub(crate) limits: inject::Limits,
    pub(crate) rate_limits: Arc<RateLimits>,
}

/// Per-request state shared across pingora's phases.
#[derive(Default)]
pub struct RequestCtx {
    target: Option<Target>,
    /// The address the SSRF guard checked; dialled as is.
    upstream_addr: Option<SocketAddr>,
    substituted: Vec<Substituted>,
    scrub: Option<Arc<ScrubSet>>,
    body_scrubber: Option<BodyScrubber>,
    /// A refusal decided after the request was admitted (unscannable response), written by
    /// `fail_to_proxy`.
    pending: Option<Denial>,
    upstream_started: Option<Instant>,
    /// Set when `request_filter` already counted the request.
    counted: bool,
}

/// Who asked, for audit records.
struct Caller {
    token_id: Option<String>,
    client_ip: IpAddr,
    user_agent: Option<String>,
    /// The refusal was already audited (with its path).
    audited: bool,
}

impl SecretProxy {
    /// Admit the request or say why not; on success `ctx` holds everything later phases need.
    async fn admit(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        caller: &mut Caller,
    ) -> Result<(), Denial> {
        let req = session.req_header();
        let target = self.router.target(&req.method, req.raw_path(), &req.uri)?;
        let token = AgentToken::from_header(req.headers.get(http::header::PROXY_AUTHORIZATION))?;
        caller.token_id = Some(token.id().hyphenated().to_string());
        let scan = inject::scan(&req.headers, req.raw_path(), &self.limits)?;
        let paths = scan.paths();
        // Keyed by the whole token's hash, so it is safe before the token is verified.
        self.rate_limits
            .check_token(&token.cache_key(), paths.len())
            .map_err(|limited| self.rate_limited(caller, &limited))?;
        if scan.is_empty() {
            if !target.pass_through_allowed() {
                return Err(Denial::destination_not_allowed(format!(
                    "{} is not a configured route or pass-through host; requests to it must carry a {{{{secret:PATH}}}} placeholder",
                    target.destination
                )));
            }
            let grant = self
                .resolver
                .check_token(&token, &target.destination, caller.client_ip)
                .await?;
            self.check_agent_limit(&grant, 0, caller)?;
            ctx.upstream_addr = Some(self.checked_address(&target).await?);
            ctx.target = Some(target);
            return Ok(());
        }
        ctx.upstream_addr = Some(self.checked_address(&target).await?);
        let permit = self
            .audit
            .reserve(paths.len())
            .map_err(|_| Denial::audit_unavailable())?;
        let resolved = match self
            .resolver
            .resolve(&token, &paths, &target.destination, caller.client_ip)
            .await
        {
            Ok(resolved) => resolved,
            Err(e) => {
                let denial = Denial::from(e);
                drop(permit);
                self.audit_denial(caller, Some(&target), paths.first(), &denial);
                caller.audited = true;
                return Err(denial);
            }
        };
        // From here a refusal gives back the use reserved for a `max_uses` token: nothing
        // was injected.
        let (substituted, scrub) = match self
            .prepare(req, &scan, paths.len(), &resolved, caller)
            .await
        {
            Ok(prepared) => prepared,
            Err(denial) => {
                self.resolver.release(&resolved, denial.code).await;
                return Err(denial);
            }
        };
        ctx.substituted = substituted;
        ctx.scrub = Some(scrub);
        let now = Utc::now();
        let destination = target.destination.to_string();
        permit.record(
            resolved
                .values
                .iter()
                .map(|v| SidecarAuditEvent {
                    token_id: Some(resolved.grant.grant.token_id.clone()),
                    client_ip: Some(caller.client_ip.to_string()),
                    user_agent: caller.user_agent.clone(),
                    path: Some(v.path.to_string()),
                    destination_host: Some(destination.clone()),
                    success: true,
                    reason: None,
                    occurred_at: now,
                })
                .collect(),
        );
        self.metrics.injections.inc_by(paths.len() as u64);
        ctx.target = Some(target);
        Ok(())
    }

    /// After resolve: the agent's budget, the substituted headers and the response scrubber
    /// (headers are always scrubbed; `scrub = "headers"` only skips the body).
    async fn prepare(
        &self,
        req: &pingora::http::RequestHeader,
        scan: &inject::Scan,
        injections: usize,
        resolved: &Resolved,
        caller: &mut Caller,
    ) -> Result<(Vec<Substituted>, Arc<ScrubSet>), Denial> {
        self.check_agent_limit(&resolved.grant, injections, caller)?;
        let lookup = |path: &SecretPath| {
            resolved
                .values
                .iter()
                .find(|v| &v.path == path)
                .map(|v| v.value.expose())
        };
        let substituted = inject::substitute_headers(&req.headers, scan, lookup, &self.limits)?;
        let scrub = self
            .resolver
            .caches()
            .scrub_set(resolved.grant.tenant, &resolved.values)
            .await?;
        Ok((substituted, scrub))
    }

    /// The agent's budget, once a grant vouches for the agent id.
    fn check_agent_limit(
        &self,
        grant: &CachedGrant,
        injections: usize,
        caller: &mut Caller,
    ) -> Result<(), Denial> {
        // An id that is not a UUID is not limited here (the control plane's own limits still
        // apply) rather than refused.
        let Some(agent) = grant.agent else {
            return Ok(());
        };
        self.rate_limits
            .check_agent(agent, injections)
            .map_err(|limited| self.rate_limited(caller, &limited))
    }

    /// Count a 429; audit it only the first time the subject trips in a while, so a flood of
    /// refused requests cannot also flood the audit spool.
    fn rate_limited(&self, caller: &mut Caller, limited: &Limited) -> Denial {
        self.metrics
            .rate_limited
            .with_label_values(&[limited.limit.as_str()])
            .inc();
        if !limited.first_trip {
            caller.audited = true;
        }
        Denial::rate_limited(limited)
    }

    async fn checked_address(&self, target: &Target) -> Result<SocketAddr, Denial> {
        Ok(ssrf::checked_address(target.sni(), target.port, target.allow_private()).await?)
    }

    /// Best-effort audit of a refusal; a full spool drops it (the request is refused anyway).
    fn audit_denial(
        &self,
        caller: &Caller,
        target: Option<&Target>,
        path: Option<&SecretPath>,
        denial: &Denial,
    ) {
        let event = SidecarAuditEvent {
            token_id: caller.token_id.clone(),
            client_ip: Some(caller.client_ip.to_string()),
            user_agent: caller.user_agent.clone(),
            path: path.map(|p| p.to_string()),
            destination_host: target.map(|t| t.destination.to_string()),
            success: false,
            reason: Some(denial.code.to_owned()),
            occurred_at: Utc::now(),
        };
        if self.audit.record_denial(event).is_err() {
            self.metrics.audit_dropped.inc();
        }
    }

    /// Write `denial` as the response.
    async fn deny(&self, session: &mut Session, denial: &Denial) -> pingora::Result<()> {
        self.metrics.denials.with_label_values(&[denial.code]).inc();
        self.metrics.requests.with_label_values(&["denied"]).inc();
        let body = denial.body();
        let mut resp = ResponseHeader::build(denial.status, Some(4))?;
        resp.insert_header(CONTENT_TYPE, "application/json")?;
        resp.insert_header(CONTENT_LENGTH, body.len().to_string())?;
        resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
        if denial.is_auth() {
            resp.insert_header(http::header::PROXY_AUTHENTICATE, PROXY_AUTHENTICATE)?;
        }
        if let Some(seconds) = denial.retry_after {
            resp.insert_header(http::header::RETRY_AFTER, seconds.to_string())?;
        }
        session.set_keepalive(None);
        session.write_response_header(Box::new(resp), false).await?;
        session.write_response_body(Some(body), true).await
    }
}

fn client_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|addr| addr.as_inet())
        .map(|addr| addr.ip())
}

fn header_string(session: &Session, name: HeaderName) -> Option<String> {
    session
        .req_header()
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(512).collect())
}

#[async_trait]
impl ProxyHttp for SecretProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::default()
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<bool> {
        let Some(ip) = client_ip(session) else {
            let denial = Denial::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "client address unknown",
            );
            self.deny(session, &denial).await?;
            ctx.counted = true;
            return Ok(true);
        };
        let mut caller = Caller {
            token_id: None,
            client_ip: ip,
            user_agent: header_string(session, USER_AGENT),
            audited: false,
        };
        match self.admit(session, ctx, &mut caller).await {
            Ok(()) => Ok(false),
            Err(denial) => {
                if !caller.audited {
                    self.audit_denial(&caller, ctx.target.as_ref(), None, &denial);
                }
                self.deny(session, &denial).await?;
                ctx.counted = true;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<Box<HttpPeer>> {
        let (Some(target), Some(addr)) = (&ctx.target, ctx.upstream_addr) else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "request was not admitted",
            ));
        };
        let mut peer = HttpPeer::new(addr, target.tls, target.sni().to_owned());
        peer.options.connection_timeout = Some(self.upstream_connect_timeout);
        if target.tls {
            peer.options.ca = self.upstream_ca.clone();
        }
        ctx.upstream_started = Some(Instant::now());
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut pingora::http::RequestHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        let Some(target) = &ctx.target else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "request was not admitted",
            ));
        };
        upstream_request.set_uri(Uri::from(target.path_and_query.clone()));
        upstream_request.insert_header(HOST, target.host_header())?;
        let drop: Vec<HeaderName> = upstream_request
            .headers
            .keys()
            .filter(|name| is_sidecar_header(name.as_str()))
            .cloned()
            .collect();
        for name in drop {
            upstream_request.remove_header(&name);
        }
        for header in &ctx.substituted {
            upstream_request.remove_header(&header.name);
            for value in &header.values {
                upstream_request.append_header(header.name.clone(), value.clone())?;
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        let set = ctx.scrub.clone().filter(|s| !s.is_empty());
        if let Some(set) = &set {
            // Before any status check: informational responses carry headers too.
            if scrub_headers(response, set)? {
                self.metrics.scrubbed_responses.inc();
            }
            // The upstream's reason phrase is free text it controls; the standard one stands in.
            response.set_reason_phrase(None)?;
            if response.status == StatusCode::SWITCHING_PROTOCOLS {
                // An upgraded stream (WebSocket, ...) is not HTTP any more and cannot be
                // scrubbed; after injecting a secret, refuse it rather than pass it through.
                ctx.pending = Some(Denial::unscannable_upgrade());
                return Err(Error::explain(
                    ErrorType::HTTPStatus(502),
                    "upgrade after injection",
                ));
            }
        }
        if response.status.is_informational() {
            return Ok(());
        }
        if let Some(started) = ctx.upstream_started.take() {
            self.metrics
                .upstream_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        let Some(set) = set else {
            return Ok(());
        };
        let full = ctx
            .target
            .as_ref()
            .is_some_and(|t| t.scrub_mode() == ScrubMode::Full);
        if !full || !has_body(session.req_header().method.clone(), response.status) {
            return Ok(());
        }
        // Every Content-Encoding line counts (clients apply them all): `identity` on one line
        // and `gzip` on the next is a stacked coding, not an identity body.
        let codings: Vec<String> = response
            .headers
            .get_all(CONTENT_ENCODING)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        let encoding = (!codings.is_empty()).then(|| codings.join(", "));
        match BodyScrubber::for_content_encoding(set, encoding.as_deref()) {
            Ok(scrubber) => {
                ctx.body_scrubber = Some(scrubber);
                response.remove_header(&CONTENT_LENGTH);
                response.insert_header(TRANSFER_ENCODING, "chunked")?;
                Ok(())
            }
            Err(unscannable) => {
                ctx.pending = Some(Denial::unscannable(&unscannable.encoding));
                Err(Error::explain(
                    ErrorType::HTTPStatus(502),
                    "unscannable response",
                ))
            }
        }
    }

    fn upstream_response_trailer_filter(
        &self,
        _session: &mut Session,
        trailers: &mut http::HeaderMap,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        if let Some(set) = ctx.scrub.as_ref().filter(|s| !s.is_empty()) {
            scrub_trailers(trailers, set)?;
        }
        Ok(())
    }

    async fn response_trailer_filter(
        &self,
        _session: &mut Session,
        trailers: &mut http::HeaderMap,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<Option<Bytes>>
    where
        RequestCtx: Send + Sync,
    {
        if let Some(set) = ctx.scrub.as_ref().filter(|s| !s.is_empty()) {
            scrub_trailers(trailers, set)?;
        }
        Ok(None)
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<Option<Duration>> {
        let Some(scrubber) = ctx.body_scrubber.as_mut() else {
            return Ok(None);
        };
        let scrub_failed = |e: crate::scrub::ScrubError| {
            tracing::warn!(error = %e, "aborting a response that cannot be scrubbed");
            Error::explain(
                ErrorType::HTTPStatus(502),
                "response body cannot be scrubbed",
            )
        };
        let pushed = match body.take() {
            Some(chunk) => scrubber.push(&chunk).map_err(scrub_failed)?,
            None => Bytes::new(),
        };
        let tail = if end_of_stream {
            scrubber.finish().map_err(scrub_failed)?
        } else {
            Bytes::new()
        };
        // The scrubber's output is already a fresh buffer: pass it on as it is, and copy only
        // in the rare call that has both a chunk and the end-of-stream tail.
        let out = match (pushed.is_empty(), tail.is_empty()) {
            (_, true) => pushed,
            (true, false) => tail,
            (false, false) => {
                let mut both = BytesMut::with_capacity(pushed.len() + tail.len());
                both.extend_from_slice(&pushed);
                both.extend_from_slice(&tail);
                both.freeze()
            }
        };
        *body = (!out.is_empty()).then_some(out);
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy
    where
        RequestCtx: Send + Sync,
    {
        let denial = ctx.pending.take().unwrap_or_else(|| error_denial(e));
        let code = denial.status.as_u16();
        if code > 0 && session.response_written().is_none() {
            if let Err(write_error) = self.deny(session, &denial).await {
                tracing::debug!(error = %write_error, "cannot send the error response");
            }
        } else {
            self.metrics.requests.with_label_values(&["error"]).inc();
        }
        ctx.counted = true;
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, _session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx)
    where
        RequestCtx: Send + Sync,
    {
        if ctx.counted {
            return;
        }
        match e {
            Some(_) => self.metrics.requests.with_label_values(&["error"]).inc(),
            None => self.metrics.hot.forwarded.inc(),
        }
    }
}

/// A JSON refusal for a proxying error pingora raised (upstream down, bad TLS...).
fn error_denial(e: &Error) -> Denial {
    match e.etype() {
        ErrorType::HTTPStatus(code) => {
            let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::BAD_GATEWAY);
            Denial::new(status, "upstream_error", "the request could not be proxied")
        }
        _ => match e.esource() {
            ErrorSource::Upstream => Denial::new(
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                "the upstream could not be reached or failed",
            ),
            ErrorSource::Downstream => Denial::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "malformed request",
            ),
            ErrorSource::Internal | ErrorSource::Unset => Denial::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            ),
        },
    }
}

/// Replace injected values in every response header; true if any was found.
fn scrub_headers(response: &mut ResponseHeader, set: &ScrubSet) -> pingora::Result<bool> {
    let mut changed: Vec<(HeaderName, Vec<HeaderValue>)> = Vec::new();
    for name in response.headers.keys() {
        // An upstream can echo the value as a header *name* too: such a header is dropped.
        if set.scrub_header_value(name.as_str().as_bytes()).is_some() {
            changed.push((name.clone(), Vec::new()));
            continue;
        }
        // One scan per value: `Some` holds the scrubbed bytes of a value that had a match.
        let scanned: Vec<(&HeaderValue, Option<Vec<u8>>)> = response
            .headers
            .get_all(name)
            .iter()
            .map(|v| (v, set.scrub_header_value(v.as_bytes())))
            .collect();
        if scanned.iter().all(|(_, scrubbed)| scrubbed.is_none()) {
            continue;
        }
        let mut new_values = Vec::with_capacity(scanned.len());
        for (original, scrubbed) in scanned {
            let value = match scrubbed {
                None => original.clone(),
                Some(bytes) => HeaderValue::from_bytes(&bytes).map_err(|_| {
                    Error::explain(ErrorType::InternalError, "scrubbed header is invalid")
                })?,
            };
            new_values.push(value);
        }
        changed.push((name.clone(), new_values));
    }
    let any = !changed.is_empty();
    for (name, values) in changed {
        response.remove_header(&name);
        for value in values {
            response.append_header(name.clone(), value)?;
        }
    }
    Ok(any)
}

/// Replace injected values in response trailers. (pingora 0.9 drops HTTP/1.1 trailers before
/// they reach these filters; HTTP/2 upstreams deliver them, and are scrubbed like headers.)
fn scrub_trailers(trailers: &mut http::HeaderMap, set: &ScrubSet) -> pingora::Result<()> {
    let leaking_names: Vec<HeaderName> = trailers
        .keys()
        .filter(|name| set.scrub_header_value(name.as_str().as_bytes()).is_some())
        .cloned()
        .collect();
    for name in leaking_names {
        trailers.remove(&name);
    }
    for value in trailers.values_mut() {
        if let Some(bytes) = set.scrub_header_value(value.as_bytes()) {
            *value = HeaderValue::from_bytes(&bytes).map_err(|_| {
                Error::explain(ErrorType::InternalError, "scrubbed trailer is invalid")
            })?;
        }
    }
    Ok(())
}

/// Whether a response with this status, to this method, carries a body.
fn has_body(method: Method, status: StatusCode) -> bool {
    method != Method::HEAD
        && status != StatusCode::NO_CONTENT
        && status != StatusCode::NOT_MODIFIED
        && !status.is_informational()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use agent_secret_core::secret::SecretBytes;

    const VALUE: &str = "sk-live-0123456789abcdef";

    fn set() -> ScrubSet {
        let path = SecretPath::parse("prod/api/key").unwrap();
        ScrubSet::new(&[(path, SecretBytes::new(VALUE.as_bytes().to_vec()))]).unwrap()
    }

    #[test]
    fn response_headers_echoing_the_value_in_a_value_or_a_name_are_scrubbed() {
        let mut response = ResponseHeader::build(200, None).unwrap();
        response
            .append_header("x-echo", format!("Bearer {VALUE}"))
            .unwrap();
        response.append_header(format!("x-{VALUE}"), "1").unwrap();
        response.append_header("x-plain", "ok").unwrap();
        assert!(scrub_headers(&mut response, &set()).unwrap());
        let shown = format!("{:?}", response.headers).to_ascii_lowercase();
        assert!(!shown.contains(VALUE), "{shown}");
        assert_eq!(
            response.headers.get("x-echo").unwrap(),
            "Bearer [REDACTED:prod/api/key]"
        );
        assert_eq!(response.headers.get("x-plain").unwrap(), "ok");
        assert_eq!(response.headers.len(), 2, "the leaking name was dropped");
    }

    #[test]
    fn trailers_are_scrubbed_like_headers() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert(
            "x-echo",
            HeaderValue::from_static("sk-live-0123456789abcdef"),
        );
        trailers.insert(
            HeaderName::from_bytes(format!("x-{VALUE}").as_bytes()).unwrap(),
            HeaderValue::from_static("1"),
        );
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        scrub_trailers(&mut trailers, &set()).unwrap();
        assert_eq!(trailers.get("x-echo").unwrap(), "[REDACTED:prod/api/key]");
        assert_eq!(trailers.get("grpc-status").unwrap(), "0");
        assert_eq!(trailers.len(), 2);
    }
}
