//! AArch64 kernel sets: baseline NEON, NEON with dotprod, and with i8mm for prefill.

mod dotprod;
mod i8mm;
mod neon;

use half::f16;

use super::act::{self, GROUP};
use super::{ActFormat, Kernels, MatFns, N_TYPES, SCALAR_MATS};
use crate::quant::{GgmlType, QK, QK_K};
use dotprod::Sdot;
use neon::*;

/// Checks the sizes every kernel relies on; a violation is a bug in the caller.
fn check(ty: GgmlType, w: &[u8], act_len: usize, k: usize, rows: usize, nt: usize) {
    let bs = ty.block_size();
    assert!(k % bs == 0 && (bs == 1 || k % QK == 0), "bad row length");
    let rb = k / bs * ty.type_size();
    let fmt = ActFormat::for_weight(ty).unwrap_or(ActFormat::F32);
    assert!(w.len() >= rows * rb, "weights too short");
    assert!(
        act_len >= nt * act::row_bytes(fmt, k),
        "activations too short"
    );
}

fn gemm_rows(out: &[f32], ng: usize) -> usize {
    assert!(ng > 0 && out.len() % (ng * GROUP) == 0);
    out.len() / (ng * GROUP)
}

macro_rules! leg {
    ($w:ty, $isa:ty) => {{
        fn v(w: &[u8], act: &[u8], k: usize, out: &mut [f32]) {
            check(<$w as Leg>::TY, w, act.len(), k, out.len(), 1);
            // SAFETY: sizes checked; NEON is baseline and the table holding this function
            // is only handed out on CPUs with its extensions.
            unsafe { vec_leg::<$w, $isa>(w.as_ptr(), act.as_ptr(), k / QK, out) }
        }
        fn g(w: &[u8], act: &[u8], k: usize, ng: usize, out: &mut [f32]) {
            check(
                <$w as Leg>::TY,
                w,
                act.len(),
                k,
                gemm_rows(out, ng),
                ng * GROUP,
            );
            // SAFETY: as above.
            unsafe { gemm_leg::<$w, $isa>(w.as_ptr(), act.as_ptr(), k / QK, ng, out) }
        }
        Some(MatFns { vec: v, gemm: g })
    }};
}

macro_rules! kq {
    ($w:ty, $isa:ty) => {{
        fn v(w: &[u8], act: &[u8], k: usize, out: &mut [f32]) {
            check(<$w as KQuant>::TY, w, act.len(), k, out.len(), 1);
            // SAFETY: as in `leg!`.
            unsafe { vec_k::<$w, $isa>(w.as_ptr(), act.as_ptr(), k / QK_K, out) }
        }
        fn g(w: &[u8], act: &[u8], k: usize, ng: usize, out: &mut [f32]) {
            check(
                <$w as KQuant>::TY,
                w,
                act.len(),
                k,
                gemm_rows(out, ng),
                ng * GROUP,
            );
            // SAFETY: as above.
            unsafe { gemm_k::<$w, $isa>(w.as_ptr(), act.as_ptr(), k / QK_K, ng, out) }
        }
        Some(MatFns { vec: v, gemm: g })
    }};
}

macro_rules! float {
    ($w:ty, $ty:expr) => {{
        fn v(w: &[u8], act: &[u8], k: usize, out: &mut [f32]) {
            check($ty, w, act.len(), k, out.len(), 1);
            // SAFETY: sizes checked; f32 activations are read unaligned.
            unsafe { vec_float::<$w>(w.as_ptr(), act.as_ptr(), k, out) }
        }
        fn g(w: &[u8], act: &[u8], k: usize, ng: usize, out: &mut [f32]) {
            check($ty, w, act.len(), k, gemm_rows(out, ng), ng * GROUP);
            // SAFETY: as above.
            unsafe { gemm_float::<$w>(w.as_ptr(), act.as_ptr(), k, ng, out) }
        }
        Some(MatFns { vec: v, gemm: g })
    }};
}

macro_rules! mats {
    ($isa:ty) => {{
        let mut m = SCALAR_MATS;
        m[GgmlType::Q4_0 as usize] = leg!(Q4_0, $isa);
        m[GgmlType::Q4_1 as usize] = leg!(Q4_1, $isa);
        m[GgmlType::Q5_0 as usize] = leg!(Q5_0, $isa);
        m[GgmlType::Q5_1 as usize] = leg!(Q5_1, $isa);
        m[GgmlType::Q8_0 as usize] = leg!(Q8_0, $isa);
        m[GgmlType::IQ4_NL as usize] = leg!(IQ4NL, $isa);
        m[GgmlType::Q2_K as usize] = kq!(Q2K, $isa);
        m[GgmlType::Q3_K as usize] = kq!(Q3K, $isa);
        m[GgmlType::Q4_K as usize] = kq!(Q4K, $isa);
        m[GgmlType::Q5_K as usize] = kq!(Q5K, $isa);
        m[GgmlType::Q6_K as usize] = kq!(Q6K, $isa);
        m[GgmlType::IQ4_XS as usize] = kq!(IQ4XS, $isa);
        m[GgmlType::F32 as usize] = float!(F32W, GgmlType::F32);
        m[GgmlType::F16 as usize] = float!(F16W, GgmlType::F16);
        m[GgmlType::BF16 as usize] = float!(Bf16W, GgmlType::BF16);
        m
    }};
}

