//! Golden fixtures from the llama.cpp reference and the measures that compare ember to them.
//!
//! The fixtures (tests/fixtures/model/<model>.json, format in tests/fixtures/model/README.md)
//! are written by tools/make-model-fixtures; CI only reads them. Nothing here depends on ember's
//! model code: a test feeds in ember's logits (or tokens) and gets numbers back.
//!
//! KL divergence. A fixture stores, per position, llama.cpp's top-K log-probabilities and the
//! total log-probability of every other token (the "tail"), not the full distribution P. So
//! [`kl_topk`] computes KL(P' || Q') where P' and Q' are P and ember's Q coarsened to K + 1
//! outcomes: the K tokens, and "anything else". That is a lower bound of the full KL(P || Q)
//! (data processing inequality: merging outcomes never increases KL; by the log-sum inequality
//! the merged bucket's term p_tail ln(p_tail / q_tail) is at most the sum of the terms it
//! replaces). The part it drops is exactly p_tail * KL(P | tail || Q | tail), the divergence
//! *inside* the tail weighted by the tail's mass. It is still a meaningful test: it sees every
//! change to the probabilities of the K likeliest tokens and any shift of mass between them and
//! the rest, which is what decides greedy choices and perplexity; only a reshuffling of mass among
//! unlikely tokens is invisible, and that is weighted by a tail mass that is small on most
//! positions. The fixture's self_check records both measures on llama.cpp's own batch vs
//! incremental noise, so the size of the gap is measured rather than assumed.

// Each integration test binary that includes this module uses only part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::Value;

/// One model's golden data.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub model: ModelInfo,
    pub llama_cpp_commit: String,
    pub top_k: usize,
    pub prompts: Vec<Prompt>,
    pub self_check: SelfCheck,
    pub perplexity: Perplexity,
}

#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// "smollm2" or "gemma3": the argument tools/fetch-models takes.
    pub name: String,
    pub file: String,
    pub sha256: String,
    pub n_vocab: usize,
    pub add_bos: bool,
    pub bos: u32,
    pub eos: u32,
}

#[derive(Debug, Clone)]
pub struct Prompt {
    pub name: String,
    pub kind: String,
    pub text: String,
    /// Whether the text was tokenized with special-token parsing (the chat prompt).
    pub parse_special: bool,
    /// llama.cpp's tokenization of the whole text (add_special = true).
    pub ids: Vec<u32>,
    pub teacher_forced: TeacherForced,
    pub greedy: Greedy,
}

/// `tokens` evaluated in one batch; `positions[i]` is the distribution after `tokens[..=i]`,
/// which predicts `tokens[i + 1]`. So there is one position fewer than tokens.
#[derive(Debug, Clone)]
pub struct TeacherForced {
    pub tokens: Vec<u32>,
    pub positions: Vec<TopK>,
}

/// llama.cpp's next-token distribution at one position, as natural-log probabilities.
#[derive(Debug, Clone, PartialEq)]
pub struct TopK {
    /// The K likeliest tokens, likeliest first (equal logits: lower id first).
    pub ids: Vec<u32>,
    pub logprobs: Vec<f64>,
    /// ln of the total probability of all tokens not in `ids`.
    pub tail_logprob: f64,
    /// ln P(actual next token).
    pub next_logprob: f64,
}

#[derive(Debug, Clone)]
pub struct Greedy {
    pub prompt: Vec<u32>,
    /// Argmax tokens, one llama_decode per token after the prompt batch; end-of-generation
    /// tokens do not stop the run.
    pub tokens: Vec<u32>,
    /// Logit of the chosen token minus the runner-up's, per step: near 0 means a near tie.
    pub margins: Vec<f64>,
}

impl Greedy {
    /// The smallest margin along the continuation (the prompt length was chosen to make it large).
    pub fn min_margin(&self) -> f64 {
        self.margins.iter().copied().fold(f64::INFINITY, f64::min)
    }
}

