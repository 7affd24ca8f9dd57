#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::sync::Arc;

use agent_secret_core::path::SecretPath;
use agent_secret_core::secret::SecretBytes;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use flate2::read::{DeflateDecoder, MultiGzDecoder, ZlibDecoder};
use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
use flate2::Compression;

use super::forms::{forms, MIN_FORM_LEN};
use super::*;

const KEY: &str = "sk-live-4f9a8b7c6d5e4f3a2b1c0d9e";
const RED: &str = "[REDACTED:production/openai/api_key]";

fn set_of(values: &[(&str, &str)]) -> Arc<ScrubSet> {
    let values: Vec<_> = values
        .iter()
        .map(|(p, v)| {
            (
                SecretPath::parse(p).unwrap(),
                SecretBytes::new(v.as_bytes().to_vec()),
            )
        })
        .collect();
    Arc::new(ScrubSet::new(&values).unwrap())
}

fn key_set() -> Arc<ScrubSet> {
    set_of(&[("production/openai/api_key", KEY)])
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

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    MultiGzDecoder::new(data).read_to_end(&mut out).unwrap();
    out
}

fn body_through(
    scrubber: &mut BodyScrubber,
    data: &[u8],
    chunk: usize,
) -> Result<Vec<u8>, ScrubError> {
    let mut out = Vec::new();
    for c in data.chunks(chunk) {
        out.extend_from_slice(&scrubber.push(c)?);
    }
    out.extend_from_slice(&scrubber.finish()?);
    Ok(out)
}

#[test]
fn raw_value_is_replaced() {
    let out = stream(
        &key_set(),
        &[format!("{{\"echo\":\"Bearer {KEY}\"}}").as_bytes()],
    );
    assert_eq!(text(&out), format!("{{\"echo\":\"Bearer {RED}\"}}"));
}

#[test]
fn value_split_at_every_boundary_is_caught() {
    let set = key_set();
    let body = format!("data: hello {KEY} world {KEY}\n\n");
    let expected = format!("data: hello {RED} world {RED}\n\n");
    let b = body.as_bytes();
    for i in 0..=b.len() {
        for j in i..=b.len() {
            let out = stream(&set, &[&b[..i], &b[i..j], &b[j..]]);
            assert_eq!(text(&out), expected, "split at {i},{j}");
        }
    }
    let bytewise: Vec<&[u8]> = b.chunks(1).collect();
    assert_eq!(text(&stream(&set, &bytewise)), expected);
}

#[test]
fn base64_at_every_alignment_inside_a_blob() {
    let set = key_set();
    for prefix_len in 0..6 {
        for suffix_len in 0..4 {
            let mut blob = b"user:"[..prefix_len.min(5)].to_vec();
            blob.resize(prefix_len, b'#');
            blob.extend_from_slice(KEY.as_bytes());
            blob.extend(std::iter::repeat_n(b'!', suffix_len));
            for encoded in [STANDARD.encode(&blob), URL_SAFE_NO_PAD.encode(&blob)] {
                let out = text(&stream(
                    &set,
                    &[format!("Authorization: Basic {encoded}").as_bytes()],
                ));
                assert!(
                    out.contains(RED),
                    "prefix {prefix_len} suffix {suffix_len}: {out}"
                );
                assert!(
                    out.len() < 60 + RED.len(),
                    "most of the blob must go: {out}"
                );
            }
        }
    }
}

#[test]
fn standalone_base64_is_replaced_whole() {
    let out = stream(
        &key_set(),
        &[format!("x={}&y", STANDARD.encode(KEY)).as_bytes()],
    );
    assert_eq!(text(&out), format!("x={RED}&y"));
}

#[test]
fn percent_encoded_forms_are_replaced() {
    let set = set_of(&[("a/b", "p@ss/word with+space")]);
    let cases = [
        "p%40ss%2Fword%20with%2Bspace",
        "p%40ss%2fword%20with%2bspace",
        "p%40ss%2Fword+with%2Bspace",
    ];
    for enc in cases {
        let out = text(&stream(&set, &[format!("GET /cb?t={enc}&x=1").as_bytes()]));
        assert_eq!(out, "GET /cb?t=[REDACTED:a/b]&x=1", "{enc}");
    }
}

