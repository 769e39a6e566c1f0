//! ember's forward pass against llama.cpp's on both real models (and SmolLM2 requantized to
//! IQ4_NL and IQ4_XS), through committed fixtures (tests/fixtures/model, made by
//! tools/make-model-fixtures from the reference).
//!
//! What can be asked of two engines that quantize activations to 8 bits before every
//! matrix product: the fixture's `self_check` records llama.cpp against itself (one batch
//! vs token by token): 96.6% / 95.5% top-1 agreement, mean KL 0.0035 / 0.0058, and
//! greedy runs that part at near-ties. A one-ulp difference anywhere flips some 8-bit
//! roundings and compounds through the layers, so no engine that is not bit-identical to
//! llama.cpp's x86 build agrees with it on every near-tie. The bars below therefore are:
//! - mean KL(llama.cpp || ember) < 0.01 (the bar);
//! - perplexity within 1% of llama-perplexity (the bar);
//! - top-1: at least 95% literal agreement (over the full prompt set), and 98% counting
//!   positions where llama.cpp's own top-2 were within 0.25 nats (llama.cpp scores 99.8% on
//!   that against itself);
//! - greedy: wherever a 32-token continuation departs from llama.cpp's, llama.cpp's own
//!   top-2 margin there is below 0.5 (a near-tie), and at least 5 of 10 are identical (or
//!   as many as llama.cpp reproduces of its own with flash attention off, if fewer).
//!
//! EMBER_GOLDEN_PROMPTS=N limits the prompts checked, EMBER_GOLDEN_PPL=0 skips the
//! perplexity test and EMBER_GOLDEN_MODELS=a,b checks only the models named; the emulated
//! ARM runs use all three (the IQ4_XS file holds IQ4_NL matrices too, so the IQ4_NL model
//! adds nothing there that its cost would buy).

mod common;

use common::golden::{compare_greedy, compare_teacher_forced, load_model_fixture, Fixture};
use ember::runtime::perplexity::perplexity;
use ember::sampling::argmax;
use ember::{Context, ContextParams, Model, ModelParams};

