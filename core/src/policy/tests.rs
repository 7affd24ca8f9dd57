//! Every rule and every code of the policy once, plus the cases where two rules fail at once
//! and the order decides which code the agent sees.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::Cell;
use std::net::IpAddr;

use chrono::{Duration, Utc};
use ipnet::IpNet;

use super::*;
use crate::api::{ErrorCode, Sensitivity, TokenStatus};
use crate::host::HostPattern;
use crate::scope::Scope;

/// Owned grant facts, adjusted per case.
struct Grant {
    status: TokenStatus,
    revoked: bool,
    expires_in: Duration,
    ip_allowlist: Vec<IpNet>,
    scopes: Vec<Scope>,
    approved: Sensitivity,
    max_uses: Option<i64>,
    uses: i64,
}

impl Grant {
    fn base() -> Grant {
        Grant {
            status: TokenStatus::Active,
            revoked: false,
            expires_in: Duration::hours(1),
            ip_allowlist: vec!["10.0.0.0/8".parse().unwrap()],
            scopes: vec![Scope::parse("secrets:read:prod/**").unwrap()],
            approved: Sensitivity::Standard,
            max_uses: Some(3),
            uses: 0,
        }
    }

    fn facts(&self, now: chrono::DateTime<Utc>) -> GrantFacts<'_> {
        GrantFacts {
            status: self.status,
            revoked: self.revoked,
            expires_at: now + self.expires_in,
            ip_allowlist: &self.ip_allowlist,
            scopes: &self.scopes,
            approved_sensitivity: self.approved,
            max_uses: self.max_uses,
            uses: self.uses,
        }
    }
}

/// Owned request facts, adjusted per case.
struct Req {
    paths: Vec<&'static str>,
    destination: &'static str,
    client_ip: &'static str,
}

impl Req {
    fn base() -> Req {
        Req {
            paths: vec!["prod/db"],
            destination: "api.example.com",
            client_ip: "10.1.2.3",
        }
    }
}

/// The secrets that exist: path, sensitivity, allowed hosts. `staging/db` exists but lies
/// outside the base scope.
const SECRETS: &[(&str, Sensitivity, &[&str])] = &[
    ("prod/db", Sensitivity::Standard, &["api.example.com"]),
    ("prod/cache", Sensitivity::Standard, &["*.example.com"]),
    ("prod/payments", Sensitivity::Critical, &["api.example.com"]),
    (
        "prod/elsewhere",
        Sensitivity::Standard,
        &["other.example.com"],
    ),
    ("staging/db", Sensitivity::Standard, &["api.example.com"]),
];

struct Stored {
    path: SecretPath,
    sensitivity: Sensitivity,
    hosts: Vec<HostPattern>,
}

fn store() -> Vec<Stored> {
    SECRETS
        .iter()
        .map(|(path, sensitivity, hosts)| Stored {
            path: SecretPath::parse(path).unwrap(),
            sensitivity: *sensitivity,
            hosts: hosts
                .iter()
                .map(|h| HostPattern::parse(h).unwrap())
                .collect(),
        })
        .collect()
}

/// What a case expects: the paths granted, in order, or the code and the path it concerns.
#[derive(Debug, PartialEq)]
enum Want {
    Granted(&'static [&'static str]),
    Denied(&'static str, Option<&'static str>),
}

struct Case {
    name: &'static str,
    grant: fn(&mut Grant),
    request: fn(&mut Req),
    want: Want,
}

fn keep<T>(_: &mut T) {}

/// Runs `authorize` on one case; also returns how many lookups it made.
fn run(grant: &Grant, req: &Req) -> (Want, Result<Vec<String>, Denial>, usize) {
    let secrets = store();
    let now = Utc::now();
    let paths: Vec<SecretPath> = req
        .paths
        .iter()
        .map(|p| SecretPath::parse(p).unwrap())
        .collect();
    let destination = Destination::parse(req.destination).unwrap();
    let request = Request {
        paths: &paths,
        destination: &destination,
        client_ip: req.client_ip.parse::<IpAddr>().unwrap(),
        now,
    };
    let lookups = Cell::new(0);
    let result = authorize(&grant.facts(now), &request, |path| {
        lookups.set(lookups.get() + 1);
        secrets.iter().find(|s| &s.path == path).map(|s| {
            let facts = SecretFacts {
                path: &s.path,
                sensitivity: s.sensitivity,
                allowed_hosts: &s.hosts,
            };
            (s.path.to_string(), facts)
        })
    });
    let got = match &result {
        Ok(paths) => Want::Granted(leak(paths)),
        Err(d) => Want::Denied(d.code(), d.path().map(|p| &*p.to_string().leak())),
    };
    (got, result, lookups.get())
}

