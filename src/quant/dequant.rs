//! Scalar dequantization, written to follow ggml's reference order of operations so the
//! results are bit-identical. This is the oracle the SIMD kernels are checked against.

use bytemuck::{pod_read_unaligned, Pod};
use half::{bf16, f16};

use super::blocks::*;
use super::types::{GgmlType, QK};
use crate::error::{Error, Result};

fn blocks<B: Pod>(bytes: &[u8]) -> impl Iterator<Item = B> + '_ {
    // Unaligned reads: a caller's byte slice need not be aligned to the block type.
    bytes
        .chunks_exact(std::mem::size_of::<B>())
        .map(pod_read_unaligned::<B>)
}

/// Dequantizes `out.len()` elements of type `ty` from `bytes`.
///
/// `bytes` must hold exactly the encoded size of `out.len()` elements.
pub fn dequantize_row(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    let n = out.len() as u64;
    let need = ty.row_bytes(n).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "{} elements is not a whole number of {} blocks of {}",
            n,
            ty,
            ty.block_size()
        ))
    })?;
    if bytes.len() as u64 != need {
        return Err(Error::InvalidArgument(format!(
            "{} elements of {} need {} bytes, got {}",
            n,
            ty,
            need,
            bytes.len()
        )));
    }
    match ty {
        GgmlType::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::Q4_0 => each(bytes, out, dequant_q4_0),
        GgmlType::Q4_1 => each(bytes, out, dequant_q4_1),
        GgmlType::Q5_0 => each(bytes, out, dequant_q5_0),
        GgmlType::Q5_1 => each(bytes, out, dequant_q5_1),
        GgmlType::Q8_0 => each(bytes, out, dequant_q8_0),
        GgmlType::Q2_K => each(bytes, out, dequant_q2_k),
        GgmlType::Q3_K => each(bytes, out, dequant_q3_k),
        GgmlType::Q4_K => each(bytes, out, dequant_q4_k),
        GgmlType::Q5_K => each(bytes, out, dequant_q5_k),
        GgmlType::Q6_K => each(bytes, out, dequant_q6_k),
        GgmlType::Q8_K => each(bytes, out, dequant_q8_k),
        GgmlType::IQ4_NL => each(bytes, out, dequant_iq4_nl),
        GgmlType::IQ4_XS => each(bytes, out, dequant_iq4_xs),
        other => {
            return Err(Error::Unsupported(format!(
                "dequantizing tensor type {other}"
            )))
        }
    }
    Ok(())
}

fn each<B: Pod>(bytes: &[u8], out: &mut [f32], f: fn(&B, &mut [f32])) {
    let bs = out.len() / (bytes.len() / std::mem::size_of::<B>()).max(1);
    for (b, o) in blocks::<B>(bytes).zip(out.chunks_exact_mut(bs)) {
        f(&b, o);
    }
}

pub fn dequant_q4_0(b: &BlockQ4_0, y: &mut [f32]) {
    let d = b.d.to_f32();
    for j in 0..16 {
        let x0 = (b.qs[j] & 0x0F) as i32 - 8;
        let x1 = (b.qs[j] >> 4) as i32 - 8;
        y[j] = x0 as f32 * d;
        y[j + 16] = x1 as f32 * d;
    }
}

pub fn dequant_q4_1(b: &BlockQ4_1, y: &mut [f32]) {
    let d = b.d.to_f32();
    let m = b.m.to_f32();
    for j in 0..16 {
        y[j] = (b.qs[j] & 0x0F) as f32 * d + m;
        y[j + 16] = (b.qs[j] >> 4) as f32 * d + m;
    }
}

pub fn dequant_q5_0(b: &BlockQ5_0, y: &mut [f32]) {
    let d = b.d.to_f32();
    let qh = u32::from_le_bytes(b.qh);
    for j in 0..16 {
        let xh0 = ((qh >> j) << 4) & 0x10;
        let xh1 = (qh >> (j + 12)) & 0x10;
        let x0 = ((b.qs[j] as u32 & 0x0F) | xh0) as i32 - 16;
        let x1 = ((b.qs[j] as u32 >> 4) | xh1) as i32 - 16;
        y[j] = x0 as f32 * d;
        y[j + 16] = x1 as f32 * d;
    }
}

pub fn dequant_q5_1(b: &BlockQ5_1, y: &mut [f32]) {
    let d = b.d.to_f32();
    let m = b.m.to_f32();
    let qh = u32::from_le_bytes(b.qh);
    for j in 0..16 {
        let xh0 = ((qh >> j) << 4) & 0x10;
        let xh1 = (qh >> (j + 12)) & 0x10;
        let x0 = (b.qs[j] as u32 & 0x0F) | xh0;
        let x1 = (b.qs[j] as u32 >> 4) | xh1;
        y[j] = x0 as f32 * d + m;
        y[j + 16] = x1 as f32 * d + m;
    }
}

pub fn dequant_q8_0(b: &BlockQ8_0, y: &mut [f32]) {
    let d = b.d.to_f32();
    for (o, q) in y.iter_mut().zip(b.qs.iter()) {
        *o = *q as f32 * d;
    }
}

