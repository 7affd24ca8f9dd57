//! Property tests for response scrubbing: whatever the chunking, no form of an injected value
//! survives, and streaming output equals a one-shot scrub of the whole body.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::sync::Arc;

use agent_secret_core::path::SecretPath;
use agent_secret_core::secret::SecretBytes;
use agent_secret_proxy::scrub::forms::{forms, MIN_FORM_LEN};
use agent_secret_proxy::scrub::{BodyScrubber, ScrubSet, StreamScrubber};
use proptest::prelude::*;

/// Filler bytes that appear in no form of a value drawn from `value_strategy`, so an inserted
/// form can neither be extended nor straddled by its surroundings.
const FILLER: &[u8] = b"\n\t !#$&*;<>?@^`|,()[]{}";

fn value_strategy() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_./+=-]{8,48}"
}

fn set_for(value: &str) -> Arc<ScrubSet> {
    let path = SecretPath::parse("team/service/key").unwrap();
    Arc::new(ScrubSet::new(&[(path, SecretBytes::new(value.as_bytes().to_vec()))]).unwrap())
}

/// Reference: scrub the whole body at once.
fn one_shot(set: &ScrubSet, body: &[u8]) -> Vec<u8> {
    set.scrub_header_value(body)
        .unwrap_or_else(|| body.to_vec())
}

fn chunked<'a>(body: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
    points.sort_unstable();
    let mut chunks = Vec::new();
    let mut last = 0;
    for p in points {
        chunks.push(&body[last..p]);
        last = p;
    }
    chunks.push(&body[last..]);
    chunks
}

fn stream(set: &Arc<ScrubSet>, chunks: &[&[u8]]) -> Vec<u8> {
    let mut s = StreamScrubber::new(Arc::clone(set));
    let mut out = Vec::new();
    for c in chunks {
        out.extend_from_slice(&s.push(c));
    }
    out.extend_from_slice(&s.finish());
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A body of filler with forms of `value` inserted at the given places.
fn sprinkle(value: &str, filler: &[u8], inserts: &[(usize, usize)]) -> Vec<u8> {
    let all = forms(value.as_bytes());
    let mut body = Vec::new();
    let mut last = 0;
    let mut points: Vec<(usize, usize)> = inserts
        .iter()
        .map(|(at, which)| (at % (filler.len() + 1), which % all.len()))
        .collect();
    points.sort_unstable();
    for (at, which) in points {
        body.extend_from_slice(&filler[last..at]);
        body.push(b' ');
        body.extend_from_slice(&all[which]);
        body.push(b' ');
        last = at;
    }
    body.extend_from_slice(&filler[last..]);
    body
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn no_form_leaks_under_any_chunking(
        value in value_strategy(),
        filler_idx in prop::collection::vec(0..FILLER.len(), 0..600),
        inserts in prop::collection::vec((any::<usize>(), any::<usize>()), 1..8),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
    ) {
        let set = set_for(&value);
        let filler: Vec<u8> = filler_idx.iter().map(|&i| FILLER[i]).collect();
        let body = sprinkle(&value, &filler, &inserts);
        let out = stream(&set, &chunked(&body, &cuts));
        prop_assert_eq!(&out, &one_shot(&set, &body));
        for form in forms(value.as_bytes()) {
            prop_assert!(!contains(&out, &form), "a form of length {} leaked", form.len());
        }
        let redactions = out.windows(9).filter(|w| w == b"[REDACTED").count();
        prop_assert_eq!(redactions, inserts.len());
    }

    #[test]
    fn streaming_equals_one_shot_on_arbitrary_bytes(
        value in value_strategy(),
        noise in prop::collection::vec(any::<u8>(), 0..2000),
        inserts in prop::collection::vec((any::<usize>(), any::<usize>()), 0..6),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
    ) {
        let set = set_for(&value);
        let body = sprinkle(&value, &noise, &inserts);
        prop_assert_eq!(stream(&set, &chunked(&body, &cuts)), one_shot(&set, &body));
    }

    #[test]
    fn base64_blob_never_keeps_the_aligned_value(
        value in value_strategy(),
        prefix in prop::collection::vec(any::<u8>(), 0..40),
        suffix in prop::collection::vec(any::<u8>(), 0..40),
        url_safe in any::<bool>(),
        cuts in prop::collection::vec(any::<usize>(), 0..10),
    ) {
        use base64::Engine;
        let set = set_for(&value);
        let mut blob = prefix.clone();
        blob.extend_from_slice(value.as_bytes());
        blob.extend_from_slice(&suffix);
        let encoded = if url_safe {
            base64::engine::general_purpose::URL_SAFE.encode(&blob)
        } else {
            base64::engine::general_purpose::STANDARD.encode(&blob)
        };
        let out = stream(&set, &chunked(encoded.as_bytes(), &cuts));
        prop_assert!(contains(&out, b"[REDACTED:team/service/key]"));
        // At most the two boundary characters on each side survive next to the redaction.
        prop_assert!(out.len() <= encoded.len() - (value.len() * 4 / 3) + 4 + 27 + 4);
    }

    #[test]
    fn gzip_bodies_are_scrubbed_under_any_chunking(
        value in value_strategy(),
        filler_idx in prop::collection::vec(0..FILLER.len(), 0..3000),
        inserts in prop::collection::vec((any::<usize>(), any::<usize>()), 1..5),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
    ) {
        let set = set_for(&value);
        let filler: Vec<u8> = filler_idx.iter().map(|&i| FILLER[i]).collect();
        let body = sprinkle(&value, &filler, &inserts);
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&body).unwrap();
        let compressed = enc.finish().unwrap();

        let mut s = BodyScrubber::for_content_encoding(Arc::clone(&set), Some("gzip")).unwrap();
        let mut out = Vec::new();
        for c in chunked(&compressed, &cuts) {
            out.extend_from_slice(&s.push(c).unwrap());
        }
        out.extend_from_slice(&s.finish().unwrap());
        let mut decoded = Vec::new();
        flate2::read::GzDecoder::new(out.as_slice()).read_to_end(&mut decoded).unwrap();
        prop_assert_eq!(&decoded, &one_shot(&set, &body));
        for form in forms(value.as_bytes()).iter().filter(|f| f.len() >= MIN_FORM_LEN) {
            prop_assert!(!contains(&decoded, form));
        }
    }
}
