//! Upstream servers standing in for third-party APIs. Each records what it received (so tests
//! can see exactly what the sidecar sent) and some echo it back (so tests can see what the
//! sidecar lets through to the agent).

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use base64::Engine;
use futures::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tower::ServiceExt;

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Everything the upstream saw, as text, for "must not contain" checks.
    pub fn everything(&self) -> String {
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        format!(
            "{} {}\n{}\n\n{}",
            self.method,
            self.uri,
            headers.join("\n"),
            String::from_utf8_lossy(&self.body)
        )
    }
}

#[derive(Clone, Default)]
struct Shared {
    received: Arc<Mutex<Vec<Received>>>,
    /// Releases the second SSE event.
    sse_gate: Arc<Notify>,
    /// The key the fake OpenAI endpoint accepts.
    openai_key: Arc<Mutex<Option<String>>>,
}

pub struct Upstream {
    pub addr: SocketAddr,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// Plain HTTP on 127.0.0.1.
    pub async fn http() -> Upstream {
        Self::start(None, "127.0.0.1:0").await
    }

    /// HTTPS on 127.0.0.1 with a certificate from `tls`.
    pub async fn https(tls: rustls::ServerConfig) -> Upstream {
        Self::start(Some(Arc::new(tls)), "127.0.0.1:0").await
    }

    /// Plain HTTP on a given address (e.g. 127.0.0.2 for SSRF tests).
    pub async fn http_on(addr: &str) -> Upstream {
        Self::start(None, addr).await
    }

    async fn start(tls: Option<Arc<rustls::ServerConfig>>, addr: &str) -> Upstream {
        let shared = Shared::default();
        let router = router(shared.clone());
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let router = router.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            router.clone().oneshot(req.map(Body::new))
                        },
                    );
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(tcp).await {
                                let _ = builder.serve_connection(TokioIo::new(tls), service).await;
                            }
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                        }
                    }
                });
            }
        });
        Upstream { addr, shared, task }
    }

    /// `host:port` as a secret's allowed host / a [[hosts]] name.
    pub fn authority(&self) -> String {
        format!("127.0.0.1:{}", self.addr.port())
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    pub fn last(&self) -> Received {
        self.received()
            .last()
            .cloned()
            .expect("the upstream received a request")
    }

    pub fn release_sse(&self) {
        self.shared.sse_gate.notify_one();
    }

    pub fn accept_openai_key(&self, key: &str) {
        *self.shared.openai_key.lock().unwrap() = Some(key.to_owned());
    }
}

fn router(shared: Shared) -> Router {
    Router::new()
        .route("/echo", any(echo))
        .route("/echo/gzip", any(echo_gzip))
        .route("/echo/chunked", any(echo_chunked))
        .route("/echo/base64", any(echo_base64))
        .route("/echo/header", any(echo_header))
        .route("/spoof-denial", any(spoof_denial))
        .route("/echo/reason", any(echo_reason))
        .route("/echo/stacked-encoding", any(echo_stacked_encoding))
        .route("/upgrade", any(upgrade))
        .route("/sse", get(sse))
        .route("/redirect", get(redirect))
        .route("/openai/v1/chat/completions", post(openai_chat))
        .route("/v1/chat/completions", post(openai_chat))
        .fallback(any(echo))
        .with_state(shared)
}