pub fn dequant_q2_k(b: &BlockQ2K, y: &mut [f32]) {
    let d = b.d.to_f32();
    let min = b.dmin.to_f32();
    let mut yi = 0;
    let mut is = 0;
    for n in 0..2 {
        let q = &b.qs[n * 32..n * 32 + 32];
        let mut shift = 0;
        for _ in 0..4 {
            for half in 0..2 {
                let sc = b.scales[is];
                is += 1;
                let dl = d * (sc & 0xF) as f32;
                let ml = min * (sc >> 4) as f32;
                for l in 0..16 {
                    y[yi] = dl * ((q[l + 16 * half] >> shift) & 3) as f32 - ml;
                    yi += 1;
                }
            }
            shift += 2;
        }
    }
}

pub fn dequant_q3_k(b: &BlockQ3K, y: &mut [f32]) {
    let d_all = b.d.to_f32();
    let scales = q3k_scales(&b.scales);
    let mut m: u8 = 1;
    let mut yi = 0;
    let mut is = 0;
    for n in 0..2 {
        let q = &b.qs[n * 32..n * 32 + 32];
        let mut shift = 0;
        for _ in 0..4 {
            for half in 0..2 {
                let dl = d_all * (scales[is] as i32 - 32) as f32;
                is += 1;
                for l in 0..16 {
                    let k = l + 16 * half;
                    let lo = ((q[k] >> shift) & 3) as i32;
                    let hi = if b.hmask[k] & m != 0 { 0 } else { 4 };
                    y[yi] = dl * (lo - hi) as f32;
                    yi += 1;
                }
            }
            shift += 2;
            m <<= 1;
        }
    }
}

pub fn dequant_q4_k(b: &BlockQ4K, y: &mut [f32]) {
    let d = b.d.to_f32();
    let min = b.dmin.to_f32();
    for j in 0..4 {
        let q = &b.qs[j * 32..j * 32 + 32];
        let (sc1, m1) = scale_min_k4(2 * j, &b.scales);
        let (sc2, m2) = scale_min_k4(2 * j + 1, &b.scales);
        let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
        let y = &mut y[j * 64..j * 64 + 64];
        for l in 0..32 {
            y[l] = d1 * (q[l] & 0xF) as f32 - m1;
            y[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
        }
    }
}

pub fn dequant_q5_k(b: &BlockQ5K, y: &mut [f32]) {
    let d = b.d.to_f32();
    let min = b.dmin.to_f32();
    let mut u1: u8 = 1;
    let mut u2: u8 = 2;
    for j in 0..4 {
        let ql = &b.qs[j * 32..j * 32 + 32];
        let (sc1, m1) = scale_min_k4(2 * j, &b.scales);
        let (sc2, m2) = scale_min_k4(2 * j + 1, &b.scales);
        let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
        let y = &mut y[j * 64..j * 64 + 64];
        for l in 0..32 {
            let h1 = if b.qh[l] & u1 != 0 { 16 } else { 0 };
            let h2 = if b.qh[l] & u2 != 0 { 16 } else { 0 };
            y[l] = d1 * ((ql[l] & 0xF) + h1) as f32 - m1;
            y[l + 32] = d2 * ((ql[l] >> 4) + h2) as f32 - m2;
        }
        u1 <<= 2;
        u2 <<= 2;
    }
}

pub fn dequant_q6_k(b: &BlockQ6K, y: &mut [f32]) {
    let d = b.d.to_f32();
    for n in 0..2 {
        let ql = &b.ql[n * 64..n * 64 + 64];
        let qh = &b.qh[n * 32..n * 32 + 32];
        let sc = &b.scales[n * 8..n * 8 + 8];
        let y = &mut y[n * 128..n * 128 + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            y[l] = d * sc[is] as f32 * q1 as f32;
            y[l + 32] = d * sc[is + 2] as f32 * q2 as f32;
            y[l + 64] = d * sc[is + 4] as f32 * q3 as f32;
            y[l + 96] = d * sc[is + 6] as f32 * q4 as f32;
        }
    }
}

pub fn dequant_q8_k(b: &BlockQ8K, y: &mut [f32]) {
    for (o, q) in y.iter_mut().zip(b.qs.iter()) {
        *o = b.d * *q as f32;
    }
}

pub fn dequant_iq4_nl(b: &BlockIQ4NL, y: &mut [f32]) {
    let d = b.d.to_f32();
    for j in 0..QK / 2 {
        y[j] = d * KVALUES_IQ4NL[(b.qs[j] & 0xF) as usize] as f32;
        y[j + QK / 2] = d * KVALUES_IQ4NL[(b.qs[j] >> 4) as usize] as f32;
    }
}

pub fn dequant_iq4_xs(b: &BlockIQ4XS, y: &mut [f32]) {
    let d = b.d.to_f32();
    let scales = iq4xs_scales(b.scales_h, b.scales_l);
    for (ib, (&ls, y)) in scales.iter().zip(y.chunks_exact_mut(QK)).enumerate() {
        // As ggml: the group scale first (exact: 11 + 6 significant bits), then each value.
        let dl = d * ls as f32;
        let qs = &b.qs[ib * QK / 2..(ib + 1) * QK / 2];
        for j in 0..QK / 2 {
            y[j] = dl * KVALUES_IQ4NL[(qs[j] & 0xF) as usize] as f32;
            y[j + QK / 2] = dl * KVALUES_IQ4NL[(qs[j] >> 4) as usize] as f32;
        }
    }
}
