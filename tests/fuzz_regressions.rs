//! Every input a fuzz target ever crashed on (tests/fuzz_regressions/TARGET/*), replayed
//! through the very driver the target runs (fuzz/src/lib.rs, compiled here on stable
//! without libFuzzer). A regression shows up as a panic in one of these tests, named by
//! its file.

mod common;

#[allow(dead_code)]
#[path = "../fuzz/src/lib.rs"]
mod drivers;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

/// The inputs of one target, sorted (a missing folder is none yet).
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = common::repo_root()
        .join("tests/fuzz_regressions")
        .join(target);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut v: Vec<_> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .map(|p| {
            let b = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, b)
        })
        .collect();
    v.sort();
    v
}

/// Runs `f` on every input of `target`; fails naming each input that panics.
fn replay(target: &str, mut f: impl FnMut(&[u8])) {
    let mut failed = Vec::new();
    let all = inputs(target);
    for (path, bytes) in &all {
        if catch_unwind(AssertUnwindSafe(|| f(bytes))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    eprintln!("{target}: {} inputs replayed", all.len());
    assert!(
        failed.is_empty(),
        "{target}: these inputs panic: {failed:#?}"
    );
}

#[test]
fn gguf() {
    replay("gguf", drivers::run_gguf);
}

#[test]
fn model() {
    replay("model", drivers::run_model);
}

#[test]
fn tokenize_bpe() {
    if inputs("tokenize_bpe").is_empty() {
        return;
    }
    let tok = drivers::tokenizer_at(&common::model("smollm2"));
    replay("tokenize_bpe", |d| drivers::run_tokenizer(&tok, d));
}

#[test]
fn tokenize_spm() {
    if inputs("tokenize_spm").is_empty() {
        return;
    }
    let tok = drivers::tokenizer_at(&common::model("gemma3"));
    replay("tokenize_spm", |d| drivers::run_tokenizer(&tok, d));
}

#[test]
fn state() {
    if inputs("state").is_empty() {
        return;
    }
    let path = common::model("smollm2")
        .parent()
        .expect("models folder")
        .join("synthetic/llama-q8_0.gguf");
    let model = ember::Model::load(&path, &Default::default())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (mut ctx, good) = drivers::state_fixture(&model);
    replay("state", |d| drivers::run_state(&mut ctx, &good, d));
}

#[test]
fn chat_template() {
    replay("chat_template", drivers::run_chat_template);
}