fn record(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Received {
    let r = Received {
        method: method.to_string(),
        uri: uri.to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
    };
    shared.received.lock().unwrap().push(r.clone());
    r
}

fn echo_json(r: &Received) -> Value {
    let headers: serde_json::Map<String, Value> = r
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({"method": r.method, "uri": r.uri, "headers": headers, "body": String::from_utf8_lossy(&r.body)})
}

async fn echo(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = record(&s, &method, &uri, &headers, &body);
    axum::Json(echo_json(&r)).into_response()
}

async fn echo_gzip(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = record(&s, &method, &uri, &headers, &body);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(echo_json(&r).to_string().as_bytes()).unwrap();
    let bytes = gz.finish().unwrap();
    (
        [
            ("content-encoding", "gzip"),
            ("content-type", "application/json"),
        ],
        bytes,
    )
        .into_response()
}

/// The Authorization header echoed three bytes at a time, so a value spans many chunks.
async fn echo_chunked(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = record(&s, &method, &uri, &headers, &body);
    let text = format!(
        "you sent: {}\n",
        r.header("authorization").unwrap_or_default()
    );
    let chunks: Vec<Result<Bytes, std::io::Error>> = text
        .as_bytes()
        .chunks(3)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let stream = futures::stream::iter(chunks).then(|c| async move {
        tokio::time::sleep(Duration::from_millis(1)).await;
        c
    });
    Response::new(Body::from_stream(stream))
}

async fn echo_base64(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = record(&s, &method, &uri, &headers, &body);
    let auth = r.header("authorization").unwrap_or_default();
    let bearer = auth.strip_prefix("Bearer ").unwrap_or(auth);
    let std = base64::engine::general_purpose::STANDARD;
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{{\"basic\":\"{}\",\"std\":\"{}\",\"url\":\"{}\",\"offset1\":\"{}\",\"pct\":\"{}\"}}",
        std.encode(format!("user:{bearer}")),
        std.encode(bearer),
        url.encode(bearer),
        std.encode(format!("x{bearer}y")),
        bearer.replace('-', "%2D"),
    )
    .into_response()
}

async fn echo_header(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = record(&s, &method, &uri, &headers, &body);
    let auth = r.header("authorization").unwrap_or_default().to_owned();
    (
        [
            ("x-echo-auth", auth.clone()),
            ("set-cookie", format!("session={auth}")),
        ],
        "ok",
    )
        .into_response()
}

/// An upstream pretending to be the sidecar refusing: the sidecar must not pass its marker on.
async fn spoof_denial(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(&s, &method, &uri, &headers, &body);
    (
        [("x-agent-secret-denial", "destination_not_allowed")],
        "an upstream's own words",
    )
        .into_response()
}

/// The Authorization header echoed in the status line's reason phrase.
async fn echo_reason(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = record(&s, &method, &uri, &headers, &body);
    let auth = r.header("authorization").unwrap_or_default().to_owned();
    let mut res = (StatusCode::UNAUTHORIZED, "denied").into_response();
    if let Ok(phrase) = hyper::ext::ReasonPhrase::try_from(format!("bad key {auth}").into_bytes()) {
        res.extensions_mut().insert(phrase);
    }
    res
}

/// A gzip body announced on two Content-Encoding lines: `identity`, then `gzip`.
async fn echo_stacked_encoding(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = record(&s, &method, &uri, &headers, &body);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(echo_json(&r).to_string().as_bytes()).unwrap();
    let mut res = Response::new(Body::from(gz.finish().unwrap()));
    res.headers_mut()
        .append("content-encoding", "identity".parse().unwrap());
    res.headers_mut()
        .append("content-encoding", "gzip".parse().unwrap());
    res
}

/// Switches protocols, echoing the Authorization header in the 101's headers.
async fn upgrade(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let r = record(&s, &method, &uri, &headers, b"");
    let auth = r.header("authorization").unwrap_or_default().to_owned();
    (
        StatusCode::SWITCHING_PROTOCOLS,
        [
            ("connection", "upgrade".to_owned()),
            ("upgrade", "websocket".to_owned()),
            ("x-echo-auth", auth),
        ],
    )
        .into_response()
}

/// One event, then the second only after the test releases it.
async fn sse(State(s): State<Shared>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    record(&s, &method, &uri, &headers, b"");
    let gate = s.sse_gate.clone();
    let stream = futures::stream::unfold(0u8, move |n| {
        let gate = gate.clone();
        async move {
            match n {
                0 => Some((
                    Ok::<_, std::io::Error>(Bytes::from_static(b"data: first\n\n")),
                    1,
                )),
                1 => {
                    gate.notified().await;
                    Some((Ok(Bytes::from_static(b"data: second\n\n")), 2))
                }
                _ => None,
            }
        }
    });
    (
        [("content-type", "text/event-stream")],
        Body::from_stream(stream),
    )
        .into_response()
}

async fn redirect(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    record(&s, &method, &uri, &headers, b"");
    (
        StatusCode::FOUND,
        [("location", "http://169.254.169.254/latest/meta-data/")],
        "",
    )
        .into_response()
}

/// Enough of OpenAI's chat completions API for the official SDK.
async fn openai_chat(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = record(&s, &method, &uri, &headers, &body);
    let expected = s.openai_key.lock().unwrap().clone();
    let ok = expected.is_some_and(|k| r.header("authorization") == Some(&format!("Bearer {k}")));
    if !ok {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": {"message": "bad key", "type": "invalid_request_error"}})),
        )
            .into_response();
    }
    axum::Json(json!({
        "id": "chatcmpl-test", "object": "chat.completion", "created": 1_700_000_000, "model": "gpt-test",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "key accepted"}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    }))
    .into_response()
}
