//! Rows as the database returns them, and their conversion to and from the store's records.
//!
//! Over 400 lines: one row struct and one conversion per table, kept together so both backends
//! decode every column the same way.
//!
//! Row structs hold only types both backends decode the same way (`String`, `i64`, `i32`,
//! `bool`, `Vec<u8>`), so one `FromRow` derive serves SQLite and PostgreSQL. Everything
//! richer (ids, timestamps, enums, lists) is converted here, and a stored value that no longer
//! parses becomes `StoreError::Corrupt` naming the column, never a panic and never the value.

use std::fmt::Display;
use std::str::FromStr;

use agent_secret_core::api::{Role, Sensitivity, TokenStatus};
use agent_secret_core::cipher::Sealed;
use agent_secret_core::credential::CredentialKind;
use agent_secret_core::envelope::Envelope;
use agent_secret_core::host::HostPattern;
use agent_secret_core::path::SecretPath;
use agent_secret_core::scope::Scope;
use chrono::{DateTime, Utc};
use ipnet::IpNet;

use crate::audit::{Actor, AuditDraft, AuditEvent, AuditEventType};
use crate::store::{
    AgentRecord, OperatorAccount, OperatorRecord, SecretRecord, SidecarRecord, StoreError,
    StoreResult, StoredSecret, TenantRecord, TokenRecord,
};

#[derive(sqlx::FromRow)]
pub(super) struct TenantRow {
    id: String,
    name: String,
    created_at: i64,
}

