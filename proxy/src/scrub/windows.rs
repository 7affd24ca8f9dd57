//! Windows: the fixed-length substrings of a value's forms that catch partial echoes.
//!
//! An upstream that truncates or masks the echo (`sk-live-4f9a…`, the last 20 characters of a
//! token, half of a base64 blob) never shows a whole form. Any run of at least
//! [`window_len`](super::forms::window_len) `W = max(12, ⌈len/2⌉)` consecutive characters of a
//! form contains every substring of that run, so the substrings of a fixed length `k ≤ W`
//! ("windows") go into the one searcher as ordinary patterns. The scrubber redacts the union
//! of all window matches, so a run longer than `k` is covered from its first to its last
//! character, however long it is: no separate whole-form patterns are needed (and a pattern as
//! long as a 45 KB JSON form would make the stream hold back and rescan 45 KB).
//!
//! Budget: a window costs `k` bytes of the searcher's copy and a hashing of `k` bytes when the
//! set is built, and a 4 KiB value has ~100 000 characters of forms. So a value gets at most [`MAX_WINDOWS`] windows, and `k` is
//! `min(W, `[`MAX_WINDOW_LEN`]`)` while every position of every form fits in that budget (a
//! shorter window only redacts *more*: any run of `W` characters still contains one). That is
//! the case for values up to ~200 bytes of key alphabet, ~90 bytes of characters that the
//! encodings escape (`%`, `"`, `<`, space...). Longer values take their windows every `stride`
//! characters of each form, plus the last window of each form, and grow `k` to the stride when
//! the stride exceeds [`MAX_WINDOW_LEN`], so the geometry always satisfies
//! * `stride ≤ k`: consecutive windows touch or overlap, so a *whole* echo of any form is
//!   covered end to end and redacted with nothing left (a form shorter than `k` is a pattern
//!   itself);
//! * `k + stride - 1 ≤ W`: every run of `W` characters contains a whole window, so it is
//!   caught, and what the union of its windows leaves are fewer than `stride` characters at
//!   either edge of a *partial* echo — never a run of `W`.
//!
//! The stride (= `k` once it passes 32) is about one per 190 bytes of a key-like value and
//! one per 80 bytes of a punctuation-heavy one: 2 for a 300-byte JWT, ~22 for a 4 KiB PEM
//! key, ~100 for 7.5 KiB of JSON and URL specials. The searcher then holds about as many bytes
//! as the forms have characters (`MAX_WINDOWS × k` at most): see `ScrubSet::memory_usage`.
//! Should a value ever need `2 × stride - 1 > W` (forms over a thousand times as long as the
//! value, which no encoding here produces), the window budget yields to the guarantee.
//!
//! A whole echo longer than the stream's held-run cap (16 KiB: JSON `\uXXXX` of a 3 KiB
//! value) is redacted in pieces, and `stream.rs` keeps the end of each piece as context so the
//! window straddling the cut still matches: nothing is left there either.

use foldhash::{HashSet, HashSetExt};

use zeroize::Zeroizing;

/// The longest window while a value's windows need no stride (and the shortest once they do).
pub const MAX_WINDOW_LEN: usize = 32;
/// At most this many windows per value, while the guarantees above allow it.
pub const MAX_WINDOWS: usize = 4096;

/// The windows of `forms` for a value whose window rule is `window_len`, lower-cased (the
/// searcher matches ignoring ASCII case) and deduplicated.
pub(crate) fn windows(forms: &[Zeroizing<Vec<u8>>], window_len: usize) -> Vec<Zeroizing<Vec<u8>>> {
    let folded: Vec<Zeroizing<Vec<u8>>> = forms
        .iter()
        .map(|f| Zeroizing::new(f.to_ascii_lowercase()))
        .collect();
    let Geometry { k, stride } = geometry(&folded, window_len);
    let most: usize = folded
        .iter()
        .map(|f| f.len().saturating_sub(k) / stride + 2)
        .sum();
    let mut seen: HashSet<&[u8]> = HashSet::with_capacity(most);
    let mut out = Vec::with_capacity(most);
    for form in &folded {
        let Some(last) = form.len().checked_sub(k) else {
            // Shorter than a window: the whole form is the pattern.
            if seen.insert(form.as_slice()) {
                out.push(Zeroizing::new(form.to_vec()));
            }
            continue;
        };
        let starts = (0..=last).step_by(stride).chain(std::iter::once(last));
        for start in starts {
            let window = &form[start..start + k];
            if seen.insert(window) {
                out.push(Zeroizing::new(window.to_vec()));
            }
        }
    }
    out
}

/// Window length and the distance between window starts (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub k: usize,
    pub stride: usize,
}

/// The geometry for these forms: `stride ≤ k` and `k + stride - 1 ≤ window_len` always, and
/// at most [`MAX_WINDOWS`] windows but for absurdly long forms.
pub(crate) fn geometry(forms: &[Zeroizing<Vec<u8>>], window_len: usize) -> Geometry {
    let positions = |k: usize| -> usize {
        forms
            .iter()
            .map(|f| f.len().checked_sub(k).map_or(0, |n| n + 1))
            .sum()
    };
    let stride_for = |k: usize| positions(k).div_ceil(MAX_WINDOWS).max(1);
    let mut k = window_len.min(MAX_WINDOW_LEN);
    let mut stride = stride_for(k);
    if stride > k {
        // Grow the windows to the stride. Fewer positions at the larger `k` can only lower
        // the stride, so the windows still touch.
        k = stride;
        stride = stride_for(k);
    }
    let k = k.min(window_len).max(1);
    let stride = stride.min(k).min(window_len + 1 - k).max(1);
    Geometry { k, stride }
}
