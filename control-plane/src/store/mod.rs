//! Storage behind narrow, per-domain traits.
//!
//! Over 400 lines: the whole storage contract, each trait method with its audit/locking rule.
//!
//! One implementation (`SqlStore`) serves both SQLite and PostgreSQL with the same SQL; the
//! storage test suite runs every trait method against both. Every mutating method takes the
//! audit event(s) describing it and writes them in the same transaction: if the audit insert
//! fails, the change is rolled back (fail closed). On PostgreSQL every transaction first runs
//! `set_config('app.tenant_id', $1, true)` (i.e. `SET LOCAL`) so row-level security confines it
//! to one tenant, even if a query forgot its `WHERE tenant_id`.
//!
//! Timestamps are stored as integer microseconds since the Unix epoch (UTC) on both backends,
//! so comparisons such as `expires_at > $now` behave identically.

use agent_secret_core::api::{ApprovalStatus, Role, Sensitivity, TokenStatus, Unlocks};
use agent_secret_core::credential::CredentialKind;
use agent_secret_core::envelope::Envelope;
use agent_secret_core::host::HostPattern;
use agent_secret_core::ids::{
    AgentId, ApprovalId, AuditEventId, OperatorId, SecretId, SidecarId, TenantId, TokenId,
};
use agent_secret_core::path::SecretPath;
use agent_secret_core::scope::Scope;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ipnet::IpNet;
use uuid::Uuid;

use crate::audit::{AuditDraft, AuditEvent, AuditEventType};

#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A uniqueness or optimistic-concurrency conflict; the message names the resource.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Anything the database refused or failed at. Logged, never sent to clients.
    #[error("database error: {0}")]
    Database(String),
    /// A stored row that does not decode (e.g. a scope that no longer parses).
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantRecord {
    pub id: TenantId,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorRecord {
    pub id: OperatorId,
    pub tenant_id: TenantId,
    pub name: String,
    pub role: Role,
    /// HMAC-SHA256(pepper, secret part) of the operator API token.
    pub key_hash: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SidecarRecord {
    pub id: SidecarId,
    pub tenant_id: TenantId,
    pub name: String,
    pub key_hash: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// When it last authenticated (recorded at most once a minute) and the version it reported.
    pub last_seen_at: Option<DateTime<Utc>>,
    pub last_version: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentRecord {
    pub id: AgentId,
    pub tenant_id: TenantId,
    pub name: String,
    pub trust_tier: i32,
    /// The id embedded in the current agent key; changes on rotation.
    pub key_id: Uuid,
    pub key_hash: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub key_rotated_at: Option<DateTime<Utc>>,
    /// Set by [`AgentStore::revoke_agent`]; a revoked agent's key is out of the credential
    /// index and it is never rotated again.
    pub revoked_at: Option<DateTime<Utc>>,
    /// The scopes the agent may ever be granted (see `docs/approvals.md`).
    pub ceiling: Vec<Scope>,
    /// The operator who created it; `None` for agents older than ceilings.
    pub created_by: Option<OperatorId>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretRecord {
    pub id: SecretId,
    pub tenant_id: TenantId,
    pub path: SecretPath,
    pub sensitivity: Sensitivity,
    pub allowed_hosts: Vec<HostPattern>,
    pub current_version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One resolve's question to [`TokenStore::resolve_snapshots`]: this token, these paths.
#[derive(Clone, Copy, Debug)]
pub struct SnapshotAsk<'a> {
    pub id: TokenId,
    pub paths: &'a [SecretPath],
}

/// What a resolve read: the token (if it exists in the tenant) and the secrets it was admitted
/// to read.
pub type Snapshot = (Option<TokenRecord>, Vec<StoredSecret>);

/// A secret's metadata with the envelope of its current version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSecret {
    pub record: SecretRecord,
    pub envelope: Envelope,
}

/// A new version to write. `version` is [`SecretStore::last_secret_version`] + 1 as read by the
/// caller (1 for a path never written); the envelope's AAD already binds it, so the store must
/// refuse to write it under any other number (`StoreError::Conflict` when another writer got
/// there first).
#[derive(Clone, Debug)]
pub struct NewSecretVersion {
    pub path: SecretPath,
    pub version: i64,
    pub sensitivity: Sensitivity,
    pub allowed_hosts: Vec<HostPattern>,
    pub envelope: Envelope,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: TokenId,
    pub tenant_id: TenantId,
    pub agent_id: AgentId,
    pub scopes: Vec<Scope>,
    pub key_hash: Vec<u8>,
    /// Stored states only: `PendingApproval`, `Active`, `Denied`, `Revoked`.
    pub status: TokenStatus,
    pub approved_sensitivity: Sensitivity,
    pub ip_allowlist: Vec<IpNet>,
    pub max_uses: Option<i64>,
    pub uses: i64,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A request for human approval: of one pending token, or (no token) of an operator's request
/// to widen an agent's ceiling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalRecord {
    pub id: ApprovalId,
    pub tenant_id: TenantId,
    pub token_id: Option<TokenId>,
    pub agent_id: AgentId,
    /// `agent:<id>` or `operator:<id>`.
    pub requested_by: String,
    pub status: ApprovalStatus,
    /// What approving unlocks, as last evaluated, and its digest.
    pub unlocks: Unlocks,
    pub digest: [u8; 32],
    pub required_approvals: u8,
    pub delay_seconds: u64,
    pub time_lock_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
}

/// One human's decision on one digest of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecisionRecord {
    pub request_id: ApprovalId,
    pub operator_id: OperatorId,
    pub approve: bool,
    pub digest: [u8; 32],
    pub comment: Option<String>,
    pub decided_at: DateTime<Utc>,
}

/// A token to issue: active, or pending with its approval request, checked against the
/// agent's ceiling as it stands when the row is locked.
pub struct NewToken<'a> {
    pub token: &'a TokenRecord,
    pub approval: Option<&'a ApprovalRecord>,
    pub audit: Vec<AuditDraft>,
    /// Whether the token may be issued under the agent's ceiling as stored at commit time
    /// (a concurrent `agent deny` serialises with the issue on the agent row).
    pub allowed: &'a (dyn Fn(&[Scope]) -> bool + Send + Sync),
}

/// What [`TokenStore::issue_token`] did. Nothing is written unless `Issued`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssueOutcome {
    Issued,
    /// The agent is revoked (or gone).
    AgentRevoked,
    /// The ceiling changed under the request and no longer allows it.
    OutsideCeiling,
}

