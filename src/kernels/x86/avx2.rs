//! AVX2 + FMA + F16C kernels (Haswell and later, Zen and later).
//!
//! Integer dot products use `vpmaddubsw` (unsigned 8-bit weights × signed 8-bit
//! activations → pairs summed in 16 bits) and `vpmaddwd` (→ 32 bits), as ggml does. Two
//! shapes of inner loop:
//!
//! * matrix-vector (decode): lanes hold consecutive elements of one row; each block's
//!   integer sums are converted and scaled once, and the row is reduced horizontally once.
//!   Offsets (Q4_0's -8, Q5_0's -16) and minimums (Q4_1, Q5_1, k-quants) never touch the
//!   integer loop: they are applied through the activation block sums.
//! * groups (prefill): lanes hold tokens. `vpshufd` broadcasts 4 weights of a block to
//!   every lane of a 128-bit half, and the interleaved activation layout (see `act`) puts
//!   the same 4 elements of 4 tokens there, so one `vpmaddubsw` serves 4 tokens × 2
//!   element groups and nothing is reduced across lanes until the row ends.
//!
//! Safety: every function here requires AVX2, FMA and F16C. They are reachable only
//! through the `AVX2` table, which `x86::available` returns only after runtime detection.
//! Pointer arithmetic stays inside slices whose lengths the safe wrappers check first.

use std::arch::x86_64::*;
use std::ptr::read_unaligned;

use half::f16;

use super::super::act::{self, GROUP, Q8K_BLOCK, Q8_BLOCK};
use super::super::ActFormat;
use crate::quant::{iq4xs_scales, GgmlType, KVALUES_IQ4NL, QK, QK_K};

// ---------------------------------------------------------------------------------------
// Small helpers

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn hsum_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01));
    _mm_cvtsi128_si32(s)
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn load256(p: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 32 readable bytes at `p`; unaligned loads are allowed.
    unsafe { _mm256_loadu_si256(p.cast()) }
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn load128(p: *const u8) -> __m128i {
    // SAFETY: the caller guarantees 16 readable bytes at `p`.
    unsafe { _mm_loadu_si128(p.cast()) }
}

/// Two f16 at `p` as `[a, b, 0, 0]`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn f16x2(p: *const u8) -> __m128 {
    // SAFETY: the caller guarantees 4 readable bytes at `p`.
    let v = unsafe { read_unaligned(p.cast::<i32>()) };
    _mm_cvtph_ps(_mm_cvtsi32_si128(v))
}

/// One f16 at `p`, in every lane.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn f16x1(p: *const u8) -> __m128 {
    // SAFETY: the caller guarantees 2 readable bytes at `p`.
    let v = unsafe { read_unaligned(p.cast::<i16>()) };
    _mm_cvtph_ps(_mm_set1_epi16(v))
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn f32_at(p: *const u8) -> f32 {
    // SAFETY: the caller guarantees 4 readable bytes at `p`.
    unsafe { read_unaligned(p.cast::<f32>()) }
}

/// Four f32 at `p` repeated in both 128-bit halves.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn f32x4_dup(p: *const u8) -> __m256 {
    // SAFETY: the caller guarantees 16 readable bytes at `p`.
    unsafe { _mm256_broadcast_ps(&*(p.cast::<__m128>())) }
}

/// 32 bits of `qh` spread to 32 bytes: 0x10 where the bit is set (the Q5 fifth bit).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn bits_to_0x10(qh: u32) -> __m256i {
    let t = _mm256_set1_epi32(qh as i32);
    let shuf = _mm256_set_epi64x(
        0x0303_0303_0303_0303,
        0x0202_0202_0202_0202,
        0x0101_0101_0101_0101,
        0,
    );
    let t = _mm256_shuffle_epi8(t, shuf);
    let t = _mm256_or_si256(t, _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe));
    let t = _mm256_cmpeq_epi8(t, _mm256_set1_epi64x(-1));
    _mm256_and_si256(t, _mm256_set1_epi8(0x10))
}

/// 16 bytes of packed nibbles to 32 bytes: low nibbles, then high nibbles.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn nibbles(p: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 16 readable bytes at `p`.
    let v = _mm256_broadcastsi128_si256(unsafe { load128(p) });
    // Shifting 32-bit lanes moves each byte's high nibble down; the mask drops the bits
    // that crossed from the neighbouring byte.
    let v = _mm256_srlv_epi32(v, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
    _mm256_and_si256(v, _mm256_set1_epi8(0x0F))
}

// ---------------------------------------------------------------------------------------
// Legacy 32-element block types

/// A 32-element weight block as the kernels see it.
trait Leg {
    const TY: GgmlType;
    const BYTES: usize;
    /// Multiplies the activation block sum term: -8 (Q4_0), -16 (Q5_0), 1 (minimum
    /// types, whose `dm` lane 1 is the minimum), 0 (Q8_0).
    const MIN_MUL: f32;
    /// Whether `unpack` gives signed values (Q8_0, IQ4_NL) rather than unsigned ones.
    const SIGNED: bool;
    /// Whether prefill unpacks rows once into the scratch tile: worth it where unpacking
    /// costs more than a load (every type but Q8_0).
    const SCRATCH: bool = true;
    /// `[d, m, ..]` for minimum types, `[d, d, ..]` otherwise.
    unsafe fn dm(p: *const u8) -> __m128;
    /// The 32 quants in element order.
    unsafe fn unpack(p: *const u8) -> __m256i;
}

struct Q4_0;
struct Q4_1;
struct Q5_0;
struct Q5_1;
struct Q8_0;
struct IQ4NL;

impl Leg for Q4_0 {
    const TY: GgmlType = GgmlType::Q4_0;
    const BYTES: usize = 18;
    const MIN_MUL: f32 = -8.0;
    const SIGNED: bool = false;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn dm(p: *const u8) -> __m128 {
        // SAFETY: a block starts with its f16 scale.
        unsafe { f16x1(p) }
    }
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn unpack(p: *const u8) -> __m256i {
        // SAFETY: 16 bytes of quants follow the scale inside the block.
        unsafe { nibbles(p.add(2)) }
    }
}

impl Leg for Q4_1 {
    const TY: GgmlType = GgmlType::Q4_1;
    const BYTES: usize = 20;
    const MIN_MUL: f32 = 1.0;
    const SIGNED: bool = false;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn dm(p: *const u8) -> __m128 {
        // SAFETY: d and m are the block's first 4 bytes.
        unsafe { f16x2(p) }
    }
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn unpack(p: *const u8) -> __m256i {
        // SAFETY: 16 bytes of quants at offset 4 inside the block.
        unsafe { nibbles(p.add(4)) }
    }
}

impl Leg for Q5_0 {
    const TY: GgmlType = GgmlType::Q5_0;
    const BYTES: usize = 22;
    const MIN_MUL: f32 = -16.0;
    const SIGNED: bool = false;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn dm(p: *const u8) -> __m128 {
        // SAFETY: a block starts with its f16 scale.
        unsafe { f16x1(p) }
    }
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn unpack(p: *const u8) -> __m256i {
        // SAFETY: qh at offset 2, 16 bytes of quants at offset 6, inside the block.
        unsafe {
            let qh = read_unaligned(p.add(2).cast::<u32>());
            _mm256_or_si256(nibbles(p.add(6)), bits_to_0x10(qh))
        }
    }
}

impl Leg for Q5_1 {
    const TY: GgmlType = GgmlType::Q5_1;
    const BYTES: usize = 24;
    const MIN_MUL: f32 = 1.0;
    const SIGNED: bool = false;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn dm(p: *const u8) -> __m128 {
        // SAFETY: d and m are the block's first 4 bytes.
        unsafe { f16x2(p) }
    }
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn unpack(p: *const u8) -> __m256i {
        // SAFETY: qh at offset 4, 16 bytes of quants at offset 8, inside the block.
        unsafe {
            let qh = read_unaligned(p.add(4).cast::<u32>());
            _mm256_or_si256(nibbles(p.add(8)), bits_to_0x10(qh))
        }
    }
}

impl Leg for Q8_0 {
    const TY: GgmlType = GgmlType::Q8_0;
    const BYTES: usize = 34;
    const MIN_MUL: f32 = 0.0;
    const SIGNED: bool = true;
    const SCRATCH: bool = false;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn dm(p: *const u8) -> __m128 {
        // SAFETY: a block starts with its f16 scale.
        unsafe { f16x1(p) }
    }
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn unpack(p: *const u8) -> __m256i {
        // SAFETY: 32 quants at offset 2 inside the block.
        unsafe { load256(p.add(2)) }
    }
}

/// The 16 IQ4_NL values in both 128-bit halves, for `vpshufb` lookups.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn iq4_table() -> __m256i {
    // SAFETY: the table is 16 bytes.
    _mm256_broadcastsi128_si256(unsafe { load128(KVALUES_IQ4NL.as_ptr().cast()) })
}

/// 16 bytes of IQ4_NL indices (an IQ4_NL block's, or one IQ4_XS group's) to their 32
/// signed values in element order: one `vpshufb` of the unpacked nibbles.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn iq4_values(p: *const u8) -> __m256i {
    // SAFETY: 16 readable bytes at `p` (caller).
    _mm256_shuffle_epi8(unsafe { iq4_table() }, unsafe { nibbles(p) })
}

impl Leg for IQ4NL {
    const TY: GgmlType = GgmlType::IQ4_NL;
    const BYTES: usize = 18;
    const MIN_MUL: f32 = 0.0;
    const SIGNED: bool = true;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn dm(p: *const u8) -> __m128 {
        // SAFETY: a block starts with its f16 scale.
        unsafe { f16x1(p) }
    }
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn unpack(p: *const u8) -> __m256i {
        // SAFETY: 16 bytes of indices follow the scale inside the block.
        unsafe { iq4_values(p.add(2)) }
    }
}

/// Four steps of a group product with signed weights, in 32 bits: `mag` holds the
/// `vpshufd` broadcasts of |w|, `sgn` those of w (its signs go onto the activations, the
/// `vpsignb` trick, since `vpmaddubsw` takes unsigned weights). Each step's 16-bit pair
/// sums may reach 2·127·127, so each is widened (times `mul`: ones, or a group scale)
/// before they are added.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn signed_steps(
    mag: &[__m256i; 4],
    sgn: &[__m256i; 4],
    aq: *const u8,
    mul: __m256i,
) -> __m256i {
    let mut s = _mm256_setzero_si256();
    for j in 0..4 {
        // SAFETY: 128 readable bytes at `aq` (caller).
        let a = _mm256_sign_epi8(unsafe { load256(aq.add(32 * j)) }, sgn[j]);
        s = _mm256_add_epi32(s, _mm256_madd_epi16(_mm256_maddubs_epi16(mag[j], a), mul));
    }
    s
}

