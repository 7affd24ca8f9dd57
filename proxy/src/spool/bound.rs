//! Size limits that keep every audit event and every batch sendable.
//!
//! The control plane refuses request bodies above [`MAX_REQUEST_BODY_BYTES`] (413), and it
//! takes a batch all or nothing, so one event too large to send would block the spool behind
//! it forever. Two rules make that impossible:
//!
//! * every event is capped field by field when it is recorded (and when a spool file written
//!   by an older sidecar is loaded), so its JSON never exceeds [`MAX_EVENT_BYTES`]:
//!   control characters are removed (the control plane drops them too), `user_agent`, `path`
//!   and `destination_host` keep at most [`MAX_TEXT_CHARS`] characters, `reason` at most
//!   [`MAX_REASON_CHARS`], `token_id` and `client_ip` at most [`MAX_ID_CHARS`]; a cut field
//!   ends in `…`. A query string or fragment in `path` or `destination_host` is dropped (not
//!   hashed: a hash of a short credential in a URL could be brute-forced) and replaced by
//!   `?…`. The control plane keeps 512 characters of each field, so the caps lose nothing
//!   it would have stored;
//! * batches are cut by bytes as well as by count, so their JSON stays below
//!   [`MAX_BATCH_BYTES`], leaving [`BATCH_HEADROOM_BYTES`] under the server's limit.

#[cfg(test)]
use agent_secret_core::api::SidecarAuditEvent;
use agent_secret_core::api::{SidecarAuditEventRef, MAX_REQUEST_BODY_BYTES};

use std::cell::RefCell;

/// An event waiting for the control plane, encoded once: its JSON is the spool file's line
/// (plus a newline) and the batch's element as it is.
#[derive(Debug, Clone)]
pub(crate) struct Queued {
    /// The capped event's compact JSON (UTF-8).
    pub json: Box<[u8]>,
    /// Whether it is an `audit.dropped` report, which the worker never dead-letters.
    pub is_report: bool,
    /// Bytes of its JSON line, newline included: what it costs against `max_spool_bytes`.
    pub bytes: u64,
}

impl Queued {
    /// The event with its fields capped (see this module's caps), and whether anything was cut.
    pub(crate) fn capped(event: &SidecarAuditEventRef<'_>) -> (Queued, bool) {
        SCRATCH.with_borrow_mut(|buf| {
            buf.clear();
            let truncated = write_event(buf, event);
            let queued = Queued {
                json: Box::from(&buf[..]),
                is_report: event.dropped_count().is_some(),
                bytes: buf.len() as u64 + 1,
            };
            // A capped event is at most MAX_EVENT_BYTES; a buffer it grew is not kept.
            buf.shrink_to(1024);
            (queued, truncated)
        })
    }
}

thread_local! {
    /// Where events are written before their exact-size copy: writing straight into a fresh
    /// buffer grows it twice and shrinks it once per event, and those odd-sized chunks cost
    /// the allocator more than the copy (measured, bench/README.md "session 12").
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(1024));
}

/// Appends the capped event's compact JSON to `out`: the bytes `serde_json` writes for the
/// `SidecarAuditEvent` once `cap_event` has capped it (same fields, same order; a property
/// test holds the two equal), without building that event. Every injection is audited, and building owned
/// copies of its fields and serializing them was ~7,000 instructions of a warm request
/// (bench/results/warm-path-callgrind.md). Returns whether a field was cut.
fn write_event(out: &mut Vec<u8>, e: &SidecarAuditEventRef<'_>) -> bool {
    out.push(b'{');
    if !e.kind.is_secret_read() {
        out.extend_from_slice(b"\"kind\":");
        push_json(out, &e.kind);
        out.push(b',');
    }
    out.extend_from_slice(b"\"token_id\":");
    let mut cut = push_text(out, e.token_id, MAX_ID_CHARS, false);
    out.extend_from_slice(b",\"client_ip\":");
    cut |= push_text(out, e.client_ip, MAX_ID_CHARS, false);
    out.extend_from_slice(b",\"user_agent\":");
    cut |= push_text(out, e.user_agent, MAX_TEXT_CHARS, false);
    out.extend_from_slice(b",\"path\":");
    cut |= push_text(out, e.path, MAX_TEXT_CHARS, true);
    out.extend_from_slice(b",\"destination_host\":");
    cut |= push_text(out, e.destination_host, MAX_TEXT_CHARS, true);
    out.extend_from_slice(if e.success {
        b",\"success\":true,\"reason\":"
    } else {
        b",\"success\":false,\"reason\":"
    });
    cut |= push_text(out, e.reason, MAX_REASON_CHARS, false);
    out.extend_from_slice(b",\"occurred_at\":");
    agent_secret_core::api::timestamp::push_json(&e.occurred_at, out);
    out.push(b'}');
    cut
}

/// One capped text field as JSON (`null` when absent); whether it was cut. Text that needs
/// neither a cut nor an escape (the request path's ids, addresses, paths and hosts) is copied
/// as it is; anything else is capped by the rule `cap_event` applies to a whole event and
/// escaped by `serde_json`.
fn push_text(out: &mut Vec<u8>, text: Option<&str>, max_chars: usize, no_query: bool) -> bool {
    let Some(text) = text else {
        out.extend_from_slice(b"null");
        return false;
    };
    let plain = |b: &u8| {
        (0x20..0x7f).contains(b)
            && *b != b'"'
            && *b != b'\\'
            && !(no_query && matches!(b, b'?' | b'#'))
    };
    if text.len() <= max_chars && text.as_bytes().iter().all(plain) {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
        return false;
    }
    let mut field = Some(text.to_owned());
    let mut cut = no_query && drop_query(&mut field);
    cut |= cap(&mut field, max_chars);
    push_json(out, &field);
    cut
}

