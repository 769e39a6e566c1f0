//! IQ4_NL and IQ4_XS quantization of f32 weights: a port of ggml's
//! `quantize_row_iq4_nl_impl` without an importance matrix (what `llama-quantize` runs
//! when given none), in the same order of f32 operations, so the blocks are bit-identical
//! to llama.cpp's. ggml builds this file for the baseline of each target (no fused
//! multiply-add), and Rust never fuses on its own, so the result does not depend on the
//! CPU either: tools/fetch-models relies on that to rebuild a test model in CI with a
//! known checksum.

use half::f16;

use super::blocks::{BlockIQ4NL, BlockIQ4XS, KVALUES_IQ4NL};
use super::types::{QK, QK_K};

/// ggml's GROUP_MAX_EPS: groups whose largest magnitude is below this are all zero.
const GROUP_MAX_EPS: f32 = 1e-15;
/// Scale candidates tried on each side of the first guess (ggml's `ntry`).
const NTRY: i32 = 7;

/// Index of the grid value nearest to `x` (ggml's `best_index_int8`, ties to the upper).
fn best_index(x: f32) -> u8 {
    let v = |i: usize| KVALUES_IQ4NL[i] as f32;
    if x <= v(0) {
        return 0;
    }
    if x >= v(15) {
        return 15;
    }
    let (mut ml, mut mu) = (0, 15);
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < v(mav) {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - v(mu - 1) < v(mu) - x {
        (mu - 1) as u8
    } else {
        mu as u8
    }
}

/// Weighted least-squares sums `(Σ w·q·x, Σ w·q²)` of `x` mapped to the grid at inverse
/// scale `id`, with weights `w = x²`.
fn fit(x: &[f32; QK], id: f32) -> (f32, f32) {
    let (mut sumqx, mut sumq2) = (0.0f32, 0.0f32);
    for &xj in x {
        let q = KVALUES_IQ4NL[best_index(id * xj) as usize] as f32;
        let w = xj * xj;
        sumqx += w * q * xj;
        sumq2 += w * q * q;
    }
    (sumqx, sumq2)
}

/// The scale of one group of 32: the first guess maps the largest magnitude to the grid's
/// end, then 2·NTRY + 1 other inverse scales around it are fitted and the one with the
/// smallest weighted error kept. 0 for an all-zero group.
fn group_scale(x: &[f32; QK]) -> f32 {
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
    let v0 = KVALUES_IQ4NL[0];
    let (sumqx, sumq2) = fit(x, 1.0 / (-max / v0 as f32));
    let mut d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
    let mut best = d * sumqx;
    for itry in -NTRY..=NTRY {
        let (sumqx, sumq2) = fit(x, (itry + v0 as i32) as f32 / max);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    d
}

/// The 16 bytes of indices of 32 values at inverse scale `id` (low nibbles: elements
/// 0..16).
fn pack(x: &[f32; QK], id: f32) -> [u8; QK / 2] {
    let mut qs = [0u8; QK / 2];
    for (j, q) in qs.iter_mut().enumerate() {
        *q = best_index(id * x[j]) | (best_index(id * x[j + QK / 2]) << 4);
    }
    qs
}

fn group(x: &[f32]) -> &[f32; QK] {
    x.try_into().expect("a group is 32 values")
}

/// Quantizes `x` (`32 * out.len()` values) to IQ4_NL blocks.
pub fn quantize_row_iq4_nl(x: &[f32], out: &mut [BlockIQ4NL]) {
    assert_eq!(x.len(), out.len() * QK, "IQ4_NL rows are whole blocks");
    for (xb, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let xb = group(xb);
        let d = group_scale(xb);
        b.d = f16::from_f32(d);
        // The indices are chosen against the f32 scale, not the stored f16 one (as ggml).
        b.qs = pack(xb, if d != 0.0 { 1.0 / d } else { 0.0 });
    }
}

/// Quantizes `x` (`256 * out.len()` values) to IQ4_XS blocks: each group's best scale as
/// for IQ4_NL, then the block scale `d` that maps the largest of them to -32, and every
/// group re-fitted to its scale rounded to a 6-bit multiple of `d`.
pub fn quantize_row_iq4_xs(x: &[f32], out: &mut [BlockIQ4XS]) {
    assert_eq!(x.len(), out.len() * QK_K, "IQ4_XS rows are whole blocks");
    for (xs, b) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        let mut scales = [0.0f32; QK_K / QK];
        let (mut amax_scale, mut max_scale) = (0.0f32, 0.0f32);
        for (s, xb) in scales.iter_mut().zip(xs.chunks_exact(QK)) {
            *s = group_scale(group(xb));
            if s.abs() > amax_scale {
                amax_scale = s.abs();
                max_scale = *s;
            }
        }
        let d = -max_scale / 32.0;
        b.d = f16::from_f32(d);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.scales_h = 0;
        b.scales_l = [0; QK_K / 64];
        for (ib, (&s, xb)) in scales.iter().zip(xs.chunks_exact(QK)).enumerate() {
            // ggml's nearest_int rounds half to even.
            let l = ((id * s).round_ties_even() as i32).clamp(-32, 31);
            let dl = d * l as f32;
            let qs = pack(group(xb), if dl != 0.0 { 1.0 / dl } else { 0.0 });
            b.qs[ib * QK / 2..(ib + 1) * QK / 2].copy_from_slice(&qs);
            let l = (l + 32) as u8;
            b.scales_l[ib / 2] |= (l & 0xF) << (4 * (ib % 2));
            b.scales_h |= ((l >> 4) as u16) << (2 * ib);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::dequant::{dequant_iq4_nl, dequant_iq4_xs};

    fn wave(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let t = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
                (t as f32 / (1u32 << 24) as f32 - 0.5) * 0.1
            })
            .collect()
    }

    #[test]
    fn best_index_picks_the_nearest_value() {
        for i in -140..=130 {
            let x = i as f32 * 0.97;
            let got = KVALUES_IQ4NL[best_index(x) as usize] as f32;
            let nearest = KVALUES_IQ4NL
                .iter()
                .map(|&v| (v as f32 - x).abs())
                .fold(f32::INFINITY, f32::min);
            assert_eq!((got - x).abs(), nearest, "x = {x}");
        }
    }

    /// Round trips stay within a fraction of the block's range; zero blocks stay zero.
    #[test]
    fn round_trips_are_close() {
        let mut x = wave(2 * QK_K, 7);
        x[QK_K..QK_K + QK].fill(0.0);
        let mut nl = vec![bytemuck::Zeroable::zeroed(); x.len() / QK];
        let mut xs = vec![bytemuck::Zeroable::zeroed(); x.len() / QK_K];
        quantize_row_iq4_nl(&x, &mut nl);
        quantize_row_iq4_xs(&x, &mut xs);
        let mut y = vec![0f32; x.len()];
        for (b, y) in nl.iter().zip(y.chunks_exact_mut(QK)) {
            dequant_iq4_nl(b, y);
        }
        let mut z = vec![0f32; x.len()];
        for (b, z) in xs.iter().zip(z.chunks_exact_mut(QK_K)) {
            dequant_iq4_xs(b, z);
        }
        for (i, ((&x, &y), &z)) in x.iter().zip(&y).zip(&z).enumerate() {
            assert!((x - y).abs() < 0.006, "IQ4_NL element {i}: {x} -> {y}");
            assert!((x - z).abs() < 0.008, "IQ4_XS element {i}: {x} -> {z}");
        }
        assert!(y[QK_K..QK_K + QK].iter().all(|&v| v == 0.0));
        assert!(z[QK_K..QK_K + QK].iter().all(|&v| v == 0.0));
    }
}
