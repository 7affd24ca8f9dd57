//! Anomaly alerts, raised as events are written (`[alerts]`; the rules are `crate::anomaly`).
//!
//! A worker in every replica tails each tenant's audit log in chain order, every
//! `poll_interval` (250 ms by default), and feeds every event to the tenant's detector, so
//! whatever path wrote an event (a resolve, a sidecar's report, a login) it is judged. Each
//! replica folds every event into its own state; which replica *acts* on a hit is settled by
//! the cursor `.alerts` in `audit_sink_cursors` (the SIEM sinks' table: a sink name cannot
//! start with a dot): a replica raises the alerts of the events after the cursor only if it
//! moves the cursor past them with a conditional update. So an alert is raised once however
//! many replicas run; one that crashes between moving the cursor and writing the alert loses
//! that alert (at most once, never twice).
//!
//! Acting on a hit: an `alert.raised` event (reason `<rule>: <subject>: <evidence>`, with the
//! triggering event's address, path and host), `anomaly_alerts_total{rule}`, a POST to the
//! alert webhook when one is configured, and — for rules set to (by default `exfiltration`) —
//! the token's revocation, which reaches every sidecar's cache through the watch stream.
//!
//! Baselines live in memory. On start, a replica replays the last `baseline` of each tenant's
//! log (at most `baseline_max_events` events) without raising anything. A tenant the worker
//! has never handled (no cursor yet) treats the events written before this process started
//! as history, so turning alerts on does not raise alerts about the past.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use agent_secret_core::ids::{TenantId, TokenId};
use chrono::{DateTime, Utc};

use super::App;
use crate::anomaly::{Detector, Hit, Rules};
use crate::audit::{now_micros, Actor, AuditDraft, AuditEvent, AuditEventType};
use crate::store::{AuditFilter, StoreError};

mod webhook;

use webhook::{post, webhook_client};
pub use webhook::{AlertNotice, AlertWebhook};

/// The cursor's name in `audit_sink_cursors`.
const CURSOR: &str = ".alerts";
/// Events read per query.
const PAGE: i64 = 500;
/// Token → agent lookups remembered per tenant before the memo is cleared.
const MAX_AGENTS_MEMO: usize = 100_000;

/// `[alerts]`.
#[derive(Clone, Debug)]
pub struct AlertSettings {
    pub enabled: bool,
    pub rules: Rules,
    pub poll_interval: Duration,
    /// How far back a starting replica replays each tenant's log into the baselines...
    pub baseline: Duration,
    /// ...reading at most this many events.
    pub baseline_max_events: i64,
    pub webhook: Option<AlertWebhook>,
}

impl AlertSettings {
    /// No worker: what embedding code and most tests get from `Policy::default()`. The
    /// control plane's configuration turns alerts on by default (`[alerts] enabled`).
    pub fn off() -> AlertSettings {
        AlertSettings {
            enabled: false,
            ..AlertSettings::on(Rules::default())
        }
    }

    pub fn on(rules: Rules) -> AlertSettings {
        AlertSettings {
            enabled: true,
            rules,
            poll_interval: Duration::from_millis(250),
            baseline: Duration::from_secs(7 * 86_400),
            baseline_max_events: 200_000,
            webhook: None,
        }
    }
}

/// Starts the worker when alerts are on; it runs until aborted (with the server).
pub fn spawn(app: Arc<App>) -> Option<tokio::task::JoinHandle<()>> {
    let settings = app.policy.alerts.clone();
    if !settings.enabled {
        return None;
    }
    let client = match webhook_client(settings.webhook.as_ref()) {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "the alert webhook's HTTP client cannot be built; alerts go to the audit log only");
            None
        }
    };
    let worker = Worker {
        app,
        settings,
        client,
        started: now_micros(),
        tenants: HashMap::new(),
    };
    Some(tokio::spawn(worker.run()))
}

/// One tenant as this replica follows it.
struct Tenant {
    detector: Detector,
    /// The last event fed to the detector.
    position: i64,
    agents: HashMap<String, Option<String>>,
}

