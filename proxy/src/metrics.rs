//! Prometheus metrics of the sidecar, served on the admin listener's `/metrics`.
//!
//! One registry per sidecar instance, passed in (no globals), so several sidecars in one test
//! process keep separate counts. Labels are bounded: outcomes, denial codes, cache names and
//! watch event types — never a path, token, host or value.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric the sidecar exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Requests by outcome: `forwarded`, `denied`, `error`.
    pub requests: IntCounterVec,
    /// Secrets substituted into forwarded requests.
    pub injections: IntCounter,
    /// Denials by code (`token_invalid`, `scope_denied`, ...).
    pub denials: IntCounterVec,
    /// Cache lookups by cache (`grant`, `value`) that found an entry.
    pub cache_hits: IntCounterVec,
    /// Cache lookups by cache (`grant`, `value`) that did not.
    pub cache_misses: IntCounterVec,
    /// Control-plane call latency by operation (`resolve`, `audit`, `watch_connect`).
    pub control_plane_seconds: HistogramVec,
    /// Time from dialling the upstream to its response header.
    pub upstream_seconds: Histogram,
    /// 1 while the watch stream is connected.
    pub watch_connected: IntGauge,
    /// Watch events applied, by type.
    pub watch_events: IntCounterVec,
    /// Responses whose body or headers had an injected value replaced.
    pub scrubbed_responses: IntCounter,
    /// Audit events that could not be recorded (denials only; injections fail closed).
    pub audit_dropped: IntCounter,
    /// Audit spool state by kind: `queued`, `spooled`, `sent`, `send_failures`,
    /// `used_bytes`, `max_bytes` (refreshed at each scrape).
    pub audit_spool: IntGaugeVec,
    /// Audit events the control plane refused on their own, moved to the spool's dead-letter
    /// file (refreshed at each scrape from the spool's count).
    pub audit_dead_lettered: IntCounter,
    /// Audit events whose fields were capped to fit a request (refreshed at each scrape).
    pub audit_truncated: IntCounter,
    /// Requests refused 429 by `limit` (a closed set: `rate_limit::Limit::as_str`).
    pub rate_limited: IntCounterVec,
    /// KMS failures while opening envelopes, by `fault`: `unavailable` (unreachable, timed
    /// out, 5xx) or `integrity` (an answer that failed its checks; also audited).
    pub kms_failures: IntCounterVec,
    /// Reserved uses of `max_uses` tokens given back, by `outcome`: `released`,
    /// `already_released`, `failed` (the use is then spent at the control plane's deadline).
    pub use_releases: IntCounterVec,
    /// Cached grants renewed ahead of their expiry, by `outcome`: `renewed`, `refused` (the
    /// control plane said no; a revoked, expired or invalid token's grant is dropped),
    /// `failed` (no answer: the grant runs to its expiry).
    pub grant_refreshes: IntCounterVec,
    /// Agent connections open now (`max_agent_connections` bounds it).
    pub agent_connections: IntGauge,
    /// Times the accept loop found `max_agent_connections` reached and left new connections
    /// in the listen backlog until one closed.
    pub agent_connection_cap_reached: IntCounter,
    /// The labelled children every request touches, looked up once here rather than by
    /// label (a hash and a lock) on each request.
    pub hot: HotCounters,
}