/// llama.cpp's batch vs token-by-token evaluation of the teacher-forced prompts.
#[derive(Debug, Clone)]
pub struct SelfCheck {
    pub positions: usize,
    pub top1_agreement: f64,
    /// (eps, agreement counting disagreements where the batch log-prob gap is <= eps as agreement).
    pub top1_agreement_within: Vec<(f64, f64)>,
    /// Prompts whose greedy tokens come out identical with flash attention disabled (of 10).
    pub greedy_identical_without_flash_attn: usize,
    pub mean_kl: f64,
    pub max_kl: f64,
    pub mean_coarse_kl: f64,
}

#[derive(Debug, Clone)]
pub struct Perplexity {
    /// llama.cpp's tokens for ppl-text.txt (one trailing newline stripped, add_special = true).
    pub tokens: Vec<u32>,
    pub n_ctx: usize,
    pub n_chunk: usize,
    /// First position whose logits are scored: n_ctx / 2.
    pub first: usize,
    /// Whether the first token of every chunk is replaced by BOS (models that add BOS).
    pub bos_replaces_first_token: bool,
    /// llama-perplexity's "Final estimate".
    pub llama_final: f64,
    /// llama-perplexity's running values after each chunk.
    pub llama_running: Vec<f64>,
    /// The oracle's recomputation, per chunk: sum of -ln P over the scored tokens.
    pub oracle_chunk_nll: Vec<f64>,
    pub oracle_final: f64,
}

/// tests/fixtures/model/<name>.json in this crate.
pub fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/model")
        .join(format!("{name}.json"))
}

/// Loads the committed fixture of a model ("smollm2" or "gemma3").
pub fn load_model_fixture(name: &str) -> Result<Fixture, String> {
    load_fixture(&fixture_path(name))
}

pub fn load_fixture(path: &Path) -> Result<Fixture, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_fixture(&text).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn parse_fixture(text: &str) -> Result<Fixture, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let format = get_str(&v, "format")?;
    if format != "ember-golden-model/1" {
        return Err(format!("unknown fixture format {format:?}"));
    }
    let m = get(&v, "model")?;
    let model = ModelInfo {
        name: get_str(m, "name")?,
        file: get_str(m, "file")?,
        sha256: get_str(m, "sha256")?,
        n_vocab: get_usize(m, "n_vocab")?,
        add_bos: get_bool(m, "add_bos")?,
        bos: get_u32(m, "bos")?,
        eos: get_u32(m, "eos")?,
    };
    let top_k = get_usize(&v, "top_k")?;
    let mut prompts = Vec::new();
    for (i, p) in get_array(&v, "prompts")?.iter().enumerate() {
        prompts
            .push(parse_prompt(p, top_k, model.n_vocab).map_err(|e| format!("prompts[{i}]: {e}"))?);
    }
    let s = get(&v, "self_check")?;
    let mut top1_agreement_within = Vec::new();
    for (k, x) in get(s, "top1_agreement_within")?
        .as_object()
        .ok_or("top1_agreement_within is not an object")?
    {
        let eps = k
            .parse::<f64>()
            .map_err(|_| format!("top1_agreement_within: bad key {k:?}"))?;
        let a = x.as_f64().ok_or("top1_agreement_within: not a number")?;
        top1_agreement_within.push((eps, a));
    }
    top1_agreement_within.sort_by(|a, b| a.0.total_cmp(&b.0));
    let self_check = SelfCheck {
        positions: get_usize(s, "positions")?,
        top1_agreement: get_f64(s, "top1_agreement")?,
        top1_agreement_within,
        greedy_identical_without_flash_attn: get_usize(s, "greedy_identical_without_flash_attn")?,
        mean_kl: get_f64(s, "mean_kl")?,
        max_kl: get_f64(s, "max_kl")?,
        mean_coarse_kl: get_f64(s, "mean_coarse_kl")?,
    };
    let p = get(&v, "perplexity")?;
    let lp = get(p, "llama_perplexity")?;
    let oracle = get(p, "oracle")?;
    let mut oracle_chunk_nll = Vec::new();
    for c in get_array(oracle, "chunks")? {
        oracle_chunk_nll.push(get_f64(c, "nll_sum")?);
    }
    let perplexity = Perplexity {
        tokens: get_ids(p, "tokens", model.n_vocab)?,
        n_ctx: get_usize(p, "n_ctx")?,
        n_chunk: get_usize(p, "n_chunk")?,
        first: get_usize(p, "first_scored_logit")?,
        bos_replaces_first_token: get_bool(p, "bos_replaces_first_token_of_each_chunk")?,
        llama_final: get_f64(lp, "final")?,
        llama_running: get_f64s(lp, "running")?,
        oracle_chunk_nll,
        oracle_final: get_f64(oracle, "final")?,
    };
    Ok(Fixture {
        model,
        llama_cpp_commit: get_str(get(&v, "reference")?, "llama_cpp_commit")?,
        top_k,
        prompts,
        self_check,
        perplexity,
    })
}

