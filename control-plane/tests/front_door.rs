//! Connection hygiene of the control plane's TLS listener, over real sockets: slowloris
//! connections (never finishing the handshake, or stalling inside a request head) neither block
//! a legitimate call nor stay open; idle connections are closed; connections are capped per
//! client address; oversized request heads are refused; metric labels come from closed sets.
//!
//! The timeouts are set to 2 s here so the test can watch the server close what it should; the
//! 40 s bounds below are liveness bounds (the server does close them), not performance checks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod served;
mod support;

use std::time::Duration;

use agent_secret_control_plane::config::ServerConfig;
use served::{ip, roomy_server, Served};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Generous upper bound for the server to close a connection it should close.
const CLOSE_BOUND: Duration = Duration::from_secs(40);

/// Reads until the server closes (EOF or reset); `false` if it is still open after `bound`.
async fn closed_within<S: AsyncRead + Unpin>(mut stream: S, bound: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(bound, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

async fn admin_lists_agents(served: &Served, from: &str) -> reqwest::StatusCode {
    served
        .client_from(from)
        .get(served.url("/v1/agents"))
        .bearer_auth(served.admin())
        .send()
        .await
        .expect("the legitimate call got an answer")
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_connections_do_not_block_a_legitimate_call_and_are_closed() {
    let served = Served::builder()
        .server(ServerConfig {
            tls_handshake_timeout_seconds: 2,
            header_read_timeout_seconds: 2,
            // Longer than the header timeout, so each stalled kind closes for its own reason.
            idle_timeout_seconds: 30,
            ..roomy_server()
        })
        .tenant("acme")
        .start()
        .await;

    // 150 sockets that never start the TLS handshake.
    let mut raw = Vec::new();
    for _ in 0..150 {
        raw.push(served.tcp_from("127.0.0.1").await);
    }
    // 150 TLS connections that send part of a request head and stall.
    let mut partial = Vec::new();
    for _ in 0..150 {
        let mut tls = served.tls_from("127.0.0.1").await.expect("handshake");
        tls.write_all(b"GET /v1/agents HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
            .await
            .unwrap();
        tls.flush().await.unwrap();
        partial.push(tls);
    }

    // Meanwhile, from the same address, a real API call is served.
    assert_eq!(
        admin_lists_agents(&served, "127.0.0.1").await,
        200,
        "a legitimate call was blocked by 300 stalled connections"
    );

    let raw_closed =
        futures::future::join_all(raw.into_iter().map(|s| closed_within(s, CLOSE_BOUND)));
    let partial_closed =
        futures::future::join_all(partial.into_iter().map(|s| closed_within(s, CLOSE_BOUND)));
    let (raw_closed, partial_closed) = tokio::join!(raw_closed, partial_closed);
    assert!(
        raw_closed.iter().all(|c| *c),
        "{} connections that never finished the TLS handshake stayed open",
        raw_closed.iter().filter(|c| !**c).count()
    );
    assert!(
        partial_closed.iter().all(|c| *c),
        "{} connections stalled inside a request head stayed open",
        partial_closed.iter().filter(|c| !**c).count()
    );
    assert!(
        served.metric("connections_timed_out_total{reason=\"tls_handshake_timeout\"}") >= 150.0
    );
    assert!(served.metric("connections_timed_out_total{reason=\"read_timeout\"}") >= 150.0);
    // Nothing is left counted against the address once they are gone.
    for _ in 0..100 {
        if served.app.limits.connections.open_from(ip("127.0.0.1")) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(served.app.limits.connections.open_from(ip("127.0.0.1")), 0);
    served.stop().await;
}

#[tokio::test]
async fn a_connection_with_no_request_is_closed_when_idle() {
    let served = Served::builder()
        .server(ServerConfig {
            idle_timeout_seconds: 2,
            ..roomy_server()
        })
        .tenant("acme")
        .start()
        .await;
    // Handshake done, then silence: neither a request head nor an HTTP/2 preface.
    let silent = served.tls_from("127.0.0.1").await.expect("handshake");
    assert!(
        closed_within(silent, CLOSE_BOUND).await,
        "an idle connection stayed open"
    );
    assert!(served.metric("connections_timed_out_total{reason=\"idle_timeout\"}") >= 1.0);
    served.stop().await;
}

#[tokio::test]
async fn connections_are_capped_per_client_address_and_others_are_served() {
    let served = Served::builder()
        .server(ServerConfig {
            max_connections_per_ip: 5,
            ..roomy_server()
        })
        .tenant("acme")
        .start()
        .await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(served.tls_from("127.0.0.2").await.expect("within the cap"));
    }
    let refused = served.tls_from("127.0.0.2").await;
    assert!(
        refused.is_err(),
        "a sixth connection from one address finished its handshake"
    );
    assert!(served.metric("connections_refused_total{reason=\"per_ip\"}") >= 1.0);

    // Another address is not affected.
    assert_eq!(admin_lists_agents(&served, "127.0.0.3").await, 200);

    // A closed connection gives its slot back.
    drop(held.pop());
    for _ in 0..100 {
        if served.app.limits.connections.open_from(ip("127.0.0.2")) < 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    served
        .tls_from("127.0.0.2")
        .await
        .expect("a slot freed by a closed connection is reused");
    drop(held);
    served.stop().await;
}

#[tokio::test]
async fn an_oversized_request_head_is_refused() {
    let served = Served::builder()
        .server(ServerConfig {
            max_header_bytes: 8192,
            ..roomy_server()
        })
        .tenant("acme")
        .start()
        .await;
    let big = "a".repeat(20_000);
    let h1 = served
        .client_builder()
        .http1_only()
        .build()
        .unwrap()
        .get(served.url("/healthz"))
        .header("x-padding", &big)
        .send()
        .await
        .unwrap();
    assert_eq!(h1.status(), 431, "HTTP/1.1 head above max_header_bytes");

    // Over HTTP/2 the header list is bounded too: the request is not served.
    let h2 = served
        .client_builder()
        .http2_prior_knowledge()
        .build()
        .unwrap()
        .get(served.url("/healthz"))
        .header("x-padding", &big)
        .send()
        .await;
    if let Ok(response) = h2 {
        assert_ne!(response.status(), 200, "HTTP/2 header list above the limit");
    }
    // A normal request still works.
    let ok = served
        .client_from("127.0.0.1")
        .get(served.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    served.stop().await;
}

#[tokio::test]
async fn metrics_label_unknown_methods_as_other_never_the_raw_method() {
    let served = Served::builder()
        .server(roomy_server())
        .tenant("acme")
        .start()
        .await;
    let client = served.client_from("127.0.0.1");
    let foobar = reqwest::Method::from_bytes(b"FOOBAR").unwrap();
    let r = client
        .request(foobar, served.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let r = client.get(served.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    let text = client
        .get(served.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"http_requests_total{method="OTHER",route="/healthz",status="405"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"http_requests_total{method="GET",route="/healthz",status="200"} 1"#),
        "{text}"
    );
    assert!(!text.contains("FOOBAR"), "a raw method became a label");
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_request_body_is_abandoned_and_its_connection_freed() {
    let served = Served::builder()
        .server(ServerConfig {
            request_body_timeout_seconds: 2,
            // Longer than the body timeout: the idle timer does not run while a request is in
            // flight, so only the body timeout can end this one.
            idle_timeout_seconds: 60,
            ..roomy_server()
        })
        .tenant("acme")
        .start()
        .await;
    let mut tls = served.tls_from("127.0.0.1").await.expect("handshake");
    let head = format!(
        "POST /v1/agents HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"name\":",
        served.admin()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    // The body never completes; the server must answer or close on its own. (40 s is a
    // liveness bound for a 2 s timeout, not a performance assertion.)
    let mut answer = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(40), async {
        let mut buf = [0u8; 1024];
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
            if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                return;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "a trickled body held its request open");
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.is_empty() || !text.starts_with("HTTP/1.1 2"),
        "an incomplete body was not served: {text}"
    );
    // Nothing was created from half a body.
    assert_eq!(admin_lists_agents(&served, "127.0.0.1").await, 200);
    served.stop().await;
}
