//! Pushing the audit log to SIEMs (`[[audit.sinks]]`): Splunk HEC, Datadog Logs, plain JSON
//! Lines over HTTPS, or syslog (RFC 5424) over TLS.
//!
//! The outbox is the audit table itself. Each sink keeps, per tenant, the position of the last
//! event it delivered (`audit_sink_cursors`, written only after the receiver said 2xx); its
//! worker reads the events after it in chain order, a batch at a time, and moves the cursor
//! with a conditional update. Nothing is lost across a restart or a receiver's outage — the
//! worker resumes from the stored cursor — and nothing extra is written on the request path.
//! Delivery is at least once: a batch delivered just before a crash, or by two replicas at
//! once, is sent again, and receivers drop repeats by the event `id`.
//!
//! Connection errors, timeouts, 408, 429 and 5xx are retried with backoff (1 s doubling to
//! 60 s) for as long as they last, holding the cursor: a receiver that is down delays, never
//! loses. Any other answer refuses the batch for good: it is counted as dead-lettered
//! (`audit_sink_events_total{outcome="dead_lettered"}`), logged, and skipped, so one malformed
//! batch cannot stop the stream. `audit_sink_lag_events{sink}` is how many events wait.

pub mod format;
pub mod syslog;

use std::sync::Arc;
use std::time::Duration;

use agent_secret_core::ids::TenantId;
use agent_secret_core::secret::SecretString;

use super::audit_log::AuditEventView;
use super::App;
use crate::store::AuditFilter;

pub use crate::config::SinkKind;

/// One sink, as the worker runs it.
#[derive(Clone, Debug)]
pub struct SinkSettings {
    /// `[a-z0-9_-]`, at most 32: the cursor's key and the metrics' label.
    pub name: String,
    pub kind: SinkKind,
    pub url: String,
    pub token: Option<SecretString>,
    /// PEM CA certificates added to the public roots.
    pub ca_pem: Option<Vec<u8>>,
    pub batch_size: i64,
    pub flush_interval: Duration,
}

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What the receiver did with a batch.
enum Sent {
    Delivered,
    /// Refused for good (a 4xx other than 408 and 429).
    Refused(u16),
    /// Try again later.
    Failed(String),
}

/// One sink's worker.
struct Worker {
    app: Arc<App>,
    sink: SinkSettings,
    client: reqwest::Client,
    /// The syslog sink's target and its kept-open connection.
    syslog: Option<(
        syslog::SyslogTarget,
        tokio::sync::Mutex<Option<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>>,
    )>,
    hostname: String,
}

/// Starts a worker per sink; each runs until aborted (with the server).
pub fn spawn(app: Arc<App>) -> Vec<tokio::task::JoinHandle<()>> {
    app.policy
        .audit_sinks
        .clone()
        .into_iter()
        .filter_map(|sink| {
            let syslog = match sink.kind {
                SinkKind::SyslogTls => {
                    match syslog::SyslogTarget::new(&sink.url, sink.ca_pem.as_deref()) {
                        Ok(target) => Some((target, tokio::sync::Mutex::new(None))),
                        Err(e) => {
                            tracing::error!(sink = %sink.name, error = %e, "audit sink disabled: bad syslog target");
                            return None;
                        }
                    }
                }
                _ => None,
            };
            match client(&sink) {
                Ok(client) => {
                    let worker = Worker {
                        app: app.clone(),
                        sink,
                        client,
                        syslog,
                        hostname: hostname(),
                    };
                    Some(tokio::spawn(worker.run()))
                }
                Err(e) => {
                    tracing::error!(sink = %sink.name, error = %e, "audit sink disabled: its HTTP client cannot be built");
                    None
                }
            }
        })
        .collect()
}

/// This host's name for syslog's HOSTNAME field.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

