//! Generating tokens must not touch the heap: every buffer a decode step needs is made
//! when the context is created. A counting global allocator watches 64 tokens of
//! generation after a warm-up, across all threads (the worker pool included).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use ember::{Context, ContextParams, Control, GenerateParams, Model, ModelParams, SamplerParams};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);
static FREES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        FREES.fetch_add(1, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const WARMUP: usize = 8;
const MEASURED: usize = 64;

fn check(model: &Model, sampler: SamplerParams, n_threads: usize) {
    let mut ctx = Context::new(
        model,
        ContextParams {
            n_ctx: 256,
            n_threads,
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
        .generate(
            "Once upon a time, in a small village by the sea,",
            &params,
            |_piece| {
                pieces += 1;
                let now = (ALLOCS.load(Ordering::SeqCst), FREES.load(Ordering::SeqCst));
                if pieces == WARMUP {
                    at_start = now;
                }
                if pieces == WARMUP + MEASURED {
                    at_end = now;
                    return Control::Stop;
                }
                Control::Continue
            },
        )
        .unwrap();
    assert_eq!(pieces, WARMUP + MEASURED, "{stats:?}");
    assert_eq!(
        (at_end.0 - at_start.0, at_end.1 - at_start.1),
        (0, 0),
        "heap allocations/frees during {MEASURED} generated tokens ({n_threads} threads)"
    );
}

// One test function: the counters are global, so concurrent tests would disturb them.
#[test]
fn generation_allocates_nothing() {
    for name in ["smollm2", "gemma3"] {
        let model = Model::load(common::model(name), &ModelParams::default()).unwrap();
        check(&model, SamplerParams::greedy(), 2);
        check(
            &model,
            SamplerParams {
                temperature: 0.9,
                repeat_penalty: 1.1,
                ..SamplerParams::default()
            },
            2,
        );
        check(&model, SamplerParams::default(), 1);
    }
}
