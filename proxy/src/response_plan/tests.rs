#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use agent_secret_core::host::{Destination, HostPattern};
use agent_secret_core::path::SecretPath;
use agent_secret_core::secret::SecretBytes;
use http::uri::PathAndQuery;

use super::*;
use crate::config::HostRule;
use crate::route::{Mode, Target};

const VALUE: &str = "sk-live-0123456789abcdef";

fn set() -> ScrubSet {
    let path = SecretPath::parse("prod/api/key").unwrap();
    ScrubSet::new(&[(path, SecretBytes::new(VALUE.as_bytes().to_vec()))]).unwrap()
}

/// An admission to `api.example.com` that injected [`VALUE`] (or nothing), scrubbed as `scrub`.
fn admission(injected: bool, scrub: ScrubMode) -> Admission {
    let rule = HostRule {
        name: HostPattern::parse("api.example.com").unwrap(),
        plaintext: false,
        allow_private: false,
        pass_through: true,
        scrub,
    };
    let target = Target {
        mode: Mode::Forward,
        tls: true,
        port: 443,
        destination: Destination::parse("api.example.com").unwrap(),
        path_and_query: PathAndQuery::from_static("/v1"),
        rule: Some(Arc::new(rule)),
    };
    let mut admission = Admission::pass_through(target, "192.0.2.1:443".parse().unwrap());
    if injected {
        admission.scrub = Some(Arc::new(set()));
    }
    admission
}

fn response(status: u16, encodings: &[&str]) -> ResponseHeader {
    let mut response = ResponseHeader::build(status, None).unwrap();
    for coding in encodings {
        response.append_header(CONTENT_ENCODING, *coding).unwrap();
    }
    response
}

fn plan(response: &ResponseHeader, method: Method, admission: &Admission) -> &'static str {
    match plan_response(response, &method, admission) {
        ResponsePlan::Forward => "forward",
        ResponsePlan::ScrubBody(_) => "scrub",
        ResponsePlan::Refuse { denial, .. } => {
            assert_eq!(denial.status, StatusCode::BAD_GATEWAY);
            denial.code.as_str()
        }
    }
}

#[test]
fn a_response_to_a_request_that_injected_nothing_is_forwarded_whatever_it_is() {
    let nothing = admission(false, ScrubMode::Full);
    for (status, encodings) in [(200, &[][..]), (101, &[]), (200, &["zstd"])] {
        let r = response(status, encodings);
        assert_eq!(plan(&r, Method::GET, &nothing), "forward", "{status}");
    }
}

#[test]
fn after_an_injection_an_upgrade_or_an_unknown_encoding_is_refused() {
    let injected = admission(true, ScrubMode::Full);
    let cases: [(u16, &[&str]); 4] = [
        (101, &[]),
        (200, &["zstd"]),
        (200, &["gzip, gzip"]),
        // Stacked on two lines: not an identity body.
        (200, &["identity", "compress"]),
    ];
    for (status, encodings) in cases {
        let r = response(status, encodings);
        assert_eq!(
            plan(&r, Method::GET, &injected),
            "unscannable_response",
            "{status} {encodings:?}"
        );
    }
    let ResponsePlan::Refuse { denial, .. } = plan_response(
        &response(200, &["identity", "zstd"]),
        &Method::GET,
        &injected,
    ) else {
        panic!("an unknown coding must be refused");
    };
    assert!(
        denial.message.contains("`identity, zstd`"),
        "{}",
        denial.message
    );
}

#[test]
fn after_an_injection_a_body_in_a_readable_encoding_is_scrubbed() {
    let injected = admission(true, ScrubMode::Full);
    for encodings in [&[][..], &["identity"], &["gzip"], &["deflate"], &["br"]] {
        let r = response(200, encodings);
        assert_eq!(plan(&r, Method::POST, &injected), "scrub", "{encodings:?}");
    }
}

#[test]
fn responses_without_a_body_or_to_a_headers_only_host_are_forwarded() {
    let injected = admission(true, ScrubMode::Full);
    let cases = [
        (Method::HEAD, 200),
        (Method::GET, 204),
        (Method::GET, 304),
        (Method::GET, 103),
    ];
    for (method, status) in cases {
        // An encoding that would be refused, were the body scanned.
        let r = response(status, &["zstd"]);
        assert_eq!(
            plan(&r, method.clone(), &injected),
            "forward",
            "{method} {status}"
        );
    }
    let headers_only = admission(true, ScrubMode::Headers);
    let r = response(200, &["zstd"]);
    assert_eq!(plan(&r, Method::GET, &headers_only), "forward");
}

