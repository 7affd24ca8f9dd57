//! The encodings of a secret value that an upstream might echo back.
//!
//! An API that reflects a credential rarely returns the raw bytes only: it may hex or base64
//! them (Basic auth, JWT-like blobs, debug dumps), percent-encode them (a URL or form echo) or
//! JSON-escape them (an error body quoting the header). Each form is generated here so one
//! searcher can catch them all. Matching is ASCII case-insensitive (see
//! [`ScrubSet`](super::ScrubSet)), so every form is returned once, lower-cased where case is
//! free (hex digits, `%2f`, `\u00e9`), and its upper- or mixed-case spellings match too.
//!
//! The forms generated:
//! * the raw value;
//! * hex;
//! * base64, standard and URL-safe alphabets, padded and unpadded, and for each alphabet the
//!   characters the value owns when it sits 0, 1 or 2 bytes (mod 3) into a larger blob;
//! * percent-encoding with the sets of `encodeURIComponent`, RFC 3986 unreserved, WHATWG form
//!   encoding (space as `+` too) and "everything but alphanumerics", plus every byte escaped;
//! * JSON string bodies as common encoders write them: plain (serde, Java), `\/` (PHP),
//!   ASCII-only `\uXXXX` (Python), HTML-safe (Go: `<>&` as `\u003c`...), .NET's default
//!   (`"&'+<>\`` and non-ASCII as `\uXXXX`), and every character as `\uXXXX`.
//!
//! Length rule for short values: a value shorter than [`MIN_RAW_LEN`] bytes is not scrubbed;
//! below [`MIN_WINDOW_VALUE_LEN`] bytes only whole forms are scrubbed, and a generated form only
//! when it has at least [`MIN_FORM_LEN`] bytes (a 3-character base64 slice of a 4-byte value
//! occurs in innocent text). Longer values are also scrubbed by windows: see `windows.rs`.
//!
//! Not covered (documented limits): MIME base64 with line breaks, nested encodings (JSON-escaped
//! base64, double percent-encoding), HTML entities, encodings that mix escaped and unescaped
//! spellings of the same character in one echo, and non-ASCII case folding.
//!
//! Every buffer that holds a form is a `Zeroizing` vector, wiped when dropped.

use std::cmp::Ordering;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use zeroize::Zeroizing;

/// The raw value is scrubbed if it has at least this many bytes.
pub const MIN_RAW_LEN: usize = 4;
/// For a value shorter than [`MIN_WINDOW_VALUE_LEN`], a generated (encoded) form is scrubbed
/// if it has at least this many bytes.
pub const MIN_FORM_LEN: usize = 8;
/// Values of at least this many bytes are scrubbed by windows (partial echoes), shorter ones
/// by whole forms only.
pub const MIN_WINDOW_VALUE_LEN: usize = 12;

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

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The window length for a value of `value_len` bytes: `max(12, ⌈len/2⌉)`, or `None` when the
/// value is too short to be scrubbed by windows (whole forms only). Any run of at least this
/// many consecutive characters of a form is an echo of (a large part of) the value.
pub fn window_len(value_len: usize) -> Option<usize> {
    (value_len >= MIN_WINDOW_VALUE_LEN).then(|| MIN_WINDOW_VALUE_LEN.max(value_len.div_ceil(2)))
}

/// Every form of `value` worth scrubbing, raw first, deduplicated ignoring ASCII case.
pub fn forms(value: &[u8]) -> Vec<Zeroizing<Vec<u8>>> {
    if value.len() < MIN_RAW_LEN {
        return Vec::new();
    }
    let mut generated = Vec::new();
    generated.push(hex(value));
    base64_forms(value, &mut generated);
    percent_forms(value, &mut generated);
    json_forms(value, &mut generated);

    let short = value.len() < MIN_WINDOW_VALUE_LEN;
    generated.retain(|f| (!short || f.len() >= MIN_FORM_LEN) && !f.eq_ignore_ascii_case(value));
    generated.sort_unstable_by(|a, b| cmp_folded(a, b));
    generated.dedup_by(|a, b| a.eq_ignore_ascii_case(b));

    let mut all = Vec::with_capacity(generated.len() + 1);
    all.push(Zeroizing::new(value.to_vec()));
    all.extend(generated);
    all
}

