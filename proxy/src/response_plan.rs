//! What happens to the upstream's response once a secret was injected: its headers and
//! trailers are scrubbed, and before any byte of the body is sent it is decided whether the
//! body streams through a scrubber, passes as it came, or is refused.
//!
//! Refusing what cannot be scanned (an upgraded stream, an unknown content-encoding) is a
//! security decision, so it is made here by plain functions over a `ResponseHeader`,
//! unit-tested without a socket; `crate::proxy` follows the [`ResponsePlan`].

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use pingora::http::ResponseHeader;
use pingora::{Error, ErrorType};

use crate::admit::Admission;
use crate::config::ScrubMode;
use crate::denial::Denial;
use crate::scrub::{BodyScrubber, ScrubError, ScrubSet};

/// What to do with a response's body.
// The scrubber is large, but a plan lives for one phase and is moved once into the request's
// context, which holds it inline anyway: a `Box` would only add an allocation per response.
#[allow(clippy::large_enum_variant)]
pub enum ResponsePlan {
    /// Send it on as the upstream sent it: nothing was injected, the host is scrubbed in
    /// headers only, the response has no body, or it is an interim (1xx) response.
    Forward,
    /// Stream it through this scrubber; its length is then unknown, so it is sent chunked.
    ScrubBody(BodyScrubber),
    /// Refuse the response with `denial` (a 502) before any of it is sent; `why` is for the log.
    Refuse { denial: Denial, why: &'static str },
}

/// The plan for the response to `method` of a request admitted as `admission`.
pub fn plan_response(
    response: &ResponseHeader,
    method: &Method,
    admission: &Admission,
) -> ResponsePlan {
    let Some(set) = admission.scrub_set() else {
        return ResponsePlan::Forward;
    };
    if response.status == StatusCode::SWITCHING_PROTOCOLS {
        // An upgraded stream (WebSocket, ...) is not HTTP any more and cannot be scrubbed;
        // after injecting a secret, refuse it rather than pass it through.
        return ResponsePlan::Refuse {
            denial: Denial::unscannable_upgrade(),
            why: "upgrade after injection",
        };
    }
    if admission.target.scrub_mode() != ScrubMode::Full || !has_body(method, response.status) {
        return ResponsePlan::Forward;
    }
    // Every Content-Encoding line counts (clients apply them all): `identity` on one line
    // and `gzip` on the next is a stacked coding, not an identity body.
    let codings: Vec<String> = response
        .headers
        .get_all(CONTENT_ENCODING)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    let encoding = (!codings.is_empty()).then(|| codings.join(", "));
    match BodyScrubber::for_content_encoding(set.clone(), encoding.as_deref()) {
        Ok(scrubber) => ResponsePlan::ScrubBody(scrubber),
        Err(unscannable) => ResponsePlan::Refuse {
            denial: Denial::unscannable(&unscannable.encoding),
            why: "unscannable response",
        },
    }
}

/// Whether a response with this status, to this method, carries a body.
fn has_body(method: &Method, status: StatusCode) -> bool {
    method != Method::HEAD
        && status != StatusCode::NO_CONTENT
        && status != StatusCode::NOT_MODIFIED
        && !status.is_informational()
}

/// Whether the upstream declared a body small enough to send in one piece once scrubbed
/// (see `crate::downstream::hold_flushes`): one valid `Content-Length` of at most `max`.
pub fn declared_small(response: &ResponseHeader, max: u64) -> bool {
    let mut lengths = response.headers.get_all(CONTENT_LENGTH).iter();
    match (lengths.next(), lengths.next()) {
        (Some(value), None) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|length| length <= max),
        _ => false,
    }
}

/// A body that is scrubbed changes length: drop `Content-Length` and send it chunked.
pub fn stream_chunked(response: &mut ResponseHeader) -> pingora::Result<()> {
    response.remove_header(&CONTENT_LENGTH);
    response.insert_header(TRANSFER_ENCODING, HeaderValue::from_static("chunked"))?;
    Ok(())
}

