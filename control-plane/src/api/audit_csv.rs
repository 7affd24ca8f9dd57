//! CSV rendering of audit exports, through the `csv` crate (quoting is not hand-rolled: a
//! user agent or reason may hold commas, quotes or newlines).

use crate::service::audit_log::AuditEventView;
use crate::service::ServiceError;

pub fn to_csv(events: &[AuditEventView]) -> Result<String, ServiceError> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    for event in events {
        writer
            .serialize(event)
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
