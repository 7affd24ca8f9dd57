//! Attacks on the sidecar from the agent's side and from a hostile allowed upstream, on real
//! sockets: request smuggling through framing headers, oversized requests, floods past the
//! rate limits and the connection cap, trailers echoing a secret, and logs at `RUST_LOG=trace`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use agent_secret_proxy::RunningSidecar;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Headers pingora itself must understand to frame a request body.
fn framed_by_pingora(name: &str) -> bool {
    name.eq_ignore_ascii_case("transfer-encoding") || name.eq_ignore_ascii_case("content-length")
}

/// One keep-alive connection to the sidecar, for requests that must share the pooled
/// upstream connection behind it.
struct Agent {
    stream: tokio::net::TcpStream,
}

impl Agent {
    async fn connect(sidecar: &RunningSidecar) -> Agent {
        Agent {
            stream: tokio::net::TcpStream::connect(sidecar.proxy_addr())
                .await
                .unwrap(),
        }
    }

    /// Send `head` (ending in CRLF CRLF) and read one response: head plus a Content-Length or
    /// chunked body.
    async fn exchange(&mut self, head: &str) -> RawResponse {
        self.stream.write_all(head.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let n = tokio::time::timeout(DEADLINE, self.stream.read(&mut chunk))
                .await
                .expect("the sidecar answers")
                .unwrap();
            buf.extend_from_slice(&chunk[..n]);
            if n == 0 || response_complete(&buf) {
                break;
            }
        }
        parse_response(&buf)
    }
}

fn response_complete(buf: &[u8]) -> bool {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let body = &buf[end + 4..];
    if let Some(len) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        return body.len() >= len;
    }
    if head.contains("transfer-encoding: chunked") {
        return body.ends_with(b"0\r\n\r\n");
    }
    false
}

