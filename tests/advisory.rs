//! The classes of llama.cpp's security advisories about hostile model and state files,
//! each built here on purpose from a small valid model (tests/common/gguf_writer.rs). Every
//! one must be refused with an error that names what is wrong (or, where llama.cpp keeps
//! loading, a warning that does), never a panic, and never an allocation sized by what
//! the file only claims: a counting allocator (per thread, so parallel tests do not
//! disturb each other) bounds the peak memory each load takes beyond the file itself.
//!
//! Class -> test:
//! - vocabulary arrays of different lengths / wrong element types -> vocabulary_arrays
//!   (shorter, claimed 2^40, wrong types), vocabulary_arrays_longer_than_the_tokens,
//!   vocabulary_arrays_of_other_element_types (every array, arrays of arrays, scalars),
//!   malformed_merges_load_and_tokenize (merge lines without a space, unknown pieces)
//! - special-token ids at or past n_vocab -> special_token_ids_past_the_vocabulary (every
//!   id key), special_token_ids_of_the_wrong_type
//! - a token text claimed longer than 2^31 -> a_token_text_claimed_longer_than_2_31
//! - byte tokens like <0x-1> or <0xZZ> -> malformed_byte_tokens
//! - a tensor whose type or shape disagrees with the architecture -> tensor_type_and_shape
//! - a missing required tensor -> a_missing_tensor
//! - 0 or absurd hyper-parameters -> absurd_hyper_parameters,
//!   a_block_count_past_the_tensors_allocates_nothing_by_it
//! - a state from another model, truncated, or with a huge claimed length -> hostile_states,
//!   states_from_other_contexts (more positions than n_ctx, another KV type, a model
//!   with the same layout but other weights)

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};

use common::gguf_writer::{ty, Gguf, Tensor, Val};
use common::peak_alloc::{peak_of, PeakAlloc};
use ember::gguf::Storage;
use ember::{Context, ContextParams, GgmlType, GgufFile, Model};

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

/// Memory a hostile load may take beyond the file's own bytes (which the caller's storage
/// holds before the load starts): the tables of a 16-token vocabulary, RoPE tables and
/// error strings. A count or length the file only claims would blow far past it.
const BUDGET: usize = 1 << 20;

// The tiny model: llama, one layer, 32 wide, 4 heads of 8, F32 weights.
const D: u64 = 32;
const FF: u64 = 64;
const N_HEAD: u32 = 4;
const TOKENS: [&str; 16] = [
    "<s>",
    "</s>",
    "a",
    "b",
    "c",
    "d",
    "Ġ",
    "ab",
    "Ġa",
    "Ġb",
    "cd",
    "Ġc",
    "e",
    "f",
    "<|im_end|>",
    "<pad>",
];

