//! `[alerts]`: the anomaly rules (`crate::anomaly`) and where their alerts go.
//!
//! Each rule's table (`[alerts.exfiltration]`, ...) takes only the keys that rule has; a key
//! left out keeps that rule's own default (so `[alerts.exfiltration] enabled = true` still
//! revokes), and a key the rule does not have is refused rather than ignored.

use std::path::PathBuf;

use serde::Deserialize;

use super::error::{invalid, ConfigError};
use crate::anomaly::{Burst, Hours, Rules, Spike, Switch};

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    pub enabled: bool,
    /// How often each replica looks for new events.
    pub poll_interval_ms: u64,
    /// One alert per rule and subject within this long.
    pub cooldown_seconds: u32,
    /// How much of each tenant's log a starting replica replays into the baselines...
    pub baseline_hours: u64,
    /// ...reading at most this many events.
    pub baseline_max_events: i64,
    /// Alerts are POSTed here as JSON: `https://...`, or `http://` to a loopback address.
    pub webhook_url: Option<String>,
    /// A bearer token for the webhook.
    pub webhook_token_file: Option<PathBuf>,
    /// CA certificates (PEM) of the webhook, added to the public roots.
    pub webhook_ca_file: Option<PathBuf>,
    pub denial_burst: RuleTable,
    pub new_ip: RuleTable,
    pub read_spike: RuleTable,
    pub exfiltration: RuleTable,
    pub above_sensitivity: RuleTable,
    pub auth_failed_burst: RuleTable,
    pub unusual_hours: RuleTable,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            enabled: true,
            poll_interval_ms: 250,
            cooldown_seconds: Rules::default().cooldown_seconds,
            baseline_hours: 168,
            baseline_max_events: 200_000,
            webhook_url: None,
            webhook_token_file: None,
            webhook_ca_file: None,
            denial_burst: RuleTable::default(),
            new_ip: RuleTable::default(),
            read_spike: RuleTable::default(),
            exfiltration: RuleTable::default(),
            above_sensitivity: RuleTable::default(),
            auth_failed_burst: RuleTable::default(),
            unusual_hours: RuleTable::default(),
        }
    }
}

/// Any rule's keys; which ones a rule takes is checked in [`AlertsConfig::rules`].
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleTable {
    pub enabled: Option<bool>,
    pub revoke_token: Option<bool>,
    pub threshold: Option<u32>,
    pub window_seconds: Option<u32>,
    pub factor: Option<f64>,
    pub min_reads: Option<u32>,
    pub min_history_windows: Option<u32>,
    pub min_days: Option<u32>,
    pub max_share: Option<f64>,
}

/// Replaces `target` with the key's value when it is given.
fn set<T: Copy>(target: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *target = v;
    }
}

impl RuleTable {
    /// Refuses the keys `rule` does not have.
    fn only(&self, rule: &str, allowed: &[&str]) -> Result<(), ConfigError> {
        let given = [
            ("threshold", self.threshold.is_some()),
            ("window_seconds", self.window_seconds.is_some()),
            ("factor", self.factor.is_some()),
            ("min_reads", self.min_reads.is_some()),
            ("min_history_windows", self.min_history_windows.is_some()),
            ("min_days", self.min_days.is_some()),
            ("max_share", self.max_share.is_some()),
        ];
        match given
            .iter()
            .find(|(key, present)| *present && !allowed.contains(key))
        {
            Some((key, _)) => Err(invalid(
                &format!("alerts.{rule}.{key}"),
                "not a setting of this rule",
            )),
            None => Ok(()),
        }
    }

    fn switch(&self, rule: &str, mut switch: Switch) -> Result<Switch, ConfigError> {
        self.only(rule, &[])?;
        set(&mut switch.enabled, self.enabled);
        set(&mut switch.revoke_token, self.revoke_token);
        Ok(switch)
    }

    fn burst(&self, rule: &str, mut burst: Burst) -> Result<Burst, ConfigError> {
        self.only(rule, &["threshold", "window_seconds"])?;
        set(&mut burst.enabled, self.enabled);
        set(&mut burst.revoke_token, self.revoke_token);
        set(&mut burst.threshold, self.threshold);
        set(&mut burst.window_seconds, self.window_seconds);
        at_least_one(rule, "threshold", burst.threshold)?;
        at_least_one(rule, "window_seconds", burst.window_seconds)?;
        Ok(burst)
    }
}

fn at_least_one(rule: &str, key: &str, value: u32) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(invalid(
            &format!("alerts.{rule}.{key}"),
            "must be at least 1",
        ));
    }
    Ok(())
}

impl AlertsConfig {
    /// The rules with every given key applied over its rule's defaults, checked.
    pub fn rules(&self) -> Result<Rules, ConfigError> {
        let d = Rules::default();
        let mut spike: Spike = d.read_spike;
        let t = &self.read_spike;
        t.only(
            "read_spike",
            &[
                "window_seconds",
                "factor",
                "min_reads",
                "min_history_windows",
            ],
        )?;
        set(&mut spike.enabled, t.enabled);
        set(&mut spike.revoke_token, t.revoke_token);
        set(&mut spike.window_seconds, t.window_seconds);
        set(&mut spike.factor, t.factor);
        set(&mut spike.min_reads, t.min_reads);
        set(&mut spike.min_history_windows, t.min_history_windows);
        at_least_one("read_spike", "window_seconds", spike.window_seconds)?;
        if !(spike.factor > 1.0 && spike.factor.is_finite()) {
            return Err(invalid("alerts.read_spike.factor", "must be above 1"));
        }
        let mut hours: Hours = d.unusual_hours;
        let t = &self.unusual_hours;
        t.only("unusual_hours", &["min_reads", "min_days", "max_share"])?;
        set(&mut hours.enabled, t.enabled);
        set(&mut hours.revoke_token, t.revoke_token);
        set(&mut hours.min_reads, t.min_reads);
        set(&mut hours.min_days, t.min_days);
        set(&mut hours.max_share, t.max_share);
        if !(hours.max_share > 0.0 && hours.max_share < 1.0) {
            return Err(invalid(
                "alerts.unusual_hours.max_share",
                "must be between 0 and 1 (exclusive)",
            ));
        }
        Ok(Rules {
            cooldown_seconds: self.cooldown_seconds,
            denial_burst: self.denial_burst.burst("denial_burst", d.denial_burst)?,
            new_ip: self.new_ip.switch("new_ip", d.new_ip)?,
            read_spike: spike,
            exfiltration: self.exfiltration.switch("exfiltration", d.exfiltration)?,
            above_sensitivity: self
                .above_sensitivity
                .switch("above_sensitivity", d.above_sensitivity)?,
            auth_failed_burst: self
                .auth_failed_burst
                .burst("auth_failed_burst", d.auth_failed_burst)?,
            unusual_hours: hours,
        })
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.rules()?;
        if self.poll_interval_ms < 10 {
            return Err(invalid("alerts.poll_interval_ms", "must be at least 10"));
        }
        if self.baseline_max_events < 0 {
            return Err(invalid(
                "alerts.baseline_max_events",
                "must not be negative",
            ));
        }
        if let Some(url) = &self.webhook_url {
            super::check_https_url("alerts.webhook_url", url)?;
        }
        Ok(())
    }
}
