//! The audit log pushed to SIEMs over real HTTP: a fake Splunk HEC and a fake Datadog intake
//! receive every event, identified by its id, in their own formats and with their own
//! credentials — across a receiver's outage and a control plane killed and started again (the
//! new process resumes from the stored cursor; nothing is lost).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_secret_control_plane::service::siem::{SinkKind, SinkSettings};
use agent_secret_control_plane::service::Policy;
use agent_secret_core::secret::SecretString;
use agent_secret_testkit::control_plane::{ControlPlane, Install, Tenant};
use agent_secret_testkit::eventually;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use reqwest::Method;
use serde_json::Value;

/// A receiver: the ids it accepted (with repeats), whether it is down, what it refused.
#[derive(Default)]
struct Receiver {
    ids: Mutex<Vec<String>>,
    down: AtomicBool,
    refused_auth: AtomicUsize,
}

impl Receiver {
    fn unique(&self) -> BTreeSet<String> {
        self.ids.lock().unwrap().iter().cloned().collect()
    }
}

/// Serves `receiver` at `/intake`: `header` must carry `expected`; `parse` takes the ids out
/// of a body.
async fn serve(
    receiver: Arc<Receiver>,
    header: &'static str,
    expected: &'static str,
    parse: fn(&[u8]) -> Vec<String>,
) -> String {
    let app = axum::Router::new().route(
        "/intake",
        post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let receiver = receiver.clone();
            async move {
                if receiver.down.load(Ordering::SeqCst) {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                if headers.get(header).and_then(|v| v.to_str().ok()) != Some(expected) {
                    receiver.refused_auth.fetch_add(1, Ordering::SeqCst);
                    return StatusCode::UNAUTHORIZED;
                }
                receiver.ids.lock().unwrap().extend(parse(&body));
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/intake")
}

/// Splunk HEC: newline-separated `{"time", "source", "sourcetype", "event": {...}}`.
fn splunk_ids(body: &[u8]) -> Vec<String> {
    serde_json::Deserializer::from_slice(body)
        .into_iter::<Value>()
        .map(|v| {
            let v = v.unwrap();
            assert_eq!(v["sourcetype"], "agent-secret-store:audit");
            assert!(v["time"].as_f64().unwrap() > 1.7e9, "{v}");
            v["event"]["id"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// Datadog: a JSON array of logs carrying the event's fields.
fn datadog_ids(body: &[u8]) -> Vec<String> {
    let logs: Vec<Value> = serde_json::from_slice(body).unwrap();
    logs.iter()
        .map(|l| {
            assert_eq!(l["ddsource"], "agent-secret-store");
            assert!(l["message"].as_str().unwrap().contains(" by "), "{l}");
            l["id"].as_str().unwrap().to_owned()
        })
        .collect()
}

fn sink(name: &str, kind: SinkKind, url: &str, token: &str) -> SinkSettings {
    SinkSettings {
        name: name.into(),
        kind,
        url: url.into(),
        token: Some(SecretString::new(token.to_owned())),
        ca_pem: None,
        batch_size: 7,
        flush_interval: Duration::from_millis(50),
    }
}

async fn all_ids(cp: &ControlPlane, tenant: &Tenant) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let mut cursor = String::new();
    loop {
        let page = cp
            .ok(
                Method::GET,
                &format!("/v1/audit?limit=1000&cursor={cursor}"),
                &tenant.admin,
                None,
            )
            .await;
        for e in page["events"].as_array().unwrap() {
            ids.insert(e["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => return ids,
        }
    }
}

async fn writes(cp: &ControlPlane, tenant: &Tenant, round: &str, n: usize) {
    for i in 0..n {
        tenant
            .put_secret(
                cp,
                &format!("prod/{round}-{i}"),
                "sk-siem-0123456789",
                &["api.example.com"],
            )
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splunk_and_datadog_receive_every_event_across_an_outage_and_a_restart() {
    let splunk = Arc::new(Receiver::default());
    let datadog = Arc::new(Receiver::default());
    let splunk_url = serve(
        splunk.clone(),
        "authorization",
        "Splunk hec-token-1",
        splunk_ids,
    )
    .await;
    let datadog_url = serve(datadog.clone(), "dd-api-key", "dd-key-1", datadog_ids).await;
    let policy = || Policy {
        audit_sinks: vec![
            sink("splunk", SinkKind::SplunkHec, &splunk_url, "hec-token-1"),
            sink("datadog", SinkKind::Datadog, &datadog_url, "dd-key-1"),
        ],
        ..Policy::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let install = Install::new(dir.path(), None).await;
    let mut cp = ControlPlane::serve(&install, "127.0.0.1:0".parse().unwrap(), policy()).await;
    let tenant = Tenant::create(&cp, "acme").await;

    writes(&cp, &tenant, "first", 10).await;
    let written = all_ids(&cp, &tenant).await;
    eventually(
        "both receive the first events",
        Duration::from_secs(30),
        || async { written.is_subset(&splunk.unique()) && written.is_subset(&datadog.unique()) },
    )
    .await;

    // Splunk goes down; events keep coming; the control plane is killed while they wait.
    splunk.down.store(true, Ordering::SeqCst);
    writes(&cp, &tenant, "outage", 10).await;
    let written = all_ids(&cp, &tenant).await;
    eventually("datadog keeps up", Duration::from_secs(30), || async {
        written.is_subset(&datadog.unique())
    })
    .await;
    assert!(!written.is_subset(&splunk.unique()), "splunk was down");
    cp.stop().await;
    splunk.down.store(false, Ordering::SeqCst);

    // A new process on the same database resumes from the stored cursors.
    let cp = ControlPlane::serve(&install, "127.0.0.1:0".parse().unwrap(), policy()).await;
    writes(&cp, &tenant, "after", 5).await;
    let written = all_ids(&cp, &tenant).await;
    eventually("both have every event", Duration::from_secs(30), || async {
        splunk.unique() == written && datadog.unique() == written
    })
    .await;
    assert_eq!(splunk.refused_auth.load(Ordering::SeqCst), 0);
    assert_eq!(datadog.refused_auth.load(Ordering::SeqCst), 0);
    let metrics = cp.metrics_text().await;
    assert!(
        metrics.contains(
            "agent_secret_store_audit_sink_events_total{outcome=\"sent\",sink=\"splunk\"}"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("agent_secret_store_audit_sink_lag_events{sink=\"datadog\"}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_refusing_for_good_dead_letters_and_the_stream_goes_on() {
    let jsonl = Arc::new(Receiver::default());
    let url = serve(jsonl.clone(), "authorization", "Bearer right", |body| {
        String::from_utf8_lossy(body)
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    })
    .await;
    let policy = Policy {
        audit_sinks: vec![sink("lines", SinkKind::JsonLines, &url, "wrong")],
        ..Policy::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let install = Install::new(dir.path(), None).await;
    let cp = ControlPlane::serve(&install, "127.0.0.1:0".parse().unwrap(), policy).await;
    let tenant = Tenant::create(&cp, "acme").await;
    writes(&cp, &tenant, "x", 3).await;
    let metric = || async {
        let text = cp.metrics_text().await;
        text.lines()
            .find(|l| l.starts_with("agent_secret_store_audit_sink_events_total{outcome=\"dead_lettered\",sink=\"lines\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    eventually(
        "the refused events are dead-lettered",
        Duration::from_secs(30),
        || async { metric().await >= 4 },
    )
    .await;
    assert!(
        jsonl.unique().is_empty(),
        "nothing was accepted with a wrong token"
    );
}

/// A syslog receiver over TLS: the ids of the octet-counted RFC 5424 frames it read, and the
/// messages themselves.
async fn syslog_receiver(tls: rustls::ServerConfig) -> (u16, Arc<Mutex<Vec<String>>>) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let messages = Arc::new(Mutex::new(Vec::new()));
    let seen = messages.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                while let Ok(n) = tls.read(&mut chunk).await {
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    // Take every complete `LEN SP MSG` frame off the front.
                    while let Some(space) = buf.iter().position(|b| *b == b' ') {
                        let len: usize =
                            std::str::from_utf8(&buf[..space]).unwrap().parse().unwrap();
                        if buf.len() < space + 1 + len {
                            break;
                        }
                        let msg =
                            String::from_utf8(buf[space + 1..space + 1 + len].to_vec()).unwrap();
                        buf.drain(..space + 1 + len);
                        seen.lock().unwrap().push(msg);
                    }
                }
            });
        }
    });
    (port, messages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_over_tls_receives_rfc5424_frames_of_every_event() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = agent_secret_testkit::pki::TestCa::new();
    let (port, messages) = syslog_receiver(ca.server_config(&["localhost"])).await;
    let mut syslog = sink(
        "syslog",
        SinkKind::SyslogTls,
        &format!("tls://localhost:{port}"),
        "unused",
    );
    syslog.token = None;
    syslog.ca_pem = Some(ca.pem.clone().into_bytes());
    let policy = Policy {
        audit_sinks: vec![syslog],
        ..Policy::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let install = Install::new(dir.path(), None).await;
    let cp = ControlPlane::serve(&install, "127.0.0.1:0".parse().unwrap(), policy).await;
    let tenant = Tenant::create(&cp, "acme").await;
    writes(&cp, &tenant, "s", 9).await;
    let written = all_ids(&cp, &tenant).await;
    let id_of = |msg: &String| {
        let start = msg.find(" id=\"").unwrap() + 5;
        msg[start..start + 36].to_owned()
    };
    eventually(
        "every event reaches syslog",
        Duration::from_secs(30),
        || async {
            let got: BTreeSet<String> = messages.lock().unwrap().iter().map(id_of).collect();
            got == written
        },
    )
    .await;
    let all = messages.lock().unwrap().clone();
    let write = all.iter().find(|m| m.contains(" secret.write ")).unwrap();
    assert!(
        write.starts_with("<110>1 "),
        "facility 13, informational: {write}"
    );
    assert!(write.contains("[agentsecretstore@32473 id=\""), "{write}");
    let json = &write[write.find("] {").unwrap() + 2..];
    let event: Value = serde_json::from_str(json).unwrap();
    assert_eq!(event["type"], "secret.write");
}