/// Scrub the response head: injected values in header values and names, and the reason
/// phrase (free text the upstream controls), for which the standard one stands in. True if
/// a header had to be changed.
pub fn scrub_head(response: &mut ResponseHeader, set: &ScrubSet) -> pingora::Result<bool> {
    let changed = scrub_headers(response, set)?;
    response.set_reason_phrase(None)?;
    Ok(changed)
}

/// Replace injected values in every response header; true if any was found.
fn scrub_headers(response: &mut ResponseHeader, set: &ScrubSet) -> pingora::Result<bool> {
    let mut changed: Vec<(HeaderName, Vec<HeaderValue>)> = Vec::new();
    for name in response.headers.keys() {
        // An upstream can echo the value as a header *name* too: such a header is dropped.
        if set.scrub_header_value(name.as_str().as_bytes()).is_some() {
            changed.push((name.clone(), Vec::new()));
            continue;
        }
        // One scan per value. The values are copied only once one of them had a match (the
        // common case, no match, allocates nothing).
        let values = response.headers.get_all(name);
        let mut scrubbed: Option<Vec<HeaderValue>> = None;
        for (i, value) in values.iter().enumerate() {
            match set.scrub_header_value(value.as_bytes()) {
                None => {
                    if let Some(kept) = &mut scrubbed {
                        kept.push(value.clone());
                    }
                }
                Some(bytes) => {
                    let kept =
                        scrubbed.get_or_insert_with(|| values.iter().take(i).cloned().collect());
                    kept.push(HeaderValue::from_bytes(&bytes).map_err(|_| {
                        Error::explain(ErrorType::InternalError, "scrubbed header is invalid")
                    })?);
                }
            }
        }
        if let Some(new_values) = scrubbed {
            changed.push((name.clone(), new_values));
        }
    }
    let any = !changed.is_empty();
    for (name, values) in changed {
        response.remove_header(&name);
        for value in values {
            response.append_header(name.clone(), value)?;
        }
    }
    Ok(any)
}

/// Replace injected values in response trailers. (pingora 0.9 drops HTTP/1.1 trailers before
/// they reach the trailer filters; HTTP/2 upstreams deliver them, and are scrubbed like headers.)
pub fn scrub_trailers(trailers: &mut HeaderMap, set: &ScrubSet) -> pingora::Result<()> {
    let leaking_names: Vec<HeaderName> = trailers
        .keys()
        .filter(|name| set.scrub_header_value(name.as_str().as_bytes()).is_some())
        .cloned()
        .collect();
    for name in leaking_names {
        trailers.remove(&name);
    }
    for value in trailers.values_mut() {
        if let Some(bytes) = set.scrub_header_value(value.as_bytes()) {
            *value = HeaderValue::from_bytes(&bytes).map_err(|_| {
                Error::explain(ErrorType::InternalError, "scrubbed trailer is invalid")
            })?;
        }
    }
    Ok(())
}

/// One step of a scrubbed body: the scrubbed bytes of `chunk`, then the scrubber's tail at
/// the end of the stream; `None` when there is nothing to send yet.
pub fn scrub_chunk(
    scrubber: &mut BodyScrubber,
    chunk: Option<Bytes>,
    end_of_stream: bool,
) -> Result<Option<Bytes>, ScrubError> {
    let pushed = match chunk {
        Some(chunk) => scrubber.push(&chunk)?,
        None => Bytes::new(),
    };
    let tail = if end_of_stream {
        scrubber.finish()?
    } else {
        Bytes::new()
    };
    // The scrubber's output is already a fresh buffer: pass it on as it is, and copy only in
    // the rare call that has both a chunk and the end-of-stream tail.
    let out = match (pushed.is_empty(), tail.is_empty()) {
        (_, true) => pushed,
        (true, false) => tail,
        (false, false) => {
            let mut both = BytesMut::with_capacity(pushed.len() + tail.len());
            both.extend_from_slice(&pushed);
            both.extend_from_slice(&tail);
            both.freeze()
        }
    };
    Ok((!out.is_empty()).then_some(out))
}

#[cfg(test)]
mod tests;