/// 8 lanes of sums of 4 products of one weight block with 32 activations.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn leg_dot<W: Leg>(p: *const u8, a: __m256i) -> __m256i {
    // SAFETY: `p` is a whole block (caller).
    let q = unsafe { W::unpack(p) };
    let p16 = if W::SIGNED {
        _mm256_maddubs_epi16(_mm256_sign_epi8(q, q), _mm256_sign_epi8(a, q))
    } else {
        _mm256_maddubs_epi16(q, a)
    };
    _mm256_madd_epi16(p16, _mm256_set1_epi16(1))
}

/// Software prefetch distance in bytes for matrix-vector products: decode streams the
/// weights from DRAM, and this VM's hardware prefetcher alone left it well below the
/// bandwidth (2.5 vs 4.5+ GB/s measured on the Q8_0 output matrix); 1-4 KiB measured
/// alike within noise.
const PF: usize = 2048;

/// Matrix-vector product over legacy blocks, one row after another. Decode is bound by
/// memory bandwidth, and one sequential stream through the matrix is what the hardware
/// prefetcher follows best: interleaving 2 or 4 rows (to share activation loads, which
/// sit in L1 anyway) measured 1.2-1.5x slower end to end on SmolLM2 Q8_0, Q4_0 and Q4_1.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn vec_leg<W: Leg>(w: *const u8, act: *const u8, nb: usize, out: &mut [f32]) {
    let rb = nb * W::BYTES;
    let qs = act.wrapping_add(nb * 8);
    for (r, o) in out.iter_mut().enumerate() {
        let row = w.wrapping_add(r * rb);
        let mut acc = _mm256_setzero_ps();
        let mut m = _mm_setzero_ps();
        for b in 0..nb {
            // SAFETY: block `b` of row `r` and of the activations are in bounds (wrapper).
            unsafe {
                let das = _mm_castpd_ps(_mm_load_sd(act.add(b * 8).cast()));
                let a = load256(qs.add(b * QK));
                let p = row.add(b * W::BYTES);
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PF).cast());
                let s = _mm_mul_ps(W::dm(p), das);
                m = _mm_add_ps(m, s);
                let v = _mm256_cvtepi32_ps(leg_dot::<W>(p, a));
                acc = _mm256_fmadd_ps(v, _mm256_broadcastss_ps(s), acc);
            }
        }
        // SAFETY: plain arithmetic on registers.
        *o = hsum_ps(acc) + unsafe { min_term::<W>(m) };
    }
}

/// The block-sum term of a row from its accumulated `[_, m * s]` products.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn min_term<W: Leg>(m: __m128) -> f32 {
    if W::MIN_MUL == 0.0 {
        0.0
    } else {
        W::MIN_MUL * _mm_cvtss_f32(_mm_movehdup_ps(m))
    }
}

/// One weight row against `NG` groups of 4 tokens; `res[g][t]`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn gemm_leg_row<W: Leg, const NG: usize>(
    row: *const u8,
    act: *const u8,
    nb: usize,
    gstride: usize,
) -> [[f32; GROUP]; NG] {
    let mut acc = [_mm256_setzero_ps(); NG];
    let mut accm = [_mm_setzero_ps(); NG];
    let ones = _mm256_set1_epi16(1);
    for b in 0..nb {
        // SAFETY: block `b` of the row and of each group are in bounds (wrapper checks).
        unsafe {
            let p = row.add(b * W::BYTES);
            let q = W::unpack(p);
            let dm = W::dm(p);
            let d = _mm256_broadcastss_ps(dm);
            let qa = if W::SIGNED { _mm256_sign_epi8(q, q) } else { q };
            let wj = shuf4(qa);
            let sj = if W::SIGNED { shuf4(q) } else { wj };
            for g in 0..NG {
                let ga = act.add(g * gstride);
                let aq = ga.add(nb * 32 + b * 128);
                let isum = if W::SIGNED {
                    signed_steps(&wj, &sj, aq, ones)
                } else {
                    let mut s16 = _mm256_maddubs_epi16(wj[0], load256(aq));
                    for (j, w) in wj.iter().enumerate().skip(1) {
                        s16 = _mm256_add_epi16(
                            s16,
                            _mm256_maddubs_epi16(*w, load256(aq.add(32 * j))),
                        );
                    }
                    _mm256_madd_epi16(s16, ones)
                };
                let da = f32x4_dup(ga.add(b * 32));
                acc[g] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(d, da), acc[g]);
                if W::MIN_MUL != 0.0 {
                    let m = _mm_shuffle_ps(dm, dm, 0x55);
                    let sa = _mm_loadu_ps(ga.add(b * 32 + 16).cast());
                    accm[g] = _mm_fmadd_ps(m, sa, accm[g]);
                }
            }
        }
    }
    let mut res = [[0f32; GROUP]; NG];
    for g in 0..NG {
        let halves = _mm_add_ps(
            _mm256_castps256_ps128(acc[g]),
            _mm256_extractf128_ps(acc[g], 1),
        );
        let v = _mm_fmadd_ps(_mm_set1_ps(W::MIN_MUL), accm[g], halves);
        // SAFETY: `res[g]` is 4 f32.
        unsafe { _mm_storeu_ps(res[g].as_mut_ptr(), v) };
    }
    res
}

/// Groups of tokens for legacy blocks: pairs of groups per weight pass, then the rest.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemm_leg<W: Leg>(w: *const u8, act: *const u8, nb: usize, ng: usize, out: &mut [f32]) {
    if W::SCRATCH && nb * scr_block::<W>() <= SCR_BYTES {
        // SAFETY: forwarded; same preconditions.
        return unsafe { gemm_leg_scratch::<W>(w, act, nb, ng, out) };
    }
    let rb = nb * W::BYTES;
    let gstride = GROUP * nb * Q8_BLOCK;
    let rows = out.len() / (ng * GROUP);
    let mut g = 0;
    while g < ng {
        let two = g + 2 <= ng;
        let ga = act.wrapping_add(g * gstride);
        for r in 0..rows {
            let row = w.wrapping_add(r * rb);
            // SAFETY: row `r` and groups g, g+1 are in bounds (wrapper checks).
            if two {
                let res = unsafe { gemm_leg_row::<W, 2>(row, ga, nb, gstride) };
                for (k, gr) in res.iter().enumerate() {
                    for (t, &v) in gr.iter().enumerate() {
                        out[((g + k) * GROUP + t) * rows + r] = v;
                    }
                }
            } else {
                let res = unsafe { gemm_leg_row::<W, 1>(row, ga, nb, gstride) };
                for (t, &v) in res[0].iter().enumerate() {
                    out[(g * GROUP + t) * rows + r] = v;
                }
            }
        }
        g += if two { 2 } else { 1 };
    }
}

/// Bytes of unpacked weights per block in the prefill scratch: the 4 `vpshufd`
/// broadcasts of its quants (of their magnitudes for signed types, followed by the 4 of
/// the quants themselves for their signs), then d and m as f32 in a last 32-byte slot.
const fn scr_block<W: Leg>() -> usize {
    if W::SIGNED {
        288
    } else {
        160
    }
}
const SCR_BYTES: usize = 16 * 1024;

/// Prefill for unsigned legacy blocks: unpacks a few rows once into an L1-resident
/// scratch, already broadcast for every step, then sweeps all the token groups of the
/// call over them; the inner loop is loads, `vpmaddubsw` and the scaling.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemm_leg_scratch<W: Leg>(
    w: *const u8,
    act: *const u8,
    nb: usize,
    ng: usize,
    out: &mut [f32],
) {
    let rb = nb * W::BYTES;
    let gstride = GROUP * nb * Q8_BLOCK;
    let rows = out.len() / (ng * GROUP);
    let scr_b = scr_block::<W>();
    let rc = (SCR_BYTES / (nb * scr_b)).max(1);
    let mut scr = [std::mem::MaybeUninit::<__m256i>::uninit(); SCR_BYTES / 32];
    let sp = scr.as_mut_ptr().cast::<u8>();
    let mut r0 = 0;
    while r0 < rows {
        let nr = rc.min(rows - r0);
        for r in 0..nr {
            let row = w.wrapping_add((r0 + r) * rb);
            for b in 0..nb {
                // SAFETY: block b of the row is in bounds (wrapper); the scratch slot
                // (r * nb + b + 1) * scr_b <= nr * nb * scr_b <= SCR_BYTES.
                unsafe {
                    let p = row.add(b * W::BYTES);
                    let q = W::unpack(p);
                    let o = sp.add((r * nb + b) * scr_b);
                    let mag = if W::SIGNED { _mm256_sign_epi8(q, q) } else { q };
                    for (j, v) in shuf4(mag).iter().enumerate() {
                        _mm256_storeu_si256(o.add(32 * j).cast(), *v);
                    }
                    if W::SIGNED {
                        for (j, v) in shuf4(q).iter().enumerate() {
                            _mm256_storeu_si256(o.add(128 + 32 * j).cast(), *v);
                        }
                    }
                    _mm_storeu_ps(o.add(scr_b - 32).cast(), W::dm(p));
                }
            }
        }
        let mut g = 0;
        while g < ng {
            let two = g + 2 <= ng;
            for r in 0..nr {
                // SAFETY: the scratch rows were written above; groups g (and g+1) are in
                // bounds (wrapper checks).
                unsafe {
                    let srow = sp.add(r * nb * scr_b);
                    let ga = act.add(g * gstride);
                    if two {
                        let res = gemm_scr_row::<W, 2>(srow, ga, nb, gstride);
                        for (k, gr) in res.iter().enumerate() {
                            for (t, &v) in gr.iter().enumerate() {
                                out[((g + k) * GROUP + t) * rows + r0 + r] = v;
                            }
                        }
                    } else {
                        let res = gemm_scr_row::<W, 1>(srow, ga, nb, gstride);
                        for (t, &v) in res[0].iter().enumerate() {
                            out[(g * GROUP + t) * rows + r0 + r] = v;
                        }
                    }
                }
            }
            g += if two { 2 } else { 1 };
        }
        r0 += nr;
    }
}

