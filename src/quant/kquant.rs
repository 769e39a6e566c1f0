//! Weight quantizers for `ember quantize`'s Q4_K_M mix: ports of ggml's reference
//! quantizers (`quantize_row_q4_K_ref`, `quantize_row_q6_K_ref`, `quantize_row_q5_0_ref`;
//! Q8_0 is [`super::quantize::quantize_row_q8_0`], already ggml's reference), which are
//! what llama-quantize runs when given no importance matrix. The f32 operations are done
//! in ggml's order (Rust never contracts them into fused multiply-adds), so the blocks are
//! bit-identical to llama.cpp's on any CPU.

use half::f16;

use super::blocks::{BlockQ4K, BlockQ5_0, BlockQ6K};
use super::types::{QK, QK_K};

/// ggml's GROUP_MAX_EPS: groups whose largest magnitude is below this are all zero.
const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `nearest_int` (round half to even, by adding 1.5·2^23).
#[inline(always)]
fn nearest_int(v: f32) -> i32 {
    v.round_ties_even() as i32
}

/// Quantizes `x` (`32 * out.len()` values) to Q5_0 blocks: the scale maps the value of
/// largest magnitude to -16, and the 5-bit indices are truncated (not rounded) from
/// `x/d + 16.5`, as ggml does.
pub fn quantize_row_q5_0(x: &[f32], out: &mut [BlockQ5_0]) {
    assert_eq!(x.len(), out.len() * QK, "Q5_0 rows are whole blocks");
    for (xb, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in xb {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f16::from_f32(d);
        let mut qh = 0u32;
        for j in 0..QK / 2 {
            // C's (int8_t) conversion truncates toward zero; the sum is in [0.5, 32.5].
            let q0 = ((xb[j] * id + 16.5) as i8).min(31) as u8;
            let q1 = ((xb[j + QK / 2] * id + 16.5) as i8).min(31) as u8;
            b.qs[j] = (q0 & 0x0F) | ((q1 & 0x0F) << 4);
            qh |= (((q0 & 0x10) >> 4) as u32) << j;
            qh |= (((q1 & 0x10) >> 4) as u32) << (j + QK / 2);
        }
        b.qh = qh.to_le_bytes();
    }
}

/// ggml's `make_qkx2_quants`: the scale and minimum of an asymmetric `nmax`-level fit of
/// `x` under `weights`, searching `nstep + 1` scales around the range's; the levels go to
/// `l`. Returns `(scale, -min)`.
fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    (rmin, rdelta, nstep): (f32, f32, i32),
) -> (f32, f32) {
    let n = x.len();
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l[..n].fill(0);
        return (0.0, -min);
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l[i] = q as u8;
        let diff = scale * q as f32 + min - x[i];
        best_error += weights[i] * (diff * diff);
    }
    let mut laux = [0u8; QK];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = q as u8;
            let (w, q) = (weights[i], q as f32);
            sum_l += w * q;
            sum_l2 += w * q * q;
            sum_xl += w * q * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * (diff * diff);
            }
            if cur_error < best_error {
                l[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Quantizes `x` (`256 * out.len()` values) to Q4_K blocks: each group of 32 gets the best
/// weighted asymmetric 4-bit fit, the groups' scales and minimums are quantized to 6 bits
/// against the block's largest, and the values are re-fitted to the stored scales.
pub fn quantize_row_q4_k(x: &[f32], out: &mut [BlockQ4K]) {
    assert_eq!(x.len(), out.len() * QK_K, "Q4_K rows are whole blocks");
    let mut l = [0u8; QK_K];
    let mut weights = [0f32; QK];
    for (xs, b) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        let mut scales = [0f32; QK_K / QK];
        let mut mins = [0f32; QK_K / QK];
        let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
        for j in 0..QK_K / QK {
            let xg = &xs[QK * j..QK * (j + 1)];
            let mut sum_x2 = 0.0f32;
            for &v in xg {
                sum_x2 += v * v;
            }
            let av_x = (sum_x2 / 32.0).sqrt();
            for (w, &v) in weights.iter_mut().zip(xg) {
                *w = av_x + v.abs();
            }
            let lg = &mut l[QK * j..QK * (j + 1)];
            (scales[j], mins[j]) = make_qkx2_quants(15, xg, &weights, lg, (-1.0, 0.1, 20));
            max_scale = max_scale.max(scales[j]);
            if mins[j] > max_min {
                max_min = mins[j];
            }
        }
        let inv_scale = if max_scale > 0.0 {
            63.0 / max_scale
        } else {
            0.0
        };
        let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
        for j in 0..QK_K / QK {
            // ggml stores nearest_int into a uint8_t before clamping: the same low byte.
            let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
            let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
            if j < 4 {
                b.scales[j] = ls;
                b.scales[j + 4] = lm;
            } else {
                b.scales[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
                b.scales[j - 4] |= (ls >> 4) << 6;
                b.scales[j] |= (lm >> 4) << 6;
            }
        }
        b.d = f16::from_f32(max_scale / 63.0);
        b.dmin = f16::from_f32(max_min / 63.0);
        for j in 0..QK_K / QK {
            let (sc, m) = scale_min_k4(j, &b.scales);
            // Re-fitted against the stored f16 scales, as ggml does.
            let d = b.d.to_f32() * sc as f32;
            if d == 0.0 {
                continue;
            }
            let dm = b.dmin.to_f32() * m as f32;
            for ii in 0..QK {
                l[QK * j + ii] = nearest_int((xs[QK * j + ii] + dm) / d).clamp(0, 15) as u8;
            }
        }
        for (k, q) in b.qs.chunks_exact_mut(32).enumerate() {
            let j = 64 * k;
            for (i, q) in q.iter_mut().enumerate() {
                *q = l[j + i] | (l[j + i + 32] << 4);
            }
        }
    }
}

/// ggml's `get_scale_min_k4`: group `j`'s 6-bit scale and minimum.
fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// The weighted least-squares sums `(Σ w·x·l, Σ w·l²)` of `x` at inverse scale `iscale`
/// (levels clamped to [-nmax, nmax - 1]), weights `x²` (ggml's rmse_type 1).
fn qx_sums(nmax: i32, x: &[f32], iscale: f32) -> (f32, f32) {
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for &v in x {
        let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1) as f32;
        let w = v * v;
        sumlx += w * v * l;
        suml2 += w * l * l;
    }
    (sumlx, suml2)
}

/// ggml's `make_qx_quants` with rmse_type 1 and no importance: the scale of a symmetric
/// `2·nmax`-level fit of `x`, trying 18 inverse scales around the one mapping the largest
/// magnitude to -nmax. (The levels are recomputed by the caller against the stored scale.)
fn make_qx_quants(nmax: i32, x: &[f32]) -> f32 {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        return 0.0;
    }
    let (sumlx, suml2) = qx_sums(nmax, x, -(nmax as f32) / max);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        let iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (sumlx, suml2) = qx_sums(nmax, x, iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Quantizes `x` (`256 * out.len()` values) to Q6_K blocks: each group of 16 gets its best
/// symmetric 6-bit scale, the scales are quantized to 8 bits against the largest, and the
/// values re-fitted to the stored scales.
pub fn quantize_row_q6_k(x: &[f32], out: &mut [BlockQ6K]) {
    assert_eq!(x.len(), out.len() * QK_K, "Q6_K rows are whole blocks");
    for (xs, b) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        let mut scales = [0f32; QK_K / 16];
        let (mut max_scale, mut max_abs_scale) = (0.0f32, 0.0f32);
        for (s, xg) in scales.iter_mut().zip(xs.chunks_exact(16)) {
            *s = make_qx_quants(32, xg);
            if s.abs() > max_abs_scale {
                max_abs_scale = s.abs();
                max_scale = *s;
            }
        }
        *b = bytemuck::Zeroable::zeroed();
        if max_abs_scale < GROUP_MAX_EPS {
            continue;
        }
        let iscale = -128.0 / max_scale;
        b.d = f16::from_f32(1.0 / iscale);
        for (q, &s) in b.scales.iter_mut().zip(&scales) {
            *q = nearest_int(iscale * s).min(127) as i8;
        }
        // ggml skips re-fitting a group whose stored scale rounds to 0, so its levels stay
        // those make_qx_quants left in L: `qx_levels` recomputes them.
        let mut l = [0u8; QK_K];
        for j in 0..QK_K / 16 {
            let d = b.d.to_f32() * b.scales[j] as f32;
            let xg = &xs[16 * j..16 * (j + 1)];
            let lg = &mut l[16 * j..16 * (j + 1)];
            if d == 0.0 {
                qx_levels(32, xg, lg);
                continue;
            }
            for (q, &v) in lg.iter_mut().zip(xg) {
                *q = (nearest_int(v / d).clamp(-32, 31) + 32) as u8;
            }
        }
        for (k, (ql, qh)) in
            b.ql.chunks_exact_mut(64)
                .zip(b.qh.chunks_exact_mut(32))
                .enumerate()
        {
            let j = 128 * k;
            for i in 0..32 {
                let (l0, l1, l2, l3) = (l[j + i], l[j + i + 32], l[j + i + 64], l[j + i + 96]);
                ql[i] = (l0 & 0xF) | ((l2 & 0xF) << 4);
                ql[i + 32] = (l1 & 0xF) | ((l3 & 0xF) << 4);
                qh[i] = (l0 >> 4) | ((l1 >> 4) << 2) | ((l2 >> 4) << 4) | ((l3 >> 4) << 6);
            }
        }
    }
}

/// The levels `make_qx_quants(nmax, x, rmse_type 1)` leaves in its `L`: those of the best
/// inverse scale it tried (all 0 for an all-zero group).
fn qx_levels(nmax: i32, x: &[f32], l: &mut [u8]) {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return;
    }
    let mut best_iscale = -(nmax as f32) / max;
    let (sumlx, suml2) = qx_sums(nmax, x, best_iscale);
    let scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        let iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (sumlx, suml2) = qx_sums(nmax, x, iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            best = sumlx / suml2 * sumlx;
            best_iscale = iscale;
        }
    }
    for (q, &v) in l.iter_mut().zip(x) {
        *q = (nearest_int(best_iscale * v).clamp(-nmax, nmax - 1) + nmax) as u8;
    }
}

