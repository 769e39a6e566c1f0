//! AArch64 NEON kernels, shared by the three ARM kernel sets.
//!
//! The loops are generic over an [`Isa`]: how 16 weights meet 16 activations. Baseline
//! NEON (Cortex-A72 / Raspberry Pi 4 and every other ARMv8-A) widens with `smull` and
//! pairwise-adds with `sadalp`; with the dotprod extension one `sdot` does the same work.
//! Weights are unpacked to signed bytes (offsets such as Q4_0's -8 applied), so no block
//! needs correcting afterwards except the minimums of Q4_1/Q5_1 and the k-quants.
//!
//! Decode puts elements in lanes and reduces each row once. Prefill puts tokens in lanes:
//! the interleaved activation layout (`act`) holds 4 elements of 4 tokens in each 16
//! bytes, multiplied by 4 weights broadcast across the lanes (`sdot` by element, or a
//! `dup` and `smull` on baseline NEON).
//!
//! NEON is part of the AArch64 base architecture, so these are plain `unsafe fn`s; the
//! only preconditions are the buffer sizes the safe entry points check.

use std::arch::aarch64::*;
use std::arch::asm;
use std::ptr::read_unaligned;

use half::f16;

use super::super::act::{self, GROUP, Q8K_BLOCK, Q8_BLOCK};
use super::super::ActFormat;
use crate::quant::{iq4xs_scales, GgmlType, KVALUES_IQ4NL, QK, QK_K};

// ---------------------------------------------------------------------------------------
// Helpers

/// Four f16 (as raw bits) to f32 with `fcvtl`, part of base ARMv8 (the Rust intrinsic for
/// it needs an unstable f16 type).
#[inline(always)]
pub(super) unsafe fn cvt_f16x4(h: uint16x4_t) -> float32x4_t {
    let r: float32x4_t;
    // SAFETY: fcvtl is in every AArch64 CPU; it reads and writes registers only.
    unsafe {
        asm!("fcvtl {0:v}.4s, {1:v}.4h", out(vreg) r, in(vreg) h, options(pure, nomem, nostack));
    }
    r
}

/// `[a, b, 0, 0]` from two f16 at `p`.
#[inline(always)]
pub(super) unsafe fn f16x2(p: *const u8) -> float32x4_t {
    // SAFETY: the caller guarantees 4 readable bytes at `p`.
    let v = unsafe { read_unaligned(p.cast::<u32>()) };
    // SAFETY: register-only conversion.
    unsafe { cvt_f16x4(vcreate_u16(v as u64)) }
}

/// One f16 at `p` as f32.
#[inline(always)]
pub(super) unsafe fn f16x1(p: *const u8) -> f32 {
    // SAFETY: the caller guarantees 2 readable bytes at `p`.
    let v = unsafe { read_unaligned(p.cast::<u16>()) };
    // SAFETY: register-only conversion.
    unsafe { vgetq_lane_f32(cvt_f16x4(vcreate_u16(v as u64)), 0) }
}

#[inline(always)]
pub(super) unsafe fn f32_at(p: *const u8) -> f32 {
    // SAFETY: the caller guarantees 4 readable bytes at `p`.
    unsafe { read_unaligned(p.cast::<f32>()) }
}

#[inline(always)]
pub(super) unsafe fn ld(p: *const u8) -> int8x16_t {
    // SAFETY: the caller guarantees 16 readable bytes at `p`.
    unsafe { vld1q_s8(p.cast()) }
}

#[inline(always)]
pub(super) unsafe fn ldf(p: *const u8) -> float32x4_t {
    // SAFETY: the caller guarantees 16 readable bytes at `p`.
    unsafe { vld1q_f32(p.cast()) }
}

/// Bytes 0..16 of a register in which bit `i` of `bits` (16 bits) set gives 0x10 in byte `i`.
#[inline(always)]
unsafe fn bits16_to_0x10(bits: u32) -> uint8x16_t {
    let v = vcombine_u8(vdup_n_u8(bits as u8), vdup_n_u8((bits >> 8) as u8));
    let mask = vreinterpretq_u8_u64(vdupq_n_u64(0x8040_2010_0804_0201));
    vandq_u8(vtstq_u8(v, mask), vdupq_n_u8(0x10))
}

// ---------------------------------------------------------------------------------------
// Instruction-set primitives

/// How 16 weights meet 16 activations.
pub(super) trait Isa {
    /// `acc` plus products of `w` and `a`, summed in some partition over 4 lanes.
    unsafe fn dot16(acc: int32x4_t, w: int8x16_t, a: int8x16_t) -> int32x4_t;
    /// Lanes = tokens 0..4: `acc[t]` plus the products of `w` (16 weights, element order)
    /// with half `h` (elements `16h..16h+16`) of token t in an interleaved 32-element
    /// sub-block at `aq` (128 bytes).
    unsafe fn gdot16(acc: int32x4_t, w: int8x16_t, aq: *const u8, h: usize) -> int32x4_t;
}

/// Baseline NEON.
pub(super) struct Neon;

impl Isa for Neon {
    #[inline(always)]
    unsafe fn dot16(acc: int32x4_t, w: int8x16_t, a: int8x16_t) -> int32x4_t {
        // Two products per 16-bit lane fit: |w·a| <= 128·127.
        let p = vmull_s8(vget_low_s8(w), vget_low_s8(a));
        let p = vmlal_high_s8(p, w, a);
        vpadalq_s16(acc, p)
    }

