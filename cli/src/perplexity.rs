//! `ember perplexity -m FILE -f TEXT [--ctx N]`, computed as llama-perplexity does.

use std::path::PathBuf;

use ember::runtime::perplexity::perplexity;
use ember::{Error, Model, ModelParams};

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF model.
    #[arg(short, long)]
    model: PathBuf,
    /// The text file.
    #[arg(short, long)]
    file: PathBuf,
    /// Tokens per chunk.
    #[arg(short, long, default_value_t = 512)]
    ctx: usize,
    /// Worker threads (0 = all cores).
    #[arg(short, long, default_value_t = 0)]
    threads: usize,
}

pub fn run(a: Args) -> ember::Result<()> {
    let model = Model::load(&a.model, &ModelParams::default())?;
    let bytes = std::fs::read(&a.file).map_err(|e| Error::Io {
        path: a.file.display().to_string(),
        source: e,
    })?;
    let tok = model.tokenizer();
    let tokens = tok.encode_bytes(&bytes, true, false)?;
    let bos = if tok.add_bos() { tok.bos() } else { None };
    let t0 = std::time::Instant::now();
    let r = perplexity(&model, &tokens, a.ctx, a.threads, bos)?;
    let chunks: Vec<String> = r
        .chunks
        .iter()
        .enumerate()
        .map(|(i, p)| format!("[{}]{:.4}", i + 1, p))
        .collect();
    println!("{}", chunks.join(","));
    println!(
        "Final estimate: PPL = {:.4} ({} chunks of {} tokens, {} tokens scored, {:.1} s)",
        r.ppl,
        r.chunks.len(),
        a.ctx,
        r.n_scored,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
