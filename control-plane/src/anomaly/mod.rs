//! Anomaly rules over the audit log: which events are suspicious, judged from the events alone.
//!
//! A [`Detector`] holds one tenant's state and is fed that tenant's events in chain order
//! ([`Detector::observe`]); it answers with the [`Hit`]s an event completes. Time is the
//! events' own `occurred_at`, never the clock, so a replayed history (the warm-up after a
//! restart, `crate::service::alerts`) rebuilds the same baselines the live stream built, and
//! every rule is tested with events alone (`tests.rs`).
//!
//! The seven rules (docs/architecture.md "Anomaly alerts"):
//! - `denial_burst`: at least `threshold` refusals of one token, or of one agent's tokens,
//!   within `window_seconds`.
//! - `new_ip`: a token used from an address it never used before (its first address is its
//!   baseline).
//! - `read_spike`: a token's reads within `window_seconds` at least `factor` times its own
//!   average per window so far (and at least `min_reads`), once it has `min_history_windows`.
//! - `exfiltration`: a placeholder sent toward a host its secret is not bound to
//!   (`destination_not_allowed` naming a path).
//! - `above_sensitivity`: a read of a secret above the sensitivity the token was approved for.
//! - `auth_failed_burst`: at least `threshold` failed authentications from one address within
//!   `window_seconds` (the aggregated `auth.failed` events count with their tallies).
//! - `unusual_hours`: an agent reading in an hour of the day (UTC) that held less than
//!   `max_share` of its reads, once it has `min_reads` reads over `min_days` days.
//!
//! One rule raises at most one alert per subject per `cooldown_seconds`.

mod rules;
mod state;

use std::collections::HashMap;

use crate::audit::{AuditEvent, AuditEventType};
use chrono::{DateTime, Utc};
pub use rules::{Burst, Hours, Rule, Rules, Spike, Switch};
use state::{AgentHours, Counts, Ips, ReadHistory};

/// The reason the control plane records for a read above the approved sensitivity (its code,
/// `approval_pending`, is shared with tokens still waiting for approval).
pub const ABOVE_APPROVED_REASON: &str = "approval_pending: above approved sensitivity";

/// One alert: the rule, who it is about (`token:<id>`, `agent:<id>`, `ip:<address>`), and
/// what was seen, in words for the `alert.raised` reason (ids, counts, hosts; never a value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    pub rule: Rule,
    pub subject: String,
    pub evidence: String,
}

impl Hit {
    /// The token the alert is about, if it is about one.
    pub fn token(&self) -> Option<&str> {
        self.subject.strip_prefix("token:")
    }
}

/// The stable code at the head of a reason: `destination_not_allowed` of
/// `destination_not_allowed; reported by sidecar ...`.
fn reason_code(reason: Option<&str>) -> &str {
    let reason = reason.unwrap_or_default();
    let end = reason
        .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
        .unwrap_or(reason.len());
    &reason[..end]
}

/// How many failures an `auth.failed` event stands for: 1, or the tally of a burst's summary
/// (`invalid_credential: N more failed authentications ...`, N after the burst's first, which
/// had its own event).
fn failures_in(reason: Option<&str>) -> u32 {
    reason
        .and_then(|r| r.split_once(": "))
        .and_then(|(_, rest)| rest.split_once(" more "))
        .and_then(|(n, _)| n.parse::<u32>().ok())
        .unwrap_or(1)
}

/// One tenant's anomaly state.
pub struct Detector {
    rules: Rules,
    denials: HashMap<String, Counts>,
    auth_failures: HashMap<String, Counts>,
    ips: HashMap<String, Ips>,
    reads: HashMap<String, ReadHistory>,
    hours: HashMap<String, AgentHours>,
    /// When each (rule, subject) last fired.
    fired: HashMap<(Rule, String), DateTime<Utc>>,
    observed: u64,
}

/// Events between two prunings of idle state.
const PRUNE_EVERY: u64 = 10_000;
/// Subjects one map may hold before idle ones are dropped early: token ids in events come
/// from sidecars' reports, so a flood of made-up ids must not grow the state without bound.
const MAX_SUBJECTS: usize = 100_000;

