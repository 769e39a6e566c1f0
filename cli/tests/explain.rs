//! `ember explain` on SmolLM2, Gemma 3 and an MoE synthetic model: every stage is printed,
//! in order, with sane numbers (probabilities sum to 1, norms finite, the logit lens at
//! the last layer equals the model's top token), MoE models show their experts per token,
//! and `--out` writes the pictures and the JSON.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::path::Path;

const STAGES: [&str; 9] = [
    "== 1. Tokenization ==",
    "== 2. Embeddings ==",
    "== 3. Positional encoding (RoPE) ==",
    "== 4. Attention (layer ",
    "== 5. Multi-head attention and GQA ==",
    "== 6. Feed-forward ==",
    "== 7. Residual stream, normalization, logit lens ==",
    "== 8. Next-token prediction ==",
    "== 9. KV cache: generation is sequential ==",
];

const PROMPT: &str = "The cat sat on the mat. The cat sat on the";

fn explain(model: &Path, extra: &[&str]) -> String {
    let mut args = vec!["explain", "-m", model.to_str().unwrap(), "-p", PROMPT];
    args.extend_from_slice(extra);
    let out = common::target_command(env!("CARGO_BIN_EXE_ember"))
        .args(&args)
        .output()
        .expect("running ember explain");
    assert!(
        out.status.success(),
        "ember explain failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn check_stages(name: &str, text: &str) {
    let mut at = 0;
    for s in STAGES {
        let i = text[at..]
            .find(s)
            .unwrap_or_else(|| panic!("{name}: no '{s}' after byte {at} in:\n{text}"));
        at += i + s.len();
    }
    assert!(
        text.contains("the same, as it must be"),
        "{name}: the logit lens at the last layer differs from the model's top token:\n{text}"
    );
    assert!(
        !text.contains("NaN") && !text.contains("inf"),
        "{name}: {text}"
    );
}

fn num(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn explains_smollm2_with_pictures() {
    let dir = std::env::temp_dir().join(format!("ember-explain-{}", std::process::id()));
    let text = explain(
        &common::model("smollm2"),
        &[
            "--layer",
            "3",
            "--head",
            "1",
            "--out",
            dir.to_str().unwrap(),
        ],
    );
    check_stages("smollm2", &text);
    assert!(text.contains("byte-level BPE"), "{text}");
    assert!(text.contains("induction heads"), "{text}");

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("explain.json")).unwrap()).unwrap();
    let sum = num(&json["next_token"]["sum_p_t1"]);
    assert!((sum - 1.0).abs() < 1e-6, "probabilities sum to {sum}");
    for n in json["embeddings"]["norms"].as_array().unwrap() {
        assert!(num(n).is_finite() && num(n) > 0.0);
    }
    let layers = json["residual"]["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 30);
    for l in layers {
        for k in ["before_norm", "after_norm", "after_layer"] {
            assert!(num(&l[k]).is_finite(), "{k}: {l}");
        }
    }
    let last = layers.last().unwrap()["lens"]
        .as_array()
        .unwrap()
        .last()
        .unwrap();
    assert_eq!(last["id"], json["residual"]["model_top"]);
    for p in [
        "attention_L3.png",
        "attention_L3_H1.png",
        "logit_lens.png",
        "residual_norms.png",
    ] {
        let bytes = std::fs::read(dir.join(p)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "{p} is not a PNG");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn explains_gemma3() {
    let text = explain(&common::model("gemma3"), &[]);
    check_stages("gemma3", &text);
    assert!(text.contains("SentencePiece"), "{text}");
    assert!(text.contains("sliding-window layers"), "{text}");
}

#[test]
fn shows_experts_per_token_of_an_moe_model() {
    let model = common::model_list("synthetic")
        .into_iter()
        .find(|p| p.file_stem().is_some_and(|s| s == "qwen3moe-q8_0"))
        .expect("the synthetic qwen3moe model");
    let text = explain(&model, &["--layer", "1"]);
    check_stages("qwen3moe", &text);
    let at = text.find("experts per token at layer 1").expect(&text);
    // One line per token, each listing k expert:weight pairs.
    let rows: Vec<&str> = text[at..]
        .lines()
        .skip(1)
        .take_while(|l| l.contains(':'))
        .collect();
    assert!(rows.len() >= 10, "{text}");
    assert!(rows.iter().all(|r| r.matches(':').count() >= 2), "{rows:?}");
}