/// How a pending request ends, in [`ApprovalStore::settle_approval`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settlement {
    /// Quorum and delay met: the token turns active at `sensitivity` and `ceiling_additions`
    /// join the agent's ceiling.
    Approved {
        sensitivity: Sensitivity,
        ceiling_additions: Vec<Scope>,
    },
    /// Nobody decided before `expires_at`: the token is denied.
    Expired,
}

/// What [`ApprovalStore::record_decision`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecisionOutcome {
    Recorded,
    /// The request is no longer pending (decided, expired); nothing written.
    NotPending,
    /// This human already decided on this digest; nothing written.
    Duplicate,
    NotFound,
}

/// Why a conditional use did not count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UseOutcome {
    /// Counted; the token's `uses` after this one.
    Counted { uses: i64 },
    /// The row did not satisfy the condition (revoked, expired, inactive or exhausted) at the
    /// moment of the update; nothing was written, the audit events included.
    Refused,
}

#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub types: Vec<AuditEventType>,
    /// Return events with `seq > after_seq` (paging), in `seq` order.
    pub after_seq: Option<i64>,
    pub limit: Option<i64>,
    /// Exactly this actor (`token:<id>`, `operator:<id>`, ...).
    pub actor: Option<String>,
    /// Paths starting with this text (`prod/` for everything under `prod`).
    pub path_prefix: Option<String>,
}

/// Maps a credential id to the tenant that owns it, so a request can be placed in its tenant
/// before any tenant-scoped (row-level-secured) lookup. Holds no secret material.
#[async_trait]
pub trait CredentialIndex {
    async fn lookup_credential(&self, id: Uuid) -> StoreResult<Option<(TenantId, CredentialKind)>>;
}