/// One unpacked scratch row against `NG` groups; `res[g][t]`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn gemm_scr_row<W: Leg, const NG: usize>(
    srow: *const u8,
    act: *const u8,
    nb: usize,
    gstride: usize,
) -> [[f32; GROUP]; NG] {
    let mut acc = [_mm256_setzero_ps(); NG];
    // The block-sum terms accumulate apart, so each accumulator's dependency chain is one
    // multiply-add per block.
    let mut accm = [_mm_setzero_ps(); NG];
    let ones = _mm256_set1_epi16(1);
    let scr_b = scr_block::<W>();
    for b in 0..nb {
        // SAFETY: scratch block b and block b of each group are in bounds (caller).
        unsafe {
            let o = srow.add(b * scr_b);
            let ld4 = |at: usize| {
                [
                    load256(o.add(at)),
                    load256(o.add(at + 32)),
                    load256(o.add(at + 64)),
                    load256(o.add(at + 96)),
                ]
            };
            let wj = ld4(0);
            let sj = if W::SIGNED { ld4(128) } else { wj };
            let dm = o.add(scr_b - 32);
            let d = _mm256_broadcast_ss(&*dm.cast::<f32>());
            let m = if W::MIN_MUL == 1.0 {
                _mm_broadcast_ss(&*dm.add(4).cast::<f32>())
            } else {
                _mm_mul_ps(_mm256_castps256_ps128(d), _mm_set1_ps(W::MIN_MUL))
            };
            for g in 0..NG {
                let ga = act.add(g * gstride);
                let aq = ga.add(nb * 32 + b * 128);
                let isum = if W::SIGNED {
                    signed_steps(&wj, &sj, aq, ones)
                } else {
                    let s16 = _mm256_add_epi16(
                        _mm256_add_epi16(
                            _mm256_maddubs_epi16(wj[0], load256(aq)),
                            _mm256_maddubs_epi16(wj[1], load256(aq.add(32))),
                        ),
                        _mm256_add_epi16(
                            _mm256_maddubs_epi16(wj[2], load256(aq.add(64))),
                            _mm256_maddubs_epi16(wj[3], load256(aq.add(96))),
                        ),
                    );
                    _mm256_madd_epi16(s16, ones)
                };
                let da = f32x4_dup(ga.add(b * 32));
                acc[g] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(d, da), acc[g]);
                if W::MIN_MUL != 0.0 {
                    let sa = _mm_loadu_ps(ga.add(b * 32 + 16).cast());
                    accm[g] = _mm_fmadd_ps(m, sa, accm[g]);
                }
            }
        }
    }
    let mut res = [[0f32; GROUP]; NG];
    for g in 0..NG {
        let v = _mm_add_ps(
            _mm256_castps256_ps128(acc[g]),
            _mm256_extractf128_ps(acc[g], 1),
        );
        let v = _mm_add_ps(v, accm[g]);
        // SAFETY: `res[g]` is 4 f32.
        unsafe { _mm_storeu_ps(res[g].as_mut_ptr(), v) };
    }
    res
}

// ---------------------------------------------------------------------------------------
// k-quants

const KMASK1: u32 = 0x3f3f_3f3f;
const KMASK2: u32 = 0x0f0f_0f0f;
const KMASK3: u32 = 0x0303_0303;

/// Q4_K/Q5_K 12-byte scales to 8 scales (bytes 0..8) and 8 minimums (bytes 8..16).
#[inline(always)]
fn k4_scales(s: &[u8; 12]) -> [u32; 4] {
    let mut u = [
        u32::from_le_bytes([s[0], s[1], s[2], s[3]]),
        u32::from_le_bytes([s[4], s[5], s[6], s[7]]),
        u32::from_le_bytes([s[8], s[9], s[10], s[11]]),
        0,
    ];
    u[3] = ((u[2] >> 4) & KMASK2) | (((u[1] >> 6) & KMASK3) << 4);
    let uaux = u[1] & KMASK1;
    u[1] = (u[2] & KMASK2) | (((u[0] >> 6) & KMASK3) << 4);
    u[2] = uaux;
    u[0] &= KMASK1;
    u
}

/// Byte-shuffle pattern giving, in every 16-bit lane of the low half, byte `lo` of the
/// source (zero-extended), and byte `hi` in the high half.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn bcast_u8_pattern(lo: i8, hi: i8) -> __m256i {
    let l = (lo as u8 as u16 | 0x8000) as i16;
    let h = (hi as u8 as u16 | 0x8000) as i16;
    _mm256_set_m128i(_mm_set1_epi16(h), _mm_set1_epi16(l))
}

/// Q8K activation of one token: pointers to its scales, sums and quants.
struct Q8KPtrs {
    d: *const u8,
    bsums: *const u8,
    qs: *const u8,
}

impl Q8KPtrs {
    fn single(act: *const u8, nb: usize) -> Self {
        Q8KPtrs {
            d: act,
            bsums: act.wrapping_add(nb * 4),
            qs: act.wrapping_add(nb * 36),
        }
    }
    fn group(act: *const u8, nb: usize) -> Self {
        Q8KPtrs {
            d: act,
            bsums: act.wrapping_add(nb * 16),
            qs: act.wrapping_add(nb * 16 + nb * 128),
        }
    }
}

/// A k-quant weight type: how one 256-block multiplies one token (decode) and one group
/// of 4 tokens (prefill).
trait KQuant {
    const TY: GgmlType;
    const BYTES: usize;
    /// Σ over the block for one token, already scaled by the activation scale.
    unsafe fn dot1(p: *const u8, a: &Q8KPtrs, b: usize) -> __m256;
    /// Per-lane (token × half) contributions of the block to each of `NG` groups of
    /// 4 tokens; the block is unpacked once for all of them.
    unsafe fn dotg<const NG: usize>(p: *const u8, a: &[Q8KPtrs; NG], b: usize) -> [__m256; NG];
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn vec_k<K: KQuant>(w: *const u8, act: *const u8, nb: usize, out: &mut [f32]) {
    let a = Q8KPtrs::single(act, nb);
    let rb = nb * K::BYTES;
    for (r, o) in out.iter_mut().enumerate() {
        let row = w.wrapping_add(r * rb);
        let mut acc = _mm256_setzero_ps();
        for b in 0..nb {
            let p = row.wrapping_add(b * K::BYTES);
            // Two lines per block cover the largest block (210 bytes) over a few blocks.
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PF).cast());
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PF + 64).cast());
            // SAFETY: block `b` of row `r` and of the activations are in bounds.
            acc = _mm256_add_ps(acc, unsafe { K::dot1(p, &a, b) });
        }
        *o = hsum_ps(acc);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemm_k<K: KQuant>(w: *const u8, act: *const u8, nb: usize, ng: usize, out: &mut [f32]) {
    let mut g = 0;
    while g < ng {
        // SAFETY: forwarded; groups g (and g+1) are in bounds.
        unsafe {
            if g + 2 <= ng {
                gemm_k_groups::<K, 2>(w, act, nb, ng, g, out);
                g += 2;
            } else {
                gemm_k_groups::<K, 1>(w, act, nb, ng, g, out);
                g += 1;
            }
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn gemm_k_groups<K: KQuant, const NG: usize>(
    w: *const u8,
    act: *const u8,
    nb: usize,
    ng: usize,
    g0: usize,
    out: &mut [f32],
) {
    let rb = nb * K::BYTES;
    let gstride = GROUP * nb * Q8K_BLOCK;
    let rows = out.len() / (ng * GROUP);
    let mut a: [Q8KPtrs; NG] = std::array::from_fn(|_| Q8KPtrs::group(act, nb));
    for (i, ai) in a.iter_mut().enumerate() {
        *ai = Q8KPtrs::group(act.wrapping_add((g0 + i) * gstride), nb);
    }
    for r in 0..rows {
        let row = w.wrapping_add(r * rb);
        let mut acc = [_mm256_setzero_ps(); NG];
        for b in 0..nb {
            // SAFETY: block `b` of row `r` and of the groups are in bounds (wrapper).
            let v = unsafe { K::dotg::<NG>(row.add(b * K::BYTES), &a, b) };
            for (x, y) in acc.iter_mut().zip(v) {
                *x = _mm256_add_ps(*x, y);
            }
        }
        for (i, x) in acc.iter().enumerate() {
            let v = _mm_add_ps(_mm256_castps256_ps128(*x), _mm256_extractf128_ps(*x, 1));
            let mut res = [0f32; 4];
            // SAFETY: `res` is 4 f32.
            unsafe { _mm_storeu_ps(res.as_mut_ptr(), v) };
            for (t, &v) in res.iter().enumerate() {
                out[((g0 + i) * GROUP + t) * rows + r] = v;
            }
        }
    }
}

/// The 4 `vpshufd` broadcasts of 32 weights, one per step of a group product.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn shuf4(q: __m256i) -> [__m256i; 4] {
    [
        _mm256_shuffle_epi32(q, 0x00),
        _mm256_shuffle_epi32(q, 0x55),
        _mm256_shuffle_epi32(q, 0xAA),
        _mm256_shuffle_epi32(q, 0xFF),
    ]
}

/// Sum over 4 steps of `vpmaddubsw(broadcast weights j, activations j)`, in 16 bits.
/// `q` holds 32 unsigned weights (element order), `aq` a 128-byte interleaved sub-block.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn group_sub16(q: &[__m256i; 4], aq: *const u8) -> __m256i {
    // SAFETY: 128 readable bytes at `aq` (caller).
    unsafe {
        let s0 = _mm256_maddubs_epi16(q[0], load256(aq));
        let s1 = _mm256_maddubs_epi16(q[1], load256(aq.add(32)));
        let s2 = _mm256_maddubs_epi16(q[2], load256(aq.add(64)));
        let s3 = _mm256_maddubs_epi16(q[3], load256(aq.add(96)));
        _mm256_add_epi16(_mm256_add_epi16(s0, s1), _mm256_add_epi16(s2, s3))
    }
}

/// As `group_sub16` but for weights up to 63, where four steps would overflow 16 bits:
/// returns the two halves-of-steps already multiplied by `scale` in 32 bits.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn group_sub32(q: &[__m256i; 4], aq: *const u8, scale: __m256i) -> __m256i {
    // SAFETY: 128 readable bytes at `aq` (caller).
    unsafe {
        let s0 = _mm256_maddubs_epi16(q[0], load256(aq));
        let s1 = _mm256_maddubs_epi16(q[1], load256(aq.add(32)));
        let s2 = _mm256_maddubs_epi16(q[2], load256(aq.add(64)));
        let s3 = _mm256_maddubs_epi16(q[3], load256(aq.add(96)));
        _mm256_add_epi32(
            _mm256_madd_epi16(_mm256_add_epi16(s0, s1), scale),
            _mm256_madd_epi16(_mm256_add_epi16(s2, s3), scale),
        )
    }
}