/// Byte order of the ASCII-lower-cased strings.
pub(crate) fn cmp_folded(a: &[u8], b: &[u8]) -> Ordering {
    a.iter()
        .map(u8::to_ascii_lowercase)
        .cmp(b.iter().map(u8::to_ascii_lowercase))
}

fn hex(value: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(value.len() * 2));
    for &b in value {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 0xf)]);
    }
    out
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
/// not depend on the neighbouring bytes. The base64 of any substring of the value is, but for
/// its last character and padding, a substring of one of the three alignments.
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
            out.push(percent_encoded(value, set, plus));
        }
    }
    let mut every = Zeroizing::new(Vec::with_capacity(value.len() * 3));
    for &b in value {
        every.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
    }
    out.push(every);
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

/// How one JSON encoder escapes a string.
#[derive(Clone, Copy)]
struct JsonStyle {
    /// `/` as `\/` (PHP, some Java encoders).
    escape_slash: bool,
    /// Non-ASCII as `\uXXXX` (Python's default, .NET).
    ascii_only: bool,
    /// ASCII characters written as `\uXXXX` instead of their short escape or themselves.
    unicode: &'static [char],
    /// Every character as `\uXXXX`.
    all: bool,
}

const JSON_STYLES: [JsonStyle; 7] = {
    const PLAIN: JsonStyle = JsonStyle {
        escape_slash: false,
        ascii_only: false,
        unicode: &[],
        all: false,
    };
    [
        PLAIN,
        JsonStyle {
            escape_slash: true,
            ..PLAIN
        },
        JsonStyle {
            ascii_only: true,
            ..PLAIN
        },
        JsonStyle {
            escape_slash: true,
            ascii_only: true,
            ..PLAIN
        },
        // Go's encoding/json (HTML-safe by default).
        JsonStyle {
            unicode: &['<', '>', '&', '\u{2028}', '\u{2029}'],
            ..PLAIN
        },
        // .NET System.Text.Json's default encoder.
        JsonStyle {
            ascii_only: true,
            unicode: &['"', '&', '\'', '+', '<', '>', '`'],
            ..PLAIN
        },
        JsonStyle { all: true, ..PLAIN },
    ]
};

fn json_forms(value: &[u8], out: &mut Vec<Zeroizing<Vec<u8>>>) {
    let Ok(text) = std::str::from_utf8(value) else {
        return;
    };
    for style in JSON_STYLES {
        out.push(json_escaped(text, style));
    }
}

/// The body of a JSON string literal for `text` (without quotes), written in `style`.
fn json_escaped(text: &str, style: JsonStyle) -> Zeroizing<Vec<u8>> {
    let mut s = Zeroizing::new(String::with_capacity(text.len() + 8));
    for c in text.chars() {
        if style.all || style.unicode.contains(&c) {
            push_unicode_escapes(&mut s, c);
            continue;
        }
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '/' if style.escape_slash => s.push_str("\\/"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            '\u{8}' => s.push_str("\\b"),
            '\u{c}' => s.push_str("\\f"),
            c if (c as u32) < 0x20 || (style.ascii_only && !c.is_ascii()) => {
                push_unicode_escapes(&mut s, c);
            }
            c => s.push(c),
        }
    }
    Zeroizing::new(s.as_bytes().to_vec())
}

fn push_unicode_escapes(s: &mut String, c: char) {
    let mut units = [0u16; 2];
    for &unit in c.encode_utf16(&mut units).iter() {
        s.push_str("\\u");
        for shift in [12u16, 8, 4, 0] {
            s.push(char::from(HEX[usize::from((unit >> shift) & 0xf)]));
        }
    }
}