#[test]
fn json_escaped_forms_are_replaced() {
    let value = "tok/with\"quote-123";
    let set = set_of(&[("a/b", value)]);
    let serde = serde_json::to_string(&serde_json::json!({ "echo": value })).unwrap();
    assert_eq!(
        text(&stream(&set, &[serde.as_bytes()])),
        "{\"echo\":\"[REDACTED:a/b]\"}"
    );
    let php = r#"{"echo":"tok\/with\"quote-123"}"#;
    assert_eq!(
        text(&stream(&set, &[php.as_bytes()])),
        "{\"echo\":\"[REDACTED:a/b]\"}"
    );
}

#[test]
fn each_path_gets_its_own_replacement() {
    let set = set_of(&[("a/one", "first-secret-1"), ("b/two", "second-secret-2")]);
    let out = stream(&set, &[b"first-secret-1 second-secret-2"]);
    assert_eq!(text(&out), "[REDACTED:a/one] [REDACTED:b/two]");
}

#[test]
fn many_values_share_one_searcher_and_keep_their_labels() {
    let owned: Vec<(String, String)> = (0..12)
        .map(|i| {
            (
                format!("svc/key{i}"),
                format!("secret/value+number-{i:02}/x"),
            )
        })
        .collect();
    let pairs: Vec<(&str, &str)> = owned
        .iter()
        .map(|(p, v)| (p.as_str(), v.as_str()))
        .collect();
    let set = set_of(&pairs);
    let body = format!("a {} b {} c", owned[3].1, STANDARD.encode(&owned[11].1));
    let b = body.as_bytes();
    for i in 0..=b.len() {
        let out = stream(&set, &[&b[..i], &b[i..]]);
        assert_eq!(text(&out), "a [REDACTED:svc/key3] b [REDACTED:svc/key11] c");
    }
}

#[test]
fn header_values_are_scrubbed() {
    let set = key_set();
    let out = set
        .scrub_header_value(format!("Bearer {KEY}").as_bytes())
        .unwrap();
    assert_eq!(text(&out), format!("Bearer {RED}"));
    assert!(set.scrub_header_value(b"application/json").is_none());
    assert!(ScrubSet::empty()
        .scrub_header_value(KEY.as_bytes())
        .is_none());
}

#[test]
fn length_rule_short_values_and_forms() {
    let tiny = set_of(&[("a/b", "abc")]);
    assert!(tiny.is_empty());
    assert_eq!(stream(&tiny, &[b"abc abc"]), b"abc abc");
    let four = set_of(&[("a/b", "wxyz")]);
    assert_eq!(text(&stream(&four, &[b"wxyz"])), "[REDACTED:a/b]");
    assert!(forms(b"wxyz")[1..].iter().all(|f| f.len() >= MIN_FORM_LEN));
    assert!(
        forms(b"wxyz").len() > 1,
        "padded base64 of 4 bytes is 8 long"
    );
}

#[test]
fn streaming_emits_before_finish() {
    let set = key_set();
    let mut s = StreamScrubber::new(Arc::clone(&set));
    let chunk = vec![b'a'; 1024];
    let out = s.push(&chunk);
    assert!(s.holdback() < 200, "holdback {}", s.holdback());
    assert!(out.len() >= 1024 - s.holdback());
    assert_eq!(out.len() + s.finish().len(), 1024);
}

#[test]
fn small_events_flow_whole_unless_their_tail_could_start_a_secret() {
    let set = key_set();
    let mut s = StreamScrubber::new(Arc::clone(&set));
    // An SSE event shorter than the hold-back window is emitted at once...
    assert_eq!(&s.push(b"data: first\n\n")[..], b"data: first\n\n");
    // ...but a tail that could be the start of the key waits for the next chunk.
    let head = format!("data: {}", &KEY[..5]);
    let out = s.push(head.as_bytes());
    assert_eq!(&out[..], b"data: ", "only the possible prefix is held");
    let rest = format!("{}\n\n", &KEY[5..]);
    let out = s.push(rest.as_bytes());
    assert_eq!(text(&out), "[REDACTED:production/openai/api_key]\n\n");
}

