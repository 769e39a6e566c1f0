//! GPT-2 byte-level BPE over one pre-tokenized word, as llama.cpp's
//! `llm_tokenizer_bpe_session`: bytes become GPT-2 characters, then the adjacent pair with
//! the lowest merge rank is merged (leftmost first on ties) until no pair has a rank.
//! Symbols are interned ids, so a merge is a pair lookup instead of string concatenation.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::vocab::{PairMap, StrTable};

const NIL: u32 = u32::MAX;

/// Words up to this many bytes use the quadratic scan, which beats a heap on short words.
const SHORT_WORD: usize = 48;

pub(crate) struct BpeModel {
    pub merges: PairMap,
    /// The interned symbol of each byte's GPT-2 character.
    pub byte_sym: [u32; 256],
    /// The vocabulary token of each single raw byte, for unmergeable leftovers.
    pub single_byte_token: [Option<u32>; 256],
    pub ignore_merges: bool,
}

#[derive(Default)]
pub(crate) struct BpeScratch {
    ids: Vec<u32>,
    ranks: Vec<u32>,
    merged: Vec<u32>,
    syms: Vec<(u32, u32, u32)>,
    heap: BinaryHeap<(Reverse<u64>, u32, u32, u32)>,
    encoded: Vec<u8>,
}

impl BpeModel {
    /// Appends the tokens of `word` (raw UTF-8 bytes of one pre-tokenizer chunk).
    pub(crate) fn encode_word(
        &self,
        strings: &StrTable,
        n_vocab: u32,
        byte_char: &[u32; 256],
        word: &[u8],
        sc: &mut BpeScratch,
        out: &mut Vec<u32>,
    ) {
        if word.is_empty() {
            return;
        }
        if self.ignore_merges {
            sc.encoded.clear();
            for &b in word {
                let c = char::from_u32(byte_char[b as usize]).unwrap_or('\u{fffd}');
                let mut tmp = [0u8; 4];
                sc.encoded
                    .extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
            }
            if let Some(t) = strings.find(&sc.encoded) {
                if t < n_vocab {
                    out.push(t);
                    return;
                }
            }
        }
        if word.len() <= SHORT_WORD {
            self.merge_short(word, sc);
        } else {
            self.merge_heap(word, sc);
        }
        for &id in &sc.ids {
            if id < n_vocab {
                out.push(id);
            } else {
                // Not a token (a merge result missing from the vocabulary): llama.cpp then
                // looks up each byte of its GPT-2 text as a one-byte token, skipping misses.
                for &b in strings.get(id) {
                    if let Some(t) = self.single_byte_token[b as usize] {
                        out.push(t);
                    }
                }
            }
        }
    }

    #[inline]
    fn rank(&self, a: u32, b: u32) -> (u32, u32) {
        self.merges.get(a, b).unwrap_or((u32::MAX, NIL))
    }

    /// Scans all pairs for the lowest rank; ranks of untouched pairs are kept between merges.
    fn merge_short(&self, word: &[u8], sc: &mut BpeScratch) {
        sc.ids.clear();
        sc.ids
            .extend(word.iter().map(|&b| self.byte_sym[b as usize]));
        sc.ranks.clear();
        sc.merged.clear();
        for w in sc.ids.windows(2) {
            let (r, m) = self.rank(w[0], w[1]);
            sc.ranks.push(r);
            sc.merged.push(m);
        }
        loop {
            let mut best = u32::MAX;
            let mut at = 0;
            for (i, &r) in sc.ranks.iter().enumerate() {
                if r < best {
                    best = r;
                    at = i;
                }
            }
            if best == u32::MAX {
                break;
            }
            sc.ids[at] = sc.merged[at];
            sc.ids.remove(at + 1);
            sc.ranks.remove(at);
            sc.merged.remove(at);
            if at > 0 {
                let (r, m) = self.rank(sc.ids[at - 1], sc.ids[at]);
                sc.ranks[at - 1] = r;
                sc.merged[at - 1] = m;
            }
            if at + 1 < sc.ids.len() {
                let (r, m) = self.rank(sc.ids[at], sc.ids[at + 1]);
                sc.ranks[at] = r;
                sc.merged[at] = m;
            }
        }
    }

    /// llama.cpp's priority-queue merge loop, in O(n log n) for long words.
    fn merge_heap(&self, word: &[u8], sc: &mut BpeScratch) {
        let n = word.len() as u32;
        sc.syms.clear();
        for (i, &b) in word.iter().enumerate() {
            let i = i as u32;
            let prev = if i == 0 { NIL } else { i - 1 };
            let next = if i + 1 == n { NIL } else { i + 1 };
            sc.syms.push((self.byte_sym[b as usize], prev, next));
        }
        sc.heap.clear();
        for i in 1..n {
            self.push_pair(sc, i - 1, i);
        }
        while let Some((Reverse(key), right, lid, rid)) = sc.heap.pop() {
            let left = key as u32;
            let (l, r) = (sc.syms[left as usize], sc.syms[right as usize]);
            // Stale entries: a side was merged away, or grew since the pair was queued.
            if l.0 != lid || r.0 != rid || l.2 != right {
                continue;
            }
            let merged = self.rank(lid, rid).1;
            sc.syms[left as usize] = (merged, l.1, r.2);
            sc.syms[right as usize].0 = NIL;
            if r.2 != NIL {
                sc.syms[r.2 as usize].1 = left;
            }
            if l.1 != NIL {
                self.push_pair(sc, l.1, left);
            }
            if r.2 != NIL {
                self.push_pair(sc, left, r.2);
            }
        }
        sc.ids.clear();
        let mut i = 0;
        while i != NIL {
            let s = sc.syms[i as usize];
            sc.ids.push(s.0);
            i = s.2;
        }
    }

    #[inline]
    fn push_pair(&self, sc: &mut BpeScratch, left: u32, right: u32) {
        let a = sc.syms[left as usize].0;
        let b = sc.syms[right as usize].0;
        if let Some((rank, _)) = self.merges.get(a, b) {
            let key = ((rank as u64) << 32) | left as u64;
            sc.heap.push((Reverse(key), right, a, b));
        }
    }
}
