//! Which Cloud KMS RPC an HTTP request is, from its method and path, the way the REST
//! bindings in `google.cloud.kms.v1` map them (`/v1/{name}`, `/v1/{name}:verb`, ...).

use axum::http::Method;

/// One KeyManagementService RPC, with the resource name from its path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Rpc {
    /// `POST /v1/{parent=projects/*/locations/*/keyRings/*}/cryptoKeys`
    CreateCryptoKey { parent: String },
    /// `GET /v1/{name=projects/*/locations/*/keyRings/*/cryptoKeys/*}`
    GetCryptoKey { name: String },
    /// `GET /v1/{name=projects/*/locations/*/keyRings/*/cryptoKeys/*/cryptoKeyVersions/*}`
    GetCryptoKeyVersion { name: String },
    /// `POST /v1/{parent=.../cryptoKeys/*}/cryptoKeyVersions`
    CreateCryptoKeyVersion { parent: String },
    /// `POST /v1/{name=.../cryptoKeys/*}:updatePrimaryVersion`
    UpdateCryptoKeyPrimaryVersion { name: String },
    /// `PATCH /v1/{crypto_key_version.name=.../cryptoKeyVersions/*}`
    UpdateCryptoKeyVersion { name: String },
    /// `POST /v1/{name=.../cryptoKeys/**}:encrypt` (a key or one of its versions)
    Encrypt { name: String },
    /// `POST /v1/{name=.../cryptoKeys/*}:decrypt`
    Decrypt { name: String },
}

impl Rpc {
    /// Parses `method` + `path`; `None` for anything Cloud KMS would answer 404 to.
    pub(super) fn parse(method: &Method, path: &str) -> Option<Self> {
        let rest = path.strip_prefix("/v1/")?;
        let (resource, verb) = match rest.rsplit_once(':') {
            Some((resource, verb)) if !verb.contains('/') => (resource, Some(verb)),
            _ => (rest, None),
        };
        let segments: Vec<&str> = resource.split('/').collect();
        if segments.iter().any(|s| s.is_empty()) {
            return None;
        }
        let ["projects", _, "locations", _, "keyRings", _, below_ring @ ..] = segments.as_slice()
        else {
            return None;
        };
        let name = resource.to_string();
        let parent = || segments[..segments.len() - 1].join("/");
        let rpc = match (method.as_str(), below_ring, verb) {
            ("POST", ["cryptoKeys"], None) => Self::CreateCryptoKey { parent: parent() },
            ("GET", ["cryptoKeys", _], None) => Self::GetCryptoKey { name },
            ("POST", ["cryptoKeys", _], Some("encrypt")) => Self::Encrypt { name },
            ("POST", ["cryptoKeys", _], Some("decrypt")) => Self::Decrypt { name },
            ("POST", ["cryptoKeys", _], Some("updatePrimaryVersion")) => {
                Self::UpdateCryptoKeyPrimaryVersion { name }
            }
            ("POST", ["cryptoKeys", _, "cryptoKeyVersions"], None) => {
                Self::CreateCryptoKeyVersion { parent: parent() }
            }
            ("GET", ["cryptoKeys", _, "cryptoKeyVersions", _], None) => {
                Self::GetCryptoKeyVersion { name }
            }
            ("PATCH", ["cryptoKeys", _, "cryptoKeyVersions", _], None) => {
                Self::UpdateCryptoKeyVersion { name }
            }
            ("POST", ["cryptoKeys", _, "cryptoKeyVersions", _], Some("encrypt")) => {
                Self::Encrypt { name }
            }
            _ => return None,
        };
        Some(rpc)
    }

    /// The RPC's name as tests count and fault it: the proto method in lowerCamelCase.
    pub(super) fn method(&self) -> &'static str {
        match self {
            Self::CreateCryptoKey { .. } => "createCryptoKey",
            Self::GetCryptoKey { .. } => "getCryptoKey",
            Self::GetCryptoKeyVersion { .. } => "getCryptoKeyVersion",
            Self::CreateCryptoKeyVersion { .. } => "createCryptoKeyVersion",
            Self::UpdateCryptoKeyPrimaryVersion { .. } => "updateCryptoKeyPrimaryVersion",
            Self::UpdateCryptoKeyVersion { .. } => "updateCryptoKeyVersion",
            Self::Encrypt { .. } => "encrypt",
            Self::Decrypt { .. } => "decrypt",
        }
    }

    /// The resource the RPC acts on, as IAM names it in a denial.
    pub(super) fn resource(&self) -> &str {
        match self {
            Self::CreateCryptoKey { parent } | Self::CreateCryptoKeyVersion { parent } => parent,
            Self::GetCryptoKey { name }
            | Self::GetCryptoKeyVersion { name }
            | Self::UpdateCryptoKeyPrimaryVersion { name }
            | Self::UpdateCryptoKeyVersion { name }
            | Self::Encrypt { name }
            | Self::Decrypt { name } => name,
        }
    }

    /// The IAM permission Cloud KMS checks for the RPC.
    pub(super) fn permission(&self) -> &'static str {
        match self {
            Self::CreateCryptoKey { .. } => "cloudkms.cryptoKeys.create",
            Self::GetCryptoKey { .. } => "cloudkms.cryptoKeys.get",
            Self::GetCryptoKeyVersion { .. } => "cloudkms.cryptoKeyVersions.get",
            Self::CreateCryptoKeyVersion { .. } => "cloudkms.cryptoKeyVersions.create",
            Self::UpdateCryptoKeyPrimaryVersion { .. } => "cloudkms.cryptoKeys.update",
            Self::UpdateCryptoKeyVersion { .. } => "cloudkms.cryptoKeyVersions.update",
            Self::Encrypt { .. } => "cloudkms.cryptoKeyVersions.useToEncrypt",
            Self::Decrypt { .. } => "cloudkms.cryptoKeyVersions.useToDecrypt",
        }
    }
}

/// Every method name [`Rpc::method`] can return, so a fault naming a typo fails loudly.
pub(super) const METHODS: &[&str] = &[
    "createCryptoKey",
    "getCryptoKey",
    "getCryptoKeyVersion",
    "createCryptoKeyVersion",
    "updateCryptoKeyPrimaryVersion",
    "updateCryptoKeyVersion",
    "encrypt",
    "decrypt",
];

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "projects/p/locations/global/keyRings/r/cryptoKeys/k";

    #[test]
    fn rest_paths_map_to_their_rpcs() {
        let parse = |m: Method, p: String| Rpc::parse(&m, &p).map(|r| r.method());
        assert_eq!(
            parse(Method::POST, format!("/v1/{KEY}:encrypt")),
            Some("encrypt")
        );
        assert_eq!(
            parse(
                Method::POST,
                format!("/v1/{KEY}/cryptoKeyVersions/2:encrypt")
            ),
            Some("encrypt")
        );
        assert_eq!(
            parse(Method::POST, format!("/v1/{KEY}:decrypt")),
            Some("decrypt")
        );
        assert_eq!(
            parse(
                Method::POST,
                format!("/v1/{KEY}/cryptoKeyVersions/2:decrypt")
            ),
            None
        );
        assert_eq!(
            parse(Method::GET, format!("/v1/{KEY}")),
            Some("getCryptoKey")
        );
        assert_eq!(parse(Method::DELETE, format!("/v1/{KEY}")), None);
        assert_eq!(
            parse(
                Method::POST,
                "/v1/projects/p/locations/global/keyRings/r/cryptoKeys".into()
            ),
            Some("createCryptoKey")
        );
        assert_eq!(parse(Method::GET, "/v2/anything".into()), None);
    }
}
