//! Prefill with the i8mm extension (ARMv8.6 `smmla`: Cortex-A510/A710+, Neoverse V1/N2,
//! Apple M2+): one instruction multiplies a 2×8 block of weights (two rows) by an 8×2
//! block of activations (two tokens), 32 multiply-adds where `sdot` does 16.
//!
//! Rows are taken in pairs and each group of 4 tokens as two pairs; the operands are
//! built with 64-bit zips from the unpacked weights and 32-bit zips from the
//! interleaved activations. An odd last row goes through the dotprod kernels (every i8mm
//! CPU has dotprod). Written as inline assembly for the same reason as `sdot`.

use std::arch::aarch64::*;
use std::arch::asm;

use super::super::act::{GROUP, Q8K_BLOCK, Q8_BLOCK};
use super::dotprod::Sdot;
use super::neon::{gemm_k, gemm_leg, ld, ldf, min_dot4, KQuant, Leg};

#[inline(always)]
unsafe fn smmla(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // SAFETY: registers only; the i8mm table is handed out only after detection.
    unsafe {
        asm!(
            ".arch_extension i8mm",
            "smmla {0:v}.4s, {1:v}.16b, {2:v}.16b",
            inout(vreg) acc,
            in(vreg) a,
            in(vreg) b,
            options(pure, nomem, nostack)
        );
    }
    acc
}

#[inline(always)]
fn zip64(a: int8x16_t, b: int8x16_t) -> [int8x16_t; 2] {
    // SAFETY: register-only NEON operations (NEON is baseline on AArch64).
    unsafe {
        let (a, b) = (vreinterpretq_s64_s8(a), vreinterpretq_s64_s8(b));
        [
            vreinterpretq_s8_s64(vzip1q_s64(a, b)),
            vreinterpretq_s8_s64(vzip2q_s64(a, b)),
        ]
    }
}

/// Activation operands of one interleaved 32-element sub-block at `aq`: `[k][pair]`, each
/// holding elements `8k..8k+8` of tokens `2·pair` and `2·pair + 1`.
#[inline(always)]
unsafe fn act_operands(aq: *const u8) -> [[int8x16_t; 2]; 4] {
    // Chunks holding 4-element groups (0,1), (2,3), (4,5), (6,7).
    const CHUNKS: [(usize, usize); 4] = [(0, 2), (4, 6), (1, 3), (5, 7)];
    let mut out = [[vdupq_n_s8(0); 2]; 4];
    for (k, (c0, c1)) in CHUNKS.iter().enumerate() {
        // SAFETY: 128 readable bytes at `aq` (caller).
        let (a, b) = unsafe {
            (
                vreinterpretq_s32_s8(ld(aq.add(16 * c0))),
                vreinterpretq_s32_s8(ld(aq.add(16 * c1))),
            )
        };
        out[k] = [
            vreinterpretq_s8_s32(vzip1q_s32(a, b)),
            vreinterpretq_s8_s32(vzip2q_s32(a, b)),
        ];
    }
    out
}

/// `[x0, x0, x1, x1]`.
#[inline(always)]
fn rows2(x0: f32, x1: f32) -> float32x4_t {
    // SAFETY: register-only NEON operations.
    unsafe { vcombine_f32(vdup_n_f32(x0), vdup_n_f32(x1)) }
}

/// Per token pair, `[t(2p), t(2p+1), t(2p), t(2p+1)]` from 4 per-token values.
#[inline(always)]
fn toks2(v: float32x4_t) -> [float32x4_t; 2] {
    // SAFETY: register-only NEON operations.
    unsafe {
        [
            vcombine_f32(vget_low_f32(v), vget_low_f32(v)),
            vcombine_f32(vget_high_f32(v), vget_high_f32(v)),
        ]
    }
}

/// Stores a 2×2 tile `[r0 t0, r0 t1, r1 t0, r1 t1]` for tokens `t`, `t + 1`.
#[inline(always)]
fn store2x2(out: &mut [f32], rows: usize, r: usize, t: usize, v: float32x4_t) {
    let mut a = [0f32; 4];
    // SAFETY: `a` holds 4 f32.
    unsafe { vst1q_f32(a.as_mut_ptr(), v) };
    out[t * rows + r] = a[0];
    out[(t + 1) * rows + r] = a[1];
    out[t * rows + r + 1] = a[2];
    out[(t + 1) * rows + r + 1] = a[3];
}

/// The odd last row of a product, through the dotprod kernel one group at a time.
#[inline(always)]
unsafe fn last_row(
    f: unsafe fn(*const u8, *const u8, usize, usize, &mut [f32]),
    row: *const u8,
    act: *const u8,
    nb: usize,
    ng: usize,
    gstride: usize,
    out: &mut [f32],
) {
    let rows = out.len() / (ng * GROUP);
    for g in 0..ng {
        let mut t = [0f32; GROUP];
        // SAFETY: the row and group g are in bounds (caller).
        unsafe { f(row, act.add(g * gstride), nb, 1, &mut t) };
        for (i, v) in t.iter().enumerate() {
            out[(g * GROUP + i) * rows + rows - 1] = *v;
        }
    }
}

unsafe fn leg_sdot<W: Leg>(w: *const u8, act: *const u8, nb: usize, ng: usize, out: &mut [f32]) {
    // SAFETY: forwarded from the caller.
    unsafe { gemm_leg::<W, Sdot>(w, act, nb, ng, out) }
}

