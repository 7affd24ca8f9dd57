//! What an approval notification says, and the three bodies it is sent as: Slack (`text` +
//! Block Kit `blocks`), Microsoft Teams (an Adaptive Card in a `message`, the shape Teams
//! incoming webhooks and Workflows accept) and plain JSON (the [`ApprovalNotice`] itself).
//!
//! A notice carries what an approver needs to decide whether to open the request: secret paths
//! and sensitivities, the agent's name, id and tier, the approvals required, the expiry and the
//! link to the request's page. Never a secret value, never a credential: there are none in an
//! approval request to begin with. User-chosen text (agent names; paths and scopes are
//! restricted by their grammars) is escaped for the markup it lands in, so a name cannot
//! mention `@channel` in Slack or smuggle a link into a Teams card.

use agent_secret_core::api::{Sensitivity, UnlockedSecret};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Secrets a notice lists at most; the rest are counted (`secrets_total`).
pub const MAX_LISTED_SECRETS: usize = 50;
/// Secrets the Slack and Teams bodies show at most (chat messages have size limits).
const MAX_SHOWN_SECRETS: usize = 10;

/// `[notifications] format`: the body the webhook receives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NotificationFormat {
    /// A Slack incoming webhook: `{"text", "blocks"}`.
    #[default]
    Slack,
    /// A Microsoft Teams incoming webhook or Workflow: an Adaptive Card.
    Teams,
    /// The notice as structured JSON, for one's own automation.
    Json,
}

impl NotificationFormat {
    pub fn parse(s: &str) -> Option<NotificationFormat> {
        match s {
            "slack" => Some(Self::Slack),
            "teams" => Some(Self::Teams),
            "json" => Some(Self::Json),
            _ => None,
        }
    }
}

/// Why a request needs humans now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeReason {
    /// An agent asked for a token that unlocks sensitive or critical secrets (or reaches
    /// outside its ceiling).
    TokenRequested,
    /// An operator asked for an agent's ceiling to widen.
    AccessRequested,
    /// What a pending request unlocks changed; approvals given before no longer count.
    UnlocksChanged,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NoticeAgent {
    pub id: String,
    pub name: String,
    pub trust_tier: u8,
}

/// One new (or renewed) approval request, as sent in the `json` format.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ApprovalNotice {
    /// Always `approval.requested`.
    pub event: &'static str,
    pub reason: NoticeReason,
    pub approval_id: String,
    pub tenant_id: String,
    /// The pending token; `None` for an access request.
    pub token_id: Option<String>,
    pub agent: NoticeAgent,
    /// `agent:<id>`, `operator:<id>` or `system` (for a changed request).
    pub requested_by: String,
    /// Up to [`MAX_LISTED_SECRETS`] of the secrets approval unlocks, most sensitive first.
    pub secrets: Vec<UnlockedSecret>,
    pub secrets_total: usize,
    pub highest_sensitivity: Sensitivity,
    pub scopes: Vec<String>,
    pub ceiling_additions: Vec<String>,
    pub required_approvals: u8,
    pub delay_seconds: u64,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The request's page on the dashboard.
    pub url: String,
}

impl ApprovalNotice {
    /// Sorts and caps `secrets` (most sensitive first, then by path).
    pub fn listing(mut secrets: Vec<UnlockedSecret>) -> (Vec<UnlockedSecret>, usize) {
        let total = secrets.len();
        secrets.sort_by(|a, b| {
            b.sensitivity
                .cmp(&a.sensitivity)
                .then_with(|| a.path.cmp(&b.path))
        });
        secrets.truncate(MAX_LISTED_SECRETS);
        (secrets, total)
    }

    /// The request body in `format`.
    pub fn body(&self, format: NotificationFormat) -> Value {
        match format {
            NotificationFormat::Slack => self.slack(),
            NotificationFormat::Teams => self.teams(),
            NotificationFormat::Json => serde_json::to_value(self).unwrap_or(Value::Null),
        }
    }

