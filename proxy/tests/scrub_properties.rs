//! Property tests for response scrubbing: whatever the chunking, no form of an injected value
//! and no window of one (a run of `max(12, ⌈len/2⌉)` characters of a form, any ASCII case)
//! survives; streaming output equals a one-shot scrub of the whole body; and a body holding no
//! window passes unchanged.
//!
//! The main property runs 100 000 cases: values come from a fixed pool whose scrubbers and
//! reference window sets are built once, so each case costs only a scan of a small body.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::io::{Read, Write};
use std::sync::{Arc, OnceLock};

use agent_secret_core::path::SecretPath;
use agent_secret_core::secret::SecretBytes;
use agent_secret_proxy::scrub::forms::{forms, window_len, MIN_FORM_LEN};
use agent_secret_proxy::scrub::{patterns, BodyScrubber, ScrubSet, StreamScrubber};
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

// ---- windows, case folding and "nothing matches → unchanged", over a fixed value pool ----

/// One pooled value: its scrubber and the reference sets of its windows and patterns.
struct Pooled {
    value: Vec<u8>,
    set: Arc<ScrubSet>,
    /// Every window of length `w` of every form, lower-cased (for a short value: the whole
    /// forms), by length.
    windows: Vec<(usize, HashSet<Vec<u8>>)>,
    /// The scrubber's own patterns (windows of at most 32 characters, so it may redact runs
    /// shorter than `w`), by length: a body containing none must pass unchanged.
    patterns: Vec<(usize, HashSet<Vec<u8>>)>,
    /// Bytes that occur in no form: a separator no match can extend across.
    filler: Vec<u8>,
}

impl Pooled {
    fn new(value: Vec<u8>) -> Pooled {
        let path = SecretPath::parse("pool/value/key").unwrap();
        let set = Arc::new(ScrubSet::new(&[(path, SecretBytes::new(value.clone()))]).unwrap());
        let forms: Vec<Vec<u8>> = forms(&value)
            .iter()
            .map(|f| f.to_ascii_lowercase())
            .collect();
        let windows = match window_len(value.len()) {
            Some(w) => by_length(forms.iter().flat_map(|f| f.windows(w).map(<[u8]>::to_vec))),
            None => by_length(forms.iter().cloned()),
        };
        let used: HashSet<u8> = forms.iter().flatten().copied().collect();
        let filler = b"\n\t !#$&*;<>?@^`|,()[]{}\"'~%\\:"
            .iter()
            .copied()
            .filter(|b| !used.contains(b))
            .collect();
        let patterns = by_length(patterns(&value).iter().map(|p| p.to_vec()));
        Pooled {
            value,
            set,
            windows,
            patterns,
            filler,
        }
    }

    /// Whether `hay` holds one of the scrubber's patterns, in any ASCII case.
    fn matches(&self, hay: &[u8]) -> bool {
        holds_any(&self.patterns, hay)
    }

    /// Whether `hay` holds a window (or, for a short value, a whole form), in any ASCII case.
    fn leaks(&self, hay: &[u8]) -> bool {
        holds_any(&self.windows, hay)
    }
}

fn by_length(strings: impl Iterator<Item = Vec<u8>>) -> Vec<(usize, HashSet<Vec<u8>>)> {
    let mut groups: Vec<(usize, HashSet<Vec<u8>>)> = Vec::new();
    for s in strings {
        match groups.iter_mut().find(|(len, _)| *len == s.len()) {
            Some((_, group)) => {
                group.insert(s);
            }
            None => groups.push((s.len(), HashSet::from([s]))),
        }
    }
    groups
}

/// Whether `hay`, lower-cased, contains one of the (lower-case) strings.
fn holds_any(groups: &[(usize, HashSet<Vec<u8>>)], hay: &[u8]) -> bool {
    let hay = hay.to_ascii_lowercase();
    groups
        .iter()
        .any(|(len, group)| hay.windows(*len).any(|w| group.contains(w)))
}

/// Deterministic pool: lengths around the 4/8/12-byte thresholds and the 32-byte window cap,
/// alphabets from plain alphanumerics to JSON/URL/bracket specials, non-ASCII and binary.
fn pool() -> &'static [Pooled] {
    static POOL: OnceLock<Vec<Pooled>> = OnceLock::new();
    POOL.get_or_init(|| {
        let alphabets: [&[u8]; 4] = [
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
            b"abcdefghijklmnopqrstuvwxyz0123456789+/=-_.",
            b"aB3 %\\\"<>&'[]{}()|#~^!@:/?=+-_",
            b"abcdef0123456789",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut values = Vec::new();
        for len in [4, 5, 8, 11, 12, 13, 16, 23, 24, 31, 32, 33, 40, 48, 64] {
            for alphabet in alphabets {
                values.push(
                    (0..len)
                        .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                        .collect::<Vec<u8>>(),
                );
            }
            values.push((0..len).map(|_| (next() % 256) as u8).collect());
            let unicode: String = (0..len)
                .map(|_| ['é', '€', '😀', 'a', 'Z', '7', '/', '"'][(next() % 8) as usize])
                .collect();
            values.push(unicode.into_bytes());
        }
        values.into_iter().map(Pooled::new).collect()
    })
}