/// `value`'s JSON. Strings and unit variants cannot fail to serialize; if one ever did, the
/// value is written as `null`, which the control plane refuses, so the pipeline dead-letters
/// the event and reports the loss (`audit.dropped`) rather than losing it silently.
fn push_json(out: &mut Vec<u8>, value: &impl serde::Serialize) {
    match serde_json::to_vec(value) {
        Ok(json) => out.extend_from_slice(&json),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode an audit event field; it will be dead-lettered");
            out.extend_from_slice(b"null");
        }
    }
}

/// The body of one `POST /v1/sidecar/audit`: `{"events":[…]}` around the events' JSON, built
/// by concatenation (nothing is serialized again).
pub(crate) fn batch_body(events: &[Queued]) -> Vec<u8> {
    // Each event's `bytes` counts a newline: here, the comma before the next one.
    let size = BATCH_ENVELOPE_BYTES + events.iter().map(|q| q.bytes).sum::<u64>();
    let mut body = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    body.extend_from_slice(b"{\"events\":[");
    for (i, q) in events.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&q.json);
    }
    body.extend_from_slice(b"]}");
    body
}

/// Characters kept of `user_agent`, `path` and `destination_host`.
pub const MAX_TEXT_CHARS: usize = 512;
/// Characters kept of `reason`.
pub const MAX_REASON_CHARS: usize = 256;
/// Characters kept of `token_id` and `client_ip`.
pub const MAX_ID_CHARS: usize = 64;
/// Largest compact JSON of one capped event: 1,920 characters of at most 4 UTF-8 bytes each,
/// plus keys, quotes and the timestamp.
pub const MAX_EVENT_BYTES: u64 = 8 * 1024;
/// `{"events":[` and `]}` around the events of a batch.
pub const BATCH_ENVELOPE_BYTES: u64 = 13;
/// Room left under the server's limit, should its count differ from ours by a little.
pub const BATCH_HEADROOM_BYTES: u64 = 1024;
/// Largest JSON body of one `POST /v1/sidecar/audit`.
pub const MAX_BATCH_BYTES: u64 = MAX_REQUEST_BODY_BYTES as u64 - BATCH_HEADROOM_BYTES;

const _: () = assert!(MAX_EVENT_BYTES + BATCH_ENVELOPE_BYTES < MAX_BATCH_BYTES);

/// What is appended to a field that was cut.
const ELLIPSIS: char = '…';
/// What replaces a dropped query string or fragment.
const QUERY_DROPPED: &str = "?…";

/// Cap `event`'s fields (see the module docs). Returns whether anything changed. The rule
/// [`write_event`] applies as it writes; kept whole for the tests that hold the two equal.
#[cfg(test)]
pub(crate) fn cap_event(event: &mut SidecarAuditEvent) -> bool {
    let mut changed = drop_query(&mut event.path);
    changed |= drop_query(&mut event.destination_host);
    changed |= cap(&mut event.user_agent, MAX_TEXT_CHARS);
    changed |= cap(&mut event.path, MAX_TEXT_CHARS);
    changed |= cap(&mut event.destination_host, MAX_TEXT_CHARS);
    changed |= cap(&mut event.reason, MAX_REASON_CHARS);
    changed |= cap(&mut event.token_id, MAX_ID_CHARS);
    changed |= cap(&mut event.client_ip, MAX_ID_CHARS);
    changed
}

/// How many of `items` (from the front) go into the next batch: at most `max_events`, and no
/// more than fit in [`MAX_BATCH_BYTES`] — but always at least one, so a batch is never empty.
pub(crate) fn batch_len<'a>(
    items: impl IntoIterator<Item = &'a Queued>,
    max_events: usize,
) -> usize {
    let mut bytes = BATCH_ENVELOPE_BYTES;
    let mut n = 0;
    for q in items.into_iter().take(max_events.max(1)) {
        // `q.bytes` counts a newline: the comma that separates it from the next event.
        if n > 0 && bytes + q.bytes > MAX_BATCH_BYTES {
            break;
        }
        bytes += q.bytes;
        n += 1;
    }
    n
}

fn drop_query(field: &mut Option<String>) -> bool {
    match field {
        Some(s) => match s.find(['?', '#']) {
            Some(at) if &s[at..] == QUERY_DROPPED => false,
            Some(at) => {
                s.truncate(at);
                s.push_str(QUERY_DROPPED);
                true
            }
            None => false,
        },
        None => false,
    }
}

fn cap(field: &mut Option<String>, max_chars: usize) -> bool {
    let Some(s) = field else {
        return false;
    };
    // The common case, checked without allocating: short printable ASCII.
    if s.len() <= max_chars && s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return false;
    }
    let mut kept: String = s.chars().filter(|c| !c.is_control()).collect();
    if kept.chars().count() > max_chars {
        kept = kept.chars().take(max_chars.saturating_sub(1)).collect();
        kept.push(ELLIPSIS);
    }
    if kept == *s {
        return false;
    }
    *s = kept;
    true
}
