//! `ember bench -m FILE [-p 128] [-n 64] [-d 0] [-t N] [-r 5]`: prompt processing (pp) and
//! token generation (tg) speed, measured as llama-bench does. `-p`, `-n`, `-d` and `-t`
//! take comma lists, and every combination is a test. Each test starts from a context
//! holding DEPTH tokens (0: empty), runs once untimed to warm up, then `r` timed
//! repetitions reported as mean ± standard deviation of tokens per second.
//!
//! The depth is filled once per thread count and depth, untimed; after each repetition the
//! cache is truncated back to it, which leaves exactly the state a fresh fill would (a
//! prefix's keys and values do not depend on what came after it), so deep tests do not
//! pay for thousands of prompt tokens per repetition.

use std::path::PathBuf;
use std::time::Instant;

use ember::{Context, ContextParams, Model, ModelParams, Token};

use crate::sys::{fmt_bytes, peak_rss_bytes};

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF model.
    #[arg(short, long)]
    model: PathBuf,
    /// Prompt lengths of the pp tests (0 = none), comma-separated.
    #[arg(
        short = 'p',
        long = "n-prompt",
        value_delimiter = ',',
        default_value = "128"
    )]
    n_prompt: Vec<usize>,
    /// Tokens of the tg tests (0 = none), comma-separated.
    #[arg(
        short = 'n',
        long = "n-gen",
        value_delimiter = ',',
        default_value = "64"
    )]
    n_gen: Vec<usize>,
    /// Tokens already in the cache before each test, comma-separated.
    #[arg(
        short = 'd',
        long = "n-depth",
        value_delimiter = ',',
        default_value = "0"
    )]
    n_depth: Vec<usize>,
    /// Worker threads (0 = all cores), comma-separated.
    #[arg(short, long, value_delimiter = ',', default_value = "0")]
    threads: Vec<usize>,
    /// Timed repetitions.
    #[arg(short, long, default_value_t = 5)]
    reps: usize,
    /// Batch size for the prompt (and for filling the depth).
    #[arg(short, long, default_value_t = 512)]
    batch: usize,
    /// KV cache type: f16, f32 or q8_0 (llama-bench's -ctk/-ctv).
    #[arg(long = "cache-type", default_value = "f16")]
    cache_type: ember::KvType,
    /// Print one JSON object per test instead of a table.
    #[arg(long)]
    json: bool,
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// One measured test: `pp`/`tg` of `n` tokens after `depth`, at `threads`.
struct Row {
    test: String,
    n_prompt: usize,
    n_gen: usize,
    depth: usize,
    threads: usize,
    kernels: &'static str,
    mean: f64,
    sd: f64,
}

/// Arbitrary but fixed tokens, as llama-bench uses random ones: content does not change
/// speed. Kept away from the ids a tokenizer treats specially by spreading over the vocab.
fn tokens(n: usize, n_vocab: usize) -> Vec<Token> {
    (0..n as u64)
        .map(|i| ((i * 2_654_435_761 + 17) % n_vocab as u64) as Token)
        .collect()
}

/// Times `reps` repetitions (after one warm-up) of `body`, which must return the context to
/// `depth` tokens itself; returns tokens per second per repetition.
fn time_reps(
    ctx: &mut Context,
    depth: usize,
    reps: usize,
    n: usize,
    mut body: impl FnMut(&mut Context) -> ember::Result<()>,
) -> ember::Result<Vec<f64>> {
    let mut ts = Vec::with_capacity(reps);
    for rep in 0..=reps {
        ctx.truncate(depth);
        let t0 = Instant::now();
        body(ctx)?;
        let dt = t0.elapsed().as_secs_f64();
        if rep > 0 {
            ts.push(n as f64 / dt);
        }
    }
    ctx.truncate(depth);
    Ok(ts)
}

fn bench_threads(
    model: &Model,
    a: &Args,
    threads: usize,
    rows: &mut Vec<Row>,
) -> ember::Result<()> {
    let max = |v: &[usize]| v.iter().copied().max().unwrap_or(0);
    let n_ctx = (max(&a.n_depth) + max(&a.n_prompt).max(max(&a.n_gen))).max(16);
    let mut ctx = Context::new(
        model,
        ContextParams {
            n_ctx,
            n_batch: a.batch.max(1),
            n_threads: threads,
            kv_type: a.cache_type,
            ..Default::default()
        },
    )?;
    let toks = tokens(n_ctx, model.n_vocab());
    let (threads, kernels) = (ctx.params().n_threads, ctx.kernels_name());
    let mut depths = a.n_depth.clone();
    depths.sort_unstable();
    depths.dedup();
    for &depth in &depths {
        // Deeper fills extend the previous one: the cache keeps its prefix.
        let have = ctx.n_past().min(depth);
        ctx.truncate(have);
        if depth > have {
            ctx.decode(&toks[have..depth])?;
        }
        let mut push = |test: String, n_prompt, n_gen, ts: Vec<f64>| {
            let (mean, sd) = mean_sd(&ts);
            let test = if depth > 0 {
                format!("{test} @ d{depth}")
            } else {
                test
            };
            rows.push(Row {
                test,
                n_prompt,
                n_gen,
                depth,
                threads,
                kernels,
                mean,
                sd,
            });
        };
        for &p in a.n_prompt.iter().filter(|&&p| p > 0) {
            let prompt = &toks[depth..depth + p];
            let ts = time_reps(&mut ctx, depth, a.reps, p, |c| c.decode(prompt))?;
            push(format!("pp{p}"), p, 0, ts);
        }
        for &n in a.n_gen.iter().filter(|&&n| n > 0) {
            let gen = &toks[depth..depth + n];
            let ts = time_reps(&mut ctx, depth, a.reps, n, |c| {
                gen.iter().try_for_each(|&t| c.decode(&[t]))
            })?;
            push(format!("tg{n}"), 0, n, ts);
        }
    }
    Ok(())
}

pub fn run(a: Args) -> ember::Result<()> {
    let model = Model::load(&a.model, &ModelParams::default())?;
    let name = a
        .model
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut rows = Vec::new();
    for &t in &a.threads {
        bench_threads(&model, &a, t, &mut rows)?;
    }
    let peak = peak_rss_bytes();
    if a.json {
        for r in &rows {
            println!(
                "{{\"model\":\"{}\",\"test\":\"{}\",\"n_prompt\":{},\"n_gen\":{},\"n_depth\":{},\"threads\":{},\"reps\":{},\"avg_ts\":{:.3},\"stddev_ts\":{:.3},\"peak_rss\":{},\"kernels\":\"{}\"}}",
                name.replace('"', "'"),
                r.test,
                r.n_prompt,
                r.n_gen,
                r.depth,
                r.threads,
                a.reps,
                r.mean,
                r.sd,
                peak.unwrap_or(0),
                r.kernels
            );
        }
    } else {
        println!("| model | size | params | threads | kernels | test | t/s |");
        println!("| --- | ---: | ---: | ---: | --- | ---: | ---: |");
        for r in &rows {
            println!(
                "| {} | {} | {:.2} M | {} | {} | {} | {:.2} ± {:.2} |",
                name,
                fmt_bytes(model.size_bytes()),
                model.n_params() as f64 / 1e6,
                r.threads,
                r.kernels,
                r.test,
                r.mean,
                r.sd
            );
        }
        if let Some(p) = peak {
            println!("\npeak resident memory: {}", fmt_bytes(p));
        }
    }
    Ok(())
}
