//! Perplexity from a file of comma-separated token ids (a debugging aid).
//! Usage: cargo run --release --example ppl_ids -- MODEL IDS_FILE N_CTX [BOS]
use ember::runtime::perplexity::perplexity;
use ember::{Model, ModelParams};

fn main() -> ember::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let model = Model::load(&a[1], &ModelParams::default())?;
    let text = std::fs::read_to_string(&a[2]).map_err(|e| ember::Error::Io {
        path: a[2].clone(),
        source: e,
    })?;
    let ids: Vec<u32> = text
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let n_ctx: usize = a[3].parse().unwrap_or(128);
    let bos = a.get(4).and_then(|s| s.parse().ok());
    let r = perplexity(&model, &ids, n_ctx, 2, bos)?;
    let chunks: Vec<String> = r
        .chunks
        .iter()
        .enumerate()
        .map(|(i, p)| format!("[{}]{:.4}", i + 1, p))
        .collect();
    println!(
        "{}\nPPL = {:.4} over {} tokens",
        chunks.join(","),
        r.ppl,
        r.n_scored
    );
    Ok(())
}