/// The metadata of the tiny model, in order; tests replace or drop entries by key.
fn base_kvs() -> Vec<(String, Val)> {
    let n = TOKENS.len();
    let mut types = vec![Val::I32(1); n];
    for i in [0, 1, 14, 15] {
        types[i] = Val::I32(3);
    }
    [
        ("general.architecture", Val::str("llama")),
        ("llama.embedding_length", Val::U32(D as u32)),
        ("llama.block_count", Val::U32(1)),
        ("llama.feed_forward_length", Val::U32(FF as u32)),
        ("llama.attention.head_count", Val::U32(N_HEAD)),
        ("llama.attention.head_count_kv", Val::U32(2)),
        ("llama.context_length", Val::U32(128)),
        ("llama.attention.layer_norm_rms_epsilon", Val::F32(1e-5)),
        ("tokenizer.ggml.model", Val::str("gpt2")),
        ("tokenizer.ggml.pre", Val::str("smollm")),
        ("tokenizer.ggml.tokens", Val::strs(&TOKENS)),
        ("tokenizer.ggml.token_type", Val::Array(ty::I32, types)),
        (
            "tokenizer.ggml.merges",
            Val::strs(&["a b", "Ġ a", "Ġ b", "c d", "Ġ c"]),
        ),
        ("tokenizer.ggml.bos_token_id", Val::U32(0)),
        ("tokenizer.ggml.eos_token_id", Val::U32(1)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The tiny model's tensors (name, dims), all F32.
fn base_tensors() -> Vec<(String, Vec<u64>)> {
    let v = TOKENS.len() as u64;
    let kv = D / N_HEAD as u64 * 2;
    [
        ("token_embd.weight", vec![D, v]),
        ("output_norm.weight", vec![D]),
        ("blk.0.attn_norm.weight", vec![D]),
        ("blk.0.attn_q.weight", vec![D, D]),
        ("blk.0.attn_k.weight", vec![D, kv]),
        ("blk.0.attn_v.weight", vec![D, kv]),
        ("blk.0.attn_output.weight", vec![D, D]),
        ("blk.0.ffn_norm.weight", vec![D]),
        ("blk.0.ffn_gate.weight", vec![D, FF]),
        ("blk.0.ffn_up.weight", vec![D, FF]),
        ("blk.0.ffn_down.weight", vec![FF, D]),
    ]
    .into_iter()
    .map(|(n, d)| (n.to_string(), d))
    .collect()
}

/// A file from metadata and tensors; weights are small deterministic values.
fn build(kvs: &[(String, Val)], tensors: &[(String, Vec<u64>)], seed: u8) -> Vec<u8> {
    let mut g = Gguf::default();
    for (k, v) in kvs {
        g = g.kv(k, v.clone());
    }
    for (name, dims) in tensors {
        let n: u64 = dims.iter().product();
        let mut x = seed as u32;
        let data = (0..n)
            .flat_map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                // Small weights in [-0.125, 0.125): finite logits, nothing saturates.
                (((x >> 16) % 256) as f32 / 1024.0 - 0.125).to_le_bytes()
            })
            .collect();
        g = g.tensor(Tensor::new(name, dims, GgmlType::F32.id(), data));
    }
    g.bytes()
}

/// The tiny model with `key` set to `v` (replacing it, or added when absent).
fn with_kv(key: &str, v: Val) -> Vec<u8> {
    let mut kvs = base_kvs();
    match kvs.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = v,
        None => kvs.push((key.to_string(), v)),
    }
    build(&kvs, &base_tensors(), 1)
}

fn base_file() -> Vec<u8> {
    build(&base_kvs(), &base_tensors(), 1)
}

/// Loads `bytes` (copied to a storage outside the measurement) as a whole model; returns
/// the result and the peak bytes allocated during the load. Panics become failures that
/// name the case.
fn load_measured(case: &str, bytes: &[u8]) -> (ember::Result<Model>, usize) {
    let storage = Storage::from_bytes(bytes);
    let (r, peak) = peak_of(|| {
        catch_unwind(AssertUnwindSafe(|| {
            GgufFile::from_storage(storage).and_then(Model::from_gguf)
        }))
    });
    match r {
        Ok(r) => (r, peak),
        Err(_) => panic!("{case}: the load panicked"),
    }
}

/// Asserts that the load is refused with a message holding every string of `expect`,
/// within the memory budget; returns the message.
fn refuse(case: &str, bytes: &[u8], expect: &[&str]) -> String {
    let (r, peak) = load_measured(case, bytes);
    let msg = match r {
        Ok(_) => panic!("{case}: loaded, expected an error containing {expect:?}"),
        Err(e) => e.to_string(),
    };
    for s in expect {
        assert!(msg.contains(s), "{case}: '{msg}' does not contain '{s}'");
    }
    assert!(
        peak <= BUDGET,
        "{case}: the load took {peak} bytes (budget {BUDGET}); error was: {msg}"
    );
    msg
}

/// Asserts that the load succeeds within the budget and returns the model.
fn accept(case: &str, bytes: &[u8]) -> Model {
    let (r, peak) = load_measured(case, bytes);
    let m = r.unwrap_or_else(|e| panic!("{case}: {e}"));
    assert!(peak <= BUDGET, "{case}: the load took {peak} bytes");
    m
}

#[test]
fn the_tiny_model_loads_and_decodes() {
    let m = accept("base", &base_file());
    assert_eq!(m.n_vocab(), TOKENS.len());
    let mut ctx = Context::new(&m, small_ctx()).unwrap();
    ctx.decode(&[0, 2, 3]).unwrap();
    assert!(ctx.logits().iter().all(|x| x.is_finite()));
}