    #[inline(always)]
    unsafe fn gdot16(acc: int32x4_t, w: int8x16_t, aq: *const u8, h: usize) -> int32x4_t {
        let w32 = vreinterpretq_s32_s8(w);
        // Broadcast each 4-weight group across the lanes, against chunk 2j+h (group j+4h).
        let w0 = vreinterpretq_s8_s32(vdupq_laneq_s32::<0>(w32));
        let w1 = vreinterpretq_s8_s32(vdupq_laneq_s32::<1>(w32));
        let w2 = vreinterpretq_s8_s32(vdupq_laneq_s32::<2>(w32));
        let w3 = vreinterpretq_s8_s32(vdupq_laneq_s32::<3>(w32));
        // SAFETY: the 128-byte sub-block at `aq` is readable (caller).
        let (a0, a1, a2, a3) = unsafe {
            (
                ld(aq.add(16 * h)),
                ld(aq.add(32 + 16 * h)),
                ld(aq.add(64 + 16 * h)),
                ld(aq.add(96 + 16 * h)),
            )
        };
        // Tokens 0 and 1 are the low 8 bytes of each chunk, tokens 2 and 3 the high; two
        // products per 16-bit lane fit.
        let lo01 = vmlal_s8(
            vmull_s8(vget_low_s8(a0), vget_low_s8(w0)),
            vget_low_s8(a1),
            vget_low_s8(w1),
        );
        let lo23 = vmlal_s8(
            vmull_s8(vget_low_s8(a2), vget_low_s8(w2)),
            vget_low_s8(a3),
            vget_low_s8(w3),
        );
        let hi01 = vmlal_high_s8(vmull_high_s8(a0, w0), a1, w1);
        let hi23 = vmlal_high_s8(vmull_high_s8(a2, w2), a3, w3);
        let lo = vpadalq_s16(vpaddlq_s16(lo01), lo23);
        let hi = vpadalq_s16(vpaddlq_s16(hi01), hi23);
        // lo = [t0, t0, t1, t1] partials, hi = [t2, t2, t3, t3].
        vaddq_s32(acc, vpaddq_s32(lo, hi))
    }
}

// ---------------------------------------------------------------------------------------
// Legacy 32-element blocks

/// A 32-element weight block unpacked to signed bytes.
pub(super) trait Leg {
    const TY: GgmlType;
    const BYTES: usize;
    /// Whether the block has a minimum (`w = q·d + m`), applied through activation sums.
    const HAS_MIN: bool;
    /// `(d, m)`; `m` is 0 without a minimum.
    unsafe fn dm(p: *const u8) -> (f32, f32);
    /// Weights of elements 0..16 and 16..32 (offsets applied).
    unsafe fn unpack(p: *const u8) -> [int8x16_t; 2];
}

pub(super) struct Q4_0;
pub(super) struct Q4_1;
pub(super) struct Q5_0;
pub(super) struct Q5_1;
pub(super) struct Q8_0;
pub(super) struct IQ4NL;

#[inline(always)]
unsafe fn nibbles(p: *const u8) -> [uint8x16_t; 2] {
    // SAFETY: 16 readable bytes at `p` (caller).
    let q = unsafe { vld1q_u8(p) };
    [vandq_u8(q, vdupq_n_u8(0x0F)), vshrq_n_u8(q, 4)]
}

impl Leg for Q4_0 {
    const TY: GgmlType = GgmlType::Q4_0;
    const BYTES: usize = 18;
    const HAS_MIN: bool = false;
    #[inline(always)]
    unsafe fn dm(p: *const u8) -> (f32, f32) {
        // SAFETY: the block starts with its f16 scale.
        (unsafe { f16x1(p) }, 0.0)
    }
    #[inline(always)]
    unsafe fn unpack(p: *const u8) -> [int8x16_t; 2] {
        // SAFETY: 16 bytes of quants at offset 2.
        let [lo, hi] = unsafe { nibbles(p.add(2)) };
        let e = vdupq_n_s8(8);
        [
            vsubq_s8(vreinterpretq_s8_u8(lo), e),
            vsubq_s8(vreinterpretq_s8_u8(hi), e),
        ]
    }
}

impl Leg for Q4_1 {
    const TY: GgmlType = GgmlType::Q4_1;
    const BYTES: usize = 20;
    const HAS_MIN: bool = true;
    #[inline(always)]
    unsafe fn dm(p: *const u8) -> (f32, f32) {
        // SAFETY: d and m are the first 4 bytes.
        let v = unsafe { f16x2(p) };
        (vgetq_lane_f32(v, 0), vgetq_lane_f32(v, 1))
    }
    #[inline(always)]
    unsafe fn unpack(p: *const u8) -> [int8x16_t; 2] {
        // SAFETY: 16 bytes of quants at offset 4.
        let [lo, hi] = unsafe { nibbles(p.add(4)) };
        [vreinterpretq_s8_u8(lo), vreinterpretq_s8_u8(hi)]
    }
}

impl Leg for Q5_0 {
    const TY: GgmlType = GgmlType::Q5_0;
    const BYTES: usize = 22;
    const HAS_MIN: bool = false;
    #[inline(always)]
    unsafe fn dm(p: *const u8) -> (f32, f32) {
        // SAFETY: the block starts with its f16 scale.
        (unsafe { f16x1(p) }, 0.0)
    }
    #[inline(always)]
    unsafe fn unpack(p: *const u8) -> [int8x16_t; 2] {
        // SAFETY: qh at offset 2, quants at offset 6, inside the block.
        let (qh, [lo, hi]) = unsafe { (read_unaligned(p.add(2).cast::<u32>()), nibbles(p.add(6))) };
        let lo = vorrq_u8(lo, bits16_to_0x10(qh));
        let hi = vorrq_u8(hi, bits16_to_0x10(qh >> 16));
        let e = vdupq_n_s8(16);
        [
            vsubq_s8(vreinterpretq_s8_u8(lo), e),
            vsubq_s8(vreinterpretq_s8_u8(hi), e),
        ]
    }
}