fn client(sink: &SinkSettings) -> Result<reqwest::Client, reqwest::Error> {
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(pem) = &sink.ca_pem {
        for cert in reqwest::Certificate::from_pem_bundle(pem)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build()
}

impl Worker {
    async fn run(self) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let delay = match self.pass().await {
                Ok(()) => {
                    backoff = FIRST_BACKOFF;
                    self.sink.flush_interval
                }
                Err(e) => {
                    tracing::warn!(sink = %self.sink.name, error = %e, retry_in = ?backoff, "audit sink delivery failed");
                    let wait = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    wait
                }
            };
            tokio::time::sleep(delay).await;
        }
    }

    /// Drains every tenant as far as it goes; an error stops the pass (the cursor holds).
    async fn pass(&self) -> Result<(), String> {
        let tenants = self
            .app
            .store
            .list_tenant_ids()
            .await
            .map_err(|e| e.to_string())?;
        let mut lag = 0i64;
        for tenant in tenants {
            lag += self.drain(tenant).await?;
        }
        self.app
            .metrics
            .audit_sink_lag
            .with_label_values(&[&self.sink.name])
            .set(lag);
        Ok(())
    }

    /// Sends the tenant's events after its cursor, batch by batch; the events still waiting.
    async fn drain(&self, tenant: TenantId) -> Result<i64, String> {
        let store = &self.app.store;
        let name = self.sink.name.as_str();
        loop {
            let cursor = store
                .sink_cursor(tenant, name)
                .await
                .map_err(|e| e.to_string())?;
            let filter = AuditFilter {
                after_seq: Some(cursor),
                limit: Some(self.sink.batch_size),
                ..AuditFilter::default()
            };
            let events = store
                .list_audit(tenant, &filter)
                .await
                .map_err(|e| e.to_string())?;
            let Some(last) = events.last().map(|e| e.seq) else {
                return Ok(0);
            };
            let views: Vec<AuditEventView> = events.iter().map(AuditEventView::from).collect();
            let outcome = match self.send(&views).await {
                Sent::Delivered => "sent",
                Sent::Refused(status) => {
                    tracing::error!(sink = name, %tenant, status, first_seq = cursor + 1, last_seq = last,
                        "the audit sink refused a batch for good; it is skipped (dead-lettered)");
                    "dead_lettered"
                }
                Sent::Failed(why) => {
                    self.count("failed", views.len() as u64);
                    let head = store.audit_head(tenant).await.ok().flatten();
                    let waiting = head.map_or(0, |(seq, _)| seq - cursor);
                    self.app
                        .metrics
                        .audit_sink_lag
                        .with_label_values(&[name])
                        .set(waiting);
                    return Err(why);
                }
            };
            self.count(outcome, views.len() as u64);
            store
                .advance_sink_cursor(tenant, name, cursor, last)
                .await
                .map_err(|e| e.to_string())?;
            if (events.len() as i64) < self.sink.batch_size {
                let head = store.audit_head(tenant).await.map_err(|e| e.to_string())?;
                return Ok(head.map_or(0, |(seq, _)| (seq - last).max(0)));
            }
        }
    }

    fn count(&self, outcome: &str, n: u64) {
        self.app
            .metrics
            .audit_sink_events
            .with_label_values(&[&self.sink.name, outcome])
            .inc_by(n);
    }

    /// Writes the batch to the syslog connection, opening one if there is none.
    async fn send_syslog(&self, views: &[AuditEventView]) -> Sent {
        let Some((target, connection)) = &self.syslog else {
            return Sent::Failed("no syslog target".into());
        };
        let frames = match syslog::frames(&self.hostname, views) {
            Ok(frames) => frames,
            Err(e) => return Sent::Failed(format!("could not encode the batch: {e}")),
        };
        let mut connection = connection.lock().await;
        if connection.is_none() {
            match target.connect().await {
                Ok(stream) => *connection = Some(stream),
                Err(e) => return Sent::Failed(format!("syslog connection: {e}")),
            }
        }
        let Some(stream) = connection.as_mut() else {
            return Sent::Failed("no syslog connection".into());
        };
        match syslog::write_all(stream, &frames).await {
            Ok(()) => Sent::Delivered,
            Err(e) => {
                *connection = None;
                Sent::Failed(format!("syslog write: {e}"))
            }
        }
    }

    async fn send(&self, views: &[AuditEventView]) -> Sent {
        if self.sink.kind == SinkKind::SyslogTls {
            return self.send_syslog(views).await;
        }
        let (body, content_type) = match format::body(self.sink.kind, views) {
            Ok(body) => body,
            Err(e) => return Sent::Failed(format!("could not encode the batch: {e}")),
        };
        let mut request = self
            .client
            .post(&self.sink.url)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        if let Some(token) = &self.sink.token {
            let (name, value) = format::auth_header(self.sink.kind, token.expose());
            let Ok(mut value) = reqwest::header::HeaderValue::from_str(&value) else {
                return Sent::Failed("the sink's token is not a valid header value".into());
            };
            value.set_sensitive(true);
            request = request.header(name, value);
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => Sent::Delivered,
            Ok(response) => {
                let status = response.status();
                if status.is_server_error()
                    || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                    || status == reqwest::StatusCode::REQUEST_TIMEOUT
                {
                    Sent::Failed(format!("the receiver answered {status}"))
                } else {
                    Sent::Refused(status.as_u16())
                }
            }
            Err(e) => Sent::Failed(format!("{}", e.without_url())),
        }
    }
}
