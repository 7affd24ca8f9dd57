//! The multi-pattern searcher behind a [`ScrubSet`](super::ScrubSet), and the runs it finds.
//!
//! The patterns come in few lengths: all windows of a value share one length `k`, and a short
//! value's whole forms have a handful (see `windows.rs`). So the searcher keeps, per length, a
//! hash table of the patterns keyed by a polynomial rolling hash of their ASCII-lower-cased
//! bytes. A scan rolls one hash per length along the haystack and probes the table at every
//! position; a hash that is found is checked byte by byte against the pattern. Every
//! occurrence of every pattern is reported, overlapping ones included: the scrubber redacts
//! their union, so a secret run longer than a window is covered end to end, and two echoes
//! that touch merge into one redaction.
//!
//! Why not Aho-Corasick (used until issue 16): building its NFA over a typical API key's few
//! hundred windows took ~2.8 ms, and with the sidecar's caches off a scrub set is built for
//! every request. Building this searcher is hashing the patterns once: linear in their bytes,
//! a few microseconds for an API key. The scan costs one hash step and one probe per byte per
//! length, but it only runs where the sampling prefilter (`filter.rs`) found a candidate, so a
//! body without secrets costs the same either way.
//!
//! The hash base is drawn at random for each set: an upstream knows the secret (it received
//! it) but cannot craft a body whose every position collides with a pattern's hash, which
//! would make each position cost a byte comparison of a whole pattern.

use zeroize::Zeroizing;

use super::filter::{mix, GramFilter};

/// An overlapping, ASCII case-insensitive searcher over the patterns of the injected values.
pub(crate) struct Matcher {
    /// Every pattern, lower-cased, back to back. Wiped on drop, like everything derived from
    /// the patterns here.
    bytes: Zeroizing<Vec<u8>>,
    /// Where pattern `i` starts in `bytes`; `starts[i + 1]` is where it ends.
    starts: Vec<usize>,
    /// One table per pattern length, shortest first.
    groups: Vec<Group>,
    /// The rolling hash's multiplier: random and odd.
    base: u64,
    filter: GramFilter,
}

/// The patterns of one length, in an open-addressing table.
struct Group {
    len: usize,
    /// `base^(len - 1)`: what the byte leaving the rolling window was multiplied by.
    top: u64,
    /// Per slot, the pattern's hash...
    hashes: Zeroizing<Vec<u64>>,
    /// ...and its id plus one (0: the slot is empty).
    ids: Vec<u32>,
    /// Top bits of the mixed hash pick the slot: `64 - log2(slots)`.
    shift: u32,
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

/// More patterns than a table's `u32` ids can name (billions: no value comes close).
#[derive(Debug, thiserror::Error)]
#[error("too many scrub patterns: {0}")]
pub struct TooManyPatterns(pub usize);

impl Matcher {
    /// Build over `patterns` (non-empty, lower-cased, distinct), each a substring of one of
    /// `sources` (the values' forms, for the prefilter). Pattern ids are the indexes in
    /// `patterns`.
    pub(crate) fn new(patterns: &[&[u8]], sources: &[&[u8]]) -> Result<Matcher, TooManyPatterns> {
        if u32::try_from(patterns.len()).map_or(true, |n| n == u32::MAX) {
            return Err(TooManyPatterns(patterns.len()));
        }
        let base = rand::random::<u64>() | 1;
        let total: usize = patterns.iter().map(|p| p.len()).sum();
        let mut bytes = Zeroizing::new(Vec::with_capacity(total));
        let mut starts = Vec::with_capacity(patterns.len() + 1);
        for p in patterns {
            starts.push(bytes.len());
            bytes.extend(p.iter().map(u8::to_ascii_lowercase));
        }
        starts.push(bytes.len());

        let mut lengths: Vec<usize> = patterns.iter().map(|p| p.len()).collect();
        lengths.sort_unstable();
        lengths.dedup();
        let groups = lengths
            .into_iter()
            .filter(|&len| len > 0)
            .map(|len| {
                let members = patterns.iter().filter(|p| p.len() == len).count();
                let slots = (members * 2).next_power_of_two().max(4);
                let mut group = Group {
                    len,
                    top: power(base, len - 1),
                    hashes: Zeroizing::new(vec![0; slots]),
                    ids: vec![0; slots],
                    shift: 64 - slots.trailing_zeros(),
                };
                for (id, p) in patterns.iter().enumerate().filter(|(_, p)| p.len() == len) {
                    // `id < u32::MAX` was checked above, so `id + 1` fits and is never 0.
                    group.insert(hash(base, p), id as u32 + 1);
                }
                group
            })
            .collect();
        Ok(Matcher {
            bytes,
            starts,
            groups,
            base,
            filter: GramFilter::new(
                sources,
                patterns.iter().map(|p| p.len()).min().unwrap_or(1),
                patterns.iter().map(|p| p.len()).max().unwrap_or(1),
            ),
        })
    }

    /// Heap bytes used by the patterns, the tables and the prefilter.
    pub(crate) fn memory_usage(&self) -> usize {
        self.bytes.len()
            + self.starts.len() * std::mem::size_of::<usize>()
            + self.groups.iter().map(|g| g.ids.len() * 12).sum::<usize>()
            + self.filter.memory_usage()
    }

