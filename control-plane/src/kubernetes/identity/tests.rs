#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{json, Value};

use super::*;
use crate::kubernetes::bindings::{self, Binding, BindingError};

const AUDIENCE: &str = "agent-secret-store";
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// A JWT-shaped token the fake API server knows (it checks no signature).
pub(crate) const SIDECAR_JWT: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln";
pub(crate) const OWN_TOKEN: &str = "control-plane-own-token";

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

/// A kube-apiserver's TokenReview endpoint: knows a few tokens, each with its audiences and
/// user, and answers as the real one does (an audience mismatch is `authenticated: false`).
/// `ignores_audiences` answers like an old API server that checks none and lists its own.
pub(crate) async fn fake_api_server(ignores_audiences: bool) -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    async fn review(
        State((calls, ignores)): State<(Arc<AtomicUsize>, bool)>,
        headers: HeaderMap,
        Json(body): Json<Value>,
    ) -> axum::response::Response {
        calls.fetch_add(1, Ordering::SeqCst);
        if headers.get("authorization").and_then(|v| v.to_str().ok())
            != Some(&format!("Bearer {OWN_TOKEN}"))
        {
            return (StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
        }
        assert_eq!(body["kind"], "TokenReview");
        let token = body["spec"]["token"].as_str().unwrap();
        let wanted: Vec<String> =
            serde_json::from_value(body["spec"]["audiences"].clone()).unwrap();
        let known = match token {
            // A sidecar presents its token as a bearer, so it must look like one.
            "valid" | SIDECAR_JWT => {
                Some(("system:serviceaccount:agents:research-agent", AUDIENCE))
            }
            "tok-other-aud-7f3a" => Some(("system:serviceaccount:agents:research-agent", "vault")),
            "a-person" => Some(("alice@example.com", AUDIENCE)),
            _ => None,
        };
        let status = match known {
            _ if token == "tok-expired-7f3a" => {
                json!({ "authenticated": false, "error": "[invalid bearer token, token has expired]" })
            }
            None => json!({ "authenticated": false, "error": "[invalid bearer token]" }),
            Some((user, _)) if ignores => json!({
                "authenticated": true,
                "user": { "username": user, "groups": ["system:serviceaccounts"] },
                "audiences": ["https://kubernetes.default.svc"],
            }),
            Some((_, audience)) if !wanted.iter().any(|w| w == audience) => json!({
                "authenticated": false,
                "error": format!("[invalid bearer token, token audiences [\"{audience}\"] is invalid for the target audiences {wanted:?}]"),
            }),
            Some((user, audience)) => json!({
                "authenticated": true,
                "user": { "username": user, "uid": "8e8c1a2b", "groups": ["system:serviceaccounts"] },
                "audiences": [audience],
            }),
        };
        Json(json!({
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": { "creationTimestamp": null },
            "spec": body["spec"],
            "status": status,
        }))
        .into_response()
    }
    let router = Router::new()
        .route("/apis/authentication.k8s.io/v1/tokenreviews", post(review))
        .with_state((calls.clone(), ignores_audiences));
    (serve(router).await, calls)
}

pub(crate) fn token_review_verifier(
    api_url: &str,
    own_token: &str,
) -> (Verifier, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{own_token}\n")).unwrap();
    let verifier = Verifier::new(
        VerifierSettings::TokenReview {
            api_url: api_url.to_owned(),
            ca_pem: None,
            token_file,
        },
        AUDIENCE,
    )
    .unwrap();
    (verifier, dir)
}

fn research_agent() -> ServiceAccount {
    ServiceAccount {
        namespace: "agents".into(),
        name: "research-agent".into(),
    }
}

#[tokio::test]
async fn token_review_accepts_a_valid_token_for_our_audience_and_names_its_service_account() {
    let (url, calls) = fake_api_server(false).await;
    let (verifier, _dir) = token_review_verifier(&url, OWN_TOKEN);
    assert_eq!(verifier.verify("valid").await, Ok(research_agent()));
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one review per check");

    for (token, why) in [
        ("tok-other-aud-7f3a", "a token for another audience"),
        ("tok-expired-7f3a", "an expired token"),
        ("tok-forged-7f3a", "a token the API server does not know"),
    ] {
        let err = verifier.verify(token).await.unwrap_err();
        assert!(matches!(err, IdentityError::Invalid(_)), "{why}: {err:?}");
        assert!(
            !err.to_string().contains(token),
            "the error quotes the token"
        );
    }
    assert_eq!(
        verifier.verify("a-person").await,
        Err(IdentityError::NotServiceAccount)
    );
    assert!(matches!(
        verifier.verify("").await,
        Err(IdentityError::Invalid(_))
    ));
}