fn n_prompts(fx: &Fixture) -> usize {
    std::env::var("EMBER_GOLDEN_PROMPTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(fx.prompts.len())
        .min(fx.prompts.len())
}

/// Whether EMBER_GOLDEN_MODELS (a comma list; unset: every model) names this model.
fn skipped(name: &str) -> bool {
    let skip = std::env::var("EMBER_GOLDEN_MODELS")
        .is_ok_and(|list| !list.split(',').any(|m| m.trim() == name));
    if skip {
        eprintln!("{name}: skipped (not in EMBER_GOLDEN_MODELS)");
    }
    skip
}

fn load(name: &str) -> (Model, Fixture) {
    let fx = load_model_fixture(name).expect("fixture");
    let model = Model::load(common::model(name), &ModelParams::default()).expect("model");
    assert_eq!(model.n_vocab(), fx.model.n_vocab);
    (model, fx)
}

fn teacher_forced(name: &str) {
    if skipped(name) {
        return;
    }
    let (model, fx) = load(name);
    let n_vocab = model.n_vocab();
    let mut ctx = Context::new(
        &model,
        ContextParams {
            n_ctx: 256,
            n_batch: 256,
            logits_all: true,
            ..Default::default()
        },
    )
    .unwrap();
    let (mut positions, mut agree, mut near, mut kl_sum, mut max_kl) =
        (0usize, 0usize, 0usize, 0.0f64, 0.0f64);
    let n = n_prompts(&fx);
    for p in &fx.prompts[..n] {
        let tf = &p.teacher_forced;
        ctx.reset();
        ctx.decode_all(&tf.tokens).unwrap();
        let mut rows = Vec::with_capacity(tf.positions.len() * n_vocab);
        for i in 0..tf.positions.len() {
            rows.extend_from_slice(ctx.logits_ith(i).unwrap());
        }
        let r = compare_teacher_forced(tf, &rows, n_vocab).unwrap();
        eprintln!(
            "{name} {}: top-1 {}/{} (within 0.25 nats: {:.3}), mean KL {:.5}, max KL {:.4}",
            p.name,
            r.top1_agree,
            r.positions,
            r.top1_agreement_within(0.25),
            r.mean_kl,
            r.max_kl
        );
        positions += r.positions;
        agree += r.top1_agree;
        near += (r.top1_agreement_within(0.25) * r.positions as f64).round() as usize;
        kl_sum += r.mean_kl * r.positions as f64;
        max_kl = max_kl.max(r.max_kl);
    }
    let top1 = agree as f64 / positions as f64;
    let within = near as f64 / positions as f64;
    let mean_kl = kl_sum / positions as f64;
    eprintln!(
        "{name}: top-1 agreement {top1:.4} ({agree}/{positions}), within 0.25 nats {within:.4}, mean KL {mean_kl:.5}, max KL {max_kl:.4} \
         (llama.cpp vs itself: top-1 {:.4}, mean KL {:.5})",
        fx.self_check.top1_agreement, fx.self_check.mean_coarse_kl
    );
    assert!(mean_kl < 0.01, "{name}: mean KL {mean_kl} >= 0.01");
    // llama.cpp agrees with itself on 96% of positions, about 5 misses in a 128-position
    // prompt, so one prompt lands on either side of 95% by chance (SmolLM2 IQ4_NL's first
    // prompt: 121/128 with AVX2, 123 scalar, 119 NEON, every miss a near-tie). As for the
    // greedy count below, only the full set is held to the literal bar; a subset (the
    // emulated runs) is still held to the near-tie-tolerant one and to the KL bar.
    assert!(
        n < fx.prompts.len() || top1 >= 0.95,
        "{name}: top-1 agreement {top1} < 0.95"
    );
    assert!(
        within >= 0.98,
        "{name}: top-1 agreement counting near-ties {within} < 0.98"
    );
}

fn greedy(name: &str) {
    if skipped(name) {
        return;
    }
    let (model, fx) = load(name);
    let mut ctx = Context::new(
        &model,
        ContextParams {
            n_ctx: 128,
            ..Default::default()
        },
    )
    .unwrap();
    let n = n_prompts(&fx);
    let mut identical = 0;
    for p in &fx.prompts[..n] {
        let g = &p.greedy;
        ctx.reset();
        ctx.decode(&g.prompt).unwrap();
        let mut out = Vec::with_capacity(g.tokens.len());
        for _ in 0..g.tokens.len() {
            let t = argmax(ctx.logits());
            out.push(t);
            ctx.decode(&[t]).unwrap();
        }
        let r = compare_greedy(g, &out);
        eprintln!("{name} {}: {:?}", p.name, r);
        if r.identical {
            identical += 1;
        }
        assert!(
            r.identical_or_near_tie(0.5),
            "{name} {}: greedy departs from llama.cpp where its margin was {:?} (not a near-tie)",
            p.name,
            r.llama_margin_at_divergence
        );
    }
    eprintln!("{name}: {identical}/{n} greedy continuations identical to llama.cpp's");
    // A count over a few prompts says little (one near-tie flips it): only the full set
    // is held to it. The bar is half the prompts, or as many as llama.cpp itself
    // reproduces with flash attention off if that is fewer: SmolLM2 IQ4_XS passes through
    // near-ties on every prompt (smallest margins 0.07-0.22) and llama.cpp reproduces only
    // 4/10 of its own continuations, parting where ember does (margins 0.099, 0.108, 0.104).
    let bar = (n / 2).min(fx.self_check.greedy_identical_without_flash_attn);
    assert!(
        n < fx.prompts.len() || identical >= bar,
        "{name}: only {identical}/{n} greedy continuations identical (bar {bar})"
    );
}

fn ppl(name: &str) {
    if skipped(name) {
        return;
    }
    let (model, fx) = load(name);
    let p = &fx.perplexity;
    let bos = if p.bos_replaces_first_token {
        Some(fx.model.bos)
    } else {
        None
    };
    // EMBER_GOLDEN_PPL=0 skips this test (the emulated ARM runs: the batched forward pass
    // it rests on is checked by the teacher-forced test, and perplexity's own arithmetic
    // is the same on every target).
    if std::env::var("EMBER_GOLDEN_PPL").is_ok_and(|v| v == "0") {
        eprintln!("{name}: perplexity skipped (EMBER_GOLDEN_PPL=0)");
        return;
    }
    let r = perplexity(&model, &p.tokens, p.n_ctx, 0, bos).unwrap();
    assert_eq!(r.chunks.len(), p.n_chunk);
    let rel = (r.ppl - p.llama_final).abs() / p.llama_final;
    eprintln!(
        "{name}: perplexity {:.4} vs llama-perplexity {:.4} ({:+.3}%), running {:?}",
        r.ppl,
        p.llama_final,
        100.0 * (r.ppl - p.llama_final) / p.llama_final,
        r.chunks
    );
    assert!(
        rel < 0.01,
        "{name}: perplexity {} is {:.2}% from llama.cpp's {}",
        r.ppl,
        rel * 100.0,
        p.llama_final
    );
}

#[test]
fn smollm2_teacher_forced() {
    teacher_forced("smollm2");
}

#[test]
fn gemma3_teacher_forced() {
    teacher_forced("gemma3");
}

#[test]
fn smollm2_greedy() {
    greedy("smollm2");
}

#[test]
fn gemma3_greedy() {
    greedy("gemma3");
}

#[test]
fn smollm2_perplexity() {
    ppl("smollm2");
}

#[test]
fn gemma3_perplexity() {
    ppl("gemma3");
}

// SmolLM2 requantized to IQ4_NL and IQ4_XS by tools/fetch-models (`ember quantize`, the
// same tensors llama-quantize writes; see the fixtures' model.requantized).

#[test]
fn smollm2_iq4_nl_teacher_forced() {
    teacher_forced("smollm2-iq4_nl");
}

#[test]
fn smollm2_iq4_xs_teacher_forced() {
    teacher_forced("smollm2-iq4_xs");
}

#[test]
fn smollm2_iq4_nl_greedy() {
    greedy("smollm2-iq4_nl");
}

#[test]
fn smollm2_iq4_xs_greedy() {
    greedy("smollm2-iq4_xs");
}

#[test]
fn smollm2_iq4_nl_perplexity() {
    ppl("smollm2-iq4_nl");
}

#[test]
fn smollm2_iq4_xs_perplexity() {
    ppl("smollm2-iq4_xs");
}
