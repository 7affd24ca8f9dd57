//! Approval notifications: each new approval request is posted to a configured webhook (Slack,
//! Teams or plain JSON) with a link to its page, so approvers hear of it without watching the
//! dashboard.
//!
//! A notification must never hold up, or fail, the request it announces. Callers enqueue it
//! after the request's transaction committed (so a write that failed never notifies), into a
//! bounded queue with `try_send`: when the queue is full the notice is dropped with a warning
//! and counted, never waited for. One background task drains the queue and posts each notice,
//! retrying connection errors, timeouts, 429 and 5xx with exponential backoff (other answers
//! are final). Every outcome is counted in `approval_notifications_total{outcome}` and every
//! failure logged, by approval id and reason only: the webhook URL (Slack and Teams put their
//! credential in it) and the body never reach the log.

mod message;

use std::time::Duration;

use agent_secret_core::secret::SecretString;
use prometheus::IntCounterVec;
use tokio::sync::mpsc;

pub use message::{
    slack_escape, teams_escape, ApprovalNotice, NoticeAgent, NoticeReason, NotificationFormat,
    MAX_LISTED_SECRETS,
};

use crate::store::ApprovalRecord;

/// How the notifier reaches its webhook (`[notifications]`, see `config/control-plane.toml`).
#[derive(Clone, Debug)]
pub struct NotifierSettings {
    /// The full webhook URL; Slack and Teams embed their credential in it.
    pub webhook_url: SecretString,
    pub format: NotificationFormat,
    /// The dashboard's public base URL; links go to `{dashboard_url}/ui/approvals/{id}`.
    pub dashboard_url: String,
    /// Deadline of one POST.
    pub timeout: Duration,
    /// POSTs per notice, the first included.
    pub max_attempts: u32,
    /// Wait before the first retry; doubled after each, up to `max_backoff`.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// CA of an `https` webhook, added to the public roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Notices waiting to be sent at most; beyond, new ones are dropped.
    pub queue: usize,
}

impl NotifierSettings {
    /// The defaults of `[notifications]` for this webhook and dashboard.
    pub fn new(webhook_url: &str, format: NotificationFormat, dashboard_url: &str) -> Self {
        NotifierSettings {
            webhook_url: SecretString::new(webhook_url.to_owned()),
            format,
            dashboard_url: dashboard_url.trim_end_matches('/').to_owned(),
            timeout: Duration::from_secs(5),
            max_attempts: 5,
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            ca_pem: None,
            queue: 1000,
        }
    }
}

/// Why a notifier could not be built. Never contains the webhook URL.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("notifications.webhook_url is not an http(s) URL")]
    WebhookUrl,
    #[error("notifications.dashboard_url is not an http(s) URL")]
    DashboardUrl,
    #[error("notifications: {0} must be at least 1")]
    Zero(&'static str),
    #[error("notifications.ca_file is not a PEM certificate: {0}")]
    Ca(String),
    #[error("cannot build the notification webhook client: {0}")]
    Client(String),
}

/// The sending side of the queue, held by `App`. Dropping it ends the worker once the queue
/// is drained.
#[derive(Debug)]
pub struct Notifier {
    queue: mpsc::Sender<ApprovalNotice>,
    dashboard_url: String,
    outcomes: IntCounterVec,
}

/// The worker's half: the client and what to do with each notice.
struct Webhook {
    client: reqwest::Client,
    url: reqwest::Url,
    format: NotificationFormat,
    max_attempts: u32,
    first_backoff: Duration,
    max_backoff: Duration,
    outcomes: IntCounterVec,
}

/// One failed POST: worth retrying or not, and why (for the log).
enum Failure {
    Transient {
        why: String,
        retry_after: Option<Duration>,
    },
    Final(String),
}

impl Notifier {
    /// Checks `settings`, builds the client and spawns the worker on the current Tokio runtime.
    /// `outcomes` is the `approval_notifications_total` family (label `outcome`).
    pub fn start(settings: NotifierSettings, outcomes: IntCounterVec) -> Result<Self, NotifyError> {
        let url = http_url(settings.webhook_url.expose()).ok_or(NotifyError::WebhookUrl)?;
        http_url(&settings.dashboard_url).ok_or(NotifyError::DashboardUrl)?;
        for (name, value) in [
            ("timeout_seconds", settings.timeout.as_millis()),
            ("max_attempts", u128::from(settings.max_attempts)),
            ("queue", settings.queue as u128),
        ] {
            if value == 0 {
                return Err(NotifyError::Zero(name));
            }
        }
        let mut builder = reqwest::Client::builder()
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = &settings.ca_pem {
            let ca =
                reqwest::Certificate::from_pem(pem).map_err(|e| NotifyError::Ca(e.to_string()))?;
            builder = builder.add_root_certificate(ca);
        }
        let client = builder
            .build()
            .map_err(|e| NotifyError::Client(e.without_url().to_string()))?;
        let (queue, received) = mpsc::channel(settings.queue);
        let webhook = Webhook {
            client,
            url,
            format: settings.format,
            max_attempts: settings.max_attempts,
            first_backoff: settings.first_backoff,
            max_backoff: settings.max_backoff,
            outcomes: outcomes.clone(),
        };
        tokio::spawn(webhook.run(received));
        Ok(Notifier {
            queue,
            dashboard_url: settings.dashboard_url.trim_end_matches('/').to_owned(),
            outcomes,
        })
    }

