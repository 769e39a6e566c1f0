//! The model requantizer (`ember quantize`) on a synthetic file: which tensors change, that
//! converted matrices are exactly the IQ4 quantizers' blocks of the dequantized source, that
//! metadata survives byte for byte, and that the output does not depend on the thread count.
//! (That the blocks equal llama-quantize's is checked on SmolLM2 when its fixtures are made,
//! and CI checks the rebuilt test models' checksums: tools/fetch-models.)

mod common;

use bytemuck::Zeroable;
use common::gguf_writer::{ty, Gguf, Tensor, Val};
use common::Rng;
use ember::quant::requantize::{plan, requantize};
use ember::quant::{
    dequantize_row, quantize_row_iq4_nl, quantize_row_iq4_xs, BlockIQ4NL, BlockIQ4XS,
};
use ember::{GgmlType, GgufFile};
use half::f16;

fn f32_bytes(rng: &mut Rng, n: u64) -> Vec<u8> {
    (0..n)
        .flat_map(|_| ((rng.f32() - 0.5) * 0.2).to_le_bytes())
        .collect()
}

fn source() -> Vec<u8> {
    let mut rng = Rng(11);
    let f16_bytes: Vec<u8> = (0..512 * 3)
        .flat_map(|_| f16::from_f32((rng.f32() - 0.5) * 0.2).to_le_bytes())
        .collect();
    let mut t = |name: &str, dims: &[u64]| {
        let n = dims.iter().product();
        Tensor::new(name, dims, GgmlType::F32.id(), f32_bytes(&mut rng, n))
    };
    let (embd, norm, q, odd) = (
        t("token_embd.weight", &[64, 4]),
        t("blk.0.attn_norm.weight", &[64]),
        t("blk.0.attn_q.weight", &[64, 3]),
        t("blk.0.odd.weight", &[48, 2]),
    );
    Gguf::default()
        .kv("general.architecture", Val::str("llama"))
        .kv("general.file_type", Val::U32(0))
        .kv("general.alignment", Val::U32(64))
        .kv("tokenizer.ggml.tokens", Val::strs(&["a", "", "▁the"]))
        .kv(
            "test.nested",
            Val::Array(
                ty::ARRAY,
                vec![
                    Val::Array(ty::U32, vec![Val::U32(1), Val::U32(2)]),
                    Val::strs(&["x"]),
                ],
            ),
        )
        .kv("test.f64", Val::F64(-0.25))
        .tensor(embd)
        .tensor(norm)
        .tensor(q)
        .tensor(Tensor::new(
            "blk.0.ffn_down.weight",
            &[512, 3],
            GgmlType::F16.id(),
            f16_bytes,
        ))
        .tensor(odd)
        .bytes()
}

fn run(src: &GgufFile, target: GgmlType, threads: usize) -> Vec<u8> {
    let mut out = Vec::new();
    requantize(src, target, threads, &mut out).unwrap();
    out
}

/// The blocks the quantizer makes of a tensor's dequantized rows.
fn expected(src: &GgufFile, name: &str, to: GgmlType) -> Vec<u8> {
    let t = src.tensor(name).unwrap();
    let cols = t.dims[0] as usize;
    let mut x = vec![0f32; cols * t.n_rows() as usize];
    dequantize_row(t.ty, src.tensor_data(t), &mut x).unwrap();
    if to == GgmlType::IQ4_NL {
        let mut b = vec![BlockIQ4NL::zeroed(); x.len() / 32];
        quantize_row_iq4_nl(&x, &mut b);
        bytemuck::cast_slice(&b).to_vec()
    } else {
        let mut b = vec![BlockIQ4XS::zeroed(); x.len() / 256];
        quantize_row_iq4_xs(&x, &mut b);
        bytemuck::cast_slice(&b).to_vec()
    }
}

#[test]
fn requantizes_the_matrices_and_keeps_the_rest() {
    use GgmlType::*;
    let bytes = source();
    let src = GgufFile::from_bytes(&bytes).unwrap();
    for (target, ftype, ffn_down) in [(IQ4_NL, 25, IQ4_NL), (IQ4_XS, 30, IQ4_XS)] {
        let types: Vec<_> = plan(&src, target).unwrap().iter().map(|p| p.to).collect();
        // Embedding and norm kept; 64-element rows are not IQ4_XS blocks (IQ4_NL, as
        // llama.cpp falls back); 48-element rows are not even IQ4_NL blocks (kept).
        assert_eq!(types, [F32, F32, IQ4_NL, ffn_down, F32], "{target}");

        let out = run(&src, target, 1);
        assert_eq!(
            out,
            run(&src, target, 3),
            "{target}: depends on the thread count"
        );
        let dst = GgufFile::from_bytes(&out).unwrap();
        assert_eq!(dst.u32("general.file_type").unwrap(), ftype);
        assert_eq!(dst.u32("general.quantization_version").unwrap(), 2);
        assert_eq!(dst.metadata().len(), src.metadata().len() + 1);
        for kv in src.metadata() {
            if kv.key != "general.file_type" {
                assert_eq!(
                    dst.value_to_string(&kv.key, 100),
                    src.value_to_string(&kv.key, 100),
                    "{target}: {}",
                    kv.key
                );
            }
        }
        assert_eq!(dst.alignment, 64);
        for (t, p) in src.tensors().iter().zip(plan(&src, target).unwrap()) {
            let d = dst.tensor(&t.name).unwrap();
            assert_eq!((d.ty, d.shape()), (p.to, t.shape()), "{}", t.name);
            let want = if p.to == t.ty {
                src.tensor_data(t).to_vec()
            } else {
                expected(&src, &t.name, p.to)
            };
            assert!(dst.tensor_data(d) == want, "{target}: {} data", t.name);
        }
    }
}

#[test]
fn refuses_other_targets() {
    let bytes = source();
    let src = GgufFile::from_bytes(&bytes).unwrap();
    let mut out = Vec::new();
    let err = requantize(&src, GgmlType::Q4_0, 1, &mut out).unwrap_err();
    assert!(matches!(err, ember::Error::Unsupported(_)), "{err}");
    assert!(out.is_empty());
}
