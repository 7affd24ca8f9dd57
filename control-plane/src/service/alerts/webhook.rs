//! The alert webhook: each alert POSTed as JSON ([`AlertNotice`]), once, off the worker's path.

use std::sync::Arc;
use std::time::Duration;

use agent_secret_core::secret::SecretString;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::service::App;

/// Where alerts are posted, as JSON ([`AlertNotice`]).
#[derive(Clone, Debug)]
pub struct AlertWebhook {
    /// `https://...`, or `http://` to a loopback address.
    pub url: String,
    /// Sent as `Authorization: Bearer`.
    pub token: Option<SecretString>,
    /// PEM CA certificates added to the public roots.
    pub ca_pem: Option<Vec<u8>>,
}

/// The body posted to the alert webhook.
#[derive(Debug, Serialize)]
pub struct AlertNotice {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub tenant: String,
    pub rule: &'static str,
    pub subject: String,
    pub evidence: String,
    /// The `alert.raised` event's id.
    pub event_id: String,
    /// The event that completed the rule.
    pub trigger_event_id: String,
    pub raised_at: DateTime<Utc>,
    pub token_revoked: bool,
}

pub(super) fn webhook_client(
    webhook: Option<&AlertWebhook>,
) -> Result<Option<reqwest::Client>, reqwest::Error> {
    let Some(webhook) = webhook else {
        return Ok(None);
    };
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(pem) = &webhook.ca_pem {
        for cert in reqwest::Certificate::from_pem_bundle(pem)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map(Some)
}

/// One POST; the outcome is counted and a failure logged (without the URL or the body).
pub(super) async fn post(
    app: Arc<App>,
    client: reqwest::Client,
    webhook: AlertWebhook,
    notice: AlertNotice,
) {
    let mut request = client.post(&webhook.url).json(&notice);
    if let Some(token) = &webhook.token {
        request = request.bearer_auth(token.expose());
    }
    let outcome = match request.send().await {
        Ok(response) if response.status().is_success() => "sent",
        Ok(response) => {
            tracing::warn!(status = %response.status(), rule = notice.rule, "the alert webhook refused an alert");
            "failed"
        }
        Err(e) => {
            tracing::warn!(error = %e.without_url(), rule = notice.rule, "the alert webhook is unreachable");
            "failed"
        }
    };
    app.metrics
        .alert_webhook
        .with_label_values(&[outcome])
        .inc();
}
