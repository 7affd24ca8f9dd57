//! Signed checkpoints make a rewritten audit log detectable, online and offline.
//!
//! A control plane checkpointing every 5 events; an auditor exports the log and the public key.
//! The untouched log verifies (chain and signatures) both on the server and from the file. Then
//! the attacks the chain alone cannot see: an event rewritten in the database with every later
//! hash recomputed (the checkpoint after it no longer names the head), a checkpoint whose
//! signed statement was altered and re-chained, and a checkpoint signed with the attacker's own
//! key.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use agent_secret_control_plane::audit::AuditEvent;
use agent_secret_control_plane::audit_checkpoint::{key_id_of, PublicKeys, Statement};
use agent_secret_control_plane::audit_file::{event_of, verify_jsonl, verify_jsonl_anchored};
use agent_secret_control_plane::service::audit_log::AuditEventView;
use agent_secret_control_plane::service::checkpoints::CheckpointSettings;
use agent_secret_control_plane::service::Policy;
use agent_secret_testkit::control_plane::{ControlPlane, Install, Tenant};
use agent_secret_testkit::eventually;
use base64::Engine as _;
use reqwest::Method;
use serde_json::json;
use sqlx::Connection;

fn policy(anchors: &std::path::Path) -> Policy {
    Policy {
        checkpoints: CheckpointSettings {
            every_events: 5,
            every: Duration::from_secs(3600),
            check: Duration::from_millis(100),
            file: Some(anchors.to_owned()),
        },
        ..Policy::default()
    }
}

/// The views of an export, re-chained from position `from` (0-based) on, as an attacker with
/// the hash function would: every event after an edit gets a matching `prev_hash` and `hash`.
fn rechain(views: &mut [AuditEventView], from: usize) {
    let mut prev: Option<[u8; 32]> = None;
    for view in views.iter_mut().skip(from.saturating_sub(1)) {
        let mut event: AuditEvent = event_of(view).unwrap();
        if let Some(p) = prev {
            event.prev_hash = p;
        }
        event.hash = event.expected_hash();
        prev = Some(event.hash);
        view.prev_hash = hex::encode(event.prev_hash);
        view.hash = hex::encode(event.hash);
    }
}

fn jsonl(views: &[AuditEventView]) -> String {
    views
        .iter()
        .map(|v| serde_json::to_string(v).unwrap() + "\n")
        .collect()
}