fn parse_prompt(p: &Value, top_k: usize, n_vocab: usize) -> Result<Prompt, String> {
    let tf = get(p, "teacher_forced")?;
    let mut positions = Vec::new();
    for (i, pos) in get_array(tf, "positions")?.iter().enumerate() {
        let t = TopK {
            ids: get_ids(pos, "ids", n_vocab)?,
            logprobs: get_f64s(pos, "lp")?,
            tail_logprob: get_f64(pos, "tail")?,
            next_logprob: get_f64(pos, "next")?,
        };
        if t.ids.len() != top_k || t.logprobs.len() != top_k {
            return Err(format!("position {i}: expected {top_k} ids and log-probs"));
        }
        positions.push(t);
    }
    let tokens = get_ids(tf, "tokens", n_vocab)?;
    if tokens.len() != positions.len() + 1 {
        return Err("teacher_forced: need exactly one token more than positions".into());
    }
    let g = get(p, "greedy")?;
    let greedy = Greedy {
        prompt: get_ids(g, "prompt", n_vocab)?,
        tokens: get_ids(g, "tokens", n_vocab)?,
        margins: get_f64s(g, "margins")?,
    };
    if greedy.tokens.len() != greedy.margins.len() {
        return Err("greedy: tokens and margins differ in length".into());
    }
    Ok(Prompt {
        name: get_str(p, "name")?,
        kind: get_str(p, "kind")?,
        text: get_str(p, "text")?,
        parse_special: get_bool(p, "parse_special")?,
        ids: get_ids(p, "ids", n_vocab)?,
        teacher_forced: TeacherForced { tokens, positions },
        greedy,
    })
}

fn get<'a>(v: &'a Value, key: &str) -> Result<&'a Value, String> {
    v.get(key).ok_or_else(|| format!("missing field {key:?}"))
}

fn get_str(v: &Value, key: &str) -> Result<String, String> {
    get(v, key)?
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("{key:?} is not a string"))
}

fn get_bool(v: &Value, key: &str) -> Result<bool, String> {
    get(v, key)?
        .as_bool()
        .ok_or_else(|| format!("{key:?} is not a boolean"))
}

fn get_f64(v: &Value, key: &str) -> Result<f64, String> {
    get(v, key)?
        .as_f64()
        .ok_or_else(|| format!("{key:?} is not a number"))
}

fn get_usize(v: &Value, key: &str) -> Result<usize, String> {
    get(v, key)?
        .as_u64()
        .and_then(|x| usize::try_from(x).ok())
        .ok_or_else(|| format!("{key:?} is not a non-negative integer"))
}

