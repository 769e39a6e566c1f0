//! Portable scalar kernels: the oracle every SIMD kernel is compared against, and the
//! path used on CPUs without the SIMD features ember knows.
//!
//! Each dot product takes one weight row (`k` elements encoded as the weight type) and one
//! token of activations quantized to the matching Q8 format (see `act`), sums in integers
//! per block and applies the scales in f32, as ggml's reference kernels do. They are
//! written for clarity, in ggml's order of operations; the SIMD kernels rearrange the
//! arithmetic and are tested against these.

use bytemuck::pod_read_unaligned;
use half::{bf16, f16};

use super::act::{Q8KView, Q8View, GROUP};
use crate::quant::blocks::*;
use crate::quant::{GgmlType, QK, QK_K};

fn blocks<B: bytemuck::Pod>(b: &[u8]) -> impl Iterator<Item = B> + '_ {
    b.chunks_exact(std::mem::size_of::<B>())
        .map(pod_read_unaligned::<B>)
}

fn f32s(x: &[u8]) -> impl Iterator<Item = f32> + '_ {
    x.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

/// `sum(a[i] * b[i])`, for attention scores and other f32 vectors.
pub fn dot_f32_f32(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

/// `sum(a[i] * b[i])` with `a` in f16.
pub fn dot_f16_f32(a: &[f16], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(a, b)| a.to_f32() * b).sum()
}

/// `out[i] += alpha * x[i]`.
pub fn axpy_f32(out: &mut [f32], alpha: f32, x: &[f32]) {
    for (o, x) in out.iter_mut().zip(x) {
        *o += alpha * x;
    }
}

/// `out[i] += alpha * x[i]` with `x` in f16.
pub fn axpy_f16(out: &mut [f32], alpha: f32, x: &[f16]) {
    for (o, x) in out.iter_mut().zip(x) {
        *o += alpha * x.to_f32();
    }
}

pub fn dot_q4_0(w: &[u8], a: &Q8View) -> f32 {
    let mut sum = 0.0f32;
    for (b, x) in blocks::<BlockQ4_0>(w).enumerate() {
        let yq = a.qs(b);
        let mut s = 0i32;
        for j in 0..QK / 2 {
            let v0 = (x.qs[j] & 0xF) as i32 - 8;
            let v1 = (x.qs[j] >> 4) as i32 - 8;
            s += v0 * yq[j] as i32 + v1 * yq[j + QK / 2] as i32;
        }
        sum += s as f32 * (x.d.to_f32() * a.d(b));
    }
    sum
}

pub fn dot_q4_1(w: &[u8], a: &Q8View) -> f32 {
    let mut sum = 0.0f32;
    for (b, x) in blocks::<BlockQ4_1>(w).enumerate() {
        let yq = a.qs(b);
        let mut s = 0i32;
        for j in 0..QK / 2 {
            let v0 = (x.qs[j] & 0xF) as i32;
            let v1 = (x.qs[j] >> 4) as i32;
            s += v0 * yq[j] as i32 + v1 * yq[j + QK / 2] as i32;
        }
        sum += s as f32 * (x.d.to_f32() * a.d(b)) + x.m.to_f32() * a.s(b);
    }
    sum
}

pub fn dot_q5_0(w: &[u8], a: &Q8View) -> f32 {
    let mut sum = 0.0f32;
    for (b, x) in blocks::<BlockQ5_0>(w).enumerate() {
        let yq = a.qs(b);
        let qh = u32::from_le_bytes(x.qh);
        let mut s = 0i32;
        for j in 0..QK / 2 {
            let h0 = ((qh >> j) << 4) & 0x10;
            let h1 = (qh >> (j + 12)) & 0x10;
            let v0 = ((x.qs[j] as u32 & 0xF) | h0) as i32 - 16;
            let v1 = ((x.qs[j] as u32 >> 4) | h1) as i32 - 16;
            s += v0 * yq[j] as i32 + v1 * yq[j + QK / 2] as i32;
        }
        sum += s as f32 * (x.d.to_f32() * a.d(b));
    }
    sum
}