#[tokio::test]
async fn token_review_refuses_when_the_answer_lacks_our_audience_or_the_server_refuses_us() {
    // An API server that ignores spec.audiences: authenticated, but not for us.
    let (url, _) = fake_api_server(true).await;
    let (verifier, _dir) = token_review_verifier(&url, OWN_TOKEN);
    assert_eq!(verifier.verify("valid").await, Err(IdentityError::Audience));

    // Our own credential refused: unavailable (retry), never accepted.
    let (url, _) = fake_api_server(false).await;
    let (verifier, _dir) = token_review_verifier(&url, "stale-own-token");
    assert!(matches!(
        verifier.verify("valid").await,
        Err(IdentityError::Unavailable(_))
    ));
    // Nothing listening.
    let (verifier, _dir) = token_review_verifier("http://127.0.0.1:9", OWN_TOKEN);
    assert!(matches!(
        verifier.verify("valid").await,
        Err(IdentityError::Unavailable(_))
    ));
}

/// The cluster issuer: an ES256 key and its JWKS endpoint, counting fetches.
struct Issuer {
    key: EncodingKey,
    jwks_url: String,
    fetches: Arc<AtomicUsize>,
}

fn ec_key() -> (EncodingKey, Value) {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = pair.public_key_raw();
    assert_eq!(raw.len(), 65, "an uncompressed P-256 point");
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256",
        "x": URL_SAFE_NO_PAD.encode(&raw[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&raw[33..]),
    });
    (EncodingKey::from_ec_der(&pair.serialize_der()), jwk)
}

async fn fake_issuer() -> Issuer {
    let (key, mut jwk) = ec_key();
    jwk["kid"] = json!("k1");
    let fetches = Arc::new(AtomicUsize::new(0));
    let set = json!({ "keys": [jwk] });
    let counter = fetches.clone();
    let router = Router::new().route(
        "/openid/v1/jwks",
        get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let set = set.clone();
            async move { Json(set) }
        }),
    );
    let url = serve(router).await;
    Issuer {
        key,
        jwks_url: format!("{url}/openid/v1/jwks"),
        fetches,
    }
}

fn jwks_verifier(issuer: &Issuer) -> Verifier {
    Verifier::new(
        VerifierSettings::Jwks {
            jwks_url: issuer.jwks_url.clone(),
            ca_pem: None,
            issuer: ISSUER.into(),
        },
        AUDIENCE,
    )
    .unwrap()
}

/// A projected token's claims, as the API server writes them.
fn claims(audience: &str, expires_in: i64) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({
        "aud": [audience],
        "exp": now + expires_in,
        "iat": now - 60,
        "nbf": now - 60,
        "iss": ISSUER,
        "sub": "system:serviceaccount:agents:research-agent",
        "kubernetes.io": {
            "namespace": "agents",
            "pod": { "name": "research-agent-7d9f-x2k", "uid": "5b0c3f0e" },
            "serviceaccount": { "name": "research-agent", "uid": "8e8c1a2b" },
        },
    })
}

