#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::TimeZone;

use super::*;

const MIN: Duration = Duration::from_secs(60);

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 4, 12, 0, 0).unwrap()
}

fn at(minutes: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::minutes(minutes)
}

/// The defaults, spelled out: sensitivity × tier → (approvals, delay).
#[test]
fn default_requirements_for_every_sensitivity_and_tier() {
    let policy = ApprovalPolicy::default();
    for tier in 0..=4u8 {
        let trusted = tier >= 3;
        #[rustfmt::skip]
        let expected = [
            (Sensitivity::Standard, 0, Duration::ZERO),
            (Sensitivity::Sensitive, if trusted { 0 } else { 1 }, Duration::ZERO),
            (Sensitivity::Critical, 2, 15 * MIN),
        ];
        for (sensitivity, approvals, delay) in expected {
            assert_eq!(
                policy.requirement(sensitivity, tier),
                Requirement { approvals, delay },
                "{sensitivity:?} at tier {tier}"
            );
        }
    }
}

#[test]
fn configuration_cannot_take_critical_below_two_distinct_humans() {
    let lax = ApprovalPolicy {
        sensitive: Requirement {
            approvals: 0,
            delay: Duration::ZERO,
        },
        critical: Requirement {
            approvals: 1,
            delay: Duration::ZERO,
        },
        trusted_tier: 0,
    };
    assert_eq!(lax.requirement(Sensitivity::Critical, 4).approvals, 2);
    assert_eq!(
        lax.requirement(Sensitivity::Sensitive, 4).approvals,
        0,
        "never below 0"
    );
    let strict = ApprovalPolicy {
        critical: Requirement {
            approvals: 3,
            delay: MIN,
        },
        ..ApprovalPolicy::default()
    };
    assert_eq!(strict.requirement(Sensitivity::Critical, 2).approvals, 3);
    assert_eq!(
        strict.requirement(Sensitivity::Critical, 3).approvals,
        2,
        "one fewer when trusted"
    );
}

/// Every sensitivity × tier × approvals given × time since the quorum: pending below the
/// quorum, time-locked until the delay has passed since the approval that completed it, met
/// after.
#[test]
fn quorum_matrix_with_a_test_clock() {
    let policy = ApprovalPolicy::default();
    let digest = [7u8; 32];
    let humans: Vec<OperatorId> = (0..3).map(|_| OperatorId::new()).collect();
    for sensitivity in [
        Sensitivity::Standard,
        Sensitivity::Sensitive,
        Sensitivity::Critical,
    ] {
        for tier in 0..=4u8 {
            let req = policy.requirement(sensitivity, tier);
            for given in 0..=3usize {
                // Human i approves at minute i.
                let approvals: Vec<Approval> = humans[..given]
                    .iter()
                    .enumerate()
                    .map(|(i, h)| Approval {
                        operator: *h,
                        digest,
                        at: at(i as i64),
                    })
                    .collect();
                for minutes_later in [0i64, 14, 15, 60] {
                    let now = at(given as i64 + minutes_later);
                    let got = quorum(req, &approvals, &digest, now);
                    let need = req.approvals;
                    let expected = if need == 0 {
                        Quorum::Met
                    } else if (given as u8) < need {
                        Quorum::Pending {
                            have: given as u8,
                            need,
                        }
                    } else {
                        let reached = at(i64::from(need) - 1);
                        let until = reached + chrono::Duration::from_std(req.delay).unwrap();
                        if now < until {
                            Quorum::TimeLocked { until }
                        } else {
                            Quorum::Met
                        }
                    };
                    assert_eq!(
                        got, expected,
                        "{sensitivity:?} tier {tier} given {given} +{minutes_later}m"
                    );
                }
            }
        }
    }
}

#[test]
fn critical_waits_fifteen_minutes_after_the_second_human() {
    let req = ApprovalPolicy::default().requirement(Sensitivity::Critical, 0);
    let digest = [1u8; 32];
    let (alice, bob) = (OperatorId::new(), OperatorId::new());
    let approvals = [
        Approval {
            operator: alice,
            digest,
            at: at(0),
        },
        Approval {
            operator: bob,
            digest,
            at: at(10),
        },
    ];
    assert_eq!(
        quorum(req, &approvals[..1], &digest, at(60)),
        Quorum::Pending { have: 1, need: 2 }
    );
    assert_eq!(
        quorum(req, &approvals, &digest, at(24)),
        Quorum::TimeLocked { until: at(25) }
    );
    assert_eq!(quorum(req, &approvals, &digest, at(25)), Quorum::Met);
}

