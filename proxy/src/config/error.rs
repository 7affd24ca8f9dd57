//! Why a configuration cannot be used; every error names the key, variable or file at fault.

use std::path::PathBuf;

/// Why the configuration cannot be used. Names the key or file; never a secret's content.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Parse(String),
    #[error("invalid `{key}`: {message}")]
    Invalid { key: String, message: String },
}

pub(super) fn invalid(key: &str, message: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: message.to_owned(),
    }
}