pub fn dot_q5_1(w: &[u8], a: &Q8View) -> f32 {
    let mut sum = 0.0f32;
    for (b, x) in blocks::<BlockQ5_1>(w).enumerate() {
        let yq = a.qs(b);
        let qh = u32::from_le_bytes(x.qh);
        let mut s = 0i32;
        for j in 0..QK / 2 {
            let h0 = ((qh >> j) << 4) & 0x10;
            let h1 = (qh >> (j + 12)) & 0x10;
            let v0 = ((x.qs[j] as u32 & 0xF) | h0) as i32;
            let v1 = ((x.qs[j] as u32 >> 4) | h1) as i32;
            s += v0 * yq[j] as i32 + v1 * yq[j + QK / 2] as i32;
        }
        sum += s as f32 * (x.d.to_f32() * a.d(b)) + x.m.to_f32() * a.s(b);
    }
    sum
}

pub fn dot_q8_0(w: &[u8], a: &Q8View) -> f32 {
    let mut sum = 0.0f32;
    for (b, x) in blocks::<BlockQ8_0>(w).enumerate() {
        let yq = a.qs(b);
        let s: i32 =
            x.qs.iter()
                .zip(yq.iter())
                .map(|(&a, &b)| a as i32 * b as i32)
                .sum();
        sum += s as f32 * (x.d.to_f32() * a.d(b));
    }
    sum
}

pub fn dot_iq4_nl(w: &[u8], a: &Q8View) -> f32 {
    let mut sum = 0.0f32;
    for (b, x) in blocks::<BlockIQ4NL>(w).enumerate() {
        let yq = a.qs(b);
        let mut s = 0i32;
        for j in 0..QK / 2 {
            let v0 = KVALUES_IQ4NL[(x.qs[j] & 0xF) as usize] as i32;
            let v1 = KVALUES_IQ4NL[(x.qs[j] >> 4) as usize] as i32;
            s += v0 * yq[j] as i32 + v1 * yq[j + QK / 2] as i32;
        }
        sum += s as f32 * (x.d.to_f32() * a.d(b));
    }
    sum
}

/// Sum of q[e] * y[e] over a group of elements.
#[inline(always)]
fn isum(q: &[i8], y: &[i8]) -> i32 {
    q.iter().zip(y).map(|(&a, &b)| a as i32 * b as i32).sum()
}

pub fn dot_q2_k(w: &[u8], a: &Q8KView) -> f32 {
    let mut sum = 0.0f32;
    let mut q = [0i8; QK_K];
    for (b, x) in blocks::<BlockQ2K>(w).enumerate() {
        let (yd, yq, bsums) = (a.d(b), a.qs(b), a.bsums(b));
        for n in 0..2 {
            for (j, shift) in [0u32, 2, 4, 6].iter().enumerate() {
                for l in 0..32 {
                    q[n * 128 + j * 32 + l] = ((x.qs[n * 32 + l] >> shift) & 3) as i8;
                }
            }
        }
        let (mut sc, mut mn) = (0i32, 0i32);
        for g in 0..16 {
            sc += (x.scales[g] & 0xF) as i32
                * isum(&q[g * 16..g * 16 + 16], &yq[g * 16..g * 16 + 16]);
            mn += (x.scales[g] >> 4) as i32 * bsums[g] as i32;
        }
        sum += yd * x.d.to_f32() * sc as f32 - yd * x.dmin.to_f32() * mn as f32;
    }
    sum
}

pub fn dot_q3_k(w: &[u8], a: &Q8KView) -> f32 {
    let mut sum = 0.0f32;
    let mut q = [0i8; QK_K];
    for (b, x) in blocks::<BlockQ3K>(w).enumerate() {
        let (yd, yq) = (a.d(b), a.qs(b));
        let scales = q3k_scales(&x.scales);
        let mut m = 1u8;
        for n in 0..2 {
            for j in 0..4 {
                let shift = 2 * j;
                for l in 0..32 {
                    let lo = ((x.qs[n * 32 + l] >> shift) & 3) as i8;
                    let hi = if x.hmask[l] & m != 0 { 0 } else { 4 };
                    q[n * 128 + j * 32 + l] = lo - hi;
                }
                m <<= 1;
            }
        }
        let mut s = 0i32;
        for g in 0..16 {
            s += (scales[g] as i32 - 32) * isum(&q[g * 16..g * 16 + 16], &yq[g * 16..g * 16 + 16]);
        }
        sum += x.d.to_f32() * yd * s as f32;
    }
    sum
}