#[derive(sqlx::FromRow)]
pub(super) struct OperatorRow {
    id: String,
    tenant_id: String,
    name: String,
    role: String,
    key_hash: Vec<u8>,
    created_at: i64,
    revoked_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
pub(super) struct SidecarRow {
    id: String,
    tenant_id: String,
    name: String,
    key_hash: Vec<u8>,
    created_at: i64,
    revoked_at: Option<i64>,
    last_seen_at: Option<i64>,
    last_version: Option<String>,
}

#[derive(sqlx::FromRow)]
pub(super) struct AgentRow {
    id: String,
    tenant_id: String,
    name: String,
    trust_tier: i32,
    key_id: String,
    key_hash: Vec<u8>,
    created_at: i64,
    key_rotated_at: Option<i64>,
    revoked_at: Option<i64>,
    ceiling: String,
    created_by: Option<String>,
}

#[derive(sqlx::FromRow)]
pub(super) struct SecretRow {
    id: String,
    tenant_id: String,
    path: String,
    sensitivity: String,
    allowed_hosts: String,
    current_version: i64,
    created_at: i64,
    updated_at: i64,
}

/// A secret joined with its current version.
#[derive(sqlx::FromRow)]
pub(super) struct StoredSecretRow {
    #[sqlx(flatten)]
    secret: SecretRow,
    key_name: String,
    key_version: String,
    wrapped_dek: Vec<u8>,
    nonce: Vec<u8>,
    ciphertext: Vec<u8>,
}

#[derive(sqlx::FromRow)]
pub(super) struct TokenRow {
    id: String,
    tenant_id: String,
    agent_id: String,
    scopes: String,
    key_hash: Vec<u8>,
    status: String,
    approved_sensitivity: String,
    ip_allowlist: String,
    max_uses: Option<i64>,
    uses: i64,
    expires_at: i64,
    created_at: i64,
    revoked_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
pub(super) struct OperatorAccountRow {
    tenant_id: String,
    operator_id: String,
    password_hash: Option<String>,
    password_changed_at: Option<i64>,
    totp_nonce: Option<Vec<u8>>,
    totp_ciphertext: Option<Vec<u8>>,
    totp_confirmed_at: Option<i64>,
    totp_last_step: i64,
    failed_logins: i32,
    locked_until: Option<i64>,
    lockouts: i32,
    disabled_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
pub(super) struct AuditRow {
    id: String,
    tenant_id: String,
    seq: i64,
    event_type: String,
    actor: String,
    ip: Option<String>,
    user_agent: Option<String>,
    path: Option<String>,
    destination_host: Option<String>,
    success: bool,
    reason: Option<String>,
    occurred_at: i64,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
}

impl TryFrom<TenantRow> for TenantRecord {
    type Error = StoreError;
    fn try_from(row: TenantRow) -> StoreResult<Self> {
        Ok(TenantRecord {
            id: parse(&row.id, "tenants.id")?,
            name: row.name,
            created_at: time(row.created_at, "tenants.created_at")?,
        })
    }
}

impl TryFrom<OperatorRow> for OperatorRecord {
    type Error = StoreError;
    fn try_from(row: OperatorRow) -> StoreResult<Self> {
        Ok(OperatorRecord {
            id: parse(&row.id, "operators.id")?,
            tenant_id: parse(&row.tenant_id, "operators.tenant_id")?,
            name: row.name,
            role: Role::parse(&row.role).ok_or_else(|| corrupt("operators.role"))?,
            key_hash: row.key_hash,
            created_at: time(row.created_at, "operators.created_at")?,
            revoked_at: opt_time(row.revoked_at, "operators.revoked_at")?,
        })
    }
}

impl TryFrom<SidecarRow> for SidecarRecord {
    type Error = StoreError;
    fn try_from(row: SidecarRow) -> StoreResult<Self> {
        Ok(SidecarRecord {
            id: parse(&row.id, "sidecars.id")?,
            tenant_id: parse(&row.tenant_id, "sidecars.tenant_id")?,
            name: row.name,
            key_hash: row.key_hash,
            created_at: time(row.created_at, "sidecars.created_at")?,
            revoked_at: opt_time(row.revoked_at, "sidecars.revoked_at")?,
            last_seen_at: opt_time(row.last_seen_at, "sidecars.last_seen_at")?,
            last_version: row.last_version,
        })
    }
}

impl TryFrom<AgentRow> for AgentRecord {
    type Error = StoreError;
    fn try_from(row: AgentRow) -> StoreResult<Self> {
        Ok(AgentRecord {
            id: parse(&row.id, "agents.id")?,
            tenant_id: parse(&row.tenant_id, "agents.tenant_id")?,
            name: row.name,
            trust_tier: row.trust_tier,
            key_id: parse(&row.key_id, "agents.key_id")?,
            key_hash: row.key_hash,
            created_at: time(row.created_at, "agents.created_at")?,
            key_rotated_at: opt_time(row.key_rotated_at, "agents.key_rotated_at")?,
            revoked_at: opt_time(row.revoked_at, "agents.revoked_at")?,
            ceiling: list_from_json(&row.ceiling, "agents.ceiling", |s| Scope::parse(s).ok())?,
            created_by: row
                .created_by
                .map(|o| parse(&o, "agents.created_by"))
                .transpose()?,
        })
    }
}

impl TryFrom<SecretRow> for SecretRecord {
    type Error = StoreError;
    fn try_from(row: SecretRow) -> StoreResult<Self> {
        Ok(SecretRecord {
            id: parse(&row.id, "secrets.id")?,
            tenant_id: parse(&row.tenant_id, "secrets.tenant_id")?,
            path: SecretPath::parse(&row.path).map_err(|_| corrupt("secrets.path"))?,
            sensitivity: Sensitivity::parse(&row.sensitivity)
                .ok_or_else(|| corrupt("secrets.sensitivity"))?,
            allowed_hosts: list_from_json(&row.allowed_hosts, "secrets.allowed_hosts", |s| {
                HostPattern::parse(s).ok()
            })?,
            current_version: row.current_version,
            created_at: time(row.created_at, "secrets.created_at")?,
            updated_at: time(row.updated_at, "secrets.updated_at")?,
        })
    }
}

impl TryFrom<StoredSecretRow> for StoredSecret {
    type Error = StoreError;
    fn try_from(row: StoredSecretRow) -> StoreResult<Self> {
        Ok(StoredSecret {
            record: row.secret.try_into()?,
            envelope: Envelope {
                key_name: row.key_name,
                key_version: row.key_version,
                wrapped_dek: row.wrapped_dek,
                nonce: row.nonce,
                ciphertext: row.ciphertext,
            },
        })
    }
}

impl TryFrom<TokenRow> for TokenRecord {
    type Error = StoreError;
    fn try_from(row: TokenRow) -> StoreResult<Self> {
        Ok(TokenRecord {
            id: parse(&row.id, "tokens.id")?,
            tenant_id: parse(&row.tenant_id, "tokens.tenant_id")?,
            agent_id: parse(&row.agent_id, "tokens.agent_id")?,
            scopes: list_from_json(&row.scopes, "tokens.scopes", |s| Scope::parse(s).ok())?,
            key_hash: row.key_hash,
            status: TokenStatus::parse(&row.status).ok_or_else(|| corrupt("tokens.status"))?,
            approved_sensitivity: Sensitivity::parse(&row.approved_sensitivity)
                .ok_or_else(|| corrupt("tokens.approved_sensitivity"))?,
            ip_allowlist: list_from_json(&row.ip_allowlist, "tokens.ip_allowlist", |s| {
                s.parse::<IpNet>().ok()
            })?,
            max_uses: row.max_uses,
            uses: row.uses,
            expires_at: time(row.expires_at, "tokens.expires_at")?,
            created_at: time(row.created_at, "tokens.created_at")?,
            revoked_at: opt_time(row.revoked_at, "tokens.revoked_at")?,
        })
    }
}

impl TryFrom<OperatorAccountRow> for OperatorAccount {
    type Error = StoreError;
    fn try_from(row: OperatorAccountRow) -> StoreResult<Self> {
        let totp = match (row.totp_nonce, row.totp_ciphertext) {
            (Some(nonce), Some(ciphertext)) => Some(Sealed { nonce, ciphertext }),
            (None, None) => None,
            _ => return Err(corrupt("operator_accounts.totp_*")),
        };
        Ok(OperatorAccount {
            tenant_id: parse(&row.tenant_id, "operator_accounts.tenant_id")?,
            operator_id: parse(&row.operator_id, "operator_accounts.operator_id")?,
            password_hash: row.password_hash,
            password_changed_at: opt_time(
                row.password_changed_at,
                "operator_accounts.password_changed_at",
            )?,
            totp,
            totp_confirmed_at: opt_time(
                row.totp_confirmed_at,
                "operator_accounts.totp_confirmed_at",
            )?,
            totp_last_step: row.totp_last_step,
            failed_logins: row.failed_logins,
            locked_until: opt_time(row.locked_until, "operator_accounts.locked_until")?,
            lockouts: row.lockouts,
            disabled_at: opt_time(row.disabled_at, "operator_accounts.disabled_at")?,
        })
    }
}

impl TryFrom<AuditRow> for AuditEvent {
    type Error = StoreError;
    fn try_from(row: AuditRow) -> StoreResult<Self> {
        Ok(AuditEvent {
            id: parse(&row.id, "audit_events.id")?,
            tenant_id: parse(&row.tenant_id, "audit_events.tenant_id")?,
            seq: row.seq,
            draft: AuditDraft {
                event_type: row
                    .event_type
                    .parse::<AuditEventType>()
                    .map_err(|_| corrupt("audit_events.event_type"))?,
                actor: Actor(row.actor),
                ip: row.ip,
                user_agent: row.user_agent,
                path: row.path,
                destination_host: row.destination_host,
                success: row.success,
                reason: row.reason,
                occurred_at: time(row.occurred_at, "audit_events.occurred_at")?,
            },
            prev_hash: hash32(row.prev_hash, "audit_events.prev_hash")?,
            hash: hash32(row.hash, "audit_events.hash")?,
        })
    }
}

/// Converts every row of a result set, failing on the first corrupt one.
pub(super) fn records<R, T>(rows: Vec<R>) -> StoreResult<Vec<T>>
where
    T: TryFrom<R, Error = StoreError>,
{
    rows.into_iter().map(T::try_from).collect()
}

/// Converts an optional row.
pub(super) fn record<R, T>(row: Option<R>) -> StoreResult<Option<T>>
where
    T: TryFrom<R, Error = StoreError>,
{
    row.map(T::try_from).transpose()
}

/// The stored form of a timestamp: whole microseconds since the Unix epoch, UTC.
pub(super) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(super) fn opt_micros(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(micros)
}

/// The stored form of a credential kind.
pub(super) fn kind_str(kind: CredentialKind) -> &'static str {
    match kind {
        CredentialKind::Operator => "operator",
        CredentialKind::Agent => "agent",
        CredentialKind::Token => "token",
        CredentialKind::Sidecar => "sidecar",
    }
}

pub(super) fn parse_kind(s: &str) -> StoreResult<CredentialKind> {
    match s {
        "operator" => Ok(CredentialKind::Operator),
        "agent" => Ok(CredentialKind::Agent),
        "token" => Ok(CredentialKind::Token),
        "sidecar" => Ok(CredentialKind::Sidecar),
        _ => Err(corrupt("credential_index.kind")),
    }
}

/// A list stored as a JSON array of the items' canonical strings.
pub(super) fn list_to_json<T: Display>(items: &[T]) -> String {
    let strings: Vec<String> = items.iter().map(ToString::to_string).collect();
    // A Vec<String> always serialises; the fallback is unreachable but keeps this infallible.
    serde_json::to_string(&strings).unwrap_or_else(|_| "[]".to_owned())
}

fn list_from_json<T>(
    json: &str,
    column: &'static str,
    parse_item: impl Fn(&str) -> Option<T>,
) -> StoreResult<Vec<T>> {
    let strings: Vec<String> = serde_json::from_str(json).map_err(|_| corrupt(column))?;
    strings
        .iter()
        .map(|s| parse_item(s).ok_or_else(|| corrupt(column)))
        .collect()
}

/// A JSON list of scopes (a token's scopes, an agent's ceiling).
pub(super) fn scopes_from_json(json: &str, column: &'static str) -> StoreResult<Vec<Scope>> {
    list_from_json(json, column, |s| Scope::parse(s).ok())
}

pub(super) fn parse<T: FromStr>(s: &str, column: &'static str) -> StoreResult<T> {
    s.parse().map_err(|_| corrupt(column))
}

pub(super) fn time(us: i64, column: &'static str) -> StoreResult<DateTime<Utc>> {
    DateTime::from_timestamp_micros(us).ok_or_else(|| corrupt(column))
}

pub(super) fn opt_time(
    us: Option<i64>,
    column: &'static str,
) -> StoreResult<Option<DateTime<Utc>>> {
    us.map(|us| time(us, column)).transpose()
}

pub(super) fn hash32(bytes: Vec<u8>, column: &'static str) -> StoreResult<[u8; 32]> {
    bytes.try_into().map_err(|_| corrupt(column))
}

fn corrupt(column: &'static str) -> StoreError {
    StoreError::Corrupt(format!("{column} does not decode"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_kinds_round_trip_through_their_stored_names() {
        for kind in [
            CredentialKind::Operator,
            CredentialKind::Agent,
            CredentialKind::Token,
            CredentialKind::Sidecar,
        ] {
            assert_eq!(parse_kind(kind_str(kind)).ok(), Some(kind));
        }
        assert!(parse_kind("admin").is_err());
    }

    #[test]
    fn a_list_that_does_not_parse_is_corrupt_not_dropped() {
        let json = list_to_json(&["10.0.0.0/8", "not-a-cidr"]);
        let parsed = list_from_json(&json, "tokens.ip_allowlist", |s| s.parse::<IpNet>().ok());
        assert!(matches!(parsed, Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn timestamps_round_trip_at_microsecond_precision() {
        let t = crate::audit::now_micros();
        assert_eq!(time(micros(t), "t").ok(), Some(t));
    }
}
