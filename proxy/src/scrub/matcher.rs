//! The multi-pattern searcher behind a [`ScrubSet`](super::ScrubSet), and the runs it finds.
//!
//! One Aho-Corasick automaton holds every pattern of every injected value (whole forms of short
//! values, windows of long ones), matching ASCII case-insensitively. It runs with standard
//! semantics and reports *overlapping* matches: the scrubber redacts the union of all matches,
//! so a secret run longer than a window is covered end to end, and two echoes that touch merge
//! into one redaction. (aho-corasick's SIMD packed searcher used before supports neither case
//! folding nor more than 64 patterns nor overlapping search.)
//!
//! aho-corasick picks its own representation: a DFA for up to 100 patterns, a contiguous NFA
//! for more (a few hundred windows for a typical API key). An NFA step per byte over
//! thousands of windows would be slow (~100 MiB/s), so a sampling prefilter (`filter.rs`)
//! decides which regions the automaton scans at all.

use aho_corasick::{AhoCorasick, MatchKind};

use super::filter::GramFilter;

/// An overlapping, ASCII case-insensitive searcher over the patterns of the injected values.
pub(crate) struct Matcher {
    automaton: AhoCorasick,
    filter: GramFilter,
}

/// Reused buffers for [`Matcher::runs`].
#[derive(Default)]
pub(crate) struct Scratch {
    hits: Vec<Run>,
    regions: Vec<(usize, usize)>,
}

/// A maximal union of matches: `[start, end)` of the haystack is secret-derived, and
/// `pattern` is one of the matches (it picks the replacement).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Run {
    pub start: usize,
    pub end: usize,
    pub pattern: usize,
}

impl Matcher {
    /// Build over `patterns` (non-empty). Pattern ids are the indexes in `patterns`.
    pub(crate) fn new(patterns: &[&[u8]]) -> Result<Matcher, aho_corasick::BuildError> {
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .ascii_case_insensitive(true)
            // Our own prefilter already chose the regions; aho-corasick's would rescan them.
            .prefilter(false)
            .build(patterns)?;
        Ok(Matcher {
            automaton,
            filter: GramFilter::new(patterns),
        })
    }

    /// Whether the automaton is a DFA (few patterns) rather than an NFA.
    #[cfg(test)]
    pub(crate) fn is_dfa(&self) -> bool {
        self.automaton.kind() == aho_corasick::AhoCorasickKind::DFA
    }

    /// Heap bytes used by the automaton.
    pub(crate) fn memory_usage(&self) -> usize {
        self.automaton.memory_usage() + self.filter.memory_usage()
    }

    /// Whether any pattern occurs in `haystack`.
    pub(crate) fn is_match(&self, haystack: &[u8]) -> bool {
        self.automaton.is_match(haystack)
    }

    /// The runs of `haystack`, sorted and disjoint (touching runs are merged), into `out`
    /// (cleared first). A run's `pattern` is its leftmost hit for which `preferred` holds, or
    /// its leftmost hit if none does.
    pub(crate) fn runs(
        &self,
        haystack: &[u8],
        preferred: impl Fn(usize) -> bool,
        scratch: &mut Scratch,
        out: &mut Vec<Run>,
    ) {
        let Scratch { hits, regions } = scratch;
        hits.clear();
        out.clear();
        self.filter.regions(haystack, regions);
        for &(from, to) in regions.iter() {
            let Some(region) = haystack.get(from..to) else {
                continue;
            };
            // Standard match semantics (set in `new`) is the one overlapping search accepts.
            hits.extend(self.automaton.find_overlapping_iter(region).map(|m| Run {
                start: from + m.start(),
                end: from + m.end(),
                pattern: m.pattern().as_usize(),
            }));
        }
        hits.sort_unstable_by_key(|r| (r.start, r.pattern));
        let mut hits = hits.iter().copied();
        let Some(mut current) = hits.next() else {
            return;
        };
        let mut labelled = preferred(current.pattern);
        for hit in hits {
            if hit.start <= current.end {
                current.end = current.end.max(hit.end);
                if !labelled && preferred(hit.pattern) {
                    current.pattern = hit.pattern;
                    labelled = true;
                }
            } else {
                out.push(current);
                current = hit;
                labelled = preferred(current.pattern);
            }
        }
        out.push(current);
    }
}
