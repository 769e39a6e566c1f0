//! ember's scalar dequantization and activation quantization against the `gguf` Python
//! package, through fixtures made by tools/make-dequant-fixtures (rows of every tensor type
//! in both test models and in SmolLM2 requantized to IQ4_NL and IQ4_XS, and synthetic
//! blocks for every type ember dequantizes).
//!
//! The comparison is bit for bit for every type, and no 1-ulp tolerance is needed anywhere:
//! in these formats every product is exact in f32 (an f16 scale has 11 significant bits,
//! the sub-block scales and quants at most 8 and 6, and Q6_K's d * scale * q, the widest
//! at 25 bits, is one rounding of the exact product whichever way it is grouped; IQ4_XS's
//! d * scale * value needs at most 11 + 6 + 7 bits), so each
//! value is a single rounding of the exact result. Operation order and fused multiply-add,
//! where numpy, ggml's C and ember could differ, cannot change a bit.

use std::path::PathBuf;

use bytemuck::Zeroable;
use ember::quant::{
    dequantize_row, quantize_row_q8_0, quantize_row_q8_1, quantize_row_q8_k, BlockIQ4NL,
    BlockIQ4XS, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1,
    BlockQ6K, BlockQ8K, BlockQ8_0, BlockQ8_1, QK, QK_K,
};
use ember::GgmlType;
use half::f16;
use serde_json::Value;

mod common;
use common::Rng;

/// Every type ember dequantizes; each has a fixture.
const SUPPORTED: [GgmlType; 15] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
];

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/dequant")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run tools/make-dequant-fixtures)", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0);
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn dequantization_matches_gguf_py_bit_for_bit() {
    let mut model_types = Vec::new();
    for ty in SUPPORTED {
        let doc = fixture(&format!("{}.json", ty.name().to_lowercase()));
        assert_eq!(doc["type"], ty.name());
        assert_eq!(doc["id"], ty.id());
        assert_eq!(doc["block_size"], ty.block_size());
        assert_eq!(doc["type_size"], ty.type_size());
        let cases = doc["cases"].as_array().unwrap();
        assert!(!cases.is_empty());
        let mut synthetic = false;
        for c in cases {
            let source = c["source"].as_str().unwrap();
            let bytes = hex(c["bytes"].as_str().unwrap());
            let expect = f32s(&hex(c["f32"].as_str().unwrap()));
            assert_eq!(expect.len() as u64, c["n"].as_u64().unwrap());
            let mut got = vec![f32::NAN; expect.len()];
            dequantize_row(ty, &bytes, &mut got).unwrap();
            for (i, (g, e)) in got.iter().zip(&expect).enumerate() {
                assert_eq!(
                    g.to_bits(),
                    e.to_bits(),
                    "{ty} {source}: element {i} is {g:e}, gguf-py says {e:e}"
                );
            }
            if source.starts_with("synthetic") {
                synthetic = true;
            } else {
                model_types.push((source.split(' ').next().unwrap().to_string(), ty));
            }
        }
        assert!(synthetic, "{ty}: no synthetic blocks in the fixture");
    }
    // Every tensor type of both models is covered by rows of the model itself.
    let smol = "SmolLM2-135M-Instruct.Q4_1.gguf";
    let gemma = "gemma-3-270m-q4_k_m.gguf";
    let smol_nl = "SmolLM2-135M-Instruct.IQ4_NL.gguf";
    let smol_xs = "SmolLM2-135M-Instruct.IQ4_XS.gguf";
    use GgmlType::*;
    for (model, ty) in [
        (smol_nl, IQ4_NL),
        (smol_xs, IQ4_NL),
        (smol_xs, IQ4_XS),
        (smol, F32),
        (smol, Q4_1),
        (smol, Q8_0),
        (gemma, F32),
        (gemma, Q8_0),
        (gemma, Q5_0),
        (gemma, Q4_K),
        (gemma, Q6_K),
    ] {
        assert!(
            model_types.contains(&(model.to_string(), ty)),
            "no {ty} rows from {model}"
        );
    }
}