fn leak(paths: &[String]) -> &'static [&'static str] {
    let v: Vec<&'static str> = paths.iter().map(|p| &*p.clone().leak()).collect();
    v.leak()
}

const CASES: &[Case] = &[
    // Each rule, alone.
    Case {
        name: "a covered, approved, bound secret is granted",
        grant: keep,
        request: keep,
        want: Want::Granted(&["prod/db"]),
    },
    Case {
        name: "no paths: the token may be used, nothing is looked up",
        grant: keep,
        request: |r| r.paths.clear(),
        want: Want::Granted(&[]),
    },
    Case {
        name: "status revoked",
        grant: |g| g.status = TokenStatus::Revoked,
        request: keep,
        want: Want::Denied("token_revoked", None),
    },
    Case {
        name: "revocation recorded while the status still says active",
        grant: |g| g.revoked = true,
        request: keep,
        want: Want::Denied("token_revoked", None),
    },
    Case {
        name: "waiting for approval",
        grant: |g| g.status = TokenStatus::PendingApproval,
        request: keep,
        want: Want::Denied("approval_pending", None),
    },
    Case {
        name: "approval denied",
        grant: |g| g.status = TokenStatus::Denied,
        request: keep,
        want: Want::Denied("approval_denied", None),
    },
    Case {
        name: "expired a second ago",
        grant: |g| g.expires_in = Duration::seconds(-1),
        request: keep,
        want: Want::Denied("token_expired", None),
    },
    Case {
        name: "expiring exactly now counts as expired",
        grant: |g| g.expires_in = Duration::zero(),
        request: keep,
        want: Want::Denied("token_expired", None),
    },
    Case {
        name: "status expired, whatever expires_at says",
        grant: |g| g.status = TokenStatus::Expired,
        request: keep,
        want: Want::Denied("token_expired", None),
    },
    Case {
        name: "client outside the allowlist",
        grant: keep,
        request: |r| r.client_ip = "192.0.2.1",
        want: Want::Denied("ip_not_allowed", None),
    },
    Case {
        name: "an empty allowlist admits any address, IPv6 too",
        grant: |g| g.ip_allowlist.clear(),
        request: |r| r.client_ip = "2001:db8::1",
        want: Want::Granted(&["prod/db"]),
    },
    Case {
        name: "every use spent",
        grant: |g| g.uses = 3,
        request: keep,
        want: Want::Denied("uses_exhausted", None),
    },
    Case {
        name: "the last use left is granted; unlimited never runs out",
        grant: |g| g.uses = 2,
        request: keep,
        want: Want::Granted(&["prod/db"]),
    },
    Case {
        name: "an unlimited token with many uses",
        grant: |g| {
            g.max_uses = None;
            g.uses = 1_000_000;
        },
        request: keep,
        want: Want::Granted(&["prod/db"]),
    },
    Case {
        name: "a path outside the scope that exists",
        grant: keep,
        request: |r| r.paths = vec!["staging/db"],
        want: Want::Denied("scope_denied", Some("staging/db")),
    },
    Case {
        name: "a path outside the scope that does not exist: the same code",
        grant: keep,
        request: |r| r.paths = vec!["staging/nothing"],
        want: Want::Denied("scope_denied", Some("staging/nothing")),
    },
    Case {
        name: "a covered path with no secret",
        grant: keep,
        request: |r| r.paths = vec!["prod/nothing"],
        want: Want::Denied("secret_not_found", Some("prod/nothing")),
    },
    Case {
        name: "a secret above the approved sensitivity",
        grant: keep,
        request: |r| r.paths = vec!["prod/payments"],
        want: Want::Denied("approval_pending", Some("prod/payments")),
    },
    Case {
        name: "approval for critical covers a critical secret",
        grant: |g| g.approved = Sensitivity::Critical,
        request: |r| r.paths = vec!["prod/payments"],
        want: Want::Granted(&["prod/payments"]),
    },
    Case {
        name: "a secret not bound to the destination",
        grant: keep,
        request: |r| r.paths = vec!["prod/elsewhere"],
        want: Want::Denied("destination_not_allowed", Some("prod/elsewhere")),
    },
    Case {
        name: "a wildcard binding covers a subdomain; values come back in request order",
        grant: keep,
        request: |r| r.paths = vec!["prod/cache", "prod/db"],
        want: Want::Granted(&["prod/cache", "prod/db"]),
    },
    // Two rules fail at once: the order decides.
    Case {
        name: "status before recorded revocation: pending and revoked_at",
        grant: |g| {
            g.status = TokenStatus::PendingApproval;
            g.revoked = true;
        },
        request: keep,
        want: Want::Denied("approval_pending", None),
    },
    Case {
        name: "revocation before expiry",
        grant: |g| {
            g.revoked = true;
            g.expires_in = Duration::seconds(-1);
        },
        request: keep,
        want: Want::Denied("token_revoked", None),
    },
    Case {
        name: "approval denied before expiry",
        grant: |g| {
            g.status = TokenStatus::Denied;
            g.expires_in = Duration::seconds(-1);
        },
        request: keep,
        want: Want::Denied("approval_denied", None),
    },
    Case {
        name: "expiry before the client address",
        grant: |g| g.expires_in = Duration::seconds(-1),
        request: |r| r.client_ip = "192.0.2.1",
        want: Want::Denied("token_expired", None),
    },
    Case {
        name: "expired and out of scope: expiry wins",
        grant: |g| g.expires_in = Duration::seconds(-1),
        request: |r| r.paths = vec!["staging/db"],
        want: Want::Denied("token_expired", None),
    },
    Case {
        name: "client address before uses",
        grant: |g| g.uses = 3,
        request: |r| r.client_ip = "192.0.2.1",
        want: Want::Denied("ip_not_allowed", None),
    },
    Case {
        name: "client address before scope",
        grant: keep,
        request: |r| {
            r.client_ip = "192.0.2.1";
            r.paths = vec!["staging/db"];
        },
        want: Want::Denied("ip_not_allowed", None),
    },
    Case {
        name: "uses before scope",
        grant: |g| g.uses = 3,
        request: |r| r.paths = vec!["staging/db"],
        want: Want::Denied("uses_exhausted", None),
    },
    Case {
        name: "scope of every path before any existence: missing first, outside second",
        grant: keep,
        request: |r| r.paths = vec!["prod/nothing", "staging/db"],
        want: Want::Denied("scope_denied", Some("staging/db")),
    },
    Case {
        name: "scope before sensitivity and binding",
        grant: keep,
        request: |r| r.paths = vec!["prod/payments", "prod/elsewhere", "staging/db"],
        want: Want::Denied("scope_denied", Some("staging/db")),
    },
    Case {
        name: "path order after scope: missing first, unbound second",
        grant: keep,
        request: |r| r.paths = vec!["prod/nothing", "prod/elsewhere"],
        want: Want::Denied("secret_not_found", Some("prod/nothing")),
    },
    Case {
        name: "path order after scope: unbound first, missing second",
        grant: keep,
        request: |r| r.paths = vec!["prod/elsewhere", "prod/nothing"],
        want: Want::Denied("destination_not_allowed", Some("prod/elsewhere")),
    },
    Case {
        name: "sensitivity before binding on one secret",
        grant: keep,
        request: |r| {
            r.paths = vec!["prod/payments"];
            r.destination = "other.example.com";
        },
        want: Want::Denied("approval_pending", Some("prod/payments")),
    },
];

