//! What the Cloud KMS backend reaches (the key ring) and how patiently (timeouts, attempts,
//! backoff), checked where the settings are read so that a bad endpoint or an anonymous
//! client fails at start-up, naming the config key.

use std::path::PathBuf;
use std::time::Duration;

use crate::kms::KmsError;

/// Where the client's credentials come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GcpCredentials {
    /// Application Default Credentials: `GOOGLE_APPLICATION_CREDENTIALS`, gcloud's user
    /// credentials, or the metadata server (GKE workload identity).
    ApplicationDefault,
    /// A service-account key JSON file.
    ServiceAccountFile(PathBuf),
    /// No credentials at all: only for a test endpoint such as the suite's fake server.
    Anonymous,
}

/// `http://127.0.0.1:PORT[/...]` (or localhost, `[::1]`): a test server on this host. The port
/// must end the authority: in `http://127.0.0.1:1@kms.example.com` the host is
/// kms.example.com and `127.0.0.1:1` only its userinfo.
fn is_loopback_http(endpoint: &str) -> bool {
    ["http://127.0.0.1:", "http://localhost:", "http://[::1]:"]
        .iter()
        .filter_map(|prefix| endpoint.strip_prefix(prefix))
        .any(|rest| {
            let port = rest.split_once('/').map_or(rest, |(port, _)| port);
            !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
        })
}

impl GcpCredentials {
    /// Reads the `kms.credentials_file` setting: absent is Application Default Credentials,
    /// `"anonymous"` is no credentials, which is accepted only with an explicit `http://`
    /// loopback endpoint so that a production config can never send unauthenticated calls.
    pub fn from_setting(
        credentials_file: Option<&std::path::Path>,
        endpoint: Option<&str>,
    ) -> Result<GcpCredentials, String> {
        match credentials_file {
            None => Ok(GcpCredentials::ApplicationDefault),
            Some(path) if path.as_os_str() == "anonymous" => {
                if endpoint.is_some_and(is_loopback_http) {
                    Ok(GcpCredentials::Anonymous)
                } else {
                    Err("\"anonymous\" is only allowed with a loopback http:// endpoint (a test server)".into())
                }
            }
            Some(path) => Ok(GcpCredentials::ServiceAccountFile(path.to_owned())),
        }
    }
}

impl GcpCredentials {
    /// The client credentials this setting names. A service-account file is read here (see
    /// [`crate::secret_file`]); its content (a private key) never appears in an error.
    pub(super) fn build(&self) -> Result<google_cloud_auth::credentials::Credentials, KmsError> {
        let credentials = match self {
            GcpCredentials::Anonymous => {
                google_cloud_auth::credentials::anonymous::Builder::new().build()
            }
            GcpCredentials::ApplicationDefault => {
                google_cloud_auth::credentials::Builder::default()
                    .build()
                    .map_err(|e| {
                        KmsError::Config(format!("application default credentials: {e}"))
                    })?
            }
            GcpCredentials::ServiceAccountFile(path) => {
                // A service-account key is a credential like any other: refused when its
                // group or others can read it.
                let text =
                    crate::secret_file::read(path).map_err(|e| KmsError::Config(e.to_string()))?;
                let json: serde_json::Value =
                    serde_json::from_str(text.expose()).map_err(|_| {
                        // The file holds a private key: never echo serde's excerpt of it.
                        KmsError::Config(format!("{} is not valid JSON", path.display()))
                    })?;
                google_cloud_auth::credentials::service_account::Builder::new(json)
                    .build()
                    .map_err(|e| {
                        KmsError::Config(format!(
                            "{} is not a usable service-account key: {e}",
                            path.display()
                        ))
                    })?
            }
        };
        Ok(credentials)
    }
}

/// The protection level of newly created tenant keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GcpProtection {
    #[default]
    Hsm,
    Software,
}

/// Everything needed to reach the tenant key ring.
#[derive(Clone, Debug)]
pub struct GcpKmsConfig {
    pub project: String,
    pub location: String,
    pub key_ring: String,
    /// `None` is Google's endpoint, `https://cloudkms.googleapis.com`.
    pub endpoint: Option<String>,
    pub credentials: GcpCredentials,
    pub protection: GcpProtection,
    /// Cloud KMS rotates each tenant key this often (the design asks for 90 days).
    pub rotation_period: Duration,
    /// One attempt's deadline.
    pub attempt_timeout: Duration,
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    /// Backoff before the first retry; doubled (with jitter) up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl GcpKmsConfig {
    /// Defaults for everything but the key ring's coordinates.
    pub fn new(project: &str, location: &str, key_ring: &str) -> GcpKmsConfig {
        GcpKmsConfig {
            project: project.to_owned(),
            location: location.to_owned(),
            key_ring: key_ring.to_owned(),
            endpoint: None,
            credentials: GcpCredentials::ApplicationDefault,
            protection: GcpProtection::Hsm,
            rotation_period: Duration::from_secs(90 * 24 * 3600),
            attempt_timeout: Duration::from_secs(10),
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }

    /// Settings as both config files spell them (`[kms]` project, location, key_ring, endpoint,
    /// and the credentials file with the name of the key it came from), checked; `Err` is (the
    /// key at fault, why).
    pub fn from_settings(
        project: Option<&str>,
        location: Option<&str>,
        key_ring: Option<&str>,
        endpoint: Option<&str>,
        credentials: (&'static str, Option<&std::path::Path>),
    ) -> Result<GcpKmsConfig, (&'static str, String)> {
        let (credentials_key, credentials_file) = credentials;
        let required = |key: &'static str, value: Option<&str>| match value {
            Some(v) if !v.is_empty() && !v.contains('/') => Ok(v.to_owned()),
            Some(_) => Err((
                key,
                "must be a non-empty resource id without '/'".to_owned(),
            )),
            None => Err((key, "required when kms.backend = \"gcp\"".to_owned())),
        };
        let project = required("kms.project", project)?;
        let location = required("kms.location", location)?;
        let key_ring = required("kms.key_ring", key_ring)?;
        // Bearer tokens and DEKs must not cross a network in clear text.
        if let Some(e) = endpoint {
            if !(e.starts_with("https://") || is_loopback_http(e)) {
                return Err((
                    "kms.endpoint",
                    "must be https:// (plain http:// only for a loopback test server)".to_owned(),
                ));
            }
        }
        let credentials = GcpCredentials::from_setting(credentials_file, endpoint)
            .map_err(|message| (credentials_key, message))?;
        let mut config = GcpKmsConfig::new(&project, &location, &key_ring);
        config.endpoint = endpoint.map(str::to_owned);
        config.credentials = credentials;
        Ok(config)
    }

    /// `projects/{p}/locations/{l}/keyRings/{r}`.
    pub fn key_ring_name(&self) -> String {
        format!(
            "projects/{}/locations/{}/keyRings/{}",
            self.project, self.location, self.key_ring
        )
    }
}
