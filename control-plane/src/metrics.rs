//! Prometheus metrics of the control plane. The registry is owned by `App`, not global, so
//! tests and several servers in one process do not share counters.
//!
//! Labels are route templates, methods, statuses and outcome codes: never a path of a secret,
//! a token or anything a client chose freely.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_latency: HistogramVec,
    pub tokens_issued: IntCounter,
    pub resolve_outcomes: IntCounterVec,
    pub kek_rotations: IntCounter,
    /// Summed over tenants at each rotation check: what `kms rewrap` still has to move.
    pub deks_not_on_primary: IntGauge,
    /// Resolves committed per transaction (group commit); above 1 only under concurrency.
    pub resolve_batch_size: prometheus::Histogram,
}

impl Metrics {
    /// Registration of freshly created, uniquely named collectors cannot fail; if it somehow
    /// did, the metric would simply be missing from `/metrics` (logged), never a crash.
    pub fn new() -> Metrics {
        let registry =
            Registry::new_custom(Some("agent_secret_store".into()), None).unwrap_or_default();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        );
        let http_latency = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency by route",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["route", "method"],
        );
        let tokens_issued = IntCounter::new("tokens_issued_total", "Scoped tokens issued");
        let resolve_outcomes = IntCounterVec::new(
            Opts::new(
                "resolve_total",
                "Sidecar resolve outcomes: granted or the denial code",
            ),
            &["outcome"],
        );
        let kek_rotations = IntCounter::new(
            "kms_rotations_total",
            "KEK rotations this process recorded first (made here, or by Cloud KMS)",
        );
        let deks_not_on_primary = IntGauge::new(
            "kms_deks_not_on_primary",
            "Stored DEKs not wrapped under their tenant's primary KEK version, at the last check",
        );
        let resolve_batch_size = prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "resolve_batch_size",
                "Resolves committed together in one transaction (group commit)",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
        );
        let (
            Ok(http_requests),
            Ok(http_latency),
            Ok(tokens_issued),
            Ok(resolve_outcomes),
            Ok(kek_rotations),
            Ok(deks_not_on_primary),
            Ok(resolve_batch_size),
        ) = (
            http_requests,
            http_latency,
            tokens_issued,
            resolve_outcomes,
            kek_rotations,
            deks_not_on_primary,
            resolve_batch_size,
        )
        else {
            unreachable!("metric definitions above are static and valid")
        };
        for collector in [
            Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_latency.clone()),
            Box::new(tokens_issued.clone()),
            Box::new(resolve_outcomes.clone()),
            Box::new(kek_rotations.clone()),
            Box::new(deks_not_on_primary.clone()),
            Box::new(resolve_batch_size.clone()),
        ] {
            if let Err(e) = registry.register(collector) {
                tracing::error!(error = %e, "metric registration failed");
            }
        }
        Metrics {
            registry,
            http_requests,
            http_latency,
            tokens_issued,
            resolve_outcomes,
            kek_rotations,
            deks_not_on_primary,
            resolve_batch_size,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