// Bit-exactness is checked against llama-quantize on whole models: the 12 synthetic ones
// (tests/requantize.rs, tools/fetch-models; Q5_0 and Q8_0 there) and SmolLM2-135M Q4_1 ->
// Q4_K_M, whose 16 Q4_K and 14 Q6_K matrices were identical (file sha256 dc0f3a02e821...).
// These tests only guard the round trip.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::dequant::{dequant_q4_k, dequant_q5_0, dequant_q6_k};
    use bytemuck::Zeroable;

    fn wave(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let t = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
                (t as f32 / (1u32 << 24) as f32 - 0.5) * 0.1
            })
            .collect()
    }

    /// Round trips stay within a fraction of the range (±0.05); zero groups stay zero.
    #[test]
    fn round_trips_are_close() {
        let mut x = wave(2 * QK_K, 3);
        x[QK_K..QK_K + QK].fill(0.0);
        let mut y = vec![0f32; x.len()];
        let mut k4 = vec![BlockQ4K::zeroed(); 2];
        quantize_row_q4_k(&x, &mut k4);
        for (b, y) in k4.iter().zip(y.chunks_exact_mut(QK_K)) {
            dequant_q4_k(b, y);
        }
        let mut z = vec![0f32; x.len()];
        let mut k6 = vec![BlockQ6K::zeroed(); 2];
        quantize_row_q6_k(&x, &mut k6);
        for (b, z) in k6.iter().zip(z.chunks_exact_mut(QK_K)) {
            dequant_q6_k(b, z);
        }
        let mut w = vec![0f32; x.len()];
        let mut q5 = vec![BlockQ5_0::zeroed(); x.len() / QK];
        quantize_row_q5_0(&x, &mut q5);
        for (b, w) in q5.iter().zip(w.chunks_exact_mut(QK)) {
            dequant_q5_0(b, w);
        }
        for i in 0..x.len() {
            assert!(
                (x[i] - y[i]).abs() < 0.006,
                "Q4_K {i}: {} -> {}",
                x[i],
                y[i]
            );
            assert!(
                (x[i] - z[i]).abs() < 0.002,
                "Q6_K {i}: {} -> {}",
                x[i],
                z[i]
            );
            assert!(
                (x[i] - w[i]).abs() < 0.003,
                "Q5_0 {i}: {} -> {}",
                x[i],
                w[i]
            );
        }
        assert!(z[QK_K..QK_K + QK].iter().all(|&v| v == 0.0));
        assert!(w[QK_K..QK_K + QK].iter().all(|&v| v == 0.0));
    }
}
