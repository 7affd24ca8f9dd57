//! Workload identity: who a projected service-account token says its pod runs as
//! (docs/kubernetes.md).
//!
//! Two ways to check a token, configurable, as Vault's Kubernetes auth method offers:
//!
//! * **TokenReview**: the API server itself says whether the token is valid, for our audience,
//!   and whose it is. Revocation is immediate (a deleted pod's or service account's token
//!   fails at once) at the cost of one API call per check.
//! * **JWKS**: the token's signature is checked against the cluster issuer's public keys
//!   (`/openid/v1/jwks`), with issuer, audience, expiry and not-before; no API call per check,
//!   but a token stays valid until it expires (projected tokens live an hour or less).
//!
//! Either way the answer is a [`ServiceAccount`], and nothing else of the token is trusted.
//! Errors say why a token was refused without quoting it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::RwLock;

/// A pod's identity: its namespace and service account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccount {
    pub namespace: String,
    pub name: String,
}

impl ServiceAccount {
    /// `system:serviceaccount:<namespace>:<name>`, the API server's username for it.
    pub fn from_username(username: &str) -> Option<ServiceAccount> {
        let rest = username.strip_prefix("system:serviceaccount:")?;
        let (namespace, name) = rest.split_once(':')?;
        (super::is_object_name(namespace) && super::is_object_name(name)).then(|| ServiceAccount {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }

    pub fn username(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }
}

/// Why a token was not accepted. None of these quote the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the token is not valid: {0}")]
    Invalid(String),
    #[error("the token is not for this audience")]
    Audience,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not a service account's")]
    NotServiceAccount,
    /// The verifier could not ask (API server or JWKS unreachable): retry, never accept.
    #[error("cannot check the token now: {0}")]
    Unavailable(String),
}

/// How tokens are checked (`[kubernetes] identity`).
#[derive(Clone, Debug)]
pub enum VerifierSettings {
    TokenReview {
        /// The API server (`https://kubernetes.default.svc`).
        api_url: String,
        /// Its CA (the pod's `ca.crt`).
        ca_pem: Option<Vec<u8>>,
        /// The control plane's own token, read at each call (the kubelet rotates it).
        token_file: PathBuf,
    },
    Jwks {
        /// The issuer's key set (`https://kubernetes.default.svc/openid/v1/jwks`, or the
        /// cloud's public issuer URL).
        jwks_url: String,
        ca_pem: Option<Vec<u8>>,
        /// The `iss` tokens must carry.
        issuer: String,
    },
}

/// Checks projected service-account tokens for one audience.
#[derive(Clone)]
pub struct Verifier {
    audience: String,
    client: reqwest::Client,
    how: How,
}

#[derive(Clone)]
enum How {
    TokenReview {
        api_url: String,
        token_file: PathBuf,
    },
    Jwks {
        jwks_url: String,
        issuer: String,
        keys: Arc<RwLock<Option<(Instant, JwkSet)>>>,
    },
}

/// How long a fetched key set is used before it is fetched again; an unknown `kid` fetches
/// at once (the issuer rotated), at most once per [`JWKS_MIN_REFETCH`].
const JWKS_TTL: Duration = Duration::from_secs(300);
const JWKS_MIN_REFETCH: Duration = Duration::from_secs(10);
const TIMEOUT: Duration = Duration::from_secs(5);
/// Largest token accepted: projected tokens are ~1 KiB.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

impl Verifier {
    pub fn new(settings: VerifierSettings, audience: &str) -> Result<Verifier, IdentityError> {
        let ca = match &settings {
            VerifierSettings::TokenReview { ca_pem, .. }
            | VerifierSettings::Jwks { ca_pem, .. } => ca_pem.as_deref(),
        };
        let mut builder = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = ca {
            let cert = reqwest::Certificate::from_pem(pem)
                .map_err(|e| IdentityError::Unavailable(format!("CA: {e}")))?;
            builder = builder.add_root_certificate(cert);
        }
        let client = builder
            .build()
            .map_err(|e| IdentityError::Unavailable(e.to_string()))?;
        let how = match settings {
            VerifierSettings::TokenReview {
                api_url,
                token_file,
                ..
            } => How::TokenReview {
                api_url: api_url.trim_end_matches('/').to_owned(),
                token_file,
            },
            VerifierSettings::Jwks {
                jwks_url, issuer, ..
            } => How::Jwks {
                jwks_url,
                issuer,
                keys: Arc::new(RwLock::new(None)),
            },
        };
        Ok(Verifier {
            audience: audience.to_owned(),
            client,
            how,
        })
    }

    /// The service account `token` belongs to, if it is valid for our audience now.
    pub async fn verify(&self, token: &str) -> Result<ServiceAccount, IdentityError> {
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES || !token.is_ascii() {
            return Err(IdentityError::Invalid("not a token".into()));
        }
        match &self.how {
            How::TokenReview {
                api_url,
                token_file,
            } => self.token_review(api_url, token_file, token).await,
            How::Jwks {
                jwks_url,
                issuer,
                keys,
            } => self.jwks(jwks_url, issuer, keys, token).await,
        }
    }

