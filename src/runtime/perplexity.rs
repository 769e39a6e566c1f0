//! Perplexity as llama-perplexity computes it: the text is cut into non-overlapping chunks
//! of `n_ctx` tokens, each evaluated from an empty cache (its first token replaced by BOS
//! when the model adds one), and only the second half of each chunk is scored, so every
//! scored token has at least n_ctx/2 tokens of context.

use crate::error::{Error, Result};
use crate::model::Model;
use crate::tokenizer::Token;

use super::context::{Context, ContextParams};

/// The outcome of a perplexity run.
#[derive(Clone, Debug)]
pub struct Perplexity {
    /// exp(mean negative log-likelihood) over every scored token.
    pub ppl: f64,
    /// Running perplexity after each chunk (what llama-perplexity prints as `[1]x,[2]y`).
    pub chunks: Vec<f64>,
    pub n_scored: usize,
}

/// Computes perplexity of `tokens` (tokenized with the model's special tokens, as
/// llama-perplexity does) with chunks of `n_ctx` tokens. `bos` replaces the first token of
/// each chunk when given.
pub fn perplexity(
    model: &Model,
    tokens: &[Token],
    n_ctx: usize,
    n_threads: usize,
    bos: Option<Token>,
) -> Result<Perplexity> {
    if n_ctx < 4 {
        return Err(Error::InvalidArgument(format!(
            "perplexity needs n_ctx >= 4, got {n_ctx}"
        )));
    }
    if tokens.len() < 2 * n_ctx {
        return Err(Error::InvalidArgument(format!(
            "perplexity with a context of {n_ctx} needs at least {} tokens, the text has {}",
            2 * n_ctx,
            tokens.len()
        )));
    }
    let first = n_ctx / 2;
    let mut ctx = Context::new(
        model,
        ContextParams {
            n_ctx,
            n_batch: n_ctx - first,
            n_threads,
            logits_all: true,
            ..ContextParams::default()
        },
    )?;
    let n_chunk = tokens.len() / n_ctx;
    let mut nll = 0.0f64;
    let mut count = 0usize;
    let mut chunks = Vec::with_capacity(n_chunk);
    let mut buf = vec![0 as Token; n_ctx];
    for i in 0..n_chunk {
        buf.copy_from_slice(&tokens[i * n_ctx..(i + 1) * n_ctx]);
        if let Some(b) = bos {
            buf[0] = b;
        }
        ctx.reset();
        ctx.decode(&buf[..first])?;
        ctx.decode_all(&buf[first..])?;
        for j in 0..n_ctx - 1 - first {
            let logits = ctx.logits_ith(j)?;
            nll -= log_softmax_at(logits, buf[first + j + 1] as usize);
            count += 1;
        }
        chunks.push((nll / count as f64).exp());
    }
    Ok(Perplexity {
        ppl: (nll / count as f64).exp(),
        chunks,
        n_scored: count,
    })
}

/// log softmax(logits)[target], in f64.
pub fn log_softmax_at(logits: &[f32], target: usize) -> f64 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let sum: f64 = logits.iter().map(|&v| (v as f64 - max).exp()).sum();
    logits[target] as f64 - max - sum.ln()
}
