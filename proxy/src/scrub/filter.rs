//! A sampling prefilter in front of the automaton: almost every response holds no secret, so
//! the common case must cost far less than an Aho-Corasick step per byte.
//!
//! With `m ≤ (shortest pattern + 1) / 2`, every occurrence of a pattern contains a whole
//! "block" `[q, q + m)` with `q` a multiple of `m` (the pattern spans at least `2m - 1`
//! bytes). So the scan looks at one block per `m` bytes, checks whether it is an m-gram of some
//! pattern (a hash table of them, case-folded), and only around a block that is runs the
//! automaton, over `[q + m - max_len, q + max_len)`: every match containing that block lies
//! there. Matches are thus exactly those of a full scan; on a body without secrets the cost is
//! one table probe per `m` (up to 7) bytes instead of an NFA step per byte, whatever the
//! number of windows. Sparse candidates in base64 or hex text only widen the scanned regions.
//!
//! The table stores a 32-bit fingerprint of each m-gram, not the m-gram: half the memory (a
//! long value's windows have hundreds of thousands of m-grams), and a fingerprint collision
//! only makes the automaton scan one more region, never changes a match.

use zeroize::Zeroizing;

/// The longest block: 7 bytes packed into a `u64` below an "occupied" bit.
const MAX_BLOCK: usize = 7;
const OCCUPIED: u64 = 1 << 63;

/// The fingerprints of the m-grams of all patterns, in an open-addressing table (0 = empty).
/// Wiped on drop: together they say much about the patterns.
pub(crate) struct GramFilter {
    m: usize,
    max_len: usize,
    table: Zeroizing<Vec<u32>>,
    shift: u32,
}

impl GramFilter {
    /// Over `patterns` (lower-cased, non-empty).
    pub(crate) fn new(patterns: &[&[u8]]) -> GramFilter {
        let min_len = patterns.iter().map(|p| p.len()).min().unwrap_or(1);
        let max_len = patterns.iter().map(|p| p.len()).max().unwrap_or(1);
        let m = min_len.div_ceil(2).clamp(1, MAX_BLOCK);
        let grams: usize = patterns.iter().map(|p| p.len() + 1 - m.min(p.len())).sum();
        let slots = (grams * 2).next_power_of_two().max(16);
        let mut filter = GramFilter {
            m,
            max_len,
            table: Zeroizing::new(vec![0; slots]),
            shift: 64 - slots.trailing_zeros(),
        };
        for p in patterns {
            for gram in p.windows(m) {
                filter.insert(mix(pack(gram)));
            }
        }
        filter
    }

    /// Heap bytes used by the table.
    pub(crate) fn memory_usage(&self) -> usize {
        self.table.len() * std::mem::size_of::<u32>()
    }

    /// The slot (top bits of the mixed key) and the fingerprint (low 32 bits, never 0).
    fn place(&self, mixed: u64) -> (usize, u32) {
        ((mixed >> self.shift) as usize, mixed as u32 | 1)
    }

    fn insert(&mut self, mixed: u64) {
        let mask = self.table.len() - 1;
        let (mut i, fp) = self.place(mixed);
        loop {
            match self.table.get_mut(i) {
                Some(slot) if *slot == 0 => {
                    *slot = fp;
                    return;
                }
                Some(slot) if *slot == fp => return,
                Some(_) => i = (i + 1) & mask,
                None => return,
            }
        }
    }

    fn contains(&self, mixed: u64) -> bool {
        let mask = self.table.len() - 1;
        let (mut i, fp) = self.place(mixed);
        loop {
            match self.table.get(i) {
                Some(&slot) if slot == fp => return true,
                Some(&0) | None => return false,
                Some(_) => i = (i + 1) & mask,
            }
        }
    }

    /// The regions of `haystack` the automaton must scan, sorted and disjoint, into `out`
    /// (cleared first): every pattern occurrence lies entirely inside one of them.
    pub(crate) fn regions(&self, haystack: &[u8], out: &mut Vec<(usize, usize)>) {
        out.clear();
        let (m, len) = (self.m, haystack.len());
        for (index, block) in haystack.chunks_exact(m).enumerate() {
            if !self.contains(mix(pack(block))) {
                continue;
            }
            let q = index * m;
            let start = (q + m).saturating_sub(self.max_len);
            let end = (q + self.max_len).min(len);
            match out.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => out.push((start, end)),
            }
        }
    }
}

/// The splitmix64 finalizer: every bit of the key reaches both the slot (top bits) and the
/// fingerprint (low bits).
fn mix(key: u64) -> u64 {
    let mut z = key;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Up to [`MAX_BLOCK`] bytes, lower-cased, as one table key (never 0).
fn pack(gram: &[u8]) -> u64 {
    gram.iter()
        .fold(0, |key, &b| key << 8 | u64::from(b.to_ascii_lowercase()))
        | OCCUPIED
}
