//! Portable scalar kernels: the oracle every SIMD kernel is compared against, and the
//! path used on CPUs without the SIMD features ember knows.
//!
//! Each dot product takes one weight row (`k` elements encoded as the weight type) and one
//! activation row quantized to the matching Q8 format, sums in integers per block and
//! applies the scales in f32, as ggml's reference kernels do.

use bytemuck::pod_read_unaligned;
use half::{bf16, f16};

use crate::quant::blocks::*;
use crate::quant::{QK, QK_K};

fn blocks<B: bytemuck::Pod>(b: &[u8]) -> impl Iterator<Item = B> + '_ {
    b.chunks_exact(std::mem::size_of::<B>())
        .map(pod_read_unaligned::<B>)
}

pub fn dot_f32(w: &[u8], x: &[f32]) -> f32 {
    w.chunks_exact(4)
        .zip(x)
        .map(|(c, &x)| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) * x)
        .sum()
}

pub fn dot_f16(w: &[u8], x: &[f32]) -> f32 {
    w.chunks_exact(2)
        .zip(x)
        .map(|(c, &x)| f16::from_le_bytes([c[0], c[1]]).to_f32() * x)
        .sum()
}

pub fn dot_bf16(w: &[u8], x: &[f32]) -> f32 {
    w.chunks_exact(2)
        .zip(x)
        .map(|(c, &x)| bf16::from_le_bytes([c[0], c[1]]).to_f32() * x)
        .sum()
}

pub fn dot_q4_0(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0.0f32;
    for (x, y) in blocks::<BlockQ4_0>(w).zip(blocks::<BlockQ8_0>(a)) {
        let mut s = 0i32;
        for j in 0..QK / 2 {
            let v0 = (x.qs[j] & 0xF) as i32 - 8;
            let v1 = (x.qs[j] >> 4) as i32 - 8;
            s += v0 * y.qs[j] as i32 + v1 * y.qs[j + QK / 2] as i32;
        }
        sum += s as f32 * (x.d.to_f32() * y.d.to_f32());
    }
    sum
}

pub fn dot_q4_1(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0.0f32;
    for (x, y) in blocks::<BlockQ4_1>(w).zip(blocks::<BlockQ8_1>(a)) {
        let mut s = 0i32;
        for j in 0..QK / 2 {
            let v0 = (x.qs[j] & 0xF) as i32;
            let v1 = (x.qs[j] >> 4) as i32;
            s += v0 * y.qs[j] as i32 + v1 * y.qs[j + QK / 2] as i32;
        }
        sum += s as f32 * (x.d.to_f32() * y.d.to_f32()) + x.m.to_f32() * y.s.to_f32();
    }
    sum
}

pub fn dot_q5_0(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0.0f32;
    for (x, y) in blocks::<BlockQ5_0>(w).zip(blocks::<BlockQ8_0>(a)) {
        let qh = u32::from_le_bytes(x.qh);
        let mut s = 0i32;
        for j in 0..QK / 2 {
            let h0 = ((qh >> j) << 4) & 0x10;
            let h1 = (qh >> (j + 12)) & 0x10;
            let v0 = ((x.qs[j] as u32 & 0xF) | h0) as i32 - 16;
            let v1 = ((x.qs[j] as u32 >> 4) | h1) as i32 - 16;
            s += v0 * y.qs[j] as i32 + v1 * y.qs[j + QK / 2] as i32;
        }
        sum += s as f32 * (x.d.to_f32() * y.d.to_f32());
    }
    sum
}

pub fn dot_q5_1(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0.0f32;
    for (x, y) in blocks::<BlockQ5_1>(w).zip(blocks::<BlockQ8_1>(a)) {
        let qh = u32::from_le_bytes(x.qh);
        let mut s = 0i32;
        for j in 0..QK / 2 {
            let h0 = ((qh >> j) << 4) & 0x10;
            let h1 = (qh >> (j + 12)) & 0x10;
            let v0 = ((x.qs[j] as u32 & 0xF) | h0) as i32;
            let v1 = ((x.qs[j] as u32 >> 4) | h1) as i32;
            s += v0 * y.qs[j] as i32 + v1 * y.qs[j + QK / 2] as i32;
        }
        sum += s as f32 * (x.d.to_f32() * y.d.to_f32()) + x.m.to_f32() * y.s.to_f32();
    }
    sum
}

