//! The in-memory layout of quantized activations, and the scalar quantizers that define it.
//!
//! Activations are quantized once per matrix product into caller-provided scratch, so
//! their layout is ember's own choice (unlike the weights, which are ggml blocks in the
//! file). The integers and scales are exactly ggml's (`quantize_row_q8_0`,
//! `quantize_row_q8_K`, rounding to nearest-even as ggml's SIMD paths do); what differs is
//! the arrangement, chosen so the SIMD kernels load what they need without shuffling:
//!
//! * scales are f32 (Q8 keeps ggml's f16-rounded value, converted once here, not per use);
//! * each 32-block carries `s = d * sum(q)` exactly, which turns the `-8`/`-16` offset of
//!   Q4_0/Q5_0 and the minimum of Q4_1/Q5_1 into one multiply-add per block;
//! * tokens come in groups of [`GROUP`], interleaved 4 bytes at a time, so a prefill
//!   kernel multiplies 4 weights by the same 4 elements of several tokens in one
//!   instruction (`lanes = tokens`), never reducing horizontally. Tokens left over after
//!   the last whole group use the single-token layout.
//!
//! Q8 (32-element blocks, for Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 IQ4_NL), per token, `nb = k / 32`:
//!   `[(d: f32, s: f32); nb]` then `[q: i8; k]`                         = 40 bytes per block
//! Q8 group of 4 tokens:
//!   `[(d: [f32; 4], s: [f32; 4]); nb]` then per block 128 bytes of quants: 8 chunks of
//!   16 bytes, chunk `c` holding element group `g = PERM[c]` (elements `4g..4g+4`) of
//!   tokens 0..4 in turn                                               = 4 × 40 bytes per block
//! Q8K (256-element blocks, for the k-quants and IQ4_XS), per token, `nb = k / 256`:
//!   `[d: f32; nb]`, `[bsum: i16; 16 * nb]` (sums of 16 quants), `[q: i8; k]` = 292 bytes per block
//! Q8K group of 4 tokens:
//!   `[d: [f32; 4]; nb]`, then per block 128 bytes of sums ordered `[pair i: 8][token: 4][2]`
//!   (the sums of 16-groups `2i` and `2i+1` of one token side by side), then per block
//!   eight 32-element sub-blocks interleaved like a Q8 block              = 4 × 292 bytes per block
//!
//! `PERM = [0, 4, 1, 5, 2, 6, 3, 7]` puts groups `j` and `j + 4` (elements `4j..` and
//! `16 + 4j..`) in one 32-byte chunk: the low and high 128-bit halves of an AVX2 register,
//! matching how a 32-byte block of weights splits into halves.

use half::f16;

use super::ActFormat;
use crate::quant::{QK, QK_K};

/// Tokens per interleaved group.
pub const GROUP: usize = 4;
/// Chunk order of 4-element groups in an interleaved 32-element block.
pub const PERM: [usize; 8] = [0, 4, 1, 5, 2, 6, 3, 7];
/// Bytes per 32-element block per token in the Q8 layout.
pub const Q8_BLOCK: usize = 40;
/// Bytes per 256-element block per token in the Q8K layout.
pub const Q8K_BLOCK: usize = 292;

/// Bytes of one token's activations of `k` elements.
pub fn row_bytes(fmt: ActFormat, k: usize) -> usize {
    match fmt {
        ActFormat::F32 => k * 4,
        ActFormat::Q8_0 | ActFormat::Q8_1 => k / QK * Q8_BLOCK,
        ActFormat::Q8K => k / QK_K * Q8K_BLOCK,
    }
}

/// Number of whole groups and of left-over single tokens for `n_tok` tokens.
pub fn split_tokens(n_tok: usize) -> (usize, usize) {
    if n_tok == 1 {
        (0, 1)
    } else {
        (n_tok / GROUP, n_tok % GROUP)
    }
}

/// Index of the chunk holding element group `g` (inverse of [`PERM`]).
#[inline(always)]
pub fn chunk_of(g: usize) -> usize {
    (g % 4) * 2 + g / 4
}

