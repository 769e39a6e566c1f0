//! Soak: one long generation on SmolLM2 in a 512-position context with context shifting
//! on, sampled (greedy on a 135M model falls into a loop; sampling keeps the text and so
//! the token mix varying). It must end without an error after exactly the tokens asked
//! for, shift many times, keep resident memory flat after a warm-up, and stream whole
//! UTF-8: the pieces joined are exactly the lossy decoding of the generated tokens' bytes.
//!
//! EMBER_SOAK=1 runs the 20,000 tokens (tools/test-all soak); otherwise 1,000, which
//! still shifts the context several times, so every `cargo test` proves shifting works.
//! EMBER_SOAK_TOKENS overrides either count; 0 skips the test (the emulated aarch64 run,
//! where tests/context.rs still checks shifting).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use ember::model::observe::{Observer, Stage, View};
use ember::{
    Context, ContextParams, Control, GenerateParams, Model, ModelParams, Sampler, SamplerParams,
    StopReason, Token,
};

const N_CTX: usize = 512;
/// RSS is read every this many decoded tokens.
const SAMPLE_EVERY: usize = 100;
/// How much anonymous resident memory may grow after the warm-up. Generation allocates
/// nothing per token (tests/zero_alloc.rs) and a shift reuses buffers made with the
/// context, so what remains is noise: the allocator serving this test's own /proc reads,
/// stack pages touched a little deeper. The smallest leak malloc can make per token (a
/// 32-byte chunk) would add 600 KiB over the 19,000 tokens after the warm-up, and any
/// buffer leaked per shift (a KV row is 2 KiB here, ~75 shifts) well over this.
const RSS_BOUND: u64 = 512 << 10;

