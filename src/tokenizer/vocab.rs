//! Byte-string interning and lookup tables built once at load: one arena for every token
//! text (262k Gemma tokens are a few MB copied once, not 262k allocations) with an
//! open-addressing index, and a map from adjacent symbol pairs to BPE merges.

const EMPTY: u32 = u32::MAX;

#[inline]
pub(crate) fn hash_bytes(s: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = (s.len() as u64).wrapping_mul(K);
    let mut chunks = s.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = (h.rotate_left(23) ^ w).wrapping_mul(K);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut buf = [0u8; 8];
        buf[..rest.len()].copy_from_slice(rest);
        h = (h.rotate_left(23) ^ u64::from_le_bytes(buf)).wrapping_mul(K);
    }
    fmix64(h)
}

/// MurmurHash3's finalizer: every input bit reaches every output bit, so both the slot
/// (low bits) and the tag (high bits) are usable.
#[inline]
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// A `Hasher` for byte-string keys of per-call caches, using [`hash_bytes`].
#[derive(Default)]
pub(crate) struct BytesHasher(u64);

impl std::hash::Hasher for BytesHasher {
    fn write(&mut self, b: &[u8]) {
        self.0 = self.0.rotate_left(17) ^ hash_bytes(b);
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = self.0.rotate_left(17) ^ n as u64;
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type BytesMap<'a, V> =
    std::collections::HashMap<&'a [u8], V, std::hash::BuildHasherDefault<BytesHasher>>;

/// Interned byte strings with ids in insertion order.
pub(crate) struct StrTable {
    arena: Vec<u8>,
    /// `offsets[i]..offsets[i + 1]` is string `i`.
    offsets: Vec<u32>,
    /// (id, upper hash bits) per slot; a power-of-two count kept at most half full.
    slots: Vec<(u32, u32)>,
    /// A Bloom filter (two bits per string, sized at creation): small enough to stay in
    /// cache, it answers most failed lookups without touching `slots`.
    filter: Vec<u64>,
}

impl StrTable {
    pub(crate) fn heap_bytes(&self) -> usize {
        use crate::heap::vec_bytes;
        vec_bytes(&self.arena)
            + vec_bytes(&self.offsets)
            + vec_bytes(&self.slots)
            + vec_bytes(&self.filter)
    }

    /// Drops the unused capacity of the text and offsets (the index is sized by count).
    pub(crate) fn shrink_to_fit(&mut self) {
        self.arena.shrink_to_fit();
        self.offsets.shrink_to_fit();
    }

    pub(crate) fn with_capacity(n: usize, bytes: usize) -> StrTable {
        let mut t = StrTable {
            arena: Vec::with_capacity(bytes),
            offsets: Vec::with_capacity(n + 1),
            slots: Vec::new(),
            filter: vec![0u64; (n * 8).next_power_of_two().max(64) / 64],
        };
        t.offsets.push(0);
        t.resize_slots((n * 2).next_power_of_two().max(16));
        t
    }

    /// Interns `strings` in order, ids 0.., building the index in slot order so that a
    /// 262k-entry vocabulary does not pay a cache miss per token. `Err((first, second))`
    /// names two equal strings; `Err((u32::MAX, _))` means the text passes 4 GiB.
    pub(crate) fn from_strings<'a>(
        strings: impl Iterator<Item = &'a [u8]>,
        n: usize,
    ) -> Result<StrTable, (u32, u32)> {
        let mut t = StrTable::with_capacity(n, n * 8);
        t.slots.clear();
        let mut hashes = Vec::with_capacity(n);
        for s in strings {
            let end = u32::try_from(t.arena.len() + s.len()).map_err(|_| (EMPTY, 0))?;
            t.arena.extend_from_slice(s);
            t.offsets.push(end);
            hashes.push(hash_bytes(s));
        }
        let n = hashes.len();
        let size = (n * 2).next_power_of_two().max(16);
        t.slots = vec![(EMPTY, 0); size];
        let mask = size - 1;
        // Counting sort of the ids by the top bits of their home slot.
        const BUCKET_BITS: u32 = 12;
        let shift = (size.trailing_zeros()).saturating_sub(BUCKET_BITS);
        let nb = (size >> shift).max(1);
        let mut starts = vec![0u32; nb + 1];
        for &h in &hashes {
            starts[((h as usize & mask) >> shift) + 1] += 1;
        }
        for b in 0..nb {
            starts[b + 1] += starts[b];
        }
        let mut order = vec![(0u64, 0u32); n];
        for (id, &h) in hashes.iter().enumerate() {
            let b = (h as usize & mask) >> shift;
            order[starts[b] as usize] = (h, id as u32);
            starts[b] += 1;
        }
        drop(hashes);
        let bits = t.filter.len() * 64;
        for &(h, id) in &order {
            let tag = (h >> 32) as u32;
            let mut i = h as usize & mask;
            loop {
                let (other, ot) = t.slots[i];
                if other == EMPTY {
                    break;
                }
                if ot == tag && t.get(other) == t.get(id) {
                    return Err((other.min(id), other.max(id)));
                }
                i = (i + 1) & mask;
            }
            t.slots[i] = (id, tag);
            for b in filter_bits(h, bits) {
                t.filter[b / 64] |= 1 << (b % 64);
            }
        }
        Ok(t)
    }

    pub(crate) fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    #[inline]
    pub(crate) fn get(&self, id: u32) -> &[u8] {
        let i = id as usize;
        &self.arena[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    pub(crate) fn arena_bytes(&self) -> usize {
        self.arena.len()
    }

    fn resize_slots(&mut self, n: usize) {
        self.slots = vec![(EMPTY, 0); n];
        let mask = n - 1;
        for id in 0..self.len() as u32 {
            let h = hash_bytes(self.get(id));
            let mut i = h as usize & mask;
            while self.slots[i].0 != EMPTY {
                i = (i + 1) & mask;
            }
            self.slots[i] = (id, (h >> 32) as u32);
        }
    }

    /// The id of `s`, if interned, asking the Bloom filter first.
    #[inline]
    pub(crate) fn find(&self, s: &[u8]) -> Option<u32> {
        let h = hash_bytes(s);
        let bits = self.filter.len() * 64;
        for b in filter_bits(h, bits) {
            if self.filter[b / 64] & (1 << (b % 64)) == 0 {
                return None;
            }
        }
        let tag = (h >> 32) as u32;
        let mask = self.slots.len() - 1;
        let mut i = h as usize & mask;
        loop {
            let (id, t) = self.slots[i];
            if id == EMPTY {
                return None;
            }
            if t == tag && self.get(id) == s {
                return Some(id);
            }
            i = (i + 1) & mask;
        }
    }

    /// Adds `s` and returns its id; `Err(existing id)` if it is already there, and
    /// `Err(u32::MAX)` if the text would pass 4 GiB.
    pub(crate) fn insert(&mut self, s: &[u8]) -> Result<u32, u32> {
        if self.len() * 2 >= self.slots.len() {
            self.resize_slots(self.slots.len() * 2);
        }
        let h = hash_bytes(s);
        let tag = (h >> 32) as u32;
        let mask = self.slots.len() - 1;
        let mut i = h as usize & mask;
        loop {
            let (id, t) = self.slots[i];
            if id == EMPTY {
                break;
            }
            if t == tag && self.get(id) == s {
                return Err(id);
            }
            i = (i + 1) & mask;
        }
        let end = self.arena.len() + s.len();
        let Ok(end32) = u32::try_from(end) else {
            return Err(EMPTY);
        };
        let id = self.len() as u32;
        self.arena.extend_from_slice(s);
        self.offsets.push(end32);
        self.slots[i] = (id, tag);
        let bits = self.filter.len() * 64;
        for b in filter_bits(h, bits) {
            self.filter[b / 64] |= 1 << (b % 64);
        }
        Ok(id)
    }

    /// Interns `s`, returning its id whether new or not (`None` past 4 GiB of text).
    pub(crate) fn intern(&mut self, s: &[u8]) -> Option<u32> {
        match self.insert(s) {
            Ok(id) => Some(id),
            Err(EMPTY) => None,
            Err(id) => Some(id),
        }
    }
}

#[inline]
fn filter_bits(h: u64, bits: usize) -> [usize; 2] {
    // Bits 20..40 and 40..60: independent of the slot index (low bits) after fmix64.
    [
        ((h >> 20) as usize) & (bits - 1),
        ((h >> 40) as usize) & (bits - 1),
    ]
}

/// BPE merges: (left symbol, right symbol) -> (rank, merged symbol).
pub(crate) struct PairMap {
    /// (key, rank, merged); key `u64::MAX` marks an empty slot.
    slots: Vec<(u64, u32, u32)>,
    len: usize,
}

#[inline]
fn pair_key(a: u32, b: u32) -> u64 {
    ((a as u64) << 32) | b as u64
}

#[inline]
fn pair_slot(key: u64, mask: usize) -> usize {
    fmix64(key) as usize & mask
}

impl PairMap {
    pub(crate) fn heap_bytes(&self) -> usize {
        crate::heap::vec_bytes(&self.slots)
    }

    pub(crate) fn with_capacity(n: usize) -> PairMap {
        PairMap {
            slots: vec![(u64::MAX, 0, 0); (n * 2).next_power_of_two().max(16)],
            len: 0,
        }
    }

    /// Inserts unless the pair is present: like `std::unordered_map::emplace`, the first
    /// (lowest) rank of a duplicated merge wins.
    pub(crate) fn insert_first(&mut self, a: u32, b: u32, rank: u32, merged: u32) {
        if (self.len + 1) * 2 > self.slots.len() {
            let old = std::mem::take(&mut self.slots);
            self.slots = vec![(u64::MAX, 0, 0); old.len() * 2];
            self.len = 0;
            for (k, r, m) in old {
                if k != u64::MAX {
                    self.insert_first((k >> 32) as u32, k as u32, r, m);
                }
            }
        }
        let key = pair_key(a, b);
        let mask = self.slots.len() - 1;
        let mut i = pair_slot(key, mask);
        loop {
            let s = self.slots[i];
            if s.0 == u64::MAX {
                self.slots[i] = (key, rank, merged);
                self.len += 1;
                return;
            }
            if s.0 == key {
                return;
            }
            i = (i + 1) & mask;
        }
    }

    #[inline]
    pub(crate) fn get(&self, a: u32, b: u32) -> Option<(u32, u32)> {
        let key = pair_key(a, b);
        let mask = self.slots.len() - 1;
        let mut i = pair_slot(key, mask);
        loop {
            let s = self.slots[i];
            if s.0 == key {
                return Some((s.1, s.2));
            }
            if s.0 == u64::MAX {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn str_table_interns_and_finds() {
        let mut t = StrTable::with_capacity(2, 8);
        assert_eq!(t.insert(b"ab"), Ok(0));
        assert_eq!(t.insert(b""), Ok(1));
        assert_eq!(t.insert(b"ab"), Err(0));
        // Enough strings to grow the table several times from its capacity of 2.
        let n = crate::test_rounds(1000) as u32;
        for i in 0..n {
            let s = format!("tok{i}");
            assert_eq!(t.intern(s.as_bytes()), Some(i + 2));
        }
        assert_eq!(t.find(format!("tok{}", n - 1).as_bytes()), Some(n + 1));
        assert_eq!(t.find(b""), Some(1));
        assert_eq!(t.find(format!("tok{n}").as_bytes()), None);
        assert_eq!(t.get(n / 2), format!("tok{}", n / 2 - 2).as_bytes());
    }

    #[test]
    fn bulk_build_finds_everything_and_duplicates() {
        let n = crate::test_rounds(5000);
        let owned: Vec<String> = (0..n).map(|i| format!("w{i}")).collect();
        let t = StrTable::from_strings(owned.iter().map(|s| s.as_bytes()), owned.len()).unwrap();
        for (i, s) in owned.iter().enumerate() {
            assert_eq!(t.find(s.as_bytes()), Some(i as u32));
        }
        assert_eq!(t.find(format!("w{n}").as_bytes()), None);
        let dup = ["a", "b", "c", "b"];
        let e = StrTable::from_strings(dup.iter().map(|s| s.as_bytes()), 4).err();
        assert_eq!(e, Some((1, 3)));
    }

    #[test]
    fn pair_map_keeps_first_rank() {
        let mut m = PairMap::with_capacity(1);
        for i in 0..100 {
            m.insert_first(i, i + 1, i, 1000 + i);
        }
        m.insert_first(5, 6, 99, 7);
        assert_eq!(m.get(5, 6), Some((5, 1005)));
        assert_eq!(m.get(6, 5), None);
        assert_eq!(m.len(), 100);
    }
}