#[test]
fn vocabulary_arrays() {
    let n = TOKENS.len();
    // Fewer scores / token types than tokens.
    let short_i32 = Val::Array(ty::I32, vec![Val::I32(1); n - 3]);
    refuse(
        "token_type shorter",
        &with_kv("tokenizer.ggml.token_type", short_i32),
        &[
            "tokenizer.ggml.token_type",
            &format!("{} types for {n} tokens", n - 3),
        ],
    );
    refuse(
        "scores shorter",
        &with_kv(
            "tokenizer.ggml.scores",
            Val::Array(ty::F32, vec![Val::F32(0.0); 2]),
        ),
        &["tokenizer.ggml.scores", &format!("2 scores for {n} tokens")],
    );
    // Wrong element types.
    refuse(
        "token_type of strings",
        &with_kv("tokenizer.ggml.token_type", Val::strs(&TOKENS)),
        &["tokenizer.ggml.token_type", "expected i32 array"],
    );
    refuse(
        "scores of strings",
        &with_kv("tokenizer.ggml.scores", Val::strs(&TOKENS)),
        &["tokenizer.ggml.scores", "expected f32 or i32 array"],
    );
    refuse(
        "tokens of i32",
        &with_kv(
            "tokenizer.ggml.tokens",
            Val::Array(ty::I32, vec![Val::I32(7); n]),
        ),
        &["tokenizer.ggml.tokens"],
    );
    refuse(
        "merges of u8",
        &with_kv(
            "tokenizer.ggml.merges",
            Val::Array(ty::U8, vec![Val::U8(1); 9]),
        ),
        &["tokenizer.ggml.merges"],
    );
    refuse(
        "tokens not an array",
        &with_kv("tokenizer.ggml.tokens", Val::str("abc")),
        &["tokenizer.ggml.tokens"],
    );
    // More tokens than the embedding has rows (and fewer).
    let mut more: Vec<&str> = TOKENS.to_vec();
    more.extend(["g", "h"]);
    let mut types = vec![Val::I32(1); more.len()];
    types[0] = Val::I32(3);
    let mut kvs = base_kvs();
    for (k, v) in kvs.iter_mut() {
        if k == "tokenizer.ggml.tokens" {
            *v = Val::strs(&more);
        } else if k == "tokenizer.ggml.token_type" {
            *v = Val::Array(ty::I32, types.clone());
        }
    }
    refuse(
        "tokens longer than the embedding",
        &build(&kvs, &base_tensors(), 1),
        &["token_embd.weight"],
    );
    // Counts that claim far more elements than the file holds.
    for key in [
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.scores",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.merges",
    ] {
        let elem = if key.ends_with("scores") {
            ty::F32
        } else if key.ends_with("type") {
            ty::I32
        } else {
            ty::STRING
        };
        refuse(
            &format!("{key} claiming 2^40 elements"),
            &with_kv(
                key,
                Val::RawArray {
                    elem,
                    count: 1 << 40,
                    payload: vec![0; 64],
                },
            ),
            &[key],
        );
    }
}

#[test]
fn special_token_ids_past_the_vocabulary() {
    // llama.cpp keeps loading such a file (it warns and keeps the default); so does ember,
    // with a warning that names the key, and the id never reaches a lookup.
    let n = TOKENS.len() as u32;
    // The six the issue names first, then every other id key the tokenizer reads.
    for key in [
        "bos",
        "eos",
        "eot",
        "padding",
        "unknown",
        "seperator",
        "eom",
        "mask",
        "fim_pre",
        "fim_suf",
        "fim_mid",
        "fim_pad",
        "fim_rep",
        "fim_sep",
        "prefix",
        "suffix",
        "middle",
    ] {
        let key = format!("tokenizer.ggml.{key}_token_id");
        for id in [n, n + 1, u32::MAX] {
            let m = accept(&format!("{key}={id}"), &with_kv(&key, Val::U32(id)));
            let tok = m.tokenizer();
            let w = tok.warnings().join("\n");
            assert!(
                w.contains(&key) && w.contains(&id.to_string()),
                "{key}={id}: warnings do not name it: {w}"
            );
            let sp = tok.special_tokens();
            for (what, t) in [
                ("bos", sp.bos),
                ("eos", sp.eos),
                ("eot", sp.eot),
                ("pad", sp.pad),
                ("unk", sp.unk),
                ("sep", sp.sep),
            ] {
                assert!(t.is_none_or(|t| t < n), "{key}={id}: {what} is {t:?}");
            }
            // Encoding and decoding with BOS/EOS added still works.
            let ids = tok.encode("ab c", true, true).unwrap();
            tok.decode(&ids, false, true).unwrap();
        }
        // A negative id stored as i32 is out of range for a u32 key: an error.
        refuse(
            &format!("{key}=-1"),
            &with_kv(&key, Val::I32(-1)),
            &[&key, "out of range"],
        );
    }
}

