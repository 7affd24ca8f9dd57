//! Streamed audit exports (JSON Lines and CSV), page by page at constant memory, and their
//! CSV rendering through the `csv` crate (quoting is not hand-rolled: a user agent or reason
//! may hold commas, quotes or newlines).
//!
//! Audit fields such as the user agent are chosen by whoever made the request, and auditors
//! open exports in spreadsheets, which run a cell starting with `=`, `+`, `-` or `@` as a
//! formula (`=HYPERLINK(...)` exfiltrates, `=cmd|...` once ran programs). Such cells, and those
//! starting with a tab or carriage return, are prefixed with `'` so they are shown as text
//! (OWASP "CSV Injection"). JSON and JSON Lines exports carry the values unchanged.

use std::sync::Arc;

use axum::body::Body;
use futures::{StreamExt, TryStreamExt};

use crate::audit::AuditEvent;
use crate::service::audit_log::{AuditEventView, Export};
use crate::service::{App, ServiceError};

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

/// The streamed formats of `GET /v1/audit` and the dashboard's download.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamFormat {
    /// One JSON document per line.
    JsonLines,
    /// A header row, then one row per event, cells neutralised for spreadsheets.
    Csv,
}

impl StreamFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            StreamFormat::JsonLines => "application/x-ndjson",
            StreamFormat::Csv => "text/csv; charset=utf-8",
        }
    }
}

/// The CSV columns, in the order of [`AuditEventView`]'s fields.
const CSV_HEADER: [&str; 14] = [
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
];

fn csv_error(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Internal(format!("csv: {e}"))
}

/// Renders one page of events; `first` is the first page of the export (CSV writes its
/// header there, even when there are no events at all).
pub fn render_page(
    format: StreamFormat,
    events: &[AuditEventView],
    first: bool,
) -> Result<Vec<u8>, ServiceError> {
    match format {
        StreamFormat::JsonLines => {
            let mut body = Vec::with_capacity(events.len() * 512);
            for e in events {
                serde_json::to_writer(&mut body, e)
                    .map_err(|e| ServiceError::Internal(e.to_string()))?;
                body.push(b'\n');
            }
            Ok(body)
        }
        StreamFormat::Csv => {
            let mut writer = csv::WriterBuilder::new()
                .has_headers(false)
                .from_writer(Vec::with_capacity(events.len() * 512));
            if first {
                writer.write_record(CSV_HEADER).map_err(csv_error)?;
            }
            for event in events {
                writer
                    .serialize(for_spreadsheet(event))
                    .map_err(csv_error)?;
            }
            writer.into_inner().map_err(csv_error)
        }
    }
}

/// Which exported events a download keeps beyond the store's filter (the dashboard's
/// "actor contains").
pub type Keep = Box<dyn Fn(&AuditEventView) -> bool + Send + Sync>;

/// The whole export as a streamed body, one page of events in memory at a time. The first page
/// is read before the response starts, so a failing database is an error status; a failure
/// later ends the body early (the client sees a broken transfer, never a silently short file).
pub async fn stream(
    app: Arc<App>,
    mut export: Export,
    format: StreamFormat,
    keep: Keep,
) -> Result<Body, ServiceError> {
    let first = export.next_page(&app).await?;
    let views = |page: Vec<AuditEvent>, keep: &Keep| -> Vec<AuditEventView> {
        page.iter()
            .map(AuditEventView::from)
            .filter(|e| keep(e))
            .collect()
    };
    let done = first.is_empty();
    let head = render_page(format, &views(first, &keep), true)?;
    let rest = futures::stream::try_unfold(
        (app, export, keep, done),
        move |(app, mut export, keep, done)| async move {
            if done {
                return Ok(None);
            }
            let page = export.next_page(&app).await?;
            if page.is_empty() {
                return Ok(None);
            }
            let bytes = render_page(format, &views(page, &keep), false)?;
            Ok::<_, ServiceError>(Some((bytes, (app, export, keep, false))))
        },
    );
    let body = futures::stream::once(async move { Ok(head) })
        .chain(rest)
        .map_err(|e: ServiceError| {
            tracing::error!(error = %e, "an audit export ended early");
            std::io::Error::other("the audit export failed")
        });
    Ok(Body::from_stream(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(user_agent: &str, reason: &str) -> AuditEventView {
        AuditEventView {
            id: "0190c0de-0000-7000-8000-000000000001".into(),
            tenant_id: "0190c0de-0000-7000-8000-000000000002".into(),
            seq: 7,
            event_type: "secret.read".into(),
            actor: "token:x".into(),
            ip: None,
            user_agent: Some(user_agent.into()),
            path: Some("prod/a".into()),
            destination_host: None,
            success: true,
            reason: Some(reason.into()),
            timestamp: "2026-12-05T03:00:00.123456Z".into(),
            prev_hash: "00".into(),
            hash: "11".into(),
        }
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn csv_reads_back_commas_quotes_newlines_and_neutralised_formulas() {
        let cells = [
            ("a, b", "two\nlines"),
            ("say \"hi\"", "cr\r\nlf"),
            ("=1+1", "@SUM(A1)"),
        ];
        let events: Vec<AuditEventView> = cells.iter().map(|(u, r)| view(u, r)).collect();
        let mut csv = render_page(StreamFormat::Csv, &events[..2], true).unwrap();
        csv.extend(render_page(StreamFormat::Csv, &events[2..], false).unwrap());
        let mut reader = csv::Reader::from_reader(csv.as_slice());
        assert_eq!(reader.headers().unwrap(), CSV_HEADER.as_slice());
        let back: Vec<(String, String)> = reader
            .records()
            .map(|r| {
                let r = r.unwrap();
                (r[6].to_owned(), r[10].to_owned())
            })
            .collect();
        let want: Vec<(String, String)> = cells
            .iter()
            .map(|(u, r)| (neutralise(u).into_owned(), neutralise(r).into_owned()))
            .collect();
        assert_eq!(back, want);
        assert_eq!(back[2], ("'=1+1".to_owned(), "'@SUM(A1)".to_owned()));
        assert_eq!(back[0].1, "two\nlines", "a newline survives the round trip");
    }

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
