//! The pingora `ProxyHttp` implementation: thin glue between pingora's phases and the plain
//! functions that decide.
//!
//! * `request_filter`: read the request ([`crate::admit`]: route, token, placeholders),
//!   rate-limit it ([`crate::rate_limit`]), SSRF-check the upstream ([`crate::ssrf`]), reserve
//!   audit room ([`crate::audit`]), resolve and decrypt ([`crate::resolver`]), substitute; the
//!   steps with I/O are in `admission`. Any refusal is written here as JSON
//!   ([`crate::denial`]) and the request ends.
//! * `upstream_peer` / `upstream_request_filter`: the peer and the header sent to it
//!   ([`crate::upstream`]), from the admission alone.
//! * `response_filter` / `response_body_filter` / the trailer filters: scrub injected values
//!   from headers, trailers and the streamed body ([`crate::response_plan`]); an encoding the
//!   scrubber cannot read is a 502 decided before any byte of the body is sent.
//!
//! A phase only orders the steps, does the I/O and counts; every decision is a plain
//! function unit-tested without a socket. Per-request state lives in [`RequestCtx`]. Request
//! bodies stream untouched; redirects are passed back to the agent, never followed.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::protocols::tls::CaType;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorType};

use crate::admit::Admission;
use crate::audit::Audit;
use crate::caller::Caller;
use crate::denial::Denial;
use crate::downstream;
use crate::inject;
use crate::metrics::Metrics;
use crate::rate_limit::RateLimits;
use crate::resolver::Resolver;
use crate::response_plan::{self, ResponsePlan};
use crate::route::Router;
use crate::scrub::{BodyScrubber, ScrubSet};
use crate::upstream;

mod admission;

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
    /// Set once `request_filter` let the request through.
    admitted: Option<Admission>,
    body_scrubber: Option<BodyScrubber>,
    /// A refusal decided after the request was admitted (unscannable response), written by
    /// `fail_to_proxy`.
    pending: Option<Denial>,
    upstream_started: Option<Instant>,
    /// Set when `request_filter` already counted the request.
    counted: bool,
}

impl RequestCtx {
    fn admitted(&self) -> pingora::Result<&Admission> {
        self.admitted
            .as_ref()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "request was not admitted"))
    }

    fn scrub_set(&self) -> Option<&Arc<ScrubSet>> {
        self.admitted.as_ref().and_then(Admission::scrub_set)
    }
}

impl SecretProxy {
    /// Write `denial` as the response and end the request, counted.
    async fn refuse(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        denial: &Denial,
    ) -> pingora::Result<bool> {
        self.deny(session, denial).await?;
        ctx.counted = true;
        Ok(true)
    }

    /// Write `denial` as the response.
    async fn deny(&self, session: &mut Session, denial: &Denial) -> pingora::Result<()> {
        self.metrics
            .denials
            .with_label_values(&[denial.code.as_str()])
            .inc();
        self.metrics.requests.with_label_values(&["denied"]).inc();
        let body = denial.body();
        let head = denial.response_header(body.len())?;
        session.set_keepalive(None);
        session.write_response_header(Box::new(head), false).await?;
        session.write_response_body(Some(body), true).await
    }
}

fn client_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|addr| addr.as_inet())
        .map(|addr| addr.ip())
}

/// Follow a [`ResponsePlan`]: keep the body scrubber, or keep the refusal for
/// `fail_to_proxy` and fail the response.
fn follow(
    plan: ResponsePlan,
    response: &mut ResponseHeader,
    ctx: &mut RequestCtx,
) -> pingora::Result<()> {
    match plan {
        ResponsePlan::Forward => Ok(()),
        ResponsePlan::ScrubBody(scrubber) => {
            ctx.body_scrubber = Some(scrubber);
            response_plan::stream_chunked(response)
        }
        ResponsePlan::Refuse { denial, why } => {
            ctx.pending = Some(denial);
            Err(Error::explain(ErrorType::HTTPStatus(502), why))
        }
    }
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
            let denial = Denial::client_address_unknown();
            return self.refuse(session, ctx, &denial).await;
        };
        let req = session.req_header();
        let mut caller = Caller::new(ip, req);
        let denial = match self.admit(req, &mut caller).await {
            Ok(admission) => {
                ctx.admitted = Some(admission);
                return Ok(false);
            }
            Err(denial) => denial,
        };
        if !caller.audited {
            self.audit_denial(&caller, None, None, &denial);
        }
        self.refuse(session, ctx, &denial).await
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<Box<HttpPeer>> {
        let peer = upstream::peer(
            ctx.admitted()?,
            self.upstream_ca.as_ref(),
            self.upstream_connect_timeout,
        );
        ctx.upstream_started = Some(Instant::now());
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        upstream::rewrite_request(upstream_request, ctx.admitted()?)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        // Only the sidecar's own refusals carry the denial marker (the MCP tool trusts it).
        response.remove_header(crate::denial::DENIAL_HEADER);
        // Before any status check: informational responses carry headers too.
        if let Some(set) = ctx.scrub_set() {
            if response_plan::scrub_head(response, set)? {
                self.metrics.scrubbed_responses.inc();
            }
        }
        if !response.status.is_informational() {
            if let Some(started) = ctx.upstream_started.take() {
                let seconds = started.elapsed().as_secs_f64();
                self.metrics.upstream_seconds.observe(seconds);
            }
        }
        let plan = match &ctx.admitted {
            Some(admission) => {
                response_plan::plan_response(response, &session.req_header().method, admission)
            }
            None => ResponsePlan::Forward,
        };
        if matches!(plan, ResponsePlan::ScrubBody(_))
            && response_plan::declared_small(response, downstream::HOLD_MAX_BODY)
        {
            if let Some(stream) = session.downstream_session.stream() {
                downstream::hold_flushes(stream);
            }
        }
        follow(plan, response, ctx)
    }

    fn upstream_response_trailer_filter(
        &self,
        _session: &mut Session,
        trailers: &mut http::HeaderMap,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        match ctx.scrub_set() {
            Some(set) => response_plan::scrub_trailers(trailers, set),
            None => Ok(()),
        }
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
        if let Some(set) = ctx.scrub_set() {
            response_plan::scrub_trailers(trailers, set)?;
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
        *body = response_plan::scrub_chunk(scrubber, body.take(), end_of_stream).map_err(|e| {
            tracing::warn!(error = %e, "aborting a response that cannot be scrubbed");
            Error::explain(
                ErrorType::HTTPStatus(502),
                "response body cannot be scrubbed",
            )
        })?;
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
        let denial = ctx
            .pending
            .take()
            .unwrap_or_else(|| Denial::from_proxy_error(e));
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