#[test]
fn a_token_text_claimed_longer_than_2_31() {
    // One string whose length prefix claims 2^31 + 1 (and 2^63) bytes, with a few bytes
    // behind it: the reader must see the file is too short before any allocation.
    for len in [(1u64 << 31) + 1, 1 << 63, u64::MAX] {
        let mut items: Vec<Val> = TOKENS.iter().map(|t| Val::str(t)).collect();
        items[5] = Val::RawStr {
            len,
            bytes: b"xyz".to_vec(),
        };
        let msg = refuse(
            &format!("token text of {len} bytes"),
            &with_kv("tokenizer.ggml.tokens", Val::Array(ty::STRING, items)),
            &["tokenizer.ggml.tokens"],
        );
        assert!(msg.contains("malformed GGUF"), "{msg}");
    }
}

#[test]
fn malformed_byte_tokens() {
    // A SentencePiece vocabulary whose byte token (type 6) text is not <0xHH>.
    for bad in [
        "<0x-1>", "<0xZZ>", "<0x>", "<0x1>", "<0x123>", "<0x+F>", "<>", "x",
    ] {
        let mut toks: Vec<&str> = TOKENS.to_vec();
        toks[12] = bad;
        let mut types = vec![Val::I32(1); toks.len()];
        types[0] = Val::I32(3);
        types[1] = Val::I32(3);
        types[12] = Val::I32(6);
        let mut kvs = base_kvs();
        kvs.retain(|(k, _)| k != "tokenizer.ggml.merges" && k != "tokenizer.ggml.pre");
        for (k, v) in kvs.iter_mut() {
            match k.as_str() {
                "tokenizer.ggml.model" => *v = Val::str("llama"),
                "tokenizer.ggml.tokens" => *v = Val::strs(&toks),
                "tokenizer.ggml.token_type" => *v = Val::Array(ty::I32, types.clone()),
                _ => {}
            }
        }
        refuse(
            &format!("byte token {bad}"),
            &build(&kvs, &base_tensors(), 1),
            &["tokenizer.ggml.tokens", "byte token 12", bad],
        );
    }
}

#[test]
fn tensor_type_and_shape() {
    let t = base_tensors();
    // Wrong shapes.
    for (name, dims) in [
        ("blk.0.attn_q.weight", vec![D, D + 8]),
        ("blk.0.attn_k.weight", vec![D, D]),
        ("blk.0.ffn_down.weight", vec![D, FF]),
        ("output_norm.weight", vec![D, 2]),
        ("token_embd.weight", vec![D + 1, TOKENS.len() as u64]),
    ] {
        let mut ts = t.clone();
        if let Some(x) = ts.iter_mut().find(|(n, _)| n == name) {
            x.1 = dims;
        }
        refuse(
            &format!("{name} reshaped"),
            &build(&base_kvs(), &ts, 1),
            &[name],
        );
    }
    // Types the architecture cannot use there: integer matrices and norms. (A quantized
    // norm is fine: ember dequantizes vectors once at load, as llama.cpp does.)
    for (name, gty) in [
        ("blk.0.attn_q.weight", GgmlType::I32),
        ("blk.0.ffn_up.weight", GgmlType::I8),
        ("token_embd.weight", GgmlType::F64),
        ("output_norm.weight", GgmlType::I32),
        ("blk.0.attn_norm.weight", GgmlType::I16),
    ] {
        let mut g = Gguf::default();
        for (k, v) in base_kvs() {
            g = g.kv(&k, v);
        }
        for (n, dims) in &t {
            if n == name {
                g = g.tensor(Tensor::filled(n, dims, gty, || 0));
            } else {
                g = g.tensor(Tensor::filled(n, dims, GgmlType::F32, || 0));
            }
        }
        refuse(&format!("{name} as {gty:?}"), &g.bytes(), &[name]);
    }
}

#[test]
fn a_missing_tensor() {
    for (missing, _) in base_tensors() {
        if missing == "output.weight" {
            continue;
        }
        let mut ts = base_tensors();
        ts.retain(|(n, _)| *n != missing);
        let msg = refuse(
            &format!("without {missing}"),
            &build(&base_kvs(), &ts, 1),
            &[&missing],
        );
        assert!(
            msg.contains("missing") || msg.contains("not found"),
            "{msg}"
        );
    }
}

