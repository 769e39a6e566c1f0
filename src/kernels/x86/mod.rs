//! x86-64 kernel sets, chosen by runtime feature detection.

mod avx2;

use super::Kernels;

/// AVX2 + FMA + F16C: every x86-64 CPU since Haswell (2013) and Zen.
static AVX2: Kernels = Kernels {
    name: "avx2",
    mats: avx2::MATS,
    quant: avx2::quantize_entry,
    dot_f32: avx2::dot_f32,
    dot_f16: avx2::dot_f16,
    axpy_f32: avx2::axpy_f32,
    axpy_f16: avx2::axpy_f16,
};

pub(super) fn available() -> Vec<&'static Kernels> {
    let mut v = Vec::new();
    if is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
    {
        v.push(&AVX2);
    }
    v
}