pub fn dot_q8_0(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0.0f32;
    for (x, y) in blocks::<BlockQ8_0>(w).zip(blocks::<BlockQ8_0>(a)) {
        let s: i32 =
            x.qs.iter()
                .zip(y.qs.iter())
                .map(|(&a, &b)| a as i32 * b as i32)
                .sum();
        sum += s as f32 * (x.d.to_f32() * y.d.to_f32());
    }
    sum
}

/// Sum of q[e] * y[e] over a group of elements.
#[inline(always)]
fn isum(q: &[i8], y: &[i8]) -> i32 {
    q.iter().zip(y).map(|(&a, &b)| a as i32 * b as i32).sum()
}

pub fn dot_q2_k(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0.0f32;
    let mut q = [0i8; QK_K];
    for (x, y) in blocks::<BlockQ2K>(w).zip(blocks::<BlockQ8K>(a)) {
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
                * isum(&q[g * 16..g * 16 + 16], &y.qs[g * 16..g * 16 + 16]);
            mn += (x.scales[g] >> 4) as i32 * y.bsums[g] as i32;
        }
        sum += y.d * x.d.to_f32() * sc as f32 - y.d * x.dmin.to_f32() * mn as f32;
    }
    sum
}

pub fn dot_q3_k(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0.0f32;
    let mut q = [0i8; QK_K];
    for (x, y) in blocks::<BlockQ3K>(w).zip(blocks::<BlockQ8K>(a)) {
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
            s +=
                (scales[g] as i32 - 32) * isum(&q[g * 16..g * 16 + 16], &y.qs[g * 16..g * 16 + 16]);
        }
        sum += x.d.to_f32() * y.d * s as f32;
    }
    sum
}

pub fn dot_q4_k(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0.0f32;
    let mut q = [0i8; QK_K];
    for (x, y) in blocks::<BlockQ4K>(w).zip(blocks::<BlockQ8K>(a)) {
        for j in 0..4 {
            for l in 0..32 {
                q[j * 64 + l] = (x.qs[j * 32 + l] & 0xF) as i8;
                q[j * 64 + 32 + l] = (x.qs[j * 32 + l] >> 4) as i8;
            }
        }
        let (mut sc, mut mn) = (0i32, 0i32);
        for g in 0..8 {
            let (s, m) = scale_min_k4(g, &x.scales);
            sc += s as i32 * isum(&q[g * 32..g * 32 + 32], &y.qs[g * 32..g * 32 + 32]);
            mn += m as i32 * (y.bsums[2 * g] as i32 + y.bsums[2 * g + 1] as i32);
        }
        sum += y.d * x.d.to_f32() * sc as f32 - y.d * x.dmin.to_f32() * mn as f32;
    }
    sum
}

pub fn dot_q5_k(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0.0f32;
    let mut q = [0i8; QK_K];
    for (x, y) in blocks::<BlockQ5K>(w).zip(blocks::<BlockQ8K>(a)) {
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
            sc += s as i32 * isum(&q[g * 32..g * 32 + 32], &y.qs[g * 32..g * 32 + 32]);
            mn += m as i32 * (y.bsums[2 * g] as i32 + y.bsums[2 * g + 1] as i32);
        }
        sum += y.d * x.d.to_f32() * sc as f32 - y.d * x.dmin.to_f32() * mn as f32;
    }
    sum
}

pub fn dot_q6_k(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0.0f32;
    let mut q = [0i8; QK_K];
    for (x, y) in blocks::<BlockQ6K>(w).zip(blocks::<BlockQ8K>(a)) {
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
            s += x.scales[g] as i32 * isum(&q[g * 16..g * 16 + 16], &y.qs[g * 16..g * 16 + 16]);
        }
        sum += x.d.to_f32() * y.d * s as f32;
    }
    sum
}
