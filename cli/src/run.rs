//! `ember run -m FILE -p PROMPT [-n N] [--temp T] [--chat] ...`: stream a generation to
//! stdout. With `--chat` the prompt is a user message put through the chat template.

use std::io::Write;
use std::path::PathBuf;

use ember::runtime::generate::{Control, GenerateParams, GenerateStats};
use ember::{ChatParams, ChatSession, Context, ContextParams, Model, ModelParams, Sampler};

use crate::sampling_args::SamplingArgs;
use crate::template::load_template;

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
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Worker threads (0 = all cores).
    #[arg(short, long, default_value_t = 0)]
    threads: usize,
    /// KV cache type: f16, f32 or q8_0 (llama.cpp's -ctk/-ctv).
    #[arg(long = "cache-type", default_value = "f16")]
    cache_type: ember::KvType,
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
    /// Apply the chat template: the prompt is a user message, the output the reply.
    #[arg(long)]
    chat: bool,
    /// With --chat: a system message before the prompt.
    #[arg(long, requires = "chat")]
    system: Option<String>,
    /// With --chat: a Jinja template file to use instead of the model's.
    #[arg(long = "template", requires = "chat")]
    template: Option<PathBuf>,
}

pub fn run(a: Args) -> ember::Result<()> {
    let model = Model::load(&a.model, &ModelParams::default())?;
    let cp = ContextParams {
        n_ctx: a.ctx,
        n_threads: a.threads,
        kv_type: a.cache_type,
        ..Default::default()
    };
    let params = GenerateParams {
        max_tokens: a.n,
        sampler: a.sampling.params(),
        parse_special: !a.no_special,
        stop: a.stop.clone(),
        context_shift: a.context_shift,
        ..GenerateParams::default()
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut print = |piece: &str| {
        if !a.ids {
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
        }
        Control::Continue
    };
    let (stats, ctx_tokens, n_prompt, n_threads, kernels) = if a.chat {
        let t = load_template(&model, &a.model, a.template.as_deref())?;
        let mut s = ChatSession::with_template(&model, cp, t, ChatParams::default())?;
        if let Some(sys) = &a.system {
            s.add_message("system", sys);
        }
        s.add_message("user", &a.prompt);
        let mut sampler = Sampler::new(params.sampler.clone())?;
        let st = s.reply(&params, &mut sampler, &mut print)?;
        let g = GenerateStats {
            prompt_tokens: st.prompt_processed,
            generated_tokens: st.generated_tokens,
            prompt_time: st.prompt_time,
            gen_time: st.gen_time,
            stop_reason: st.stop_reason,
        };
        let c = s.context();
        (
            g,
            c.tokens().to_vec(),
            st.prompt_tokens,
            c.params().n_threads,
            c.kernels_name(),
        )
    } else {
        let mut ctx = Context::new(&model, cp)?;
        let n_prompt = model
            .tokenizer()
            .encode(&a.prompt, true, !a.no_special)?
            .len();
        let g = ctx.generate(&a.prompt, &params, &mut print)?;
        (
            g,
            ctx.tokens().to_vec(),
            n_prompt,
            ctx.params().n_threads,
            ctx.kernels_name(),
        )
    };
    if a.ids {
        let ids: Vec<String> = ctx_tokens[n_prompt..]
            .iter()
            .map(|t| t.to_string())
            .collect();
        let _ = writeln!(out, "{}", ids.join(","));
    } else {
        let _ = writeln!(out);
    }
    eprintln!(
        "\nprompt: {} tokens, {:.2} tok/s | generation: {} tokens, {:.2} tok/s | {} threads, kernels {}",
        stats.prompt_tokens,
        stats.prompt_tok_per_s(),
        stats.generated_tokens,
        stats.gen_tok_per_s(),
        n_threads,
        kernels
    );
    Ok(())
}
