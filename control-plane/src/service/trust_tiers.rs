//! The optional trust-tier webhook: an agent's tier decided by an external system at the
//! moment it asks for a token (`POST url {"agent_id", "tenant_id"}` → `{"tier": n}`).
//!
//! Any failure — unreachable, slower than the timeout, a non-2xx status, a body that is not
//! `{"tier": 0..=4}` — gives the configured fallback tier and a warning: the webhook can lower
//! the approvals a request needs only by answering, never by failing (keep the fallback low).

use std::time::Duration;

use agent_secret_core::ids::{AgentId, TenantId};
use serde::{Deserialize, Serialize};

/// Highest tier an agent can have.
pub const MAX_TIER: u8 = 4;

#[derive(Debug)]
pub struct TrustTierWebhook {
    client: reqwest::Client,
    url: reqwest::Url,
    fallback: u8,
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("approvals.trust_tier_webhook.url is not an http(s) URL")]
    Url,
    #[error("approvals.trust_tier_webhook.fallback_tier must be 0..={MAX_TIER}")]
    Fallback,
    #[error("cannot build the trust-tier webhook client: {0}")]
    Client(String),
}

#[derive(Serialize)]
struct Asked<'a> {
    agent_id: &'a str,
    tenant_id: &'a str,
}

#[derive(Deserialize)]
struct Answer {
    tier: i64,
}

impl TrustTierWebhook {
    /// `ca_pem` is the CA of an `https` webhook (the client trusts no other roots).
    pub fn new(
        url: &str,
        timeout: Duration,
        fallback: u8,
        ca_pem: Option<&[u8]>,
    ) -> Result<Self, WebhookError> {
        let url = reqwest::Url::parse(url).map_err(|_| WebhookError::Url)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(WebhookError::Url);
        }
        if fallback > MAX_TIER {
            return Err(WebhookError::Fallback);
        }
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = ca_pem {
            let ca = reqwest::Certificate::from_pem(pem)
                .map_err(|e| WebhookError::Client(e.to_string()))?;
            builder = builder.add_root_certificate(ca);
        }
        let client = builder
            .build()
            .map_err(|e| WebhookError::Client(e.to_string()))?;
        Ok(TrustTierWebhook {
            client,
            url,
            fallback,
        })
    }

    /// The agent's tier now, or the fallback.
    pub async fn tier(&self, tenant: TenantId, agent: AgentId) -> u8 {
        match self.ask(tenant, agent).await {
            Ok(tier) => tier,
            Err(why) => {
                tracing::warn!(%agent, why, fallback = self.fallback,
                    "trust-tier webhook gave no tier; using the fallback");
                self.fallback
            }
        }
    }

    async fn ask(&self, tenant: TenantId, agent: AgentId) -> Result<u8, &'static str> {
        let (agent_id, tenant_id) = (agent.to_string(), tenant.to_string());
        let response = self
            .client
            .post(self.url.clone())
            .json(&Asked {
                agent_id: &agent_id,
                tenant_id: &tenant_id,
            })
            .send()
            .await
            .map_err(|_| "unreachable or timed out")?;
        if !response.status().is_success() {
            return Err("non-success status");
        }
        // A tier is a few bytes; refuse to buffer anything large.
        if response.content_length().is_some_and(|n| n > 4096) {
            return Err("answer too large");
        }
        let bytes = response.bytes().await.map_err(|_| "answer unreadable")?;
        if bytes.len() > 4096 {
            return Err("answer too large");
        }
        let answer: Answer =
            serde_json::from_slice(&bytes).map_err(|_| "answer is not {\"tier\": n}")?;
        u8::try_from(answer.tier)
            .ok()
            .filter(|t| *t <= MAX_TIER)
            .ok_or("tier out of range")
    }
}