#[test]
fn every_rule_and_every_ordering_case() {
    for case in CASES {
        let mut grant = Grant::base();
        (case.grant)(&mut grant);
        let mut req = Req::base();
        (case.request)(&mut req);
        let (got, _, _) = run(&grant, &req);
        assert_eq!(got, case.want, "{}", case.name);
    }
}

#[test]
fn the_table_covers_every_code_the_rules_return() {
    let mut codes: Vec<&str> = CASES
        .iter()
        .filter_map(|c| match c.want {
            Want::Denied(code, _) => Some(code),
            Want::Granted(_) => None,
        })
        .collect();
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(
        codes,
        [
            "approval_denied",
            "approval_pending",
            "destination_not_allowed",
            "ip_not_allowed",
            "scope_denied",
            "secret_not_found",
            "token_expired",
            "token_revoked",
            "uses_exhausted",
        ]
    );
}

#[test]
fn nothing_is_looked_up_until_the_grant_and_every_scope_pass() {
    for (adjust_grant, adjust_req) in [
        (
            (|g: &mut Grant| g.revoked = true) as fn(&mut Grant),
            keep as fn(&mut Req),
        ),
        (keep, |r: &mut Req| r.client_ip = "192.0.2.1"),
        (keep, |r: &mut Req| r.paths = vec!["prod/db", "staging/db"]),
        (keep, |r: &mut Req| r.paths = vec!["staging/nothing"]),
    ] {
        let mut grant = Grant::base();
        adjust_grant(&mut grant);
        let mut req = Req::base();
        adjust_req(&mut req);
        let (got, _, lookups) = run(&grant, &req);
        assert!(matches!(got, Want::Denied(..)), "{got:?}");
        assert_eq!(lookups, 0, "{got:?}");
    }
}

