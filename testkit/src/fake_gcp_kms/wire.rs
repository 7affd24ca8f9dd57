//! The REST/JSON encoding of Cloud KMS messages (the proto3 JSON mapping), written out by hand
//! rather than borrowed from the client crate's serde impls, so the fake checks what the client
//! really puts on the wire instead of agreeing with it by construction.
//!
//! The facts it encodes: field names are lowerCamelCase (snake_case is accepted too, as
//! Google's front end does); `bytes` are standard base64; `int64` (and the `Int64Value` CRC32C
//! wrappers) are JSON strings; `Duration` is `"7776000s"`; `Timestamp` is RFC 3339; enums are
//! integers when the request carries `$alt=json;enum-encoding=int` (the client always does)
//! and names otherwise; unknown field names are rejected.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

use super::status::RpcError;

/// A proto enum: its full name (for error messages) and its `(number, NAME)` pairs.
pub(super) struct EnumType {
    proto_name: &'static str,
    values: &'static [(i32, &'static str)],
}

/// `google.cloud.kms.v1.CryptoKey.CryptoKeyPurpose`.
pub(super) const PURPOSE: EnumType = EnumType {
    proto_name: "google.cloud.kms.v1.CryptoKey.CryptoKeyPurpose",
    values: &[
        (0, "CRYPTO_KEY_PURPOSE_UNSPECIFIED"),
        (1, "ENCRYPT_DECRYPT"),
        (5, "ASYMMETRIC_SIGN"),
        (6, "ASYMMETRIC_DECRYPT"),
        (7, "RAW_ENCRYPT_DECRYPT"),
        (9, "MAC"),
        (10, "KEY_ENCAPSULATION"),
        (11, "AES_WRAPPING"),
    ],
};

/// `google.cloud.kms.v1.ProtectionLevel`.
pub(super) const PROTECTION_LEVEL: EnumType = EnumType {
    proto_name: "google.cloud.kms.v1.ProtectionLevel",
    values: &[
        (0, "PROTECTION_LEVEL_UNSPECIFIED"),
        (1, "SOFTWARE"),
        (2, "HSM"),
        (3, "EXTERNAL"),
        (4, "EXTERNAL_VPC"),
        (5, "HSM_SINGLE_TENANT"),
    ],
};

/// `google.cloud.kms.v1.CryptoKeyVersion.CryptoKeyVersionAlgorithm` (the symmetric subset).
pub(super) const ALGORITHM: EnumType = EnumType {
    proto_name: "google.cloud.kms.v1.CryptoKeyVersion.CryptoKeyVersionAlgorithm",
    values: &[
        (0, "CRYPTO_KEY_VERSION_ALGORITHM_UNSPECIFIED"),
        (1, "GOOGLE_SYMMETRIC_ENCRYPTION"),
        (18, "EXTERNAL_SYMMETRIC_ENCRYPTION"),
        (19, "AES_256_GCM"),
        (41, "AES_128_GCM"),
    ],
};

/// `google.cloud.kms.v1.CryptoKeyVersion.CryptoKeyVersionState`.
pub(super) const VERSION_STATE: EnumType = EnumType {
    proto_name: "google.cloud.kms.v1.CryptoKeyVersion.CryptoKeyVersionState",
    values: &[
        (0, "CRYPTO_KEY_VERSION_STATE_UNSPECIFIED"),
        (1, "ENABLED"),
        (2, "DISABLED"),
        (3, "DESTROYED"),
        (4, "DESTROY_SCHEDULED"),
        (5, "PENDING_GENERATION"),
    ],
};

/// How the response encodes enums, chosen by the request's `$alt` query parameter.
#[derive(Clone, Copy, Debug)]
pub(super) struct Encoding {
    enums_as_ints: bool,
}

impl Encoding {
    pub(super) fn from_query(query: &[(String, String)]) -> Self {
        let enums_as_ints = query
            .iter()
            .any(|(k, v)| k == "$alt" && v.split(';').any(|p| p == "enum-encoding=int"));
        Self { enums_as_ints }
    }

