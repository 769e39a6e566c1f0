//! `ember run -m FILE -p PROMPT [-n N] [--temp T] ...`: stream a generation to stdout.

use std::io::Write;
use std::path::PathBuf;

use ember::runtime::generate::{Control, GenerateParams};
use ember::{Context, ContextParams, Model, ModelParams, SamplerParams};

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF model.
    #[arg(short, long)]
    model: PathBuf,
    /// The prompt.
    #[arg(short, long)]
    prompt: String,
    /// Tokens to generate (0 = until end of generation).
    #[arg(short = 'n', long = "n-predict", default_value_t = 128)]
    n: usize,
    /// Temperature (0 = greedy).
    #[arg(long, default_value_t = 0.8)]
    temp: f32,
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    #[arg(long, default_value_t = 0.05)]
    min_p: f32,
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    #[arg(long, default_value_t = 64)]
    repeat_last_n: usize,
    #[arg(long, default_value_t = 0.0)]
    frequency_penalty: f32,
    #[arg(long, default_value_t = 0.0)]
    presence_penalty: f32,
    /// RNG seed.
    #[arg(short, long, default_value_t = 0x5EED)]
    seed: u64,
    /// Worker threads (0 = all cores).
    #[arg(short, long, default_value_t = 0)]
    threads: usize,
    /// Context size (0 = min(trained, 4096)).
    #[arg(short, long, default_value_t = 0)]
    ctx: usize,
    /// Stop when this text appears (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Drop old tokens instead of failing when the context fills up.
    #[arg(long)]
    context_shift: bool,
    /// Print the generated token ids on one line instead of text.
    #[arg(long)]
    ids: bool,
    /// Do not map special-token text in the prompt to special tokens.
    #[arg(long)]
    no_special: bool,
}

pub fn run(a: Args) -> ember::Result<()> {
    let model = Model::load(&a.model, &ModelParams::default())?;
    let mut ctx = Context::new(
        &model,
        ContextParams {
            n_ctx: a.ctx,
            n_threads: a.threads,
            ..Default::default()
        },
    )?;
    let params = GenerateParams {
        max_tokens: a.n,
        sampler: SamplerParams {
            temperature: a.temp,
            top_k: a.top_k,
            top_p: a.top_p,
            min_p: a.min_p,
            repeat_penalty: a.repeat_penalty,
            penalty_last_n: a.repeat_last_n,
            frequency_penalty: a.frequency_penalty,
            presence_penalty: a.presence_penalty,
            seed: a.seed,
            ..SamplerParams::default()
        },
        parse_special: !a.no_special,
        stop: a.stop.clone(),
        context_shift: a.context_shift,
        ..GenerateParams::default()
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let stats = if a.ids {
        let n_prompt = {
            let tok = model.tokenizer();
            tok.encode(&a.prompt, true, !a.no_special)?.len()
        };
        let s = ctx.generate(&a.prompt, &params, |_| Control::Continue)?;
        let ids: Vec<String> = ctx.tokens()[n_prompt..]
            .iter()
            .map(|t| t.to_string())
            .collect();
        let _ = writeln!(out, "{}", ids.join(","));
        s
    } else {
        let s = ctx.generate(&a.prompt, &params, |piece| {
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
            Control::Continue
        })?;
        let _ = writeln!(out);
        s
    };
    eprintln!(
        "\nprompt: {} tokens, {:.2} tok/s | generation: {} tokens, {:.2} tok/s | {} threads, kernels {}",
        stats.prompt_tokens,
        stats.prompt_tok_per_s(),
        stats.generated_tokens,
        stats.gen_tok_per_s(),
        ctx.params().n_threads,
        ctx.kernels_name()
    );
    Ok(())
}