#[test]
fn one_human_counts_once_however_often_they_approve() {
    let req = ApprovalPolicy::default().requirement(Sensitivity::Critical, 0);
    let digest = [1u8; 32];
    let alice = OperatorId::new();
    let twice = [
        Approval {
            operator: alice,
            digest,
            at: at(0),
        },
        Approval {
            operator: alice,
            digest,
            at: at(1),
        },
    ];
    assert_eq!(
        quorum(req, &twice, &digest, at(120)),
        Quorum::Pending { have: 1, need: 2 }
    );
}

#[test]
fn approvals_of_another_digest_do_not_count() {
    let req = ApprovalPolicy::default().requirement(Sensitivity::Sensitive, 0);
    let (old, new) = ([1u8; 32], [2u8; 32]);
    let approvals = [Approval {
        operator: OperatorId::new(),
        digest: old,
        at: at(0),
    }];
    assert_eq!(quorum(req, &approvals, &old, at(1)), Quorum::Met);
    // A new secret under the wildcard or a raised sensitivity changed what it would unlock.
    assert_eq!(
        quorum(req, &approvals, &new, at(1)),
        Quorum::Pending { have: 0, need: 1 }
    );
}

fn unlocks() -> Unlocks {
    use crate::api::UnlockedSecret;
    Unlocks {
        agent_id: "agent-1".into(),
        trust_tier: 0,
        scopes: vec!["secrets:read:prod/**".into()],
        secrets: vec![
            UnlockedSecret {
                path: "prod/db".into(),
                sensitivity: Sensitivity::Critical,
            },
            UnlockedSecret {
                path: "prod/api".into(),
                sensitivity: Sensitivity::Standard,
            },
        ],
        ceiling_additions: vec![],
        ttl_seconds: 3600,
        ip_allowlist: vec![],
        max_uses: None,
    }
}

/// Everything an approver sees is under the digest: each change gives another one, while
/// order alone does not.
#[test]
fn the_digest_changes_with_anything_unlocked_and_only_then() {
    use crate::api::UnlockedSecret;
    let base = digest(&unlocks());
    let mut reordered = unlocks();
    reordered.secrets.reverse();
    assert_eq!(digest(&reordered), base, "order is not content");

    type Change = fn(&mut Unlocks);
    let changes: &[(&str, Change)] = &[
        ("a new secret under the wildcard", |u| {
            u.secrets.push(UnlockedSecret {
                path: "prod/new".into(),
                sensitivity: Sensitivity::Standard,
            })
        }),
        ("a sensitivity raised", |u| {
            u.secrets[1].sensitivity = Sensitivity::Sensitive
        }),
        ("the agent's tier", |u| u.trust_tier = 3),
        ("the ttl", |u| u.ttl_seconds = 7200),
        ("the ip allowlist", |u| {
            u.ip_allowlist = vec!["10.0.0.0/8".into()]
        }),
        ("max uses", |u| u.max_uses = Some(1)),
        ("a ceiling addition", |u| {
            u.ceiling_additions = vec!["secrets:read:prod/**".into()]
        }),
        ("the agent", |u| u.agent_id = "agent-2".into()),
        ("the scopes", |u| u.scopes.push("secrets:read:x".into())),
    ];
    for (what, change) in changes {
        let mut changed = unlocks();
        change(&mut changed);
        assert_ne!(digest(&changed), base, "{what}");
    }
}

#[test]
fn widening_a_ceiling_always_needs_a_human() {
    let policy = ApprovalPolicy::default();
    let mut u = unlocks();
    u.secrets.clear();
    assert_eq!(policy.requirement_for(&u), Requirement::NONE);
    u.ceiling_additions = vec!["secrets:read:prod/**".into()];
    assert_eq!(policy.requirement_for(&u).approvals, 1);
    u.trust_tier = 4;
    assert_eq!(
        policy.requirement_for(&u).approvals,
        1,
        "even for a trusted agent"
    );
    assert_eq!(policy.requirement_for(&unlocks()).approvals, 2, "critical");
}