/// Σ_i w_i × (bsum[2i] + bsum[2i+1]) per token for a group (sums laid out
/// `[pair][token][2]`), `wdup` holding 16-bit pairs `(w_2i, w_2i+1)` for pair i as dwords.
/// Returns 8 lanes: tokens × (even pairs, odd pairs).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn group_bsum_dot(bs: *const u8, wdup: __m256i) -> __m256i {
    let mut s = _mm256_setzero_si256();
    for i in (0..8).step_by(2) {
        let idx = _mm256_set_epi32(
            i as i32 + 1,
            i as i32 + 1,
            i as i32 + 1,
            i as i32 + 1,
            i as i32,
            i as i32,
            i as i32,
            i as i32,
        );
        let wv = _mm256_permutevar8x32_epi32(wdup, idx);
        // SAFETY: 128 readable bytes at `bs` (caller).
        let v = unsafe { load256(bs.add(i * 16)) };
        s = _mm256_add_epi32(s, _mm256_madd_epi16(v, wv));
    }
    s
}

/// Σ over 16 sums of w_g × bsum_g for one token, `w` as 16 i16.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn single_bsum_dot(bs: *const u8, w: __m256i) -> __m256i {
    // SAFETY: 32 readable bytes at `bs` (caller).
    _mm256_madd_epi16(unsafe { load256(bs) }, w)
}

struct Q4K;
struct Q5K;
struct Q6K;
struct Q2K;
struct Q3K;

impl KQuant for Q4K {
    const TY: GgmlType = GgmlType::Q4_K;
    const BYTES: usize = 144;

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn dot1(p: *const u8, a: &Q8KPtrs, b: usize) -> __m256 {
        // SAFETY: `p` is one 144-byte block; block `b` of the activations is in bounds.
        unsafe {
            let u = k4_scales(&*(p.add(4).cast::<[u8; 12]>()));
            let sm = _mm_set_epi32(u[3] as i32, u[2] as i32, u[1] as i32, u[0] as i32);
            let scb = _mm256_broadcastsi128_si256(sm);
            // Minimums, duplicated per pair of 16-sums: (m_i, m_i).
            let mins = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(
                sm,
                _mm_set_epi8(15, 15, 14, 14, 13, 13, 12, 12, 11, 11, 10, 10, 9, 9, 8, 8),
            ));
            let pm = single_bsum_dot(a.bsums.add(b * 32), mins);
            let aq = a.qs.add(b * QK_K);
            let m4 = _mm256_set1_epi8(0x0F);
            let mut sumi = _mm256_setzero_si256();
            for j in 0..4 {
                let q = load256(p.add(16 + 32 * j));
                let lo = _mm256_and_si256(q, m4);
                let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                let slo = _mm256_shuffle_epi8(scb, bcast_u8_pattern(2 * j as i8, 2 * j as i8));
                let shi =
                    _mm256_shuffle_epi8(scb, bcast_u8_pattern(2 * j as i8 + 1, 2 * j as i8 + 1));
                let plo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, load256(aq.add(64 * j))), slo);
                let phi =
                    _mm256_madd_epi16(_mm256_maddubs_epi16(hi, load256(aq.add(64 * j + 32))), shi);
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(plo, phi));
            }
            let dd = _mm_mul_ps(f16x2(p), _mm_set1_ps(f32_at(a.d.add(4 * b))));
            let v = _mm256_mul_ps(_mm256_cvtepi32_ps(sumi), _mm256_broadcastss_ps(dd));
            _mm256_fnmadd_ps(
                _mm256_cvtepi32_ps(pm),
                _mm256_broadcastss_ps(_mm_movehdup_ps(dd)),
                v,
            )
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn dotg<const NG: usize>(p: *const u8, a: &[Q8KPtrs; NG], b: usize) -> [__m256; NG] {
        // SAFETY: `p` is one block; block `b` of the groups is in bounds.
        unsafe {
            let u = k4_scales(&*(p.add(4).cast::<[u8; 12]>()));
            let sm = _mm_set_epi32(u[3] as i32, u[2] as i32, u[1] as i32, u[0] as i32);
            let scb = _mm256_broadcastsi128_si256(sm);
            let mins = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(
                sm,
                _mm_set_epi8(15, 15, 14, 14, 13, 13, 12, 12, 11, 11, 10, 10, 9, 9, 8, 8),
            ));
            let m4 = _mm256_set1_epi8(0x0F);
            let mut sumi = [_mm256_setzero_si256(); NG];
            for j in 0..4 {
                let q = load256(p.add(16 + 32 * j));
                let lo = _mm256_and_si256(q, m4);
                let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                let (lo, hi) = (shuf4(lo), shuf4(hi));
                let slo = _mm256_shuffle_epi8(scb, bcast_u8_pattern(2 * j as i8, 2 * j as i8));
                let shi =
                    _mm256_shuffle_epi8(scb, bcast_u8_pattern(2 * j as i8 + 1, 2 * j as i8 + 1));
                for (g, s) in sumi.iter_mut().enumerate() {
                    let aq = a[g].qs.add(b * 1024 + 256 * j);
                    let plo = _mm256_madd_epi16(group_sub16(&lo, aq), slo);
                    let phi = _mm256_madd_epi16(group_sub16(&hi, aq.add(128)), shi);
                    *s = _mm256_add_epi32(*s, _mm256_add_epi32(plo, phi));
                }
            }
            let dv = f16x2(p);
            let d = _mm256_broadcastss_ps(dv);
            let dmin = _mm256_broadcastss_ps(_mm_movehdup_ps(dv));
            let mut res = [_mm256_setzero_ps(); NG];
            for (g, r) in res.iter_mut().enumerate() {
                let pm = group_bsum_dot(a[g].bsums.add(b * 128), mins);
                let da = f32x4_dup(a[g].d.add(16 * b));
                let v = _mm256_mul_ps(_mm256_cvtepi32_ps(sumi[g]), _mm256_mul_ps(d, da));
                *r = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(pm), _mm256_mul_ps(dmin, da), v);
            }
            res
        }
    }
}

impl KQuant for Q5K {
    const TY: GgmlType = GgmlType::Q5_K;
    const BYTES: usize = 176;

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn dot1(p: *const u8, a: &Q8KPtrs, b: usize) -> __m256 {
        // SAFETY: `p` is one 176-byte block; block `b` of the activations is in bounds.
        unsafe {
            let u = k4_scales(&*(p.add(4).cast::<[u8; 12]>()));
            let sm = _mm_set_epi32(u[3] as i32, u[2] as i32, u[1] as i32, u[0] as i32);
            let scb = _mm256_broadcastsi128_si256(sm);
            let mins = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(
                sm,
                _mm_set_epi8(15, 15, 14, 14, 13, 13, 12, 12, 11, 11, 10, 10, 9, 9, 8, 8),
            ));
            let pm = single_bsum_dot(a.bsums.add(b * 32), mins);
            let aq = a.qs.add(b * QK_K);
            let m4 = _mm256_set1_epi8(0x0F);
            let qh = load256(p.add(16));
            let m16 = _mm256_set1_epi8(0x10);
            let mut sumi = _mm256_setzero_si256();
            for j in 0..4 {
                let q = load256(p.add(48 + 32 * j));
                let h0 = _mm256_and_si256(
                    _mm256_slli_epi16(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * j as i32)), 4),
                    m16,
                );
                let lo = _mm256_or_si256(_mm256_and_si256(q, m4), h0);
                let h1 = _mm256_and_si256(
                    _mm256_slli_epi16(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * j as i32 + 1)), 4),
                    m16,
                );
                let hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), m4), h1);
                let slo = _mm256_shuffle_epi8(scb, bcast_u8_pattern(2 * j as i8, 2 * j as i8));
                let shi =
                    _mm256_shuffle_epi8(scb, bcast_u8_pattern(2 * j as i8 + 1, 2 * j as i8 + 1));
                let plo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, load256(aq.add(64 * j))), slo);
                let phi =
                    _mm256_madd_epi16(_mm256_maddubs_epi16(hi, load256(aq.add(64 * j + 32))), shi);
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(plo, phi));
            }
            let dd = _mm_mul_ps(f16x2(p), _mm_set1_ps(f32_at(a.d.add(4 * b))));
            let v = _mm256_mul_ps(_mm256_cvtepi32_ps(sumi), _mm256_broadcastss_ps(dd));
            _mm256_fnmadd_ps(
                _mm256_cvtepi32_ps(pm),
                _mm256_broadcastss_ps(_mm_movehdup_ps(dd)),
                v,
            )
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn dotg<const NG: usize>(p: *const u8, a: &[Q8KPtrs; NG], b: usize) -> [__m256; NG] {
        // SAFETY: `p` is one block; block `b` of the groups is in bounds.
        unsafe {
            let u = k4_scales(&*(p.add(4).cast::<[u8; 12]>()));
            let sm = _mm_set_epi32(u[3] as i32, u[2] as i32, u[1] as i32, u[0] as i32);
            let scb = _mm256_broadcastsi128_si256(sm);
            let mins = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(
                sm,
                _mm_set_epi8(15, 15, 14, 14, 13, 13, 12, 12, 11, 11, 10, 10, 9, 9, 8, 8),
            ));
            let m4 = _mm256_set1_epi8(0x0F);
            let qh = load256(p.add(16));
            let m16 = _mm256_set1_epi8(0x10);
            let mut sumi = [_mm256_setzero_si256(); NG];
            for j in 0..4 {
                let q = load256(p.add(48 + 32 * j));
                let h0 = _mm256_and_si256(
                    _mm256_slli_epi16(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * j as i32)), 4),
                    m16,
                );
                let lo = _mm256_or_si256(_mm256_and_si256(q, m4), h0);
                let h1 = _mm256_and_si256(
                    _mm256_slli_epi16(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * j as i32 + 1)), 4),
                    m16,
                );
                let hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), m4), h1);
                let (lo, hi) = (shuf4(lo), shuf4(hi));
                let slo = _mm256_shuffle_epi8(scb, bcast_u8_pattern(2 * j as i8, 2 * j as i8));
                let shi =
                    _mm256_shuffle_epi8(scb, bcast_u8_pattern(2 * j as i8 + 1, 2 * j as i8 + 1));
                for (g, s) in sumi.iter_mut().enumerate() {
                    let aq = a[g].qs.add(b * 1024 + 256 * j);
                    let plo = _mm256_madd_epi16(group_sub16(&lo, aq), slo);
                    let phi = _mm256_madd_epi16(group_sub16(&hi, aq.add(128)), shi);
                    *s = _mm256_add_epi32(*s, _mm256_add_epi32(plo, phi));
                }
            }
            let dv = f16x2(p);
            let d = _mm256_broadcastss_ps(dv);
            let dmin = _mm256_broadcastss_ps(_mm_movehdup_ps(dv));
            let mut res = [_mm256_setzero_ps(); NG];
            for (g, r) in res.iter_mut().enumerate() {
                let pm = group_bsum_dot(a[g].bsums.add(b * 128), mins);
                let da = f32x4_dup(a[g].d.add(16 * b));
                let v = _mm256_mul_ps(_mm256_cvtepi32_ps(sumi[g]), _mm256_mul_ps(d, da));
                *r = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(pm), _mm256_mul_ps(dmin, da), v);
            }
            res
        }
    }
}

