//! `ember chat -m FILE [--system TEXT] [--template T.jinja] [--temp T] ...`: an interactive
//! chat in the terminal. Replies stream as they are generated, with their speed after
//! each; the conversation (and its KV cache) carries over from turn to turn. `/reset`
//! starts again (keeping the system prompt), `/exit` or Ctrl-D quits, and Ctrl-C stops the
//! reply being written, not the program.

use std::io::Write;
use std::path::PathBuf;

use ember::runtime::generate::{Control, GenerateParams};
use ember::{ChatParams, ChatSession, ContextParams, Error, Model, ModelParams, Sampler};
use rustyline::error::ReadlineError;

use crate::sampling_args::SamplingArgs;
use crate::template::load_template;

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF model.
    #[arg(short, long)]
    model: PathBuf,
    /// The system prompt.
    #[arg(long)]
    system: Option<String>,
    /// A Jinja template file to use instead of the model's.
    #[arg(long = "template")]
    template: Option<PathBuf>,
    /// Most tokens per reply (0 = until the model ends its turn or the context is full).
    #[arg(short = 'n', long = "n-predict", default_value_t = 0)]
    n: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Worker threads (0 = all cores).
    #[arg(short, long, default_value_t = 0)]
    threads: usize,
    /// Context size (0 = min(trained, 4096)); old turns are dropped when it fills.
    #[arg(short, long, default_value_t = 0)]
    ctx: usize,
}

fn readline_error(e: ReadlineError) -> Error {
    Error::Io {
        path: "terminal".into(),
        source: std::io::Error::other(e.to_string()),
    }
}

pub fn run(a: Args) -> ember::Result<()> {
    let model = Model::load(&a.model, &ModelParams::default())?;
    let template = load_template(&model, &a.model, a.template.as_deref())?;
    let cp = ContextParams {
        n_ctx: a.ctx,
        n_threads: a.threads,
        ..Default::default()
    };
    let mut session = ChatSession::with_template(&model, cp, template, ChatParams::default())?;
    if let Some(sys) = &a.system {
        session.add_message("system", sys);
    }
    // Ctrl-C while a reply is written stops that reply. While a line is being edited the
    // terminal is in raw mode and Ctrl-C reaches rustyline as a key instead.
    let abort = session.abort_handle();
    ctrlc::set_handler(move || abort.abort()).map_err(|e| Error::Io {
        path: "SIGINT handler".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let params = GenerateParams {
        max_tokens: a.n,
        sampler: a.sampling.params(),
        ..GenerateParams::default()
    };
    let mut sampler = Sampler::new(params.sampler.clone())?;
    let mut rl = rustyline::DefaultEditor::new().map_err(readline_error)?;
    eprintln!(
        "ember chat: {} (n_ctx {}). /reset starts over, /exit quits, Ctrl-C stops a reply.",
        a.model.display(),
        session.context().n_ctx()
    );
    loop {
        let line = match rl.readline("> ") {
            Ok(line) => line,
            // Ctrl-C on the prompt clears the line, as in a shell.
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(readline_error(e)),
        };
        let text = line.trim();
        match text {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                session.reset();
                println!("(conversation reset)");
                continue;
            }
            _ => {}
        }
        let _ = rl.add_history_entry(text);
        session.add_message("user", text);
        let mut out = std::io::stdout().lock();
        let result = session.reply(&params, &mut sampler, |piece| {
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
            Control::Continue
        });
        drop(out);
        match result {
            Ok(st) => {
                println!();
                eprintln!(
                    "[{} tokens, {:.1} tok/s; prompt: {} new of {} tokens]",
                    st.generated_tokens,
                    st.gen_tok_per_s(),
                    st.prompt_processed,
                    st.prompt_tokens
                );
            }
            Err(Error::Aborted) => println!("\n[interrupted]"),
            // A template or context error ends this turn, not the chat.
            Err(e) => eprintln!("\nember: {e}"),
        }
    }
    Ok(())
}