const NEON_MATS: [Option<MatFns>; N_TYPES] = mats!(Neon);
const DOTPROD_MATS: [Option<MatFns>; N_TYPES] = mats!(Sdot);

/// The dotprod matrix-vector kernel with an i8mm prefill kernel.
macro_rules! mm {
    ($m:ident, $ty:ident, $w:ty, $gemm:ident, $tr:ident) => {{
        fn g(w: &[u8], act: &[u8], k: usize, ng: usize, out: &mut [f32]) {
            check(
                <$w as $tr>::TY,
                w,
                act.len(),
                k,
                gemm_rows(out, ng),
                ng * GROUP,
            );
            let bs = <$w as $tr>::TY.block_size();
            // SAFETY: sizes checked; this table exists only on CPUs with i8mm and dotprod.
            unsafe { i8mm::$gemm::<$w>(w.as_ptr(), act.as_ptr(), k / bs, ng, out) }
        }
        if let Some(f) = $m[GgmlType::$ty as usize] {
            $m[GgmlType::$ty as usize] = Some(MatFns {
                vec: f.vec,
                gemm: g,
            });
        }
    }};
}

const I8MM_MATS: [Option<MatFns>; N_TYPES] = {
    let mut m = DOTPROD_MATS;
    mm!(m, Q4_0, Q4_0, gemm_leg_mm, Leg);
    mm!(m, Q4_1, Q4_1, gemm_leg_mm, Leg);
    mm!(m, Q5_0, Q5_0, gemm_leg_mm, Leg);
    mm!(m, Q5_1, Q5_1, gemm_leg_mm, Leg);
    mm!(m, Q8_0, Q8_0, gemm_leg_mm, Leg);
    mm!(m, IQ4_NL, IQ4NL, gemm_leg_mm, Leg);
    mm!(m, Q2_K, Q2K, gemm_k_mm, KQuant);
    mm!(m, Q3_K, Q3K, gemm_k_mm, KQuant);
    mm!(m, Q4_K, Q4K, gemm_k_mm, KQuant);
    mm!(m, Q5_K, Q5K, gemm_k_mm, KQuant);
    mm!(m, Q6_K, Q6K, gemm_k_mm, KQuant);
    mm!(m, IQ4_XS, IQ4XS, gemm_k_mm, KQuant);
    m
};

fn quantize_entry(fmt: ActFormat, x: &[f32], k: usize, group: bool, out: &mut [u8]) {
    let nt = if group { GROUP } else { 1 };
    assert!(k % fmt.block() == 0 && x.len() == nt * k && out.len() >= nt * act::row_bytes(fmt, k));
    // SAFETY: sizes checked; NEON is baseline.
    unsafe { neon::quantize(fmt, x, k, group, out) }
}

fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    // SAFETY: `n` elements of both are readable.
    unsafe { dot_float::<F32W>(a.as_ptr().cast(), b.as_ptr().cast(), n) }
}

fn dot_f16(a: &[f16], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    // SAFETY: as above.
    unsafe { dot_float::<F16W>(a.as_ptr().cast(), b.as_ptr().cast(), n) }
}

fn axpy_f32(out: &mut [f32], alpha: f32, x: &[f32]) {
    let n = out.len().min(x.len());
    // SAFETY: `n` elements of both are in bounds.
    unsafe { axpy::<F32W>(&mut out[..n], alpha, x.as_ptr().cast()) }
}

fn axpy_f16(out: &mut [f32], alpha: f32, x: &[f16]) {
    let n = out.len().min(x.len());
    // SAFETY: as above.
    unsafe { axpy::<F16W>(&mut out[..n], alpha, x.as_ptr().cast()) }
}

/// Baseline NEON: every AArch64 CPU (Cortex-A53/A72, Raspberry Pi 3 and 4).
static NEON: Kernels = Kernels {
    name: "neon",
    mats: NEON_MATS,
    quant: quantize_entry,
    dot_f32,
    dot_f16,
    axpy_f32,
    axpy_f16,
};

/// NEON with `sdot` (ARMv8.2 dotprod: Cortex-A55/A76+, Apple M1+, Graviton 2+).
static DOTPROD: Kernels = Kernels {
    name: "dotprod",
    mats: DOTPROD_MATS,
    quant: quantize_entry,
    dot_f32,
    dot_f16,
    axpy_f32,
    axpy_f16,
};

/// Dotprod kernels with `smmla` prefill (ARMv8.6 i8mm: Cortex-A510/A710+, Apple M2+).
static I8MM: Kernels = Kernels {
    name: "i8mm",
    mats: I8MM_MATS,
    quant: quantize_entry,
    dot_f32,
    dot_f16,
    axpy_f32,
    axpy_f16,
};

pub(super) fn available() -> Vec<&'static Kernels> {
    let mut v: Vec<&'static Kernels> = Vec::new();
    let dotprod = std::arch::is_aarch64_feature_detected!("dotprod");
    if dotprod && std::arch::is_aarch64_feature_detected!("i8mm") {
        v.push(&I8MM);
    }
    if dotprod {
        v.push(&DOTPROD);
    }
    v.push(&NEON);
    v
}
