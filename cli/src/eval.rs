//! `ember eval -m FILE -f TEXT (--top1 | --logprobs) [-t THREADS] [--no-bos]`
//!
//! Teacher-forced scoring: every line of the text goes through the model as one batch with
//! the logits of every position kept, and one JSON array per line says what the model made
//! of it. This is the raw material for comparing ember with another implementation
//! (llama.cpp, a float64 reference) position by position, which a single perplexity number
//! or a sampled generation cannot show.

use std::io::Write;
use std::path::PathBuf;

use ember::sampling::argmax;
use ember::{Context, ContextParams, EncodeOptions, Error, Model, ModelParams, Token};

#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["top1", "logprobs"]))]
pub struct Args {
    /// The GGUF model.
    #[arg(short = 'm', long = "model")]
    model: PathBuf,
    /// The text file: each non-empty line is scored on its own.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Print the most likely token id after every position (as many ids as the line has
    /// tokens).
    #[arg(long)]
    top1: bool,
    /// Print the natural-log probability of each next token of the line (one fewer than
    /// the line has tokens), rounded to 6 decimals.
    #[arg(long)]
    logprobs: bool,
    /// Worker threads (0 = all cores).
    #[arg(short = 't', long = "threads", default_value_t = 0)]
    threads: usize,
    /// KV cache type: f16, f32 or q8_0 (llama.cpp's -ctk/-ctv).
    #[arg(long = "cache-type", default_value = "f16")]
    cache_type: ember::KvType,
    /// Do not add BOS (or EOS), whatever the model's metadata says, as `ember tokenize
    /// --no-bos`.
    #[arg(long)]
    no_bos: bool,
}

pub fn run(a: Args) -> ember::Result<()> {
    let bytes = std::fs::read(&a.file).map_err(|e| Error::Io {
        path: a.file.display().to_string(),
        source: e,
    })?;
    let model = Model::load(&a.model, &ModelParams::default())?;
    let lines = tokenize_lines(&model, &bytes, a.no_bos)?;
    let longest = lines.iter().map(|(_, t)| t.len()).max().unwrap_or(0);
    if longest == 0 {
        // Nothing to score (no non-empty line, or lines that encode to no tokens): no
        // context is made, so an empty file costs only the model load.
        for _ in &lines {
            println!("[]");
        }
        return Ok(());
    }
    // One batch per line, with the logits of every position: the context's batch must hold
    // the longest line whole. Longer than the trained context, the model's positions would
    // be ones it never saw, so that is refused rather than scored.
    let n_ctx_train = model.n_ctx_train();
    if let Some((k, t)) = lines.iter().find(|(_, t)| t.len() > n_ctx_train) {
        return Err(Error::InvalidArgument(format!(
            "line {} of {} is {} tokens long, more than the model's training context of {} \
             tokens",
            k,
            a.file.display(),
            t.len(),
            n_ctx_train
        )));
    }
    let mut ctx = Context::new(
        &model,
        ContextParams {
            n_ctx: longest,
            n_batch: longest,
            n_threads: a.threads,
            kv_type: a.cache_type,
            logits_all: true,
            ..ContextParams::default()
        },
    )?;
    let mut out = std::io::stdout().lock();
    for (_, tokens) in &lines {
        let row = if a.top1 {
            score_top1(&mut ctx, tokens)?
        } else {
            score_logprobs(&mut ctx, tokens)?
        };
        writeln!(out, "{row}").map_err(|e| Error::Io {
            path: "stdout".into(),
            source: e,
        })?;
    }
    Ok(())
}

/// The tokens of each non-empty line, with its line number in the file (from 1, for error
/// messages), encoded exactly as `ember tokenize [--no-bos] LINE`
/// encodes that line: the bytes between newlines (a trailing `\r` dropped, so a file with
/// CRLF line ends scores the same text), special-token text not parsed, BOS and EOS as the
/// model's metadata says unless `no_bos`.
fn tokenize_lines(
    model: &Model,
    bytes: &[u8],
    no_bos: bool,
) -> ember::Result<Vec<(usize, Vec<Token>)>> {
    let tok = model.tokenizer();
    for w in tok.warnings() {
        eprintln!("ember: warning: {w}");
    }
    let opts = EncodeOptions {
        add_bos: if no_bos { Some(false) } else { None },
        add_eos: if no_bos { Some(false) } else { None },
        parse_special: false,
    };
    bytes
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(k, l)| Ok((k + 1, tok.encode_bytes_with(l, &opts)?)))
        .collect()
}

/// Decodes `tokens` from an empty cache as one batch, keeping the logits of every position.
fn decode_line(ctx: &mut Context, tokens: &[Token]) -> ember::Result<()> {
    ctx.reset();
    ctx.decode_all(tokens)
}

/// The logits after position `i`, refused when any is NaN or infinite: a broken forward
/// pass should be an error, not an id or a probability that looks like a result.
fn finite_logits(ctx: &Context, i: usize) -> ember::Result<&[f32]> {
    let logits = ctx.logits_ith(i)?;
    match logits.iter().position(|l| !l.is_finite()) {
        None => Ok(logits),
        Some(t) => Err(Error::InvalidArgument(format!(
            "the model computed a non-finite logit ({}) for token {t} at position {i}",
            logits[t]
        ))),
    }
}

/// `[id, ...]`: the argmax (ties to the lowest id, as greedy sampling does) at every
/// position of the line.
fn score_top1(ctx: &mut Context, tokens: &[Token]) -> ember::Result<String> {
    if tokens.is_empty() {
        return Ok("[]".into());
    }
    decode_line(ctx, tokens)?;
    let ids = (0..tokens.len())
        .map(|i| finite_logits(ctx, i).map(argmax))
        .collect::<ember::Result<Vec<Token>>>()?;
    Ok(json(&ids))
}

/// `[logprob, ...]`: ln p(token i+1 | tokens 0..=i) for every position but the last, the
/// log-softmax taken in f64 over the whole vocabulary so that a token far in the tail
/// keeps its digits.
fn score_logprobs(ctx: &mut Context, tokens: &[Token]) -> ember::Result<String> {
    if tokens.len() < 2 {
        return Ok("[]".into());
    }
    decode_line(ctx, tokens)?;
    let lps = (0..tokens.len() - 1)
        .map(|i| {
            let logits = finite_logits(ctx, i)?;
            let lp = log_softmax_at(logits, tokens[i + 1] as usize);
            // Rounded to the nearest multiple of 1e-6: its shortest decimal form (what
            // serde_json prints) then has at most 6 decimals.
            // `+ 0.0` turns -0 (a near-certain token) into 0.
            Ok((lp * 1e6).round() / 1e6 + 0.0)
        })
        .collect::<ember::Result<Vec<f64>>>()?;
    Ok(json(&lps))
}

/// `logits[t] - ln(sum(exp(logits)))` in f64, shifted by the maximum so no exp overflows.
fn log_softmax_at(logits: &[f32], t: usize) -> f64 {
    let max = logits
        .iter()
        .fold(f64::NEG_INFINITY, |m, &l| m.max(l as f64));
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    logits[t] as f64 - max - sum.ln()
}

/// A JSON array of numbers. Rust prints an f64 in its shortest round-tripping decimal form,
/// never with an exponent, which is valid JSON as it stands.
fn json<T: std::fmt::Display>(v: &[T]) -> String {
    let items: Vec<String> = v.iter().map(T::to_string).collect();
    format!("[{}]", items.join(","))
}