fn get_u32(v: &Value, key: &str) -> Result<u32, String> {
    get(v, key)?
        .as_u64()
        .and_then(|x| u32::try_from(x).ok())
        .ok_or_else(|| format!("{key:?} is not a 32-bit unsigned integer"))
}

fn get_array<'a>(v: &'a Value, key: &str) -> Result<&'a Vec<Value>, String> {
    get(v, key)?
        .as_array()
        .ok_or_else(|| format!("{key:?} is not an array"))
}

fn get_f64s(v: &Value, key: &str) -> Result<Vec<f64>, String> {
    get_array(v, key)?
        .iter()
        .map(|x| x.as_f64().ok_or_else(|| format!("{key:?}: not a number")))
        .collect()
}

/// Token ids, checked against the vocabulary so later indexing cannot go out of bounds.
fn get_ids(v: &Value, key: &str, n_vocab: usize) -> Result<Vec<u32>, String> {
    get_array(v, key)?
        .iter()
        .map(|x| {
            x.as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .filter(|&id| (id as usize) < n_vocab)
                .ok_or_else(|| format!("{key:?}: {x} is not a token id below {n_vocab}"))
        })
        .collect()
}

/// ln(sum(exp(x))) in f64; -inf for an empty slice.
pub fn logsumexp(logits: &[f32]) -> f64 {
    let max = logits
        .iter()
        .fold(f64::NEG_INFINITY, |m, &x| m.max(f64::from(x)));
    if max == f64::NEG_INFINITY {
        return max;
    }
    let sum: f64 = logits.iter().map(|&x| (f64::from(x) - max).exp()).sum();
    max + sum.ln()
}

/// Log-softmax in f64, as the oracle computes it.
pub fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let lse = logsumexp(logits);
    logits.iter().map(|&x| f64::from(x) - lse).collect()
}

/// Index of the largest logit; the lowest index among equals, as the oracle breaks ties.
pub fn argmax(logits: &[f32]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, &x) in logits.iter().enumerate() {
        if best.is_none_or(|b| x > logits[b]) {
            best = Some(i);
        }
    }
    best
}

/// Coarsened KL(P_llama || Q_ember) in nats, over {the fixture's top-K tokens, everything else}:
/// a lower bound of the full KL (see the module documentation). `logits` are ember's raw logits
/// for the whole vocabulary at the same position.
pub fn kl_topk(p: &TopK, logits: &[f32]) -> Result<f64, String> {
    let mut in_top = vec![false; logits.len()];
    kl_topk_with(p, logits, &mut in_top)
}

fn kl_topk_with(p: &TopK, logits: &[f32], in_top: &mut [bool]) -> Result<f64, String> {
    if p.ids.iter().any(|&id| id as usize >= logits.len()) {
        return Err(format!(
            "fixture token id beyond ember's vocabulary of {}",
            logits.len()
        ));
    }
    // The stored log-probs are rounded; renormalising P keeps that rounding from showing up as
    // a (tiny) spurious divergence.
    let p_norm = {
        let m = p.logprobs.iter().fold(p.tail_logprob, |m, &x| m.max(x));
        let s: f64 =
            p.logprobs.iter().map(|&x| (x - m).exp()).sum::<f64>() + (p.tail_logprob - m).exp();
        m + s.ln()
    };
    let lse = logsumexp(logits);
    let mut kl = 0.0;
    for (&id, &lp) in p.ids.iter().zip(&p.logprobs) {
        let lp = lp - p_norm;
        let lq = f64::from(logits[id as usize]) - lse;
        kl += lp.exp() * (lp - lq);
        in_top[id as usize] = true;
    }
    // The tail is summed, not taken as 1 - sum(top-K): when the top-K holds nearly all of Q,
    // the subtraction would be pure rounding error.
    let q_tail: f64 = logits
        .iter()
        .zip(in_top.iter())
        .filter(|(_, &top)| !top)
        .map(|(&x, _)| (f64::from(x) - lse).exp())
        .sum();
    for &id in &p.ids {
        in_top[id as usize] = false;
    }
    let lp_tail = p.tail_logprob - p_norm;
    let p_tail = lp_tail.exp();
    if p_tail > 0.0 {
        kl += p_tail * (lp_tail - q_tail.max(f64::MIN_POSITIVE).ln());
    }
    Ok(kl)
}