impl Detector {
    pub fn new(rules: Rules) -> Detector {
        Detector {
            rules,
            denials: HashMap::new(),
            auth_failures: HashMap::new(),
            ips: HashMap::new(),
            reads: HashMap::new(),
            hours: HashMap::new(),
            fired: HashMap::new(),
            observed: 0,
        }
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Feeds the next event of the tenant's chain; `agent` is the agent behind the event's
    /// token (`None` when the actor is no token, or its token is unknown). Returns the alerts
    /// it completes, after cooldown.
    pub fn observe(&mut self, event: &AuditEvent, agent: Option<&str>) -> Vec<Hit> {
        let d = &event.draft;
        let at = d.occurred_at;
        self.observed += 1;
        if self.observed.is_multiple_of(PRUNE_EVERY) || self.crowded() {
            self.prune(at);
        }
        let mut hits = Vec::new();
        let token = d.actor.0.strip_prefix("token:");
        let agent = agent.or_else(|| d.actor.0.strip_prefix("agent:"));
        let use_event = matches!(
            d.event_type,
            AuditEventType::SecretRead | AuditEventType::McpToolCalled
        );
        let code = reason_code(d.reason.as_deref());
        if d.event_type == AuditEventType::AuthFailed {
            self.auth_failed(event, &mut hits);
        }
        if use_event {
            if let (Some(token), Some(ip)) = (token, d.ip.as_deref()) {
                self.new_ip(token, ip, at, &mut hits);
            }
        }
        if use_event && !d.success {
            let subjects = [
                token.map(|t| format!("token:{t}")),
                agent.map(|a| format!("agent:{a}")),
            ];
            for subject in subjects.into_iter().flatten() {
                self.denial(subject, code, at, &mut hits);
            }
        }
        if d.event_type == AuditEventType::SecretRead && !d.success {
            if let Some(token) = token {
                let path = d.path.as_deref();
                let host = d.destination_host.as_deref().unwrap_or("?");
                if let (true, "destination_not_allowed", Some(path)) =
                    (self.rules.exfiltration.enabled, code, path)
                {
                    let evidence =
                        format!("a placeholder for `{path}` was sent toward {host}, a host it is not bound to");
                    self.fire(
                        Rule::Exfiltration,
                        format!("token:{token}"),
                        evidence,
                        at,
                        &mut hits,
                    );
                }
                let reason = d.reason.as_deref().unwrap_or_default();
                if self.rules.above_sensitivity.enabled && reason.starts_with(ABOVE_APPROVED_REASON)
                {
                    let evidence = format!(
                        "read of `{}` refused: {}",
                        path.unwrap_or("?"),
                        reason.split(';').next().unwrap_or_default()
                    );
                    self.fire(
                        Rule::AboveSensitivity,
                        format!("token:{token}"),
                        evidence,
                        at,
                        &mut hits,
                    );
                }
            }
        }
        if d.event_type == AuditEventType::SecretRead && d.success {
            if let Some(token) = token {
                self.read(token, at, &mut hits);
            }
            if let Some(agent) = agent {
                self.hour(agent, at, &mut hits);
            }
        }
        hits
    }

    /// Records a hit unless the same rule fired for the subject within the cooldown.
    fn fire(
        &mut self,
        rule: Rule,
        subject: String,
        evidence: String,
        at: DateTime<Utc>,
        hits: &mut Vec<Hit>,
    ) {
        let cooldown = chrono::Duration::seconds(i64::from(self.rules.cooldown_seconds));
        let key = (rule, subject);
        if let Some(last) = self.fired.get(&key) {
            if at - *last < cooldown {
                return;
            }
        }
        hits.push(Hit {
            rule,
            subject: key.1.clone(),
            evidence,
        });
        self.fired.insert(key, at);
    }

    fn denial(&mut self, subject: String, code: &str, at: DateTime<Utc>, hits: &mut Vec<Hit>) {
        let rule = self.rules.denial_burst;
        if !rule.enabled {
            return;
        }
        let counts = self.denials.entry(subject.clone()).or_default();
        let n = counts.add(at, 1, rule.window_seconds);
        if n >= u64::from(rule.threshold) {
            let evidence = format!(
                "{n} refusals within {}s, the last `{code}`",
                rule.window_seconds
            );
            self.fire(Rule::DenialBurst, subject, evidence, at, hits);
        }
    }

    fn auth_failed(&mut self, event: &AuditEvent, hits: &mut Vec<Hit>) {
        let rule = self.rules.auth_failed_burst;
        let Some(ip) = event.draft.ip.as_deref().filter(|_| rule.enabled) else {
            return;
        };
        let at = event.draft.occurred_at;
        let failures = failures_in(event.draft.reason.as_deref());
        let counts = self.auth_failures.entry(ip.to_owned()).or_default();
        let n = counts.add(at, failures, rule.window_seconds);
        if n >= u64::from(rule.threshold) {
            let evidence = format!("{n} failed authentications within {}s", rule.window_seconds);
            self.fire(
                Rule::AuthFailedBurst,
                format!("ip:{ip}"),
                evidence,
                at,
                hits,
            );
        }
    }

    fn new_ip(&mut self, token: &str, ip: &str, at: DateTime<Utc>, hits: &mut Vec<Hit>) {
        if !self.rules.new_ip.enabled {
            return;
        }
        let ips = self.ips.entry(token.to_owned()).or_default();
        if let Some(known) = ips.see(ip, at) {
            let evidence = format!("used from {ip}; before only from {known}");
            self.fire(Rule::NewIp, format!("token:{token}"), evidence, at, hits);
        }
    }

    fn read(&mut self, token: &str, at: DateTime<Utc>, hits: &mut Vec<Hit>) {
        let rule = self.rules.read_spike;
        if !rule.enabled {
            return;
        }
        let history = self
            .reads
            .entry(token.to_owned())
            .or_insert_with(|| ReadHistory::new(at));
        let (recent, baseline, windows) = history.add(at, rule.window_seconds);
        let floor = (baseline * rule.factor).max(f64::from(rule.min_reads));
        if windows >= u64::from(rule.min_history_windows) && recent as f64 >= floor {
            let evidence = format!(
                "{recent} reads within {}s against a baseline of {baseline:.1} per window over {windows} windows",
                rule.window_seconds
            );
            self.fire(
                Rule::ReadSpike,
                format!("token:{token}"),
                evidence,
                at,
                hits,
            );
        }
    }

    fn hour(&mut self, agent: &str, at: DateTime<Utc>, hits: &mut Vec<Hit>) {
        let rule = self.rules.unusual_hours;
        if !rule.enabled {
            return;
        }
        let hours = self.hours.entry(agent.to_owned()).or_default();
        let judged = hours.share_before(at, rule.min_reads, rule.min_days);
        hours.add(at);
        if let Some((hour, share, total)) = judged {
            if share < rule.max_share {
                let evidence = format!(
                    "read at {hour:02}:00-{hour:02}:59 UTC, an hour holding {:.2}% of its {total} earlier reads",
                    share * 100.0
                );
                self.fire(
                    Rule::UnusualHours,
                    format!("agent:{agent}"),
                    evidence,
                    at,
                    hits,
                );
            }
        }
    }

    fn crowded(&self) -> bool {
        [
            self.denials.len(),
            self.auth_failures.len(),
            self.ips.len(),
            self.reads.len(),
            self.hours.len(),
            self.fired.len(),
        ]
        .into_iter()
        .any(|n| n > MAX_SUBJECTS)
    }

    /// Forgets what cannot matter any more: windows and cooldowns past, tokens idle for two
    /// days (no token lives that long unused by default). Agents' hours are kept. When a map
    /// is still over [`MAX_SUBJECTS`], its subjects idle for an hour go too (baselines of
    /// those tokens start again).
    fn prune(&mut self, now: DateTime<Utc>) {
        let day = chrono::Duration::days(2);
        let cooldown = chrono::Duration::seconds(i64::from(self.rules.cooldown_seconds));
        let denial = i64::from(self.rules.denial_burst.window_seconds);
        let auth = i64::from(self.rules.auth_failed_burst.window_seconds);
        self.denials.retain(|_, c| !c.idle(now, denial));
        self.auth_failures.retain(|_, c| !c.idle(now, auth));
        self.ips.retain(|_, ips| now - ips.last_seen < day);
        self.reads.retain(|_, r| now - r.last_seen() < day);
        self.fired.retain(|_, last| now - *last < cooldown);
        let hour = chrono::Duration::hours(1);
        if self.ips.len() > MAX_SUBJECTS {
            self.ips.retain(|_, ips| now - ips.last_seen < hour);
        }
        if self.reads.len() > MAX_SUBJECTS {
            self.reads.retain(|_, r| now - r.last_seen() < hour);
        }
        if self.hours.len() > MAX_SUBJECTS {
            self.hours.clear();
        }
    }
}

#[cfg(test)]
mod tests;