    /// Whether any pattern occurs in `haystack`.
    pub(crate) fn is_match(&self, haystack: &[u8]) -> bool {
        let mut found = false;
        self.scan(haystack, 0, &mut |_| {
            found = true;
            false
        });
        found
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
            self.scan(region, from, &mut |run| {
                hits.push(run);
                true
            });
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

    /// Every occurrence of every pattern in `region`, offset by `offset`, to `found` until it
    /// returns false.
    fn scan(&self, region: &[u8], offset: usize, found: &mut impl FnMut(Run) -> bool) {
        for group in &self.groups {
            let len = group.len;
            let Some(first) = region.get(..len) else {
                // Groups are shortest first: no longer one fits either.
                return;
            };
            let mut h = hash(self.base, first);
            let mut start = 0;
            loop {
                let gram = &region[start..start + len];
                if let Some(id) = self.find(group, h, gram) {
                    let run = Run {
                        start: offset + start,
                        end: offset + start + len,
                        pattern: id,
                    };
                    if !found(run) {
                        return;
                    }
                }
                let Some(&incoming) = region.get(start + len) else {
                    break;
                };
                let outgoing = u64::from(region[start].to_ascii_lowercase());
                h = h
                    .wrapping_sub(outgoing.wrapping_mul(group.top))
                    .wrapping_mul(self.base)
                    .wrapping_add(u64::from(incoming.to_ascii_lowercase()));
                start += 1;
            }
        }
    }

    /// The pattern of `group` equal to `gram` (ignoring ASCII case), whose hash is `h`.
    fn find(&self, group: &Group, h: u64, gram: &[u8]) -> Option<usize> {
        let mask = group.ids.len() - 1;
        let mut slot = (mix(h) >> group.shift) as usize;
        loop {
            let id = *group.ids.get(slot)?;
            if id == 0 {
                return None;
            }
            let id = id as usize - 1;
            if group.hashes.get(slot) == Some(&h) && self.pattern(id).eq_ignore_ascii_case(gram) {
                return Some(id);
            }
            slot = (slot + 1) & mask;
        }
    }

    fn pattern(&self, id: usize) -> &[u8] {
        match (self.starts.get(id), self.starts.get(id + 1)) {
            (Some(&from), Some(&to)) => self.bytes.get(from..to).unwrap_or_default(),
            _ => &[],
        }
    }
}

impl Group {
    fn insert(&mut self, h: u64, id: u32) {
        let mask = self.ids.len() - 1;
        let mut slot = (mix(h) >> self.shift) as usize;
        while self.ids.get(slot).is_some_and(|&taken| taken != 0) {
            slot = (slot + 1) & mask;
        }
        if let (Some(hash_slot), Some(id_slot)) =
            (self.hashes.get_mut(slot), self.ids.get_mut(slot))
        {
            *hash_slot = h;
            *id_slot = id;
        }
    }
}

/// The polynomial hash of `bytes`, lower-cased: `Σ b[i]·base^(len-1-i)`, wrapping.
fn hash(base: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |h, &b| {
        h.wrapping_mul(base)
            .wrapping_add(u64::from(b.to_ascii_lowercase()))
    })
}

fn power(base: u64, exponent: usize) -> u64 {
    (0..exponent).fold(1u64, |p, _| p.wrapping_mul(base))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every occurrence, by brute force.
    fn naive(patterns: &[&[u8]], haystack: &[u8]) -> Vec<Run> {
        let mut out = Vec::new();
        for start in 0..haystack.len() {
            for (id, p) in patterns.iter().enumerate() {
                if haystack
                    .get(start..start + p.len())
                    .is_some_and(|g| g.eq_ignore_ascii_case(p))
                {
                    out.push(Run {
                        start,
                        end: start + p.len(),
                        pattern: id,
                    });
                }
            }
        }
        out.sort_unstable_by_key(|r| (r.start, r.pattern));
        out
    }

    #[test]
    fn every_overlapping_occurrence_of_every_length_is_found() {
        let patterns: [&[u8]; 5] = [b"abcab", b"bcabc", b"cab", b"zz", b"abcabcabcabc"];
        let haystack = b"xxABCabcABCabcab zzz CAB c";
        let matcher = Matcher::new(&patterns, &patterns).unwrap_or_else(|e| panic!("{e}"));
        let mut found = Vec::new();
        matcher.scan(haystack, 0, &mut |run| {
            found.push(run);
            true
        });
        found.sort_unstable_by_key(|r| (r.start, r.pattern));
        assert_eq!(found, naive(&patterns, haystack));
        assert!(found.len() > 10, "{found:?}");
        assert!(matcher.is_match(b"..ZZ.."));
        assert!(!matcher.is_match(b"z z abx"));
    }

    #[test]
    fn a_crowded_table_still_finds_everything() {
        // Hundreds of patterns of one length, a haystack holding each once.
        let owned: Vec<Vec<u8>> = (0..600u32)
            .map(|i| format!("w{i:05}-{:04x}", i.wrapping_mul(2_654_435_761) >> 16).into_bytes())
            .collect();
        let patterns: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        let haystack: Vec<u8> = owned
            .iter()
            .rev()
            .flat_map(|p| [p.as_slice(), b" "].concat())
            .collect();
        let matcher = Matcher::new(&patterns, &patterns).unwrap_or_else(|e| panic!("{e}"));
        let mut found = Vec::new();
        matcher.scan(&haystack, 7, &mut |run| {
            found.push(run);
            true
        });
        found.sort_unstable_by_key(|r| (r.start, r.pattern));
        let expected: Vec<Run> = naive(&patterns, &haystack)
            .into_iter()
            .map(|r| Run {
                start: r.start + 7,
                end: r.end + 7,
                ..r
            })
            .collect();
        assert_eq!(found.len(), 600);
        assert_eq!(found, expected);
    }
}