#[async_trait]
pub trait TenantStore {
    /// Creates the tenant with its first admin operator (indexed as a credential) and a
    /// `tenant.created` event starting the tenant's audit chain.
    async fn create_tenant(
        &self,
        tenant: &TenantRecord,
        admin: &OperatorRecord,
        audit: AuditDraft,
    ) -> StoreResult<()>;
    async fn get_tenant(&self, id: TenantId) -> StoreResult<Option<TenantRecord>>;
}

#[async_trait]
pub trait OperatorStore {
    async fn create_operator(
        &self,
        operator: &OperatorRecord,
        audit: AuditDraft,
    ) -> StoreResult<()>;
    async fn get_operator(
        &self,
        tenant: TenantId,
        id: OperatorId,
    ) -> StoreResult<Option<OperatorRecord>>;
    async fn list_operators(&self, tenant: TenantId) -> StoreResult<Vec<OperatorRecord>>;
    /// Sets `revoked_at`, unless that would leave the tenant without an active admin; the
    /// check and the update are serialised per tenant (behind the audit chain's row lock), so
    /// two admins revoking each other at once cannot both succeed.
    async fn revoke_operator(
        &self,
        tenant: TenantId,
        id: OperatorId,
        at: DateTime<Utc>,
        audit: AuditDraft,
    ) -> StoreResult<OperatorRevocation>;
}

/// What [`OperatorStore::revoke_operator`] did. Nothing is written unless `Revoked`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperatorRevocation {
    Revoked,
    NotFound,
    AlreadyRevoked,
    /// The operator is the tenant's last active admin.
    LastAdmin,
}

#[async_trait]
pub trait SidecarStore {
    async fn create_sidecar(&self, sidecar: &SidecarRecord, audit: AuditDraft) -> StoreResult<()>;
    async fn get_sidecar(
        &self,
        tenant: TenantId,
        id: SidecarId,
    ) -> StoreResult<Option<SidecarRecord>>;
    async fn list_sidecars(&self, tenant: TenantId) -> StoreResult<Vec<SidecarRecord>>;
    /// Records a sidecar's heartbeat: not audited (it is not an operation on anything).
    async fn sidecar_seen(
        &self,
        tenant: TenantId,
        id: SidecarId,
        at: DateTime<Utc>,
        version: Option<&str>,
    ) -> StoreResult<()>;
    /// `Ok(false)` if the sidecar does not exist or was already revoked (no event written).
    async fn revoke_sidecar(
        &self,
        tenant: TenantId,
        id: SidecarId,
        at: DateTime<Utc>,
        audit: AuditDraft,
    ) -> StoreResult<bool>;
}

#[async_trait]
pub trait AgentStore {
    async fn create_agent(&self, agent: &AgentRecord, audit: AuditDraft) -> StoreResult<()>;
    async fn get_agent(&self, tenant: TenantId, id: AgentId) -> StoreResult<Option<AgentRecord>>;
    /// The agent whose current key has this credential id (how agent keys authenticate).
    async fn get_agent_by_key(
        &self,
        tenant: TenantId,
        key_id: Uuid,
    ) -> StoreResult<Option<AgentRecord>>;
    async fn list_agents(&self, tenant: TenantId) -> StoreResult<Vec<AgentRecord>>;
    /// Replaces the agent key (re-indexing the credential) and revokes every unrevoked token of
    /// the agent, in one transaction. Returns the number of tokens revoked.
    /// `NotFound` if the agent does not exist.
    async fn rotate_agent_key(
        &self,
        tenant: TenantId,
        id: AgentId,
        new_key_id: Uuid,
        new_key_hash: Vec<u8>,
        at: DateTime<Utc>,
        audit: AuditDraft,
    ) -> StoreResult<u64>;
    /// Revokes the agent for good, in one transaction: its key leaves the credential index,
    /// `revoked_at` is set (a later rotation is refused) and every unrevoked token it holds is
    /// revoked. Appends `audit` and, per revoked token, `token_audit` with the token id in its
    /// reason. Returns the number of tokens revoked. `NotFound` if the agent does not exist,
    /// `Conflict` if it is already revoked.
    async fn revoke_agent(
        &self,
        tenant: TenantId,
        id: AgentId,
        at: DateTime<Utc>,
        audit: AuditDraft,
        token_audit: AuditDraft,
    ) -> StoreResult<u64>;
    /// Sets the agent's trust tier with its audit event. `Ok(false)` if there is no such agent.
    async fn set_trust_tier(
        &self,
        tenant: TenantId,
        id: AgentId,
        tier: i32,
        audit: AuditDraft,
    ) -> StoreResult<bool>;
    /// Replaces the agent's ceiling and, in the same transaction, revokes each unrevoked token
    /// for which `outside` holds under the new ceiling (appending `token_audit(id)` for each).
    async fn set_ceiling(
        &self,
        tenant: TenantId,
        id: AgentId,
        ceiling: &[Scope],
        audit: AuditDraft,
        outside: &(dyn for<'s> Fn(&'s [Scope]) -> bool + Send + Sync),
        token_audit: &(dyn Fn(TokenId) -> AuditDraft + Send + Sync),
    ) -> StoreResult<CeilingChange>;
}