struct Worker {
    app: Arc<App>,
    settings: AlertSettings,
    client: Option<reqwest::Client>,
    started: DateTime<Utc>,
    tenants: HashMap<TenantId, Tenant>,
}

impl Worker {
    async fn run(mut self) {
        loop {
            if let Err(e) = self.pass().await {
                tracing::warn!(error = %e, "anomaly alerts: a pass failed; retrying");
            }
            tokio::time::sleep(self.settings.poll_interval).await;
        }
    }

    async fn pass(&mut self) -> Result<(), StoreError> {
        for tenant in self.app.store.list_tenant_ids().await? {
            self.follow(tenant).await?;
        }
        Ok(())
    }

    /// Feeds the tenant's new events to its detector and raises the alerts this replica
    /// claims.
    async fn follow(&mut self, tenant: TenantId) -> Result<(), StoreError> {
        let mut claimed = self.app.store.sink_cursor(tenant, CURSOR).await?;
        let mut state = match self.tenants.remove(&tenant) {
            Some(state) => state,
            None => self.warm_up(tenant, &mut claimed).await?,
        };
        let result = self.drain(tenant, &mut state, claimed).await;
        self.tenants.insert(tenant, state);
        result
    }

    async fn drain(
        &self,
        tenant: TenantId,
        state: &mut Tenant,
        mut claimed: i64,
    ) -> Result<(), StoreError> {
        loop {
            let events = self.page(tenant, state.position, None).await?;
            let Some(last) = events.last().map(|e| e.seq) else {
                return Ok(());
            };
            let mut hits = Vec::new();
            for event in &events {
                for hit in self.observe(tenant, state, event).await {
                    hits.push((event.seq, hit, event));
                }
            }
            state.position = last;
            // Claim the events after the cursor; another replica may have claimed a part.
            while claimed < last {
                if self
                    .app
                    .store
                    .advance_sink_cursor(tenant, CURSOR, claimed, last)
                    .await?
                {
                    for (_, hit, event) in hits.iter().filter(|(seq, ..)| *seq > claimed) {
                        self.raise(tenant, hit, event).await;
                    }
                    claimed = last;
                } else {
                    claimed = self.app.store.sink_cursor(tenant, CURSOR).await?;
                }
            }
            if (events.len() as i64) < PAGE {
                return Ok(());
            }
        }
    }

