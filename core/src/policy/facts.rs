//! The plain data the policy judges. Each side builds these views from what it holds — the
//! control plane from its token and secret rows, the sidecar from a cached grant and cached
//! values, test fakes from their maps — borrowing rather than copying, so a warm request pays
//! nothing for them. A new rule adds a field here, and the compiler then asks every caller
//! for the fact: no side can forget to supply it.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use ipnet::IpNet;

use crate::api::{Sensitivity, TokenStatus};
use crate::host::{Destination, HostPattern};
use crate::path::SecretPath;
use crate::scope::Scope;

/// What a scoped token has been granted, as of now.
#[derive(Clone, Copy, Debug)]
pub struct GrantFacts<'a> {
    /// Stored lifecycle state (`Expired` is normally derived from `expires_at`, but honoured).
    pub status: TokenStatus,
    /// A revocation recorded apart from `status` (the store's `revoked_at`): either refuses.
    pub revoked: bool,
    pub expires_at: DateTime<Utc>,
    /// CIDRs the client must come from; empty means any address.
    pub ip_allowlist: &'a [IpNet],
    pub scopes: &'a [Scope],
    /// The highest sensitivity an approver allowed this token to read.
    pub approved_sensitivity: Sensitivity,
    /// `None`: unlimited. The policy only pre-checks `uses` against it; the exact count is the
    /// store's atomic update (see `docs/security.md`).
    pub max_uses: Option<i64>,
    pub uses: i64,
}

/// What the policy needs to know about one secret.
#[derive(Clone, Copy, Debug)]
pub struct SecretFacts<'a> {
    pub path: &'a SecretPath,
    pub sensitivity: Sensitivity,
    /// Destinations the secret may be sent to; empty means none.
    pub allowed_hosts: &'a [HostPattern],
}

/// One access attempt: these paths, sent to this destination, from this address, at `now`.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// Empty: the caller only asks whether the token may be used at all.
    pub paths: &'a [SecretPath],
    /// The host actually dialled, never the agent's `Host` header.
    pub destination: &'a Destination,
    pub client_ip: IpAddr,
    pub now: DateTime<Utc>,
}