/// What [`AgentStore::set_ceiling`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CeilingChange {
    /// Stored; these tokens fell outside it and were revoked in the same transaction.
    Set {
        revoked: Vec<TokenId>,
    },
    NotFound,
    /// The agent is revoked: its ceiling no longer matters.
    Revoked,
}

/// Human approval of pending tokens. Every state change is conditional on the request still
/// being `pending`, so of several replicas settling the same request exactly one does.
#[async_trait]
pub trait ApprovalStore {
    async fn get_approval(
        &self,
        tenant: TenantId,
        id: ApprovalId,
    ) -> StoreResult<Option<(ApprovalRecord, Vec<DecisionRecord>)>>;
    async fn get_approval_for_token(
        &self,
        tenant: TenantId,
        token: TokenId,
    ) -> StoreResult<Option<(ApprovalRecord, Vec<DecisionRecord>)>>;
    /// Files a request without a token (an operator asking to widen `approval.agent_id`'s
    /// ceiling), with its audit event. `Conflict` if the agent is revoked or gone.
    async fn insert_access_request(
        &self,
        approval: &ApprovalRecord,
        audit: AuditDraft,
    ) -> StoreResult<()>;
    /// Newest first, at most `limit`.
    async fn list_approvals(
        &self,
        tenant: TenantId,
        status: Option<ApprovalStatus>,
        limit: i64,
    ) -> StoreResult<Vec<(ApprovalRecord, Vec<DecisionRecord>)>>;
    /// Ids of pending requests, oldest first (the activation task's work list).
    async fn pending_approvals(&self, tenant: TenantId, limit: i64)
        -> StoreResult<Vec<ApprovalId>>;
    /// Records a decision on a pending request with its audit event. A denial also ends the
    /// request (`denied`) and denies its token, in the same transaction.
    async fn record_decision(
        &self,
        tenant: TenantId,
        decision: &DecisionRecord,
        audit: AuditDraft,
    ) -> StoreResult<DecisionOutcome>;
    /// Stores a re-evaluation of a pending request: what it unlocks now (a new digest voids
    /// earlier approvals), its requirement and time lock. `audit` is appended when given (the
    /// digest changed). `false` if it is no longer pending.
    async fn update_evaluation(
        &self,
        tenant: TenantId,
        approval: &ApprovalRecord,
        audit: Option<AuditDraft>,
    ) -> StoreResult<bool>;
    /// Ends a pending request as `settlement` says, with its token (active or denied) and,
    /// when approved, the agent's widened ceiling, in one transaction with `audit`. `false`
    /// (nothing written) if it was no longer pending or the digest changed since it was read.
    async fn settle_approval(
        &self,
        tenant: TenantId,
        id: ApprovalId,
        digest: &[u8; 32],
        settlement: &Settlement,
        at: DateTime<Utc>,
        audit: Vec<AuditDraft>,
    ) -> StoreResult<bool>;
}

/// One stored version of a secret, without its sealed value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretVersionInfo {
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub key_name: String,
    pub key_version: String,
}

