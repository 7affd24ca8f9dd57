//! Which Cloud KMS failures are worth another attempt, and the attempts themselves.
//!
//! Only `UNAVAILABLE` and `DEADLINE_EXCEEDED` (with our own per-attempt timeout and refused
//! connections) are retried, with jittered exponential backoff; everything else is classified
//! once and answered at once, so an outage and a refusal never look alike to the caller.

use std::time::Duration;

use google_cloud_gax::error::rpc::Code;

use super::config::GcpKmsConfig;
use crate::ids::TenantId;
use crate::kms::KmsError;

/// Runs `call` with the per-attempt timeout, retrying only transient failures.
pub(super) async fn with_retries<T, F, Fut>(
    config: &GcpKmsConfig,
    what: &str,
    mut call: F,
) -> Result<T, CallError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = google_cloud_kms_v1::Result<T>>,
{
    let mut backoff = config.initial_backoff;
    let mut attempt = 1;
    loop {
        let error = match tokio::time::timeout(config.attempt_timeout, call()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => CallError::classify(what, &e),
            Err(_) => CallError {
                kind: Kind::Unavailable,
                message: format!("{what}: the attempt timed out"),
            },
        };
        if error.kind != Kind::Unavailable || attempt >= config.max_attempts {
            return Err(CallError {
                message: format!("{} (attempt {attempt})", error.message),
                ..error
            });
        }
        tracing::warn!(attempt, reason = %error.message, "Cloud KMS call failed; retrying");
        tokio::time::sleep(jitter(backoff)).await;
        backoff = (backoff * 2).min(config.max_backoff);
        attempt += 1;
    }
}

/// A failed call, classified by what the caller can do about it.
#[derive(Debug)]
pub(super) struct CallError {
    pub(super) kind: Kind,
    /// The call's name and the service's message; never key material.
    pub(super) message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// UNAVAILABLE, DEADLINE_EXCEEDED, a timeout or a refused connection: worth a retry.
    Unavailable,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    /// The service says a request checksum does not match the data it received.
    ChecksumRejected,
    /// Anything else the service calls INVALID_ARGUMENT (on decrypt: it does not authenticate).
    InvalidArgument,
    /// FAILED_PRECONDITION: on decrypt, the version is disabled or destroyed.
    FailedPrecondition,
    /// Any other 5xx (INTERNAL, UNKNOWN, a bare 500): answered at once, reported as
    /// unavailable, since nothing was decided about the data.
    ServerError,
    Other,
}

impl CallError {
    fn classify(what: &str, e: &google_cloud_kms_v1::Error) -> CallError {
        let (kind, detail) = match e.status() {
            Some(status) => {
                let kind = match status.code {
                    Code::Unavailable | Code::DeadlineExceeded => Kind::Unavailable,
                    Code::NotFound => Kind::NotFound,
                    Code::AlreadyExists => Kind::AlreadyExists,
                    Code::PermissionDenied | Code::Unauthenticated => Kind::PermissionDenied,
                    // Cloud KMS names the checksum field when the data it received does not
                    // match the client's CRC32C: corruption in transit, not a bad ciphertext.
                    Code::InvalidArgument
                        if status.message.to_ascii_lowercase().contains("checksum")
                            || status.message.contains("crc32c") =>
                    {
                        Kind::ChecksumRejected
                    }
                    Code::InvalidArgument => Kind::InvalidArgument,
                    Code::FailedPrecondition => Kind::FailedPrecondition,
                    // HTTP 500 from the service itself: a fault on its side, not an answer
                    // about our data. Not retried here (AIP-194), but an outage to the caller.
                    Code::Internal | Code::Unknown => Kind::ServerError,
                    _ => Kind::Other,
                };
                (kind, format!("{:?}: {}", status.code, status.message))
            }
            // A proxy or load balancer in front of the service answers 502/503/504 without a
            // Google error body, and a connection can drop after the request went out: both
            // are what gRPC calls UNAVAILABLE (Google's own Aip194Strict policy agrees).
            None if e.is_timeout()
                || e.is_connect()
                || e.is_io()
                || e.is_transient_and_before_rpc()
                || matches!(e.http_status_code(), Some(502..=504)) =>
            {
                (Kind::Unavailable, e.to_string())
            }
            None if e.is_authentication() => (Kind::PermissionDenied, e.to_string()),
            None if matches!(e.http_status_code(), Some(500..=599)) => {
                (Kind::ServerError, e.to_string())
            }
            None => (Kind::Other, e.to_string()),
        };
        CallError {
            kind,
            message: format!("{what}: {detail}"),
        }
    }

    /// The usual mapping; call sites handle the kinds whose meaning depends on the call.
    pub(super) fn into_kms(self, tenant: TenantId) -> KmsError {
        match self.kind {
            Kind::Unavailable | Kind::ServerError => {
                KmsError::Unavailable(format!("Cloud KMS {}", self.message))
            }
            Kind::NotFound => KmsError::UnknownTenant(tenant),
            Kind::PermissionDenied => KmsError::PermissionDenied(self.message),
            Kind::ChecksumRejected => KmsError::Integrity(self.message),
            Kind::AlreadyExists
            | Kind::InvalidArgument
            | Kind::FailedPrecondition
            | Kind::Other => KmsError::Remote(self.message),
        }
    }
}

/// Full jitter: a uniformly random wait in [backoff/2, backoff].
fn jitter(backoff: Duration) -> Duration {
    let half = backoff / 2;
    half + half.mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_half_to_full_backoff() {
        let b = Duration::from_millis(200);
        for _ in 0..100 {
            let j = jitter(b);
            assert!(j >= b / 2 && j <= b);
        }
    }
}