fn request_head(target: &str, token: &IssuedToken, extra: &[(&str, &str)]) -> String {
    let mut head = format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nProxy-Authorization: Bearer {token}\r\nAuthorization: {PLACEHOLDER}\r\n",
        host = target
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap(),
        token = token.token,
    );
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placeholders_in_framing_headers_are_refused_before_anything_is_dialled() {
    let w = World::new().await;
    let token = w.secret_and_token().await;
    w.cp.put_secret(
        "prod/framing",
        "chunked",
        &[&format!("127.0.0.1:{}", w.http.addr.port())],
    )
    .await;
    let sidecar = w.sidecar_with("").await;
    for (name, value) in [
        ("Transfer-Encoding", "{{secret:prod/framing}}"),
        ("Content-Length", "{{secret:prod/framing}}"),
        ("Connection", "{{secret:prod/framing}}"),
        ("Keep-Alive", "{{secret:prod/framing}}"),
        ("TE", "{{secret:prod/framing}}"),
        ("Trailer", "{{secret:prod/framing}}"),
        ("Upgrade", "{{secret:prod/framing}}"),
        ("Proxy-Foo", "{{secret:prod/framing}}"),
    ] {
        let mut headers = vec![bearer(&token)];
        headers.push((name.into(), value.into()));
        let resp = get(sidecar.proxy_addr(), &w.http_url("/echo"), &headers).await;
        assert_eq!(resp.status, 400, "{name}: {}", resp.text());
        if framed_by_pingora(name) {
            // pingora's HTTP/1 parser refuses a request it cannot frame (a Content-Length that
            // is not a number, a Transfer-Encoding other than chunked) with a bare 400 before
            // any filter of ours runs: refused all the same, and never dialled.
            continue;
        }
        assert_eq!(
            resp.code(),
            "invalid_placeholder",
            "a placeholder in {name} must be refused: {}",
            resp.text()
        );
    }
    // A header the request's Connection field names is hop-by-hop as well.
    let headers = vec![
        bearer(&token),
        ("Connection".into(), "X-Hop".into()),
        ("X-Hop".into(), "{{secret:prod/framing}}".into()),
    ];
    let resp = get(sidecar.proxy_addr(), &w.http_url("/echo"), &headers).await;
    assert_eq!(resp.code(), "invalid_placeholder", "{}", resp.text());
    assert!(w.http.requests().is_empty(), "nothing reached the upstream");
    assert_eq!(w.cp.resolves(), 0, "nothing was resolved");
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smuggling_attempt_cannot_desynchronise_the_pooled_upstream_connection() {
    let w = World::new().await;
    let token = w.secret_and_token().await;
    // A value that would turn the body of the forwarded request into a second request if it
    // ever framed it.
    w.cp.put_secret(
        "prod/te",
        "chunked",
        &[&format!("127.0.0.1:{}", w.http.addr.port())],
    )
    .await;
    let sidecar = w.sidecar_with("").await;
    let mut agent = Agent::connect(&sidecar).await;

    let first = agent
        .exchange(&request_head(&w.http_url("/first"), &token, &[]))
        .await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.json()["target"], "/first");

    // Smuggling: a placeholder where the framing or the hop's behaviour is decided, and a body
    // holding a second request that a desynchronised upstream would answer next.
    let smuggled = "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    for (framing, pingora_refuses) in [
        ("Transfer-Encoding: {{secret:prod/te}}", true),
        ("Connection: Upgrade\r\nUpgrade: {{secret:prod/te}}", false),
        (
            "Connection: X-Framing\r\nX-Framing: {{secret:prod/te}}",
            false,
        ),
        ("TE: {{secret:prod/te}}", false),
    ] {
        let attack = format!(
            "POST {url} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nProxy-Authorization: Bearer {token}\r\n{framing}\r\nContent-Length: {len}\r\n\r\n{smuggled}",
            url = w.http_url("/attack"),
            port = w.http.addr.port(),
            token = token.token,
            len = smuggled.len(),
        );
        let refused = send_raw(sidecar.proxy_addr(), attack.as_bytes()).await;
        assert_eq!(refused.status, 400, "{framing}: {}", refused.text());
        if !pingora_refuses {
            assert_eq!(refused.code(), "invalid_placeholder", "{framing}");
        }
    }

    // The next request on the pool gets its own response, not one meant for a smuggled request.
    let mut again = Agent::connect(&sidecar).await;
    let second = again
        .exchange(&request_head(&w.http_url("/second"), &token, &[]))
        .await;
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(second.json()["target"], "/second");
    let targets: Vec<String> = w.http.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(
        targets,
        vec!["/first", "/second"],
        "the upstream saw only the two real requests"
    );
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_placeholders_or_an_oversized_header_is_400_with_a_clear_message() {
    let w = World::new().await;
    let token = w.secret_and_token().await;
    let sidecar = w
        .sidecar_with("\n[limits]\nmax_placeholders_per_request = 3\nmax_placeholders_per_header = 2\nmax_header_value_bytes = 64\n")
        .await;
    let mut headers = vec![bearer(&token)];
    for i in 0..4 {
        headers.push((format!("X-Key-{i}"), "{{secret:prod/api/key}}".into()));
    }
    let resp = get(sidecar.proxy_addr(), &w.http_url("/echo"), &headers).await;
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert_eq!(resp.code(), "invalid_placeholder");
    assert!(
        resp.text().contains("more than 3 placeholders"),
        "{}",
        resp.text()
    );

    let headers = vec![
        bearer(&token),
        (
            "X-Key".into(),
            "{{secret:prod/api/key}}{{secret:prod/api/key}}{{secret:prod/api/key}}".into(),
        ),
    ];
    let resp = get(sidecar.proxy_addr(), &w.http_url("/echo"), &headers).await;
    assert!(
        resp.text().contains("more than 2 placeholders"),
        "{}",
        resp.text()
    );

    let padding = "p".repeat(60);
    let headers = vec![
        bearer(&token),
        (
            "X-Key".into(),
            format!("{padding} {{{{secret:prod/api/key}}}}"),
        ),
    ];
    let resp = get(sidecar.proxy_addr(), &w.http_url("/echo"), &headers).await;
    assert_eq!(resp.status, 400);
    assert!(
        resp.text().contains("longer than 64 bytes"),
        "{}",
        resp.text()
    );
    assert!(!resp.text().contains(SECRET));
    assert!(w.http.requests().is_empty());
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_past_its_rate_limit_gets_429_with_retry_after_and_one_audit_event() {
    let w = World::new().await;
    let token = w.secret_and_token().await;
    let other = w.cp.issue_token_with(&["secrets:read:prod/**"], |t| {
        t.agent_id = uuid::Uuid::new_v4().to_string();
    });
    let sidecar = w
        .sidecar_with("\n[rate_limits]\ntoken_requests_per_second = 1\ntoken_requests_burst = 2\n")
        .await;
    for _ in 0..2 {
        let resp = get(
            sidecar.proxy_addr(),
            &w.http_url("/echo"),
            &with_placeholder(&token),
        )
        .await;
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    let mut retry_after = Vec::new();
    for _ in 0..3 {
        let resp = get(
            sidecar.proxy_addr(),
            &w.http_url("/echo"),
            &with_placeholder(&token),
        )
        .await;
        assert_eq!(
            (resp.status, resp.code().as_str()),
            (429, "rate_limited"),
            "{}",
            resp.text()
        );
        retry_after.push(resp.header("retry-after").unwrap().parse::<u64>().unwrap());
    }
    assert!(retry_after.iter().all(|s| *s >= 1), "{retry_after:?}");
    assert_eq!(w.http.requests().len(), 2, "refused requests never leave");
    // Another token is not affected by this one's flood.
    let resp = get(
        sidecar.proxy_addr(),
        &w.http_url("/echo"),
        &with_placeholder(&other),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        sidecar
            .metrics()
            .rate_limited
            .with_label_values(&["token_requests"])
            .get(),
        3
    );
    // The first trip is audited once, the repeats are only counted.
    eventually("one rate_limited audit event", DEADLINE, async || {
        w.cp.audits()
            .iter()
            .filter(|e| e.reason.as_deref() == Some("rate_limited"))
            .count()
            == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let limited: Vec<_> =
        w.cp.audits()
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("rate_limited"))
            .collect();
    assert!(limited.len() == 1, "{limited:?}");
    assert_eq!(
        limited[0].token_id.as_deref(),
        Some(token.id.hyphenated().to_string().as_str())
    );
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_past_its_injection_limit_is_refused_across_its_tokens() {
    let w = World::new().await;
    w.secret_and_token().await;
    let agent = uuid::Uuid::new_v4().to_string();
    let tokens: Vec<IssuedToken> = (0..3)
        .map(|_| {
            let agent = agent.clone();
            w.cp.issue_token_with(&["secrets:read:prod/**"], move |t| t.agent_id = agent)
        })
        .collect();
    let sidecar = w
        .sidecar_with(
            "\n[rate_limits]\nagent_injections_per_second = 1\nagent_injections_burst = 2\n",
        )
        .await;
    let mut statuses = Vec::new();
    for token in &tokens {
        let resp = get(
            sidecar.proxy_addr(),
            &w.http_url("/echo"),
            &with_placeholder(token),
        )
        .await;
        statuses.push((resp.status, resp.code()));
    }
    assert_eq!(statuses[0].0, 200);
    assert_eq!(statuses[1].0, 200);
    assert_eq!(statuses[2], (429, "rate_limited".to_owned()));
    assert_eq!(
        sidecar
            .metrics()
            .rate_limited
            .with_label_values(&["agent_injections"])
            .get(),
        1
    );
    sidecar.stop().await;
}

/// An HTTP/1.1 upstream that answers every request with a chunked body and a trailer echoing
/// the Authorization it received.
async fn trailer_upstream() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                let auth = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .starts_with("authorization:")
                            .then(|| l["authorization:".len()..].trim().to_owned())
                    })
                    .unwrap_or_default();
                let response = format!(
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Echo\r\nConnection: close\r\n\r\n2\r\nok\r\n0\r\nX-Echo: {auth}\r\n\r\n"
                );
                let _ = tcp.write_all(response.as_bytes()).await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_echoed_in_a_response_trailer_never_reaches_the_agent() {
    let w = World::new().await;
    let upstream = trailer_upstream().await;
    w.cp.put_secret(PATH, SECRET, &[&format!("127.0.0.1:{}", upstream.port())])
        .await;
    let token = w.cp.issue_token(&["secrets:read:prod/**"]);
    let sidecar = w.sidecar_with(&local_host_rule(upstream.port())).await;
    let url = format!("http://127.0.0.1:{}/t", upstream.port());
    let head = format!(
        "GET {url} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nProxy-Authorization: Bearer {token}\r\nAuthorization: {PLACEHOLDER}\r\nTE: trailers\r\nConnection: close\r\n\r\n",
        port = upstream.port(),
        token = token.token,
    );
    let mut tcp = tokio::net::TcpStream::connect(sidecar.proxy_addr())
        .await
        .unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(DEADLINE, tcp.read_to_end(&mut raw))
        .await
        .expect("the sidecar finishes the response")
        .unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        !text.contains(SECRET),
        "the secret reached the agent: {text}"
    );
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logging_never_prints_the_token_or_the_injected_value() {
    let w = World::new().await;
    let token = w.secret_and_token().await;
    let config = format!(
        r#"
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shutdown_grace_seconds = 1
[control_plane]
url = "{url}"
ca_file = "{ca}"
[kms]
keyring = "{keyring}"
[audit]
spool_path = "{spool}"
flush_interval_ms = 50
{hosts}
"#,
        url = w.cp.url,
        ca = w.ca_file.display(),
        keyring = w.cp.keyring.display(),
        spool = w.dir.path().join("trace-spool.jsonl").display(),
        hosts = w.hosts(),
    );
    let config_file = w.dir.path().join("proxy.toml");
    std::fs::write(&config_file, config).unwrap();
    let binary = ProxyBinary::start(&w.cp, &config_file, "trace");
    let addr = binary.addr;
    // An injection, a response that echoes it (scrubbed), and a refusal.
    let resp = get(addr, &w.http_url("/echo"), &with_placeholder(&token)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        w.http.last().header("authorization"),
        Some(format!("Bearer {SECRET}").as_str())
    );
    let resp = get(addr, &w.http_url("/echo"), &[bearer(&token)]).await;
    assert_eq!(resp.status, 403);
    // Let the audit batch go out, then stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, log) = binary.stop().await;
    assert!(log.contains("sidecar listening"), "{log}");
    assert!(!log.contains(SECRET), "the secret value is in the log");
    assert!(!log.contains(&token.token), "the token is in the log");
    let sidecar_key = std::fs::read_to_string(&w.cp.sidecar_key_file).unwrap();
    assert!(
        !log.contains(sidecar_key.trim()),
        "the sidecar key is in the log"
    );
}

/// An agent holding connections open cannot make the sidecar serve more than
/// `max_agent_connections` at once: the next one waits, unserved, until one of them closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_wait_until_one_closes() {
    let w = World::new().await;
    let token = w.secret_and_token().await;
    let mut config = w.config(&w.hosts());
    config.max_agent_connections = 2;
    let sidecar = w.start(config).await;
    let head = request_head(&w.http_url("/echo"), &token, &[]);

    let mut first = Agent::connect(&sidecar).await;
    let mut second = Agent::connect(&sidecar).await;
    assert_eq!(first.exchange(&head).await.status, 200);
    assert_eq!(second.exchange(&head).await.status, 200);
    assert_eq!(sidecar.metrics().agent_connections.get(), 2);

    // The kernel completes the third handshake from its backlog; the sidecar does not serve it.
    let mut third = Agent::connect(&sidecar).await;
    third.stream.write_all(head.as_bytes()).await.unwrap();
    eventually(
        "the accept loop never reached the cap",
        DEADLINE,
        async || sidecar.metrics().agent_connection_cap_reached.get() >= 1,
    )
    .await;
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(300), third.stream.read(&mut byte));
    assert!(
        early.await.is_err(),
        "a third connection was served past a cap of two"
    );
    assert_eq!(sidecar.metrics().agent_connections.get(), 2);

    // One closes: the waiting connection is served, with the request it sent while it waited.
    drop(first);
    let mut rest = Vec::new();
    let mut chunk = [0u8; 8192];
    while !response_complete(&rest) {
        let n = tokio::time::timeout(DEADLINE, third.stream.read(&mut chunk))
            .await
            .expect("the waiting connection is served once one closes")
            .unwrap();
        assert!(n > 0, "the sidecar closed the waiting connection");
        rest.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(parse_response(&rest).status, 200);
    assert_eq!(
        second.exchange(&head).await.status,
        200,
        "the others are unaffected"
    );
    assert_eq!(sidecar.metrics().agent_connections.get(), 2);
    sidecar.stop().await;
}