fn offline(text: &str, keys: &PublicKeys) -> agent_secret_control_plane::audit_file::FileReport {
    verify_jsonl(text.as_bytes(), Some(keys.clone())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_log_and_forged_checkpoints_are_detected_online_and_offline() {
    let dir = tempfile::tempdir().unwrap();
    let install = Install::new(dir.path(), None).await;
    let anchor_file = dir.path().join("anchors.jsonl");
    let cp = ControlPlane::serve(
        &install,
        "127.0.0.1:0".parse().unwrap(),
        policy(&anchor_file),
    )
    .await;
    let tenant = Tenant::create(&cp, "acme").await;
    // Two rounds of writes, each followed by its checkpoint.
    let mut report = json!(null);
    for round in 1..=2 {
        for i in 0..6 {
            tenant
                .put_secret(
                    &cp,
                    &format!("prod/key{round}-{i}"),
                    "sk-checkpointed-0123456789",
                    &["api.example.com"],
                )
                .await;
        }
        report = eventually("a checkpoint", Duration::from_secs(30), || async {
            let r = cp
                .ok(Method::GET, "/v1/audit/verify", &tenant.admin, None)
                .await;
            (r["checkpoints_verified"].as_i64().unwrap() >= round).then_some(r)
        })
        .await;
    }
    assert_eq!(report["valid"], true, "{report}");

    let listed = cp
        .ok(Method::GET, "/v1/audit/public-keys", &tenant.admin, None)
        .await;
    let public = base64::engine::general_purpose::STANDARD
        .decode(listed["keys"][0]["public_key"].as_str().unwrap())
        .unwrap();
    assert_eq!(listed["keys"][0]["key_id"], key_id_of(&public));
    let keys: PublicKeys = [(key_id_of(&public), public.clone())].into();

    let text = cp
        .client
        .get(cp.url("/v1/audit?format=jsonl"))
        .bearer_auth(&tenant.admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let views: Vec<AuditEventView> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let intact = offline(&text, &keys);
    assert!(intact.valid, "{intact:?}");
    assert!(intact.checkpoints_verified >= 2 && intact.signatures_checked);
    let checkpoints: Vec<usize> = views
        .iter()
        .enumerate()
        .filter(|(_, v)| v.event_type == "audit.checkpoint")
        .map(|(i, _)| i)
        .collect();
    // The event after the first checkpoint, vouched for by the second.
    let edited = checkpoints[0] + 1;
    let next_checkpoint = checkpoints[1];
    assert!(edited < next_checkpoint);

    // Offline, a rewritten past: an event edited and the chain after it recomputed.
    let mut rewritten = views.clone();
    rewritten[edited].actor = "operator:nobody".into();
    rechain(&mut rewritten, edited);
    let report = offline(&jsonl(&rewritten), &keys);
    assert!(!report.valid);
    assert_eq!(report.first_bad_seq, Some(views[next_checkpoint].seq));
    assert!(
        report.problem.unwrap().contains("head"),
        "the checkpoint no longer names the head"
    );

    // Offline, an altered statement, re-chained so the chain itself holds.
    let mut altered = views.clone();
    let mut statement = Statement::from_reason(altered[next_checkpoint].reason.as_deref()).unwrap();
    statement.time = "2020-01-01T00:00:00.000000Z".into();
    altered[next_checkpoint].reason = Some(statement.to_reason());
    rechain(&mut altered, next_checkpoint);
    let report = offline(&jsonl(&altered), &keys);
    assert_eq!(report.first_bad_seq, Some(views[next_checkpoint].seq));
    assert!(report.problem.unwrap().contains("signature"));

    // With the statements kept outside the database: the untouched export matches them; a log
    // whose checkpoint events were all removed and whose past was rewritten and renumbered
    // does not; nor does a log cut off before its last anchored head.
    // (The checkpoint task keeps running: a checkpoint written after the export is left out.
    // A statement names the event before its checkpoint event, so the export may end exactly
    // at the position a later checkpoint names.)
    let exported_through = views.last().unwrap().seq;
    let anchors: Vec<Statement> = std::fs::read_to_string(&anchor_file)
        .unwrap()
        .lines()
        .map(|l| Statement::from_reason(Some(l)).unwrap())
        .filter(|a| a.seq < exported_through)
        .collect();
    assert_eq!(
        anchors.len(),
        checkpoints.len(),
        "every checkpoint is anchored"
    );
    let anchored =
        |text: &str| verify_jsonl_anchored(text.as_bytes(), Some(keys.clone()), &anchors).unwrap();
    let report = anchored(&text);
    assert!(report.valid, "{report:?}");
    assert_eq!(report.anchors_matched as usize, anchors.len());
    let mut stripped: Vec<AuditEventView> = views
        .iter()
        .filter(|v| v.event_type != "audit.checkpoint")
        .cloned()
        .collect();
    for (i, v) in stripped.iter_mut().enumerate() {
        v.seq = i as i64 + 1;
    }
    stripped[edited - 1].actor = "operator:nobody".into();
    rechain(&mut stripped, 0);
    let report = offline(&jsonl(&stripped), &keys);
    assert!(
        report.valid,
        "without anchors a stripped, rewritten log looks fine"
    );
    let report = anchored(&jsonl(&stripped));
    assert!(!report.valid);
    assert!(
        report.problem.unwrap().contains("anchored"),
        "caught by the anchors"
    );
    let cut = jsonl(&views[..next_checkpoint - 1]);
    let report = anchored(&cut);
    assert!(!report.valid);
    assert!(report.problem.unwrap().contains("removed from its end"));

    // Offline, a checkpoint signed with a key that is not the tenant's.
    let report = offline(&text, &[("other".to_owned(), vec![7u8; 32])].into());
    assert!(!report.valid);
    assert!(report.problem.unwrap().contains("no public key"));

    // Online: the database rewritten the same way, triggers dropped first.
    let db = install.db_url.clone();
    let mut conn = sqlx::SqliteConnection::connect(&db).await.unwrap();
    sqlx::query("DROP TRIGGER audit_events_no_update")
        .execute(&mut conn)
        .await
        .unwrap();
    for view in rewritten.iter().skip(edited) {
        sqlx::query("UPDATE audit_events SET actor = $1, prev_hash = $2, hash = $3 WHERE id = $4")
            .bind(&view.actor)
            .bind(hex::decode(&view.prev_hash).unwrap())
            .bind(hex::decode(&view.hash).unwrap())
            .bind(&view.id)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let last = rewritten.last().unwrap();
    sqlx::query("UPDATE tenants SET audit_head = $1 WHERE id = $2")
        .bind(hex::decode(&last.hash).unwrap())
        .bind(&tenant.id)
        .execute(&mut conn)
        .await
        .unwrap();
    let report = cp
        .ok(Method::GET, "/v1/audit/verify", &tenant.admin, None)
        .await;
    assert_eq!(report["valid"], false, "{report}");
    assert_eq!(
        report["first_bad_seq"],
        json!(views[next_checkpoint].seq),
        "{report}"
    );
    assert!(report["problem"].as_str().unwrap().contains("head"));
}