impl Leg for Q5_1 {
    const TY: GgmlType = GgmlType::Q5_1;
    const BYTES: usize = 24;
    const HAS_MIN: bool = true;
    #[inline(always)]
    unsafe fn dm(p: *const u8) -> (f32, f32) {
        // SAFETY: d and m are the first 4 bytes.
        let v = unsafe { f16x2(p) };
        (vgetq_lane_f32(v, 0), vgetq_lane_f32(v, 1))
    }
    #[inline(always)]
    unsafe fn unpack(p: *const u8) -> [int8x16_t; 2] {
        // SAFETY: qh at offset 4, quants at offset 8, inside the block.
        let (qh, [lo, hi]) = unsafe { (read_unaligned(p.add(4).cast::<u32>()), nibbles(p.add(8))) };
        [
            vreinterpretq_s8_u8(vorrq_u8(lo, bits16_to_0x10(qh))),
            vreinterpretq_s8_u8(vorrq_u8(hi, bits16_to_0x10(qh >> 16))),
        ]
    }
}

impl Leg for Q8_0 {
    const TY: GgmlType = GgmlType::Q8_0;
    const BYTES: usize = 34;
    const HAS_MIN: bool = false;
    #[inline(always)]
    unsafe fn dm(p: *const u8) -> (f32, f32) {
        // SAFETY: the block starts with its f16 scale.
        (unsafe { f16x1(p) }, 0.0)
    }
    #[inline(always)]
    unsafe fn unpack(p: *const u8) -> [int8x16_t; 2] {
        // SAFETY: 32 quants at offset 2.
        unsafe { [ld(p.add(2)), ld(p.add(18))] }
    }
}

/// 16 bytes of IQ4_NL indices (an IQ4_NL block's, or one IQ4_XS group's) to the values
/// of elements 0..16 and 16..32: one `tbl` lookup per half.
#[inline(always)]
unsafe fn iq4_values(p: *const u8) -> [int8x16_t; 2] {
    // SAFETY: the table is 16 bytes; 16 readable bytes at `p` (caller).
    let (t, [lo, hi]) = unsafe { (vld1q_s8(KVALUES_IQ4NL.as_ptr()), nibbles(p)) };
    [vqtbl1q_s8(t, lo), vqtbl1q_s8(t, hi)]
}

impl Leg for IQ4NL {
    const TY: GgmlType = GgmlType::IQ4_NL;
    const BYTES: usize = 18;
    const HAS_MIN: bool = false;
    #[inline(always)]
    unsafe fn dm(p: *const u8) -> (f32, f32) {
        // SAFETY: the block starts with its f16 scale.
        (unsafe { f16x1(p) }, 0.0)
    }
    #[inline(always)]
    unsafe fn unpack(p: *const u8) -> [int8x16_t; 2] {
        // SAFETY: 16 bytes of indices at offset 2.
        unsafe { iq4_values(p.add(2)) }
    }
}

/// Matrix-vector product, two rows at a time (shared activation loads).
#[inline(always)]
pub(super) unsafe fn vec_leg<W: Leg, I: Isa>(
    w: *const u8,
    act: *const u8,
    nb: usize,
    out: &mut [f32],
) {
    let rb = nb * W::BYTES;
    let qs = act.wrapping_add(nb * 8);
    let rows = out.len();
    let mut r = 0;
    while r < rows {
        let two = r + 1 < rows;
        let r0 = w.wrapping_add(r * rb);
        let r1 = if two {
            w.wrapping_add((r + 1) * rb)
        } else {
            r0
        };
        let (mut acc0, mut acc1) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
        let (mut m0, mut m1) = (0.0f32, 0.0f32);
        for b in 0..nb {
            // SAFETY: block b of both rows and of the activations are in bounds (the
            // entry point checked the sizes).
            unsafe {
                let a = [ld(qs.add(32 * b)), ld(qs.add(32 * b + 16))];
                let (da, sa) = (f32_at(act.add(8 * b)), f32_at(act.add(8 * b + 4)));
                let (p0, p1) = (r0.add(b * W::BYTES), r1.add(b * W::BYTES));
                let w0 = W::unpack(p0);
                let w1 = W::unpack(p1);
                let i0 = I::dot16(I::dot16(vdupq_n_s32(0), w0[0], a[0]), w0[1], a[1]);
                let i1 = I::dot16(I::dot16(vdupq_n_s32(0), w1[0], a[0]), w1[1], a[1]);
                let (d0, mm0) = W::dm(p0);
                let (d1, mm1) = W::dm(p1);
                acc0 = vfmaq_n_f32(acc0, vcvtq_f32_s32(i0), d0 * da);
                acc1 = vfmaq_n_f32(acc1, vcvtq_f32_s32(i1), d1 * da);
                if W::HAS_MIN {
                    m0 += mm0 * sa;
                    m1 += mm1 * sa;
                }
            }
        }
        out[r] = vaddvq_f32(acc0) + m0;
        if two {
            out[r + 1] = vaddvq_f32(acc1) + m1;
        }
        r += 2;
    }
}

