//! Just-in-time secrets: may this token send these secrets to this host, and what are they?
//!
//! On a warm grant and warm values every check runs locally, with no control-plane call:
//! expiry, client IP against the grant's allowlist, scope (`read` on each path), sensitivity
//! against the approved level, and destination binding against the host actually dialled.
//! Anything missing goes to `POST /v1/sidecar/resolve` (for the missing paths only when the
//! grant is warm), and the returned envelopes are opened here with the tenant's KEK through the
//! [`Kms`] trait: the control plane never sees plaintext. A cached value whose version matches
//! the resolved one is reused without another unwrap.

use std::net::IpAddr;
use std::sync::Arc;

use agent_secret_core::api::{ErrorCode, ResolveRequest, ResolvedSecret};
use agent_secret_core::envelope::{self, EnvelopeError, SecretAad};
use agent_secret_core::host::{Destination, HostPattern};
use agent_secret_core::ids::TenantId;
use agent_secret_core::kms::{Kms, KmsError};
use agent_secret_core::path::SecretPath;

use crate::auth::AgentToken;
use crate::cache::{CachedGrant, CachedValue, Caches};
use crate::control_plane::{ControlPlane, CpError};
use crate::metrics::Metrics;

/// Resolves placeholders to values, caching what it may.
#[derive(Clone)]
pub struct Resolver {
    control_plane: ControlPlane,
    kms: Arc<dyn Kms>,
    caches: Caches,
    metrics: Metrics,
}

/// The grant and the values of the requested paths, in request order.
pub struct Resolved {
    pub grant: Arc<CachedGrant>,
    pub values: Vec<Arc<CachedValue>>,
}

/// Why secrets could not be resolved. Messages name paths and hosts, never values or tokens.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{code}: {message}")]
    Denied { code: ErrorCode, message: String },
    #[error("control plane unavailable: {0}")]
    Unavailable(String),
    #[error("key service unavailable: {0}")]
    Kms(String),
    #[error("secret `{path}` could not be decrypted: {reason}")]
    Decrypt { path: String, reason: String },
}

impl Resolver {
    pub fn new(
        control_plane: ControlPlane,
        kms: Arc<dyn Kms>,
        caches: Caches,
        metrics: Metrics,
    ) -> Resolver {
        Resolver {
            control_plane,
            kms,
            caches,
            metrics,
        }
    }

    pub fn caches(&self) -> &Caches {
        &self.caches
    }

    /// The values of `paths` for this token, sent to `destination`, from `client_ip`.
    pub async fn resolve(
        &self,
        token: &AgentToken,
        paths: &[SecretPath],
        destination: &Destination,
        client_ip: IpAddr,
    ) -> Result<Resolved, ResolveError> {
        if self.caches.is_dead(token.id()).await {
            return Err(denied(ErrorCode::TokenRevoked, "token is no longer valid"));
        }
        let key = token.cache_key();
        if let Some(grant) = self.warm_grant(&key).await {
            check_grant(&grant, client_ip)?;
            // Every scope first, as the control plane does, so the same request gets the same
            // code whether the sidecar is warm or cold.
            if let Some(path) = paths.iter().find(|p| !grant.covers(p)) {
                return Err(denied(
                    ErrorCode::ScopeDenied,
                    format!("token scope does not allow reading `{path}`"),
                ));
            }
            let mut found = Vec::with_capacity(paths.len());
            let mut missing = Vec::new();
            for path in paths {
                match self.warm_value(&grant, path).await {
                    Some(value) if !value.allows(destination) => {
                        return Err(not_bound(path, destination));
                    }
                    Some(value) => found.push(value),
                    None => missing.push(path.clone()),
                }
            }
            if missing.is_empty() {
                return Ok(Resolved {
                    grant,
                    values: found,
                });
            }
            let fetched = self.remote(token, &missing, destination, client_ip).await?;
            return Ok(Resolved {
                values: in_order(paths, found.into_iter().chain(fetched.values)),
                grant: fetched.grant,
            });
        }
        self.remote(token, paths, destination, client_ip).await
    }

    /// For requests without placeholders: the token's cached grant (checked for expiry and
    /// client IP), or else the control plane's word on the token (a resolve with no paths,
    /// which reads nothing and counts no use). No request passes on the token's format alone.
    pub async fn check_token(
        &self,
        token: &AgentToken,
        destination: &Destination,
        client_ip: IpAddr,
    ) -> Result<Arc<CachedGrant>, ResolveError> {
        if self.caches.is_dead(token.id()).await {
            return Err(denied(ErrorCode::TokenRevoked, "token is no longer valid"));
        }
        match self.warm_grant(&token.cache_key()).await {
            Some(grant) => {
                check_grant(&grant, client_ip)?;
                Ok(grant)
            }
            None => Ok(self.remote(token, &[], destination, client_ip).await?.grant),
        }
    }

    async fn warm_grant(&self, key: &[u8; 32]) -> Option<Arc<CachedGrant>> {
        match self.caches.grant(key).await {
            Some(grant) if grant.is_expired() => {
                self.caches.drop_grant(key).await;
                self.metrics.hot.grant_misses.inc();
                None
            }
            Some(grant) => {
                self.metrics.hot.grant_hits.inc();
                Some(grant)
            }
            None => {
                self.metrics.hot.grant_misses.inc();
                None
            }
        }
    }