#[test]
fn absurd_hyper_parameters() {
    let cases: Vec<(&str, Val, &[&str])> = vec![
        (
            "llama.attention.head_count",
            Val::U32(0),
            &["head_count", "greater than 0"],
        ),
        (
            "llama.attention.head_count_kv",
            Val::U32(0),
            &["head_count_kv", "greater than 0"],
        ),
        (
            "llama.attention.head_count_kv",
            Val::U32(3),
            &["head_count_kv", "does not divide"],
        ),
        (
            "llama.embedding_length",
            Val::U32(0),
            &["embedding_length", "greater than 0"],
        ),
        (
            "llama.block_count",
            Val::U32(0),
            &["block_count", "greater than 0"],
        ),
        ("llama.block_count", Val::U32(2), &["blk.1", "missing"]),
        (
            "llama.feed_forward_length",
            Val::U32(0),
            &["feed_forward_length"],
        ),
        // 30 over 4 heads: a head of 7 (odd), and the tensors do not fit anyway.
        ("llama.embedding_length", Val::U32(30), &["llama."]),
        (
            "llama.context_length",
            Val::U64(1 << 40),
            &["context_length", "out of range"],
        ),
        (
            "llama.rope.dimension_count",
            Val::U32(16),
            &["rope.dimension_count", "at most the head size 8"],
        ),
        (
            "llama.rope.dimension_count",
            Val::U32(u32::MAX),
            &["rope.dimension_count"],
        ),
        (
            "llama.attention.key_length",
            Val::U32(1 << 30),
            &["attn_q.weight", "expected"],
        ),
        (
            "llama.attention.layer_norm_rms_epsilon",
            Val::F32(f32::NAN),
            &["epsilon"],
        ),
        ("llama.rope.freq_base", Val::F32(-1.0), &["rope.freq_base"]),
        (
            "llama.vocab_size",
            Val::U32(u32::MAX),
            &["token_embd.weight"],
        ),
        // More KV heads than query heads.
        (
            "llama.attention.head_count_kv",
            Val::U32(8),
            &["head_count_kv", "does not divide"],
        ),
        (
            "llama.attention.head_count",
            Val::U32(u32::MAX),
            &["llama.attention.head_count"],
        ),
        (
            "llama.embedding_length",
            Val::U32(u32::MAX),
            &["llama.embedding_length"],
        ),
        (
            "llama.feed_forward_length",
            Val::U32(u32::MAX),
            &["ffn_gate.weight"],
        ),
        (
            "llama.rope.dimension_count",
            Val::U32(0),
            &["rope.dimension_count"],
        ),
        (
            "llama.rope.dimension_count",
            Val::U32(7),
            &["rope.dimension_count", "even"],
        ),
        ("llama.attention.key_length", Val::U32(0), &["key_length"]),
        (
            "llama.attention.value_length",
            Val::U32(0),
            &["value_length"],
        ),
        (
            "llama.attention.value_length",
            Val::U32(u32::MAX),
            &["attn_v.weight", "expected"],
        ),
        (
            "llama.context_length",
            Val::I64(-1),
            &["context_length", "out of range"],
        ),
        (
            "llama.attention.head_count",
            Val::str("4"),
            &["llama.attention.head_count"],
        ),
    ];
    for (key, v, expect) in cases {
        refuse(&format!("{key}={v:?}"), &with_kv(key, v), expect);
    }
    // The largest trained context a u32 holds loads (nothing is sized by it), and a
    // context asked for with n_ctx 0 takes the documented cap of 4096, not 2^32.
    let m = accept(
        "context_length u32::MAX",
        &with_kv("llama.context_length", Val::U32(u32::MAX)),
    );
    let ctx = Context::new(
        &m,
        ContextParams {
            n_ctx: 0,
            ..small_ctx()
        },
    )
    .unwrap();
    assert_eq!(ctx.n_ctx(), 4096);
    // n_embd not divisible by n_head (32 over 12 heads), with no explicit head size: the
    // error names the real cause, not the tensor whose shape then disagrees.
    let mut kvs = base_kvs();
    kvs.retain(|(k, _)| k != "llama.attention.head_count_kv");
    for (k, v) in kvs.iter_mut() {
        if k == "llama.attention.head_count" {
            *v = Val::U32(12);
        }
    }
    refuse(
        "n_embd 32 over 12 heads",
        &build(&kvs, &base_tensors(), 1),
        &["embedding_length", "not divisible by head_count 12"],
    );
    // expert_used_count > expert_count, and absurd expert counts.
    for (n_exp, used, expect) in [
        (4u32, 5u32, "5 of 4 experts"),
        (u32::MAX, 1, "1 of 4294967295 experts"),
        (1 << 20, 2, "2 of 1048576 experts"),
    ] {
        let mut kvs = base_kvs();
        kvs.push(("llama.expert_count".into(), Val::U32(n_exp)));
        kvs.push(("llama.expert_used_count".into(), Val::U32(used)));
        refuse(
            &format!("{used} of {n_exp} experts"),
            &build(&kvs, &base_tensors(), 1),
            &["expert_used_count", expect],
        );
    }
}