/// Block geometry against gguf-py's table. gguf-py still lists Q8_1 with f32 scales (40
/// bytes); ggml's block_q8_1 has two f16 (36 bytes), which is what ember follows.
#[test]
fn block_geometry_matches_gguf_py() {
    let sizes = fixture("sizes.json");
    let mut compared = 0;
    for ty in GgmlType::ALL {
        let Some(v) = sizes.get(ty.name()) else {
            continue;
        };
        if ty == GgmlType::Q8_1 {
            assert_eq!((ty.block_size(), ty.type_size()), (32, 36));
            continue;
        }
        assert_eq!(v[0], ty.block_size(), "{ty} block size");
        assert_eq!(v[1], ty.type_size(), "{ty} type size");
        compared += 1;
    }
    assert!(compared >= 30, "only {compared} types compared");

    // The block structs agree with the type table.
    use std::mem::size_of;
    use GgmlType::*;
    for (ty, size) in [
        (Q4_0, size_of::<BlockQ4_0>()),
        (Q4_1, size_of::<BlockQ4_1>()),
        (Q5_0, size_of::<BlockQ5_0>()),
        (Q5_1, size_of::<BlockQ5_1>()),
        (Q8_0, size_of::<BlockQ8_0>()),
        (Q8_1, size_of::<BlockQ8_1>()),
        (Q2_K, size_of::<BlockQ2K>()),
        (Q3_K, size_of::<BlockQ3K>()),
        (Q4_K, size_of::<BlockQ4K>()),
        (Q5_K, size_of::<BlockQ5K>()),
        (Q6_K, size_of::<BlockQ6K>()),
        (Q8_K, size_of::<BlockQ8K>()),
        (IQ4_NL, size_of::<BlockIQ4NL>()),
        (IQ4_XS, size_of::<BlockIQ4XS>()),
    ] {
        assert_eq!(ty.type_size(), size, "{ty}");
    }
}

#[test]
fn q8_0_quantization_matches_gguf_py_exactly() {
    let doc = fixture("quantize_q8_0.json");
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 8);
    for (k, c) in cases.iter().enumerate() {
        let x = f32s(&hex(c["input"].as_str().unwrap()));
        let expect = hex(c["bytes"].as_str().unwrap());
        let mut out = vec![BlockQ8_0::zeroed(); x.len() / QK];
        quantize_row_q8_0(&x, &mut out);
        let got: &[u8] = bytemuck::cast_slice(&out);
        assert_eq!(got, &expect[..], "case {k}: input {x:?}");
    }
}

#[test]
fn q8_1_is_q8_0_plus_the_scaled_sum() {
    let mut rng = Rng(81);
    for scale in [1e-3f32, 1.0, 300.0] {
        let x: Vec<f32> = (0..256).map(|_| (rng.f32() - 0.5) * scale).collect();
        let mut q0 = vec![BlockQ8_0::zeroed(); 8];
        let mut q1 = vec![BlockQ8_1::zeroed(); 8];
        quantize_row_q8_0(&x, &mut q0);
        quantize_row_q8_1(&x, &mut q1);
        for ((a, b), xb) in q0.iter().zip(&q1).zip(x.chunks_exact(QK)) {
            assert_eq!(a.d.to_bits(), b.d.to_bits());
            assert_eq!(a.qs, b.qs);
            // s is made from the f32 scale, before that is rounded to f16.
            let sum: i32 = b.qs.iter().map(|&q| q as i32).sum();
            let d = xb.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
            assert_eq!(b.s.to_bits(), f16::from_f32(sum as f32 * d).to_bits());
        }
    }
}

