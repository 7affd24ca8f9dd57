//! Finding `{{secret:PATH}}` placeholders in request headers and substituting the values.
//!
//! Placeholders are honoured only in header values. In the request target or the `Host`
//! header an attempt is a 400: a URL is logged by every hop and a Host value picks the
//! destination, so neither may ever carry a credential (nor leak the path verbatim). A
//! malformed attempt anywhere is a 400 too, never forwarded as-is. The hot path is one
//! `contains_placeholder_marker` scan per header value. Pure functions: no I/O, no pingora.
//!
//! Framing and hop-by-hop headers never take a placeholder (400 before anything is dialled):
//! `Transfer-Encoding`, `Content-Length`, `Connection`, `Keep-Alive`, `TE`, `Trailer`,
//! `Upgrade`, `Host`, every `Proxy-*` header and every header the request's `Connection`
//! names. A secret substituted there would pick how the upstream frames the request (request
//! smuggling on a pooled connection) or be stripped by a hop and re-added by us. The caps in
//! [`Limits`] bound the work and the size an agent can make one request cost.

use agent_secret_core::path::SecretPath;
use agent_secret_core::placeholder::{
    contains_placeholder_marker, find_placeholders, substitute, Placeholder, PlaceholderError,
};
use http::header::{CONNECTION, HOST};
use http::{HeaderMap, HeaderName, HeaderValue};
use zeroize::Zeroizing;

use crate::auth::is_sidecar_header;

/// Bounds on what one request may ask for (`[limits]` in `config/proxy.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Placeholders in all headers of one request, counted with repeats.
    pub max_placeholders_per_request: usize,
    /// Placeholders in one header value.
    pub max_placeholders_per_header: usize,
    /// Bytes of one header value after substitution.
    pub max_header_value_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_placeholders_per_request: 16,
            max_placeholders_per_header: 4,
            max_header_value_bytes: 8192,
        }
    }
}

/// Headers that frame the message or speak to one hop only: a placeholder in one is refused.
const FRAMING_HEADERS: [&str; 8] = [
    "transfer-encoding",
    "content-length",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "host",
];

/// The placeholders of one header value: the `index`-th value of `name`.
#[derive(Debug, Clone)]
pub struct HeaderPlaceholders {
    pub name: HeaderName,
    pub index: usize,
    pub placeholders: Vec<Placeholder>,
}

/// Every placeholder of a request.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    pub headers: Vec<HeaderPlaceholders>,
}

/// All values of one header after substitution, in their original order. Each value is
/// marked sensitive, so it is never shown by `Debug` and never indexed by HPACK.
pub struct Substituted {
    pub name: HeaderName,
    pub values: Vec<HeaderValue>,
}

/// Why a request's placeholders cannot be used; all are 400 `invalid_placeholder`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    #[error("header `{header}`: {source}")]
    Malformed {
        header: String,
        source: PlaceholderError,
    },
    #[error("placeholders are not allowed in the Host header")]
    InHost,
    #[error("placeholders are not allowed in `{0}`: it frames the request or is hop-by-hop")]
    InFramingHeader(String),
    #[error("the request has more than {limit} placeholders")]
    TooMany { limit: usize },
    #[error("header `{header}` has more than {limit} placeholders")]
    TooManyInHeader { header: String, limit: usize },
    #[error("header `{header}` would be longer than {limit} bytes after substitution")]
    ValueTooLong { header: String, limit: usize },
    #[error("placeholders are only substituted in header values, not in the request target")]
    InTarget,
    #[error("the value of `{0}` would not be a valid header value")]
    InvalidValue(String),
}

impl Scan {
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
    }

    /// Distinct paths, sorted.
    pub fn paths(&self) -> Vec<SecretPath> {
        let mut paths: Vec<SecretPath> = self
            .headers
            .iter()
            .flat_map(|h| h.placeholders.iter().map(|p| p.path.clone()))
            .collect();
        paths.sort();
        paths.dedup();
        paths
    }
}