pub fn dot_q4_k(w: &[u8], a: &Q8KView) -> f32 {
    let mut sum = 0.0f32;
    let mut q = [0i8; QK_K];
    for (b, x) in blocks::<BlockQ4K>(w).enumerate() {
        let (yd, yq, bsums) = (a.d(b), a.qs(b), a.bsums(b));
        for j in 0..4 {
            for l in 0..32 {
                q[j * 64 + l] = (x.qs[j * 32 + l] & 0xF) as i8;
                q[j * 64 + 32 + l] = (x.qs[j * 32 + l] >> 4) as i8;
            }
        }
        let (mut sc, mut mn) = (0i32, 0i32);
        for g in 0..8 {
            let (s, m) = scale_min_k4(g, &x.scales);
            sc += s as i32 * isum(&q[g * 32..g * 32 + 32], &yq[g * 32..g * 32 + 32]);
            mn += m as i32 * (bsums[2 * g] as i32 + bsums[2 * g + 1] as i32);
        }
        sum += yd * x.d.to_f32() * sc as f32 - yd * x.dmin.to_f32() * mn as f32;
    }
    sum
}

pub fn dot_q5_k(w: &[u8], a: &Q8KView) -> f32 {
    let mut sum = 0.0f32;
    let mut q = [0i8; QK_K];
    for (b, x) in blocks::<BlockQ5K>(w).enumerate() {
        let (yd, yq, bsums) = (a.d(b), a.qs(b), a.bsums(b));
        let (mut u1, mut u2) = (1u8, 2u8);
        for j in 0..4 {
            for l in 0..32 {
                let h1 = if x.qh[l] & u1 != 0 { 16 } else { 0 };
                let h2 = if x.qh[l] & u2 != 0 { 16 } else { 0 };
                q[j * 64 + l] = ((x.qs[j * 32 + l] & 0xF) + h1) as i8;
                q[j * 64 + 32 + l] = ((x.qs[j * 32 + l] >> 4) + h2) as i8;
            }
            u1 <<= 2;
            u2 <<= 2;
        }
        let (mut sc, mut mn) = (0i32, 0i32);
        for g in 0..8 {
            let (s, m) = scale_min_k4(g, &x.scales);
            sc += s as i32 * isum(&q[g * 32..g * 32 + 32], &yq[g * 32..g * 32 + 32]);
            mn += m as i32 * (bsums[2 * g] as i32 + bsums[2 * g + 1] as i32);
        }
        sum += yd * x.d.to_f32() * sc as f32 - yd * x.dmin.to_f32() * mn as f32;
    }
    sum
}

