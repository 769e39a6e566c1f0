//! SentencePiece-style BPE as llama.cpp's `llm_tokenizer_spm_session`: the text (spaces
//! already escaped to U+2581) is split into UTF-8 characters, then the adjacent pair whose
//! concatenation is the vocabulary token with the highest score is merged (leftmost first
//! on ties) until no concatenation is a token. Leftover characters that are not tokens
//! become byte tokens `<0xXX>`.

use std::collections::BinaryHeap;

use super::unicode::utf8_len;
use super::vocab::StrTable;

const NIL: u32 = u32::MAX;

#[derive(Clone, Copy)]
struct Sym {
    start: u32,
    /// Byte length; 0 once merged into its left neighbour.
    len: u32,
    prev: u32,
    next: u32,
    /// The token this symbol is, when known from a merge.
    token: u32,
}

/// A candidate merge. The heap orders by `key` alone: highest score first, then the
/// leftmost pair (llama.cpp's `llm_bigram_spm::comparator`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Bigram {
    /// Score as order-preserving bits in the high half, bit-inverted left index below.
    key: u64,
    right: u32,
    size: u32,
    token: u32,
}

/// Maps a score to bits that sort like the number. -0.0 counts as +0.0, as `<` does.
#[inline]
fn score_bits(score: f32) -> u32 {
    let b = (score + 0.0).to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

#[derive(Default)]
pub(crate) struct SpmScratch {
    syms: Vec<Sym>,
    heap: BinaryHeap<Bigram>,
}

pub(crate) struct SpmModel<'a> {
    pub strings: &'a StrTable,
    pub n_vocab: u32,
    pub scores: &'a [f32],
    pub byte_token: &'a [Option<u32>; 256],
}

impl SpmModel<'_> {
    /// Appends the tokens of `text`. `Err(byte)` when a character is not in the vocabulary
    /// and neither is a byte token for one of its bytes (llama.cpp throws there).
    pub(crate) fn encode(
        &self,
        text: &[u8],
        sc: &mut SpmScratch,
        out: &mut Vec<u32>,
    ) -> Result<(), u8> {
        if text.is_empty() {
            return Ok(());
        }
        sc.syms.clear();
        let mut offs = 0usize;
        while offs < text.len() {
            let n = utf8_len(text[offs]).min(text.len() - offs);
            let index = sc.syms.len() as u32;
            sc.syms.push(Sym {
                start: offs as u32,
                len: n as u32,
                prev: if index == 0 { NIL } else { index - 1 },
                next: if offs + n == text.len() {
                    NIL
                } else {
                    index + 1
                },
                token: NIL,
            });
            offs += n;
        }
        sc.heap.clear();
        for i in 1..sc.syms.len() as u32 {
            self.try_add(text, sc, i - 1, i);
        }
        while let Some(b) = sc.heap.pop() {
            let left = !(b.key as u32);
            let l = sc.syms[left as usize];
            let r = sc.syms[b.right as usize];
            if l.len == 0 || r.len == 0 || l.len + r.len != b.size {
                continue;
            }
            let s = &mut sc.syms[left as usize];
            s.len += r.len;
            s.next = r.next;
            s.token = b.token;
            sc.syms[b.right as usize].len = 0;
            if r.next != NIL {
                sc.syms[r.next as usize].prev = left;
            }
            if l.prev != NIL {
                self.try_add(text, sc, l.prev, left);
            }
            if r.next != NIL {
                self.try_add(text, sc, left, r.next);
            }
        }
        let mut i = 0u32;
        while i != NIL {
            let s = sc.syms[i as usize];
            let piece = &text[s.start as usize..(s.start + s.len) as usize];
            let token = if s.token != NIL {
                Some(s.token)
            } else {
                self.strings.find(piece).filter(|&t| t < self.n_vocab)
            };
            match token {
                Some(t) => out.push(t),
                None => {
                    for &b in piece {
                        out.push(self.byte_token[b as usize].ok_or(b)?);
                    }
                }
            }
            i = s.next;
        }
        Ok(())
    }

    #[inline]
    fn try_add(&self, text: &[u8], sc: &mut SpmScratch, left: u32, right: u32) {
        let l = sc.syms[left as usize];
        let r = sc.syms[right as usize];
        let start = l.start as usize;
        let end = (r.start + r.len) as usize;
        let Some(token) = self.strings.find(&text[start..end]) else {
            return;
        };
        if token >= self.n_vocab {
            return;
        }
        sc.heap.push(Bigram {
            key: ((score_bits(self.scores[token as usize]) as u64) << 32) | !left as u64,
            right,
            size: (end - start) as u32,
            token,
        });
    }
}
