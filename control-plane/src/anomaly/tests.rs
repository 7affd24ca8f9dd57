#![allow(clippy::unwrap_used, clippy::expect_used)]

use agent_secret_core::ids::TenantId;
use chrono::{DateTime, Duration, TimeZone, Utc};

use super::*;
use crate::audit::{Actor, AuditDraft, AuditEvent, AuditEventType, GENESIS_HASH};

const TOKEN: &str = "11111111-1111-4111-8111-111111111111";
const AGENT: &str = "agent-a";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap()
}

fn event(draft: AuditDraft) -> AuditEvent {
    AuditEvent::chain(TenantId::new(), 1, GENESIS_HASH, draft)
}

fn read(at: DateTime<Utc>, ip: &str) -> AuditEvent {
    let mut d = AuditDraft::new(AuditEventType::SecretRead, Actor::new("token", TOKEN))
        .client(Some(ip.into()), None)
        .path("prod/api_key")
        .destination("api.example.com")
        .reason("version 1");
    d.occurred_at = at;
    event(d)
}

fn refused(at: DateTime<Utc>, reason: &str, host: &str) -> AuditEvent {
    let mut d = AuditDraft::new(AuditEventType::SecretRead, Actor::new("token", TOKEN))
        .client(Some("10.0.0.1".into()), None)
        .path("prod/api_key")
        .destination(host)
        .failed(reason);
    d.occurred_at = at;
    event(d)
}

fn auth_failed(at: DateTime<Utc>, ip: &str, reason: &str) -> AuditEvent {
    let mut d = AuditDraft::new(AuditEventType::AuthFailed, Actor::system())
        .client(Some(ip.into()), None)
        .failed(reason);
    d.occurred_at = at;
    event(d)
}

/// Feeds `events` and returns the rules that fired.
fn run(detector: &mut Detector, events: &[AuditEvent]) -> Vec<Rule> {
    events
        .iter()
        .flat_map(|e| detector.observe(e, Some(AGENT)))
        .map(|h| h.rule)
        .collect()
}

fn detector() -> Detector {
    Detector::new(Rules::default())
}

#[test]
fn a_burst_of_refusals_fires_once_per_subject_and_a_trickle_does_not() {
    let mut d = detector();
    // One refusal a minute for an hour: the baseline.
    let trickle: Vec<_> = (0..60)
        .map(|i| {
            refused(
                t0() + Duration::minutes(i),
                "scope_denied",
                "api.example.com",
            )
        })
        .collect();
    assert_eq!(run(&mut d, &trickle), vec![]);
    let start = t0() + Duration::hours(2);
    let burst: Vec<_> = (0..30)
        .map(|i| {
            refused(
                start + Duration::seconds(i),
                "scope_denied",
                "api.example.com",
            )
        })
        .collect();
    let hits: Vec<Hit> = burst
        .iter()
        .flat_map(|e| d.observe(e, Some(AGENT)))
        .collect();
    let subjects: Vec<_> = hits.iter().map(|h| h.subject.as_str()).collect();
    assert_eq!(
        subjects,
        vec![format!("token:{TOKEN}"), format!("agent:{AGENT}")],
        "the token and its agent, once each within the cooldown"
    );
    assert!(hits.iter().all(|h| h.rule == Rule::DenialBurst));
    assert!(
        hits[0].evidence.starts_with("10 refusals within 60s"),
        "{:?}",
        hits[0]
    );
}

#[test]
fn a_new_address_fires_and_the_first_and_known_ones_do_not() {
    let mut d = detector();
    let usual: Vec<_> = (0..20)
        .map(|i| read(t0() + Duration::minutes(i), "10.0.0.1"))
        .collect();
    assert_eq!(run(&mut d, &usual), vec![]);
    let hits = d.observe(&read(t0() + Duration::hours(1), "203.0.113.9"), None);
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].rule, Rule::NewIp);
    assert_eq!(
        hits[0].evidence,
        "used from 203.0.113.9; before only from 10.0.0.1"
    );
}

#[test]
fn reads_far_above_the_tokens_own_rate_fire_and_a_steady_rate_does_not() {
    let mut d = detector();
    // Five reads a minute for half an hour.
    let steady: Vec<_> = (0..30 * 5)
        .map(|i| read(t0() + Duration::seconds(i * 12), "10.0.0.1"))
        .collect();
    assert_eq!(run(&mut d, &steady), vec![]);
    // Then 150 within a minute: 30 times the baseline, above min_reads.
    let start = t0() + Duration::minutes(31);
    let spike: Vec<_> = (0..150)
        .map(|i| read(start + Duration::milliseconds(i * 300), "10.0.0.1"))
        .collect();
    assert_eq!(run(&mut d, &spike), vec![Rule::ReadSpike]);
}

#[test]
fn a_young_token_has_no_baseline_to_spike_above() {
    let mut d = detector();
    let start = t0();
    let burst: Vec<_> = (0..500)
        .map(|i| read(start + Duration::milliseconds(i * 100), "10.0.0.1"))
        .collect();
    assert_eq!(run(&mut d, &burst), vec![]);
}

