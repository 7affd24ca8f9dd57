//! The sidecar injector webhook over the control plane's real TLS listener, called the way the
//! API server calls it: `POST /kubernetes/inject` with an AdmissionReview as JSON, no
//! credential. The decision itself is tested in `kubernetes::inject::tests`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod served;
mod support;

use agent_secret_control_plane::kubernetes::InjectorSettings;
use base64::Engine;
use reqwest::StatusCode;
use serde_json::{json, Value};
use served::Served;

fn settings() -> InjectorSettings {
    InjectorSettings {
        image: "registry.example/agent-secret-proxy:0.1.0".into(),
        template: toml::from_str("[control_plane]\nurl = \"https://cp.agent-secrets.svc:8200\"\n")
            .unwrap(),
        credentials_secret: "agent-secret-sidecar".into(),
        token_audience: "agent-secret-store".into(),
        proxy_port: 8080,
        service_account_auth: false,
    }
}

/// A CREATE review of a pod annotated for injection, padded with `padding` bytes of a
/// last-applied-configuration annotation (real pods carry such).
fn review(padding: usize) -> Value {
    json!({
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": "0c9a8d74-9cb7-44dd-b98e-09fd62def2f4",
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "namespace": "agents",
            "operation": "CREATE",
            "userInfo": { "username": "alice", "groups": ["system:authenticated"] },
            "object": {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": { "name": "agent", "namespace": "agents", "annotations": {
                    "agent-secrets.io/inject": "true",
                    "kubectl.kubernetes.io/last-applied-configuration": "x".repeat(padding),
                } },
                "spec": { "containers": [{ "name": "agent", "image": "agent:1" }] }
            },
            "dryRun": false
        }
    })
}

async fn post(served: &Served, body: &Value) -> (StatusCode, Value) {
    let response = served
        .client
        .post(served.url("/kubernetes/inject"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn the_webhook_answers_a_review_with_a_json_patch_over_tls() {
    let served = Served::builder().injector(settings()).start().await;
    // Larger than the API's 64 KiB body limit: a pod's review may be.
    let (status, answer) = post(&served, &review(200 * 1024)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["kind"], "AdmissionReview");
    let response = &answer["response"];
    assert_eq!(response["uid"], "0c9a8d74-9cb7-44dd-b98e-09fd62def2f4");
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().unwrap())
        .unwrap();
    let patch: Value = serde_json::from_slice(&patch).unwrap();
    assert!(patch
        .as_array()
        .unwrap()
        .iter()
        .any(|op| op["path"] == "/spec/initContainers"
            && op["value"][0]["name"] == "agent-secret-proxy"));

    // Garbage is answered with a failed review, not an HTTP error the API server cannot read.
    let response = served
        .client
        .post(served.url("/kubernetes/inject"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["response"]["allowed"], false);
}

#[tokio::test]
async fn without_the_injector_the_route_is_not_there() {
    let served = Served::builder().start().await;
    let (status, body) = post(&served, &review(0)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test]
async fn without_workload_identity_the_token_exchange_is_not_there() {
    let served = Served::builder().start().await;
    let response = served
        .client
        .post(served.url("/v1/auth/kubernetes"))
        .json(&json!({ "token": "x", "scopes": ["secrets:read:a/*"], "ttl_seconds": 60 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}
