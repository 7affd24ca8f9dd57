//! The encodings of a secret value that an upstream might echo back.
//!
//! An API that reflects a credential rarely returns the raw bytes only: it may base64 them
//! (Basic auth, JWT-like blobs, debug dumps), percent-encode them (a URL or form echo) or
//! JSON-escape them (an error body quoting the header). Each form is generated here so one
//! Aho-Corasick automaton can catch them all.
//!
//! Length rule: the raw value is scrubbed when it is at least [`MIN_RAW_LEN`] bytes; a
//! *generated* form is scrubbed only when it is at least [`MIN_FORM_LEN`] bytes, because short
//! fragments (a 3-character slice of a base64 alignment variant) occur in innocent text.
//! Values shorter than `MIN_RAW_LEN` are not scrubbed at all. Forms identical to the raw value
//! are dropped, and duplicates are removed.
//!
//! Not covered (documented limits): MIME base64 with line breaks, nested encodings (JSON-escaped
//! base64, double percent-encoding), HTML entities, and case-folded values.
//!
//! Every buffer that holds a form is a `Zeroizing` vector, wiped when dropped.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use zeroize::Zeroizing;

/// The raw value is scrubbed if it has at least this many bytes.
pub const MIN_RAW_LEN: usize = 4;
/// A generated (encoded) form is scrubbed if it has at least this many bytes.
pub const MIN_FORM_LEN: usize = 8;

/// RFC 3986 `unreserved` kept as is (Go `url.QueryEscape`-like, Python `quote(safe='')`).
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// JavaScript `encodeURIComponent`.
const URI_COMPONENT: &AsciiSet = &UNRESERVED
    .remove(b'!')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');
/// WHATWG `application/x-www-form-urlencoded` byte set (space becomes `+` separately).
const FORM: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'*')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_');

/// Every form of `value` worth scrubbing, raw first, deduplicated.
pub fn forms(value: &[u8]) -> Vec<Zeroizing<Vec<u8>>> {
    if value.len() < MIN_RAW_LEN {
        return Vec::new();
    }
    let mut generated = Vec::new();
    base64_forms(value, &mut generated);
    percent_forms(value, &mut generated);
    json_forms(value, &mut generated);

    generated.retain(|f| f.len() >= MIN_FORM_LEN && f.as_slice() != value);
    generated.sort_unstable_by(|a, b| a.as_slice().cmp(b.as_slice()));
    generated.dedup_by(|a, b| a.as_slice() == b.as_slice());

    let mut all = Vec::with_capacity(generated.len() + 1);
    all.push(Zeroizing::new(value.to_vec()));
    all.extend(generated);
    all
}

fn base64_forms(value: &[u8], out: &mut Vec<Zeroizing<Vec<u8>>>) {
    for engine in [&STANDARD, &URL_SAFE, &STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        let mut s = Zeroizing::new(String::new());
        engine.encode_string(value, &mut s);
        out.push(Zeroizing::new(s.as_bytes().to_vec()));
    }
    for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        for offset in 0..3 {
            out.push(aligned_base64(engine, value, offset));
        }
    }
}

/// The characters of `value`'s base64 encoding when it sits `offset` bytes (mod 3) into a
/// larger blob: only the characters whose 6 bits all come from `value`, so the result does
/// not depend on the neighbouring bytes.
fn aligned_base64(
    engine: &base64::engine::GeneralPurpose,
    value: &[u8],
    offset: usize,
) -> Zeroizing<Vec<u8>> {
    let mut shifted = Zeroizing::new(vec![0u8; offset]);
    shifted.extend_from_slice(value);
    let mut encoded = Zeroizing::new(String::new());
    engine.encode_string(shifted.as_slice(), &mut encoded);
    // Character i covers bits [6i, 6i + 6); the value owns bits [8 * offset, 8 * (offset + len)).
    let first = (8 * offset).div_ceil(6);
    let end = (8 * (offset + value.len())) / 6;
    let bytes = encoded.as_bytes();
    Zeroizing::new(bytes.get(first..end).unwrap_or_default().to_vec())
}

fn percent_forms(value: &[u8], out: &mut Vec<Zeroizing<Vec<u8>>>) {
    let plus_variants: &[bool] = if value.contains(&b' ') {
        &[false, true]
    } else {
        &[false]
    };
    for set in [NON_ALPHANUMERIC, UNRESERVED, URI_COMPONENT, FORM] {
        for &plus in plus_variants {
            let upper = percent_encoded(value, set, plus);
            let mut lower = Zeroizing::new(upper.to_vec());
            lowercase_escapes(&mut lower);
            out.push(upper);
            out.push(lower);
        }
    }
}

fn percent_encoded(
    value: &[u8],
    set: &'static AsciiSet,
    plus_for_space: bool,
) -> Zeroizing<Vec<u8>> {
    let mut encoded = Zeroizing::new(Vec::with_capacity(value.len() * 3));
    for piece in percent_encoding::percent_encode(value, set) {
        if plus_for_space && piece == "%20" {
            encoded.push(b'+');
        } else {
            encoded.extend_from_slice(piece.as_bytes());
        }
    }
    encoded
}

/// `%2F` → `%2f`: only the two hex digits after each `%` (a literal `%` is itself escaped).
fn lowercase_escapes(encoded: &mut [u8]) {
    let mut i = 0;
    while i < encoded.len() {
        if encoded[i] == b'%' {
            for b in encoded.iter_mut().skip(i + 1).take(2) {
                b.make_ascii_lowercase();
            }
            i += 3;
        } else {
            i += 1;
        }
    }
}

fn json_forms(value: &[u8], out: &mut Vec<Zeroizing<Vec<u8>>>) {
    let Ok(text) = std::str::from_utf8(value) else {
        return;
    };
    for escape_slash in [false, true] {
        for ascii_only in [false, true] {
            out.push(json_escaped(text, escape_slash, ascii_only));
        }
    }
}

/// The body of a JSON string literal for `text` (without quotes). `escape_slash` emits `\/`
/// (PHP, some Java encoders); `ascii_only` emits `\uXXXX` for non-ASCII (Python's default).
fn json_escaped(text: &str, escape_slash: bool, ascii_only: bool) -> Zeroizing<Vec<u8>> {
    let mut s = Zeroizing::new(String::with_capacity(text.len() + 8));
    for c in text.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '/' if escape_slash => s.push_str("\\/"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            '\u{8}' => s.push_str("\\b"),
            '\u{c}' => s.push_str("\\f"),
            c if (c as u32) < 0x20 || (ascii_only && !c.is_ascii()) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    push_unicode_escape(&mut s, *unit);
                }
            }
            c => s.push(c),
        }
    }
    Zeroizing::new(s.as_bytes().to_vec())
}

fn push_unicode_escape(s: &mut String, unit: u16) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    s.push_str("\\u");
    for shift in [12u16, 8, 4, 0] {
        s.push(char::from(HEX[usize::from((unit >> shift) & 0xf)]));
    }
}