#[test]
fn no_false_positive_without_the_value() {
    let set = key_set();
    let body: Vec<u8> = (0..20_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    let chunks: Vec<&[u8]> = body.chunks(997).collect();
    assert_eq!(stream(&set, &chunks), body);
    // Runs one character shorter than the window (16 for this 32-byte key) are left alone.
    let near = format!("{} {} {}", &KEY[..15], &KEY[15..30], &KEY[17..]);
    assert_eq!(text(&stream(&set, &[near.as_bytes()])), near);
}

#[test]
fn gzip_round_trip_is_scrubbed_and_valid() {
    let set = key_set();
    let plain = format!("{{\"headers\":{{\"authorization\":\"Bearer {KEY}\"}}}}").repeat(50);
    let compressed = gzip(plain.as_bytes());
    for chunk in [1, 7, 64, 4096] {
        let mut s = BodyScrubber::for_content_encoding(Arc::clone(&set), Some("gzip")).unwrap();
        assert!(matches!(s, BodyScrubber::Gzip(_)));
        let out = body_through(&mut s, &compressed, chunk).unwrap();
        let decoded = text(&gunzip(&out));
        assert_eq!(decoded, plain.replace(KEY, RED), "chunk {chunk}");
    }
}

#[test]
fn gzip_output_flows_before_finish() {
    let set = key_set();
    let plain: Vec<u8> = (0..200_000u32)
        .map(|i| (i * 31 % 26) as u8 + b'a')
        .collect();
    let compressed = gzip(&plain);
    let mut s = GzipScrubber::new(set);
    let first = s.push(&compressed[..compressed.len() / 2]).unwrap();
    assert!(!first.is_empty());
    let mut all = first.to_vec();
    all.extend_from_slice(&s.push(&compressed[compressed.len() / 2..]).unwrap());
    all.extend_from_slice(&s.finish().unwrap());
    assert_eq!(gunzip(&all), plain);
}

#[test]
fn corrupt_truncated_or_trailing_gzip_is_an_error() {
    let set = key_set();
    let good = gzip(format!("hello {KEY} there").repeat(20).as_bytes());

    let mut bad = good.clone();
    for b in &mut bad[12..30] {
        *b ^= 0x5a;
    }
    let mut s = GzipScrubber::new(Arc::clone(&set));
    assert!(s.push(&bad).and_then(|_| s.finish()).is_err());

    let mut s = GzipScrubber::new(Arc::clone(&set));
    assert!(s.push(b"not gzip at all, just text").is_err());

    let mut s = GzipScrubber::new(Arc::clone(&set));
    s.push(&good[..good.len() - 5]).unwrap();
    assert!(matches!(
        s.finish(),
        Err(ScrubError::Corrupt {
            encoding: "gzip",
            ..
        })
    ));

    let mut trailing = good.clone();
    trailing.extend_from_slice(b"garbage");
    let mut s = GzipScrubber::new(set);
    assert!(s.push(&trailing).and_then(|_| s.finish()).is_err());
}

#[test]
fn empty_gzip_body_is_fine() {
    let mut s = GzipScrubber::new(key_set());
    assert!(s.finish().unwrap().is_empty());
}

#[test]
fn deflate_zlib_and_raw_round_trip() {
    let set = key_set();
    let plain = format!("token={KEY};").repeat(30);
    let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
    z.write_all(plain.as_bytes()).unwrap();
    let zlib = z.finish().unwrap();
    let mut r = DeflateEncoder::new(Vec::new(), Compression::default());
    r.write_all(plain.as_bytes()).unwrap();
    let raw = r.finish().unwrap();

    let mut s = BodyScrubber::for_content_encoding(Arc::clone(&set), Some("deflate")).unwrap();
    let out = body_through(&mut s, &zlib, 1).unwrap();
    let mut decoded = String::new();
    ZlibDecoder::new(out.as_slice())
        .read_to_string(&mut decoded)
        .unwrap();
    assert_eq!(decoded, plain.replace(KEY, RED));

    let mut s = BodyScrubber::for_content_encoding(set, Some("Deflate")).unwrap();
    let out = body_through(&mut s, &raw, 13).unwrap();
    let mut decoded = String::new();
    DeflateDecoder::new(out.as_slice())
        .read_to_string(&mut decoded)
        .unwrap();
    assert_eq!(decoded, plain.replace(KEY, RED));
}

#[test]
fn content_encoding_selection() {
    let set = key_set();
    let pick = |e: Option<&str>| BodyScrubber::for_content_encoding(Arc::clone(&set), e);
    assert!(matches!(pick(None), Ok(BodyScrubber::Identity(_))));
    assert!(matches!(
        pick(Some("identity")),
        Ok(BodyScrubber::Identity(_))
    ));
    assert!(matches!(pick(Some(" GZIP ")), Ok(BodyScrubber::Gzip(_))));
    assert!(matches!(pick(Some("x-gzip")), Ok(BodyScrubber::Gzip(_))));
    assert!(matches!(pick(Some("BR")), Ok(BodyScrubber::Brotli(_))));
    for bad in ["zstd", "compress", "gzip, br", "br, br", "gzip, gzip"] {
        assert_eq!(pick(Some(bad)).unwrap_err().encoding, bad);
    }
    let empty = Arc::new(ScrubSet::empty());
    let mut s = BodyScrubber::for_content_encoding(empty, Some("br")).unwrap();
    assert_eq!(
        body_through(&mut s, b"\x0b\x02\x80opaque", 3).unwrap(),
        b"\x0b\x02\x80opaque"
    );
}

#[test]
fn debug_output_never_shows_the_value() {
    let set = key_set();
    let mut s = BodyScrubber::for_content_encoding(Arc::clone(&set), Some("gzip")).unwrap();
    s.push(&gzip(KEY.as_bytes())[..20]).unwrap();
    let mut id = StreamScrubber::new(Arc::clone(&set));
    id.push(&KEY.as_bytes()[..10]);
    for dbg in [format!("{set:?}"), format!("{s:?}"), format!("{id:?}")] {
        assert!(!dbg.contains("sk-live"), "{dbg}");
    }
}

/// `cargo test --release -p agent-secret-proxy --lib scrub::tests::throughput -- --ignored --nocapture`
#[test]
#[ignore = "benchmark"]
fn throughput() {
    use std::time::Instant;
    let values = [
        ("production/openai/api_key", KEY),
        (
            "production/github/token",
            "ghp_aB3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5",
        ),
        (
            "production/stripe/key",
            "rk_live_51H8sD2eZvKYlo2C0aBcDeFgHiJkLmNoP",
        ),
    ];
    let start = Instant::now();
    let n = 1000;
    for _ in 0..n {
        std::hint::black_box(set_of(&values));
    }
    println!("ScrubSet::new (3 values): {:?}", start.elapsed() / n);
    let start = Instant::now();
    for _ in 0..n {
        for (_, v) in values {
            std::hint::black_box(forms(v.as_bytes()));
        }
    }
    println!("forms (3 values): {:?}", start.elapsed() / n);
    let set = set_of(&values);
    println!("{set:?}");
    let words = [
        "the ",
        "quick ",
        "{\"delta\":",
        "sk-",
        "c2st",
        "Bearer ",
        "token ",
        "data: ",
        "\n",
        "0x1f ",
        "%2D",
        "ghp_",
        "base64 ",
        "rk_",
        "Zm9v",
        "\"content\":\"Hi\"}",
    ];
    let mut body = Vec::with_capacity(1 << 20);
    let mut x: u32 = 12345;
    while body.len() < (1 << 20) {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        body.extend_from_slice(words[(x >> 16) as usize % words.len()].as_bytes());
    }
    body.truncate(1 << 20);
    let rounds = 200;
    let t = Instant::now();
    for _ in 0..rounds {
        let (mut scratch, mut runs) = (matcher::Scratch::default(), Vec::new());
        set.find_runs(set.matcher().unwrap(), &body, &mut scratch, &mut runs);
        assert!(runs.is_empty());
    }
    println!(
        "raw find_iter {:.0} MiB/s",
        rounds as f64 / t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    for _ in 0..rounds {
        let mut total = 0;
        for c in body.chunks(16 * 1024) {
            total += std::hint::black_box(bytes::Bytes::copy_from_slice(c)).len();
        }
        assert_eq!(total, body.len());
    }
    let copy = t.elapsed();
    let t = Instant::now();
    for _ in 0..rounds {
        let mut s = StreamScrubber::new(Arc::clone(&set));
        let mut total = 0;
        for c in body.chunks(16 * 1024) {
            total += s.push(c).len();
        }
        total += s.finish().len();
        assert_eq!(total, body.len());
    }
    let scrub = t.elapsed();
    let mb = (rounds as f64) * 1.0;
    println!(
        "copy {:.0} MiB/s, scrub {:.0} MiB/s",
        mb / copy.as_secs_f64(),
        mb / scrub.as_secs_f64()
    );
}

// ---- issue 10 item 1: transformed, case-folded and partial echoes ----

fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut w = ::brotli::CompressorWriter::new(&mut out, 4096, 9, 22);
        w.write_all(data).unwrap();
    }
    out
}