/// Quantizes 32 values as ggml's Q8_0 does: (f16-rounded scale as f32, exact
/// `scale * sum(q)`, quants).
#[inline]
pub fn q8_block(x: &[f32]) -> (f32, f32, [i8; QK]) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut q = [0i8; QK];
    let mut sum = 0i32;
    for (q, &v) in q.iter_mut().zip(x) {
        *q = (v * id).round_ties_even() as i8;
        sum += *q as i32;
    }
    let d = f16::from_f32(d).to_f32();
    (d, d * sum as f32, q)
}

/// Quantizes 256 values as ggml's Q8_K does: (scale, quants, sums of 16).
#[inline]
pub fn q8k_block(x: &[f32]) -> (f32, [i8; QK_K], [i16; 16]) {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    let mut q = [0i8; QK_K];
    let mut sums = [0i16; 16];
    if amax == 0.0 {
        return (0.0, q, sums);
    }
    // The sign of the largest element picks the direction so it maps to -127/+127 as ggml does.
    let iscale = -127.0 / max;
    for (q, &v) in q.iter_mut().zip(x) {
        *q = ((iscale * v).round_ties_even() as i32).min(127) as i8;
    }
    for (s, g) in sums.iter_mut().zip(q.chunks_exact(16)) {
        *s = g.iter().map(|&v| v as i16).sum();
    }
    (1.0 / iscale, q, sums)
}

