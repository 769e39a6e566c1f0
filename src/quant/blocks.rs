//! Block layouts identical to ggml's C structs, so tensor bytes in the map can be viewed
//! as slices of these without copying. `bytemuck::Pod` makes those views safe: a cast
//! checks length and alignment instead of trusting the file.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::types::{QK, QK_K};

/// 32 weights at 4 bits, one f16 scale: w = (q - 8) * d.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ4_0 {
    pub d: f16,
    pub qs: [u8; QK / 2],
}

/// 32 weights at 4 bits, f16 scale and minimum: w = q * d + m.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    pub qs: [u8; QK / 2],
}

/// 32 weights at 5 bits (high bits packed in `qh`): w = (q - 16) * d.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ5_0 {
    pub d: f16,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}

/// 32 weights at 5 bits with a minimum: w = q * d + m.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ5_1 {
    pub d: f16,
    pub m: f16,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}

/// 32 weights (or activations) at 8 bits: w = q * d.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; QK],
}

/// Q8_0 plus `s = d * sum(qs)`, the activation format for weights with a minimum.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ8_1 {
    pub d: f16,
    pub s: f16,
    pub qs: [i8; QK],
}

/// 256 weights at 2 bits in 16 groups with 4-bit scales and minimums.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ2K {
    pub scales: [u8; QK_K / 16],
    pub qs: [u8; QK_K / 4],
    pub d: f16,
    pub dmin: f16,
}

/// 256 weights at 3 bits (high bit in `hmask`), 16 groups with 6-bit scales.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ3K {
    pub hmask: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 4],
    pub scales: [u8; 12],
    pub d: f16,
}

/// 256 weights at 4 bits, 8 groups with 6-bit scales and minimums.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ4K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; 12],
    pub qs: [u8; QK_K / 2],
}

/// 256 weights at 5 bits, 8 groups with 6-bit scales and minimums.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ5K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; 12],
    pub qh: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 2],
}

/// 256 weights at 6 bits, 16 groups with signed 8-bit scales.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ6K {
    pub ql: [u8; QK_K / 2],
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    pub d: f16,
}

/// The 16 values of the non-linear 4-bit grid shared by IQ4_NL and IQ4_XS (ggml's
/// `kvalues_iq4nl`): a 4-bit index selects one, scaled by the block's `d`.
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// 32 weights as 4-bit indices into [`KVALUES_IQ4NL`], one f16 scale:
/// w = d * KVALUES_IQ4NL[q]. Low nibbles are elements 0..16, high nibbles 16..32.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockIQ4NL {
    pub d: f16,
    pub qs: [u8; QK / 2],
}

/// 256 weights as 4-bit indices into [`KVALUES_IQ4NL`] in 8 groups of 32, each with a
/// 6-bit scale (low 4 bits in `scales_l`, high 2 in `scales_h`, biased by 32):
/// w = d * (ls - 32) * KVALUES_IQ4NL[q]. Each group's 16 bytes of `qs` are laid out as an
/// IQ4_NL block's.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockIQ4XS {
    pub d: f16,
    pub scales_h: u16,
    pub scales_l: [u8; QK_K / 64],
    pub qs: [u8; QK_K / 2],
}

/// 256 activations at 8 bits with an f32 scale and per-16 sums, for k-quant dot products.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; QK_K],
    pub bsums: [i16; QK_K / 16],
}

impl Default for BlockQ8K {
    fn default() -> Self {
        Zeroable::zeroed()
    }
}

impl Default for BlockQ8_0 {
    fn default() -> Self {
        Zeroable::zeroed()
    }
}

impl Default for BlockQ8_1 {
    fn default() -> Self {
        Zeroable::zeroed()
    }
}

// The layouts must match ggml byte for byte; a wrong size would silently misread every weight.
const _: () = {
    use std::mem::{align_of, size_of};
    assert!(size_of::<BlockQ4_0>() == 18);
    assert!(size_of::<BlockQ4_1>() == 20);
    assert!(size_of::<BlockQ5_0>() == 22);
    assert!(size_of::<BlockQ5_1>() == 24);
    assert!(size_of::<BlockQ8_0>() == 34);
    assert!(size_of::<BlockQ8_1>() == 36);
    assert!(size_of::<BlockQ2K>() == 84);
    assert!(size_of::<BlockQ3K>() == 110);
    assert!(size_of::<BlockQ4K>() == 144);
    assert!(size_of::<BlockQ5K>() == 176);
    assert!(size_of::<BlockQ6K>() == 210);
    assert!(size_of::<BlockQ8K>() == 292);
    assert!(size_of::<BlockIQ4NL>() == 18);
    assert!(size_of::<BlockIQ4XS>() == 136);
    assert!(align_of::<BlockIQ4XS>() == 2);
    assert!(align_of::<BlockQ4_0>() == 2);
    assert!(align_of::<BlockQ8K>() == 4);
};

/// The 6-bit scale and minimum of group `j` in a Q4_K/Q5_K `scales` array.
#[inline(always)]
pub fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Unpacks the sixteen 6-bit Q3_K scales (still biased by 32).
#[inline(always)]
pub fn q3k_scales(scales: &[u8; 12]) -> [i8; 16] {
    const KMASK1: u32 = 0x0303_0303;
    const KMASK2: u32 = 0x0f0f_0f0f;
    let a0 = u32::from_le_bytes([scales[0], scales[1], scales[2], scales[3]]);
    let a1 = u32::from_le_bytes([scales[4], scales[5], scales[6], scales[7]]);
    let tmp = u32::from_le_bytes([scales[8], scales[9], scales[10], scales[11]]);
    let aux = [
        (a0 & KMASK2) | ((tmp & KMASK1) << 4),
        (a1 & KMASK2) | (((tmp >> 2) & KMASK1) << 4),
        ((a0 >> 4) & KMASK2) | (((tmp >> 4) & KMASK1) << 4),
        ((a1 >> 4) & KMASK2) | (((tmp >> 6) & KMASK1) << 4),
    ];
    let mut out = [0i8; 16];
    for (i, a) in aux.iter().enumerate() {
        for (k, b) in a.to_le_bytes().iter().enumerate() {
            out[i * 4 + k] = *b as i8;
        }
    }
    out
}

/// The eight IQ4_XS group scales, unbiased (-32..31), from a block's `scales_h` and
/// `scales_l`. Every kernel set unpacks the scales through this one function.
#[inline(always)]
pub fn iq4xs_scales(scales_h: u16, scales_l: [u8; 4]) -> [i8; 8] {
    let mut out = [0i8; 8];
    for (ib, o) in out.iter_mut().enumerate() {
        let lo = (scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF;
        let hi = ((scales_h >> (2 * ib)) & 3) as u8;
        *o = (lo | (hi << 4)) as i8 - 32;
    }
    out
}
