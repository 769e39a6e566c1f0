//! `ember bench -m FILE [-p 128] [-n 64] [-t N] [-r 5]`: prompt processing (pp) and token
//! generation (tg) speed, measured as llama-bench does: each test starts from an empty
//! context, runs once untimed to warm up, then `r` timed repetitions reported as
//! mean ± standard deviation of tokens per second.

use std::path::PathBuf;
use std::time::Instant;

use ember::{Context, ContextParams, Model, ModelParams, Token};

use crate::sys::{fmt_bytes, peak_rss_bytes};

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF model.
    #[arg(short, long)]
    model: PathBuf,
    /// Prompt length of the pp test (0 = skip).
    #[arg(short = 'p', long = "n-prompt", default_value_t = 128)]
    n_prompt: usize,
    /// Tokens of the tg test (0 = skip).
    #[arg(short = 'n', long = "n-gen", default_value_t = 64)]
    n_gen: usize,
    /// Worker threads (0 = all cores).
    #[arg(short, long, default_value_t = 0)]
    threads: usize,
    /// Timed repetitions.
    #[arg(short, long, default_value_t = 5)]
    reps: usize,
    /// Batch size for the prompt.
    #[arg(short, long, default_value_t = 512)]
    batch: usize,
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

pub fn run(a: Args) -> ember::Result<()> {
    let model = Model::load(&a.model, &ModelParams::default())?;
    let n_ctx = (a.n_prompt + a.n_gen).max(16);
    let mut ctx = Context::new(
        &model,
        ContextParams {
            n_ctx,
            n_batch: a.batch.max(1),
            n_threads: a.threads,
            ..Default::default()
        },
    )?;
    let n_vocab = model.n_vocab() as u64;
    // Arbitrary but fixed tokens, as llama-bench uses random ones: content does not change speed.
    let tokens: Vec<Token> = (0..a.n_prompt.max(a.n_gen) as u64)
        .map(|i| ((i * 2_654_435_761 + 17) % n_vocab) as Token)
        .collect();
    let name = a
        .model
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut rows = Vec::new();
    if a.n_prompt > 0 {
        let mut ts = Vec::new();
        for rep in 0..=a.reps {
            ctx.reset();
            let t0 = Instant::now();
            ctx.decode(&tokens[..a.n_prompt])?;
            let dt = t0.elapsed().as_secs_f64();
            if rep > 0 {
                ts.push(a.n_prompt as f64 / dt);
            }
        }
        rows.push((format!("pp{}", a.n_prompt), mean_sd(&ts)));
    }
    if a.n_gen > 0 {
        let mut ts = Vec::new();
        for rep in 0..=a.reps {
            ctx.reset();
            let t0 = Instant::now();
            for &t in &tokens[..a.n_gen] {
                ctx.decode(&[t])?;
            }
            let dt = t0.elapsed().as_secs_f64();
            if rep > 0 {
                ts.push(a.n_gen as f64 / dt);
            }
        }
        rows.push((format!("tg{}", a.n_gen), mean_sd(&ts)));
    }
    let peak = peak_rss_bytes();
    let threads = ctx.params().n_threads;
    if a.json {
        for (test, (mean, sd)) in &rows {
            println!(
                "{{\"model\":\"{}\",\"test\":\"{}\",\"threads\":{},\"reps\":{},\"avg_ts\":{:.3},\"stddev_ts\":{:.3},\"peak_rss\":{},\"kernels\":\"{}\"}}",
                name.replace('"', "'"),
                test,
                threads,
                a.reps,
                mean,
                sd,
                peak.unwrap_or(0),
                ctx.kernels_name()
            );
        }
    } else {
        println!("| model | size | params | threads | kernels | test | t/s |");
        println!("| --- | ---: | ---: | ---: | --- | ---: | ---: |");
        for (test, (mean, sd)) in &rows {
            println!(
                "| {} | {} | {:.2} M | {} | {} | {} | {:.2} ± {:.2} |",
                name,
                fmt_bytes(model.size_bytes()),
                model.n_params() as f64 / 1e6,
                threads,
                ctx.kernels_name(),
                test,
                mean,
                sd
            );
        }
        if let Some(p) = peak {
            println!("\npeak resident memory: {}", fmt_bytes(p));
        }
    }
    Ok(())
}
