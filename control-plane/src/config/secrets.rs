//! Secret-bearing configuration values and the loaders that turn them into key material.
//!
//! Key material is read lazily (only the commands that need it pay, and `init` can create a
//! missing file first) and goes straight into zeroizing types, through the one secret-file
//! reader (`agent_secret_core::secret_file`), which refuses files other users can read. Error
//! messages name the key and the file, never the content.

use std::fmt;
use std::path::Path;

use agent_secret_core::credential::Pepper;
use agent_secret_core::kms::local::MasterKey;
use agent_secret_core::secret::SecretString;
use agent_secret_core::secret_file::{self, SecretFileError};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Deserializer};

use super::error::{invalid, ConfigError};
use super::Config;

/// A database connection URL. It may embed a password, so `Debug` and `Display` show it with
/// the password (userinfo or `password=` query parameter) replaced by `[REDACTED]`.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(SecretString);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> DatabaseUrl {
        DatabaseUrl(SecretString::new(url.into()))
    }

    /// The full URL, password included: pass it to the driver and nowhere else.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    pub fn is_postgres(&self) -> bool {
        let url = self.expose();
        url.starts_with("postgres://") || url.starts_with("postgresql://")
    }

    pub fn is_sqlite(&self) -> bool {
        self.expose().starts_with("sqlite:")
    }

    /// The URL with any password replaced by `[REDACTED]`.
    pub fn redacted(&self) -> String {
        redact_url(self.expose())
    }

    pub(super) fn check_scheme(&self, key: &str) -> Result<(), ConfigError> {
        if self.is_postgres() || self.is_sqlite() {
            Ok(())
        } else {
            Err(invalid(
                key,
                &format!(
                    "unsupported database URL {:?}: expected sqlite://PATH or postgres://...",
                    self.redacted()
                ),
            ))
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({:?})", self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl<'de> Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(DatabaseUrl::new(String::deserialize(deserializer)?))
    }
}

impl Config {
    /// The pepper's configured text and where it came from: for [`Config::pepper`], and for
    /// `backup --keys`, which exports it as configured.
    pub fn pepper_text(&self) -> Result<(&'static str, SecretString), ConfigError> {
        Ok(match &self.security.pepper {
            Some(inline) => ("AGENT_SECRET_SECURITY_PEPPER", inline.clone()),
            None => (
                "security.pepper_file",
                read_secret_file("security.pepper_file", &self.security.pepper_file)?,
            ),
        })
    }

    /// The master key's configured text and where it came from (as [`Config::pepper_text`]).
    pub fn master_key_text(&self) -> Result<(&'static str, SecretString), ConfigError> {
        Ok(match &self.kms.master_key {
            Some(inline) => ("AGENT_SECRET_MASTER_KEY", inline.clone()),
            None => (
                "kms.master_key_file",
                read_secret_file("kms.master_key_file", &self.kms.master_key_file)?,
            ),
        })
    }

    /// The server pepper: `AGENT_SECRET_SECURITY_PEPPER` (base64) if set, else the base64
    /// content of `security.pepper_file`. At least 32 bytes once decoded.
    pub fn pepper(&self) -> Result<Pepper, ConfigError> {
        let (key, text) = self.pepper_text()?;
        let bytes = STANDARD
            .decode(text.expose().trim())
            .map_err(|_| invalid(key, "the pepper is not valid standard base64"))?;
        Pepper::from_bytes(bytes).map_err(|e| invalid(key, &e.to_string()))
    }

    /// The local keyring's master key: `AGENT_SECRET_MASTER_KEY` (base64) if set, else the
    /// base64 content of `kms.master_key_file` (also set by `AGENT_SECRET_MASTER_KEY_FILE`).
    pub fn master_key(&self) -> Result<MasterKey, ConfigError> {
        let (key, text) = self.master_key_text()?;
        MasterKey::from_base64(text.expose()).map_err(|e| {
            // KmsError::Corrupt("...") renders as "key service data is corrupt: ..."; keep
            // only the part about the key, which never contains key material.
            let message = match e {
                agent_secret_core::kms::KmsError::Corrupt(m) => m,
                other => other.to_string(),
            };
            invalid(key, &message)
        })
    }
}

/// The trimmed content of a secret file (see `agent_secret_core::secret_file`); errors name
/// `key` and the file, and a missing file suggests `init`.
pub(super) fn read_secret_file(key: &str, path: &Path) -> Result<SecretString, ConfigError> {
    secret_file::read(path).map_err(|e| match e {
        SecretFileError::Missing { .. } => {
            invalid(key, &format!("{e} (`agent-secret-store init` creates it)"))
        }
        other => invalid(key, &other.to_string()),
    })
}

/// Replaces the password in `scheme://user:password@host/...` and any `password=` query value.
///
/// The userinfo ends at the LAST `@` of the URL: a password written without percent-encoding
/// may itself contain `/`, `?`, `#` or `@`, and must still be masked whole.
fn redact_url(url: &str) -> String {
    const MASK: &str = "[REDACTED]";
    let Some((scheme, rest)) = url.split_once("://") else {
        return redact_query(url);
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map(|(user, _)| user);
            match user {
                Some(user) => format!("{scheme}://{user}:{MASK}@{}", redact_query(host)),
                None => format!("{scheme}://{userinfo}@{}", redact_query(host)),
            }
        }
        None => format!("{scheme}://{}", redact_query(rest)),
    }
}

/// Masks `*password*=` values in the query part, if any.
fn redact_query(url: &str) -> String {
    const MASK: &str = "[REDACTED]";
    let Some((base, query)) = url.split_once('?') else {
        return url.to_string();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if k.to_ascii_lowercase().contains("password") => format!("{k}={MASK}"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{base}?{}", pairs.join("&"))
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_passwords_with_unencoded_delimiters_whole() {
        for url in [
            "postgres://app:pa/ss@db/store",
            "postgres://app:p?a#ss@db/store",
            "postgres://app:p@ss@db/store",
        ] {
            let redacted = redact_url(url);
            assert_eq!(redacted, "postgres://app:[REDACTED]@db/store", "{url}");
        }
    }

    #[test]
    fn redacts_userinfo_password_and_query_password() {
        assert_eq!(
            redact_url("postgres://app:hunter2@db:5432/store?sslmode=require&password=x"),
            "postgres://app:[REDACTED]@db:5432/store?sslmode=require&password=[REDACTED]"
        );
        assert_eq!(
            redact_url("postgres://app@db/store"),
            "postgres://app@db/store"
        );
        assert_eq!(
            redact_url("sqlite://data/store.db"),
            "sqlite://data/store.db"
        );
        assert_eq!(
            redact_url("postgres://u:p@ss@db/x"),
            "postgres://u:[REDACTED]@db/x"
        );
    }
}
