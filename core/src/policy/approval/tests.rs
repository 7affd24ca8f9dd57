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
