//! The Google Cloud KMS backend, through Google's official `google-cloud-kms-v1` client.
//!
//! Each tenant has one symmetric CryptoKey, `{key_ring}/cryptoKeys/tenant-{tenant_id}`, created
//! at tenant creation with the configured protection level (HSM by default) and a rotation
//! period, so Cloud KMS rotates it on its own; this backend only reads the primary version.
//!
//! Every call carries CRC32C checksums both ways, as Tink's `gcpkms` AEAD does: the request's
//! `plaintext_crc32c`/`ciphertext_crc32c` and `additional_authenticated_data_crc32c` let the
//! service refuse data corrupted on the way in, the `verified_*` flags prove it checked them,
//! and the response checksums let us refuse data corrupted on the way back. The key version
//! named in an encrypt response must belong to the key we asked for.
//!
//! Only `UNAVAILABLE` and `DEADLINE_EXCEEDED` (including our own per-attempt timeout and a
//! refused connection, which gRPC also reports as `UNAVAILABLE`) are retried, with jittered
//! exponential backoff; everything else is answered at once. Every outage, including a 5xx
//! such as `INTERNAL`, reaches callers as [`KmsError::Unavailable`] and every failed check as
//! [`KmsError::Integrity`] (see [`super::KmsFault`]). The client's own retry loop is switched
//! off so that these are the only retries.
//!
//! [`KmsError::Unavailable`]: super::KmsError::Unavailable
//! [`KmsError::Integrity`]: super::KmsError::Integrity
//!
//! Separation of duties: the control plane only ever calls encrypt, key creation and key reads
//! (and version creation when forced to rotate a key that has no rotation period), the sidecar
//! only decrypt, and `kms rewrap`/`kms retire-version` both and version updates. Each can therefore run
//! with the narrowest IAM role; see README.md "Google Cloud KMS".
//!
//! The DEK passes through the client as `bytes::Bytes`, which is not zeroized; that copy lives
//! only for the length of one request, like the TLS buffers below it.
//!
//! Files by concern: `config` what to reach and how patiently, `retry` which failures earn
//! another attempt, `checks` what an answer must satisfy, `client` the calls themselves.

mod checks;
mod client;
mod config;
mod retry;

pub use client::GcpKms;
pub use config::{GcpCredentials, GcpKmsConfig, GcpProtection};