    pub(super) fn enumeration(self, ty: &EnumType, number: i32) -> Value {
        match ty.values.iter().find(|(n, _)| *n == number) {
            Some((_, name)) if !self.enums_as_ints => Value::from(*name),
            _ => Value::from(number),
        }
    }
}

/// One request message's JSON object, field names normalised to lowerCamelCase.
pub(super) struct Message {
    /// Where this message sits in the request, snake_case, for error messages ("" = top).
    path: String,
    fields: Map<String, Value>,
}

impl Message {
    /// Parses a request body; an empty body is an empty message, as for a GET.
    pub(super) fn parse(body: &[u8], known: &[&str]) -> Result<Self, RpcError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self {
                path: String::new(),
                fields: Map::new(),
            });
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(value) => Self::from_value(value, String::new(), known),
            Err(e) => Err(RpcError::invalid_argument(format!(
                "Invalid JSON payload received. {e}"
            ))),
        }
    }

    fn from_value(value: Value, path: String, known: &[&str]) -> Result<Self, RpcError> {
        let Value::Object(raw) = value else {
            return Err(RpcError::invalid_argument(format!(
                "Invalid JSON payload received. Expected an object at '{path}'."
            )));
        };
        let mut fields = Map::new();
        for (name, value) in raw {
            let camel = snake_to_camel(&name);
            if !known.contains(&camel.as_str()) {
                let at = if path.is_empty() {
                    String::new()
                } else {
                    format!(" at '{path}'")
                };
                return Err(RpcError::invalid_argument(format!(
                    "Invalid JSON payload received. Unknown name \"{name}\"{at}: Cannot find field."
                )));
            }
            fields.insert(camel, value);
        }
        Ok(Self { path, fields })
    }

    /// A nested message field, or `None` when absent or `null`.
    pub(super) fn message(&self, field: &str, known: &[&str]) -> Result<Option<Self>, RpcError> {
        match self.fields.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => Self::from_value(value.clone(), self.field_path(field), known).map(Some),
        }
    }

    pub(super) fn string(&self, field: &str) -> Result<String, RpcError> {
        match self.fields.get(field) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(self.invalid_value(field, "TYPE_STRING", other)),
        }
    }

    /// A `bytes` field: standard base64 (URL-safe accepted too); absent means empty.
    pub(super) fn bytes(&self, field: &str) -> Result<Vec<u8>, RpcError> {
        match self.fields.get(field) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::String(s)) => {
                STANDARD
                    .decode(s)
                    .or_else(|_| URL_SAFE.decode(s))
                    .map_err(|_| {
                        RpcError::invalid_argument(format!(
                        "Invalid value at '{}' (TYPE_BYTES), Base64 decoding failed for \"{s}\"",
                        self.field_path(field)
                    ))
                    })
            }
            Some(other) => Err(self.invalid_value(field, "TYPE_BYTES", other)),
        }
    }

    /// An `int64` / `google.protobuf.Int64Value` field: a JSON string (numbers are accepted
    /// too); `None` when absent, which for the CRC32C wrappers means "not sent".
    pub(super) fn int64(&self, field: &str) -> Result<Option<i64>, RpcError> {
        let Some(value) = self.fields.get(field).filter(|v| !v.is_null()) else {
            return Ok(None);
        };
        let parsed = match value {
            Value::String(s) => s.parse::<i64>().ok(),
            Value::Number(n) => n.as_i64(),
            _ => None,
        };
        parsed
            .map(Some)
            .ok_or_else(|| self.invalid_value(field, "TYPE_INT64", value))
    }

    /// An enum field by number or by name; absent means 0 (`*_UNSPECIFIED`).
    pub(super) fn enumeration(&self, field: &str, ty: &EnumType) -> Result<i32, RpcError> {
        let value = match self.fields.get(field) {
            None | Some(Value::Null) => return Ok(0),
            Some(value) => value,
        };
        let number = match value {
            Value::Number(n) => n.as_i64().and_then(|n| i32::try_from(n).ok()),
            Value::String(s) => ty.values.iter().find(|(_, n)| n == s).map(|(v, _)| *v),
            _ => None,
        };
        number.ok_or_else(|| {
            let ty = format!("type.googleapis.com/{}", ty.proto_name);
            self.invalid_value(field, &ty, value)
        })
    }

    /// A `google.protobuf.Duration`: `"<seconds>[.<fraction>]s"`.
    pub(super) fn duration(&self, field: &str) -> Result<Option<Duration>, RpcError> {
        match self.fields.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => parse_duration(s).map(Some).ok_or_else(|| {
                self.invalid_value(field, "google.protobuf.Duration", &s.as_str().into())
            }),
            Some(other) => Err(self.invalid_value(field, "google.protobuf.Duration", other)),
        }
    }

    /// A `google.protobuf.Timestamp`: RFC 3339.
    pub(super) fn timestamp(&self, field: &str) -> Result<Option<DateTime<Utc>>, RpcError> {
        match self.fields.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
                .map(|t| Some(t.with_timezone(&Utc)))
                .map_err(|_| {
                    self.invalid_value(field, "google.protobuf.Timestamp", &s.as_str().into())
                }),
            Some(other) => Err(self.invalid_value(field, "google.protobuf.Timestamp", other)),
        }
    }

    /// A `map<string, string>` field.
    pub(super) fn string_map(&self, field: &str) -> Result<BTreeMap<String, String>, RpcError> {
        match self.fields.get(field) {
            None | Some(Value::Null) => Ok(BTreeMap::new()),
            Some(Value::Object(map)) => map
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.clone(), s.clone())),
                    other => Err(self.invalid_value(field, "TYPE_STRING", other)),
                })
                .collect(),
            Some(other) => Err(self.invalid_value(field, "map", other)),
        }
    }

    fn field_path(&self, field: &str) -> String {
        let field = camel_to_snake(field);
        if self.path.is_empty() {
            field
        } else {
            format!("{}.{field}", self.path)
        }
    }

    fn invalid_value(&self, field: &str, ty: &str, value: &Value) -> RpcError {
        RpcError::invalid_argument(format!(
            "Invalid value at '{}' ({ty}), {value}",
            self.field_path(field)
        ))
    }
}