/// Q6_K's 16 signed scales reordered for per-chunk shuffles: i16 lanes 0..8 hold the even
/// scales (first half of each 32-element chunk), 8..16 the odd ones.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn evens_odds_i16(sc: __m128i) -> __m256i {
    _mm256_cvtepi8_epi16(_mm_shuffle_epi8(
        sc,
        _mm_set_epi8(15, 13, 11, 9, 7, 5, 3, 1, 14, 12, 10, 8, 6, 4, 2, 0),
    ))
}

/// From `evens_odds_i16`, chunk `c`'s scales: low half all `sc[2c]`, high half `sc[2c+1]`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn chunk_scale(v: __m256i, c: usize) -> __m256i {
    let lo = (2 * c) as i8;
    let pat = _mm256_set1_epi16(((lo as u8 as u16) | (((lo + 1) as u8 as u16) << 8)) as i16);
    _mm256_shuffle_epi8(v, pat)
}

impl Q6K {
    /// The four 32-element chunks of half `n` (0 or 1) of a Q6_K block, as values 0..63.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn chunks(p: *const u8, n: usize) -> [__m256i; 4] {
        // SAFETY: ql (128 bytes) and qh (64 bytes) are inside the 210-byte block.
        unsafe {
            let ql0 = load256(p.add(64 * n));
            let ql1 = load256(p.add(64 * n + 32));
            let qh = load256(p.add(128 + 32 * n));
            let m4 = _mm256_set1_epi8(0x0F);
            let m30 = _mm256_set1_epi8(0x30);
            [
                _mm256_or_si256(
                    _mm256_and_si256(ql0, m4),
                    _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(ql1, m4),
                    _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                    _mm256_and_si256(qh, m30),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                    _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30),
                ),
            ]
        }
    }
}

impl KQuant for Q6K {
    const TY: GgmlType = GgmlType::Q6_K;
    const BYTES: usize = 210;

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn dot1(p: *const u8, a: &Q8KPtrs, b: usize) -> __m256 {
        // SAFETY: `p` is one 210-byte block; block `b` of the activations is in bounds.
        unsafe {
            let sc = load128(p.add(192));
            let corr = single_bsum_dot(a.bsums.add(b * 32), _mm256_cvtepi8_epi16(sc));
            let eo = evens_odds_i16(sc);
            let aq = a.qs.add(b * QK_K);
            let mut sumi = _mm256_setzero_si256();
            for n in 0..2 {
                let q = Q6K::chunks(p, n);
                for (i, q) in q.iter().enumerate() {
                    let c = 4 * n + i;
                    let p16 = _mm256_maddubs_epi16(*q, load256(aq.add(32 * c)));
                    sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p16, chunk_scale(eo, c)));
                }
            }
            // Values were stored +32: subtract 32 × Σ scale × sum of 16.
            sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(corr, 5));
            let d = _mm256_set1_ps(_mm_cvtss_f32(f16x1(p.add(208))) * f32_at(a.d.add(4 * b)));
            _mm256_mul_ps(_mm256_cvtepi32_ps(sumi), d)
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn dotg<const NG: usize>(p: *const u8, a: &[Q8KPtrs; NG], b: usize) -> [__m256; NG] {
        // SAFETY: `p` is one 210-byte block; block `b` of the groups is in bounds.
        unsafe {
            let sc = load128(p.add(192));
            let sc16 = _mm256_cvtepi8_epi16(sc);
            let eo = evens_odds_i16(sc);
            let mut sumi = [_mm256_setzero_si256(); NG];
            for n in 0..2 {
                let q = Q6K::chunks(p, n);
                for (i, q) in q.iter().enumerate() {
                    let c = 4 * n + i;
                    let (qs, scale) = (shuf4(*q), chunk_scale(eo, c));
                    for (g, s) in sumi.iter_mut().enumerate() {
                        let aq = a[g].qs.add(b * 1024 + 128 * c);
                        *s = _mm256_add_epi32(*s, group_sub32(&qs, aq, scale));
                    }
                }
            }
            let d = _mm256_set1_ps(_mm_cvtss_f32(f16x1(p.add(208))));
            let mut res = [_mm256_setzero_ps(); NG];
            for (g, r) in res.iter_mut().enumerate() {
                let corr = group_bsum_dot(a[g].bsums.add(b * 128), sc16);
                let si = _mm256_sub_epi32(sumi[g], _mm256_slli_epi32(corr, 5));
                let da = f32x4_dup(a[g].d.add(16 * b));
                *r = _mm256_mul_ps(_mm256_cvtepi32_ps(si), _mm256_mul_ps(d, da));
            }
            res
        }
    }
}

impl Q2K {
    /// The 32-element chunks `4n..4n+4` of a Q2_K block (values 0..3).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn chunks(p: *const u8, n: usize) -> [__m256i; 4] {
        // SAFETY: 64 bytes of quants at offset 16 of the 84-byte block.
        let q = unsafe { load256(p.add(16 + 32 * n)) };
        let m3 = _mm256_set1_epi8(3);
        [
            _mm256_and_si256(q, m3),
            _mm256_and_si256(_mm256_srli_epi16(q, 2), m3),
            _mm256_and_si256(_mm256_srli_epi16(q, 4), m3),
            _mm256_and_si256(_mm256_srli_epi16(q, 6), m3),
        ]
    }
}

impl KQuant for Q2K {
    const TY: GgmlType = GgmlType::Q2_K;
    const BYTES: usize = 84;

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn dot1(p: *const u8, a: &Q8KPtrs, b: usize) -> __m256 {
        // SAFETY: `p` is one 84-byte block; block `b` of the activations is in bounds.
        unsafe {
            let sc = load128(p);
            let m4 = _mm_set1_epi8(0x0F);
            let scales = _mm_and_si128(sc, m4);
            let mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc, 4), m4));
            let pm = single_bsum_dot(a.bsums.add(b * 32), mins);
            let eo = evens_odds_i16(scales);
            let aq = a.qs.add(b * QK_K);
            let mut sumi = _mm256_setzero_si256();
            for n in 0..2 {
                let q = Q2K::chunks(p, n);
                for (i, q) in q.iter().enumerate() {
                    let c = 4 * n + i;
                    let p16 = _mm256_maddubs_epi16(*q, load256(aq.add(32 * c)));
                    sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p16, chunk_scale(eo, c)));
                }
            }
            let dd = _mm_mul_ps(f16x2(p.add(80)), _mm_set1_ps(f32_at(a.d.add(4 * b))));
            let v = _mm256_mul_ps(_mm256_cvtepi32_ps(sumi), _mm256_broadcastss_ps(dd));
            _mm256_fnmadd_ps(
                _mm256_cvtepi32_ps(pm),
                _mm256_broadcastss_ps(_mm_movehdup_ps(dd)),
                v,
            )
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn dotg<const NG: usize>(p: *const u8, a: &[Q8KPtrs; NG], b: usize) -> [__m256; NG] {
        // SAFETY: `p` is one 84-byte block; block `b` of the groups is in bounds.
        unsafe {
            let sc = load128(p);
            let m4 = _mm_set1_epi8(0x0F);
            let scales = _mm_and_si128(sc, m4);
            let mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc, 4), m4));
            let eo = evens_odds_i16(scales);
            let mut sumi = [_mm256_setzero_si256(); NG];
            for n in 0..2 {
                let q = Q2K::chunks(p, n);
                for (i, q) in q.iter().enumerate() {
                    let c = 4 * n + i;
                    let (qs, scale) = (shuf4(*q), chunk_scale(eo, c));
                    for (g, s) in sumi.iter_mut().enumerate() {
                        let p16 = group_sub16(&qs, a[g].qs.add(b * 1024 + 128 * c));
                        *s = _mm256_add_epi32(*s, _mm256_madd_epi16(p16, scale));
                    }
                }
            }
            let dv = f16x2(p.add(80));
            let d = _mm256_broadcastss_ps(dv);
            let dmin = _mm256_broadcastss_ps(_mm_movehdup_ps(dv));
            let mut res = [_mm256_setzero_ps(); NG];
            for (g, r) in res.iter_mut().enumerate() {
                let pm = group_bsum_dot(a[g].bsums.add(b * 128), mins);
                let da = f32x4_dup(a[g].d.add(16 * b));
                let v = _mm256_mul_ps(_mm256_cvtepi32_ps(sumi[g]), _mm256_mul_ps(d, da));
                *r = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(pm), _mm256_mul_ps(dmin, da), v);
            }
            res
        }
    }
}