#[test]
fn a_placeholder_toward_an_unbound_host_fires_and_revokes_by_default() {
    let mut d = detector();
    let quiet = refused(t0(), "scope_denied", "api.example.com");
    assert_eq!(run(&mut d, &[quiet]), vec![]);
    let hits = d.observe(
        &refused(
            t0() + Duration::seconds(1),
            "destination_not_allowed; reported by sidecar x",
            "evil.example",
        ),
        None,
    );
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].rule, Rule::Exfiltration);
    assert_eq!(hits[0].token(), Some(TOKEN));
    assert!(hits[0].evidence.contains("evil.example"));
    assert!(d.rules().revokes(Rule::Exfiltration));
    assert!(!d.rules().revokes(Rule::NewIp));
    // A request without placeholders to an unlisted host names no path: not exfiltration.
    let mut pass = refused(t0(), "destination_not_allowed", "evil.example");
    pass.draft.path = None;
    assert_eq!(run(&mut detector(), &[pass]), vec![]);
}

#[test]
fn a_read_above_the_approved_sensitivity_fires_and_a_pending_token_does_not() {
    let mut d = detector();
    let waiting = refused(
        t0(),
        "approval_pending; reported by sidecar x",
        "api.example.com",
    );
    assert_eq!(run(&mut d, &[waiting]), vec![]);
    let above = refused(
        t0(),
        &format!("{ABOVE_APPROVED_REASON} (critical > standard)"),
        "api.example.com",
    );
    assert_eq!(run(&mut d, &[above]), vec![Rule::AboveSensitivity]);
}

#[test]
fn failed_authentications_from_one_address_fire_counting_the_burst_tallies() {
    let mut d = detector();
    // A few typos from several addresses.
    let typos: Vec<_> = (0..30)
        .map(|i| {
            auth_failed(
                t0() + Duration::seconds(i * 10),
                &format!("10.0.1.{}", i % 10),
                "invalid_credential",
            )
        })
        .collect();
    assert_eq!(run(&mut d, &typos), vec![]);
    let later = t0() + Duration::hours(1);
    let first = auth_failed(later, "198.51.100.7", "invalid_credential");
    let summary = auth_failed(
        later + Duration::seconds(30),
        "198.51.100.7",
        "invalid_credential: 40 more failed authentications from this address in 60s",
    );
    let hits: Vec<Hit> = [first, summary]
        .iter()
        .flat_map(|e| d.observe(e, None))
        .collect();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].rule, Rule::AuthFailedBurst);
    assert_eq!(hits[0].subject, "ip:198.51.100.7");
    assert!(hits[0].evidence.starts_with("41 failed"), "{:?}", hits[0]);
}

#[test]
fn a_read_at_an_hour_the_agent_never_reads_fires_and_its_usual_hours_do_not() {
    let mut d = detector();
    // Ten working days, reads between 09:00 and 17:00.
    let days: Vec<_> = (0..10)
        .flat_map(|day| {
            (0..40).map(move |i| {
                read(
                    t0() + Duration::days(day) + Duration::minutes(i * 12),
                    "10.0.0.1",
                )
            })
        })
        .collect();
    assert_eq!(run(&mut d, &days), vec![]);
    let usual = read(t0() + Duration::days(10) + Duration::hours(3), "10.0.0.1");
    assert_eq!(run(&mut d, &[usual]), vec![]);
    let night = read(t0() + Duration::days(10) + Duration::hours(17), "10.0.0.1");
    let hits = d.observe(&night, Some(AGENT));
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].rule, Rule::UnusualHours);
    assert_eq!(hits[0].subject, format!("agent:{AGENT}"));
    assert!(
        hits[0].evidence.starts_with("read at 02:00-02:59 UTC"),
        "{:?}",
        hits[0]
    );
}

#[test]
fn a_disabled_rule_stays_quiet() {
    let mut rules = Rules::default();
    rules.exfiltration.enabled = false;
    let mut d = Detector::new(rules);
    let e = refused(t0(), "destination_not_allowed", "evil.example");
    assert_eq!(run(&mut d, &[e]), vec![]);
}

#[test]
fn every_rule_has_a_distinct_name() {
    let names: std::collections::HashSet<_> = Rule::ALL.iter().map(Rule::as_str).collect();
    assert_eq!(names.len(), 7);
}

#[test]
fn made_up_token_ids_cannot_grow_the_state_without_bound() {
    let mut d = detector();
    for i in 0..(MAX_SUBJECTS as i64 + 5_000) {
        let mut e = refused(
            t0() + Duration::seconds(i),
            "rate_limited",
            "api.example.com",
        );
        e.draft.actor = Actor::new("token", format!("forged-{i}"));
        d.observe(&e, None);
    }
    assert!(d.ips.len() <= MAX_SUBJECTS, "{}", d.ips.len());
    assert!(d.denials.len() <= MAX_SUBJECTS, "{}", d.denials.len());
}