fn unbrotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    ::brotli::Decompressor::new(data, 4096)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn hex_upper(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02X}")).collect()
}

#[test]
fn case_folded_hex_percent_and_json_unicode_forms_are_replaced() {
    let value = "p@ss/Word-with+Sign_0123";
    let set = set_of(&[("a/b", value)]);
    let unicode_all: String = value
        .chars()
        .map(|c| format!("\\u{:04X}", c as u32))
        .collect();
    let cases = [
        value.to_uppercase(),
        value.to_lowercase(),
        hex_upper(value.as_bytes()),
        hex_upper(value.as_bytes()).to_lowercase(),
        "p%40ss%2fWord-with%2BSign_0123".to_owned(),
        value
            .bytes()
            .map(|b| format!("%{b:02x}"))
            .collect::<String>(),
        unicode_all.clone(),
        unicode_all.to_lowercase(),
        // Go's HTML-safe escaping of `&`-free values equals the plain one; .NET's:
        "p@ss/Word-with\\u002BSign_0123".to_owned(),
    ];
    for echo in cases {
        let body = format!("{{\"echo\":\"{echo}\"}}");
        assert_eq!(
            text(&stream(&set, &[body.as_bytes()])),
            "{\"echo\":\"[REDACTED:a/b]\"}",
            "{echo}"
        );
        let header = set.scrub_header_value(echo.as_bytes()).unwrap();
        assert_eq!(text(&header), "[REDACTED:a/b]", "{echo}");
    }
}

