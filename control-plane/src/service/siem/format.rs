//! What each SIEM preset receives: a batch of exported events (`AuditEventView`, the same
//! fields as `GET /v1/audit`) rendered as that product's HTTP intake expects. Each event keeps
//! its `id`, which receivers use to drop the duplicates an at-least-once delivery may send.

use serde_json::{json, Value};

use super::SinkKind;
use crate::service::audit_log::AuditEventView;

/// `source`, `ddsource` and `service` of every event.
pub const SOURCE: &str = "agent-secret-store";

/// Seconds since the epoch with microseconds, from the event's RFC 3339 time (Splunk's
/// `time`).
fn epoch_seconds(view: &AuditEventView) -> Option<f64> {
    let at = chrono::DateTime::parse_from_rfc3339(&view.timestamp).ok()?;
    Some(at.timestamp_micros() as f64 / 1_000_000.0)
}

/// The request body for `kind`, and its content type.
pub fn body(
    kind: SinkKind,
    events: &[AuditEventView],
) -> Result<(Vec<u8>, &'static str), serde_json::Error> {
    match kind {
        // Splunk HTTP Event Collector: concatenated event objects (newline-separated).
        SinkKind::SplunkHec => {
            let mut out = Vec::new();
            for e in events {
                let wrapped = json!({
                    "time": epoch_seconds(e),
                    "source": SOURCE,
                    "sourcetype": "agent-secret-store:audit",
                    "event": e,
                });
                serde_json::to_writer(&mut out, &wrapped)?;
                out.push(b'\n');
            }
            Ok((out, "application/json"))
        }
        // Datadog Logs intake v2: a JSON array of log objects; the event's fields are the
        // log's attributes, `message` its one-line summary.
        SinkKind::Datadog => {
            let logs: Vec<Value> = events
                .iter()
                .map(|e| {
                    let mut log = serde_json::to_value(e).unwrap_or(Value::Null);
                    if let Value::Object(fields) = &mut log {
                        fields.insert("ddsource".into(), SOURCE.into());
                        fields.insert("service".into(), SOURCE.into());
                        fields.insert(
                            "ddtags".into(),
                            format!("tenant:{},event_type:{}", e.tenant_id, e.event_type).into(),
                        );
                        fields.insert(
                            "message".into(),
                            format!(
                                "{} by {} ({})",
                                e.event_type,
                                e.actor,
                                if e.success { "ok" } else { "failed" }
                            )
                            .into(),
                        );
                    }
                    log
                })
                .collect();
            Ok((serde_json::to_vec(&logs)?, "application/json"))
        }
        // Plain JSON Lines, as `GET /v1/audit?format=jsonl` gives them (syslog frames are
        // `super::syslog`'s; this is never asked for them).
        SinkKind::JsonLines | SinkKind::SyslogTls => {
            let mut out = Vec::new();
            for e in events {
                serde_json::to_writer(&mut out, e)?;
                out.push(b'\n');
            }
            Ok((out, "application/x-ndjson"))
        }
    }
}

/// The header that carries the sink's token, and its value.
pub fn auth_header(kind: SinkKind, token: &str) -> (&'static str, String) {
    match kind {
        SinkKind::SplunkHec => ("authorization", format!("Splunk {token}")),
        SinkKind::Datadog => ("dd-api-key", token.to_owned()),
        SinkKind::JsonLines | SinkKind::SyslogTls => ("authorization", format!("Bearer {token}")),
    }
}
