//! Response scrubbing: an injected secret that the upstream echoes back, whole, partly or
//! encoded, reaches the agent as `[REDACTED:<path>]` — in headers, trailers and bodies, whatever
//! the chunking and through gzip, deflate and brotli.
//!
//! Why here: the agent must never see a credential it asked us to inject, and a malicious or
//! buggy upstream (an echo endpoint, a verbose error page, a "key ends in …4f9a" hint) is the
//! obvious side channel.
//!
//! What is scrubbed, for each injected value (see [`forms`] and `windows.rs`):
//! * its forms: raw, hex, base64 (standard and URL-safe, padded or not, at each of the three
//!   alignments inside a larger blob), percent-encoding, JSON string escapes (`\uXXXX`
//!   included), all matched ASCII case-insensitively (`DEADBEEF` = `deadbeef`, `%2F` = `%2f`);
//! * for values of 12 bytes or more, any run of at least `max(12, ⌈len/2⌉)` consecutive
//!   characters of any form — a truncated or partly masked echo — and the whole run is
//!   redacted, not just the part that triggered it.
//!
//! What is not: values shorter than 4 bytes; for values shorter than 12 bytes, partial echoes
//! (whole forms only); runs shorter than the window; MIME-wrapped base64, nested encodings,
//! HTML entities, non-ASCII case folding; bodies under `scrub = "headers"` (see config); and
//! for values over ~110 bytes, fewer than `stride` characters at either edge of a *partial*
//! echo (2 for a 300-byte JWT, ~22 for a 4 KiB PEM key; see `windows.rs`). A whole echo of any form,
//! of a value of any length, leaves nothing, and no run of `max(12, ⌈len/2⌉)` characters of a
//! form ever survives.
//!
//! A [`ScrubSet`] is built once per value version (cached) or per request for several values
//! (and per request for every value when the sidecar's caches are off). All patterns of all
//! values go into one ASCII case-insensitive searcher that reports overlapping matches: a
//! rolling-hash table per pattern length (see `matcher.rs`), so building it is hashing the
//! patterns once. A sampling prefilter (`filter.rs`: one hash probe per 7 bytes) picks the
//! regions the searcher scans, so a body without secrets costs the same however many windows
//! there are. Budget: at most 4096 windows per value, 32 bytes long until the stride has to
//! exceed that, then as long as the stride (`windows.rs`). Measured in release
//! (`examples/scrub_build.rs`): a 40-byte API key builds in ~0.1 ms into ~46 KiB, a 4 KiB PEM
//! key in ~4 ms into ~1.3 MiB.
//!
//! The union of the matches is replaced, so the output never contains a window (a run left
//! of a longer echo would be one). The replacement text is checked when the set is built:
//! its delimiters are bytes no pattern contains and no pattern occurs inside it, so a
//! replacement can never complete a window with its neighbours (a value containing `[` or `]`
//! gets `<REDACTED:path>`, another free pair or, failing those, a free byte at both ends).
//!
//! Bodies go through a [`StreamScrubber`] (holding back only a tail that could still grow into
//! a match, and a run that could still grow) or, for compressed bodies, a
//! [`GzipScrubber`]/[`DeflateScrubber`]/[`BrotliScrubber`] that decodes, scrubs and re-encodes
//! incrementally; [`BodyScrubber`] picks one from the `Content-Encoding`. Trailers are header
//! values: [`ScrubSet::scrub_header_value`].
//!
//! Secret material: the forms and windows live in `Zeroizing` buffers only while the set is
//! built; the hold-back tables (which bytes and byte pairs occur in the patterns) and the
//! prefilter's table of m-gram fingerprints are `Zeroizing` too, and so are the searcher's
//! copy of the patterns and their hashes. Response bytes passing through are not
//! secret-managed, since pingora holds them in ordinary buffers anyway.

mod body;
mod brotli;
mod compression;
mod filter;
pub mod forms;
mod matcher;
mod stream;
pub mod windows;

#[cfg(test)]
mod tests;

use foldhash::{HashMap, HashMapExt};
use std::fmt;

use agent_secret_core::path::SecretPath;
use agent_secret_core::secret::SecretBytes;
use zeroize::Zeroizing;

use matcher::{Matcher, Run, Scratch};

pub use self::brotli::BrotliScrubber;
pub use body::{BodyScrubber, ScrubError, Unscannable};
pub use compression::{DeflateScrubber, GzipScrubber};
pub use stream::StreamScrubber;