pub fn dot_q6_k(w: &[u8], a: &Q8KView) -> f32 {
    let mut sum = 0.0f32;
    let mut q = [0i8; QK_K];
    for (b, x) in blocks::<BlockQ6K>(w).enumerate() {
        let (yd, yq) = (a.d(b), a.qs(b));
        for n in 0..2 {
            let ql = &x.ql[n * 64..n * 64 + 64];
            let qh = &x.qh[n * 32..n * 32 + 32];
            let q = &mut q[n * 128..n * 128 + 128];
            for l in 0..32 {
                q[l] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
                q[l + 32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                q[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                q[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
            }
        }
        let mut s = 0i32;
        for g in 0..16 {
            s += x.scales[g] as i32 * isum(&q[g * 16..g * 16 + 16], &yq[g * 16..g * 16 + 16]);
        }
        sum += x.d.to_f32() * yd * s as f32;
    }
    sum
}

pub fn dot_iq4_xs(w: &[u8], a: &Q8KView) -> f32 {
    let mut sum = 0.0f32;
    let mut q = [0i8; QK];
    for (b, x) in blocks::<BlockIQ4XS>(w).enumerate() {
        let (yd, yq) = (a.d(b), a.qs(b));
        let scales = iq4xs_scales(x.scales_h, x.scales_l);
        let mut s = 0i32;
        for (ib, &ls) in scales.iter().enumerate() {
            for j in 0..QK / 2 {
                let byte = x.qs[ib * QK / 2 + j];
                q[j] = KVALUES_IQ4NL[(byte & 0xF) as usize];
                q[j + QK / 2] = KVALUES_IQ4NL[(byte >> 4) as usize];
            }
            s += ls as i32 * isum(&q, &yq[ib * QK..(ib + 1) * QK]);
        }
        sum += x.d.to_f32() * yd * s as f32;
    }
    sum
}

/// Dot product of a row of f32/f16/bf16 weights with f32 activations given as bytes.
fn dot_float(ty: GgmlType, w: &[u8], x: &[u8]) -> f32 {
    let mut sum = 0.0f32;
    match ty {
        GgmlType::F32 => {
            for (w, x) in f32s(w).zip(f32s(x)) {
                sum += w * x;
            }
        }
        GgmlType::F16 => {
            for (c, x) in w.chunks_exact(2).zip(f32s(x)) {
                sum += f16::from_le_bytes([c[0], c[1]]).to_f32() * x;
            }
        }
        _ => {
            for (c, x) in w.chunks_exact(2).zip(f32s(x)) {
                sum += bf16::from_le_bytes([c[0], c[1]]).to_f32() * x;
            }
        }
    }
    sum
}

/// One token's dot product for weight type `ty`; `act` is that token's activations in the
/// single-token layout, or its group with `t` the token within it.
pub fn dot(ty: GgmlType, w: &[u8], act: &[u8], k: usize, t: Option<usize>) -> f32 {
    use GgmlType::*;
    let q8 = || match t {
        None => Q8View::single(act, k),
        Some(t) => Q8View::in_group(act, k, t),
    };
    let q8k = || match t {
        None => Q8KView::single(act, k),
        Some(t) => Q8KView::in_group(act, k, t),
    };
    match ty {
        F32 | F16 | BF16 => {
            let x = match t {
                None => &act[..k * 4],
                Some(t) => &act[t * k * 4..(t + 1) * k * 4],
            };
            dot_float(ty, w, x)
        }
        Q4_0 => dot_q4_0(w, &q8()),
        Q4_1 => dot_q4_1(w, &q8()),
        Q5_0 => dot_q5_0(w, &q8()),
        Q5_1 => dot_q5_1(w, &q8()),
        Q8_0 => dot_q8_0(w, &q8()),
        Q2_K => dot_q2_k(w, &q8k()),
        Q3_K => dot_q3_k(w, &q8k()),
        Q4_K => dot_q4_k(w, &q8k()),
        Q5_K => dot_q5_k(w, &q8k()),
        Q6_K => dot_q6_k(w, &q8k()),
        IQ4_NL => dot_iq4_nl(w, &q8()),
        IQ4_XS => dot_iq4_xs(w, &q8k()),
        _ => 0.0,
    }
}

/// Scalar matrix-vector kernel for weight type `ty`: `out[r] = dot(row r, act)`.
pub fn matvec(ty: GgmlType, w: &[u8], act: &[u8], k: usize, out: &mut [f32]) {
    let rb = k / ty.block_size() * ty.type_size();
    for (r, o) in out.iter_mut().enumerate() {
        *o = dot(ty, &w[r * rb..(r + 1) * rb], act, k, None);
    }
}

/// Scalar kernel for `ng` token groups: `out[t * rows + r] = dot(row r, token t)`.
pub fn gemm(ty: GgmlType, w: &[u8], act: &[u8], k: usize, ng: usize, out: &mut [f32]) {
    let rb = k / ty.block_size() * ty.type_size();
    let gb = GROUP
        * super::act::row_bytes(
            super::ActFormat::for_weight(ty).unwrap_or(super::ActFormat::F32),
            k,
        );
    let rows = out.len() / (ng * GROUP);
    for g in 0..ng {
        let a = &act[g * gb..(g + 1) * gb];
        for t in 0..GROUP {
            for r in 0..rows {
                out[(g * GROUP + t) * rows + r] = dot(ty, &w[r * rb..(r + 1) * rb], a, k, Some(t));
            }
        }
    }
}