fn sign(key: &EncodingKey, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

#[tokio::test]
async fn jwks_accepts_a_valid_token_and_refuses_wrong_audience_expiry_issuer_and_key() {
    let issuer = fake_issuer().await;
    let verifier = jwks_verifier(&issuer);
    let valid = sign(&issuer.key, "k1", &claims(AUDIENCE, 3600));
    assert_eq!(verifier.verify(&valid).await, Ok(research_agent()));
    assert_eq!(verifier.verify(&valid).await, Ok(research_agent()));
    assert_eq!(
        issuer.fetches.load(Ordering::SeqCst),
        1,
        "the key set is cached"
    );

    let wrong_audience = sign(&issuer.key, "k1", &claims("vault", 3600));
    assert_eq!(
        verifier.verify(&wrong_audience).await,
        Err(IdentityError::Audience)
    );
    let expired = sign(&issuer.key, "k1", &claims(AUDIENCE, -3600));
    assert_eq!(verifier.verify(&expired).await, Err(IdentityError::Expired));

    let mut other_issuer = claims(AUDIENCE, 3600);
    other_issuer["iss"] = json!("https://evil.example");
    let err = verifier
        .verify(&sign(&issuer.key, "k1", &other_issuer))
        .await
        .unwrap_err();
    assert!(matches!(err, IdentityError::Invalid(_)), "{err:?}");

    // Signed by another key under the issuer's kid: the signature fails.
    let (forger, _) = ec_key();
    let err = verifier
        .verify(&sign(&forger, "k1", &claims(AUDIENCE, 3600)))
        .await
        .unwrap_err();
    assert!(matches!(err, IdentityError::Invalid(_)), "{err:?}");

    // `sub` and the structured claim disagree.
    let mut mismatched = claims(AUDIENCE, 3600);
    mismatched["kubernetes.io"]["namespace"] = json!("kube-system");
    let err = verifier
        .verify(&sign(&issuer.key, "k1", &mismatched))
        .await
        .unwrap_err();
    assert!(matches!(err, IdentityError::Invalid(_)), "{err:?}");

    // Not a service account.
    let mut person = claims(AUDIENCE, 3600);
    person["sub"] = json!("alice");
    person.as_object_mut().unwrap().remove("kubernetes.io");
    assert_eq!(
        verifier.verify(&sign(&issuer.key, "k1", &person)).await,
        Err(IdentityError::NotServiceAccount)
    );

    // An HMAC token (the public key as a shared secret is the classic confusion): refused
    // before any key is looked at.
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(AUDIENCE, 3600),
        &EncodingKey::from_secret(b"k1"),
    )
    .unwrap();
    assert!(matches!(
        verifier.verify(&hs).await,
        Err(IdentityError::Invalid(_))
    ));
}

#[tokio::test]
async fn an_unknown_key_id_fetches_the_key_set_again_but_not_on_every_token() {
    let issuer = fake_issuer().await;
    let verifier = jwks_verifier(&issuer);
    let valid = sign(&issuer.key, "k1", &claims(AUDIENCE, 3600));
    verifier.verify(&valid).await.unwrap();
    let unknown = sign(&issuer.key, "k2", &claims(AUDIENCE, 3600));
    for _ in 0..5 {
        assert!(matches!(
            verifier.verify(&unknown).await,
            Err(IdentityError::Invalid(_))
        ));
    }
    assert_eq!(
        issuer.fetches.load(Ordering::SeqCst),
        1,
        "a key set fetched a moment ago is not fetched again for an unknown kid"
    );
}

fn binding(namespace: &str, service_account: &str, agent: &str) -> Binding {
    Binding {
        namespace: namespace.into(),
        service_account: service_account.into(),
        tenant: "0193a5f0-0000-7000-8000-000000000001".into(),
        agent: Some(agent.into()),
        sidecar: None,
        max_ttl_seconds: 900,
    }
}

#[test]
fn a_service_account_gets_its_own_binding_then_its_namespaces_wildcard_and_nothing_else() {
    let bindings = [
        binding("agents", "*", "any-agent"),
        binding("agents", "research-agent", "research"),
        binding("batch", "report-writer", "reports"),
    ];
    assert_eq!(
        bindings::find(&bindings, &research_agent())
            .unwrap()
            .agent
            .as_deref(),
        Some("research"),
        "its own binding wins over the wildcard"
    );
    let other = ServiceAccount {
        namespace: "agents".into(),
        name: "summariser".into(),
    };
    assert_eq!(
        bindings::find(&bindings, &other).unwrap().agent.as_deref(),
        Some("any-agent")
    );

    let unbound = ServiceAccount {
        namespace: "default".into(),
        name: "web".into(),
    };
    assert_eq!(
        bindings::find(&bindings, &unbound),
        Err(BindingError::Unbound(
            "system:serviceaccount:default:web".into()
        ))
    );
    // The right name in a namespace outside its binding: refused, and said so.
    let outside = ServiceAccount {
        namespace: "default".into(),
        name: "report-writer".into(),
    };
    let err = bindings::find(&bindings, &outside).unwrap_err();
    assert!(
        matches!(err, BindingError::NamespaceOutside { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("batch"), "{err}");
}

#[test]
fn a_username_is_a_service_account_only_in_the_api_servers_form() {
    assert_eq!(
        ServiceAccount::from_username("system:serviceaccount:agents:research-agent"),
        Some(research_agent())
    );
    for other in [
        "alice",
        "system:serviceaccount:agents",
        "system:serviceaccount::x",
        "system:serviceaccount:Agents:x",
        "system:node:worker-1",
    ] {
        assert_eq!(ServiceAccount::from_username(other), None, "{other}");
    }
}