#[async_trait]
pub trait SecretStore {
    async fn get_secret(
        &self,
        tenant: TenantId,
        path: &SecretPath,
    ) -> StoreResult<Option<SecretRecord>>;
    /// Secrets whose path equals `prefix` or starts with `prefix/`; all when `None`. Path order.
    async fn list_secrets(
        &self,
        tenant: TenantId,
        prefix: Option<&SecretPath>,
    ) -> StoreResult<Vec<SecretRecord>>;
    async fn put_secret_version(
        &self,
        tenant: TenantId,
        new: &NewSecretVersion,
        audit: AuditDraft,
    ) -> StoreResult<SecretRecord>;
    /// Removes the secret and all its versions (their ciphertexts are gone for good).
    /// `Ok(false)` if it did not exist (no event written).
    async fn delete_secret(
        &self,
        tenant: TenantId,
        path: &SecretPath,
        audit: AuditDraft,
    ) -> StoreResult<bool>;
    /// The highest version `path` has ever had: its current version, or the last version it
    /// reached before it was deleted; 0 for a path never written. A write creates this + 1,
    /// so (path, version) pairs are never reused across delete and re-create.
    async fn last_secret_version(&self, tenant: TenantId, path: &SecretPath) -> StoreResult<i64>;
    /// The versions `path` holds, newest first: numbers, dates and the KEK that wraps each
    /// (what rotation and rewrap change), never their sealed contents.
    async fn list_secret_versions(
        &self,
        tenant: TenantId,
        path: &SecretPath,
    ) -> StoreResult<Vec<SecretVersionInfo>>;
    /// The current version of each existing path; missing paths are simply absent.
    async fn current_secrets(
        &self,
        tenant: TenantId,
        paths: &[SecretPath],
    ) -> StoreResult<Vec<StoredSecret>>;
}

#[async_trait]
pub trait TokenStore {
    /// Inserts an active token (no ceiling check): [`TokenStore::issue_token`] with nothing
    /// pending. `Conflict` if the agent is revoked.
    async fn insert_token(&self, token: &TokenRecord, audit: AuditDraft) -> StoreResult<()>;
    /// Inserts the token and, for a pending one, its approval request, in one transaction
    /// that locks the agent row and re-checks `allowed` against the stored ceiling.
    async fn issue_token(&self, new: NewToken<'_>) -> StoreResult<IssueOutcome>;
    /// The agent's tokens that are not revoked (to re-check them against a new ceiling).
    async fn list_agent_tokens(
        &self,
        tenant: TenantId,
        agent: AgentId,
    ) -> StoreResult<Vec<TokenRecord>>;
    /// The tenant's tokens (or one agent's), newest first, revoked ones included.
    async fn list_tokens(
        &self,
        tenant: TenantId,
        agent: Option<AgentId>,
        limit: u32,
    ) -> StoreResult<Vec<TokenRecord>>;
    async fn get_token(&self, tenant: TenantId, id: TokenId) -> StoreResult<Option<TokenRecord>>;
    /// What a resolve reads, in one read transaction: the token, and, only if `admit`
    /// accepts it, the current version of each of `paths` that exists (in path order).
    /// Checking in between keeps a refused token from touching (or timing) any secret row.
    async fn resolve_snapshot(
        &self,
        tenant: TenantId,
        id: TokenId,
        paths: &[SecretPath],
        admit: &(dyn for<'t> Fn(&'t TokenRecord) -> bool + Send + Sync),
    ) -> StoreResult<Snapshot> {
        let asked = [SnapshotAsk { id, paths }];
        let mut answers = self
            .resolve_snapshots(tenant, &asked, &|_, token| admit(token))
            .await?;
        answers.pop().ok_or(StoreError::NotFound)
    }
    /// [`resolve_snapshot`](Self::resolve_snapshot) for several resolves of one tenant at
    /// once, in one read transaction and one statement per table: each answer (in `asked`
    /// order) is what that resolve alone would have read, and `admit(i, token)` decides for
    /// `asked[i]` as `admit` does there.
    async fn resolve_snapshots(
        &self,
        tenant: TenantId,
        asked: &[SnapshotAsk<'_>],
        admit: &(dyn for<'t> Fn(usize, &'t TokenRecord) -> bool + Send + Sync),
    ) -> StoreResult<Vec<Snapshot>>;
    /// `Ok(false)` if the token does not exist or was already revoked (no event written).
    async fn revoke_token(
        &self,
        tenant: TenantId,
        id: TokenId,
        at: DateTime<Utc>,
        audit: AuditDraft,
    ) -> StoreResult<bool>;
    /// One atomic conditional update: `uses = uses + 1` only if the token is active, unrevoked,
    /// unexpired at `now` and (`max_uses` is null or `uses < max_uses`). On success the audit
    /// events are appended in the same transaction; on refusal nothing is written.
    async fn consume_token_use(
        &self,
        tenant: TenantId,
        id: TokenId,
        now: DateTime<Utc>,
        audit: Vec<AuditDraft>,
    ) -> StoreResult<UseOutcome>;
    /// Group commit of several uses: each is checked and counted in order exactly as by
    /// [`TokenStore::consume_token_use`], the events of those counted are appended together,
    /// and one commit (one fsync, one hold of the tenant's chain lock) serves them all. If the
    /// transaction fails, no use is counted and no event written, for any of them.
    async fn consume_token_uses(
        &self,
        tenant: TenantId,
        uses: Vec<TokenUse>,
    ) -> StoreResult<Vec<UseOutcome>>;
    /// Gives back the use reserved as `reservation` by `sidecar` (see [`TokenUse::reservation`]):
    /// in one transaction the token's `uses` goes down by one, the reservation is marked
    /// released and `audit(token)` is appended — only if it is this sidecar's, unreleased and
    /// before its deadline at `now`. Otherwise nothing is written.
    async fn release_token_use(
        &self,
        tenant: TenantId,
        reservation: Uuid,
        sidecar: SidecarId,
        now: DateTime<Utc>,
        audit: &(dyn Fn(TokenId) -> AuditDraft + Send + Sync),
    ) -> StoreResult<ReleaseResult>;
}