/// The secret values injected into one request, compiled for scrubbing.
pub struct ScrubSet {
    /// `None` when no value was long enough to scrub: everything passes unchanged.
    matcher: Option<Matcher>,
    max_pattern_len: usize,
    /// Pattern id → index into `replacements` (the first value that has the pattern).
    pattern_owner: Vec<usize>,
    /// Pattern id → the pattern belongs to several values (a prefix two tokens share): a run
    /// is labelled by one of its patterns that is not shared, when it has one.
    pattern_shared: Vec<bool>,
    /// `[REDACTED:<path>]` (or another safe spelling, see the module docs) per injected path.
    replacements: Vec<Vec<u8>>,
    paths: Vec<SecretPath>,
    /// What the hold-back check needs to know about the patterns.
    tables: ByteTables,
}

/// Which (ASCII-lower-cased) bytes and byte pairs occur in the patterns, and which bytes start
/// one: a tail of the body can only grow into a match if all its bytes and adjacent pairs
/// occur and its first byte starts a pattern. A conservative prefix test in O(tail) with no
/// per-pattern work, however many windows there are. Wiped on drop: it says a lot about the
/// value.
struct ByteTables {
    /// Bits 0..256: bytes; 256..512: first bytes; 512..: byte pairs (`a << 8 | b`).
    bits: Zeroizing<Vec<u64>>,
}

const BYTES: usize = 0;
const STARTS: usize = 256;
const PAIRS: usize = 512;

impl ByteTables {
    fn new() -> ByteTables {
        ByteTables {
            bits: Zeroizing::new(vec![0; (PAIRS + 65536) / 64]),
        }
    }

    fn set(&mut self, bit: usize) {
        if let Some(word) = self.bits.get_mut(bit / 64) {
            *word |= 1 << (bit % 64);
        }
    }

    fn get(&self, bit: usize) -> bool {
        self.bits
            .get(bit / 64)
            .is_some_and(|word| word & (1 << (bit % 64)) != 0)
    }

    /// A pattern's first byte.
    fn add_start(&mut self, pattern: &[u8]) {
        if let Some(&first) = pattern.first() {
            self.set(STARTS + usize::from(first.to_ascii_lowercase()));
        }
    }

    /// The bytes and pairs of a form: every pattern is a substring of one, so this is the
    /// patterns' bytes and pairs, or more (pairs across two touching strided windows), which
    /// only makes the hold-back more conservative. Forms are ~16× shorter than all windows.
    fn add_form(&mut self, form: &[u8]) {
        for &b in form {
            self.set(BYTES + usize::from(b.to_ascii_lowercase()));
        }
        for pair in form.windows(2) {
            self.set(PAIRS + pair_index(pair[0], pair[1]));
        }
    }

    fn has_byte(&self, b: u8) -> bool {
        self.get(BYTES + usize::from(b.to_ascii_lowercase()))
    }

    fn starts(&self, b: u8) -> bool {
        self.get(STARTS + usize::from(b.to_ascii_lowercase()))
    }

    fn has_pair(&self, a: u8, b: u8) -> bool {
        self.get(PAIRS + pair_index(a, b))
    }
}

fn pair_index(a: u8, b: u8) -> usize {
    usize::from(a.to_ascii_lowercase()) << 8 | usize::from(b.to_ascii_lowercase())
}

/// Replacement delimiters, in order of preference: the first pair whose bytes occur in no
/// pattern is used, so a replacement can never be part of a window (see the module docs).
const DELIMITERS: [(u8, u8); 10] = [
    (b'[', b']'),
    (b'<', b'>'),
    (b'(', b')'),
    (b'{', b'}'),
    (b'|', b'|'),
    (b'#', b'#'),
    (b'~', b'~'),
    (b'^', b'^'),
    (b'!', b'!'),
    (b'@', b'@'),
];

