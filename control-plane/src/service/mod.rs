//! Domain operations of the control plane, free of HTTP and SQL.
//!
//! Handlers parse a request, call one function here with an authenticated principal, and map
//! the `ServiceError` to a status in exactly one place (`api::error`). Every function that
//! changes state hands its audit event to the store, which writes both in one transaction.

pub mod activation;
pub mod agent_view;
pub mod agents;
pub mod alerts;
pub mod approvals;
pub mod audit_archive;
pub mod audit_log;
pub mod auth;
pub mod batching;
pub mod ceilings;
pub mod checkpoints;
pub mod decisions;
pub mod enrollment;
pub mod expiry;
pub mod kms;
pub mod limits;
pub mod notify;
pub mod operators;
pub mod principal;
pub mod release;
pub mod resolve;
pub mod secrets;
pub mod sessions;
pub mod sidecars;
pub mod siem;
pub mod tenants;
pub mod tokens;
pub mod trust_tiers;
pub mod unlocks;
pub mod verified_sidecars;
pub mod watch;
pub mod workload_identity;

use std::net::IpAddr;
use std::sync::Arc;

use agent_secret_core::api::ErrorCode;
use agent_secret_core::credential::Pepper;
use agent_secret_core::envelope::EnvelopeError;
use agent_secret_core::ids::TenantId;
use agent_secret_core::kms::{Kms, KmsError, KmsFault};

use crate::audit::AuditDraft;
use crate::events::EventHub;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// Limits an installation sets for every tenant.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Longest TTL a token may ask for; longer requests are refused, not silently shortened.
    pub max_token_ttl_seconds: u64,
    /// How long a sidecar may cache a resolved grant (never for `max_uses` tokens).
    pub grant_cache_ttl_seconds: u64,
    /// How long a reserved use of a `max_uses` token may be released by the sidecar that
    /// resolved it (its value was never injected); after that the use is spent for good. 0
    /// turns reservations off: every use is spent at resolve.
    pub use_reservation_seconds: u64,
    /// How often the expiry sweeper runs (`service::expiry`).
    pub token_expiry_sweep: std::time::Duration,
    /// `[audit]`: when the chain is checkpointed (`service::checkpoints`).
    pub checkpoints: checkpoints::CheckpointSettings,
    /// `[[audit.sinks]]`: the SIEMs the log is pushed to (`service::siem`).
    pub audit_sinks: Vec<siem::SinkSettings>,
    /// `[approvals]`: who must approve what, and who may.
    pub approvals: approvals::ApprovalSettings,
    /// `[alerts]`: the anomaly rules and what their hits do (`service::alerts`). Off here;
    /// the configuration's default turns them on.
    pub alerts: alerts::AlertSettings,
    /// How long a verified sidecar key is taken on trust (`service::verified_sidecars`).
    pub sidecar_auth_cache: std::time::Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_token_ttl_seconds: 86_400,
            grant_cache_ttl_seconds: 30,
            use_reservation_seconds: 60,
            token_expiry_sweep: std::time::Duration::from_secs(10),
            checkpoints: checkpoints::CheckpointSettings::default(),
            audit_sinks: Vec::new(),
            approvals: approvals::ApprovalSettings::default(),
            alerts: alerts::AlertSettings::off(),
            sidecar_auth_cache: std::time::Duration::from_secs(5),
        }
    }
}