unsafe fn k_sdot<K: KQuant>(w: *const u8, act: *const u8, nb: usize, ng: usize, out: &mut [f32]) {
    // SAFETY: forwarded from the caller.
    unsafe { gemm_k::<K, Sdot>(w, act, nb, ng, out) }
}

/// Groups of 4 tokens for legacy blocks: `out[t * rows + r]`.
#[inline(always)]
pub(super) unsafe fn gemm_leg_mm<W: Leg>(
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
        let mut r = 0;
        while r + 2 <= rows {
            let (p0, p1) = (w.wrapping_add(r * rb), w.wrapping_add((r + 1) * rb));
            let mut acc = [vdupq_n_f32(0.0); 2];
            for b in 0..nb {
                // SAFETY: block b of rows r, r+1 and of group g are in bounds (entry checks).
                unsafe {
                    let (b0, b1) = (p0.add(b * W::BYTES), p1.add(b * W::BYTES));
                    let (q0, q1) = (W::unpack(b0), W::unpack(b1));
                    let lo = zip64(q0[0], q1[0]);
                    let hi = zip64(q0[1], q1[1]);
                    let a = [lo[0], lo[1], hi[0], hi[1]];
                    let bm = act_operands(aq.add(128 * b));
                    let (d0, m0) = W::dm(b0);
                    let (d1, m1) = W::dm(b1);
                    let dw = rows2(d0, d1);
                    let da = toks2(ldf(ga.add(32 * b)));
                    let sa = toks2(ldf(ga.add(32 * b + 16)));
                    for p in 0..2 {
                        let mut s = vdupq_n_s32(0);
                        for k in 0..4 {
                            s = smmla(s, a[k], bm[k][p]);
                        }
                        acc[p] = vfmaq_f32(acc[p], vcvtq_f32_s32(s), vmulq_f32(dw, da[p]));
                        if W::HAS_MIN {
                            acc[p] = vfmaq_f32(acc[p], rows2(m0, m1), sa[p]);
                        }
                    }
                }
            }
            store2x2(out, rows, r, g * GROUP, acc[0]);
            store2x2(out, rows, r, g * GROUP + 2, acc[1]);
            r += 2;
        }
    }
    if rows % 2 == 1 {
        // SAFETY: the last row and all groups are in bounds.
        unsafe {
            last_row(
                leg_sdot::<W>,
                w.wrapping_add((rows - 1) * rb),
                act,
                nb,
                ng,
                gstride,
                out,
            )
        };
    }
}

/// Groups of 4 tokens for k-quants.
#[inline(always)]
pub(super) unsafe fn gemm_k_mm<K: KQuant>(
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
        let mut r = 0;
        while r + 2 <= rows {
            let (p0, p1) = (w.wrapping_add(r * rb), w.wrapping_add((r + 1) * rb));
            let mut acc = [vdupq_n_f32(0.0); 2];
            for b in 0..nb {
                // SAFETY: block b of rows r, r+1 and of group g are in bounds.
                unsafe {
                    let k0 = K::block(p0.add(b * K::BYTES));
                    let k1 = K::block(p1.add(b * K::BYTES));
                    let mut sumi = [vdupq_n_s32(0); 2];
                    for sb in 0..8 {
                        let bm = act_operands(qs.add(b * 1024 + 128 * sb));
                        for h in 0..2 {
                            let gi = 2 * sb + h;
                            let a = zip64(k0.w[gi], k1.w[gi]);
                            let scv = vcombine_s32(vdup_n_s32(k0.sc[gi]), vdup_n_s32(k1.sc[gi]));
                            for (p, s) in sumi.iter_mut().enumerate() {
                                let x = smmla(
                                    smmla(vdupq_n_s32(0), a[0], bm[2 * h][p]),
                                    a[1],
                                    bm[2 * h + 1][p],
                                );
                                *s = vmlaq_s32(*s, x, scv);
                            }
                        }
                    }
                    let da = toks2(ldf(ga.add(16 * b)));
                    let dw = rows2(k0.d, k1.d);
                    let (mins0, mins1) = if K::HAS_MIN {
                        let m0 = min_dot4(bsums.add(128 * b), &k0.mn);
                        let m1 = min_dot4(bsums.add(128 * b), &k1.mn);
                        (
                            vcombine_s32(vget_low_s32(m0), vget_low_s32(m1)),
                            vcombine_s32(vget_high_s32(m0), vget_high_s32(m1)),
                        )
                    } else {
                        (vdupq_n_s32(0), vdupq_n_s32(0))
                    };
                    let dmin = rows2(k0.dmin, k1.dmin);
                    for (p, mins) in [mins0, mins1].iter().enumerate() {
                        acc[p] = vfmaq_f32(acc[p], vcvtq_f32_s32(sumi[p]), vmulq_f32(dw, da[p]));
                        if K::HAS_MIN {
                            acc[p] =
                                vfmsq_f32(acc[p], vcvtq_f32_s32(*mins), vmulq_f32(dmin, da[p]));
                        }
                    }
                }
            }
            store2x2(out, rows, r, g * GROUP, acc[0]);
            store2x2(out, rows, r, g * GROUP + 2, acc[1]);
            r += 2;
        }
    }
    if rows % 2 == 1 {
        // SAFETY: the last row and all groups are in bounds.
        unsafe {
            last_row(
                k_sdot::<K>,
                w.wrapping_add((rows - 1) * rb),
                act,
                nb,
                ng,
                gstride,
                out,
            )
        };
    }
}