impl Q3K {
    /// Sixteen 6-bit scales, unbiased (-32..31), as bytes.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn scales(p: *const u8) -> __m128i {
        // SAFETY: 12 scale bytes at offset 96 of the 110-byte block.
        let s = unsafe { &*(p.add(96).cast::<[u8; 12]>()) };
        let a0 = u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
        let a1 = u32::from_le_bytes([s[4], s[5], s[6], s[7]]);
        let t = u32::from_le_bytes([s[8], s[9], s[10], s[11]]);
        let v = _mm_set_epi32(
            (((a1 >> 4) & KMASK2) | (((t >> 6) & KMASK3) << 4)) as i32,
            (((a0 >> 4) & KMASK2) | (((t >> 4) & KMASK3) << 4)) as i32,
            ((a1 & KMASK2) | (((t >> 2) & KMASK3) << 4)) as i32,
            ((a0 & KMASK2) | ((t & KMASK3) << 4)) as i32,
        );
        _mm_sub_epi8(v, _mm_set1_epi8(32))
    }

    /// The 32-element chunks `4n..4n+4` of a Q3_K block as values 0..7 (true value + 4).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn chunks(p: *const u8, n: usize) -> [__m256i; 4] {
        // SAFETY: hmask (32 bytes) at 0 and quants (64 bytes) at 32 of the block.
        let (q, hm) = unsafe { (load256(p.add(32 + 32 * n)), load256(p)) };
        let m3 = _mm256_set1_epi8(3);
        let m4 = _mm256_set1_epi8(4);
        let mut out = [_mm256_setzero_si256(); 4];
        for (j, o) in out.iter_mut().enumerate() {
            let lo = _mm256_and_si256(_mm256_srl_epi16(q, _mm_cvtsi32_si128(2 * j as i32)), m3);
            // hmask bit 4n+j set means "no -4": value lo + 4.
            let bit = _mm256_set1_epi8(1 << (4 * n + j));
            let h = _mm256_cmpeq_epi8(_mm256_and_si256(hm, bit), bit);
            *o = _mm256_or_si256(lo, _mm256_and_si256(h, m4));
        }
        out
    }
}

impl KQuant for Q3K {
    const TY: GgmlType = GgmlType::Q3_K;
    const BYTES: usize = 110;

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn dot1(p: *const u8, a: &Q8KPtrs, b: usize) -> __m256 {
        // SAFETY: `p` is one 110-byte block; block `b` of the activations is in bounds.
        unsafe {
            let sc = Q3K::scales(p);
            let corr = single_bsum_dot(a.bsums.add(b * 32), _mm256_cvtepi8_epi16(sc));
            let eo = evens_odds_i16(sc);
            let aq = a.qs.add(b * QK_K);
            let mut sumi = _mm256_setzero_si256();
            for n in 0..2 {
                let q = Q3K::chunks(p, n);
                for (i, q) in q.iter().enumerate() {
                    let c = 4 * n + i;
                    let p16 = _mm256_maddubs_epi16(*q, load256(aq.add(32 * c)));
                    sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p16, chunk_scale(eo, c)));
                }
            }
            sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(corr, 2));
            let d = _mm256_set1_ps(_mm_cvtss_f32(f16x1(p.add(108))) * f32_at(a.d.add(4 * b)));
            _mm256_mul_ps(_mm256_cvtepi32_ps(sumi), d)
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn dotg<const NG: usize>(p: *const u8, a: &[Q8KPtrs; NG], b: usize) -> [__m256; NG] {
        // SAFETY: `p` is one 110-byte block; block `b` of the groups is in bounds.
        unsafe {
            let sc = Q3K::scales(p);
            let sc16 = _mm256_cvtepi8_epi16(sc);
            let eo = evens_odds_i16(sc);
            let mut sumi = [_mm256_setzero_si256(); NG];
            for n in 0..2 {
                let q = Q3K::chunks(p, n);
                for (i, q) in q.iter().enumerate() {
                    let c = 4 * n + i;
                    let (qs, scale) = (shuf4(*q), chunk_scale(eo, c));
                    for (g, s) in sumi.iter_mut().enumerate() {
                        let p16 = group_sub16(&qs, a[g].qs.add(b * 1024 + 128 * c));
                        *s = _mm256_add_epi32(*s, _mm256_madd_epi16(p16, scale));
                    }
                }
            }
            let d = _mm256_set1_ps(_mm_cvtss_f32(f16x1(p.add(108))));
            let mut res = [_mm256_setzero_ps(); NG];
            for (g, r) in res.iter_mut().enumerate() {
                let corr = group_bsum_dot(a[g].bsums.add(b * 128), sc16);
                let si = _mm256_sub_epi32(sumi[g], _mm256_slli_epi32(corr, 2));
                let da = f32x4_dup(a[g].d.add(16 * b));
                *r = _mm256_mul_ps(_mm256_cvtepi32_ps(si), _mm256_mul_ps(d, da));
            }
            res
        }
    }
}

struct IQ4XS;

impl IQ4XS {
    /// The eight group scales as i16, in `vpmaddwd` operands (one per group, both halves).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn scales(p: *const u8) -> [__m256i; 8] {
        // SAFETY: scales_h at offset 2 and scales_l at 4..8 of the 136-byte block.
        let (h, l) = unsafe {
            (
                read_unaligned(p.add(2).cast::<u16>()),
                read_unaligned(p.add(4).cast::<[u8; 4]>()),
            )
        };
        iq4xs_scales(h, l).map(|s| _mm256_set1_epi16(s as i16))
    }
}

impl KQuant for IQ4XS {
    const TY: GgmlType = GgmlType::IQ4_XS;
    const BYTES: usize = 136;

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn dot1(p: *const u8, a: &Q8KPtrs, b: usize) -> __m256 {
        // SAFETY: `p` is one 136-byte block; block `b` of the activations is in bounds.
        unsafe {
            let sc = IQ4XS::scales(p);
            let aq = a.qs.add(b * QK_K);
            let mut sumi = _mm256_setzero_si256();
            for (ib, scale) in sc.iter().enumerate() {
                let q = iq4_values(p.add(8 + 16 * ib));
                let y = load256(aq.add(32 * ib));
                let p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(q, q), _mm256_sign_epi8(y, q));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p16, *scale));
            }
            let d = _mm256_set1_ps(_mm_cvtss_f32(f16x1(p)) * f32_at(a.d.add(4 * b)));
            _mm256_mul_ps(_mm256_cvtepi32_ps(sumi), d)
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn dotg<const NG: usize>(p: *const u8, a: &[Q8KPtrs; NG], b: usize) -> [__m256; NG] {
        // SAFETY: `p` is one 136-byte block; block `b` of the groups is in bounds.
        unsafe {
            let sc = IQ4XS::scales(p);
            let mut sumi = [_mm256_setzero_si256(); NG];
            for (ib, scale) in sc.iter().enumerate() {
                let q = iq4_values(p.add(8 + 16 * ib));
                let (mag, sgn) = (shuf4(_mm256_sign_epi8(q, q)), shuf4(q));
                for (g, s) in sumi.iter_mut().enumerate() {
                    let aq = a[g].qs.add(b * 1024 + 128 * ib);
                    *s = _mm256_add_epi32(*s, signed_steps(&mag, &sgn, aq, *scale));
                }
            }
            let d = _mm256_set1_ps(_mm_cvtss_f32(f16x1(p)));
            let mut res = [_mm256_setzero_ps(); NG];
            for (g, r) in res.iter_mut().enumerate() {
                let da = f32x4_dup(a[g].d.add(16 * b));
                *r = _mm256_mul_ps(_mm256_cvtepi32_ps(sumi[g]), _mm256_mul_ps(d, da));
            }
            res
        }
    }
}

// ---------------------------------------------------------------------------------------
// Float weights

/// 8 weights at `p` as f32.
trait FloatW {
    const BYTES: usize;
    unsafe fn load8(p: *const u8) -> __m256;
    unsafe fn load1(p: *const u8) -> f32;
}

struct F32W;
struct F16W;
struct Bf16W;

impl FloatW for F32W {
    const BYTES: usize = 4;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn load8(p: *const u8) -> __m256 {
        // SAFETY: 32 readable bytes at `p` (caller).
        unsafe { _mm256_loadu_ps(p.cast()) }
    }
    #[inline(always)]
    unsafe fn load1(p: *const u8) -> f32 {
        // SAFETY: 4 readable bytes at `p` (caller).
        unsafe { read_unaligned(p.cast::<f32>()) }
    }
}

impl FloatW for F16W {
    const BYTES: usize = 2;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn load8(p: *const u8) -> __m256 {
        // SAFETY: 16 readable bytes at `p` (caller).
        _mm256_cvtph_ps(unsafe { load128(p) })
    }
    #[inline(always)]
    unsafe fn load1(p: *const u8) -> f32 {
        // SAFETY: 2 readable bytes at `p` (caller).
        f16::from_bits(unsafe { read_unaligned(p.cast::<u16>()) }).to_f32()
    }
}

impl FloatW for Bf16W {
    const BYTES: usize = 2;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn load8(p: *const u8) -> __m256 {
        // SAFETY: 16 readable bytes at `p` (caller).
        let v = _mm256_cvtepu16_epi32(unsafe { load128(p) });
        _mm256_castsi256_ps(_mm256_slli_epi32(v, 16))
    }
    #[inline(always)]
    unsafe fn load1(p: *const u8) -> f32 {
        // SAFETY: 2 readable bytes at `p` (caller).
        f32::from_bits((unsafe { read_unaligned(p.cast::<u16>()) } as u32) << 16)
    }
}

/// Dot product of `n` weights at `w` with `n` f32 at `x` (any `n`).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn dot_float<F: FloatW>(w: *const u8, x: *const f32, n: usize) -> f32 {
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    // SAFETY (all blocks below): `n` weights at `w` and `n` f32 at `x` are readable.
    while i + 32 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            let j = i + 8 * k;
            *a = unsafe {
                _mm256_fmadd_ps(F::load8(w.add(j * F::BYTES)), _mm256_loadu_ps(x.add(j)), *a)
            };
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = unsafe {
            _mm256_fmadd_ps(
                F::load8(w.add(i * F::BYTES)),
                _mm256_loadu_ps(x.add(i)),
                acc[0],
            )
        };
        i += 8;
    }
    let mut s = hsum_ps(_mm256_add_ps(
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3]),
    ));
    while i < n {
        // SAFETY: element i of both is readable; `x` may be unaligned.
        s += unsafe { F::load1(w.add(i * F::BYTES)) * read_unaligned(x.add(i)) };
        i += 1;
    }
    s
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn vec_float<F: FloatW>(w: *const u8, x: *const f32, k: usize, out: &mut [f32]) {
    for (r, o) in out.iter_mut().enumerate() {
        // SAFETY: row `r` and `k` activations are in bounds (wrapper).
        *o = unsafe { dot_float::<F>(w.add(r * k * F::BYTES), x, k) };
    }
}