/// Pre-bound children of `requests`, `cache_hits` and `cache_misses`.
#[derive(Clone)]
pub struct HotCounters {
    pub forwarded: IntCounter,
    pub grant_hits: IntCounter,
    pub grant_misses: IntCounter,
    pub value_hits: IntCounter,
    pub value_misses: IntCounter,
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new_custom(Some("agent_secret_proxy".into()), None)?;
        let requests = IntCounterVec::new(
            Opts::new("requests_total", "Agent requests by outcome"),
            &["outcome"],
        )?;
        let injections = IntCounter::new("injections_total", "Secrets substituted into requests")?;
        let denials = IntCounterVec::new(Opts::new("denials_total", "Denials by code"), &["code"])?;
        let cache_hits =
            IntCounterVec::new(Opts::new("cache_hits_total", "Cache hits"), &["cache"])?;
        let cache_misses =
            IntCounterVec::new(Opts::new("cache_misses_total", "Cache misses"), &["cache"])?;
        let control_plane_seconds = HistogramVec::new(
            HistogramOpts::new("control_plane_seconds", "Control-plane call latency"),
            &["op"],
        )?;
        let upstream_seconds = Histogram::with_opts(HistogramOpts::new(
            "upstream_seconds",
            "Upstream time to response header",
        ))?;
        let watch_connected = IntGauge::new("watch_connected", "1 while the watch stream is open")?;
        let watch_events = IntCounterVec::new(
            Opts::new("watch_events_total", "Watch events applied"),
            &["type"],
        )?;
        let scrubbed_responses = IntCounter::new(
            "scrubbed_responses_total",
            "Responses in which an injected value was redacted",
        )?;
        let audit_dropped = IntCounter::new(
            "audit_dropped_total",
            "Denial audit events dropped because the spool was full",
        )?;
        let audit_spool =
            IntGaugeVec::new(Opts::new("audit_spool", "Audit pipeline state"), &["kind"])?;
        let audit_dead_lettered = IntCounter::new(
            "audit_dead_lettered_total",
            "Audit events the control plane refused, moved to the dead-letter file",
        )?;
        let audit_truncated = IntCounter::new(
            "audit_truncated_total",
            "Audit events whose fields were capped to fit a request",
        )?;
        registry.register(Box::new(audit_dead_lettered.clone()))?;
        registry.register(Box::new(audit_truncated.clone()))?;
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "rate_limited_total",
                "Requests refused 429 rate_limited, by the limit that ran out",
            ),
            &["limit"],
        )?;
        for limit in crate::rate_limit::Limit::ALL {
            rate_limited.get_metric_with_label_values(&[limit.as_str()])?;
        }
        registry.register(Box::new(rate_limited.clone()))?;
        let kms_failures = IntCounterVec::new(
            Opts::new(
                "kms_failures_total",
                "KMS failures opening envelopes, by fault",
            ),
            &["fault"],
        )?;
        for fault in ["unavailable", "integrity"] {
            kms_failures.get_metric_with_label_values(&[fault])?;
        }
        registry.register(Box::new(kms_failures.clone()))?;
        let use_releases = IntCounterVec::new(
            Opts::new(
                "use_releases_total",
                "Reserved max_uses token uses given back, by outcome",
            ),
            &["outcome"],
        )?;
        for outcome in ["released", "already_released", "failed"] {
            use_releases.get_metric_with_label_values(&[outcome])?;
        }
        registry.register(Box::new(use_releases.clone()))?;
        let grant_refreshes = IntCounterVec::new(
            Opts::new(
                "grant_refreshes_total",
                "Cached grants renewed in the background before they expire, by outcome",
            ),
            &["outcome"],
        )?;
        for outcome in ["renewed", "refused", "failed"] {
            grant_refreshes.get_metric_with_label_values(&[outcome])?;
        }
        registry.register(Box::new(grant_refreshes.clone()))?;
        let agent_connections = IntGauge::new("agent_connections", "Agent connections open")?;
        let agent_connection_cap_reached = IntCounter::new(
            "agent_connection_cap_reached_total",
            "Times new agent connections waited because max_agent_connections were open",
        )?;
        registry.register(Box::new(agent_connections.clone()))?;
        registry.register(Box::new(agent_connection_cap_reached.clone()))?;
        registry.register(Box::new(audit_spool.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(injections.clone()))?;
        registry.register(Box::new(denials.clone()))?;
        registry.register(Box::new(cache_hits.clone()))?;
        registry.register(Box::new(cache_misses.clone()))?;
        registry.register(Box::new(control_plane_seconds.clone()))?;
        registry.register(Box::new(upstream_seconds.clone()))?;
        registry.register(Box::new(watch_connected.clone()))?;
        registry.register(Box::new(watch_events.clone()))?;
        registry.register(Box::new(scrubbed_responses.clone()))?;
        registry.register(Box::new(audit_dropped.clone()))?;
        let hot = HotCounters {
            forwarded: requests.get_metric_with_label_values(&["forwarded"])?,
            grant_hits: cache_hits.get_metric_with_label_values(&["grant"])?,
            grant_misses: cache_misses.get_metric_with_label_values(&["grant"])?,
            value_hits: cache_hits.get_metric_with_label_values(&["value"])?,
            value_misses: cache_misses.get_metric_with_label_values(&["value"])?,
        };
        Ok(Metrics {
            registry,
            requests,
            injections,
            denials,
            cache_hits,
            cache_misses,
            control_plane_seconds,
            upstream_seconds,
            watch_connected,
            watch_events,
            scrubbed_responses,
            audit_dropped,
            audit_spool,
            kms_failures,
            use_releases,
            grant_refreshes,
            agent_connections,
            agent_connection_cap_reached,
            audit_dead_lettered,
            audit_truncated,
            rate_limited,
            hot,
        })
    }

    /// Copy the audit pipeline's counters into the `audit_spool` gauges.
    pub fn observe_spool(&self, stats: &crate::spool::SpoolStats) {
        let as_gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        for (kind, value) in [
            ("queued", stats.queued),
            ("spooled", stats.spooled),
            ("sent", stats.sent),
            ("send_failures", stats.send_failures),
            ("refused_whole", stats.refused_whole),
            ("used_bytes", stats.used_bytes),
            ("max_bytes", stats.max_bytes),
        ] {
            self.audit_spool
                .with_label_values(&[kind])
                .set(as_gauge(value));
        }
        // Counters only go up: add what the spool counted since the last scrape.
        for (counter, total) in [
            (&self.audit_dead_lettered, stats.dead_lettered),
            (&self.audit_truncated, stats.truncated),
        ] {
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }
}
