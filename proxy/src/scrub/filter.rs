//! A sampling prefilter in front of the searcher: almost every response holds no secret, so
//! the common case must cost far less than a rolling-hash step per byte per pattern length.
//!
//! With `m ≤ (shortest pattern + 1) / 2`, every occurrence of a pattern contains a whole
//! "block" `[q, q + m)` with `q` a multiple of `m` (the pattern spans at least `2m - 1`
//! bytes). So the scan looks at one block per `m` bytes, checks whether it is an m-gram of some
//! pattern (a hash table of them, case-folded), and only around a block that is runs the
//! searcher, over `[q + m - max_len, q + max_len)`: every match containing that block lies
//! there. Matches are thus exactly those of a full scan; on a body without secrets the cost is
//! one table probe per `m` (up to 7) bytes instead of a search step per byte, whatever the
//! number of windows. Sparse candidates in base64 or hex text only widen the scanned regions.
//!
//! The table stores a 32-bit fingerprint of each m-gram, not the m-gram: half the memory (a
//! long value's windows have hundreds of thousands of m-grams), and a fingerprint collision
//! only makes the searcher scan one more region, never changes a match.

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
    /// For patterns of `min_len..=max_len` bytes, each a substring of one of `sources` (any
    /// case). The table holds the m-grams of the sources: those of the patterns and perhaps a
    /// few more (which only widen the scanned regions). The sources are a value's forms,
    /// ~16 times shorter than all its windows.
    pub(crate) fn new(sources: &[&[u8]], min_len: usize, max_len: usize) -> GramFilter {
        let m = min_len.div_ceil(2).clamp(1, MAX_BLOCK);
        let grams: usize = sources.iter().map(|p| p.len() + 1 - m.min(p.len())).sum();
        let slots = (grams * 2).next_power_of_two().max(16);
        let mut filter = GramFilter {
            m,
            max_len,
            table: Zeroizing::new(vec![0; slots]),
            shift: 64 - slots.trailing_zeros(),
        };
        for p in sources {
            let Some(first) = p.get(..m) else {
                continue;
            };
            // The next gram's key is this one's shifted down a byte, its last byte added on top.
            let mut key = pack(first) & !OCCUPIED;
            filter.insert(mix(key | OCCUPIED));
            for &b in p.get(m..).unwrap_or_default() {
                key = key >> 8 | u64::from(b.to_ascii_lowercase()) << (8 * (m - 1));
                filter.insert(mix(key | OCCUPIED));
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

    /// The regions of `haystack` the searcher must scan, sorted and disjoint, into `out`
    /// (cleared first): every pattern occurrence lies entirely inside one of them.
    pub(crate) fn regions(&self, haystack: &[u8], out: &mut Vec<(usize, usize)>) {
        out.clear();
        let (m, len) = (self.m, haystack.len());
        let keep = low_bytes(m);
        let mut q = 0;
        while q + m <= len {
            // One 8-byte load where the haystack allows it; `pack` at the tail. Both give the
            // same key: the block's `m` bytes, little-endian, folded to lower case.
            let key = match haystack.get(q..q + 8) {
                Some(word) => {
                    let mut bytes = [0u8; 8];
                    bytes.copy_from_slice(word);
                    lower_word(u64::from_le_bytes(bytes) & keep) | OCCUPIED
                }
                None => haystack.get(q..q + m).map_or(OCCUPIED, pack),
            };
            let block_start = q;
            q += m;
            if !self.contains(mix(key)) {
                continue;
            }
            let q = block_start;
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
pub(crate) fn mix(key: u64) -> u64 {
    let mut z = key;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Up to [`MAX_BLOCK`] bytes, little-endian, lower-cased, as one table key (never 0).
fn pack(gram: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    for (slot, &b) in bytes.iter_mut().zip(gram.iter().take(MAX_BLOCK)) {
        *slot = b;
    }
    lower_word(u64::from_le_bytes(bytes)) | OCCUPIED
}

/// A mask of the low `m` bytes of a word.
fn low_bytes(m: usize) -> u64 {
    match m {
        0 => 0,
        8.. => u64::MAX,
        m => (1u64 << (8 * m)) - 1,
    }
}

/// `to_ascii_lowercase` on each byte of a word at once: bytes `A`..=`Z` gain 0x20, every
/// other byte (non-ASCII included) is unchanged. Sums stay below 0x100 per byte, so no carry
/// crosses into a neighbour.
fn lower_word(x: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let h = x & LOW7;
    let at_least_a = h + 0x3f3f_3f3f_3f3f_3f3f; // high bit: h >= b'A'
    let above_z = h + 0x2525_2525_2525_2525; // high bit: h > b'Z'
    let upper = at_least_a & !above_z & !x & HIGH;
    x | (upper >> 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_lowering_matches_byte_lowering_for_every_byte_in_every_position() {
        for position in 0..8 {
            for b in 0..=255u8 {
                let mut bytes = [b'X'; 8];
                bytes[position] = b;
                let expected = bytes.map(|b| b.to_ascii_lowercase());
                assert_eq!(
                    lower_word(u64::from_le_bytes(bytes)).to_le_bytes(),
                    expected,
                    "byte {b:#04x} at {position}"
                );
            }
        }
    }

    #[test]
    fn a_loaded_block_has_the_key_of_its_packed_gram() {
        let text = b"Hello-World_0123456789abcdefXYZ\xff\x80tail";
        for m in 1..=MAX_BLOCK {
            for q in 0..text.len() - m {
                let gram = &text[q..q + m];
                if let Some(word) = text.get(q..q + 8) {
                    let mut bytes = [0u8; 8];
                    bytes.copy_from_slice(word);
                    let loaded = lower_word(u64::from_le_bytes(bytes) & low_bytes(m)) | OCCUPIED;
                    assert_eq!(loaded, pack(gram), "m {m} at {q}");
                }
            }
        }
    }
}