/// A use counted as reserved: it counts against `max_uses` at once, and is spent for good
/// unless `sidecar` releases it before `deadline`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewReservation {
    pub id: Uuid,
    pub sidecar: SidecarId,
    pub deadline: DateTime<Utc>,
}

/// What [`TokenStore::release_token_use`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseResult {
    /// The use was given back.
    Released { token: TokenId },
    /// An earlier release of the same reservation already gave it back.
    AlreadyReleased,
    /// The deadline passed: the use stands.
    Expired,
    /// No such reservation of this sidecar (another sidecar's is never visible here).
    NotFound,
}

/// One use of a token to count, with the events it writes when counted.
#[derive(Clone, Debug)]
pub struct TokenUse {
    pub id: TokenId,
    pub now: DateTime<Utc>,
    pub audit: Vec<AuditDraft>,
    /// Record the counted use as a reservation the sidecar may release (`max_uses` tokens).
    pub reservation: Option<NewReservation>,
}

#[async_trait]
pub trait AuditStore {
    /// Appends one event to the tenant's chain in its own transaction.
    async fn append_audit(&self, tenant: TenantId, draft: AuditDraft) -> StoreResult<AuditEvent>;
    /// Appends several events in one transaction: all of them or none.
    async fn append_audit_batch(
        &self,
        tenant: TenantId,
        drafts: Vec<AuditDraft>,
    ) -> StoreResult<Vec<AuditEvent>>;
    async fn list_audit(
        &self,
        tenant: TenantId,
        filter: &AuditFilter,
    ) -> StoreResult<Vec<AuditEvent>>;
    /// The chain position of the tenant's event `id` (an export cursor), if it exists.
    async fn audit_event_seq(&self, tenant: TenantId, id: AuditEventId)
        -> StoreResult<Option<i64>>;
    /// The tenant's chain head: last `seq` and `hash` (None before the first event).
    async fn audit_head(&self, tenant: TenantId) -> StoreResult<Option<(i64, [u8; 32])>>;
    /// Marks up to `limit` tokens expired by `now` as recorded and appends a `token.expired`
    /// event for each that was still live (active or pending, unrevoked), in one transaction:
    /// the conditional UPDATE that marks a token claims it, so across replicas every token's
    /// expiry is recorded exactly once. Returns how many tokens were marked.
    async fn record_token_expiries(
        &self,
        tenant: TenantId,
        now: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<usize>;
}

/// The KEK primary version last recorded for a tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedKey {
    pub key_name: String,
    pub primary_version: String,
    /// When this primary was first recorded.
    pub observed_at: DateTime<Utc>,
    /// Set while a replica holds the rotation lease.
    pub rotation_claimed_at: Option<DateTime<Utc>>,
}

