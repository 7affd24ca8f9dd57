//! Prometheus metrics of the control plane. The registry is owned by `App`, not global, so
//! tests and several servers in one process do not share counters.
//!
//! Labels are route templates, methods, statuses and outcome codes: never a path of a secret,
//! a token or anything a client chose freely.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
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
    /// Resolves read together in one read transaction (group read); above 1 only under
    /// concurrency.
    pub resolve_read_batch_size: prometheus::Histogram,
    /// Requests refused 429 by limit (`limits::Limit`: a closed set).
    pub rate_limited: IntCounterVec,
    /// Failed authentications (a presented credential refused), on any endpoint.
    pub auth_failures: IntCounter,
    /// Connections refused before the TLS handshake, by cap (`per_ip`, `total`).
    pub connections_refused: IntCounterVec,
    /// Connections the server closed for being too slow or idle, by `reason`
    /// (`tls_handshake_timeout`; `read_timeout`: an HTTP/1.1 request head or an HTTP/2
    /// keep-alive ping not answered in time; `idle_timeout`: no request in flight).
    pub connections_timed_out: IntCounterVec,
    /// KMS calls on the write path that failed by `fault`: `unavailable` (unreachable,
    /// timed out, 5xx) or `integrity` (an answer that failed its checks; also audited).
    pub kms_failures: IntCounterVec,
    /// Releases of reserved token uses by `outcome`: `released`, `already_released`,
    /// `expired` (too late: the use stands), `not_found` (unknown or another sidecar's).
    pub use_releases: IntCounterVec,
    /// Approval notifications by `outcome` (`NOTIFICATION_OUTCOMES`): `sent`, `retried`
    /// (an attempt failed, another follows), `failed` (given up or refused), `dropped`
    /// (the queue was full).
    pub notifications: IntCounterVec,
    /// Audit events per SIEM sink by `outcome`: `sent`, `dead_lettered` (refused for good
    /// and skipped), `failed` (in a batch attempt that failed and will be retried; an event
    /// retried n times counts n times).
    pub audit_sink_events: IntCounterVec,
    /// Audit events not yet delivered to each sink, as of its last pass.
    pub audit_sink_lag: IntGaugeVec,
    /// `anomaly_alerts_total{rule}` (`service::alerts`).
    pub anomaly_alerts: IntCounterVec,
    /// `alert_webhook_total{outcome}`: POSTs to the alert webhook, `sent` or `failed`.
    pub alert_webhook: IntCounterVec,
    /// The backup scheduler's (`crate::backup::schedule`).
    pub backup: BackupMetrics,
}

/// `backup_last_success_timestamp_seconds` (0 until one is known), `backup_last_size_bytes`
/// and `backup_failures_total`.
pub struct BackupMetrics {
    pub last_success: IntGauge,
    pub last_size: IntGauge,
    pub failures: IntCounter,
}

fn static_ok<T>(_: prometheus::Error) -> T {
    unreachable!("metric definitions are static and valid")
}

impl BackupMetrics {
    fn registered(registry: &Registry) -> BackupMetrics {
        let metrics = BackupMetrics {
            last_success: IntGauge::new(
                "backup_last_success_timestamp_seconds",
                "When the newest successful backup was made (Unix seconds; 0: none known)",
            )
            .unwrap_or_else(static_ok),
            last_size: IntGauge::new(
                "backup_last_size_bytes",
                "Size of the newest successful backup file",
            )
            .unwrap_or_else(static_ok),
            failures: IntCounter::new("backup_failures_total", "Scheduled backups that failed")
                .unwrap_or_else(static_ok),
        };
        for collector in [
            Box::new(metrics.last_success.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.last_size.clone()),
            Box::new(metrics.failures.clone()),
        ] {
            if let Err(e) = registry.register(collector) {
                tracing::error!(error = %e, "metric registration failed");
            }
        }
        metrics
    }
}

/// Label values of `connections_timed_out_total`.
pub const TIMEOUT_REASONS: [&str; 3] = ["tls_handshake_timeout", "read_timeout", "idle_timeout"];

/// Label values of `approval_notifications_total`: `sent`; `retried` (an attempt failed and
/// another follows); `failed` (given up, or refused for good); `dropped` (the queue was full).
pub const NOTIFICATION_OUTCOMES: [&str; 4] = ["sent", "retried", "failed", "dropped"];