#[test]
fn partial_echoes_of_half_the_value_are_replaced_whole() {
    let set = key_set();
    // The window for a 32-byte key is 16: any 16-character run is redacted, all of it.
    for (from, to) in [(0, 16), (16, 32), (5, 29), (1, 31), (0, 31)] {
        let piece = &KEY[from..to];
        let body = format!("key={piece}; masked={}****", &KEY[..20]);
        let expected = format!("key={RED}; masked={RED}****");
        let b = body.as_bytes();
        for i in 0..=b.len() {
            assert_eq!(
                text(&stream(&set, &[&b[..i], &b[i..]])),
                expected,
                "{piece} at {i}"
            );
        }
    }
    // Truncated encodings too: half of the hex, a middle slice of the base64.
    let hex = hex_upper(KEY.as_bytes());
    let b64 = URL_SAFE_NO_PAD.encode(KEY);
    for piece in [
        &hex[..32],
        &hex[20..52],
        &b64[3..23],
        &b64[b64.len() - 18..],
    ] {
        let out = text(&stream(&set, &[format!("<{piece}>").as_bytes()]));
        assert_eq!(out, format!("<{RED}>"), "{piece}");
    }
}

#[test]
fn short_values_scrub_whole_forms_only() {
    let value = "short-val1"; // 10 bytes: below the 12-byte window rule
    let set = set_of(&[("a/b", value)]);
    assert_eq!(
        text(&stream(&set, &[b"x SHORT-VAL1 y short-val z"])),
        "x [REDACTED:a/b] y short-val z"
    );
}