/// What [`KeyStore::record_primary`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrimaryChange {
    /// First sight of this tenant's key: recorded, no event.
    First,
    /// Already recorded (by this or another replica), or an older version than recorded.
    Unchanged,
    /// The primary moved on from `previous`; the `kms.rotated` event was appended.
    Rotated { previous: String },
}

/// How many stored DEKs one KEK version wraps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DekCount {
    pub key_name: String,
    pub key_version: String,
    pub deks: i64,
}

/// One stored, wrapped DEK with what its AAD binds: enough to re-wrap it, no plaintext.
#[derive(Clone, Debug)]
pub struct StoredDek {
    pub secret_id: String,
    pub path: SecretPath,
    pub version: i64,
    pub key_name: String,
    pub key_version: String,
    pub wrapped_dek: Vec<u8>,
}

/// `dek` re-wrapped under `key_name`/`key_version` as `wrapped_dek`.
#[derive(Clone, Debug)]
pub struct RewrappedDek {
    pub old: StoredDek,
    pub key_name: String,
    pub key_version: String,
    pub wrapped_dek: Vec<u8>,
}

/// KEK bookkeeping: rotation lease, observed primaries, and the inventory of wrapped DEKs.
#[async_trait]
pub trait KeyStore {
    /// Every tenant, from the credential index (each tenant has at least its admin operator).
    async fn list_tenant_ids(&self) -> StoreResult<Vec<TenantId>>;
    async fn recorded_key(&self, tenant: TenantId) -> StoreResult<Option<RecordedKey>>;
    /// Records `key_version` of `key_name` as the primary. A version numerically above the
    /// recorded one replaces it and appends `audit` in the same transaction; of several
    /// replicas recording the same change, exactly one gets `Rotated`.
    async fn record_primary(
        &self,
        tenant: TenantId,
        key_name: &str,
        key_version: &str,
        audit: AuditDraft,
    ) -> StoreResult<PrimaryChange>;
    /// Takes the rotation lease if the recorded primary is still `expected_version` and no
    /// claim newer than `stale_before` exists. True for exactly one caller.
    async fn claim_rotation(
        &self,
        tenant: TenantId,
        expected_version: &str,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Releases a lease taken by [`KeyStore::claim_rotation`] whose rotation failed.
    async fn release_rotation(&self, tenant: TenantId) -> StoreResult<()>;
    /// DEK counts per KEK version, ordered by key name and version.
    async fn dek_inventory(&self, tenant: TenantId) -> StoreResult<Vec<DekCount>>;
    /// Up to `limit` DEKs not wrapped under (`key_name`, `key_version`), after the
    /// (secret id, version) cursor, in that order.
    async fn deks_not_under(
        &self,
        tenant: TenantId,
        key_name: &str,
        key_version: &str,
        after: Option<(&str, i64)>,
        limit: i64,
    ) -> StoreResult<Vec<StoredDek>>;
    /// Replaces each DEK that is still exactly as read (compare-and-swap on key and wrapped
    /// bytes), appending `audit` in the same transaction if any was replaced. Returns how many
    /// were; a DEK deleted or changed meanwhile is skipped, never overwritten.
    async fn replace_wrapped_deks(
        &self,
        tenant: TenantId,
        rewrapped: &[RewrappedDek],
        audit: AuditDraft,
    ) -> StoreResult<u64>;
}

/// One of a tenant's Ed25519 audit keys (`crate::audit_checkpoint`): the public half in the
/// clear, the private half (PKCS#8) sealed like a secret.
#[derive(Clone)]
pub struct AuditKeyRecord {
    pub key_id: String,
    pub public_key: Vec<u8>,
    pub envelope: Envelope,
    pub created_at: DateTime<Utc>,
}

/// When a tenant's chain is due a checkpoint: after this many events since the last one, or
/// this long after it (if anything happened since).
#[derive(Clone, Copy, Debug)]
pub struct CheckpointDue {
    pub every_events: i64,
    pub every: chrono::Duration,
}

#[async_trait]
pub trait CheckpointStore {
    /// The tenant's audit keys, oldest first.
    async fn audit_keys(&self, tenant: TenantId) -> StoreResult<Vec<AuditKeyRecord>>;
    async fn insert_audit_key(&self, tenant: TenantId, key: &AuditKeyRecord) -> StoreResult<()>;
    /// Under the tenant row's lock: if a checkpoint is due at `now`, appends the event `sign`
    /// makes for the head (its `seq` and hash) and records it as the last checkpoint. `None`
    /// when none was due (another replica may just have written it). Exactly one replica
    /// checkpoints a head.
    async fn append_checkpoint(
        &self,
        tenant: TenantId,
        now: DateTime<Utc>,
        due: CheckpointDue,
        sign: &(dyn Fn(i64, [u8; 32]) -> AuditDraft + Send + Sync),
    ) -> StoreResult<Option<AuditEvent>>;
}

/// Where each SIEM sink is in each tenant's chain (`crate::service::siem`).
#[async_trait]
pub trait SinkCursorStore {
    /// The last position delivered to `sink` (0 before the first delivery).
    async fn sink_cursor(&self, tenant: TenantId, sink: &str) -> StoreResult<i64>;
    /// Every cursor the tenant has: `(sink, last_seq)`.
    async fn sink_cursors(&self, tenant: TenantId) -> StoreResult<Vec<(String, i64)>>;
    /// Moves the cursor from `from` to `to`; `false` (nothing changed) if it was not at `from`
    /// any more.
    async fn advance_sink_cursor(
        &self,
        tenant: TenantId,
        sink: &str,
        from: i64,
        to: i64,
    ) -> StoreResult<bool>;
}

/// Where a tenant's chain starts in the database after an archive (docs/operations.md, "Audit
/// retention"): the events `first_seq..=through_seq` were exported to a file whose SHA-256
/// is `file_sha256`, then deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveMarker {
    pub first_seq: i64,
    pub through_seq: i64,
    /// The hash of event `through_seq`: the next event's `prev_hash`.
    pub through_hash: [u8; 32],
    pub events: i64,
    pub file_sha256: String,
    pub archived_at: DateTime<Utc>,
}