/// A method label from a closed set, so a client cannot mint label values (and series) with
/// made-up methods.
pub fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
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
        let resolve_read_batch_size = prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "resolve_read_batch_size",
                "Resolves whose token and secrets were read in one transaction (group read)",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
        );
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "rate_limited_total",
                "Requests refused with 429 rate_limited, by limit",
            ),
            &["limit"],
        );
        let auth_failures = IntCounter::new(
            "auth_failures_total",
            "Presented credentials refused (failed authentications)",
        );
        let connections_refused = IntCounterVec::new(
            Opts::new(
                "connections_refused_total",
                "Connections refused before the TLS handshake, by cap",
            ),
            &["reason"],
        );
        let connections_timed_out = IntCounterVec::new(
            Opts::new(
                "connections_timed_out_total",
                "Connections closed for being too slow or idle, by reason",
            ),
            &["reason"],
        );
        let (
            Ok(http_requests),
            Ok(http_latency),
            Ok(tokens_issued),
            Ok(resolve_outcomes),
            Ok(kek_rotations),
            Ok(deks_not_on_primary),
            Ok(resolve_batch_size),
            Ok(resolve_read_batch_size),
            Ok(rate_limited),
            Ok(auth_failures),
            Ok(connections_refused),
            Ok(connections_timed_out),
        ) = (
            http_requests,
            http_latency,
            tokens_issued,
            resolve_outcomes,
            kek_rotations,
            deks_not_on_primary,
            resolve_batch_size,
            resolve_read_batch_size,
            rate_limited,
            auth_failures,
            connections_refused,
            connections_timed_out,
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
            Box::new(resolve_read_batch_size.clone()),
            Box::new(rate_limited.clone()),
            Box::new(auth_failures.clone()),
            Box::new(connections_refused.clone()),
            Box::new(connections_timed_out.clone()),
        ] {
            if let Err(e) = registry.register(collector) {
                tracing::error!(error = %e, "metric registration failed");
            }
        }
        let kms_failures = registered_counter_vec(
            &registry,
            Opts::new(
                "kms_failures_total",
                "KMS failures on the write path, by fault",
            ),
            "fault",
            &["unavailable", "integrity"],
        );
        let use_releases = registered_counter_vec(
            &registry,
            Opts::new(
                "use_releases_total",
                "Releases of reserved max_uses token uses, by outcome",
            ),
            "outcome",
            &["released", "already_released", "expired", "not_found"],
        );
        let audit_sink_events = IntCounterVec::new(
            Opts::new(
                "audit_sink_events_total",
                "Audit events per SIEM sink, by outcome (sent, dead_lettered, failed)",
            ),
            &["sink", "outcome"],
        )
        .unwrap_or_else(|_| unreachable!("metric definitions are static and valid"));
        let audit_sink_lag = IntGaugeVec::new(
            Opts::new(
                "audit_sink_lag_events",
                "Audit events waiting to be delivered to each SIEM sink",
            ),
            &["sink"],
        )
        .unwrap_or_else(|_| unreachable!("metric definitions are static and valid"));
        for collector in [
            Box::new(audit_sink_events.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(audit_sink_lag.clone()),
        ] {
            if let Err(e) = registry.register(collector) {
                tracing::error!(error = %e, "metric registration failed");
            }
        }
        let notifications = registered_counter_vec(
            &registry,
            Opts::new(
                "approval_notifications_total",
                "Approval request notifications to the webhook, by outcome",
            ),
            "outcome",
            &NOTIFICATION_OUTCOMES,
        );
        let rules: Vec<&str> = crate::anomaly::Rule::ALL
            .iter()
            .map(|r| r.as_str())
            .collect();
        let anomaly_alerts = registered_counter_vec(
            &registry,
            Opts::new(
                "anomaly_alerts_total",
                "Anomaly alerts raised (alert.raised events), by rule",
            ),
            "rule",
            &rules,
        );
        let alert_webhook = registered_counter_vec(
            &registry,
            Opts::new(
                "alert_webhook_total",
                "Alerts posted to the alert webhook, by outcome",
            ),
            "outcome",
            &["sent", "failed"],
        );
        let backup = BackupMetrics::registered(&registry);
        let metrics = Metrics {
            registry,
            http_requests,
            http_latency,
            tokens_issued,
            resolve_outcomes,
            kek_rotations,
            deks_not_on_primary,
            resolve_batch_size,
            resolve_read_batch_size,
            rate_limited,
            auth_failures,
            connections_refused,
            connections_timed_out,
            kms_failures,
            use_releases,
            notifications,
            audit_sink_events,
            audit_sink_lag,
            anomaly_alerts,
            alert_webhook,
            backup,
        };
        // Every series of a closed label set exists from the start (at 0), so an alert on
        // its rate works before the first refusal.
        for limit in crate::limits::Limit::ALL {
            metrics.rate_limited.with_label_values(&[limit.as_str()]);
        }
        for reason in crate::limits::ConnectionRefusal::ALL {
            metrics
                .connections_refused
                .with_label_values(&[reason.as_str()]);
        }
        for reason in TIMEOUT_REASONS {
            metrics.connections_timed_out.with_label_values(&[reason]);
        }
        metrics
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

/// A counter family with one label, registered, with every value of its closed label set
/// present from the start (at 0). Failures are logged like the others' (never a crash).
fn registered_counter_vec(
    registry: &Registry,
    opts: Opts,
    label: &str,
    values: &[&str],
) -> IntCounterVec {
    let Ok(family) = IntCounterVec::new(opts, &[label]) else {
        unreachable!("metric definitions are static and valid")
    };
    for value in values {
        family.with_label_values(&[value]);
    }
    if let Err(e) = registry.register(Box::new(family.clone())) {
        tracing::error!(error = %e, "metric registration failed");
    }
    family
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