    /// The link to a request's page.
    pub fn link(&self, approval_id: &str) -> String {
        format!("{}/ui/approvals/{approval_id}", self.dashboard_url)
    }

    /// Queues a notice of `request` (committed already). Never waits and never fails: a full
    /// queue drops the notice with a warning.
    pub fn approval_requested(
        &self,
        request: &ApprovalRecord,
        agent_name: &str,
        reason: NoticeReason,
    ) {
        let (secrets, secrets_total) = ApprovalNotice::listing(request.unlocks.secrets.clone());
        let approval_id = request.id.to_string();
        let notice = ApprovalNotice {
            event: "approval.requested",
            reason,
            url: self.link(&approval_id),
            approval_id,
            tenant_id: request.tenant_id.to_string(),
            token_id: request.token_id.map(|t| t.to_string()),
            agent: NoticeAgent {
                id: request.agent_id.to_string(),
                name: agent_name.to_owned(),
                trust_tier: request.unlocks.trust_tier,
            },
            requested_by: request.requested_by.clone(),
            secrets,
            secrets_total,
            highest_sensitivity: request.unlocks.highest_sensitivity(),
            scopes: request.unlocks.scopes.clone(),
            ceiling_additions: request.unlocks.ceiling_additions.clone(),
            required_approvals: request.required_approvals,
            delay_seconds: request.delay_seconds,
            created_at: request.created_at,
            expires_at: request.expires_at,
        };
        self.enqueue(notice);
    }

    fn enqueue(&self, notice: ApprovalNotice) {
        let approval = notice.approval_id.clone();
        match self.queue.try_send(notice) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.outcomes.with_label_values(&["dropped"]).inc();
                tracing::warn!(%approval, "approval notification dropped: the queue is full");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.outcomes.with_label_values(&["dropped"]).inc();
                tracing::warn!(%approval, "approval notification dropped: the sender stopped");
            }
        }
    }
}

impl Webhook {
    async fn run(self, mut received: mpsc::Receiver<ApprovalNotice>) {
        while let Some(notice) = received.recv().await {
            self.deliver(&notice).await;
        }
    }

    /// Posts one notice until it is accepted, refused for good, or out of attempts.
    async fn deliver(&self, notice: &ApprovalNotice) {
        let approval = notice.approval_id.as_str();
        let body = notice.body(self.format);
        let mut backoff = self.first_backoff;
        for attempt in 1..=self.max_attempts {
            let (why, retry_after) = match self.post(&body).await {
                Ok(()) => {
                    self.outcome("sent");
                    tracing::debug!(%approval, attempt, "approval notification sent");
                    return;
                }
                Err(Failure::Final(why)) => {
                    self.outcome("failed");
                    tracing::warn!(%approval, attempt, why,
                        "approval notification refused by the webhook; not retried");
                    return;
                }
                Err(Failure::Transient { why, retry_after }) => (why, retry_after),
            };
            if attempt == self.max_attempts {
                self.outcome("failed");
                tracing::warn!(%approval, attempt, why,
                    "approval notification failed; giving up after the last attempt");
                return;
            }
            let wait = retry_after.map_or(backoff, |r| r.max(backoff).min(self.max_backoff));
            self.outcome("retried");
            tracing::warn!(%approval, attempt, why, retry_in_ms = wait.as_millis() as u64,
                "approval notification failed; retrying");
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(self.max_backoff);
        }
    }

    async fn post(&self, body: &serde_json::Value) -> Result<(), Failure> {
        let response = self
            .client
            .post(self.url.clone())
            .json(body)
            .send()
            .await
            .map_err(|e| Failure::Transient {
                // `without_url`: the URL holds the webhook's credential.
                why: if e.is_timeout() {
                    "timed out".to_owned()
                } else if e.is_connect() {
                    format!("cannot connect: {}", e.without_url())
                } else {
                    format!("request failed: {}", e.without_url())
                },
                retry_after: None,
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let why = format!("answered {status}");
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return Err(Failure::Transient { why, retry_after });
        }
        Err(Failure::Final(why))
    }

    fn outcome(&self, outcome: &str) {
        self.outcomes.with_label_values(&[outcome]).inc();
    }
}

/// Whether `raw` is an `http` or `https` URL with a host (what both URLs must be).
pub fn is_http_url(raw: &str) -> bool {
    http_url(raw).is_some()
}

/// `raw` as an `http` or `https` URL with a host.
fn http_url(raw: &str) -> Option<reqwest::Url> {
    let url = reqwest::Url::parse(raw).ok()?;
    (matches!(url.scheme(), "http" | "https") && url.host_str().is_some()).then_some(url)
}