/// `bytes` on the wire: standard base64 with padding.
pub(super) fn bytes_value(bytes: &[u8]) -> Value {
    Value::from(STANDARD.encode(bytes))
}

/// `int64` / `Int64Value` on the wire: a decimal string.
pub(super) fn int64_value(value: i64) -> Value {
    Value::from(value.to_string())
}

/// `Duration` on the wire: seconds with an optional fraction and a trailing `s`.
pub(super) fn duration_value(duration: Duration) -> Value {
    let nanos = duration.subsec_nanos();
    if nanos == 0 {
        return Value::from(format!("{}s", duration.as_secs()));
    }
    let fraction = format!("{nanos:09}");
    Value::from(format!(
        "{}.{}s",
        duration.as_secs(),
        fraction.trim_end_matches('0')
    ))
}

/// `Timestamp` on the wire: RFC 3339 in UTC with a `Z`.
pub(super) fn timestamp_value(time: DateTime<Utc>) -> Value {
    Value::from(time.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

fn parse_duration(text: &str) -> Option<Duration> {
    let number = text.strip_suffix('s')?;
    let (secs, fraction) = number.split_once('.').unwrap_or((number, ""));
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<9}").parse::<u32>().ok()?
    };
    Some(Duration::new(secs.parse().ok()?, nanos))
}

fn snake_to_camel(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn camel_to_snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_trip_in_proto3_json_form() {
        assert_eq!(
            parse_duration("7776000s"),
            Some(Duration::from_secs(7_776_000))
        );
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_duration("10"), None);
        assert_eq!(
            duration_value(Duration::from_millis(1500)),
            Value::from("1.5s")
        );
        assert_eq!(
            duration_value(Duration::from_secs(86_400)),
            Value::from("86400s")
        );
    }

    #[test]
    fn field_names_are_normalised_between_snake_and_camel_case() {
        assert_eq!(snake_to_camel("plaintext_crc32c"), "plaintextCrc32c");
        assert_eq!(
            camel_to_snake("additionalAuthenticatedDataCrc32c"),
            "additional_authenticated_data_crc32c"
        );
    }
}
