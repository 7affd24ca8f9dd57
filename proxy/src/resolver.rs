//! Just-in-time secrets: may this token send these secrets to this host, and what are they?
//!
//! Over 400 lines: the warm and cold paths of one decision, side by side to keep one check order.
//!
//! On a warm grant and warm values every check runs locally, with no control-plane call, and
//! it is the control plane's own rule: `agent_secret_core::policy` (expiry, client IP against
//! the grant's allowlist, scope on each path, then per path sensitivity against the approved
//! level and destination binding against the host actually dialled), in the same order, so a
//! request gets the same code warm or cold. Anything missing goes to `POST
//! /v1/sidecar/resolve` (for the missing paths only when the grant is warm), and the returned
//! envelopes are opened here with the tenant's KEK through the [`Kms`] trait: the control plane
//! never sees plaintext. What it returns is checked against the same policy before it is
//! used. A cached value whose version matches the resolved one is reused without another
//! unwrap.
//!
//! A use of a `max_uses` token comes back as a reservation. If the value cannot be injected
//! after all — the KMS is down or its answer fails an integrity check, the envelope does not
//! open, or (through [`Resolver::release`]) the request is refused later, before substitution
//! — the reservation is released at once, so the agent's retry still has its use. One that is
//! never released is spent at the control plane's deadline (the request went out, or the
//! sidecar could not say otherwise).

use std::net::IpAddr;
use std::sync::Arc;

use agent_secret_core::api::{
    ErrorCode, ReleaseUseRequest, ResolveRequest, ResolveResponse, ResolvedSecret,
    MAX_USER_AGENT_CHARS,
};
use agent_secret_core::envelope::{self, EnvelopeError, SecretAad};
use agent_secret_core::host::{Destination, HostPattern};
use agent_secret_core::ids::TenantId;
use agent_secret_core::kms::{Kms, KmsFault};
use agent_secret_core::path::SecretPath;
use agent_secret_core::policy::{self, Denial};
use chrono::{DateTime, Utc};

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
    /// The reserved use of a `max_uses` token, to [`Resolver::release`] if the values are not
    /// injected after all.
    pub reservation: Option<String>,
    /// Paths the control plane resolved for this request: it recorded their `secret.read`
    /// in the transaction that counted the use, so the sidecar does not report them again
    /// (a cold injection is one event; a warm one, which the control plane never sees, is
    /// the sidecar's). Empty on the warm path.
    pub recorded: Vec<SecretPath>,
}

/// Why secrets could not be resolved. Messages name paths and hosts, never values or tokens.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{code}: {message}")]
    Denied {
        code: ErrorCode,
        message: String,
        /// The path refused, when the refusal concerns one path (for the audit record).
        path: Option<SecretPath>,
        /// The control plane decided this refusal and wrote it to the audit log itself, so
        /// the sidecar does not report it again (one event per refusal).
        recorded: bool,
    },
    #[error("control plane unavailable: {0}")]
    Unavailable(String),
    #[error("key service unavailable: {0}")]
    Kms(String),
    /// The KMS answered, but its answer failed a check (CRC32C, key name, verified flags).
    #[error("key service answer for `{path}` failed an integrity check: {reason}")]
    KmsIntegrity { path: String, reason: String },
    #[error("secret `{path}` could not be decrypted: {reason}")]
    Decrypt { path: String, reason: String },
}

impl ResolveError {
    /// The path a denial concerns, if it concerns one.
    pub fn denied_path(&self) -> Option<&SecretPath> {
        match self {
            ResolveError::Denied { path, .. } => path.as_ref(),
            _ => None,
        }
    }

    /// Whether the control plane already audited this refusal.
    pub fn recorded(&self) -> bool {
        matches!(self, ResolveError::Denied { recorded: true, .. })
    }

