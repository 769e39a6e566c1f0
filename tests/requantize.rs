//! The model requantizer (`ember quantize`) on a synthetic file: which tensors change, that
//! converted matrices are exactly the IQ4 quantizers' blocks of the dequantized source, that
//! metadata survives byte for byte, and that the output does not depend on the thread count.
//! (That the blocks equal llama-quantize's is checked on SmolLM2 when its fixtures are made,
//! and CI checks the rebuilt test models' checksums: tools/fetch-models.)

mod common;

use bytemuck::Zeroable;
use common::gguf_writer::{ty, Gguf, Tensor, Val};
use common::Rng;
use ember::quant::requantize::{plan, plan_q4_k_m, requantize, requantize_q4_k_m};
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

/// sha256 of `llama-quantize --allow-requantize synthetic/<family>-q8_0.gguf OUT Q4_K_M`, as
/// recorded in tools/fetch-models' SYNTHETIC_Q4_K_M (one dense family, one MoE).
const Q4_K_M_SHA256: [(&str, &str); 2] = [
    (
        "qwen2",
        "347efc73576046903c0d3f8383e108dd97ef5caaf721a4e27847b296bad2243a",
    ),
    (
        "qwen3moe",
        "4e378c0988999f3178d1ddba1c91c1031d3b1f9717d293d5e5c13c67770b6079",
    ),
];

/// sha256 by python3 (which the tests already need for tools/fetch-models), sparing a
/// hashing crate.
fn sha256(bytes: &[u8]) -> String {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import hashlib,sys;print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("running python3");
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// ember's Q4_K_M of synthetic models is llama-quantize's file, byte for byte, whatever the
/// thread count; and the type mix is llama.cpp's for 64-wide rows (all fallbacks).
#[test]
fn q4_k_m_equals_llama_quantize_on_synthetic_models() {
    use GgmlType::*;
    let recorded = std::fs::read_to_string(common::repo_root().join("tools/fetch-models")).unwrap();
    for (family, want) in Q4_K_M_SHA256 {
        assert!(
            recorded.contains(want),
            "{family}: not the hash fetch-models records"
        );
        let path = common::model(&format!("synthetic/{family}-q8_0"));
        let bytes = std::fs::read(&path).unwrap();
        let src = GgufFile::from_bytes(&bytes).unwrap();
        let mut out = Vec::new();
        requantize_q4_k_m(&src, 1, &mut out).unwrap();
        assert_eq!(sha256(&out), want, "{family}: not llama-quantize's Q4_K_M");
        let mut out3 = Vec::new();
        requantize_q4_k_m(&src, 3, &mut out3).unwrap();
        assert!(out == out3, "{family}: depends on the thread count");

        let dst = GgufFile::from_bytes(&out).unwrap();
        assert_eq!(dst.u32("general.file_type").unwrap(), 15);
        for p in plan_q4_k_m(&src).unwrap() {
            let n = p.name.as_str();
            let want = if n.contains("norm") || n.contains("ffn_gate_inp") || p.from == F32 {
                p.from
            } else if n == "token_embd.weight" || n.starts_with("blk.1.attn_v") {
                // Tied embedding and the use_more_bits layer (the last of 2): Q6_K -> Q8_0.
                Q8_0
            } else if n.starts_with("blk.1.ffn_down") {
                Q8_0
            } else {
                // Q4_K falls back to Q5_0 for rows of 64 or 128.
                Q5_0
            };
            assert_eq!(p.to, want, "{family}: {n}");
            assert_eq!(dst.tensor(n).unwrap().ty, want, "{family}: {n}");
        }
    }
}