#[async_trait]
pub trait ArchiveStore {
    /// The latest archive marker, if the tenant's log was ever archived.
    async fn audit_archive(&self, tenant: TenantId) -> StoreResult<Option<ArchiveMarker>>;
    /// In one transaction: checks that event `through_seq` still has `through_hash`, records
    /// `marker`, deletes the tenant's events through it and appends `audit` (the
    /// `audit.archived` event). Lifting the append-only trigger for the delete needs the
    /// tables' owner: on PostgreSQL the service role gets an error and nothing changes.
    /// Returns how many events were deleted.
    async fn archive_audit(
        &self,
        tenant: TenantId,
        marker: &ArchiveMarker,
        audit: AuditDraft,
    ) -> StoreResult<u64>;
}

/// Everything the API needs, as one object-safe bound.
#[async_trait]
pub trait Store:
    CredentialIndex
    + TenantStore
    + OperatorStore
    + SidecarStore
    + AgentStore
    + SecretStore
    + TokenStore
    + ApprovalStore
    + AuditStore
    + CheckpointStore
    + SinkCursorStore
    + ArchiveStore
    + KeyStore
    + OperatorAccountStore
    + Send
    + Sync
    + 'static
{
    /// Readiness: the database answers.
    async fn ping(&self) -> StoreResult<()>;
}

pub mod operator_accounts;
pub mod sql;

pub use operator_accounts::{
    ActiveSession, LockoutPolicy, NewSession, OperatorAccount, OperatorAccountStore, SessionStart,
};