#[test]
fn outside_the_scope_reads_the_same_whether_the_secret_exists_or_not() {
    let message = |path: &'static str| {
        let (_, result, _) = run(
            &Grant::base(),
            &Req {
                paths: vec![path],
                ..Req::base()
            },
        );
        result.unwrap_err().message().replace(path, "PATH")
    };
    assert_eq!(message("staging/db"), message("staging/dc"));
    assert_eq!(
        message("staging/db"),
        "token scope does not allow reading `PATH`"
    );
}

#[test]
fn every_denial_has_its_documented_code_message_and_path() {
    let path = SecretPath::parse("prod/db").unwrap();
    let cases = [
        (
            Denial::TokenInvalid,
            ErrorCode::TokenInvalid,
            "token is not valid",
            None,
        ),
        (
            Denial::TokenRevoked,
            ErrorCode::TokenRevoked,
            "token has been revoked",
            None,
        ),
        (
            Denial::ApprovalPending,
            ErrorCode::ApprovalPending,
            "token is waiting for approval",
            None,
        ),
        (
            Denial::ApprovalDenied,
            ErrorCode::ApprovalDenied,
            "token approval was denied",
            None,
        ),
        (
            Denial::TokenExpired,
            ErrorCode::TokenExpired,
            "token has expired",
            None,
        ),
        (
            Denial::IpNotAllowed {
                client_ip: "192.0.2.1".parse().unwrap(),
            },
            ErrorCode::IpNotAllowed,
            "client address 192.0.2.1 is not in the token's ip_allowlist",
            None,
        ),
        (
            Denial::UsesExhausted,
            ErrorCode::UsesExhausted,
            "token has no uses left",
            None,
        ),
        (
            Denial::OutsideScope { path: path.clone() },
            ErrorCode::ScopeDenied,
            "token scope does not allow reading `prod/db`",
            Some(&path),
        ),
        (
            Denial::SecretNotFound { path: path.clone() },
            ErrorCode::SecretNotFound,
            "no secret at `prod/db`",
            Some(&path),
        ),
        (
            Denial::AboveApprovedSensitivity {
                path: path.clone(),
                sensitivity: Sensitivity::Critical,
                approved: Sensitivity::Sensitive,
            },
            ErrorCode::ApprovalPending,
            "`prod/db` is critical and this token is approved for sensitive secrets only; request a new token to have it approved",
            Some(&path),
        ),
        (
            Denial::DestinationNotAllowed {
                path: path.clone(),
                destination: Destination::parse("evil.example.com:8443").unwrap(),
            },
            ErrorCode::DestinationNotAllowed,
            "`prod/db` may not be sent to evil.example.com:8443",
            Some(&path),
        ),
    ];
    for (denial, code, message, concerns) in cases {
        assert_eq!(denial.error_code(), code, "{denial:?}");
        assert_eq!(denial.code(), code.as_str(), "{denial:?}");
        assert_eq!(denial.message(), message, "{denial:?}");
        assert_eq!(denial.path(), concerns, "{denial:?}");
    }
}
