//! Generating tokens must not touch the heap: every buffer a decode step needs is made
//! when the context is created. A counting global allocator watches 64 tokens of
//! generation after a warm-up, across all threads (the worker pool included): after a
//! short prompt, and on SmolLM2 also at depth (after a ~1,500-token prompt, where a decoded
//! token's attention is split across threads over many blocks of keys), with both KV types.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use ember::{
    Context, ContextParams, Control, GenerateParams, KvType, Model, ModelParams, SamplerParams,
};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);
static FREES: AtomicUsize = AtomicUsize::new(0);
/// Set while the measured tokens run: the first allocation then records where it came
/// from, so a failure names the culprit instead of only counting it.
static WATCH: AtomicBool = AtomicBool::new(false);
static CULPRIT: Mutex<Option<String>> = Mutex::new(None);

fn watched(what: &str, l: Layout) {
    // swap: the backtrace below allocates, and must not record itself.
    if WATCH.swap(false, Ordering::SeqCst) {
        let bt = std::backtrace::Backtrace::force_capture();
        if let Ok(mut c) = CULPRIT.try_lock() {
            *c = Some(format!("first {what} of {} bytes:\n{bt}", l.size()));
        }
    }
}

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        watched("allocation", l);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        FREES.fetch_add(1, Ordering::Relaxed);
        watched("free", l);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        watched("allocation", l);
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        watched("reallocation", l);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const WARMUP: usize = 8;

/// Tokens watched after the warm-up: 64, or EMBER_ZERO_ALLOC_TOKENS (the emulated ARM runs
/// use fewer: every kernel path is still exercised, at a tenth of the emulation time).
fn measured() -> usize {
    std::env::var("EMBER_ZERO_ALLOC_TOKENS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(64)
}

/// Tokens of prompt for the runs at depth: ~1,500, or EMBER_ZERO_ALLOC_DEPTH (emulated
/// runs use fewer; anything past 128 keys already splits a decoded token's attention).
fn depth() -> usize {
    std::env::var("EMBER_ZERO_ALLOC_DEPTH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1500)
}

const OPENING: &str = "Once upon a time, in a small village by the sea,";

fn check(model: &Model, sampler: SamplerParams, n_threads: usize, kv_type: KvType) {
    check_at(model, sampler, n_threads, kv_type, OPENING.to_string());
}

/// The opening sentence repeated to about `tokens` tokens.
fn deep_prompt(model: &Model, tokens: usize) -> String {
    let per = model
        .tokenizer()
        .encode(OPENING, false, false)
        .unwrap()
        .len();
    vec![OPENING; tokens.div_ceil(per).max(1)].join(" ")
}

fn check_at(
    model: &Model,
    sampler: SamplerParams,
    n_threads: usize,
    kv_type: KvType,
    prompt: String,
) {
    let measured = measured();
    let n_prompt = model
        .tokenizer()
        .encode(&prompt, true, false)
        .unwrap()
        .len();
    let mut ctx = Context::new(
        model,
        ContextParams {
            n_ctx: (n_prompt + WARMUP + measured + 64).max(256),
            n_threads,
            kv_type,
            ..Default::default()
        },
    )
    .unwrap();
    let tok = model.tokenizer();
    // Banning the end-of-generation tokens makes the run last exactly as long as we want.
    let mut sampler = sampler;
    sampler.logit_bias = tok
        .eog_tokens()
        .iter()
        .map(|&t| (t, f32::NEG_INFINITY))
        .collect();
    let params = GenerateParams {
        max_tokens: 0,
        sampler,
        stop: vec!["never appears in this text \u{1F9A9}".into()],
        ..GenerateParams::default()
    };
    let mut pieces = 0usize;
    let mut at_start = (0, 0);
    let mut at_end = (0, 0);
    let stats = ctx
        .generate(&prompt, &params, |_piece| {
            pieces += 1;
            let now = (ALLOCS.load(Ordering::SeqCst), FREES.load(Ordering::SeqCst));
            if pieces == WARMUP {
                at_start = now;
                WATCH.store(true, Ordering::SeqCst);
            }
            if pieces == WARMUP + measured {
                WATCH.store(false, Ordering::SeqCst);
                at_end = now;
                return Control::Stop;
            }
            Control::Continue
        })
        .unwrap();
    assert_eq!(pieces, WARMUP + measured, "{stats:?}");
    assert_eq!(
        (at_end.0 - at_start.0, at_end.1 - at_start.1),
        (0, 0),
        "heap allocations/frees during {measured} generated tokens ({n_threads} threads, \
         {n_prompt}-token prompt, {kv_type:?} cache); {}",
        CULPRIT.lock().unwrap().take().unwrap_or_default()
    );
}

// No libtest harness (Cargo.toml: harness = false): the counters are global, and the
// harness's own threads allocate now and then (its "running for over 60 seconds" notice
// did, under qemu), which would be counted against ember.
fn main() {
    // The real models, and one synthetic model per block kind they lack: routed experts
    // (with a shared expert in qwen2moe), fused q·k·v and gate+up (phi3).
    let synthetic = common::model_list("synthetic");
    let mut models: Vec<(String, std::path::PathBuf)> = ["smollm2", "gemma3"]
        .iter()
        .map(|n| (n.to_string(), common::model(n)))
        .collect();
    for stem in ["llama-moe-q4_0", "qwen2moe-q8_0", "phi3-q4_0"] {
        let path = synthetic
            .iter()
            .find(|p| p.file_stem().is_some_and(|s| s == stem))
            .unwrap_or_else(|| panic!("no synthetic model {stem}"));
        models.push((stem.to_string(), path.clone()));
    }
    for (name, path) in models {
        let model = Model::load(path, &ModelParams::default()).unwrap();
        check(&model, SamplerParams::greedy(), 2, KvType::F16);
        if name == "smollm2" {
            check(&model, SamplerParams::greedy(), 2, KvType::Q8_0);
            for kv in [KvType::F16, KvType::Q8_0] {
                let prompt = deep_prompt(&model, depth());
                check_at(&model, SamplerParams::greedy(), 2, kv, prompt);
            }
            eprintln!("zero_alloc: {name}: none at depth {} either", depth());
        }
        check(
            &model,
            SamplerParams {
                temperature: 0.9,
                repeat_penalty: 1.1,
                ..SamplerParams::default()
            },
            2,
            KvType::F16,
        );
        check(&model, SamplerParams::default(), 1, KvType::F16);
        eprintln!(
            "zero_alloc: {name}: no allocation in {} generated tokens",
            measured()
        );
    }
}