/// Tokens to generate (0: skip), and whether this is the full run.
fn tokens_to_generate() -> (usize, bool) {
    let full = std::env::var("EMBER_SOAK").is_ok_and(|v| v == "1");
    let n = std::env::var("EMBER_SOAK_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 20_000 } else { 1_000 });
    (n, full)
}

/// Anonymous resident bytes of this process (heap, stacks; not the mapped model file,
/// whose pages the kernel may keep or drop as it likes), or None where /proc does not
/// say: off Linux, and under an emulator, whose own memory /proc would show.
fn rss_anon() -> Option<u64> {
    if !cfg!(target_os = "linux") || std::env::var_os("EMBER_TEST_RUNNER").is_some() {
        return None;
    }
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("RssAnon:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// What the observer saw, shared with the test body.
#[derive(Default)]
struct Seen {
    /// Every token decoded, prompt first, in order.
    ids: Vec<Token>,
    /// Times the next position was lower than the last one's successor: a shift.
    shifts: usize,
    next_pos: usize,
    max_pos: usize,
    /// (tokens decoded, RssAnon bytes) every SAMPLE_EVERY tokens.
    rss: Vec<(usize, u64)>,
}

/// Watches only the token ids of each forward pass: counts tokens, positions and shifts,
/// and reads RSS now and then (the reads allocate, which is why they are sparse).
struct Watch(Arc<Mutex<Seen>>);

impl Observer for Watch {
    fn observe(&mut self, v: &View<'_>) {
        if v.stage != Stage::Tokens {
            return;
        }
        let mut s = self.0.lock().unwrap();
        if v.pos0 < s.next_pos {
            s.shifts += 1;
        }
        s.next_pos = v.pos0 + v.rows;
        s.max_pos = s.max_pos.max(s.next_pos - 1);
        let before = s.ids.len();
        s.ids.extend_from_slice(v.ids);
        if before / SAMPLE_EVERY != s.ids.len() / SAMPLE_EVERY {
            if let Some(r) = rss_anon() {
                let n = s.ids.len();
                s.rss.push((n, r));
            }
        }
    }
}

#[test]
fn long_generation_with_context_shifting() {
    let (n_gen, full) = tokens_to_generate();
    if n_gen == 0 {
        eprintln!("soak: skipped (EMBER_SOAK_TOKENS=0)");
        return;
    }
    let warmup = 1_000.min(n_gen / 2);
    let model = Model::load(common::model("smollm2"), &ModelParams::default()).unwrap();
    let tok = model.tokenizer();
    let mut ctx = Context::new(
        &model,
        ContextParams {
            n_ctx: N_CTX,
            n_threads: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let prompt = tok
        .encode(
            "Once upon a time, in a small village by the sea,",
            true,
            true,
        )
        .unwrap();
    let seen = Arc::new(Mutex::new(Seen {
        // Room for everything up front: the bookkeeping must not grow the RSS measured.
        ids: Vec::with_capacity(prompt.len() + n_gen + 1),
        rss: Vec::with_capacity(n_gen / SAMPLE_EVERY + 2),
        ..Default::default()
    }));
    {
        let mut s = seen.lock().unwrap();
        let cap = s.ids.capacity();
        s.ids.resize(cap, 0);
        s.ids.clear();
    }
    ctx.set_observer(Some(Box::new(Watch(seen.clone()))));
    let mut sampler = Sampler::new(SamplerParams {
        temperature: 0.9,
        repeat_penalty: 1.1,
        seed: 20_000,
        // An end-of-generation token would end the run early.
        logit_bias: tok
            .eog_tokens()
            .iter()
            .map(|&t| (t, f32::NEG_INFINITY))
            .collect(),
        ..SamplerParams::default()
    })
    .unwrap();
    let params = GenerateParams {
        max_tokens: n_gen,
        context_shift: true,
        // The prompt survives every shift, as an app keeps its system prompt.
        n_keep: prompt.len(),
        ..GenerateParams::default()
    };
    // Pieces are joined into a buffer touched in full now, for the same reason as `ids`.
    let mut text = String::with_capacity(n_gen * 32);
    text.push_str(&" ".repeat(text.capacity()));
    text.clear();
    let mut n_pieces = 0usize;
    let t0 = Instant::now();
    let stats = ctx
        .generate_tokens(&prompt, &params, &mut sampler, |piece| {
            n_pieces += 1;
            text.push_str(piece);
            Control::Continue
        })
        .unwrap_or_else(|e| panic!("generation failed: {e}"));
    let secs = t0.elapsed().as_secs_f64();
    ctx.set_observer(None);
    let seen = seen.lock().unwrap();

    assert_eq!(stats.stop_reason, Some(StopReason::MaxTokens), "{stats:?}");
    assert_eq!(stats.generated_tokens, n_gen);
    assert!(seen.max_pos < N_CTX, "position {} reached", seen.max_pos);
    assert!(ctx.n_past() <= N_CTX);
    // The first shift comes when the context is full, then one per half of what follows
    // the kept prompt.
    let room = N_CTX - prompt.len();
    let want_shifts = (prompt.len() + n_gen).saturating_sub(N_CTX) / room.div_ceil(2);
    assert!(
        seen.shifts >= want_shifts.max(1),
        "{} shifts in {n_gen} tokens, expected at least {want_shifts}",
        seen.shifts
    );
    assert_eq!(&seen.ids[..prompt.len()], &prompt[..]);
    let generated = &seen.ids[prompt.len()..];
    assert_eq!(generated.len(), n_gen, "every generated token was decoded");
    // Whole characters: the stream drops nothing and splits nothing, so its pieces join
    // to exactly what decoding all the generated bytes at once gives.
    let mut bytes = Vec::new();
    for &t in generated {
        bytes.extend_from_slice(tok.token_to_piece(t, false).unwrap());
    }
    let whole = String::from_utf8_lossy(&bytes);
    assert!(
        text == whole,
        "streamed text differs from the tokens' bytes (first difference at byte {})",
        text.bytes()
            .zip(whole.bytes())
            .position(|(a, b)| a != b)
            .unwrap_or(text.len().min(whole.len()))
    );
    let distinct = {
        let mut v = generated.to_vec();
        v.sort_unstable();
        v.dedup();
        v.len()
    };
    eprintln!(
        "soak: {n_gen} tokens in {secs:.1} s ({:.1} tok/s), {} shifts, {} pieces, {} bytes \
         of text, {distinct} distinct tokens",
        n_gen as f64 / secs,
        seen.shifts,
        n_pieces,
        text.len()
    );

    let after: Vec<(usize, u64)> = seen
        .rss
        .iter()
        .copied()
        .filter(|&(n, _)| n >= prompt.len() + warmup)
        .collect();
    let Some(&(_, base)) = after.first() else {
        eprintln!("soak: resident memory not checked (no /proc/self/status RssAnon here)");
        return;
    };
    let (at, peak) = after.iter().copied().max_by_key(|&(_, r)| r).unwrap();
    let growth = peak.saturating_sub(base);
    eprintln!(
        "soak: RssAnon after {warmup} tokens {} KiB, max {} KiB (after {} tokens), growth \
         {} KiB (bound {} KiB){}",
        base >> 10,
        peak >> 10,
        at - prompt.len(),
        growth >> 10,
        RSS_BOUND >> 10,
        if full { "" } else { " [short run]" }
    );
    assert!(
        growth <= RSS_BOUND,
        "RssAnon grew by {growth} bytes after the warm-up: {:?}",
        seen.rss
    );
}