    /// A fresh detector fed the tenant's recent history, raising nothing. `claimed` becomes
    /// the first position this process may raise after when the tenant had no cursor.
    async fn warm_up(&self, tenant: TenantId, claimed: &mut i64) -> Result<Tenant, StoreError> {
        let mut state = Tenant {
            detector: Detector::new(self.settings.rules.clone()),
            position: 0,
            agents: HashMap::new(),
        };
        let head = self
            .app
            .store
            .audit_head(tenant)
            .await?
            .map_or(0, |(seq, _)| seq);
        let since = chrono::Duration::from_std(self.settings.baseline)
            .ok()
            .and_then(|d| self.started.checked_sub_signed(d));
        let fresh = *claimed == 0;
        let mut from = (head - self.settings.baseline_max_events).max(0);
        'replay: loop {
            let events = self.page(tenant, from, since).await?;
            for event in &events {
                let history = if fresh {
                    event.draft.occurred_at < self.started
                } else {
                    event.seq <= *claimed
                };
                if !history {
                    break 'replay;
                }
                self.observe(tenant, &mut state, event).await;
                from = event.seq;
            }
            if (events.len() as i64) < PAGE {
                break;
            }
        }
        state.position = if fresh { from } else { from.max(*claimed) };
        if fresh && from > 0 {
            // Mark the past as seen for every replica; whoever does it first wins.
            self.app
                .store
                .advance_sink_cursor(tenant, CURSOR, 0, from)
                .await?;
            *claimed = self.app.store.sink_cursor(tenant, CURSOR).await?;
        }
        Ok(state)
    }

    async fn page(
        &self,
        tenant: TenantId,
        after: i64,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let filter = AuditFilter {
            after_seq: Some(after),
            since,
            limit: Some(PAGE),
            ..AuditFilter::default()
        };
        self.app.store.list_audit(tenant, &filter).await
    }

    async fn observe(&self, tenant: TenantId, state: &mut Tenant, event: &AuditEvent) -> Vec<Hit> {
        // The detector's own output is not evidence of anything.
        if event.draft.event_type == AuditEventType::AlertRaised {
            return Vec::new();
        }
        let agent = match event.draft.actor.0.strip_prefix("token:") {
            Some(token) => self.agent_of(tenant, &mut state.agents, token).await,
            None => None,
        };
        state.detector.observe(event, agent.as_deref())
    }

    /// The agent a token belongs to, remembered (a token never changes agent).
    async fn agent_of(
        &self,
        tenant: TenantId,
        memo: &mut HashMap<String, Option<String>>,
        token: &str,
    ) -> Option<String> {
        if let Some(agent) = memo.get(token) {
            return agent.clone();
        }
        let id = token.parse().ok().map(TokenId)?;
        let agent = match self.app.store.get_token(tenant, id).await {
            Ok(found) => found.map(|t| t.agent_id.to_string()),
            // Not remembered: the next event asks again.
            Err(_) => return None,
        };
        if memo.len() >= MAX_AGENTS_MEMO {
            memo.clear();
        }
        memo.insert(token.to_owned(), agent.clone());
        agent
    }

    /// Writes the alert, counts it, revokes the token when the rule says so, and tells the
    /// webhook. A failure of one step is logged and does not stop the others.
    async fn raise(&self, tenant: TenantId, hit: &Hit, trigger: &AuditEvent) {
        let rule = hit.rule.as_str();
        self.app
            .metrics
            .anomaly_alerts
            .with_label_values(&[rule])
            .inc();
        tracing::warn!(rule, subject = %hit.subject, %tenant, "anomaly alert");
        let actor = if hit.subject.starts_with("token:") || hit.subject.starts_with("agent:") {
            Actor(hit.subject.clone())
        } else {
            Actor::system()
        };
        let t = &trigger.draft;
        let mut draft = AuditDraft::new(AuditEventType::AlertRaised, actor)
            .client(t.ip.clone(), t.user_agent.clone())
            .failed(format!(
                "{rule}: {}: {}; event {}",
                hit.subject, hit.evidence, trigger.id
            ));
        draft.path = t.path.clone();
        draft.destination_host = t.destination_host.clone();
        let event_id = match self.app.store.append_audit(tenant, draft).await {
            Ok(event) => event.id.to_string(),
            Err(e) => {
                tracing::error!(error = %e, rule, "could not write an alert.raised event");
                String::new()
            }
        };
        let mut revoked = false;
        if self.settings.rules.revokes(hit.rule) {
            if let Some(id) = hit.token().and_then(|t| t.parse().ok()).map(TokenId) {
                revoked = revoke(&self.app, tenant, id, rule).await;
            }
        }
        if let (Some(client), Some(webhook)) = (&self.client, &self.settings.webhook) {
            let notice = AlertNotice {
                kind: "alert.raised",
                tenant: tenant.to_string(),
                rule,
                subject: hit.subject.clone(),
                evidence: hit.evidence.clone(),
                event_id,
                trigger_event_id: trigger.id.to_string(),
                raised_at: now_micros(),
                token_revoked: revoked,
            };
            // Never holds up the next alert.
            tokio::spawn(post(
                self.app.clone(),
                client.clone(),
                webhook.clone(),
                notice,
            ));
        }
    }
}

/// Revokes the token as the system, in the log with the rule that did it; whether it was
/// revoked now (not before).
async fn revoke(app: &App, tenant: TenantId, id: TokenId, rule: &str) -> bool {
    let audit = AuditDraft::new(AuditEventType::TokenRevoked, Actor::system())
        .reason(format!("token {id}; revoked by the {rule} alert"));
    match super::tokens::revoke_and_publish(app, tenant, id, audit).await {
        Ok(revoked) => revoked,
        Err(e) => {
            tracing::error!(error = %e, rule, "an alert could not revoke its token");
            false
        }
    }
}