/// Find the placeholders of a request; malformed attempts, any attempt in the request target
/// or a framing header, and more placeholders than `limits` allow fail the whole request.
pub fn scan(headers: &HeaderMap, raw_target: &[u8], limits: &Limits) -> Result<Scan, InjectError> {
    if contains_placeholder_marker(raw_target)
        && !find_placeholders(raw_target)
            .map_err(|_| InjectError::InTarget)?
            .is_empty()
    {
        return Err(InjectError::InTarget);
    }
    let mut scan = Scan::default();
    let mut total = 0usize;
    for name in headers.keys() {
        // The sidecar's own headers (`Proxy-Authorization`, `Proxy-Connection`,
        // `X-Agent-Secret-*`) are consumed here and never forwarded: nothing in them is
        // substituted, and a placeholder in `Proxy-Authorization` fails as a token (407).
        if is_sidecar_header(name.as_str()) {
            continue;
        }
        for (index, value) in headers.get_all(name).iter().enumerate() {
            let bytes = value.as_bytes();
            if !contains_placeholder_marker(bytes) {
                continue;
            }
            let found = find_placeholders(bytes).map_err(|source| InjectError::Malformed {
                header: name.as_str().to_owned(),
                source,
            })?;
            if found.is_empty() {
                continue;
            }
            if name == HOST {
                return Err(InjectError::InHost);
            }
            // Decided only for a value that holds a placeholder: the hot path (no placeholder
            // in most headers) never looks at `Connection`.
            if is_framing_header(name, headers) {
                return Err(InjectError::InFramingHeader(name.as_str().to_owned()));
            }
            if found.len() > limits.max_placeholders_per_header {
                return Err(InjectError::TooManyInHeader {
                    header: name.as_str().to_owned(),
                    limit: limits.max_placeholders_per_header,
                });
            }
            total += found.len();
            if total > limits.max_placeholders_per_request {
                return Err(InjectError::TooMany {
                    limit: limits.max_placeholders_per_request,
                });
            }
            scan.headers.push(HeaderPlaceholders {
                name: name.clone(),
                index,
                placeholders: found,
            });
        }
    }
    Ok(scan)
}

/// Whether `name` is a framing or hop-by-hop header of this request: one of
/// [`FRAMING_HEADERS`], any `Proxy-*`, or a header its `Connection` field names.
fn is_framing_header(name: &HeaderName, headers: &HeaderMap) -> bool {
    let name = name.as_str();
    FRAMING_HEADERS.contains(&name)
        || name.starts_with("proxy-")
        // Bytes, not `to_str`: a value with obs-text or a tab must not hide the names it lists.
        || headers
            .get_all(CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .any(|token| token.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
}

/// Substitute every placeholder of `scan` with the value `lookup` gives, returning the full
/// value list of each affected header.
pub fn substitute_headers<'v>(
    headers: &HeaderMap,
    scan: &Scan,
    lookup: impl Fn(&SecretPath) -> Option<&'v [u8]>,
    limits: &Limits,
) -> Result<Vec<Substituted>, InjectError> {
    let mut out: Vec<Substituted> = Vec::new();
    for hp in &scan.headers {
        if out.iter().any(|s| s.name == hp.name) {
            continue;
        }
        let mut values = Vec::new();
        for (index, value) in headers.get_all(&hp.name).iter().enumerate() {
            let found = scan
                .headers
                .iter()
                .find(|other| other.name == hp.name && other.index == index);
            let new = match found {
                Some(other) => substitute(value.as_bytes(), &other.placeholders, &lookup).map_err(
                    |source| InjectError::Malformed {
                        header: hp.name.as_str().to_owned(),
                        source,
                    },
                )?,
                None => Zeroizing::new(value.as_bytes().to_vec()),
            };
            if new.len() > limits.max_header_value_bytes {
                return Err(InjectError::ValueTooLong {
                    header: hp.name.as_str().to_owned(),
                    limit: limits.max_header_value_bytes,
                });
            }
            // `from_bytes` checks RFC 9110 field-value bytes: no CR, LF, NUL or other controls.
            let mut new = HeaderValue::from_bytes(&new)
                .map_err(|_| InjectError::InvalidValue(hp.name.as_str().to_owned()))?;
            new.set_sensitive(true);
            values.push(new);
        }
        out.push(Substituted {
            name: hp.name.clone(),
            values,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
