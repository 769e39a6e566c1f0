//! What the fuzz targets share: the one-input drivers (each target's whole body, so that
//! `tests/fuzz_regressions.rs` could replay the same logic without nightly) and the test
//! models the tokenizer and state targets load once per process.
//!
//! The models come from environment variables that tools/fuzz sets from
//! tools/fetch-models: EMBER_FUZZ_BPE_MODEL (SmolLM2), EMBER_FUZZ_SPM_MODEL (Gemma 3) and
//! EMBER_FUZZ_STATE_MODEL (a small synthetic llama). Without them, EMBER_MODELS_DIR is
//! searched for the usual file names.

use std::path::PathBuf;

use ember::chat::ChatTemplate;
use ember::{Context, ContextParams, GgufFile, Model, StreamDecoder, Tokenizer};

fn model_path(var: &str, rel: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(var) {
        return PathBuf::from(p);
    }
    let dir = std::env::var_os("EMBER_MODELS_DIR").unwrap_or_else(|| "/work/models".into());
    PathBuf::from(dir).join(rel)
}

/// Loads only the tokenizer of a model (its header), not the weights.
pub fn load_tokenizer(var: &str, rel: &str) -> Tokenizer {
    tokenizer_at(&model_path(var, rel))
}

/// The tokenizer of the model at `path` (its header only).
pub fn tokenizer_at(path: &std::path::Path) -> Tokenizer {
    let f = GgufFile::open(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (set EMBER_FUZZ_*_MODEL; tools/fuzz does)",
            path.display()
        )
    });
    Tokenizer::from_gguf(&f).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn bpe_tokenizer() -> Tokenizer {
    load_tokenizer("EMBER_FUZZ_BPE_MODEL", "SmolLM2-135M-Instruct.Q4_1.gguf")
}

pub fn spm_tokenizer() -> Tokenizer {
    load_tokenizer("EMBER_FUZZ_SPM_MODEL", "gemma-3-270m-q4_k_m.gguf")
}

pub fn state_model() -> Model {
    let path = model_path("EMBER_FUZZ_STATE_MODEL", "synthetic/llama-q8_0.gguf");
    Model::load(&path, &Default::default())
        .unwrap_or_else(|e| panic!("{}: {e} (set EMBER_FUZZ_STATE_MODEL)", path.display()))
}

/// The state target's context (16 positions, one thread) and a real state with 3 tokens
/// decoded, against which inputs are patched.
pub fn state_fixture(model: &Model) -> (Context, Vec<u8>) {
    let params = ContextParams {
        n_ctx: 16,
        n_batch: 8,
        n_threads: 1,
        ..Default::default()
    };
    let mut ctx = Context::new(model, params).expect("a context of the state model");
    ctx.decode(&[1, 2, 3]).expect("decoding 3 tokens");
    let good = ctx.save_state();
    (ctx, good)
}

/// The GGUF reader on arbitrary bytes, then every accessor a loader uses on what it read.
pub fn run_gguf(data: &[u8]) {
    let Ok(f) = GgufFile::from_bytes(data) else {
        return;
    };
    for kv in f.metadata() {
        let _ = f.value_to_string(&kv.key, 8);
        if let Ok(a) = f.array(&kv.key) {
            let _ = a.len();
        }
        let _ = f.str_opt(&kv.key);
        let _ = f.u64_opt(&kv.key);
        let _ = f.f32_opt(&kv.key);
    }
    for t in f.tensors() {
        let _ = f.tensor_data(t).len();
        let _ = t.n_rows();
    }
}

/// The whole model load from bytes: container, config, weights, tokenizer.
pub fn run_model(data: &[u8]) {
    let Ok(f) = GgufFile::from_bytes(data) else {
        return;
    };
    let Ok(m) = Model::from_gguf(f) else {
        return;
    };
    // A model that loads must also give a context and take a token: a config that passed
    // validation but breaks the forward pass is a finding too.
    let params = ContextParams {
        n_ctx: 8,
        n_batch: 4,
        n_threads: 1,
        ..Default::default()
    };
    if let Ok(mut ctx) = Context::new(&m, params) {
        let _ = ctx.decode(&[0, 1]);
    }
}

