//! The control-plane API as typed calls: one method per endpoint, holding its method, route,
//! credential and request/response types, so a command never builds a URL or names a type
//! twice. Routes take typed ids and parsed secret paths, so an argument can never change the
//! route it is placed in.
//!
//! A call answers a [`Reply`]: the server's JSON document (printed verbatim with `--json`, so
//! scripts see exactly the API's document) and, when it has the expected shape, its typed form.

use std::marker::PhantomData;

use agent_secret_core::api::{
    AccountInfo, AgentCeiling, AgentInfo, AgentList, ApprovalInfo, ApprovalList, CeilingChange,
    ConfirmTotpRequest, CreateAgentRequest, CreateOperatorRequest, CreateSidecarRequest,
    CreatedAgent, CreatedOperator, CreatedSidecar, DecideApproval, DeletedSecret,
    IssueTokenRequest, IssuedToken, OperatorInfo, OperatorList, PasswordChanged, PutSecretRequest,
    PutSecretResponse, RevokedAgent, RotatedAgentKey, SecretList, SecretMetadata,
    SetPasswordRequest, SetTrustTier, SidecarInfo, SidecarList, TokenInfo, TotpEnrollment,
};
use agent_secret_core::ids::{AgentId, ApprovalId, OperatorId, SidecarId, TokenId};
use agent_secret_core::path::SecretPath;
use agent_secret_core::secret::SecretString;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::client::{ApiClient, ApiRequest};
use super::failure::Failure;

/// A successful answer: the document as sent, typed on demand.
pub struct Reply<T> {
    doc: Value,
    shape: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Reply<T> {
    fn new(doc: Value) -> Self {
        Self {
            doc,
            shape: PhantomData,
        }
    }

    /// The server's document, verbatim.
    pub fn doc(&self) -> &Value {
        &self.doc
    }

    /// The typed answer; `None` if a newer server answered a shape this CLI does not know.
    pub fn typed(&self) -> Option<T> {
        serde_json::from_value(self.doc.clone()).ok()
    }
}

/// Audit export filters, as the `GET /v1/audit` query takes them.
pub struct AuditFilter<'a> {
    pub since: Option<&'a str>,
    pub until: Option<&'a str>,
    pub event_type: Option<&'a str>,
    pub actor: Option<&'a str>,
    pub path_prefix: Option<&'a str>,
}

/// The API on behalf of one credential (operator token or agent key).
pub struct ControlPlane<'a> {
    client: ApiClient,
    credential: &'a SecretString,
}

impl<'a> ControlPlane<'a> {
    pub fn new(client: ApiClient, credential: &'a SecretString) -> Self {
        Self { client, credential }
    }

    pub async fn create_sidecar(&self, req: &CreateSidecarRequest) -> Call<CreatedSidecar> {
        self.send(self.call(Method::POST, &["sidecars"])?.body(req))
            .await
    }

    pub async fn list_sidecars(&self) -> Call<SidecarList> {
        self.send(self.call(Method::GET, &["sidecars"])?).await
    }

    pub async fn revoke_sidecar(&self, id: SidecarId) -> Call<SidecarInfo> {
        let id = id.to_string();
        self.send(self.call(Method::POST, &["sidecars", &id, "revoke"])?)
            .await
    }

    pub async fn create_agent(&self, req: &CreateAgentRequest) -> Call<CreatedAgent> {
        self.send(self.call(Method::POST, &["agents"])?.body(req))
            .await
    }

    pub async fn list_agents(&self) -> Call<AgentList> {
        self.send(self.call(Method::GET, &["agents"])?).await
    }

    pub async fn agent(&self, id: AgentId) -> Call<AgentInfo> {
        let id = id.to_string();
        self.send(self.call(Method::GET, &["agents", &id])?).await
    }

    /// `POST /v1/agents/{id}/ceiling/allow` (or `deny`).
    pub async fn change_ceiling(
        &self,
        id: AgentId,
        allow: bool,
        req: &CeilingChange,
    ) -> Call<AgentCeiling> {
        let id = id.to_string();
        let verb = if allow { "allow" } else { "deny" };
        self.send(
            self.call(Method::POST, &["agents", &id, "ceiling", verb])?
                .body(req),
        )
        .await
    }