    /// The code the agent sees for this error (see `Denial::from`), also the reason given
    /// when a reservation is released because of it.
    pub fn code(&self) -> &'static str {
        match self {
            ResolveError::Denied { code, .. } => code.as_str(),
            ResolveError::Unavailable(_) => ErrorCode::ControlPlaneUnavailable.as_str(),
            ResolveError::Kms(_) => ErrorCode::KmsUnavailable.as_str(),
            ResolveError::KmsIntegrity { .. } => ErrorCode::KmsIntegrityFailed.as_str(),
            ResolveError::Decrypt { .. } => ErrorCode::Internal.as_str(),
        }
    }
}

impl From<Denial> for ResolveError {
    fn from(denial: Denial) -> Self {
        ResolveError::Denied {
            code: denial.error_code(),
            message: denial.message(),
            path: denial.path().cloned(),
            recorded: false,
        }
    }
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
    /// `user_agent` is the agent's, for the control plane's `secret.read` records of what it
    /// resolves.
    pub async fn resolve(
        &self,
        token: &AgentToken,
        paths: &[SecretPath],
        destination: &Destination,
        client_ip: IpAddr,
        user_agent: Option<&str>,
    ) -> Result<Resolved, ResolveError> {
        if self.caches.is_dead(token.id()).await {
            return Err(denied(ErrorCode::TokenRevoked, "token is no longer valid"));
        }
        let now = Utc::now();
        if let Some(grant) = self.warm_grant(&token.cache_key(), now).await {
            let facts = grant.facts();
            let request = policy::Request {
                paths,
                destination,
                client_ip,
                now,
            };
            // The grant and every scope first, as the control plane does.
            policy::admit(&facts, &request)?;
            self.refresh_ahead(&grant, now, token, destination, client_ip, user_agent);
            let mut found = Vec::with_capacity(paths.len());
            let mut missing = Vec::new();
            for path in paths {
                let Some(value) = self.warm_value(grant.tenant, path).await else {
                    missing.push(path.clone());
                    continue;
                };
                if let Err(denial) = policy::check_secret(&facts, &value.facts(), destination) {
                    // The policy decides path by path: a refusal here stands only if every
                    // earlier path was decided here too. Otherwise the control plane answers
                    // for all of them, in its order (an earlier path may not exist).
                    if missing.is_empty() {
                        return Err(denial.into());
                    }
                    return self
                        .remote(token, paths, destination, client_ip, user_agent)
                        .await;
                }
                found.push(value);
            }
            if missing.is_empty() {
                return Ok(Resolved {
                    grant,
                    values: found,
                    reservation: None,
                    recorded: Vec::new(),
                });
            }
            let fetched = self
                .remote(token, &missing, destination, client_ip, user_agent)
                .await?;
            return Ok(Resolved {
                values: in_order(paths, found.into_iter().chain(fetched.values)),
                grant: fetched.grant,
                reservation: fetched.reservation,
                recorded: fetched.recorded,
            });
        }
        self.remote(token, paths, destination, client_ip, user_agent)
            .await
    }

    /// For requests without placeholders: the token's cached grant (checked by the policy:
    /// expiry, client IP), or else the control plane's word on the token (a resolve with no
    /// paths, which reads nothing and counts no use). No request passes on the token's format
    /// alone.
    pub async fn check_token(
        &self,
        token: &AgentToken,
        destination: &Destination,
        client_ip: IpAddr,
        user_agent: Option<&str>,
    ) -> Result<Arc<CachedGrant>, ResolveError> {
        if self.caches.is_dead(token.id()).await {
            return Err(denied(ErrorCode::TokenRevoked, "token is no longer valid"));
        }
        let now = Utc::now();
        match self.warm_grant(&token.cache_key(), now).await {
            Some(grant) => {
                policy::check_grant(&grant.facts(), client_ip, now)?;
                self.refresh_ahead(&grant, now, token, destination, client_ip, user_agent);
                Ok(grant)
            }
            None => Ok(self
                .remote(token, &[], destination, client_ip, user_agent)
                .await?
                .grant),
        }
    }