/// A position where ember's top-1 differs from llama.cpp's.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    pub position: usize,
    pub llama_top: u32,
    pub ember_top: u32,
    /// llama.cpp's ln P(its top-1) - ln P(ember's top-1), when ember's pick is in the stored
    /// top-K: a value near 0 means the reference itself nearly tied. None: ember's pick is
    /// outside llama.cpp's top-K.
    pub llama_gap: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct TfReport {
    pub positions: usize,
    pub top1_agree: usize,
    pub mean_kl: f64,
    pub max_kl: f64,
    pub mismatches: Vec<Mismatch>,
}

impl TfReport {
    pub fn top1_agreement(&self) -> f64 {
        if self.positions == 0 {
            return 0.0;
        }
        self.top1_agree as f64 / self.positions as f64
    }

    /// Top-1 agreement that forgives near-ties: a disagreement counts as agreement when
    /// llama.cpp's own log-prob gap between its pick and ember's is at most `eps`. llama.cpp
    /// disagrees with itself (batch vs incremental) at gaps up to about 0.5 nats; the fixture's
    /// self_check.top1_agreement_within gives its own score at a few `eps`.
    pub fn top1_agreement_within(&self, eps: f64) -> f64 {
        if self.positions == 0 {
            return 0.0;
        }
        let forgiven = self
            .mismatches
            .iter()
            .filter(|m| m.llama_gap.is_some_and(|g| g <= eps))
            .count();
        (self.top1_agree + forgiven) as f64 / self.positions as f64
    }
}

/// Compares ember's teacher-forced logits with the fixture. `logits` is row-major, `n_vocab`
/// per row, one row per token of `tf.tokens` in order (a row for the last token, which predicts
/// beyond the sequence, may be present and is ignored).
pub fn compare_teacher_forced(
    tf: &TeacherForced,
    logits: &[f32],
    n_vocab: usize,
) -> Result<TfReport, String> {
    let n = tf.positions.len();
    let needed = n
        .checked_mul(n_vocab)
        .ok_or("positions * n_vocab overflows")?;
    if n_vocab == 0 || logits.len() < needed || logits.len() % n_vocab != 0 {
        return Err(format!(
            "expected at least {n} rows of {n_vocab} logits, got {} values",
            logits.len()
        ));
    }
    let mut in_top = vec![false; n_vocab];
    let mut report = TfReport {
        positions: n,
        top1_agree: 0,
        mean_kl: 0.0,
        max_kl: 0.0,
        mismatches: Vec::new(),
    };
    for (i, (p, row)) in tf
        .positions
        .iter()
        .zip(logits.chunks_exact(n_vocab))
        .enumerate()
    {
        let kl = kl_topk_with(p, row, &mut in_top)?;
        report.mean_kl += kl;
        report.max_kl = report.max_kl.max(kl);
        let ember_top = argmax(row).ok_or("empty logits row")? as u32;
        let llama_top = *p.ids.first().ok_or("fixture position without ids")?;
        if ember_top == llama_top {
            report.top1_agree += 1;
        } else {
            let llama_gap = p
                .ids
                .iter()
                .position(|&id| id == ember_top)
                .map(|j| p.logprobs[0] - p.logprobs[j]);
            report.mismatches.push(Mismatch {
                position: i,
                llama_top,
                ember_top,
                llama_gap,
            });
        }
    }
    if n > 0 {
        report.mean_kl /= n as f64;
    }
    Ok(report)
}