    /// `PUT /v1/agents/{id}/trust-tier`.
    pub async fn set_trust_tier(&self, id: AgentId, req: &SetTrustTier) -> Call<AgentInfo> {
        let id = id.to_string();
        self.send(
            self.call(Method::PUT, &["agents", &id, "trust-tier"])?
                .body(req),
        )
        .await
    }

    /// `POST /v1/agents/{id}/access-requests`.
    pub async fn request_access(&self, id: AgentId, req: &CeilingChange) -> Call<ApprovalInfo> {
        let id = id.to_string();
        self.send(
            self.call(Method::POST, &["agents", &id, "access-requests"])?
                .body(req),
        )
        .await
    }

    pub async fn list_approvals(&self, status: Option<&str>) -> Call<ApprovalList> {
        let request = self
            .call(Method::GET, &["approvals"])?
            .query(&[("status", status)]);
        self.send(request).await
    }

    pub async fn approval(&self, id: ApprovalId) -> Call<ApprovalInfo> {
        let id = id.to_string();
        self.send(self.call(Method::GET, &["approvals", &id])?)
            .await
    }

    /// `POST /v1/approvals/{id}/approve` (or `deny`).
    pub async fn decide(
        &self,
        id: ApprovalId,
        approve: bool,
        req: &DecideApproval,
    ) -> Call<ApprovalInfo> {
        let id = id.to_string();
        let verb = if approve { "approve" } else { "deny" };
        self.send(
            self.call(Method::POST, &["approvals", &id, verb])?
                .body(req),
        )
        .await
    }

    pub async fn rotate_agent_key(&self, id: AgentId) -> Call<RotatedAgentKey> {
        let id = id.to_string();
        self.send(self.call(Method::POST, &["agents", &id, "rotate-key"])?)
            .await
    }

    pub async fn revoke_agent(&self, id: AgentId) -> Call<RevokedAgent> {
        let id = id.to_string();
        self.send(self.call(Method::POST, &["agents", &id, "revoke"])?)
            .await
    }

    pub async fn create_operator(&self, req: &CreateOperatorRequest) -> Call<CreatedOperator> {
        self.send(self.call(Method::POST, &["operators"])?.body(req))
            .await
    }

    pub async fn list_operators(&self) -> Call<OperatorList> {
        self.send(self.call(Method::GET, &["operators"])?).await
    }

    pub async fn revoke_operator(&self, id: OperatorId) -> Call<OperatorInfo> {
        let id = id.to_string();
        self.send(self.call(Method::POST, &["operators", &id, "revoke"])?)
            .await
    }

    pub async fn set_password(
        &self,
        id: OperatorId,
        req: &SetPasswordRequest,
    ) -> Call<PasswordChanged> {
        let id = id.to_string();
        self.send(
            self.call(Method::POST, &["operators", &id, "password"])?
                .body(req),
        )
        .await
    }

    pub async fn enroll_totp(&self, id: OperatorId) -> Call<TotpEnrollment> {
        let id = id.to_string();
        self.send(self.call(Method::POST, &["operators", &id, "totp"])?)
            .await
    }

    pub async fn confirm_totp(
        &self,
        id: OperatorId,
        req: &ConfirmTotpRequest,
    ) -> Call<AccountInfo> {
        let id = id.to_string();
        self.send(
            self.call(Method::POST, &["operators", &id, "totp", "confirm"])?
                .body(req),
        )
        .await
    }

    pub async fn disable_operator(&self, id: OperatorId) -> Call<AccountInfo> {
        let id = id.to_string();
        self.send(self.call(Method::POST, &["operators", &id, "disable"])?)
            .await
    }

    pub async fn put_secret(
        &self,
        path: &SecretPath,
        req: &PutSecretRequest,
    ) -> Call<PutSecretResponse> {
        let route = secret_route(path);
        self.send(self.call(Method::PUT, &route)?.body(req)).await
    }