#[test]
fn touching_and_overlapping_echoes_merge_into_one_replacement() {
    let set = key_set();
    let body = format!("{KEY}{KEY} {}{}", &KEY[..20], &KEY[10..]);
    assert_eq!(
        text(&stream(&set, &[body.as_bytes()])),
        format!("{RED} {RED}")
    );
}

#[test]
fn replacement_never_completes_a_window() {
    // A value containing the replacement's delimiters gets another pair.
    let value = "x]REDACTED:a/b[0123456789";
    let set = set_of(&[("a/b", value)]);
    let out = text(&stream(&set, &[format!("({value})").as_bytes()]));
    assert_eq!(out, "(<REDACTED:a/b>)");
}

#[test]
fn a_value_using_every_delimiter_pair_gets_a_free_byte_instead() {
    // Found by the property test in CI: with `[` taken, a 23-character piece (one short of the
    // 24-character window) ending just before the value's `[` became a window when our `[`
    // followed it.
    let value = "<%#B3_% (?/#!\"(:#/?^ <)\"&=(\\#?a-[[\"3#~_|-|}@%|]_";
    let set = set_of(&[("a/b", value)]);
    let piece = &value[9..32];
    let out = text(&stream(&set, &[format!("{piece}{value}").as_bytes()]));
    assert_eq!(out, format!("{piece}$REDACTED:a/b$"));
}

#[test]
fn a_value_repeating_forever_is_redacted_in_bounded_pieces() {
    let value = "abcabcabcabcabcabcabcabc"; // periodic: every window recurs
    let set = set_of(&[("a/b", value)]);
    let mut s = StreamScrubber::new(Arc::clone(&set));
    let mut out = Vec::new();
    let chunk = "abc".repeat(1000);
    let mut emitted_early = false;
    for _ in 0..40 {
        let piece = s.push(chunk.as_bytes());
        emitted_early |= !piece.is_empty();
        out.extend_from_slice(&piece);
    }
    assert!(emitted_early, "a growing run must not be held forever");
    out.extend_from_slice(&s.finish());
    let out = text(&out);
    assert!(
        !out.contains("abcabcabcabc"),
        "{}",
        &out[..out.len().min(200)]
    );
    assert!(out.contains("[REDACTED:a/b]"));
}

/// A PEM-like value: pseudo-random base64 with line breaks.
fn pem_like(len: usize) -> String {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            if i % 65 == 64 {
                '\n'
            } else {
                char::from(alphabet[(x % 64) as usize])
            }
        })
        .collect()
}

/// The window geometry the scrubber uses for `value`.
fn geometry_of(value: &[u8]) -> windows::Geometry {
    let folded: Vec<_> = forms(value)
        .iter()
        .map(|f| zeroize::Zeroizing::new(f.to_ascii_lowercase()))
        .collect();
    windows::geometry(&folded, forms::window_len(value.len()).unwrap())
}

