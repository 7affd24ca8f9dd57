//! The demo upstream of `dev`: echoes what it received, so a user sees both halves of the
//! product at once — the upstream got the real key (`authorization_matches_demo_secret`), and
//! the agent only ever sees `[REDACTED:...]` where the key was echoed.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::routing::any;
use axum::{Json, Router};
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

use agent_secret_core::secret::SecretString;

/// Serves the echo on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    demo_value: SecretString,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .fallback(any(echo))
        .with_state(Arc::new(demo_value));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn echo(
    State(demo): State<Arc<SecretString>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Json<Value> {
    let received: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(k, v)| {
            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
            (k.as_str().to_owned(), Value::String(v))
        })
        .collect();
    let expected = format!("Bearer {}", demo.expose());
    let matches = headers
        .get("authorization")
        .is_some_and(|v| bool::from(v.as_bytes().ct_eq(expected.as_bytes())));
    Json(json!({
        "message": "this is the demo upstream; it echoes the request it received",
        "method": method.as_str(),
        "uri": uri.to_string(),
        "received_headers": received,
        "authorization_matches_demo_secret": matches,
    }))
}

pub fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}