/// Everything a request needs. Cheap to share behind an `Arc`.
pub struct App {
    pub store: Arc<dyn Store>,
    pub kms: Arc<dyn Kms>,
    pub pepper: Arc<Pepper>,
    pub policy: Policy,
    pub metrics: Arc<Metrics>,
    pub events: Arc<EventHub>,
    /// Batches concurrent resolves' writes of a tenant into one transaction.
    pub group_commit: Arc<batching::GroupCommit>,
    /// Batches concurrent resolves' reads of a tenant into one read transaction.
    pub group_read: Arc<batching::GroupRead>,
    /// Connection caps, timeouts and request rate limits (`[server]`, `[rate_limits]`).
    pub limits: Arc<crate::limits::Limits>,
    /// The optional trust-tier webhook (`[approvals.trust_tier_webhook]`).
    pub trust_tiers: Option<Arc<trust_tiers::TrustTierWebhook>>,
    /// Human logins and sessions (`[sessions]`).
    pub sessions: Arc<sessions::SessionSettings>,
    /// When each sidecar's heartbeat was last written (`sidecars::seen`).
    pub heartbeats: Arc<sidecars::Heartbeats>,
    /// The optional approval notification webhook (`[notifications]`).
    pub notifier: Option<Arc<notify::Notifier>>,
    /// Opened audit keys for checkpoints (`checkpoints`).
    pub signers: Arc<checkpoints::Signers>,
    /// Sidecar keys verified a moment ago (`policy.sidecar_auth_cache`).
    pub verified_sidecars: Arc<verified_sidecars::VerifiedSidecars>,
    /// The sidecar injector webhook (`[kubernetes] injector`).
    pub injector: Option<Arc<crate::kubernetes::Injector>>,
    /// Service-account token exchange (`[kubernetes] identity`).
    pub workload_identity: Option<Arc<workload_identity::WorkloadIdentity>>,
}

impl App {
    pub fn new(
        store: Arc<dyn Store>,
        kms: Arc<dyn Kms>,
        pepper: Arc<Pepper>,
        policy: Policy,
    ) -> App {
        let metrics = Arc::new(Metrics::new());
        let group_commit = Arc::new(batching::GroupCommit::new(
            metrics.resolve_batch_size.clone(),
        ));
        let group_read = Arc::new(batching::GroupRead::new(
            metrics.resolve_read_batch_size.clone(),
        ));
        let verified_sidecars = Arc::new(verified_sidecars::VerifiedSidecars::new(
            policy.sidecar_auth_cache,
        ));
        App {
            store,
            kms,
            pepper,
            policy,
            verified_sidecars,
            metrics,
            events: Arc::new(EventHub::local()),
            group_commit,
            group_read,
            limits: Arc::new(crate::limits::Limits::default()),
            trust_tiers: None,
            sessions: Arc::new(sessions::SessionSettings::default()),
            heartbeats: Arc::new(sidecars::Heartbeats::default()),
            notifier: None,
            signers: Arc::new(checkpoints::Signers::default()),
            injector: None,
            workload_identity: None,
        }
    }

    /// Exchanges projected service-account tokens for scoped tokens (`POST /v1/auth/kubernetes`).
    pub fn with_workload_identity(mut self, identity: workload_identity::WorkloadIdentity) -> App {
        self.workload_identity = Some(Arc::new(identity));
        self
    }

    /// Serves the sidecar injector webhook (`POST /kubernetes/inject`).
    pub fn with_injector(mut self, injector: crate::kubernetes::Injector) -> App {
        self.injector = Some(Arc::new(injector));
        self
    }

    /// Posts each new approval request to a webhook (`[notifications]`): starts the
    /// notifier's worker on the current runtime, counting in this app's metrics.
    pub fn with_notifications(
        mut self,
        settings: notify::NotifierSettings,
    ) -> Result<App, notify::NotifyError> {
        let notifier = notify::Notifier::start(settings, self.metrics.notifications.clone())?;
        self.notifier = Some(Arc::new(notifier));
        Ok(self)
    }

    /// Announces a committed approval request to the notification webhook, if there is one.
    /// Never waits and never fails (see `notify`).
    pub(crate) fn notify_approval(
        &self,
        request: &crate::store::ApprovalRecord,
        agent_name: &str,
        reason: notify::NoticeReason,
    ) {
        if let Some(notifier) = &self.notifier {
            notifier.approval_requested(request, agent_name, reason);
        }
    }

    /// Asks `webhook` for agents' trust tiers instead of using their stored tier.
    pub fn with_trust_tiers(mut self, webhook: trust_tiers::TrustTierWebhook) -> App {
        self.trust_tiers = Some(Arc::new(webhook));
        self
    }

    /// Replaces the default limits, e.g. with the configured ones.
    pub fn with_limits(mut self, limits: crate::limits::Limits) -> App {
        self.limits = Arc::new(limits);
        self
    }

    /// Replaces the default session settings, e.g. with the configured ones.
    pub fn with_sessions(mut self, settings: sessions::SessionSettings) -> App {
        self.sessions = Arc::new(settings);
        self
    }