#[test]
fn a_4_kib_value_builds_within_budget_and_is_scrubbed() {
    let value = pem_like(4096);
    let set = set_of(&[("big/pem", &value)]);
    println!("{set:?}");
    let patterns = set.pattern_owner.len();
    assert!(patterns <= windows::MAX_WINDOWS + 64, "{set:?}");
    let memory = set.matcher().unwrap().memory_usage();
    assert!(memory < 64 << 20, "{set:?}");
    let red = "[REDACTED:big/pem]";
    let whole = text(&stream(&set, &[format!("k={value};").as_bytes()]));
    assert_eq!(whole, format!("k={red};"));
    // A partial echo of this size is covered by strided windows: fewer than `stride`
    // characters survive at either edge (documented in windows.rs), never a window_len run.
    let stride = geometry_of(value.as_bytes()).stride;
    assert!(stride > 1, "a 4 KiB value is strided");
    let half = &value[1000..3100];
    let out = text(&stream(&set, &[format!("k={half};").as_bytes()]));
    let (left, right) = out.split_once(red).unwrap();
    assert!(left.len() < 2 + stride, "{out}");
    assert!(right.len() < 1 + stride, "{out}");
    let b64 = STANDARD.encode(&value);
    let out = text(&stream(&set, &[b64.as_bytes()]));
    assert_eq!(out, red);
}

#[test]
fn strided_windows_tile_every_form_and_fit_every_run() {
    // Key-like and punctuation-heavy values from 12 bytes to 16 KiB: windows touch
    // (`stride <= k`, so a whole echo is covered) and every `window_len` run holds one.
    let punct = b"aB3 %\\\"<>&'[]{}()|#~^!@:/?=+-_";
    for len in [
        12, 31, 64, 111, 200, 300, 1000, 2048, 4096, 6000, 7600, 8192, 16384,
    ] {
        for value in [
            pem_like(len).into_bytes(),
            (0..len)
                .map(|i| punct[(i * 7 + i / 3) % punct.len()])
                .collect(),
        ] {
            let g = geometry_of(&value);
            let w = forms::window_len(len).unwrap();
            assert!(g.stride <= g.k, "{len}: {g:?}");
            assert!(g.k + g.stride - 1 <= w, "{len}: {g:?}, window_len {w}");
            let patterns = super::patterns(&value).len();
            assert!(patterns <= windows::MAX_WINDOWS + 64, "{len}: {patterns}");
        }
    }
}

#[test]
fn a_whole_echo_longer_than_the_held_run_leaves_nothing() {
    // JSON `\uXXXX` of a 4 KiB value is 24 KiB: the stream redacts it in pieces, and the
    // windows straddling each cut are still found, whatever the chunking.
    let value = pem_like(4096);
    let set = set_of(&[("big/pem", &value)]);
    let escaped: String = value
        .chars()
        .map(|c| format!("\\u{:04x}", c as u32))
        .collect();
    assert!(escaped.len() > stream::MAX_HELD_RUN);
    let body = format!("<{escaped}>");
    for chunk in [1, 997, 4096, 16 * 1024 + 1, body.len()] {
        let chunks: Vec<&[u8]> = body.as_bytes().chunks(chunk).collect();
        let out = text(&stream(&set, &chunks));
        let rest = out.replace("[REDACTED:big/pem]", "");
        assert_eq!(rest, "<>", "chunks of {chunk}");
    }
}

#[test]
fn brotli_round_trip_is_scrubbed_and_valid() {
    let set = key_set();
    let plain = format!("{{\"headers\":{{\"authorization\":\"Bearer {KEY}\"}}}}").repeat(50);
    let compressed = brotli(plain.as_bytes());
    for chunk in [1, 7, 64, 4096] {
        let mut s = BodyScrubber::for_content_encoding(Arc::clone(&set), Some("br")).unwrap();
        let out = body_through(&mut s, &compressed, chunk).unwrap();
        assert_eq!(
            text(&unbrotli(&out)),
            plain.replace(KEY, RED),
            "chunk {chunk}"
        );
    }
}

#[test]
fn brotli_output_flows_before_finish() {
    let plain: Vec<u8> = (0..200_000u32)
        .map(|i| (i * 31 % 26) as u8 + b'a')
        .collect();
    let compressed = brotli(&plain);
    let mut s = BrotliScrubber::new(key_set());
    let first = s.push(&compressed[..compressed.len() / 2]).unwrap();
    assert!(!first.is_empty());
    let mut all = first.to_vec();
    all.extend_from_slice(&s.push(&compressed[compressed.len() / 2..]).unwrap());
    all.extend_from_slice(&s.finish().unwrap());
    assert_eq!(unbrotli(&all), plain);
}

