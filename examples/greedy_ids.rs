//! Greedy continuation from token ids (a debugging aid that needs no tokenizer).
//! Usage: cargo run --release --example greedy_ids -- MODEL N ID,ID,...
use ember::{Context, ContextParams, Model, ModelParams};

fn main() -> ember::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let model = Model::load(&args[1], &ModelParams::default())?;
    let n: usize = args[2].parse().unwrap_or(16);
    let ids: Vec<u32> = args[3]
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let mut ctx = Context::new(
        &model,
        ContextParams {
            n_ctx: 512,
            ..Default::default()
        },
    )?;
    let t0 = std::time::Instant::now();
    ctx.decode(&ids)?;
    let t1 = std::time::Instant::now();
    let mut out = Vec::new();
    for _ in 0..n {
        let l = ctx.logits();
        let best = (0..l.len())
            .max_by(|&a, &b| l[a].total_cmp(&l[b]))
            .unwrap_or(0) as u32;
        out.push(best);
        ctx.decode(&[best])?;
    }
    let t2 = std::time::Instant::now();
    println!(
        "{}",
        out.iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    eprintln!(
        "prompt {:.1} tok/s, gen {:.1} tok/s ({})",
        ids.len() as f64 / (t1 - t0).as_secs_f64(),
        n as f64 / (t2 - t1).as_secs_f64(),
        ctx.kernels_name()
    );
    Ok(())
}