/// What goes into a generated body, drawn per segment.
#[derive(Debug, Clone)]
enum Segment {
    /// Separator bytes that occur in no form.
    Filler(usize),
    /// A whole form, its letters' case flipped where `case_mask` has bits.
    Form { form: usize, case_mask: u64 },
    /// `len` characters of a form from `start` (clamped to the form; may be shorter than the
    /// window, then it must pass unchanged unless it touches another piece).
    Piece {
        form: usize,
        start: usize,
        len: usize,
    },
    /// Arbitrary bytes.
    Noise(Vec<u8>),
}

fn segment_strategy() -> impl Strategy<Value = Segment> {
    prop_oneof![
        3 => (1usize..6).prop_map(Segment::Filler),
        2 => (any::<usize>(), any::<u64>()).prop_map(|(form, case_mask)| Segment::Form { form, case_mask }),
        3 => (any::<usize>(), any::<usize>(), 1usize..80)
            .prop_map(|(form, start, len)| Segment::Piece { form, start, len }),
        1 => prop::collection::vec(any::<u8>(), 0..12).prop_map(Segment::Noise),
    ]
}

fn build_body(p: &Pooled, segments: &[Segment], separate: bool) -> Vec<u8> {
    let all = forms(&p.value);
    let mut body = Vec::new();
    let mut n = 0usize;
    let mut fill = |body: &mut Vec<u8>, count: usize| {
        for _ in 0..count {
            if let Some(&b) = p.filler.get(n % p.filler.len().max(1)) {
                body.push(b);
            }
            n += 1;
        }
    };
    for segment in segments {
        if separate {
            fill(&mut body, 1);
        }
        match segment {
            Segment::Filler(count) => fill(&mut body, *count),
            Segment::Form { form, case_mask } => {
                let f = &all[form % all.len()];
                body.extend(f.iter().enumerate().map(|(i, &b)| {
                    if case_mask >> (i % 64) & 1 == 1 {
                        b.to_ascii_uppercase()
                    } else {
                        b
                    }
                }));
            }
            Segment::Piece { form, start, len } => {
                let f = &all[form % all.len()];
                let start = start % f.len();
                let end = (start + len).min(f.len());
                body.extend_from_slice(&f[start..end]);
            }
            Segment::Noise(bytes) => body.extend_from_slice(bytes),
        }
    }
    body
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 100_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// The issue's property: under random chunking no output contains a window (nor a whole
    /// form), streaming equals one-shot, and a body without a window is returned unchanged.
    #[test]
    fn no_window_survives_and_clean_bodies_pass_unchanged(
        which in any::<usize>(),
        segments in prop::collection::vec(segment_strategy(), 0..10),
        separate in any::<bool>(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let pooled = &pool()[which % pool().len()];
        let body = build_body(pooled, &segments, separate);
        let out = stream(&pooled.set, &chunked(&body, &cuts));
        prop_assert!(!pooled.leaks(&out), "a window survived: value {:?}", String::from_utf8_lossy(&pooled.value));
        prop_assert_eq!(&out, &one_shot(&pooled.set, &body));
        if !pooled.matches(&body) {
            prop_assert_eq!(&out, &body, "nothing matched, yet the body changed");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Compressed bodies: the same guarantees through gzip and brotli re-encoding.
    #[test]
    fn compressed_bodies_keep_no_window(
        which in any::<usize>(),
        segments in prop::collection::vec(segment_strategy(), 0..10),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
        brotli_coding in any::<bool>(),
    ) {
        let pooled = &pool()[which % pool().len()];
        let body = build_body(pooled, &segments, false);
        let (coding, compressed) = if brotli_coding {
            let mut out = Vec::new();
            {
                let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 20);
                w.write_all(&body).unwrap();
            }
            ("br", out)
        } else {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(&body).unwrap();
            ("gzip", enc.finish().unwrap())
        };
        let mut s = BodyScrubber::for_content_encoding(Arc::clone(&pooled.set), Some(coding)).unwrap();
        let mut out = Vec::new();
        for c in chunked(&compressed, &cuts) {
            out.extend_from_slice(&s.push(c).unwrap());
        }
        out.extend_from_slice(&s.finish().unwrap());
        let mut decoded = Vec::new();
        if brotli_coding {
            brotli::Decompressor::new(out.as_slice(), 4096).read_to_end(&mut decoded).unwrap();
        } else {
            flate2::read::GzDecoder::new(out.as_slice()).read_to_end(&mut decoded).unwrap();
        }
        prop_assert!(!pooled.leaks(&decoded));
        prop_assert_eq!(&decoded, &one_shot(&pooled.set, &body));
    }
}