    fn headline(&self) -> &'static str {
        match self.reason {
            NoticeReason::TokenRequested => "Approval needed: an agent asks for a token",
            NoticeReason::AccessRequested => "Approval needed: widen an agent's ceiling",
            NoticeReason::UnlocksChanged => "Approval needed again: what a request unlocks changed",
        }
    }

    fn approvals_line(&self) -> String {
        let delay = if self.delay_seconds > 0 {
            format!(", then a {} s time lock", self.delay_seconds)
        } else {
            String::new()
        };
        format!(
            "{} approval{} required{delay}; expires {}",
            self.required_approvals,
            if self.required_approvals == 1 {
                ""
            } else {
                "s"
            },
            self.expires_at.format("%Y-%m-%d %H:%M UTC")
        )
    }

    fn more(&self, shown: usize) -> Option<String> {
        (self.secrets_total > shown).then(|| format!("and {} more", self.secrets_total - shown))
    }

    fn slack(&self) -> Value {
        let agent = format!(
            "{} (`{}`, tier {})",
            slack_escape(&self.agent.name),
            self.agent.id,
            self.agent.trust_tier
        );
        let shown = self.secrets.len().min(MAX_SHOWN_SECRETS);
        let mut lines: Vec<String> = self.secrets[..shown]
            .iter()
            .map(|s| format!("• `{}` ({})", s.path, s.sensitivity.as_str()))
            .collect();
        lines.extend(self.more(shown).map(|m| format!("• {m}")));
        if !self.ceiling_additions.is_empty() {
            lines.push(format!(
                "Widens the ceiling by {}",
                code_list(&self.ceiling_additions)
            ));
        }
        if lines.is_empty() {
            lines.push(format!("Scopes {}", code_list(&self.scopes)));
        }
        let text = format!(
            "*{}*\nAgent {agent}\n{}\n{}",
            self.headline(),
            lines.join("\n"),
            slack_escape(&self.approvals_line())
        );
        let fallback = format!(
            "{} — agent {}, {} secret{} up to {}: {}",
            self.headline(),
            slack_escape(&self.agent.name),
            self.secrets_total,
            if self.secrets_total == 1 { "" } else { "s" },
            self.highest_sensitivity.as_str(),
            self.url
        );
        json!({
            "text": fallback,
            "blocks": [
                {
                    "type": "section",
                    // verbatim: no auto-linking of URLs, channels or mentions in our text.
                    "text": {"type": "mrkdwn", "text": text, "verbatim": true}
                },
                {
                    "type": "actions",
                    "elements": [{
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Review request"},
                        "url": self.url,
                        "style": "primary"
                    }]
                }
            ]
        })
    }

    fn teams(&self) -> Value {
        let mut facts = vec![
            fact(
                "Agent",
                &format!("{} ({})", teams_escape(&self.agent.name), self.agent.id),
            ),
            fact("Trust tier", &self.agent.trust_tier.to_string()),
            fact("Approvals", &self.approvals_line()),
            fact("Approval id", &self.approval_id),
        ];
        if !self.ceiling_additions.is_empty() {
            facts.push(fact(
                "Widens the ceiling by",
                &self.ceiling_additions.join(" "),
            ));
        }
        let shown = self.secrets.len().min(MAX_SHOWN_SECRETS);
        let mut secrets: Vec<Value> = self.secrets[..shown]
            .iter()
            .map(|s| fact(&s.path, s.sensitivity.as_str()))
            .collect();
        if let Some(more) = self.more(shown) {
            secrets.push(fact("…", &more));
        }
        let mut body = vec![
            json!({"type": "TextBlock", "text": self.headline(), "weight": "Bolder",
                   "size": "Medium", "wrap": true}),
            json!({"type": "FactSet", "facts": facts}),
        ];
        if !secrets.is_empty() {
            body.push(json!({"type": "TextBlock", "text": "Secrets it unlocks",
                             "weight": "Bolder", "wrap": true}));
            body.push(json!({"type": "FactSet", "facts": secrets}));
        }
        json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": null,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": body,
                    "actions": [{
                        "type": "Action.OpenUrl",
                        "title": "Review request",
                        "url": self.url
                    }]
                }
            }]
        })
    }
}