/// The searcher could not be built (only on an absurd pattern count).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the response scrubber: {0}")]
pub struct ScrubSetError(#[from] matcher::TooManyPatterns);

impl ScrubSet {
    /// Compile the values injected into this request. A path given twice with the same value,
    /// or two paths sharing a pattern, redact as the first path listed.
    pub fn new(values: &[(SecretPath, SecretBytes)]) -> Result<ScrubSet, ScrubSetError> {
        let mut patterns: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        let mut pattern_owner = Vec::new();
        let mut paths = Vec::with_capacity(values.len());
        let mut tables = ByteTables::new();
        let mut all_forms = Vec::new();
        for (index, (path, value)) in values.iter().enumerate() {
            paths.push(path.clone());
            let forms = forms::forms(value.expose());
            for form in &forms {
                tables.add_form(form);
            }
            let own = patterns_of(value.expose(), &forms);
            pattern_owner.extend(std::iter::repeat_n(index, own.len()));
            patterns.extend(own);
            all_forms.extend(forms);
        }
        let (keep, pattern_shared) = dedup_across_values(&patterns, &pattern_owner, values.len());
        let pattern_owner: Vec<usize> = keep.iter().map(|&i| pattern_owner[i]).collect();
        let slices: Vec<&[u8]> = keep.iter().map(|&i| patterns[i].as_slice()).collect();

        let max_pattern_len = slices.iter().map(|p| p.len()).max().unwrap_or(0);
        for p in &slices {
            tables.add_start(p);
        }
        let matcher = if slices.is_empty() {
            None
        } else {
            // The prefilter's m-grams come from the forms, or from the patterns where those
            // are shorter (the strided windows of a long value).
            let bytes = |strings: &[&[u8]]| strings.iter().map(|s| s.len()).sum::<usize>();
            let forms: Vec<&[u8]> = all_forms.iter().map(|f| f.as_slice()).collect();
            let sources = if bytes(&forms) < bytes(&slices) {
                &forms
            } else {
                &slices
            };
            Some(Matcher::new(&slices, sources)?)
        };
        let replacements = paths
            .iter()
            .map(|path| replacement_for(path, &tables, matcher.as_ref()))
            .collect();
        Ok(ScrubSet {
            matcher,
            max_pattern_len,
            pattern_owner,
            pattern_shared,
            replacements,
            paths,
            tables,
        })
    }

    /// Approximate heap bytes held (the searcher and the hold-back tables), for cache weights.
    pub fn memory_usage(&self) -> usize {
        self.matcher.as_ref().map_or(0, Matcher::memory_usage)
            + self.tables.bits.len() * 8
            + self.replacements.iter().map(Vec::len).sum::<usize>()
            + self.pattern_owner.len() * (std::mem::size_of::<usize>() + 1)
    }

    /// A set that scrubs nothing (no secret was injected).
    pub fn empty() -> ScrubSet {
        ScrubSet {
            matcher: None,
            max_pattern_len: 0,
            pattern_owner: Vec::new(),
            pattern_shared: Vec::new(),
            replacements: Vec::new(),
            paths: Vec::new(),
            tables: ByteTables::new(),
        }
    }

    /// The first position of `buf` from which the rest of `buf` could be the beginning of a
    /// match completed by bytes not seen yet (`buf.len()` when there is none). Conservative:
    /// it may return an earlier position than strictly needed, never a later one.
    pub(crate) fn hold_from(&self, buf: &[u8]) -> usize {
        let len = buf.len();
        let floor = len.saturating_sub(self.max_pattern_len.saturating_sub(1));
        let mut i = len;
        while i > floor {
            let b = buf[i - 1];
            if !self.tables.has_byte(b) || (i < len && !self.tables.has_pair(b, buf[i])) {
                break;
            }
            i -= 1;
        }
        while i < len && !self.tables.starts(buf[i]) {
            i += 1;
        }
        i
    }

    /// True when nothing can match: bodies and headers pass through untouched.
    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    /// The longest pattern, in bytes; a body scrubber holds back one byte less than this
    /// (plus a run that is still growing).
    pub fn max_pattern_len(&self) -> usize {
        self.max_pattern_len
    }

    /// The paths whose values this set scrubs.
    pub fn paths(&self) -> &[SecretPath] {
        &self.paths
    }

    /// The header (or trailer) value with every secret run replaced, or `None` if it had none.
    pub fn scrub_header_value(&self, value: &[u8]) -> Option<Vec<u8>> {
        let matcher = self.matcher.as_ref()?;
        let mut runs = Vec::new();
        self.find_runs(matcher, value, &mut Scratch::default(), &mut runs);
        if runs.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(value.len() + 16);
        self.replace_runs(value, &runs, &mut out);
        Some(out)
    }

    /// Append `buf` to `out` with each run (sorted, disjoint, within `buf`) replaced.
    pub(crate) fn replace_runs(&self, buf: &[u8], runs: &[Run], out: &mut Vec<u8>) {
        self.replace_runs_from(buf, 0, runs, out);
    }

    /// [`replace_runs`](Self::replace_runs) for `buf[from..]` (the runs start at `from` or
    /// later): the bytes before `from` were emitted already.
    pub(crate) fn replace_runs_from(
        &self,
        buf: &[u8],
        from: usize,
        runs: &[Run],
        out: &mut Vec<u8>,
    ) {
        let mut cursor = from;
        for run in runs {
            out.extend_from_slice(&buf[cursor..run.start]);
            out.extend_from_slice(self.replacement(run.pattern));
            cursor = run.end;
        }
        out.extend_from_slice(&buf[cursor..]);
    }

    /// The runs of `haystack` (see [`Matcher::runs`]), labelled by an unshared pattern.
    pub(crate) fn find_runs(
        &self,
        matcher: &Matcher,
        haystack: &[u8],
        scratch: &mut Scratch,
        out: &mut Vec<Run>,
    ) {
        let unshared = |p: usize| !self.pattern_shared.get(p).copied().unwrap_or(true);
        matcher.runs(haystack, unshared, scratch, out);
    }

    fn matcher(&self) -> Option<&Matcher> {
        self.matcher.as_ref()
    }

    fn replacement(&self, pattern: usize) -> &[u8] {
        self.pattern_owner
            .get(pattern)
            .and_then(|&owner| self.replacements.get(owner))
            .map_or(b"[REDACTED]".as_slice(), Vec::as_slice)
    }
}

/// Which patterns to keep (indexes into `patterns`, first occurrence of each) and, per kept
/// pattern, whether another value shares it. Within one value, forms and windows are already
/// distinct, so a single value (the common case, and every request's with caches off) keeps
/// them all without hashing any.
fn dedup_across_values(
    patterns: &[Zeroizing<Vec<u8>>],
    owner: &[usize],
    values: usize,
) -> (Vec<usize>, Vec<bool>) {
    if values <= 1 {
        return ((0..patterns.len()).collect(), vec![false; patterns.len()]);
    }
    let mut seen: HashMap<&[u8], usize> = HashMap::with_capacity(patterns.len());
    let mut keep = Vec::with_capacity(patterns.len());
    let mut shared = Vec::with_capacity(patterns.len());
    for (i, p) in patterns.iter().enumerate() {
        match seen.get(p.as_slice()) {
            None => {
                seen.insert(p.as_slice(), keep.len());
                keep.push(i);
                shared.push(false);
            }
            Some(&id) => {
                if let (Some(flag), Some(first), Some(this)) = (
                    shared.get_mut(id),
                    keep.get(id).and_then(|&k| owner.get(k)),
                    owner.get(i),
                ) {
                    *flag |= first != this;
                }
            }
        }
    }
    (keep, shared)
}

/// The patterns one value puts into the searcher, lower-cased and deduplicated: the windows
/// of its forms (values of [`forms::MIN_WINDOW_VALUE_LEN`] bytes or more) or its whole forms.
pub fn patterns(value: &[u8]) -> Vec<Zeroizing<Vec<u8>>> {
    patterns_of(value, &forms::forms(value))
}

/// [`patterns`] from the value's forms, already made.
fn patterns_of(value: &[u8], forms: &[Zeroizing<Vec<u8>>]) -> Vec<Zeroizing<Vec<u8>>> {
    match forms::window_len(value.len()) {
        Some(window_len) => windows::windows(forms, window_len),
        None => forms
            .iter()
            .map(|f| Zeroizing::new(f.to_ascii_lowercase()))
            .collect(),
    }
}

/// `[REDACTED:<path>]`, or the first spelling whose delimiters occur in no pattern and that
/// contains no pattern: then no window can overlap a replacement. When every pair in
/// [`DELIMITERS`] is taken (a value using all of `[]<>(){}|#~^!@`), any other byte that occurs in
/// no pattern delimits both ends: printable ASCII first, then any byte at all. Only a value
/// whose patterns use every byte value (a binary value with all 256, so at least 256 bytes
/// long) gets the plain spelling regardless; then a partial echo left next to it may end in a
/// byte equal to our `[` or `]` (that byte is ours, not the upstream's: the secret characters
/// shown are still fewer than a window).
fn replacement_for(path: &SecretPath, tables: &ByteTables, matcher: Option<&Matcher>) -> Vec<u8> {
    let labelled = format!("REDACTED:{path}");
    let printable = (b'!'..=b'~').filter(u8::is_ascii_punctuation);
    // A space, then bytes that are not ASCII, then control bytes.
    let any_other = std::iter::once(b' ')
        .chain(0x80..=u8::MAX)
        .chain((0..b' ').chain(std::iter::once(0x7f)));
    let delimiters = DELIMITERS
        .into_iter()
        .chain(printable.chain(any_other).map(|b| (b, b)));
    for (open, close) in delimiters {
        if tables.has_byte(open) || tables.has_byte(close) {
            continue;
        }
        for inner in [labelled.as_str(), "REDACTED"] {
            let mut candidate = Vec::with_capacity(inner.len() + 2);
            candidate.push(open);
            candidate.extend_from_slice(inner.as_bytes());
            candidate.push(close);
            if !matcher.is_some_and(|m| m.is_match(&candidate)) {
                return candidate;
            }
        }
    }
    format!("[{labelled}]").into_bytes()
}

impl fmt::Debug for ScrubSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScrubSet")
            .field("paths", &self.paths)
            .field("patterns", &self.pattern_owner.len())
            .field("max_pattern_len", &self.max_pattern_len())
            .field(
                "searcher_bytes",
                &self.matcher.as_ref().map_or(0, Matcher::memory_usage),
            )
            .finish()
    }
}
