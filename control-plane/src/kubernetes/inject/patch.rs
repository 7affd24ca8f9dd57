//! The JSON Patch operations and AdmissionReview answers the injector builds.

use base64::Engine;
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation};
use kube_core::admission::AdmissionResponse;
use serde_json::{json, Value};

/// `add` of each variable the container does not set itself (its own value wins).
pub(super) fn env_ops(
    list: &str,
    index: usize,
    container: &Value,
    env: &[(&'static str, String)],
) -> Vec<PatchOperation> {
    let index = index.to_string();
    let existing = container["env"].as_array();
    let missing: Vec<Value> = env
        .iter()
        .filter(|(name, _)| !existing.into_iter().flatten().any(|e| e["name"] == *name))
        .map(|(name, value)| json!({ "name": name, "value": value }))
        .collect();
    match existing {
        None if missing.is_empty() => Vec::new(),
        None => vec![add(&["spec", list, &index, "env"], Value::Array(missing))],
        Some(_) => missing
            .into_iter()
            .map(|var| add(&["spec", list, &index, "env", "-"], var))
            .collect(),
    }
}

pub(super) fn add(path: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(path.iter().copied()),
        value,
    })
}

/// `response.patch` as the API documents it, a base64 string (Go's `[]byte`): kube-core
/// writes the bytes as an array of numbers, which Go's decoder happens to accept too.
pub(super) fn patch_as_base64(answer: &mut Value) {
    let Some(patch) = answer.pointer_mut("/response/patch") else {
        return;
    };
    let bytes: Option<Vec<u8>> = patch.as_array().and_then(|items| {
        items
            .iter()
            .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
            .collect()
    });
    if let Some(bytes) = bytes {
        *patch = Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
}

/// The answer to a body that is not a usable review.
pub(super) fn invalid(reason: &str) -> Value {
    serde_json::to_value(AdmissionResponse::invalid(reason).into_review()).unwrap_or(Value::Null)
}