    /// Renew a cached grant in the background once it is three quarters through its time in
    /// the cache ([`CachedGrant::claim_refresh`]: the first request to see it, one per grant),
    /// so a busy token's grant does not expire under load, when every request in flight would
    /// resolve at once. The renewal is a resolve without paths: it reads no secret, counts no
    /// use, and the control plane audits only a refusal. A refusal drops the grant (a revoked
    /// or expired token is remembered as dead), so a renewal can only end a grant sooner; a
    /// failure leaves the grant to run to its expiry, as if no renewal had been tried.
    fn refresh_ahead(
        &self,
        grant: &CachedGrant,
        now: DateTime<Utc>,
        token: &AgentToken,
        destination: &Destination,
        client_ip: IpAddr,
        user_agent: Option<&str>,
    ) {
        if !grant.claim_refresh(now) {
            return;
        }
        let this = self.clone();
        let token = token.clone();
        let destination = destination.clone();
        let user_agent = user_agent.map(str::to_owned);
        tokio::spawn(async move {
            let renewed = this
                .remote(&token, &[], &destination, client_ip, user_agent.as_deref())
                .await;
            let outcome = match &renewed {
                Ok(_) => "renewed",
                Err(ResolveError::Denied { .. }) => "refused",
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew a cached grant; it runs to its expiry");
                    "failed"
                }
            };
            this.metrics
                .grant_refreshes
                .with_label_values(&[outcome])
                .inc();
        });
    }

    /// A cached grant the policy does not refuse on its lifecycle at `now`; one it refuses
    /// (past its expiry) is dropped, so the control plane gives the final word and the token
    /// is remembered as dead.
    async fn warm_grant(&self, key: &[u8; 32], now: DateTime<Utc>) -> Option<Arc<CachedGrant>> {
        match self.caches.grant(key).await {
            Some(grant) if policy::check_lifecycle(&grant.facts(), now).is_err() => {
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

    /// The tenant's cached value of `path`, counted as a hit or a miss.
    async fn warm_value(&self, tenant: TenantId, path: &SecretPath) -> Option<Arc<CachedValue>> {
        let value = self.caches.value(tenant, path).await;
        match value {
            Some(_) => self.metrics.hot.value_hits.inc(),
            None => self.metrics.hot.value_misses.inc(),
        }
        value
    }

    async fn remote(
        &self,
        token: &AgentToken,
        paths: &[SecretPath],
        destination: &Destination,
        client_ip: IpAddr,
        user_agent: Option<&str>,
    ) -> Result<Resolved, ResolveError> {
        let request = ResolveRequest {
            token: token.expose().to_owned(),
            paths: paths.iter().map(|p| p.as_str().to_owned()).collect(),
            destination_host: destination.to_string(),
            client_ip: client_ip.to_string(),
            user_agent: user_agent.map(|ua| ua.chars().take(MAX_USER_AGENT_CHARS).collect()),
        };
        let response = match self.control_plane.resolve(&request).await {
            Ok(response) => response,
            Err(e) => return Err(self.refused(token, e).await),
        };
        drop(request);
        let reservation = response.reservation.as_ref().map(|r| r.id.clone());
        match self.accept(token, paths, destination, response).await {
            Ok((grant, values)) => Ok(Resolved {
                grant,
                values,
                reservation,
                recorded: paths.to_vec(),
            }),
            Err(e) => {
                if let Some(id) = reservation {
                    self.release_reservation(id, e.code()).await;
                }
                Err(e)
            }
        }
    }

    /// Gives back the reserved use of `resolved` (if any) because its values will not be
    /// injected; `reason` is the denial code the agent gets. Call it for every refusal after a
    /// successful [`Resolver::resolve`] and before the request is forwarded. Waits for the
    /// control plane's answer, so the agent's retry finds the use there; failures are logged
    /// and counted (the use is then spent at the deadline: the safe direction).
    pub async fn release(&self, resolved: &Resolved, reason: &str) {
        if let Some(id) = &resolved.reservation {
            self.release_reservation(id.clone(), reason).await;
        }
    }

    async fn release_reservation(&self, reservation_id: String, reason: &str) {
        let request = ReleaseUseRequest {
            reservation_id,
            reason: Some(reason.to_owned()),
        };
        let outcome = match self.control_plane.release(&request).await {
            Ok(released) => match released.outcome {
                agent_secret_core::api::ReleaseOutcome::Released => "released",
                agent_secret_core::api::ReleaseOutcome::AlreadyReleased => "already_released",
            },
            Err(e) => {
                tracing::warn!(
                    reservation = %request.reservation_id,
                    error = %e,
                    "could not release a reserved use; it is spent at its deadline"
                );
                "failed"
            }
        };
        self.metrics
            .use_releases
            .with_label_values(&[outcome])
            .inc();
    }

    /// The grant and opened values of a resolve response, each value checked by the policy
    /// (sensitivity, `destination`) before it is used: the sidecar does not take the control
    /// plane's word for what it is about to inject.
    async fn accept(
        &self,
        token: &AgentToken,
        paths: &[SecretPath],
        destination: &Destination,
        response: ResolveResponse,
    ) -> Result<(Arc<CachedGrant>, Vec<Arc<CachedValue>>), ResolveError> {
        let grant = CachedGrant::new(response.grant, self.caches.grant_ttl_cap())
            .map_err(|e| ResolveError::Unavailable(e.to_string()))?;
        let grant = Arc::new(grant);
        self.caches
            .put_grant(token.cache_key(), grant.clone())
            .await;
        let mut values = Vec::with_capacity(paths.len());
        for secret in response.secrets {
            let value = self.open(grant.tenant, secret).await?;
            policy::check_secret(&grant.facts(), &value.facts(), destination)?;
            values.push(value);
        }
        let values = in_order(paths, values);
        if values.len() != paths.len() {
            return Err(ResolveError::Unavailable(
                "resolve response lacks a requested secret".into(),
            ));
        }
        Ok((grant, values))
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
            .map_err(|e| self.decrypt_error(&path, e))?;
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

    /// Classify a failed open, counting KMS outages and integrity failures.
    fn decrypt_error(&self, path: &SecretPath, error: EnvelopeError) -> ResolveError {
        let EnvelopeError::Kms(kms) = error else {
            return ResolveError::Decrypt {
                path: path.to_string(),
                reason: error.to_string(),
            };
        };
        match kms.fault() {
            KmsFault::Unavailable => {
                self.metrics
                    .kms_failures
                    .with_label_values(&["unavailable"])
                    .inc();
                ResolveError::Kms(kms.to_string())
            }
            KmsFault::Integrity => {
                self.metrics
                    .kms_failures
                    .with_label_values(&["integrity"])
                    .inc();
                ResolveError::KmsIntegrity {
                    path: path.to_string(),
                    reason: kms.to_string(),
                }
            }
            KmsFault::Other => ResolveError::Decrypt {
                path: path.to_string(),
                reason: kms.to_string(),
            },
        }
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
                    path: None,
                    recorded: recorded_by_control_plane(code),
                }
            }
            other => ResolveError::Unavailable(other.to_string()),
        }
    }
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
        path: None,
        recorded: false,
    }
}

/// The refusals a control plane writes to the audit log as it answers a resolve (its
/// `service::resolve` denials); others (rate limits, its own faults) the sidecar reports.
fn recorded_by_control_plane(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::TokenInvalid
            | ErrorCode::TokenRevoked
            | ErrorCode::TokenExpired
            | ErrorCode::ApprovalPending
            | ErrorCode::ApprovalDenied
            | ErrorCode::IpNotAllowed
            | ErrorCode::UsesExhausted
            | ErrorCode::ScopeDenied
            | ErrorCode::SecretNotFound
            | ErrorCode::DestinationNotAllowed
    )
}
