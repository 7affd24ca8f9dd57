//! Calls to the control plane's HTTPS API as a test makes them: a bearer credential, an optional
//! JSON body, and the answer as (status, JSON), for every in-process control plane a test
//! serves.

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;

/// A client of one control plane: `base` is `https://127.0.0.1:port`.
#[derive(Clone, Debug)]
pub struct Api {
    /// Trusts the control plane's CA; keeps its connections open between calls.
    pub client: reqwest::Client,
    pub base: String,
}

impl Api {
    /// `path` on this server (`url("")` is the base URL, what `--server` takes).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request with `credential` as its bearer token.
    pub fn request(&self, method: Method, path: &str, credential: &str) -> RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(credential)
    }

    /// Status and body (JSON, or the text as a JSON string) of one call.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        credential: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.request(method, path, credential);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// The body of a call that must succeed.
    pub async fn ok(
        &self,
        method: Method,
        path: &str,
        credential: &str,
        body: Option<Value>,
    ) -> Value {
        let (status, body) = self.call(method.clone(), path, credential, body).await;
        assert!(status.is_success(), "{method} {path}: {status} {body}");
        body
    }
}
