//! CSV rendering of audit exports, through the `csv` crate (quoting is not hand-rolled: a
//! user agent or reason may hold commas, quotes or newlines).
//!
//! Audit fields such as the user agent are chosen by whoever made the request, and auditors
//! open exports in spreadsheets, which run a cell starting with `=`, `+`, `-` or `@` as a
//! formula (`=HYPERLINK(...)` exfiltrates, `=cmd|...` once ran programs). Such cells, and those
//! starting with a tab or carriage return, are prefixed with `'` so they are shown as text
//! (OWASP "CSV Injection"). JSON and JSON Lines exports carry the values unchanged.

use crate::service::audit_log::AuditEventView;
use crate::service::ServiceError;

/// Characters that make a spreadsheet read a cell as a formula.
const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// `value` safe to open in a spreadsheet: prefixed with `'` if it could start a formula.
pub fn neutralise(value: &str) -> std::borrow::Cow<'_, str> {
    if value.starts_with(FORMULA_STARTS) {
        format!("'{value}").into()
    } else {
        value.into()
    }
}

fn neutralise_owned(value: &mut String) {
    if let std::borrow::Cow::Owned(safe) = neutralise(value) {
        *value = safe;
    }
}

/// The event with every text cell neutralised (numbers and booleans cannot start a formula).
fn for_spreadsheet(event: &AuditEventView) -> AuditEventView {
    let mut safe = event.clone();
    for field in [
        &mut safe.id,
        &mut safe.tenant_id,
        &mut safe.event_type,
        &mut safe.actor,
        &mut safe.timestamp,
        &mut safe.prev_hash,
        &mut safe.hash,
    ] {
        neutralise_owned(field);
    }
    for field in [
        &mut safe.ip,
        &mut safe.user_agent,
        &mut safe.path,
        &mut safe.destination_host,
        &mut safe.reason,
    ]
    .into_iter()
    .flatten()
    {
        neutralise_owned(field);
    }
    safe
}

/// One JSON document per line (`format=jsonl`).
pub fn to_jsonl(events: &[AuditEventView]) -> Result<String, ServiceError> {
    let mut body = String::new();
    for e in events {
        body.push_str(
            &serde_json::to_string(e).map_err(|e| ServiceError::Internal(e.to_string()))?,
        );
        body.push('\n');
    }
    Ok(body)
}

pub fn to_csv(events: &[AuditEventView]) -> Result<String, ServiceError> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    for event in events {
        writer
            .serialize(for_spreadsheet(event))
            .map_err(|e| ServiceError::Internal(format!("csv: {e}")))?;
    }
    if events.is_empty() {
        writer
            .write_record([
                "id",
                "tenant_id",
                "seq",
                "type",
                "actor",
                "ip",
                "user_agent",
                "path",
                "destination_host",
                "success",
                "reason",
                "timestamp",
                "prev_hash",
                "hash",
            ])
            .map_err(|e| ServiceError::Internal(format!("csv: {e}")))?;
    }
    let bytes = writer
        .into_inner()
        .map_err(|e| ServiceError::Internal(format!("csv: {e}")))?;
    String::from_utf8(bytes).map_err(|e| ServiceError::Internal(format!("csv: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_that_could_start_a_formula_are_prefixed_with_a_quote() {
        for (raw, shown) in [
            (
                "=HYPERLINK(\"http://x\",\"y\")",
                "'=HYPERLINK(\"http://x\",\"y\")",
            ),
            ("+1+1", "'+1+1"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\t=1", "'\t=1"),
            ("\r=1", "'\r=1"),
            ("curl/8.5.0", "curl/8.5.0"),
            ("a=b", "a=b"),
            ("", ""),
        ] {
            assert_eq!(neutralise(raw), shown, "{raw:?}");
        }
    }
}