/// A block count far past the tensors the file holds: refused by name before anything
/// per layer is sized by the claim (4 GiB of per-layer flags for u32::MAX once was).
#[test]
fn a_block_count_past_the_tensors_allocates_nothing_by_it() {
    for n in [1u32 << 24, u32::MAX] {
        refuse(
            &format!("block_count {n}"),
            &with_kv("llama.block_count", Val::U32(n)),
            &["block_count", "layers, but the file has"],
        );
    }
}

#[test]
fn vocabulary_arrays_longer_than_the_tokens() {
    // llama.cpp reads the first n_vocab entries and ignores the rest; so does ember, and
    // says so in a warning that names the key (only a shorter array is an error).
    let n = TOKENS.len();
    for (key, v) in [
        (
            "tokenizer.ggml.scores",
            Val::Array(ty::F32, vec![Val::F32(0.5); n + 5]),
        ),
        (
            "tokenizer.ggml.token_type",
            Val::Array(ty::I32, {
                let mut t = vec![Val::I32(1); n + 5];
                t[0] = Val::I32(3);
                t[1] = Val::I32(3);
                t
            }),
        ),
    ] {
        let m = accept(&format!("{key} longer"), &with_kv(key, v));
        let w = m.tokenizer().warnings().join("\n");
        assert!(
            w.contains(key) && w.contains(&format!("{} entries for {n} tokens", n + 5)),
            "{key}: warnings do not name it: {w}"
        );
        assert_eq!(m.n_vocab(), n);
    }
}

#[test]
fn vocabulary_arrays_of_other_element_types() {
    // Every vocabulary array with every element type it must not have: refused, naming
    // the key. (Arrays of arrays too: the reader must not take their items for strings.)
    let n = TOKENS.len();
    let nested = Val::Array(
        ty::ARRAY,
        (0..n)
            .map(|_| Val::Array(ty::U8, vec![Val::U8(b'a')]))
            .collect(),
    );
    let bad: Vec<(&str, Val)> = vec![
        (
            "tokenizer.ggml.tokens",
            Val::Array(ty::F32, vec![Val::F32(1.0); n]),
        ),
        ("tokenizer.ggml.tokens", nested.clone()),
        (
            "tokenizer.ggml.scores",
            Val::Array(ty::U8, vec![Val::U8(1); n]),
        ),
        (
            "tokenizer.ggml.scores",
            Val::Array(ty::F64, vec![Val::F64(1.0); n]),
        ),
        ("tokenizer.ggml.scores", nested.clone()),
        (
            "tokenizer.ggml.token_type",
            Val::Array(ty::U32, vec![Val::U32(1); n]),
        ),
        (
            "tokenizer.ggml.token_type",
            Val::Array(ty::F32, vec![Val::F32(1.0); n]),
        ),
        ("tokenizer.ggml.token_type", nested.clone()),
        (
            "tokenizer.ggml.merges",
            Val::Array(ty::I32, vec![Val::I32(1); 5]),
        ),
        ("tokenizer.ggml.merges", nested.clone()),
        ("tokenizer.ggml.merges", Val::str("a b")),
        ("tokenizer.ggml.scores", Val::F32(0.0)),
        ("tokenizer.ggml.token_type", Val::I32(1)),
    ];
    for (key, v) in bad {
        refuse(&format!("{key} = {v:?}"), &with_kv(key, v), &[key]);
    }
    // A BPE vocabulary without merges cannot tokenize: refused by name.
    let mut kvs = base_kvs();
    kvs.retain(|(k, _)| k != "tokenizer.ggml.merges");
    refuse(
        "no merges",
        &build(&kvs, &base_tensors(), 1),
        &["tokenizer.ggml.merges"],
    );
}

