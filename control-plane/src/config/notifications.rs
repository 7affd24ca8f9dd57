//! `[notifications]`: the optional webhook each new approval request is posted to (Slack,
//! Teams or plain JSON), with a link to its page on the dashboard. Turned into the service's
//! `NotifierSettings` by [`NotificationsConfig::settings`].
//!
//! Slack and Teams webhook URLs carry their credential in the URL itself, so the URL is a
//! secret: [`WebhookUrl`]'s `Debug` shows only its scheme and host, and the environment takes
//! it from a file too (`AGENT_SECRET_NOTIFICATIONS_WEBHOOK_URL_FILE`).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use agent_secret_core::secret::SecretString;
use serde::{Deserialize, Deserializer};

use super::error::{invalid, ConfigError};
use crate::service::notify::{is_http_url, NotificationFormat, NotifierSettings};

/// First retry after a second, doubling, at most a minute apart.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationsConfig {
    /// Where notices are POSTed; absent: notifications are off.
    pub webhook_url: Option<WebhookUrl>,
    pub format: NotificationFormat,
    /// The dashboard's public base URL (links go to `{dashboard_url}/ui/approvals/{id}`);
    /// absent: `https://{listen}`.
    pub dashboard_url: Option<String>,
    /// Deadline of one POST.
    pub timeout_seconds: u64,
    /// POSTs per notice, the first included; connection errors, timeouts, 429 and 5xx are
    /// retried after 1 s, 2 s, 4 s, ... (at most 60 s apart).
    pub max_attempts: u32,
    /// CA of an `https` webhook, added to the public roots.
    pub ca_file: Option<PathBuf>,
    /// Notices waiting to be sent at most; when full, new ones are dropped (and counted).
    pub queue: usize,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        NotificationsConfig {
            webhook_url: None,
            format: NotificationFormat::Slack,
            dashboard_url: None,
            timeout_seconds: 5,
            max_attempts: 5,
            ca_file: None,
            queue: 1000,
        }
    }
}

/// A webhook URL: a credential for Slack and Teams. Shown as `https://host/[REDACTED]`.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl(SecretString);

impl WebhookUrl {
    pub fn new(url: impl Into<String>) -> WebhookUrl {
        WebhookUrl(SecretString::new(url.into()))
    }

    /// The full URL, credential included: for the HTTP client only.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    fn redacted(&self) -> String {
        match reqwest::Url::parse(self.expose()) {
            Ok(url) => format!(
                "{}://{}/[REDACTED]",
                url.scheme(),
                url.host_str().unwrap_or("?")
            ),
            Err(_) => "[REDACTED]".to_owned(),
        }
    }
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookUrl({:?})", self.redacted())
    }
}

impl<'de> Deserialize<'de> for WebhookUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(WebhookUrl::new(String::deserialize(deserializer)?))
    }
}

impl NotificationsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.webhook_url {
            if !is_http_url(url.expose()) {
                // Never quote it: it may hold the webhook's credential.
                return Err(invalid(
                    "notifications.webhook_url",
                    "must be an http:// or https:// URL",
                ));
            }
        }
        if let Some(url) = &self.dashboard_url {
            if !is_http_url(url) {
                return Err(invalid(
                    "notifications.dashboard_url",
                    &format!("{url:?} is not an http:// or https:// URL"),
                ));
            }
        }
        for (key, value) in [
            ("notifications.timeout_seconds", self.timeout_seconds),
            ("notifications.max_attempts", u64::from(self.max_attempts)),
            ("notifications.queue", self.queue as u64),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if self.max_attempts > 20 {
            return Err(invalid("notifications.max_attempts", "must be at most 20"));
        }
        Ok(())
    }

    /// The link base: `dashboard_url`, else `https://{listen}`.
    pub fn dashboard_url(&self, listen: SocketAddr) -> String {
        match &self.dashboard_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("https://{listen}"),
        }
    }

    /// The service's view of this section; `None` when no webhook is configured. Reads
    /// `ca_file`.
    pub fn settings(&self, listen: SocketAddr) -> Result<Option<NotifierSettings>, ConfigError> {
        let Some(url) = &self.webhook_url else {
            return Ok(None);
        };
        let ca_pem = match &self.ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                invalid(
                    "notifications.ca_file",
                    &format!("cannot read {}: {e}", path.display()),
                )
            })?),
            None => None,
        };
        let mut settings =
            NotifierSettings::new(url.expose(), self.format, &self.dashboard_url(listen));
        settings.timeout = Duration::from_secs(self.timeout_seconds);
        settings.max_attempts = self.max_attempts;
        settings.first_backoff = FIRST_BACKOFF;
        settings.max_backoff = MAX_BACKOFF;
        settings.ca_pem = ca_pem;
        settings.queue = self.queue;
        Ok(Some(settings))
    }
}