/// Rows of a float-weight prefill micro-tile: 3 rows × a group of 4 tokens is 12
/// accumulators, plus 3 converted weight vectors and 1 activation vector: the 16 ymm
/// registers. Each weight conversion serves 4 tokens and each activation load 3 rows, so
/// the loop is bound by the FMA units, not by loads (1 row × 4 tokens was: 5 loads per 4
/// FMAs, half the speed of llama.cpp's tiled F16 kernel).
const FLOAT_TILE_ROWS: usize = 3;

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemm_float<F: FloatW>(w: *const u8, x: *const f32, k: usize, ng: usize, out: &mut [f32]) {
    let rows = out.len() / (ng * GROUP);
    let nt = ng * GROUP;
    // Tokens outer, rows inner: a group's activations (4 × k floats) stay in L1 while
    // every row passes by.
    let mut t = 0;
    while t < nt {
        let mut r = 0;
        while r + FLOAT_TILE_ROWS <= rows {
            // SAFETY: rows r..r+3 and tokens t..t+4 are in bounds (caller's sizes).
            unsafe { float_tile::<F>(w, x, k, rows, r, t, out) };
            r += FLOAT_TILE_ROWS;
        }
        while r < rows {
            // SAFETY: as above, for one row.
            unsafe { float_row::<F>(w, x, k, rows, r, t, out) };
            r += 1;
        }
        t += GROUP;
    }
}

/// Rows `r..r+3` times tokens `t..t+4` of a float-weight product, into `out`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn float_tile<F: FloatW>(
    w: *const u8,
    x: *const f32,
    k: usize,
    rows: usize,
    r: usize,
    t: usize,
    out: &mut [f32],
) {
    let row = |j: usize| w.wrapping_add((r + j) * k * F::BYTES);
    let rp = [row(0), row(1), row(2)];
    let tok = |u: usize| x.wrapping_add((t + u) * k);
    let mut acc = [[_mm256_setzero_ps(); FLOAT_TILE_ROWS]; GROUP];
    let k8 = k / 8 * 8;
    let mut i = 0;
    while i < k8 {
        // SAFETY: elements i..i+8 of the three rows and four tokens are in bounds (caller).
        unsafe {
            let wv = [
                F::load8(rp[0].add(i * F::BYTES)),
                F::load8(rp[1].add(i * F::BYTES)),
                F::load8(rp[2].add(i * F::BYTES)),
            ];
            for (u, au) in acc.iter_mut().enumerate() {
                let xv = _mm256_loadu_ps(tok(u).add(i));
                for (a, wj) in au.iter_mut().zip(&wv) {
                    *a = _mm256_fmadd_ps(*wj, xv, *a);
                }
            }
        }
        i += 8;
    }
    for (u, au) in acc.iter().enumerate() {
        for (j, a) in au.iter().enumerate() {
            let mut s = hsum_ps(*a);
            if k8 < k {
                // SAFETY: the tails of row r+j and token t+u are in bounds.
                s += unsafe { dot_float::<F>(rp[j].add(k8 * F::BYTES), tok(u).add(k8), k - k8) };
            }
            out[(t + u) * rows + r + j] = s;
        }
    }
}

/// Row `r` times tokens `t..t+4` (the rows left over from the 3-row tiles).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn float_row<F: FloatW>(
    w: *const u8,
    x: *const f32,
    k: usize,
    rows: usize,
    r: usize,
    t: usize,
    out: &mut [f32],
) {
    let row = w.wrapping_add(r * k * F::BYTES);
    let mut acc = [_mm256_setzero_ps(); GROUP];
    let k8 = k / 8 * 8;
    let mut i = 0;
    while i < k8 {
        // SAFETY: element i..i+8 of row `r` and of tokens t..t+4 are in bounds.
        unsafe {
            let wv = F::load8(row.add(i * F::BYTES));
            for (u, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x.add((t + u) * k + i)), *a);
            }
        }
        i += 8;
    }
    for (u, a) in acc.iter().enumerate() {
        let mut s = hsum_ps(*a);
        if k8 < k {
            // SAFETY: the tail of row `r` and of token t+u are in bounds.
            s += unsafe { dot_float::<F>(row.add(k8 * F::BYTES), x.add((t + u) * k + k8), k - k8) };
        }
        out[(t + u) * rows + r] = s;
    }
}

// ---------------------------------------------------------------------------------------
// Activation quantization

/// 32 floats to Q8 as `act::q8_block` does: (quants in element order, d, s).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn q8_block(x: *const f32) -> (__m256i, f32, f32) {
    // SAFETY: 32 readable f32 at `x` (caller).
    let v = unsafe {
        [
            _mm256_loadu_ps(x),
            _mm256_loadu_ps(x.add(8)),
            _mm256_loadu_ps(x.add(16)),
            _mm256_loadu_ps(x.add(24)),
        ]
    };
    let sign = _mm256_set1_ps(-0.0);
    let mut m = _mm256_andnot_ps(sign, v[0]);
    for vi in &v[1..] {
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, *vi));
    }
    let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    let m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    let amax = _mm_cvtss_f32(m4);
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let idv = _mm256_set1_ps(id);
    // Round to nearest even, like `round_ties_even` in the scalar twin.
    let i: [__m256i; 4] = [
        _mm256_cvtps_epi32(_mm256_mul_ps(v[0], idv)),
        _mm256_cvtps_epi32(_mm256_mul_ps(v[1], idv)),
        _mm256_cvtps_epi32(_mm256_mul_ps(v[2], idv)),
        _mm256_cvtps_epi32(_mm256_mul_ps(v[3], idv)),
    ];
    let sum = hsum_epi32(_mm256_add_epi32(
        _mm256_add_epi32(i[0], i[1]),
        _mm256_add_epi32(i[2], i[3]),
    ));
    let p = pack_i32x32(i);
    // Round the scale to f16 (nearest even, as `half` does) and back.
    let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtps_ph::<0>(_mm_set_ss(d))));
    (p, d, d * sum as f32)
}

/// 4 vectors of 8 i32 (elements 0..32 in order) to 32 i8 in order, saturating.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn pack_i32x32(i: [__m256i; 4]) -> __m256i {
    let a = _mm256_packs_epi32(i[0], i[1]);
    let b = _mm256_packs_epi32(i[2], i[3]);
    let p = _mm256_packs_epi16(a, b);
    _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// Stores 4 tokens' blocks interleaved 4 bytes at a time (see `act`): a 4×4 transpose of
/// dwords in each 128-bit half.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn store_interleaved(t: [__m256i; 4], out: *mut u8) {
    let a = _mm256_unpacklo_epi32(t[0], t[1]);
    let b = _mm256_unpackhi_epi32(t[0], t[1]);
    let c = _mm256_unpacklo_epi32(t[2], t[3]);
    let d = _mm256_unpackhi_epi32(t[2], t[3]);
    // SAFETY: 128 writable bytes at `out` (caller).
    unsafe {
        _mm256_storeu_si256(out.cast(), _mm256_unpacklo_epi64(a, c));
        _mm256_storeu_si256(out.add(32).cast(), _mm256_unpackhi_epi64(a, c));
        _mm256_storeu_si256(out.add(64).cast(), _mm256_unpacklo_epi64(b, d));
        _mm256_storeu_si256(out.add(96).cast(), _mm256_unpackhi_epi64(b, d));
    }
}