#[test]
fn malformed_merges_load_and_tokenize() {
    // Merge lines llama.cpp would split oddly or not at all: no space, only spaces, empty,
    // three parts, pieces the vocabulary lacks, bytes that are not UTF-8, a merge of a
    // piece with itself. They load (llama.cpp loads them too) and encoding any text still
    // gives tokens that decode back to it.
    let lines: Vec<Val> = [
        &b"ab"[..],
        b" ",
        b"  ",
        b"",
        b"a b c",
        b"zz yy",
        b"\xff \xfe",
        b"a a",
        b"\xc4\xa0 a",
        b"a b",
        b"a b",
    ]
    .iter()
    .map(|l| Val::RawStr {
        len: l.len() as u64,
        bytes: l.to_vec(),
    })
    .collect();
    let m = accept(
        "odd merges",
        &with_kv("tokenizer.ggml.merges", Val::Array(ty::STRING, lines)),
    );
    let tok = m.tokenizer();
    for text in ["ab abc", "a a a", "aaaa", "zz yy", " \u{ff}\u{fe} cd", ""] {
        let ids = tok.encode(text, false, false).unwrap();
        assert!(ids.iter().all(|&t| (t as usize) < TOKENS.len()), "{ids:?}");
        let back = tok.decode(&ids, false, false).unwrap();
        // Characters the 16-token vocabulary has no bytes for are dropped, never others.
        let kept: String = text.chars().filter(|c| "abcdef ".contains(*c)).collect();
        assert_eq!(back, kept.as_bytes(), "{text:?} -> {ids:?}");
    }
}

#[test]
fn special_token_ids_of_the_wrong_type() {
    // An id must be an integer that fits a token id: a string, a float, an array or a
    // value past u32 is an error naming the key (llama.cpp aborts on a type mismatch).
    for key in ["bos", "eos", "eot", "padding", "unknown", "seperator"] {
        let key = format!("tokenizer.ggml.{key}_token_id");
        for v in [
            Val::str("1"),
            Val::F32(1.0),
            Val::Bool(true),
            Val::Array(ty::U32, vec![Val::U32(1)]),
            Val::U64(1 << 40),
            Val::I64(-2),
        ] {
            refuse(&format!("{key} = {v:?}"), &with_kv(&key, v), &[&key]);
        }
    }
}

fn small_ctx() -> ContextParams {
    ContextParams {
        n_ctx: 32,
        n_batch: 8,
        n_threads: 1,
        ..Default::default()
    }
}

/// A state error: the message, with the context unchanged and the allocation bounded.
fn refuse_state(case: &str, ctx: &mut Context, state: &[u8], expect: &[&str]) {
    let before = ctx.tokens().to_vec();
    let (r, peak) = peak_of(|| catch_unwind(AssertUnwindSafe(|| ctx.load_state(state))));
    let r = r.unwrap_or_else(|_| panic!("{case}: load_state panicked"));
    let msg = match r {
        Ok(()) => panic!("{case}: the state loaded"),
        Err(e) => e.to_string(),
    };
    assert!(msg.starts_with("invalid state"), "{case}: {msg}");
    for s in expect {
        assert!(msg.contains(s), "{case}: '{msg}' does not contain '{s}'");
    }
    assert!(peak <= BUDGET, "{case}: load_state took {peak} bytes");
    assert_eq!(ctx.tokens(), &before[..], "{case}: the context changed");
}