    /// A cached value the grant may read without asking (sensitivity within approval).
    async fn warm_value(&self, grant: &CachedGrant, path: &SecretPath) -> Option<Arc<CachedValue>> {
        match self.caches.value(grant.tenant, path).await {
            Some(value) if value.sensitivity <= grant.grant.approved_sensitivity => {
                self.metrics.hot.value_hits.inc();
                Some(value)
            }
            _ => {
                self.metrics.hot.value_misses.inc();
                None
            }
        }
    }

    async fn remote(
        &self,
        token: &AgentToken,
        paths: &[SecretPath],
        destination: &Destination,
        client_ip: IpAddr,
    ) -> Result<Resolved, ResolveError> {
        let request = ResolveRequest {
            token: token.expose().to_owned(),
            paths: paths.iter().map(|p| p.as_str().to_owned()).collect(),
            destination_host: destination.to_string(),
            client_ip: client_ip.to_string(),
        };
        let response = match self.control_plane.resolve(&request).await {
            Ok(response) => response,
            Err(e) => return Err(self.refused(token, e).await),
        };
        drop(request);
        let grant = CachedGrant::new(response.grant, self.caches.grant_ttl_cap())
            .map_err(|e| ResolveError::Unavailable(e.to_string()))?;
        let grant = Arc::new(grant);
        self.caches
            .put_grant(token.cache_key(), grant.clone())
            .await;
        let mut values = Vec::with_capacity(paths.len());
        for secret in response.secrets {
            let value = self.open(grant.tenant, secret).await?;
            if !value.allows(destination) {
                return Err(not_bound(&value.path, destination));
            }
            values.push(value);
        }
        let values = in_order(paths, values);
        if values.len() != paths.len() {
            return Err(ResolveError::Unavailable(
                "resolve response lacks a requested secret".into(),
            ));
        }
        Ok(Resolved { grant, values })
    }

    /// Decrypt one resolved secret, reusing the cached value of the same version.
    async fn open(
        &self,
        tenant: TenantId,
        secret: ResolvedSecret,
    ) -> Result<Arc<CachedValue>, ResolveError> {
        let path = SecretPath::parse(&secret.path).map_err(|e| {
            ResolveError::Unavailable(format!("resolve returned an invalid path: {e}"))
        })?;
        if let Some(cached) = self.caches.value(tenant, &path).await {
            if cached.version == secret.version {
                return Ok(cached);
            }
        }
        let aad = SecretAad {
            tenant,
            path: path.as_str(),
            version: secret.version,
        };
        let value = envelope::open(self.kms.as_ref(), &aad, &secret.envelope)
            .await
            .map_err(|e| decrypt_error(&path, e))?;
        let allowed_hosts = secret
            .allowed_hosts
            .iter()
            .filter_map(|h| HostPattern::parse(h).ok())
            .collect();
        let value = CachedValue::new(
            path,
            secret.version,
            value,
            secret.sensitivity,
            allowed_hosts,
        )
        .map_err(|e| ResolveError::Unavailable(e.to_string()))?;
        let value = Arc::new(value);
        self.caches.put_value(tenant, value.clone()).await;
        Ok(value)
    }

    /// Map a failed resolve; a token the control plane calls dead is remembered as such.
    async fn refused(&self, token: &AgentToken, error: CpError) -> ResolveError {
        match error {
            CpError::Refused { body, .. } => {
                let code = body.error.code;
                // Only revoked/expired mark the token id dead: the control plane says those only
                // after the token's secret part verified. `token_invalid` may come from a forged
                // string carrying someone else's id, which must not lock that token out.
                if matches!(code, ErrorCode::TokenRevoked | ErrorCode::TokenExpired) {
                    self.caches.mark_dead(token.id()).await;
                }
                if matches!(
                    code,
                    ErrorCode::TokenInvalid | ErrorCode::TokenRevoked | ErrorCode::TokenExpired
                ) {
                    self.caches.drop_grant(&token.cache_key()).await;
                }
                ResolveError::Denied {
                    code,
                    message: body.error.message,
                }
            }
            other => ResolveError::Unavailable(other.to_string()),
        }
    }
}

fn check_grant(grant: &CachedGrant, client_ip: IpAddr) -> Result<(), ResolveError> {
    if grant.is_expired() {
        return Err(denied(ErrorCode::TokenExpired, "token has expired"));
    }
    if !grant.allows_ip(client_ip) {
        return Err(denied(
            ErrorCode::IpNotAllowed,
            format!("client address {client_ip} is not in the token's ip_allowlist"),
        ));
    }
    Ok(())
}

/// `values` re-ordered to follow `paths` (each path once).
fn in_order(
    paths: &[SecretPath],
    values: impl IntoIterator<Item = Arc<CachedValue>>,
) -> Vec<Arc<CachedValue>> {
    let values: Vec<_> = values.into_iter().collect();
    paths
        .iter()
        .filter_map(|p| values.iter().find(|v| &v.path == p).cloned())
        .collect()
}

fn denied(code: ErrorCode, message: impl Into<String>) -> ResolveError {
    ResolveError::Denied {
        code,
        message: message.into(),
    }
}

fn not_bound(path: &SecretPath, destination: &Destination) -> ResolveError {
    denied(
        ErrorCode::DestinationNotAllowed,
        format!("`{path}` may not be sent to {destination}"),
    )
}

fn decrypt_error(path: &SecretPath, error: EnvelopeError) -> ResolveError {
    match error {
        EnvelopeError::Kms(KmsError::Unavailable(reason) | KmsError::Io(reason)) => {
            ResolveError::Kms(reason)
        }
        other => ResolveError::Decrypt {
            path: path.to_string(),
            reason: other.to_string(),
        },
    }
}