/// 256 floats to Q8_K as `act::q8k_block` does: (8 vectors of quants, d, 16 sums).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn hmax_ps(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)))
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn hmin_ps(v: __m256) -> f32 {
    let m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let m = _mm_min_ps(m, _mm_movehl_ps(m, m));
    _mm_cvtss_f32(_mm_min_ss(m, _mm_movehdup_ps(m)))
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn q8k_block(x: *const f32) -> ([__m256i; 8], f32, [i16; 16]) {
    let mut vmax = _mm256_set1_ps(f32::NEG_INFINITY);
    let mut vmin = _mm256_set1_ps(f32::INFINITY);
    for i in 0..32 {
        // SAFETY: 256 readable f32 at `x` (caller).
        let v = unsafe { _mm256_loadu_ps(x.add(8 * i)) };
        vmax = _mm256_max_ps(vmax, v);
        vmin = _mm256_min_ps(vmin, v);
    }
    let (hi, lo) = (hmax_ps(vmax), hmin_ps(vmin));
    let amax = hi.max(-lo);
    if amax == 0.0 {
        return ([_mm256_setzero_si256(); 8], 0.0, [0; 16]);
    }
    // The signed value of the first element of largest magnitude, as the scalar scan finds.
    let max = if hi > -lo {
        hi
    } else if -lo > hi {
        lo
    } else {
        // SAFETY: 256 readable f32 at `x`.
        let xs = unsafe { std::slice::from_raw_parts(x, QK_K) };
        xs.iter().copied().find(|v| v.abs() == amax).unwrap_or(hi)
    };
    let iscale = -127.0 / max;
    let isv = _mm256_set1_ps(iscale);
    let lim = _mm256_set1_epi32(127);
    let mut q = [_mm256_setzero_si256(); 8];
    let mut sums = [0i16; 16];
    for (c, qc) in q.iter_mut().enumerate() {
        let mut i = [_mm256_setzero_si256(); 4];
        for (k, ik) in i.iter_mut().enumerate() {
            // SAFETY: as above.
            let v = unsafe { _mm256_loadu_ps(x.add(32 * c + 8 * k)) };
            *ik = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(v, isv)), lim);
        }
        sums[2 * c] = hsum_epi32(_mm256_add_epi32(i[0], i[1])) as i16;
        sums[2 * c + 1] = hsum_epi32(_mm256_add_epi32(i[2], i[3])) as i16;
        *qc = pack_i32x32(i);
    }
    (q, 1.0 / iscale, sums)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize(fmt: ActFormat, x: &[f32], k: usize, group: bool, out: &mut [u8]) {
    let nt = if group { GROUP } else { 1 };
    let xp = x.as_ptr();
    let op = out.as_mut_ptr();
    let put = |off: usize, v: f32| {
        // SAFETY: offsets below are inside `out`, whose length the wrapper checked.
        unsafe { std::ptr::write_unaligned(op.add(off).cast::<f32>(), v) }
    };
    match fmt {
        ActFormat::F32 => act::quantize_scalar(fmt, x, k, group, out),
        ActFormat::Q8_0 | ActFormat::Q8_1 => {
            let nb = k / QK;
            let qs = nb * 8 * nt;
            for b in 0..nb {
                if group {
                    let mut t4 = [_mm256_setzero_si256(); GROUP];
                    for (t, tv) in t4.iter_mut().enumerate() {
                        // SAFETY: token t's block b is inside `x`.
                        let (q, d, s) = unsafe { q8_block(xp.add(t * k + b * QK)) };
                        *tv = q;
                        put(b * 32 + 4 * t, d);
                        put(b * 32 + 16 + 4 * t, s);
                    }
                    // SAFETY: the block's 128 bytes of quants are inside `out`.
                    unsafe { store_interleaved(t4, op.add(qs + b * 128)) };
                } else {
                    // SAFETY: block b is inside `x`; its 32 quant bytes are inside `out`.
                    unsafe {
                        let (q, d, s) = q8_block(xp.add(b * QK));
                        put(b * 8, d);
                        put(b * 8 + 4, s);
                        _mm256_storeu_si256(op.add(qs + b * QK).cast(), q);
                    }
                }
            }
        }
        ActFormat::Q8K => {
            let nb = k / QK_K;
            let bsec = nb * 4 * nt;
            let qsec = bsec + nb * 32 * nt;
            for b in 0..nb {
                if group {
                    let mut qv = [[_mm256_setzero_si256(); 8]; GROUP];
                    for (t, qt) in qv.iter_mut().enumerate() {
                        // SAFETY: token t's block b is inside `x`; the sums' bytes are inside `out`.
                        unsafe {
                            let (q, d, sums) = q8k_block(xp.add(t * k + b * QK_K));
                            *qt = q;
                            put(b * 16 + 4 * t, d);
                            for (g, &s) in sums.iter().enumerate() {
                                let off = bsec + 2 * (b * 64 + (g / 2) * 8 + t * 2 + g % 2);
                                std::ptr::write_unaligned(op.add(off).cast::<i16>(), s);
                            }
                        }
                    }
                    for c in 0..8 {
                        let t4 = qv.map(|q| q[c]);
                        // SAFETY: sub-block c's 128 bytes are inside `out`.
                        unsafe { store_interleaved(t4, op.add(qsec + b * 1024 + c * 128)) };
                    }
                } else {
                    // SAFETY: block b is inside `x`; its bytes are inside `out`.
                    unsafe {
                        let (q, d, sums) = q8k_block(xp.add(b * QK_K));
                        put(4 * b, d);
                        std::ptr::copy_nonoverlapping(
                            sums.as_ptr().cast::<u8>(),
                            op.add(bsec + 32 * b),
                            32,
                        );
                        for (c, qc) in q.iter().enumerate() {
                            _mm256_storeu_si256(op.add(qsec + b * QK_K + 32 * c).cast(), *qc);
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Attention helpers

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn axpy<F: FloatW>(out: &mut [f32], alpha: f32, x: *const u8) {
    let n = out.len();
    let o = out.as_mut_ptr();
    let av = _mm256_set1_ps(alpha);
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: elements i..i+8 of `out` and of `x` (same length) are in bounds.
        unsafe {
            let v = _mm256_fmadd_ps(F::load8(x.add(i * F::BYTES)), av, _mm256_loadu_ps(o.add(i)));
            _mm256_storeu_ps(o.add(i), v);
        }
        i += 8;
    }
    while i < n {
        // SAFETY: as above, one element.
        out[i] += alpha * unsafe { F::load1(x.add(i * F::BYTES)) };
        i += 1;
    }
}

// ---------------------------------------------------------------------------------------
// Safe entry points (the table's function pointers)

/// Checks the sizes every kernel relies on; a violation is a bug in the caller.
fn check(ty: GgmlType, w: &[u8], act: &[u8], k: usize, rows: usize, act_bytes: usize) {
    let rb = k / ty.block_size() * ty.type_size();
    assert!(k % ty.block_size() == 0 && k % 32 == 0 || ty.block_size() == 1);
    assert!(w.len() >= rows * rb, "weights too short");
    assert!(act.len() >= act_bytes, "activations too short");
}

fn act_bytes(ty: GgmlType, k: usize) -> usize {
    let fmt = ActFormat::for_weight(ty).unwrap_or(ActFormat::F32);
    act::row_bytes(fmt, k)
}

macro_rules! leg_entry {
    ($w:ty) => {{
        fn v(w: &[u8], act: &[u8], k: usize, out: &mut [f32]) {
            let ty = <$w as Leg>::TY;
            check(ty, w, act, k, out.len(), act_bytes(ty, k));
            // SAFETY: the CPU has AVX2/FMA/F16C (this table is only handed out after
            // detection) and the sizes were just checked.
            unsafe { vec_leg::<$w>(w.as_ptr(), act.as_ptr(), k / QK, out) }
        }
        fn g(w: &[u8], act: &[u8], k: usize, ng: usize, out: &mut [f32]) {
            let ty = <$w as Leg>::TY;
            assert!(ng > 0 && out.len() % (ng * GROUP) == 0);
            check(
                ty,
                w,
                act,
                k,
                out.len() / (ng * GROUP),
                ng * GROUP * act_bytes(ty, k),
            );
            // SAFETY: as above.
            unsafe { gemm_leg::<$w>(w.as_ptr(), act.as_ptr(), k / QK, ng, out) }
        }
        Some(MatFns { vec: v, gemm: g })
    }};
}

macro_rules! k_entry {
    ($w:ty) => {{
        fn v(w: &[u8], act: &[u8], k: usize, out: &mut [f32]) {
            let ty = <$w as KQuant>::TY;
            check(ty, w, act, k, out.len(), act_bytes(ty, k));
            // SAFETY: AVX2/FMA/F16C detected (see `leg_entry`); sizes checked.
            unsafe { vec_k::<$w>(w.as_ptr(), act.as_ptr(), k / QK_K, out) }
        }
        fn g(w: &[u8], act: &[u8], k: usize, ng: usize, out: &mut [f32]) {
            let ty = <$w as KQuant>::TY;
            assert!(ng > 0 && out.len() % (ng * GROUP) == 0);
            check(
                ty,
                w,
                act,
                k,
                out.len() / (ng * GROUP),
                ng * GROUP * act_bytes(ty, k),
            );
            // SAFETY: as above.
            unsafe { gemm_k::<$w>(w.as_ptr(), act.as_ptr(), k / QK_K, ng, out) }
        }
        Some(MatFns { vec: v, gemm: g })
    }};
}

macro_rules! float_entry {
    ($w:ty, $ty:expr) => {{
        fn v(w: &[u8], act: &[u8], k: usize, out: &mut [f32]) {
            check($ty, w, act, k, out.len(), 4 * k);
            // SAFETY: AVX2/FMA/F16C detected; sizes checked. `act` holds f32 values written
            // as native-endian bytes; they are read unaligned.
            unsafe { vec_float::<$w>(w.as_ptr(), act.as_ptr().cast(), k, out) }
        }
        fn g(w: &[u8], act: &[u8], k: usize, ng: usize, out: &mut [f32]) {
            assert!(ng > 0 && out.len() % (ng * GROUP) == 0);
            check($ty, w, act, k, out.len() / (ng * GROUP), ng * GROUP * 4 * k);
            // SAFETY: as above.
            unsafe { gemm_float::<$w>(w.as_ptr(), act.as_ptr().cast(), k, ng, out) }
        }
        Some(MatFns { vec: v, gemm: g })
    }};
}

use super::super::MatFns;

pub(super) const MATS: [Option<MatFns>; super::super::N_TYPES] = {
    let mut m = super::super::SCALAR_MATS;
    m[GgmlType::Q4_0 as usize] = leg_entry!(Q4_0);
    m[GgmlType::Q4_1 as usize] = leg_entry!(Q4_1);
    m[GgmlType::Q5_0 as usize] = leg_entry!(Q5_0);
    m[GgmlType::Q5_1 as usize] = leg_entry!(Q5_1);
    m[GgmlType::Q8_0 as usize] = leg_entry!(Q8_0);
    m[GgmlType::IQ4_NL as usize] = leg_entry!(IQ4NL);
    m[GgmlType::Q2_K as usize] = k_entry!(Q2K);
    m[GgmlType::Q3_K as usize] = k_entry!(Q3K);
    m[GgmlType::Q4_K as usize] = k_entry!(Q4K);
    m[GgmlType::Q5_K as usize] = k_entry!(Q5K);
    m[GgmlType::Q6_K as usize] = k_entry!(Q6K);
    m[GgmlType::IQ4_XS as usize] = k_entry!(IQ4XS);
    m[GgmlType::F32 as usize] = float_entry!(F32W, GgmlType::F32);
    m[GgmlType::F16 as usize] = float_entry!(F16W, GgmlType::F16);
    m[GgmlType::BF16 as usize] = float_entry!(Bf16W, GgmlType::BF16);
    m
};

pub(super) fn quantize_entry(fmt: ActFormat, x: &[f32], k: usize, group: bool, out: &mut [u8]) {
    let nt = if group { GROUP } else { 1 };
    assert!(k % fmt.block() == 0 && x.len() == nt * k && out.len() >= nt * act::row_bytes(fmt, k));
    // SAFETY: AVX2/FMA/F16C detected; sizes checked.
    unsafe { quantize(fmt, x, k, group, out) }
}

pub(super) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    // SAFETY: AVX2/FMA/F16C detected; `n` elements of both are readable.
    unsafe { dot_float::<F32W>(a.as_ptr().cast(), b.as_ptr(), n) }
}

pub(super) fn dot_f16(a: &[f16], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    // SAFETY: as above; f16 is two bytes.
    unsafe { dot_float::<F16W>(a.as_ptr().cast(), b.as_ptr(), n) }
}

pub(super) fn axpy_f32(out: &mut [f32], alpha: f32, x: &[f32]) {
    let n = out.len().min(x.len());
    // SAFETY: AVX2/FMA/F16C detected; `n` elements of both are in bounds.
    unsafe { axpy::<F32W>(&mut out[..n], alpha, x.as_ptr().cast()) }
}

pub(super) fn axpy_f16(out: &mut [f32], alpha: f32, x: &[f16]) {
    let n = out.len().min(x.len());
    // SAFETY: as above.
    unsafe { axpy::<F16W>(&mut out[..n], alpha, x.as_ptr().cast()) }
}