#[test]
fn corrupt_truncated_or_trailing_brotli_is_an_error() {
    let set = key_set();
    let good = brotli(format!("hello {KEY} there").repeat(20).as_bytes());

    let mut s = BrotliScrubber::new(Arc::clone(&set));
    assert!(s
        .push(b"\xff\xff\xff\xff not brotli at all")
        .and_then(|_| s.finish())
        .is_err());
    assert!(s.push(&good).is_err(), "a failed stream stays failed");

    let mut s = BrotliScrubber::new(Arc::clone(&set));
    s.push(&good[..good.len() / 2]).unwrap();
    assert!(matches!(
        s.finish(),
        Err(ScrubError::Corrupt { encoding: "br", .. })
    ));

    let mut trailing = good.clone();
    trailing.extend_from_slice(b"garbage");
    let mut s = BrotliScrubber::new(Arc::clone(&set));
    assert!(s.push(&trailing).and_then(|_| s.finish()).is_err());

    let mut s = BrotliScrubber::new(set);
    assert!(s.finish().unwrap().is_empty(), "an empty body is fine");
}

/// The issue's scenario: a compressed body echoing the value base64url-encoded, hex-encoded
/// and half-truncated, each split across chunk boundaries, in every coding.
#[test]
fn compressed_bodies_echoing_transformed_values_across_chunks() {
    let set = key_set();
    let b64url = URL_SAFE_NO_PAD.encode(format!("user:{KEY}"));
    let hex = hex_upper(KEY.as_bytes());
    let half = &KEY[KEY.len() / 2..];
    let plain = format!(
        "{{\"b64\":\"{b64url}\",\"hex\":\"{hex}\",\"tail\":\"{half}\",\"pad\":\"{}\"}}",
        "x".repeat(3000)
    );
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(plain.as_bytes()).unwrap();
    let mut zl = ZlibEncoder::new(Vec::new(), Compression::default());
    zl.write_all(plain.as_bytes()).unwrap();
    let encoded = [
        ("gzip", gz.finish().unwrap()),
        ("deflate", zl.finish().unwrap()),
        ("br", brotli(plain.as_bytes())),
    ];
    let decode = |coding: &str, data: &[u8]| -> Vec<u8> {
        match coding {
            "gzip" => gunzip(data),
            "deflate" => {
                let mut out = Vec::new();
                ZlibDecoder::new(data).read_to_end(&mut out).unwrap();
                out
            }
            _ => unbrotli(data),
        }
    };
    for (coding, compressed) in &encoded {
        for chunk in [1, 3, 17, 256] {
            let mut s = BodyScrubber::for_content_encoding(Arc::clone(&set), Some(coding)).unwrap();
            let out = body_through(&mut s, compressed, chunk).unwrap();
            let decoded = text(&decode(coding, &out));
            assert!(
                !decoded.contains(&b64url[10..30]),
                "{coding}/{chunk}: {decoded:.200}"
            );
            assert!(!decoded.to_lowercase().contains(&hex.to_lowercase()[..16]));
            assert!(!decoded.contains(half), "{coding}/{chunk}");
            assert!(decoded.starts_with("{\"b64\":\""), "{coding}/{chunk}");
            assert!(decoded.contains(&format!("\"hex\":\"{RED}\",\"tail\":\"{RED}\"")));
            assert!(decoded.ends_with(&format!("{}\"}}", "x".repeat(3000))));
        }
    }
}

#[test]
fn trailer_values_scrub_like_headers() {
    let set = key_set();
    let trailer = format!("sha={}", hex_upper(&KEY.as_bytes()[4..28]));
    assert_eq!(
        text(&set.scrub_header_value(trailer.as_bytes()).unwrap()),
        format!("sha={RED}")
    );
}