    /// Replaces the (single-replica) event hub, e.g. with a PostgreSQL-backed one.
    pub fn with_events(mut self, events: EventHub) -> App {
        self.events = Arc::new(events);
        self
    }
}

/// Where a request came from, for the audit log.
#[derive(Clone, Debug, Default)]
pub struct RequestContext {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

impl RequestContext {
    pub fn ip_string(&self) -> Option<String> {
        self.ip.map(|ip| ip.to_string())
    }
}

/// Errors of the domain layer. Messages are safe to show a client: they never contain a secret
/// value or a credential, and internal details stay in `Store`/`Kms`/`Internal`, which the API
/// logs and answers with a generic message.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Bad input; `code` says which kind (`invalid_scope`, `invalid_path`, ...).
    #[error("{message}")]
    Invalid { code: ErrorCode, message: String },
    #[error("missing or invalid credentials")]
    Unauthenticated,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    /// A resolve denial with its stable code.
    #[error("{message}")]
    Denied { code: ErrorCode, message: String },
    /// Too many requests from one agent, sidecar or client address (429 `rate_limited`).
    #[error("{message}")]
    RateLimited {
        /// Whole seconds until a request fits the limit again (the `Retry-After` header).
        retry_after_secs: u64,
        message: String,
    },
    #[error("key management service error")]
    Kms(#[from] KmsError),
    #[error("storage error")]
    Store(#[from] StoreError),
    #[error("internal error")]
    Internal(String),
}

impl ServiceError {
    pub fn invalid(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Invalid {
            code,
            message: message.into(),
        }
    }

    pub fn denied(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Denied {
            code,
            message: message.into(),
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Invalid { code, .. } | Self::Denied { code, .. } => *code,
            Self::Unauthenticated => ErrorCode::Unauthenticated,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Conflict(_) => ErrorCode::Conflict,
            Self::RateLimited { .. } => ErrorCode::RateLimited,
            Self::Kms(e) => match e.fault() {
                KmsFault::Unavailable => ErrorCode::KmsUnavailable,
                KmsFault::Integrity => ErrorCode::KmsIntegrityFailed,
                KmsFault::Other => ErrorCode::Internal,
            },
            Self::Internal(_) => ErrorCode::Internal,
            Self::Store(StoreError::NotFound) => ErrorCode::NotFound,
            Self::Store(StoreError::Conflict(_)) => ErrorCode::Conflict,
            Self::Store(_) => ErrorCode::Unavailable,
        }
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;

/// The error for a failed seal, counted and, for an integrity failure, audited: `draft` (the
/// event the write would have appended) is recorded as failed with `kms_integrity_failed`.
/// An answer that fails its checks means something between us and the KMS corrupts or forges
/// data, which operators must hear about even though nothing was written. If that event cannot
/// be appended either, the failure is logged; the write fails regardless.
pub(crate) async fn sealing_failed(
    app: &App,
    tenant: TenantId,
    draft: AuditDraft,
    error: EnvelopeError,
) -> ServiceError {
    let EnvelopeError::Kms(error) = error else {
        return ServiceError::Internal(error.to_string());
    };
    let fault = match error.fault() {
        KmsFault::Unavailable => "unavailable",
        KmsFault::Integrity => "integrity",
        KmsFault::Other => return ServiceError::Kms(error),
    };
    app.metrics.kms_failures.with_label_values(&[fault]).inc();
    if error.fault() == KmsFault::Integrity {
        let event = draft.failed(ErrorCode::KmsIntegrityFailed.as_str());
        if let Err(e) = app.store.append_audit(tenant, event).await {
            tracing::error!(error = %e, "could not audit a KMS integrity failure");
        }
    }
    ServiceError::Kms(error)
}

/// Names (tenants, agents, sidecars, operators): 1–64 printable ASCII characters, no controls,
/// so they are safe in logs, CSV exports and terminal output.
pub(crate) fn validate_name(name: &str) -> ServiceResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        && name.trim() == name;
    if ok {
        Ok(())
    } else {
        Err(ServiceError::invalid(
            ErrorCode::InvalidRequest,
            "name must be 1-64 printable ASCII characters without leading or trailing spaces",
        ))
    }
}
