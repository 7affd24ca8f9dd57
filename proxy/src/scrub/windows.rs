//! Windows: the fixed-length substrings of a value's forms that catch partial echoes.
//!
//! An upstream that truncates or masks the echo (`sk-live-4f9a…`, the last 20 characters of a
//! token, half of a base64 blob) never shows a whole form. Any run of at least
//! [`window_len`](super::forms::window_len) `= max(12, ⌈len/2⌉)` consecutive characters of a
//! form contains every substring of that run, so the substrings of a fixed length `k ≤` that
//! bound ("windows") go into the one automaton as ordinary patterns. The scrubber redacts the
//! union of all window matches, so a run longer than `k` is covered from its first to its last
//! character, however long it is: no separate whole-form patterns are needed.
//!
//! Budget: windows cost `k` automaton states each, and a 4 KiB value has ~100 000 characters of
//! forms. So `k` is at most [`MAX_WINDOW_LEN`] (a shorter window only redacts *more*: any run
//! of `window_len` characters still contains one), and a value gets at most [`MAX_WINDOWS`]
//! windows. When its forms have more positions than that, windows are taken every `stride`
//! characters (plus the first and last window of each form, so a whole-form echo is still
//! covered end to end); `k` grows with the stride (up to [`MAX_STRIDED_WINDOW_LEN`]) so that
//! consecutive windows still overlap and the inside of a run stays covered. Then up to
//! `stride - 1` characters at either edge of a *partial* echo may survive (the stride is about
//! one per 120 bytes of value: 2 for a 300-byte JWT, a few dozen for a 4 KiB PEM): never a
//! `window_len` run. Values up to ~110 bytes have stride 1. Values whose forms need a stride
//! above [`MAX_STRIDED_WINDOW_LEN`] (beyond ~7 KiB) leave gaps inside runs too, still shorter
//! than `window_len` each.

use std::collections::HashSet;

use zeroize::Zeroizing;

/// The longest window for values whose windows fit the budget.
pub const MAX_WINDOW_LEN: usize = 32;
/// At most this many windows per value.
pub const MAX_WINDOWS: usize = 4096;
/// Strided windows grow to the stride, but not beyond this.
pub const MAX_STRIDED_WINDOW_LEN: usize = 64;

/// The windows of `forms` for a value whose window rule is `window_len`, lower-cased (the
/// automaton matches ignoring ASCII case) and deduplicated.
pub(crate) fn windows(forms: &[Zeroizing<Vec<u8>>], window_len: usize) -> Vec<Zeroizing<Vec<u8>>> {
    let folded: Vec<Zeroizing<Vec<u8>>> = forms
        .iter()
        .map(|f| Zeroizing::new(f.to_ascii_lowercase()))
        .collect();
    let (k, stride) = geometry(&folded, window_len);
    let mut seen: HashSet<&[u8]> = HashSet::new();
    let mut out = Vec::new();
    for form in &folded {
        let Some(last) = form.len().checked_sub(k) else {
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

/// `(k, stride)` for these forms: the window length and the distance between window starts.
fn geometry(forms: &[Zeroizing<Vec<u8>>], window_len: usize) -> (usize, usize) {
    let positions = |k: usize| -> usize {
        forms
            .iter()
            .map(|f| f.len().checked_sub(k).map_or(0, |n| n + 1))
            .sum()
    };
    let k = window_len.min(MAX_WINDOW_LEN);
    let stride = positions(k).div_ceil(MAX_WINDOWS).max(1);
    if stride <= k {
        return (k, stride);
    }
    // Keep consecutive windows overlapping, within the rule: a run of `window_len` characters
    // must contain a whole strided window, i.e. `k + stride - 1 <= window_len`.
    let k = stride.min(MAX_STRIDED_WINDOW_LEN).min(window_len);
    let stride = positions(k)
        .div_ceil(MAX_WINDOWS)
        .clamp(1, (window_len + 1).saturating_sub(k).max(1));
    (k, stride)
}