    pub async fn secret_metadata(&self, path: &SecretPath) -> Call<SecretMetadata> {
        let route = secret_route(path);
        self.send(self.call(Method::GET, &route)?).await
    }

    pub async fn list_secrets(&self, prefix: Option<&str>) -> Call<SecretList> {
        let request = self
            .call(Method::GET, &["secrets"])?
            .query(&[("prefix", prefix)]);
        self.send(request).await
    }

    pub async fn delete_secret(&self, path: &SecretPath) -> Call<DeletedSecret> {
        let route = secret_route(path);
        self.send(self.call(Method::DELETE, &route)?).await
    }

    pub async fn issue_token(&self, req: &IssueTokenRequest) -> Call<IssuedToken> {
        self.send(self.call(Method::POST, &["tokens"])?.body(req))
            .await
    }

    pub async fn token(&self, id: TokenId) -> Call<TokenInfo> {
        let id = id.to_string();
        self.send(self.call(Method::GET, &["tokens", &id])?).await
    }

    pub async fn revoke_token(&self, id: TokenId) -> Call<TokenInfo> {
        let id = id.to_string();
        self.send(self.call(Method::POST, &["tokens", &id, "revoke"])?)
            .await
    }

    /// `GET /v1/audit?format=jsonl|csv`, streamed into `sink`; `progress` sees each chunk.
    pub async fn stream_audit(
        &self,
        filter: &AuditFilter<'_>,
        format: &str,
        sink: &mut dyn std::io::Write,
        progress: impl FnMut(&[u8]),
    ) -> Result<u64, Failure> {
        self.audit_request(filter, format)?
            .copy_to(sink, progress)
            .await
    }

    /// `GET /v1/audit` (JSON), the page after `cursor`.
    pub async fn audit_page(&self, filter: &AuditFilter<'_>, cursor: Option<&str>) -> Call<Value> {
        self.send(
            self.audit_request(filter, "json")?
                .query(&[("cursor", cursor), ("limit", Some("10000"))]),
        )
        .await
    }

    /// `GET /v1/audit/public-keys`: the keys that sign checkpoints.
    pub async fn audit_public_keys(&self) -> Call<Value> {
        self.send(self.call(Method::GET, &["audit", "public-keys"])?)
            .await
    }

    /// `GET /v1/audit/verify`: the chain report.
    pub async fn verify_audit(&self) -> Call<Value> {
        self.send(self.call(Method::GET, &["audit", "verify"])?)
            .await
    }

    fn audit_request(&self, filter: &AuditFilter<'_>, format: &str) -> Result<ApiRequest, Failure> {
        Ok(self.call(Method::GET, &["audit"])?.query(&[
            ("since", filter.since),
            ("until", filter.until),
            ("type", filter.event_type),
            ("actor", filter.actor),
            ("path_prefix", filter.path_prefix),
            ("format", Some(format)),
        ]))
    }

    fn call(&self, method: Method, route: &[&str]) -> Result<ApiRequest, Failure> {
        self.client.request(method, route, self.credential)
    }

    async fn send<T: DeserializeOwned>(&self, request: ApiRequest) -> Call<T> {
        request.json().await.map(Reply::new)
    }
}

/// What every typed call answers.
pub type Call<T> = Result<Reply<T>, Failure>;

/// `["secrets", "a", "b"]` for `a/b`: one route segment per path segment, each percent-encoded
/// by the client. The path was parsed, so no segment is `.` or `..` (URL handling would drop
/// those and address another secret).
fn secret_route(path: &SecretPath) -> Vec<&str> {
    std::iter::once("secrets")
        .chain(path.as_str().split('/'))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn secret_paths_become_one_route_segment_each() {
        let path = SecretPath::parse("prod/openai/key").unwrap();
        assert_eq!(secret_route(&path), ["secrets", "prod", "openai", "key"]);
    }

    #[test]
    fn a_reply_of_another_shape_keeps_its_document_and_has_no_typed_form() {
        let reply = Reply::<SidecarList>::new(serde_json::json!({"unexpected": 1}));
        assert!(reply.typed().is_none());
        assert_eq!(reply.doc()["unexpected"], 1);
    }
}