    async fn token_review(
        &self,
        api_url: &str,
        token_file: &PathBuf,
        token: &str,
    ) -> Result<ServiceAccount, IdentityError> {
        let own = tokio::fs::read_to_string(token_file)
            .await
            .map_err(|e| IdentityError::Unavailable(format!("{}: {e}", token_file.display())))?;
        let review = json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": { "token": token, "audiences": [self.audience] },
        });
        let response = self
            .client
            .post(format!(
                "{api_url}/apis/authentication.k8s.io/v1/tokenreviews"
            ))
            .bearer_auth(own.trim())
            .json(&review)
            .send()
            .await
            .map_err(|e| IdentityError::Unavailable(e.without_url().to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(IdentityError::Unavailable(format!(
                "the API server answered {status} to the TokenReview"
            )));
        }
        let review: k8s_openapi::api::authentication::v1::TokenReview = response
            .json()
            .await
            .map_err(|e| IdentityError::Unavailable(format!("TokenReview answer: {e}")))?;
        let status = review.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Err(IdentityError::Invalid(status.error.unwrap_or_else(|| {
                "the API server did not authenticate it".into()
            })));
        }
        // An API server that ignores spec.audiences answers with its own; ours must be there.
        if !status
            .audiences
            .unwrap_or_default()
            .contains(&self.audience)
        {
            return Err(IdentityError::Audience);
        }
        let username = status.user.and_then(|u| u.username).unwrap_or_default();
        ServiceAccount::from_username(&username).ok_or(IdentityError::NotServiceAccount)
    }

    async fn jwks(
        &self,
        jwks_url: &str,
        issuer: &str,
        keys: &RwLock<Option<(Instant, JwkSet)>>,
        token: &str,
    ) -> Result<ServiceAccount, IdentityError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| IdentityError::Invalid(e.to_string()))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(IdentityError::Invalid(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let kid = header.kid.unwrap_or_default();
        let key = self.key(jwks_url, keys, &kid).await?;
        let mut validation = Validation::new(header.alg);
        validation.set_audience(&[&self.audience]);
        validation.set_issuer(&[issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 30;
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => IdentityError::Expired,
                ErrorKind::InvalidAudience => IdentityError::Audience,
                _ => IdentityError::Invalid(e.to_string()),
            }
        })?;
        let sa = ServiceAccount::from_username(&data.claims.sub)
            .ok_or(IdentityError::NotServiceAccount)?;
        // The structured claim, when present, must agree with `sub`.
        if let Some(k) = data.claims.kubernetes {
            let agrees = k.namespace.as_deref().is_none_or(|n| n == sa.namespace)
                && k.serviceaccount
                    .and_then(|s| s.name)
                    .is_none_or(|n| n == sa.name);
            if !agrees {
                return Err(IdentityError::Invalid(
                    "the kubernetes.io claim does not match sub".into(),
                ));
            }
        }
        Ok(sa)
    }

    /// The key `kid` names, from the cached set or a fresh fetch.
    async fn key(
        &self,
        jwks_url: &str,
        keys: &RwLock<Option<(Instant, JwkSet)>>,
        kid: &str,
    ) -> Result<DecodingKey, IdentityError> {
        let find = |set: &JwkSet| {
            set.keys
                .iter()
                .find(|k| k.common.key_id.as_deref().unwrap_or_default() == kid)
                .map(DecodingKey::from_jwk)
        };
        if let Some((fetched, set)) = &*keys.read().await {
            let fresh = fetched.elapsed() < JWKS_TTL;
            match find(set) {
                Some(key) if fresh => {
                    return key.map_err(|e| IdentityError::Invalid(e.to_string()))
                }
                None if fetched.elapsed() < JWKS_MIN_REFETCH => {
                    return Err(IdentityError::Invalid("no issuer key has its kid".into()))
                }
                _ => {}
            }
        }
        let set: JwkSet = self
            .client
            .get(jwks_url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| IdentityError::Unavailable(format!("JWKS: {}", e.without_url())))?
            .json()
            .await
            .map_err(|e| IdentityError::Unavailable(format!("JWKS: {e}")))?;
        let key = find(&set);
        *keys.write().await = Some((Instant::now(), set));
        match key {
            Some(key) => key.map_err(|e| IdentityError::Invalid(e.to_string())),
            None => Err(IdentityError::Invalid("no issuer key has its kid".into())),
        }
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(rename = "kubernetes.io")]
    kubernetes: Option<KubernetesClaim>,
}

#[derive(Deserialize)]
struct KubernetesClaim {
    namespace: Option<String>,
    serviceaccount: Option<Named>,
}

#[derive(Deserialize)]
struct Named {
    name: Option<String>,
}

#[cfg(test)]
pub(crate) mod tests;