/// Rewrites the checksum (the last 8 bytes, FNV-1a 64 of the rest) so a crafted header
/// reaches the checks behind it.
fn reseal(mut s: Vec<u8>) -> Vec<u8> {
    let n = s.len() - 8;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in &s[..n] {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    s[n..].copy_from_slice(&h.to_le_bytes());
    s
}

#[test]
fn hostile_states() {
    let a = accept("model a", &base_file());
    let mut kvs2 = base_kvs();
    for (k, v) in kvs2.iter_mut() {
        if k == "llama.feed_forward_length" {
            *v = Val::U32(96);
        }
    }
    let mut t2 = base_tensors();
    for (n, d) in t2.iter_mut() {
        if n.contains("ffn_gate") || n.contains("ffn_up") {
            *d = vec![D, 96];
        } else if n.contains("ffn_down") {
            *d = vec![96, D];
        }
    }
    let b = accept("model b", &build(&kvs2, &t2, 2));
    let mut ca = Context::new(&a, small_ctx()).unwrap();
    let mut cb = Context::new(&b, small_ctx()).unwrap();
    ca.decode(&[0, 2, 3, 4]).unwrap();
    cb.decode(&[0, 5]).unwrap();
    let sa = ca.save_state();
    let before = cb.tokens().to_vec();

    refuse_state("from another model", &mut cb, &sa, &["different model"]);
    for cut in [0, 4, 12, 40, 60, sa.len() / 2, sa.len() - 9, sa.len() - 1] {
        refuse_state(&format!("cut to {cut}"), &mut ca, &sa[..cut], &[]);
    }
    // Header fields at their offsets: n_past (u64 at 36), n_logits (u32 at 44).
    let patch = |off: usize, bytes: &[u8]| {
        let mut s = sa.clone();
        s[off..off + bytes.len()].copy_from_slice(bytes);
        reseal(s)
    };
    refuse_state(
        "n_past 2^63",
        &mut ca,
        &patch(36, &(1u64 << 63).to_le_bytes()),
        &["do not fit n_ctx"],
    );
    refuse_state(
        "n_past u64::MAX",
        &mut ca,
        &patch(36, &u64::MAX.to_le_bytes()),
        &["do not fit n_ctx"],
    );
    refuse_state(
        "n_past 30 in a state of 4",
        &mut ca,
        &patch(36, &30u64.to_le_bytes()),
        &["the header implies"],
    );
    refuse_state(
        "n_logits u32::MAX",
        &mut ca,
        &patch(44, &u32::MAX.to_le_bytes()),
        &["logits"],
    );
    refuse_state(
        "n_layer 2^31",
        &mut ca,
        &patch(28, &(1u32 << 31).to_le_bytes()),
        &["n_layer"],
    );
    refuse_state(
        "n_vocab 0",
        &mut ca,
        &patch(32, &0u32.to_le_bytes()),
        &["n_vocab"],
    );
    refuse_state(
        "k_dim huge",
        &mut ca,
        &patch(20, &u32::MAX.to_le_bytes()),
        &["k_dim"],
    );
    refuse_state(
        "bad checksum",
        &mut ca,
        &{
            let mut s = sa.clone();
            s[60] ^= 1;
            s
        },
        &["checksum"],
    );
    // A token past the vocabulary inside a well-sealed state.
    refuse_state(
        "token past n_vocab",
        &mut ca,
        &patch(48, &(TOKENS.len() as u32).to_le_bytes()),
        &["outside the vocabulary"],
    );
    // A huge state file is refused before it is read whole.
    let dir = std::env::temp_dir().join(format!("ember-advisory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("big.state");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(1 << 40).unwrap();
    let (e, peak) = peak_of(|| ca.load_state_file(&big).unwrap_err().to_string());
    assert!(e.contains("larger than any state"), "{e}");
    assert!(peak <= ca.max_state_size() + BUDGET, "{peak}");
    let _ = std::fs::remove_dir_all(&dir);

    // The good state still loads, and the other context kept its tokens.
    ca.load_state(&sa).unwrap();
    assert_eq!(cb.tokens(), &before[..]);
}

#[test]
fn states_from_other_contexts() {
    let a = accept("model a", &base_file());
    let mut small = Context::new(&a, small_ctx()).unwrap();
    small.decode(&[0, 2]).unwrap();
    // More positions than this context holds, from a larger context of the same model.
    let mut big = Context::new(
        &a,
        ContextParams {
            n_ctx: 64,
            ..small_ctx()
        },
    )
    .unwrap();
    let many: Vec<u32> = (0..40).map(|i| 2 + i % 12).collect();
    for chunk in many.chunks(8) {
        big.decode(chunk).unwrap();
    }
    refuse_state(
        "40 positions into 32",
        &mut small,
        &big.save_state(),
        &["40 positions do not fit n_ctx 32"],
    );
    // A context with another KV cache type.
    let mut f32kv = Context::new(
        &a,
        ContextParams {
            kv_type: ember::KvType::F32,
            ..small_ctx()
        },
    )
    .unwrap();
    f32kv.decode(&[0, 3]).unwrap();
    refuse_state(
        "F32 KV into F16",
        &mut small,
        &f32kv.save_state(),
        &["KV type"],
    );
    // Another model with the same layout (same sizes, other weights): the fingerprint
    // samples every tensor's bytes, so its state is refused as another model's.
    let twin = accept(
        "same layout, other weights",
        &build(&base_kvs(), &base_tensors(), 7),
    );
    let mut t = Context::new(&twin, small_ctx()).unwrap();
    t.decode(&[0, 4, 5]).unwrap();
    refuse_state(
        "same layout, other weights",
        &mut small,
        &t.save_state(),
        &["different model"],
    );
}