/// Arbitrary bytes through one tokenizer. The first byte picks the operation and flags:
/// bit 0 decode (else encode), bit 1 add_special / remove_special, bit 2 parse_special /
/// unparse_special, bit 3 also stream the ids through a StreamDecoder.
pub fn run_tokenizer(tok: &Tokenizer, data: &[u8]) {
    let Some((&op, rest)) = data.split_first() else {
        return;
    };
    let (a, b) = (op & 2 != 0, op & 4 != 0);
    if op & 1 == 0 {
        let Ok(ids) = tok.encode_bytes(rest, a, b) else {
            return;
        };
        // Every id the encoder makes must decode.
        if let Err(e) = tok.decode(&ids, false, b) {
            panic!("encode gave ids that do not decode: {e}");
        }
        return;
    }
    let ids: Vec<u32> = rest
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let _ = tok.decode(&ids, a, b);
    for &t in &ids {
        let _ = tok.token_to_piece(t, b);
        let _ = tok.token_attr(t);
        let _ = tok.is_eog(t);
    }
    if op & 8 != 0 {
        let mut s = StreamDecoder::new(b);
        let mut n = 0usize;
        for &t in &ids {
            let _ = s.push(tok, t, |p| n += p.len());
        }
        s.flush(|p| n += p.len());
    }
}

/// FNV-1a 64, as ember's state checksum (src/fnv.rs is private to the library).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// A state load into a context. Random bytes rarely pass the magic, fingerprint and
/// checksum, so the first byte picks a mode: below 128 the rest is the state as given
/// (with bit 0, its checksum is recomputed); from 128 the rest patches a real state
/// saved from `ctx` after `good` decoded: pairs of (u16 offset, byte) overwrite, a
/// trailing odd byte cuts the state to that fraction, and the checksum is recomputed.
pub fn run_state(ctx: &mut Context, good: &[u8], data: &[u8]) {
    let Some((&op, rest)) = data.split_first() else {
        return;
    };
    let mut st = if op < 128 {
        rest.to_vec()
    } else {
        let mut s = good.to_vec();
        let mut it = rest.chunks_exact(3);
        for c in &mut it {
            let off = u16::from_le_bytes([c[0], c[1]]) as usize;
            if off < s.len() {
                s[off] = c[2];
            }
        }
        if let [cut, ..] = it.remainder() {
            let keep = s.len() * (*cut as usize) / 256;
            s.truncate(keep.max(8));
        }
        s
    };
    // Patch mode always reseals; raw mode when bit 0 asks.
    if (op >= 128 || op & 1 != 0) && st.len() >= 8 {
        let n = st.len() - 8;
        let h = fnv1a(&st[..n]);
        st[n..].copy_from_slice(&h.to_le_bytes());
    }
    let before = ctx.n_past();
    match ctx.load_state(&st) {
        Ok(()) => {
            // A state that loads must be usable: one more token on top of it.
            if ctx.n_past() < ctx.n_ctx() {
                let _ = ctx.decode(&[1]);
            }
            // Back to the known state for the next input.
            if let Err(e) = ctx.load_state(good) {
                panic!("the good state no longer loads: {e}");
            }
        }
        Err(_) => assert_eq!(ctx.n_past(), before, "a failed load changed the context"),
    }
}

/// Arbitrary template text rendered with a short conversation and tools. The first byte
/// picks add_generation_prompt and whether tools are given.
pub fn run_chat_template(data: &[u8]) {
    let Some((&op, rest)) = data.split_first() else {
        return;
    };
    let Ok(src) = std::str::from_utf8(rest) else {
        return;
    };
    let Ok(t) = ChatTemplate::new(src, "<s>", "</s>", ember::chat::TemplateOrigin::Given) else {
        return;
    };
    let msgs = [
        serde_json::json!({"role": "system", "content": "Be brief."}),
        serde_json::json!({"role": "user", "content": "Hi <b>\u{e9}\u{1F600}"}),
        serde_json::json!({"role": "assistant", "content": "Hello.", "tool_calls": [
            {"type": "function", "function": {"name": "f", "arguments": {"x": 1}}}]}),
        serde_json::json!({"role": "tool", "content": "{\"ok\": true}"}),
        serde_json::json!({"role": "user", "content": ["a", {"type": "text", "text": "b"}]}),
    ];
    let tools = [
        serde_json::json!({"type": "function", "function": {"name": "f",
        "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}}}}),
    ];
    let opts = ember::chat::RenderOptions {
        add_generation_prompt: op & 1 != 0,
        tools: (op & 2 != 0).then_some(&tools[..]),
        extra: None,
        now: Some(1_700_000_000),
    };
    let _ = t.render(&msgs, &opts);
}
