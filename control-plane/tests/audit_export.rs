//! `GET /v1/audit` over real HTTPS: JSON pages linked by cursor, JSON Lines and CSV streamed
//! past many store pages, the actor / path prefix / type filters, and CSV that any CSV reader
//! reads back exactly (commas, quotes, newlines), with formula-like cells neutralised.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod served;
mod support;

use agent_secret_core::api::{SidecarAuditBatch, SidecarAuditEvent};
use reqwest::StatusCode;
use serde_json::Value;
use served::{roomy_server, Served};

/// What an agent may put in its User-Agent. (Control characters such as newlines never reach
/// the log: ingestion drops them. The CSV writer's own round trip of newlines is a unit test
/// in `api/audit_export.rs`.)
const NASTY: [&str; 5] = [
    "comma, inside",
    "a \"quoted\" word",
    "semi;colon | pipe",
    "=HYPERLINK(\"http://x\",\"y\")",
    "-2+3",
];

fn event(token: usize, path: &str, user_agent: &str) -> SidecarAuditEvent {
    SidecarAuditEvent {
        kind: Default::default(),
        token_id: Some(format!("0190c0de-0000-7000-8000-{token:012}")),
        client_ip: Some("10.0.0.1".into()),
        user_agent: Some(user_agent.into()),
        path: Some(path.into()),
        destination_host: Some("api.example.com".into()),
        success: true,
        reason: None,
        occurred_at: chrono::Utc::now(),
    }
}

async fn report(served: &Served, sidecar: &str, events: Vec<SidecarAuditEvent>) {
    let r = served
        .client_from("127.0.0.1")
        .post(served.url("/v1/sidecar/audit"))
        .bearer_auth(sidecar)
        .json(&SidecarAuditBatch { events })
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

async fn get(served: &Served, query: &str) -> (StatusCode, String) {
    let r = served
        .client_from("127.0.0.1")
        .get(served.url(&format!("/v1/audit?{query}")))
        .bearer_auth(served.admin())
        .send()
        .await
        .unwrap();
    (r.status(), r.text().await.unwrap())
}

async fn jsonl(served: &Served, query: &str) -> Vec<Value> {
    let (status, body) = get(served, &format!("format=jsonl&{query}")).await;
    assert_eq!(status, 200, "{body}");
    body.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn exports_stream_page_by_page_filter_and_link_json_pages_by_cursor() {
    let served = Served::builder()
        .server(roomy_server())
        .tenant("acme")
        .start()
        .await;
    let (_, sidecar) = served.sidecar("host-1").await;
    // 2,600 reads (in batches under the 64 KiB body limit) over three store pages: tokens 0..3, paths under prod/ and staging/, and a
    // path holding LIKE's wildcards.
    for batch in 0..13 {
        let events = (0..200)
            .map(|i| {
                let n = batch * 200 + i;
                let path = match n % 3 {
                    0 => "prod/api/key".to_owned(),
                    1 => "staging/api/key".to_owned(),
                    _ => "pro%_d/x".to_owned(),
                };
                event(n % 4, &path, &format!("agent/{n}"))
            })
            .collect();
        report(&served, &sidecar, events).await;
    }

    let all = jsonl(&served, "type=secret.read").await;
    assert_eq!(all.len(), 2600);
    let seqs: Vec<i64> = all.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "chain order, no repeats"
    );
    let ts = all[0]["timestamp"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(ts).is_ok() && ts.ends_with('Z') && ts.len() == 27,
        "RFC 3339 with microseconds: {ts}"
    );

    let prod = jsonl(&served, "type=secret.read&path_prefix=prod/").await;
    assert_eq!(prod.len(), 867);
    assert!(prod.iter().all(|e| e["path"] == "prod/api/key"));
    let wild = jsonl(&served, "path_prefix=pro%25_").await;
    assert_eq!(wild.len(), 866, "% and _ match only themselves");
    let actor = "token:0190c0de-0000-7000-8000-000000000002";
    let one = jsonl(&served, &format!("actor={actor}")).await;
    assert_eq!(one.len(), 650);
    assert!(one.iter().all(|e| e["actor"] == actor));
    let limited = jsonl(&served, "type=secret.read&limit=1500").await;
    assert_eq!(limited.len(), 1500);

    // JSON: pages linked by the id of their last event.
    let mut paged = Vec::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let (status, body) = get(
            &served,
            &format!("type=secret.read&limit=1000&cursor={cursor}"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let page: Value = serde_json::from_str(&body).unwrap();
        paged.extend(page["events"].as_array().unwrap().iter().cloned());
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(paged, all);
    let (status, body) = get(&served, "cursor=0190c0de-0000-7000-8000-000000000009").await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = get(&served, "format=xml").await;
    assert_eq!(status, 400);
    served.stop().await;
}

#[tokio::test]
async fn csv_reads_back_exactly_and_formulas_are_neutralised() {
    let served = Served::builder()
        .server(roomy_server())
        .tenant("acme")
        .start()
        .await;
    let (_, sidecar) = served.sidecar("host-1").await;
    let events = NASTY
        .iter()
        .enumerate()
        .map(|(i, ua)| event(i, "prod/api/key", ua))
        .collect();
    report(&served, &sidecar, events).await;

    let (status, csv) = get(&served, "format=csv&type=secret.read").await;
    assert_eq!(status, 200);
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let headers = reader.headers().unwrap().clone();
    assert_eq!(headers.len(), 14);
    let ua = headers.iter().position(|h| h == "user_agent").unwrap();
    let cells: Vec<String> = reader
        .records()
        .map(|r| r.unwrap()[ua].to_owned())
        .collect();
    let shown: Vec<String> = NASTY
        .iter()
        .map(|raw| {
            if raw.starts_with(['=', '-']) {
                format!("'{raw}")
            } else {
                (*raw).to_owned()
            }
        })
        .collect();
    assert_eq!(cells, shown);
    // JSON Lines carries the values unchanged.
    let lines = jsonl(&served, "type=secret.read").await;
    let raw: Vec<&str> = lines
        .iter()
        .map(|e| e["user_agent"].as_str().unwrap())
        .collect();
    assert_eq!(raw, NASTY);

    // An empty export is still a CSV with its header.
    let (_, empty) = get(&served, "format=csv&type=kms.rotated").await;
    let mut reader = csv::Reader::from_reader(empty.as_bytes());
    assert_eq!(reader.headers().unwrap().len(), 14);
    assert_eq!(reader.records().count(), 0);
    served.stop().await;
}