/// Groups of 4 tokens (lanes = tokens): `out[t * rows + r]`.
#[inline(always)]
pub(super) unsafe fn gemm_leg<W: Leg, I: Isa>(
    w: *const u8,
    act: *const u8,
    nb: usize,
    ng: usize,
    out: &mut [f32],
) {
    let rb = nb * W::BYTES;
    let gstride = GROUP * nb * Q8_BLOCK;
    let rows = out.len() / (ng * GROUP);
    for g in 0..ng {
        let ga = act.wrapping_add(g * gstride);
        let aq = ga.wrapping_add(nb * 32);
        for r in 0..rows {
            let row = w.wrapping_add(r * rb);
            let mut acc = vdupq_n_f32(0.0);
            for b in 0..nb {
                // SAFETY: block b of row r and of group g are in bounds (entry checks).
                unsafe {
                    let p = row.add(b * W::BYTES);
                    let q = W::unpack(p);
                    let ab = aq.add(128 * b);
                    let s = I::gdot16(I::gdot16(vdupq_n_s32(0), q[0], ab, 0), q[1], ab, 1);
                    let (d, m) = W::dm(p);
                    let da = ldf(ga.add(32 * b));
                    acc = vfmaq_f32(acc, vcvtq_f32_s32(s), vmulq_n_f32(da, d));
                    if W::HAS_MIN {
                        acc = vfmaq_n_f32(acc, ldf(ga.add(32 * b + 16)), m);
                    }
                }
            }
            let mut res = [0f32; 4];
            // SAFETY: `res` holds 4 f32.
            unsafe { vst1q_f32(res.as_mut_ptr(), acc) };
            for (t, v) in res.iter().enumerate() {
                out[(g * GROUP + t) * rows + r] = *v;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// k-quants

const KMASK1: u32 = 0x3f3f_3f3f;
const KMASK2: u32 = 0x0f0f_0f0f;
const KMASK3: u32 = 0x0303_0303;

/// Q4_K/Q5_K scales: 8 scales then 8 minimums.
#[inline(always)]
pub(super) fn k4_scales(s: &[u8; 12]) -> [u8; 16] {
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
    let mut out = [0u8; 16];
    for (i, v) in u.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
    }
    out
}

/// Q3_K scales, unbiased.
#[inline(always)]
pub(super) fn k3_scales(s: &[u8; 12]) -> [i8; 16] {
    let a0 = u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    let a1 = u32::from_le_bytes([s[4], s[5], s[6], s[7]]);
    let t = u32::from_le_bytes([s[8], s[9], s[10], s[11]]);
    let aux = [
        (a0 & KMASK2) | ((t & KMASK3) << 4),
        (a1 & KMASK2) | (((t >> 2) & KMASK3) << 4),
        ((a0 >> 4) & KMASK2) | (((t >> 4) & KMASK3) << 4),
        ((a1 >> 4) & KMASK2) | (((t >> 6) & KMASK3) << 4),
    ];
    let mut out = [0i8; 16];
    for (i, v) in aux.iter().enumerate() {
        for (k, b) in v.to_le_bytes().iter().enumerate() {
            out[4 * i + k] = (*b as i8).wrapping_sub(32);
        }
    }
    out
}

/// One k-quant block as sixteen 16-element weight groups (signed bytes, element order),
/// their integer scales, and the minimum scales (`dmin`-weighted) if any.
pub(super) struct KBlock {
    pub w: [int8x16_t; 16],
    /// Scale of each 16-group (Q4_K/Q5_K repeat each 32-group's scale twice).
    pub sc: [i32; 16],
    /// Minimum of each 16-group (0 without minimums).
    pub mn: [i32; 16],
    /// `d` and `dmin` of the block.
    pub d: f32,
    pub dmin: f32,
}

pub(super) trait KQuant {
    const TY: GgmlType;
    const BYTES: usize;
    const HAS_MIN: bool;
    unsafe fn block(p: *const u8) -> KBlock;
}

pub(super) struct Q2K;
pub(super) struct Q3K;
pub(super) struct Q4K;
pub(super) struct Q5K;
pub(super) struct Q6K;
pub(super) struct IQ4XS;

impl KQuant for Q4K {
    const TY: GgmlType = GgmlType::Q4_K;
    const BYTES: usize = 144;
    const HAS_MIN: bool = true;
    #[inline(always)]
    unsafe fn block(p: *const u8) -> KBlock {
        // SAFETY: `p` is a 144-byte block.
        unsafe {
            let sm = k4_scales(&*(p.add(4).cast::<[u8; 12]>()));
            let dd = f16x2(p);
            let mut w = [vdupq_n_s8(0); 16];
            let m4 = vdupq_n_u8(0x0F);
            for j in 0..4 {
                let q0 = vld1q_u8(p.add(16 + 32 * j));
                let q1 = vld1q_u8(p.add(32 + 32 * j));
                w[4 * j] = vreinterpretq_s8_u8(vandq_u8(q0, m4));
                w[4 * j + 1] = vreinterpretq_s8_u8(vandq_u8(q1, m4));
                w[4 * j + 2] = vreinterpretq_s8_u8(vshrq_n_u8(q0, 4));
                w[4 * j + 3] = vreinterpretq_s8_u8(vshrq_n_u8(q1, 4));
            }
            let mut sc = [0i32; 16];
            let mut mn = [0i32; 16];
            for g in 0..16 {
                sc[g] = sm[g / 2] as i32;
                mn[g] = sm[8 + g / 2] as i32;
            }
            KBlock {
                w,
                sc,
                mn,
                d: vgetq_lane_f32(dd, 0),
                dmin: vgetq_lane_f32(dd, 1),
            }
        }
    }
}

impl KQuant for Q5K {
    const TY: GgmlType = GgmlType::Q5_K;
    const BYTES: usize = 176;
    const HAS_MIN: bool = true;
    #[inline(always)]
    unsafe fn block(p: *const u8) -> KBlock {
        // SAFETY: `p` is a 176-byte block.
        unsafe {
            let sm = k4_scales(&*(p.add(4).cast::<[u8; 12]>()));
            let dd = f16x2(p);
            let qh = [vld1q_u8(p.add(16)), vld1q_u8(p.add(32))];
            let mut w = [vdupq_n_s8(0); 16];
            let m4 = vdupq_n_u8(0x0F);
            let m16 = vdupq_n_u8(0x10);
            for j in 0..4 {
                let q = [vld1q_u8(p.add(48 + 32 * j)), vld1q_u8(p.add(64 + 32 * j))];
                let b0 = vdupq_n_u8(1 << (2 * j));
                let b1 = vdupq_n_u8(2 << (2 * j));
                for h in 0..2 {
                    let lo = vorrq_u8(vandq_u8(q[h], m4), vandq_u8(vtstq_u8(qh[h], b0), m16));
                    let hi = vorrq_u8(vshrq_n_u8(q[h], 4), vandq_u8(vtstq_u8(qh[h], b1), m16));
                    w[4 * j + h] = vreinterpretq_s8_u8(lo);
                    w[4 * j + 2 + h] = vreinterpretq_s8_u8(hi);
                }
            }
            let mut sc = [0i32; 16];
            let mut mn = [0i32; 16];
            for g in 0..16 {
                sc[g] = sm[g / 2] as i32;
                mn[g] = sm[8 + g / 2] as i32;
            }
            KBlock {
                w,
                sc,
                mn,
                d: vgetq_lane_f32(dd, 0),
                dmin: vgetq_lane_f32(dd, 1),
            }
        }
    }
}

impl KQuant for Q6K {
    const TY: GgmlType = GgmlType::Q6_K;
    const BYTES: usize = 210;
    const HAS_MIN: bool = false;
    #[inline(always)]
    unsafe fn block(p: *const u8) -> KBlock {
        // SAFETY: `p` is a 210-byte block.
        unsafe {
            let mut w = [vdupq_n_s8(0); 16];
            let m4 = vdupq_n_u8(0x0F);
            let m3 = vdupq_n_u8(0x03);
            let e = vdupq_n_s8(32);
            for n in 0..2 {
                for h in 0..2 {
                    let ql0 = vld1q_u8(p.add(64 * n + 16 * h));
                    let ql1 = vld1q_u8(p.add(64 * n + 32 + 16 * h));
                    let qh = vld1q_u8(p.add(128 + 32 * n + 16 * h));
                    let v = [
                        vorrq_u8(vandq_u8(ql0, m4), vshlq_n_u8(vandq_u8(qh, m3), 4)),
                        vorrq_u8(
                            vandq_u8(ql1, m4),
                            vshlq_n_u8(vandq_u8(vshrq_n_u8(qh, 2), m3), 4),
                        ),
                        vorrq_u8(
                            vshrq_n_u8(ql0, 4),
                            vshlq_n_u8(vandq_u8(vshrq_n_u8(qh, 4), m3), 4),
                        ),
                        vorrq_u8(vshrq_n_u8(ql1, 4), vshlq_n_u8(vshrq_n_u8(qh, 6), 4)),
                    ];
                    for (i, v) in v.iter().enumerate() {
                        // Chunk 4n+i (32 elements), 16-group h of it.
                        w[2 * (4 * n + i) + h] = vsubq_s8(vreinterpretq_s8_u8(*v), e);
                    }
                }
            }
            let mut sc = [0i32; 16];
            for (g, s) in sc.iter_mut().enumerate() {
                *s = *p.add(192 + g) as i8 as i32;
            }
            KBlock {
                w,
                sc,
                mn: [0; 16],
                d: f16x1(p.add(208)),
                dmin: 0.0,
            }
        }
    }
}

impl KQuant for Q2K {
    const TY: GgmlType = GgmlType::Q2_K;
    const BYTES: usize = 84;
    const HAS_MIN: bool = true;
    #[inline(always)]
    unsafe fn block(p: *const u8) -> KBlock {
        // SAFETY: `p` is an 84-byte block.
        unsafe {
            let mut w = [vdupq_n_s8(0); 16];
            let m3 = vdupq_n_u8(3);
            for n in 0..2 {
                for h in 0..2 {
                    let q = vld1q_u8(p.add(16 + 32 * n + 16 * h));
                    let v = [
                        vandq_u8(q, m3),
                        vandq_u8(vshrq_n_u8(q, 2), m3),
                        vandq_u8(vshrq_n_u8(q, 4), m3),
                        vshrq_n_u8(q, 6),
                    ];
                    for (j, v) in v.iter().enumerate() {
                        w[2 * (4 * n + j) + h] = vreinterpretq_s8_u8(*v);
                    }
                }
            }
            let mut sc = [0i32; 16];
            let mut mn = [0i32; 16];
            for g in 0..16 {
                let s = *p.add(g);
                sc[g] = (s & 0xF) as i32;
                mn[g] = (s >> 4) as i32;
            }
            let dd = f16x2(p.add(80));
            KBlock {
                w,
                sc,
                mn,
                d: vgetq_lane_f32(dd, 0),
                dmin: vgetq_lane_f32(dd, 1),
            }
        }
    }
}

impl KQuant for Q3K {
    const TY: GgmlType = GgmlType::Q3_K;
    const BYTES: usize = 110;
    const HAS_MIN: bool = false;
    #[inline(always)]
    unsafe fn block(p: *const u8) -> KBlock {
        // SAFETY: `p` is a 110-byte block.
        unsafe {
            let s = k3_scales(&*(p.add(96).cast::<[u8; 12]>()));
            let mut w = [vdupq_n_s8(0); 16];
            let m3 = vdupq_n_u8(3);
            let four = vdupq_n_u8(4);
            for n in 0..2 {
                for h in 0..2 {
                    let q = vld1q_u8(p.add(32 + 32 * n + 16 * h));
                    let hm = vld1q_u8(p.add(16 * h));
                    for j in 0..4 {
                        let lo = vandq_u8(vshlq_u8(q, vdupq_n_s8(-2 * j as i8)), m3);
                        // A clear hmask bit means the value is 4 lower.
                        let set = vtstq_u8(hm, vdupq_n_u8(1 << (4 * n + j)));
                        let sub = vbicq_u8(four, set);
                        w[2 * (4 * n + j) + h] =
                            vsubq_s8(vreinterpretq_s8_u8(lo), vreinterpretq_s8_u8(sub));
                    }
                }
            }
            let mut sc = [0i32; 16];
            for (g, v) in sc.iter_mut().enumerate() {
                *v = s[g] as i32;
            }
            KBlock {
                w,
                sc,
                mn: [0; 16],
                d: f16x1(p.add(108)),
                dmin: 0.0,
            }
        }
    }
}

impl KQuant for IQ4XS {
    const TY: GgmlType = GgmlType::IQ4_XS;
    const BYTES: usize = 136;
    const HAS_MIN: bool = false;
    #[inline(always)]
    unsafe fn block(p: *const u8) -> KBlock {
        // SAFETY: `p` is a 136-byte block: d, scales_h, scales_l, then 8 groups of 16
        // bytes of indices.
        unsafe {
            let s = iq4xs_scales(
                read_unaligned(p.add(2).cast::<u16>()),
                read_unaligned(p.add(4).cast::<[u8; 4]>()),
            );
            let mut w = [vdupq_n_s8(0); 16];
            let mut sc = [0i32; 16];
            for ib in 0..8 {
                let [lo, hi] = iq4_values(p.add(8 + 16 * ib));
                w[2 * ib] = lo;
                w[2 * ib + 1] = hi;
                sc[2 * ib] = s[ib] as i32;
                sc[2 * ib + 1] = s[ib] as i32;
            }
            KBlock {
                w,
                sc,
                mn: [0; 16],
                d: f16x1(p),
                dmin: 0.0,
            }
        }
    }
}

/// Σ mn[g] · bsum[g] for one token (sums of 16 in the single-token layout).
#[inline(always)]
unsafe fn min_dot1(bs: *const u8, mn: &[i32; 16]) -> i32 {
    let mut s = 0i32;
    for (g, m) in mn.iter().enumerate() {
        // SAFETY: 32 readable bytes of sums at `bs` (caller).
        s += m * unsafe { read_unaligned(bs.add(2 * g).cast::<i16>()) } as i32;
    }
    s
}

/// Σ mn[g] · bsum[g][t] for a group (sums laid out `[pair][token][2]`), lanes = tokens.
#[inline(always)]
pub(super) unsafe fn min_dot4(bs: *const u8, mn: &[i32; 16]) -> int32x4_t {
    let mut acc = vdupq_n_s32(0);
    for i in 0..8 {
        // SAFETY: 128 readable bytes of sums at `bs` (caller).
        let v = unsafe { vld1q_s16(bs.add(16 * i).cast()) };
        let m = vreinterpretq_s16_s32(vdupq_n_s32((mn[2 * i] & 0xFFFF) | (mn[2 * i + 1] << 16)));
        let lo = vmull_s16(vget_low_s16(v), vget_low_s16(m));
        let hi = vmull_high_s16(v, m);
        acc = vaddq_s32(acc, vpaddq_s32(lo, hi));
    }
    acc
}

#[inline(always)]
pub(super) unsafe fn vec_k<K: KQuant, I: Isa>(
    w: *const u8,
    act: *const u8,
    nb: usize,
    out: &mut [f32],
) {
    let rb = nb * K::BYTES;
    let bsums = act.wrapping_add(nb * 4);
    let qs = act.wrapping_add(nb * 36);
    for (r, o) in out.iter_mut().enumerate() {
        let row = w.wrapping_add(r * rb);
        let mut sum = 0.0f32;
        for b in 0..nb {
            // SAFETY: block b of row r and of the activations are in bounds.
            unsafe {
                let kb = K::block(row.add(b * K::BYTES));
                let aq = qs.add(b * QK_K);
                let mut sumi = vdupq_n_s32(0);
                for g in 0..16 {
                    let s = I::dot16(vdupq_n_s32(0), kb.w[g], ld(aq.add(16 * g)));
                    sumi = vmlaq_n_s32(sumi, s, kb.sc[g]);
                }
                let da = f32_at(act.add(4 * b));
                sum += kb.d * da * vaddvq_s32(sumi) as f32;
                if K::HAS_MIN {
                    sum -= kb.dmin * da * min_dot1(bsums.add(32 * b), &kb.mn) as f32;
                }
            }
        }
        *o = sum;
    }
}

#[inline(always)]
pub(super) unsafe fn gemm_k<K: KQuant, I: Isa>(
    w: *const u8,
    act: *const u8,
    nb: usize,
    ng: usize,
    out: &mut [f32],
) {
    let rb = nb * K::BYTES;
    let gstride = GROUP * nb * Q8K_BLOCK;
    let rows = out.len() / (ng * GROUP);
    for g in 0..ng {
        let ga = act.wrapping_add(g * gstride);
        let bsums = ga.wrapping_add(nb * 16);
        let qs = ga.wrapping_add(nb * 16 + nb * 128);
        for r in 0..rows {
            let row = w.wrapping_add(r * rb);
            let mut acc = vdupq_n_f32(0.0);
            for b in 0..nb {
                // SAFETY: block b of row r and of group g are in bounds.
                unsafe {
                    let kb = K::block(row.add(b * K::BYTES));
                    let aq = qs.add(b * 1024);
                    let mut sumi = vdupq_n_s32(0);
                    for gi in 0..16 {
                        let s = I::gdot16(vdupq_n_s32(0), kb.w[gi], aq.add(128 * (gi / 2)), gi % 2);
                        sumi = vmlaq_n_s32(sumi, s, kb.sc[gi]);
                    }
                    let da = ldf(ga.add(16 * b));
                    acc = vfmaq_f32(acc, vcvtq_f32_s32(sumi), vmulq_n_f32(da, kb.d));
                    if K::HAS_MIN {
                        let m = min_dot4(bsums.add(128 * b), &kb.mn);
                        acc = vfmsq_f32(acc, vcvtq_f32_s32(m), vmulq_n_f32(da, kb.dmin));
                    }
                }
            }
            let mut res = [0f32; 4];
            // SAFETY: `res` holds 4 f32.
            unsafe { vst1q_f32(res.as_mut_ptr(), acc) };
            for (t, v) in res.iter().enumerate() {
                out[(g * GROUP + t) * rows + r] = *v;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Float weights

pub(super) trait FloatW {
    const BYTES: usize;
    unsafe fn load4(p: *const u8) -> float32x4_t;
    unsafe fn load1(p: *const u8) -> f32;
}

pub(super) struct F32W;
pub(super) struct F16W;
pub(super) struct Bf16W;

impl FloatW for F32W {
    const BYTES: usize = 4;
    #[inline(always)]
    unsafe fn load4(p: *const u8) -> float32x4_t {
        // SAFETY: 16 readable bytes (caller).
        unsafe { ldf(p) }
    }
    #[inline(always)]
    unsafe fn load1(p: *const u8) -> f32 {
        // SAFETY: 4 readable bytes (caller).
        unsafe { f32_at(p) }
    }
}

impl FloatW for F16W {
    const BYTES: usize = 2;
    #[inline(always)]
    unsafe fn load4(p: *const u8) -> float32x4_t {
        // SAFETY: 8 readable bytes (caller); register-only conversion.
        unsafe { cvt_f16x4(vld1_u16(p.cast())) }
    }
    #[inline(always)]
    unsafe fn load1(p: *const u8) -> f32 {
        // SAFETY: 2 readable bytes (caller).
        f16::from_bits(unsafe { read_unaligned(p.cast::<u16>()) }).to_f32()
    }
}

impl FloatW for Bf16W {
    const BYTES: usize = 2;
    #[inline(always)]
    unsafe fn load4(p: *const u8) -> float32x4_t {
        // SAFETY: 8 readable bytes (caller).
        vreinterpretq_f32_u32(vshll_n_u16(unsafe { vld1_u16(p.cast()) }, 16))
    }
    #[inline(always)]
    unsafe fn load1(p: *const u8) -> f32 {
        // SAFETY: 2 readable bytes (caller).
        f32::from_bits((unsafe { read_unaligned(p.cast::<u16>()) } as u32) << 16)
    }
}

#[inline(always)]
pub(super) unsafe fn dot_float<F: FloatW>(w: *const u8, x: *const u8, n: usize) -> f32 {
    let mut acc = [vdupq_n_f32(0.0); 4];
    let mut i = 0;
    // SAFETY (all blocks): `n` weights at `w` and `n` f32 at `x` are readable.
    while i + 16 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            let j = i + 4 * k;
            *a = unsafe { vfmaq_f32(*a, F::load4(w.add(j * F::BYTES)), ldf(x.add(4 * j))) };
        }
        i += 16;
    }
    while i + 4 <= n {
        acc[0] = unsafe { vfmaq_f32(acc[0], F::load4(w.add(i * F::BYTES)), ldf(x.add(4 * i))) };
        i += 4;
    }
    let mut s = vaddvq_f32(vaddq_f32(
        vaddq_f32(acc[0], acc[1]),
        vaddq_f32(acc[2], acc[3]),
    ));
    while i < n {
        s += unsafe { F::load1(w.add(i * F::BYTES)) * f32_at(x.add(4 * i)) };
        i += 1;
    }
    s
}

#[inline(always)]
pub(super) unsafe fn vec_float<F: FloatW>(w: *const u8, x: *const u8, k: usize, out: &mut [f32]) {
    for (r, o) in out.iter_mut().enumerate() {
        // SAFETY: row r and k activations are in bounds (entry checks).
        *o = unsafe { dot_float::<F>(w.add(r * k * F::BYTES), x, k) };
    }
}

#[inline(always)]
pub(super) unsafe fn gemm_float<F: FloatW>(
    w: *const u8,
    x: *const u8,
    k: usize,
    ng: usize,
    out: &mut [f32],
) {
    let rows = out.len() / (ng * GROUP);
    for r in 0..rows {
        let row = w.wrapping_add(r * k * F::BYTES);
        for t in 0..ng * GROUP {
            // SAFETY: row r and token t are in bounds (entry checks).
            out[t * rows + r] = unsafe { dot_float::<F>(row, x.add(4 * t * k), k) };
        }
    }
}

#[inline(always)]
pub(super) unsafe fn axpy<F: FloatW>(out: &mut [f32], alpha: f32, x: *const u8) {
    let n = out.len();
    let o = out.as_mut_ptr();
    let mut i = 0;
    while i + 4 <= n {
        // SAFETY: elements i..i+4 of `out` and `x` are in bounds.
        unsafe {
            let v = vfmaq_n_f32(vld1q_f32(o.add(i)), F::load4(x.add(i * F::BYTES)), alpha);
            vst1q_f32(o.add(i), v);
        }
        i += 4;
    }
    while i < n {
        // SAFETY: as above.
        out[i] += alpha * unsafe { F::load1(x.add(i * F::BYTES)) };
        i += 1;
    }
}

// ---------------------------------------------------------------------------------------
// Activation quantization

/// 32 floats as `act::q8_block`: (quants 0..16, 16..32, d, s).
#[inline(always)]
unsafe fn q8_block(x: *const f32) -> ([int8x16_t; 2], f32, f32) {
    let mut v = [vdupq_n_f32(0.0); 8];
    for (i, vi) in v.iter_mut().enumerate() {
        // SAFETY: 32 readable f32 at `x` (caller).
        *vi = unsafe { vld1q_f32(x.add(4 * i)) };
    }
    let mut m = vabsq_f32(v[0]);
    for vi in &v[1..] {
        m = vmaxq_f32(m, vabsq_f32(*vi));
    }
    let amax = vmaxvq_f32(m);
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut i = [vdupq_n_s32(0); 8];
    for (k, ik) in i.iter_mut().enumerate() {
        // Round to nearest even, like the scalar twin.
        *ik = vcvtnq_s32_f32(vmulq_n_f32(v[k], id));
    }
    let sum = vaddvq_s32(vaddq_s32(
        vaddq_s32(vaddq_s32(i[0], i[1]), vaddq_s32(i[2], i[3])),
        vaddq_s32(vaddq_s32(i[4], i[5]), vaddq_s32(i[6], i[7])),
    ));
    let q = [narrow(&i[0..4]), narrow(&i[4..8])];
    let d = f16::from_f32(d).to_f32();
    (q, d, d * sum as f32)
}

/// Four vectors of i32 to 16 saturated i8.
#[inline(always)]
unsafe fn narrow(i: &[int32x4_t]) -> int8x16_t {
    let a = vcombine_s16(vqmovn_s32(i[0]), vqmovn_s32(i[1]));
    let b = vcombine_s16(vqmovn_s32(i[2]), vqmovn_s32(i[3]));
    vcombine_s8(vqmovn_s16(a), vqmovn_s16(b))
}

/// Writes 4 tokens' 32-element blocks interleaved (see `act`): chunk c holds group
/// `PERM[c]` of tokens 0..4.
#[inline(always)]
unsafe fn store_interleaved(t: [[int8x16_t; 2]; 4], out: *mut u8) {
    for h in 0..2 {
        let [a, b, c, d] = t.map(|v| vreinterpretq_s32_s8(v[h]));
        // 4x4 transpose of 32-bit groups: row j = group j (+4h) of tokens 0..4.
        let ab0 = vzip1q_s32(a, b);
        let ab1 = vzip2q_s32(a, b);
        let cd0 = vzip1q_s32(c, d);
        let cd1 = vzip2q_s32(c, d);
        let rows = [
            vreinterpretq_s32_s64(vzip1q_s64(
                vreinterpretq_s64_s32(ab0),
                vreinterpretq_s64_s32(cd0),
            )),
            vreinterpretq_s32_s64(vzip2q_s64(
                vreinterpretq_s64_s32(ab0),
                vreinterpretq_s64_s32(cd0),
            )),
            vreinterpretq_s32_s64(vzip1q_s64(
                vreinterpretq_s64_s32(ab1),
                vreinterpretq_s64_s32(cd1),
            )),
            vreinterpretq_s32_s64(vzip2q_s64(
                vreinterpretq_s64_s32(ab1),
                vreinterpretq_s64_s32(cd1),
            )),
        ];
        for (j, r) in rows.iter().enumerate() {
            let c = act::chunk_of(j + 4 * h);
            // SAFETY: 128 writable bytes at `out` (caller).
            unsafe { vst1q_s32(out.add(16 * c).cast(), *r) };
        }
    }
}

/// 256 floats as `act::q8k_block`: (16 vectors of quants, d, sums of 16).
#[inline(always)]
unsafe fn q8k_block(x: *const f32) -> ([int8x16_t; 16], f32, [i16; 16]) {
    let mut vmax = vdupq_n_f32(f32::NEG_INFINITY);
    let mut vmin = vdupq_n_f32(f32::INFINITY);
    for i in 0..64 {
        // SAFETY: 256 readable f32 at `x` (caller).
        let v = unsafe { vld1q_f32(x.add(4 * i)) };
        vmax = vmaxq_f32(vmax, v);
        vmin = vminq_f32(vmin, v);
    }
    let (hi, lo) = (vmaxvq_f32(vmax), vminvq_f32(vmin));
    let amax = hi.max(-lo);
    let mut q = [vdupq_n_s8(0); 16];
    let mut sums = [0i16; 16];
    if amax == 0.0 {
        return (q, 0.0, sums);
    }
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
    let lim = vdupq_n_s32(127);
    for (g, qg) in q.iter_mut().enumerate() {
        let mut i = [vdupq_n_s32(0); 4];
        for (k, ik) in i.iter_mut().enumerate() {
            // SAFETY: as above.
            let v = unsafe { vld1q_f32(x.add(16 * g + 4 * k)) };
            *ik = vminq_s32(vcvtnq_s32_f32(vmulq_n_f32(v, iscale)), lim);
        }
        sums[g] = vaddvq_s32(vaddq_s32(vaddq_s32(i[0], i[1]), vaddq_s32(i[2], i[3]))) as i16;
        *qg = narrow(&i);
    }
    (q, 1.0 / iscale, sums)
}

pub(super) unsafe fn quantize(fmt: ActFormat, x: &[f32], k: usize, group: bool, out: &mut [u8]) {
    let nt = if group { GROUP } else { 1 };
    let xp = x.as_ptr();
    let op = out.as_mut_ptr();
    let put = |off: usize, v: f32| {
        // SAFETY: offsets below are inside `out` (length checked by the entry point).
        unsafe { std::ptr::write_unaligned(op.add(off).cast::<f32>(), v) }
    };
    match fmt {
        ActFormat::F32 => act::quantize_scalar(fmt, x, k, group, out),
        ActFormat::Q8_0 | ActFormat::Q8_1 => {
            let nb = k / QK;
            let qs = nb * 8 * nt;
            for b in 0..nb {
                if group {
                    let mut t4 = [[vdupq_n_s8(0); 2]; GROUP];
                    for (t, tv) in t4.iter_mut().enumerate() {
                        // SAFETY: token t's block b is inside `x`.
                        let (q, d, s) = unsafe { q8_block(xp.add(t * k + b * QK)) };
                        *tv = q;
                        put(b * 32 + 4 * t, d);
                        put(b * 32 + 16 + 4 * t, s);
                    }
                    // SAFETY: the block's 128 quant bytes are inside `out`.
                    unsafe { store_interleaved(t4, op.add(qs + b * 128)) };
                } else {
                    // SAFETY: block b is inside `x`; its quant bytes are inside `out`.
                    unsafe {
                        let (q, d, s) = q8_block(xp.add(b * QK));
                        put(b * 8, d);
                        put(b * 8 + 4, s);
                        vst1q_s8(op.add(qs + b * QK).cast(), q[0]);
                        vst1q_s8(op.add(qs + b * QK + 16).cast(), q[1]);
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
                    let mut qv = [[vdupq_n_s8(0); 16]; GROUP];
                    for (t, qt) in qv.iter_mut().enumerate() {
                        // SAFETY: token t's block b is inside `x`; the sums are inside `out`.
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
                        let t4 = qv.map(|q| [q[2 * c], q[2 * c + 1]]);
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
                        for (g, qg) in q.iter().enumerate() {
                            vst1q_s8(op.add(qsec + b * QK_K + 16 * g).cast(), *qg);
                        }
                    }
                }
            }
        }
    }
}
