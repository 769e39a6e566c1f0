//! Mixture of Experts on the synthetic MoE models: decode runs exactly k experts per token
//! and layer, a batch reads each chosen expert's weights once, grouping tokens by expert
//! gives the logits of running them one by one, and files of a flavour ember does not run
//! are refused with an error that says so.

mod common;

use std::path::PathBuf;

use common::gguf_writer::{Gguf, Tensor, Val};
use ember::{Context, ContextParams, GgmlType, GgufFile, Model, ModelParams};

fn synthetic(stem: &str) -> PathBuf {
    common::model_list("synthetic")
        .into_iter()
        .find(|p| p.file_stem().is_some_and(|s| s == stem))
        .unwrap_or_else(|| panic!("no synthetic model {stem}"))
}

const MOE_MODELS: [&str; 4] = [
    "llama-moe-q8_0",
    "qwen2moe-q4_0",
    "qwen3moe-q8_0",
    "olmoe-q4_0",
];

fn prompt(model: &Model) -> Vec<u32> {
    let text = "The experts of a mixture each see only the tokens the router sends them, \
                so a batch of tokens is grouped by expert before any weight is read.";
    model
        .tokenizer()
        .encode(text, true, false)
        .expect("tokenize")
}

#[test]
fn decode_runs_k_experts_and_a_batch_reads_each_expert_once() {
    for stem in MOE_MODELS {
        let model = Model::load(synthetic(stem), &ModelParams::default()).unwrap();
        let c = model.config().clone();
        let m = c.moe.expect("an MoE model");
        let tokens = prompt(&model);
        let n = tokens.len() as u64;
        let mut ctx = Context::new(&model, ContextParams::default()).unwrap();
        ctx.decode(&tokens).unwrap();
        let (passes, rows) = ctx.expert_counts();
        let layers = c.n_layer as u64;
        let (ne, k) = (m.n_expert as u64, m.n_expert_used as u64);
        assert_eq!(
            rows,
            layers * n * k,
            "{stem}: every token computes k experts"
        );
        assert!(
            passes <= layers * ne,
            "{stem}: {passes} expert passes for one batch: more than one per expert and layer"
        );
        for &t in &tokens[..3] {
            let before = ctx.expert_counts();
            ctx.decode(&[t]).unwrap();
            let after = ctx.expert_counts();
            assert_eq!(
                after.0 - before.0,
                layers * k,
                "{stem}: decode runs k experts"
            );
            assert_eq!(after.1 - before.1, layers * k, "{stem}: one row each");
        }
        println!("moe: {stem}: prompt of {n} tokens: {passes} expert passes for {rows} rows");
    }
}

#[test]
fn grouping_by_expert_gives_the_logits_of_one_token_at_a_time() {
    for stem in MOE_MODELS {
        let model = Model::load(synthetic(stem), &ModelParams::default()).unwrap();
        let tokens = prompt(&model);
        let params = ContextParams {
            logits_all: true,
            ..ContextParams::default()
        };
        let mut batch = Context::new(&model, params).unwrap();
        batch.decode_all(&tokens).unwrap();
        let mut single = Context::new(&model, params).unwrap();
        let mut worst = 0.0f32;
        for (i, &t) in tokens.iter().enumerate() {
            single.decode(&[t]).unwrap();
            let a = batch.logits_ith(i).unwrap();
            let b = single.logits_ith(0).unwrap();
            for (x, y) in a.iter().zip(b) {
                worst = worst.max((x - y).abs());
            }
        }
        // Only the order of float sums differs (a batch's activation rows are quantized
        // the same way one by one): nothing near a routing difference, which moves logits by
        // whole units.
        assert!(
            worst < 2e-2,
            "{stem}: batch and one-by-one logits differ by {worst}"
        );
    }
}

/// A one-layer llama file with F32 weights: enough for the loader to reach the
/// feed-forward block.
fn tiny_llama(extra: &[(&str, Val)], ffn: &[(&str, &[u64])]) -> Vec<u8> {
    let (d, v, ff) = (32u64, 8u64, 64u64);
    let mut g = Gguf::default()
        .kv("general.architecture", Val::str("llama"))
        .kv("llama.embedding_length", Val::U32(d as u32))
        .kv("llama.block_count", Val::U32(1))
        .kv("llama.feed_forward_length", Val::U32(ff as u32))
        .kv("llama.attention.head_count", Val::U32(2))
        .kv("llama.attention.layer_norm_rms_epsilon", Val::F32(1e-5))
        .kv("llama.vocab_size", Val::U32(v as u32));
    for (k, val) in extra {
        g = g.kv(k, val.clone());
    }
    let zero = || 0u8;
    let mut tensors: Vec<(String, Vec<u64>)> = vec![
        ("token_embd.weight".into(), vec![d, v]),
        ("output_norm.weight".into(), vec![d]),
        ("blk.0.attn_norm.weight".into(), vec![d]),
        ("blk.0.attn_q.weight".into(), vec![d, d]),
        ("blk.0.attn_k.weight".into(), vec![d, d]),
        ("blk.0.attn_v.weight".into(), vec![d, d]),
        ("blk.0.attn_output.weight".into(), vec![d, d]),
        ("blk.0.ffn_norm.weight".into(), vec![d]),
    ];
    tensors.extend(ffn.iter().map(|(n, s)| (n.to_string(), s.to_vec())));
    for (name, dims) in tensors {
        g = g.tensor(Tensor::filled(&name, &dims, GgmlType::F32, zero));
    }
    g.bytes()
}

fn load_error(bytes: &[u8]) -> String {
    let file = GgufFile::from_bytes(bytes).expect("a well-formed GGUF");
    Model::from_gguf(file).expect_err("refused").to_string()
}

#[test]
fn an_unknown_architecture_is_named_with_the_supported_ones() {
    let bytes = Gguf::default()
        .kv("general.architecture", Val::str("mamba"))
        .bytes();
    let e = load_error(&bytes);
    assert!(e.contains("'mamba'"), "{e}");
    for arch in [
        "llama", "qwen2moe", "qwen3moe", "phi3", "gemma2", "gemma3", "olmoe",
    ] {
        assert!(e.contains(arch), "{e} does not list {arch}");
    }
}

#[test]
fn unsupported_moe_flavours_say_so() {
    let moe = [
        ("llama.expert_count", Val::U32(4)),
        ("llama.expert_used_count", Val::U32(2)),
    ];
    // Early Mixtral conversions: one 2-D tensor per expert.
    let per_expert = tiny_llama(
        &moe,
        &[
            ("blk.0.ffn_gate_inp.weight", &[32, 4]),
            ("blk.0.ffn_gate.0.weight", &[32, 64]),
            ("blk.0.ffn_up.0.weight", &[32, 64]),
            ("blk.0.ffn_down.0.weight", &[64, 32]),
        ],
    );
    let e = load_error(&per_expert);
    assert!(e.contains("one tensor per expert"), "{e}");
    assert!(!e.contains("missing"), "{e}");

    // A sigmoid router (DeepSeek V3 style).
    let mut sigmoid = moe.to_vec();
    sigmoid.push(("llama.expert_gating_func", Val::U32(2)));
    let e = load_error(&tiny_llama(&sigmoid, &[]));
    assert!(e.contains("gating function 2"), "{e}");

    // Expert tensors without an expert count.
    let e = load_error(&tiny_llama(
        &[],
        &[
            ("blk.0.ffn_gate_inp.weight", &[32, 4]),
            ("blk.0.ffn_gate_exps.weight", &[32, 64, 4]),
        ],
    ));
    assert!(e.contains("expert_count"), "{e}");
}