fn fact(title: &str, value: &str) -> Value {
    json!({"title": title, "value": value})
}

fn code_list(items: &[String]) -> String {
    items
        .iter()
        .map(|s| format!("`{}`", slack_escape(s)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Slack mrkdwn: `&`, `<` and `>` are control characters (links, mentions); everything else
/// is shown as written.
pub fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Adaptive Card text is a CommonMark subset whose only active construct worth fearing is a
/// link (`[title](url)`); brackets are backslash-escaped so user text never becomes one.
pub fn teams_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | '[' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn notice(name: &str, secrets: usize) -> ApprovalNotice {
        let all: Vec<UnlockedSecret> = (0..secrets)
            .map(|i| UnlockedSecret {
                path: format!("prod/s{i:02}"),
                sensitivity: if i == 3 {
                    Sensitivity::Critical
                } else {
                    Sensitivity::Sensitive
                },
            })
            .collect();
        let (secrets, secrets_total) = ApprovalNotice::listing(all);
        ApprovalNotice {
            event: "approval.requested",
            reason: NoticeReason::TokenRequested,
            approval_id: "ap-1".into(),
            tenant_id: "t-1".into(),
            token_id: Some("tok-1".into()),
            agent: NoticeAgent {
                id: "ag-1".into(),
                name: name.into(),
                trust_tier: 2,
            },
            requested_by: "agent:ag-1".into(),
            secrets,
            secrets_total,
            highest_sensitivity: Sensitivity::Critical,
            scopes: vec!["secrets:read:prod/*".into()],
            ceiling_additions: vec![],
            required_approvals: 2,
            delay_seconds: 900,
            created_at: DateTime::UNIX_EPOCH,
            expires_at: DateTime::UNIX_EPOCH,
            url: "https://secrets.example.com/ui/approvals/ap-1".into(),
        }
    }

    #[test]
    fn slack_escapes_mentions_and_links_in_agent_names() {
        let body = notice("<!channel> & <https://evil|click>", 1).body(NotificationFormat::Slack);
        let text = body["blocks"][0]["text"]["text"].as_str().unwrap();
        assert!(text.contains("&lt;!channel&gt; &amp; &lt;https://evil|click&gt;"));
        assert!(!text.contains("<!channel>"));
        assert!(!body["text"].as_str().unwrap().contains("<!channel>"));
        assert_eq!(body["blocks"][0]["text"]["verbatim"], true);
    }

    #[test]
    fn teams_escapes_links_in_agent_names() {
        let body = notice("[click](https://evil)", 1).body(NotificationFormat::Teams);
        let facts = &body["attachments"][0]["content"]["body"][1]["facts"];
        assert_eq!(facts[0]["value"], "\\[click\\](https://evil) (ag-1)");
    }

    #[test]
    fn long_listings_are_capped_most_sensitive_first() {
        let n = notice("bot", MAX_LISTED_SECRETS + 5);
        assert_eq!(n.secrets.len(), MAX_LISTED_SECRETS);
        assert_eq!(n.secrets_total, MAX_LISTED_SECRETS + 5);
        assert_eq!(n.secrets[0].path, "prod/s03", "critical first");
        let slack = n.body(NotificationFormat::Slack);
        let text = slack["blocks"][0]["text"]["text"].as_str().unwrap();
        assert!(text.contains(&format!("and {} more", MAX_LISTED_SECRETS + 5 - 10)));
        let json = n.body(NotificationFormat::Json);
        assert_eq!(json["secrets_total"], MAX_LISTED_SECRETS + 5);
        assert_eq!(json["reason"], "token_requested");
    }

    #[test]
    fn formats_parse_by_name() {
        for (name, format) in [
            ("slack", NotificationFormat::Slack),
            ("teams", NotificationFormat::Teams),
            ("json", NotificationFormat::Json),
        ] {
            assert_eq!(NotificationFormat::parse(name), Some(format));
        }
        assert_eq!(NotificationFormat::parse("discord"), None);
    }
}
