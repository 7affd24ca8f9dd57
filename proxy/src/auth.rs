//! Agent authentication: the scoped token in `Proxy-Authorization`, and the headers that must
//! never reach an upstream.
//!
//! Agents present their token as `Proxy-Authorization: Bearer asst_...`, or as the password of
//! Basic auth so `HTTP_PROXY=http://agent:asst_...@127.0.0.1:8080` works with every HTTP
//! client. The token's shape and checksum are checked here, before any network call, so random
//! strings never cost a control-plane round trip. The header itself, `Proxy-Connection` and
//! every `X-Agent-Secret-*` header are stripped before forwarding: the upstream must learn
//! nothing about the agent's credentials or the sidecar's control headers.

use agent_secret_core::credential::{CredentialKind, PresentedCredential};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::HeaderValue;
use sha2::{Digest, Sha256};
use uuid::Uuid;
use zeroize::Zeroizing;

/// `Proxy-Authenticate` value sent with every 407.
pub const PROXY_AUTHENTICATE: &str = "Basic realm=\"agent-secret-store\"";

/// Prefix of the sidecar's control headers; none of them is ever forwarded.
const CONTROL_HEADER_PREFIX: &str = "x-agent-secret-";

/// A syntactically valid scoped token presented by an agent. Never printed. Cloned only to
/// renew its grant in the background (`Resolver`); every copy zeroizes on drop.
#[derive(Clone)]
pub struct AgentToken {
    token: Zeroizing<String>,
    id: Uuid,
    /// SHA-256 of the token, computed once: the grant cache is keyed by it, and a request
    /// looks it up, stores it or drops it several times.
    cache_key: [u8; 32],
}

/// Why the agent is not authenticated; every variant is a 407 `token_invalid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("Proxy-Authorization is missing: send `Bearer <scoped token>` or Basic auth with the token as password")]
    Missing,
    #[error("Proxy-Authorization must be `Bearer <token>` or `Basic base64(user:token)`")]
    BadScheme,
    #[error("Proxy-Authorization Basic credentials are not valid base64 `user:token`")]
    BadBasic,
    #[error("the presented credential is not a valid scoped token (asst_...)")]
    NotAToken,
}

impl AgentToken {
    /// Read the token from the `Proxy-Authorization` header value(s).
    pub fn from_header(value: Option<&HeaderValue>) -> Result<AgentToken, AuthError> {
        let raw = value.ok_or(AuthError::Missing)?.as_bytes();
        let raw = std::str::from_utf8(raw)
            .map_err(|_| AuthError::BadScheme)?
            .trim();
        let (scheme, rest) = raw.split_once(' ').ok_or(AuthError::BadScheme)?;
        let token = if scheme.eq_ignore_ascii_case("bearer") {
            Zeroizing::new(rest.trim().to_owned())
        } else if scheme.eq_ignore_ascii_case("basic") {
            basic_password(rest.trim())?
        } else {
            return Err(AuthError::BadScheme);
        };
        let id = PresentedCredential::id_of_kind(CredentialKind::Token, &token)
            .map_err(|_| AuthError::NotAToken)?;
        Ok(AgentToken {
            id,
            cache_key: Sha256::digest(token.as_bytes()).into(),
            token,
        })
    }

    /// The bearer string, for the resolve call only.
    pub fn expose(&self) -> &str {
        &self.token
    }

    /// The token's id (embedded in the credential), hyphenated as in grants and audit records.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// Cache key: SHA-256 of the token, so the cache never holds the token itself.
    pub fn cache_key(&self) -> [u8; 32] {
        self.cache_key
    }
}

impl std::fmt::Debug for AgentToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentToken")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The password of `base64(user:password)`; the user name is ignored.
fn basic_password(encoded: &str) -> Result<Zeroizing<String>, AuthError> {
    let decoded = Zeroizing::new(STANDARD.decode(encoded).map_err(|_| AuthError::BadBasic)?);
    let text = std::str::from_utf8(&decoded).map_err(|_| AuthError::BadBasic)?;
    let (_, password) = text.split_once(':').ok_or(AuthError::BadBasic)?;
    Ok(Zeroizing::new(password.to_owned()))
}

/// True for request headers the sidecar consumes and never forwards.
pub fn is_sidecar_header(name: &str) -> bool {
    name.eq_ignore_ascii_case("proxy-authorization")
        || name.eq_ignore_ascii_case("proxy-connection")
        || name
            .get(..CONTROL_HEADER_PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(CONTROL_HEADER_PREFIX))
}

#[cfg(test)]
mod tests;