/// gguf has no Q8_K quantizer, so Q8_K is checked by what it must guarantee: the element of
/// largest magnitude maps to -127 (ggml's sign convention), every element is within half a
/// step of its value, and bsums are the sums of each group of 16.
#[test]
fn q8_k_round_trips_within_half_a_step_and_keeps_bsums() {
    let mut rng = Rng(88);
    for (case, scale) in [1e-4f32, 1.0, 50.0, 1e6].into_iter().enumerate() {
        let mut x: Vec<f32> = (0..4 * QK_K).map(|_| (rng.f32() - 0.5) * scale).collect();
        // Block 1: the extreme is negative; block 2: all zero; block 3: one spike.
        x[QK_K + 7] = -scale;
        x[2 * QK_K..3 * QK_K].fill(0.0);
        x[3 * QK_K + 100] = scale * 40.0;
        let mut out = vec![BlockQ8K::zeroed(); 4];
        quantize_row_q8_k(&x, &mut out);
        for (bi, (xb, b)) in x.chunks_exact(QK_K).zip(&out).enumerate() {
            let what = format!("case {case} block {bi}");
            for (s, qs) in b.bsums.iter().zip(b.qs.chunks_exact(16)) {
                assert_eq!(
                    *s as i32,
                    qs.iter().map(|&q| q as i32).sum::<i32>(),
                    "{what}"
                );
            }
            let (imax, amax) = xb.iter().enumerate().fold((0, 0f32), |(im, m), (i, v)| {
                if v.abs() > m {
                    (i, v.abs())
                } else {
                    (im, m)
                }
            });
            if amax == 0.0 {
                assert_eq!(b.d, 0.0, "{what}");
                assert!(b.qs.iter().all(|&q| q == 0), "{what}");
                continue;
            }
            assert_eq!(b.qs[imax], -127, "{what}: the extreme maps to -127");
            assert!(
                ((b.d.abs() - amax / 127.0) / (amax / 127.0)).abs() < 1e-6,
                "{what}: d {} for amax {amax}",
                b.d
            );
            let mut deq = vec![0f32; QK_K];
            dequantize_row(GgmlType::Q8_K, bytemuck::bytes_of(b), &mut deq).unwrap();
            for (i, (&v, &y)) in xb.iter().zip(&deq).enumerate() {
                assert_eq!(y, b.d * b.qs[i] as f32);
                assert!(
                    (v - y).abs() <= b.d.abs() * 0.5 * (1.0 + 1e-5),
                    "{what} element {i}: {v} became {y} (step {})",
                    b.d
                );
            }
        }
    }
}

#[test]
fn dequantize_row_rejects_bad_arguments_without_panicking() {
    let mut out = vec![0f32; 32];
    let err = dequantize_row(GgmlType::Q4_0, &[0; 17], &mut out).unwrap_err();
    assert!(err.to_string().contains("need 18 bytes, got 17"), "{err}");
    let mut out31 = vec![0f32; 31];
    let err = dequantize_row(GgmlType::Q4_0, &[0; 18], &mut out31).unwrap_err();
    assert!(err.to_string().contains("whole number"), "{err}");
    let err = dequantize_row(GgmlType::IQ2_XXS, &[0; 66], &mut vec![0f32; 256]).unwrap_err();
    assert!(matches!(err, ember::Error::Unsupported(_)), "{err}");
    // Unaligned input is fine: the blocks are read, not cast in place.
    let bytes = [0u8; 1 + 34];
    dequantize_row(GgmlType::Q8_0, &bytes[1..], &mut out).unwrap();
}

/// All 65536 patterns of F16 and BF16, against the value the bits encode, worked out in
/// integers here (the fixtures cover only a sample). NaNs must stay NaN; their payloads are
/// not compared, since hardware conversions (ggml uses F16C) quiet signalling NaNs and numpy
/// does not.
#[test]
fn every_f16_and_bf16_bit_pattern() {
    // (exponent bits, mantissa bits, exponent bias) of each format.
    for (ty, exp_bits, man_bits, bias) in [(GgmlType::F16, 5, 10, 15), (GgmlType::BF16, 8, 7, 127)]
    {
        let bytes: Vec<u8> = (0..=u16::MAX).flat_map(|v| v.to_le_bytes()).collect();
        let mut out = vec![0f32; 1 << 16];
        dequantize_row(ty, &bytes, &mut out).unwrap();
        for (bits, got) in (0..=u16::MAX).zip(&out) {
            let sign = if bits >> 15 == 1 { -1.0f64 } else { 1.0 };
            let exp = ((bits >> man_bits) & ((1 << exp_bits) - 1)) as i32;
            let man = (bits & ((1 << man_bits) - 1)) as f64;
            let max_exp = (1 << exp_bits) - 1;
            let want = if exp == max_exp {
                if man != 0.0 {
                    assert!(got.is_nan(), "{ty} {bits:#06x}: {got}");
                    continue;
                }
                sign * f64::INFINITY
            } else if exp == 0 {
                sign * man * 2f64.powi(1 - bias - man_bits)
            } else {
                sign * (man + (1 << man_bits) as f64) * 2f64.powi(exp - bias - man_bits)
            };
            assert_eq!(got.to_bits(), (want as f32).to_bits(), "{ty} {bits:#06x}");
        }
    }
}