fn put_f32(out: &mut [u8], i: usize, v: f32) {
    out[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_i16(out: &mut [u8], i: usize, v: i16) {
    out[2 * i..2 * i + 2].copy_from_slice(&v.to_le_bytes());
}

/// Quantizes one token (`x.len() == k`) or one group (`x.len() == GROUP * k`, `group`)
/// into `out` in the layout above. The scalar twin of every SIMD quantizer.
pub fn quantize_scalar(fmt: ActFormat, x: &[f32], k: usize, group: bool, out: &mut [u8]) {
    let nt = if group { GROUP } else { 1 };
    assert!(x.len() == nt * k && out.len() >= nt * row_bytes(fmt, k));
    match fmt {
        ActFormat::F32 => {
            for (o, v) in out.chunks_exact_mut(4).zip(x) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        ActFormat::Q8_0 | ActFormat::Q8_1 => {
            let nb = k / QK;
            let (ds, qs) = out.split_at_mut(nb * 8 * nt);
            for b in 0..nb {
                for t in 0..nt {
                    let (d, s, q) = q8_block(&x[t * k + b * QK..t * k + (b + 1) * QK]);
                    if group {
                        put_f32(ds, b * 8 + t, d);
                        put_f32(ds, b * 8 + 4 + t, s);
                        let blk = &mut qs[b * 128..(b + 1) * 128];
                        for (e, &v) in q.iter().enumerate() {
                            blk[chunk_of(e / 4) * 16 + t * 4 + e % 4] = v as u8;
                        }
                    } else {
                        put_f32(ds, 2 * b, d);
                        put_f32(ds, 2 * b + 1, s);
                        for (o, &v) in qs[b * QK..(b + 1) * QK].iter_mut().zip(&q) {
                            *o = v as u8;
                        }
                    }
                }
            }
        }
        ActFormat::Q8K => {
            let nb = k / QK_K;
            let (dsec, rest) = out.split_at_mut(nb * 4 * nt);
            let (bsec, qs) = rest.split_at_mut(nb * 32 * nt);
            for b in 0..nb {
                for t in 0..nt {
                    let (d, q, sums) = q8k_block(&x[t * k + b * QK_K..t * k + (b + 1) * QK_K]);
                    if group {
                        put_f32(dsec, b * 4 + t, d);
                        for (g, &s) in sums.iter().enumerate() {
                            put_i16(bsec, b * 64 + (g / 2) * 8 + t * 2 + g % 2, s);
                        }
                        let blk = &mut qs[b * 1024..(b + 1) * 1024];
                        for (e, &v) in q.iter().enumerate() {
                            let (sb, e) = (e / 32, e % 32);
                            blk[sb * 128 + chunk_of(e / 4) * 16 + t * 4 + e % 4] = v as u8;
                        }
                    } else {
                        put_f32(dsec, b, d);
                        for (g, &s) in sums.iter().enumerate() {
                            put_i16(bsec, b * 16 + g, s);
                        }
                        for (o, &v) in qs[b * QK_K..(b + 1) * QK_K].iter_mut().zip(&q) {
                            *o = v as u8;
                        }
                    }
                }
            }
        }
    }
}

fn get_f32(b: &[u8], i: usize) -> f32 {
    f32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
}

fn get_i16(b: &[u8], i: usize) -> i16 {
    i16::from_le_bytes([b[2 * i], b[2 * i + 1]])
}

/// Read access to one token of a quantized Q8 activation, in either layout. The scalar
/// kernels read through this so they work on single tokens and groups alike.
#[derive(Clone, Copy)]
pub struct Q8View<'a> {
    ds: &'a [u8],
    qs: &'a [u8],
    /// `None` for the single-token layout, else the token within its group.
    tok: Option<usize>,
}

impl<'a> Q8View<'a> {
    pub fn single(act: &'a [u8], k: usize) -> Self {
        let (ds, qs) = act.split_at(k / QK * 8);
        Q8View { ds, qs, tok: None }
    }

    pub fn in_group(act: &'a [u8], k: usize, t: usize) -> Self {
        let (ds, qs) = act.split_at(k / QK * 8 * GROUP);
        Q8View {
            ds,
            qs,
            tok: Some(t),
        }
    }

    pub fn d(&self, b: usize) -> f32 {
        match self.tok {
            None => get_f32(self.ds, 2 * b),
            Some(t) => get_f32(self.ds, b * 8 + t),
        }
    }

    pub fn s(&self, b: usize) -> f32 {
        match self.tok {
            None => get_f32(self.ds, 2 * b + 1),
            Some(t) => get_f32(self.ds, b * 8 + 4 + t),
        }
    }

    pub fn qs(&self, b: usize) -> [i8; QK] {
        let mut q = [0i8; QK];
        match self.tok {
            None => {
                for (o, &v) in q.iter_mut().zip(&self.qs[b * QK..(b + 1) * QK]) {
                    *o = v as i8;
                }
            }
            Some(t) => {
                let blk = &self.qs[b * 128..(b + 1) * 128];
                for (e, o) in q.iter_mut().enumerate() {
                    *o = blk[chunk_of(e / 4) * 16 + t * 4 + e % 4] as i8;
                }
            }
        }
        q
    }
}

/// Read access to one token of a quantized Q8K activation, in either layout.
#[derive(Clone, Copy)]
pub struct Q8KView<'a> {
    d: &'a [u8],
    bsums: &'a [u8],
    qs: &'a [u8],
    tok: Option<usize>,
}

impl<'a> Q8KView<'a> {
    pub fn single(act: &'a [u8], k: usize) -> Self {
        let nb = k / QK_K;
        let (d, rest) = act.split_at(nb * 4);
        let (bsums, qs) = rest.split_at(nb * 32);
        Q8KView {
            d,
            bsums,
            qs,
            tok: None,
        }
    }

    pub fn in_group(act: &'a [u8], k: usize, t: usize) -> Self {
        let nb = k / QK_K;
        let (d, rest) = act.split_at(nb * 4 * GROUP);
        let (bsums, qs) = rest.split_at(nb * 32 * GROUP);
        Q8KView {
            d,
            bsums,
            qs,
            tok: Some(t),
        }
    }

    pub fn d(&self, b: usize) -> f32 {
        match self.tok {
            None => get_f32(self.d, b),
            Some(t) => get_f32(self.d, b * 4 + t),
        }
    }

    pub fn bsums(&self, b: usize) -> [i16; 16] {
        let mut s = [0i16; 16];
        for (g, o) in s.iter_mut().enumerate() {
            *o = match self.tok {
                None => get_i16(self.bsums, b * 16 + g),
                Some(t) => get_i16(self.bsums, b * 64 + (g / 2) * 8 + t * 2 + g % 2),
            };
        }
        s
    }

    pub fn qs(&self, b: usize) -> [i8; QK_K] {
        let mut q = [0i8; QK_K];
        match self.tok {
            None => {
                for (o, &v) in q.iter_mut().zip(&self.qs[b * QK_K..(b + 1) * QK_K]) {
                    *o = v as i8;
                }
            }
            Some(t) => {
                let blk = &self.qs[b * 1024..(b + 1) * 1024];
                for (e, o) in q.iter_mut().enumerate() {
                    let (sb, e) = (e / 32, e % 32);
                    *o = blk[sb * 128 + chunk_of(e / 4) * 16 + t * 4 + e % 4] as i8;
                }
            }
        }
        q
    }
}