#[derive(Debug, Clone, PartialEq)]
pub struct GreedyReport {
    pub identical: bool,
    /// Index of the first generated token that differs (or where one run is shorter).
    pub first_divergence: Option<usize>,
    /// llama.cpp's top-2 logit margin at that step: near 0 means a genuine tie.
    pub llama_margin_at_divergence: Option<f64>,
}

impl GreedyReport {
    /// Identical, or diverging first where llama.cpp's own top-2 margin was below `eps` (a
    /// near-tie that rounding alone can flip).
    pub fn identical_or_near_tie(&self, eps: f64) -> bool {
        self.identical || self.llama_margin_at_divergence.is_some_and(|m| m < eps)
    }
}

/// Compares ember's greedy continuation (generated tokens only, prompt excluded).
pub fn compare_greedy(g: &Greedy, ember: &[u32]) -> GreedyReport {
    let first =
        g.tokens
            .iter()
            .zip(ember)
            .position(|(a, b)| a != b)
            .or(if ember.len() == g.tokens.len() {
                None
            } else {
                Some(ember.len().min(g.tokens.len()))
            });
    GreedyReport {
        identical: first.is_none(),
        first_divergence: first,
        llama_margin_at_divergence: first.and_then(|i| g.margins.get(i).copied()),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PplResult {
    pub ppl: f64,
    /// Sum of -ln P over the scored tokens of each chunk.
    pub chunk_nll: Vec<f64>,
    /// Scored tokens in all.
    pub count: usize,
}

/// Perplexity computed the way llama-perplexity computes it (tools/perplexity/perplexity.cpp,
/// perplexity(), with n_batch = n_ctx): the tokens are cut into floor(len / n_ctx) chunks of
/// n_ctx tokens (the remainder is dropped); each chunk is evaluated from an empty context;
/// if `bos` is given, the chunk's first token is *replaced* by it (not inserted); the logits at
/// positions n_ctx/2 ..= n_ctx-2 score the tokens at n_ctx/2+1 ..= n_ctx-1.
///
/// `eval(chunk, first)` evaluates a chunk from scratch and returns row-major logits, `n_vocab`
/// per row, for the positions first.. of the chunk: at least n_ctx - 1 - first rows (extra rows
/// are ignored).
pub fn perplexity_llama_style<E: From<String>>(
    tokens: &[u32],
    n_ctx: usize,
    bos: Option<u32>,
    n_vocab: usize,
    mut eval: impl FnMut(&[u32], usize) -> Result<Vec<f32>, E>,
) -> Result<PplResult, E> {
    if n_ctx < 4 || n_vocab == 0 || tokens.len() < 2 * n_ctx {
        return Err(E::from(format!(
            "need n_ctx >= 4, n_vocab > 0 and at least {} tokens, have {}",
            2 * n_ctx,
            tokens.len()
        )));
    }
    let first = n_ctx / 2;
    let scored = n_ctx - 1 - first;
    let mut chunk_nll = Vec::new();
    for chunk in tokens.chunks_exact(n_ctx) {
        let mut chunk = chunk.to_vec();
        if let Some(b) = bos {
            chunk[0] = b;
        }
        let logits = eval(&chunk, first)?;
        if logits.len() / n_vocab < scored {
            return Err(E::from(format!(
                "eval returned {} logits, need {scored} rows of {n_vocab}",
                logits.len()
            )));
        }
        let mut nll = 0.0;
        for (k, row) in logits.chunks_exact(n_vocab).take(scored).enumerate() {
            let target = chunk[first + k + 1] as usize;
            let x = row
                .get(target)
                .ok_or_else(|| E::from(format!("token {target} beyond the logits row")))?;
            nll += logsumexp(row) - f64::from(*x);
        }
        chunk_nll.push(nll);
    }
    let count = chunk_nll.len() * scored;
    let ppl = (chunk_nll.iter().sum::<f64>() / count as f64).exp();
    Ok(PplResult {
        ppl,
        chunk_nll,
        count,
    })
}
