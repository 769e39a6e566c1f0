//! The Rust API in a dozen lines: load a model, make a context, stream a generation.
//! Usage: cargo run --release --example generate -- MODEL "PROMPT"
use std::io::Write;

use ember::{Context, ContextParams, Control, GenerateParams, Model, ModelParams};

fn main() -> ember::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: generate MODEL PROMPT");
    let prompt = args
        .next()
        .unwrap_or_else(|| "The capital of France is".into());

    // One model (mmap, Send + Sync) can back any number of contexts.
    let model = Model::load(path, &ModelParams::default())?;
    let mut ctx = Context::new(&model, ContextParams::default())?;
    let mut params = GenerateParams {
        max_tokens: 64,
        ..Default::default()
    };
    params.sampler.temperature = 0.0; // greedy

    let stats = ctx.generate(&prompt, &params, |piece| {
        print!("{piece}");
        let _ = std::io::stdout().flush();
        Control::Continue
    })?;
    eprintln!(
        "\n{} prompt tokens, {} generated, stopped by {:?}",
        stats.prompt_tokens, stats.generated_tokens, stats.stop_reason
    );
    Ok(())
}
