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
fn many_values_fall_back_to_the_automaton() {
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
    assert!(
        matches!(set.matcher(), Some(matcher::Matcher::Automaton(_))),
        "{set:?}"
    );
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
    let near = format!("{} {}", &KEY[..KEY.len() - 1], &KEY[1..]);
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
    for bad in ["br", "zstd", "compress", "gzip, br", "gzip, gzip"] {
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
        assert_eq!(set.matcher().unwrap().find_iter(body.as_slice()).count(), 0);
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