#[test]
fn a_scrubbed_body_is_sent_chunked() {
    let mut r = response(200, &[]);
    r.insert_header(CONTENT_LENGTH, "42").unwrap();
    stream_chunked(&mut r).unwrap();
    assert!(r.headers.get(CONTENT_LENGTH).is_none());
    assert_eq!(r.headers[TRANSFER_ENCODING], "chunked");
}

#[test]
fn response_headers_echoing_the_value_in_a_value_or_a_name_are_scrubbed() {
    let mut response = ResponseHeader::build(200, None).unwrap();
    response
        .append_header("x-echo", format!("Bearer {VALUE}"))
        .unwrap();
    response.append_header(format!("x-{VALUE}"), "1").unwrap();
    response.append_header("x-plain", "ok").unwrap();
    assert!(scrub_headers(&mut response, &set()).unwrap());
    let shown = format!("{:?}", response.headers).to_ascii_lowercase();
    assert!(!shown.contains(VALUE), "{shown}");
    assert_eq!(
        response.headers.get("x-echo").unwrap(),
        "Bearer [REDACTED:prod/api/key]"
    );
    assert_eq!(response.headers.get("x-plain").unwrap(), "ok");
    assert_eq!(response.headers.len(), 2, "the leaking name was dropped");
}

#[test]
fn the_head_loses_the_upstreams_reason_phrase_even_when_no_header_changed() {
    let mut r = response(200, &[]);
    r.set_reason_phrase(Some(&format!("Fine {VALUE}"))).unwrap();
    r.append_header("x-plain", "ok").unwrap();
    assert!(!scrub_head(&mut r, &set()).unwrap());
    assert_eq!(r.get_reason_phrase(), Some("OK"));

    let mut echoed = response(200, &[]);
    echoed.append_header("x-echo", VALUE).unwrap();
    assert!(scrub_head(&mut echoed, &set()).unwrap());
}

#[test]
fn trailers_are_scrubbed_like_headers() {
    let mut trailers = HeaderMap::new();
    trailers.insert(
        "x-echo",
        HeaderValue::from_static("sk-live-0123456789abcdef"),
    );
    trailers.insert(
        HeaderName::from_bytes(format!("x-{VALUE}").as_bytes()).unwrap(),
        HeaderValue::from_static("1"),
    );
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    scrub_trailers(&mut trailers, &set()).unwrap();
    assert_eq!(trailers.get("x-echo").unwrap(), "[REDACTED:prod/api/key]");
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    assert_eq!(trailers.len(), 2);
}

#[test]
fn a_value_split_across_chunks_is_scrubbed_and_the_tail_comes_at_the_end() {
    let mut scrubber = BodyScrubber::for_content_encoding(Arc::new(set()), None).unwrap();
    let (head, rest) = VALUE.split_at(10);
    let mut sent = Vec::new();
    let chunks = [
        (Some(format!("{{\"key\":\"{head}")), false),
        (None, false),
        (Some(format!("{rest}\"}}")), true),
    ];
    for (chunk, end) in chunks {
        let out = scrub_chunk(&mut scrubber, chunk.map(Bytes::from), end).unwrap();
        if let Some(out) = out {
            assert!(!out.is_empty(), "an empty chunk is never sent");
            sent.extend_from_slice(&out);
        }
    }
    assert_eq!(
        String::from_utf8(sent).unwrap(),
        "{\"key\":\"[REDACTED:prod/api/key]\"}"
    );
}

#[test]
fn the_end_of_a_stream_without_a_last_chunk_flushes_what_was_held_back() {
    let mut scrubber = BodyScrubber::for_content_encoding(Arc::new(set()), None).unwrap();
    let held = scrub_chunk(&mut scrubber, Some(Bytes::from_static(b"sk-live")), false).unwrap();
    let tail = scrub_chunk(&mut scrubber, None, true).unwrap();
    let sent: Vec<u8> = held
        .into_iter()
        .chain(tail)
        .flat_map(|b| b.to_vec())
        .collect();
    assert_eq!(sent, b"sk-live");
}

#[test]
fn only_one_valid_small_declared_length_is_small() {
    let with = |lengths: &[&str]| {
        let mut response = ResponseHeader::build(200, None).unwrap();
        for length in lengths {
            response.append_header(CONTENT_LENGTH, *length).unwrap();
        }
        declared_small(&response, 4096)
    };
    assert!(with(&["64"]));
    assert!(with(&["4096"]));
    assert!(!with(&["4097"]), "over the limit");
    assert!(!with(&[]), "no length: may be a live stream");
    assert!(!with(&["64", "64"]), "two lengths");
    assert!(!with(&["-1"]));
    assert!(!with(&["12abc"]));
}
