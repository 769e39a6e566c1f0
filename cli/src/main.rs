//! The `ember` command-line program.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod chat;
mod eval;
mod explain;
mod inspect;
mod perplexity;
mod quantize;
mod run;
mod sampling_args;
mod sys;
mod template;
mod tokenize;

#[derive(Parser)]
#[command(
    name = "ember",
    version,
    about = "Run large language models on the device (GGUF)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a GGUF file's architecture, hyper-parameters, tokenizer and tensors.
    Inspect(inspect::Args),
    /// Split text into a model's tokens, as llama.cpp's llama-tokenize does.
    Tokenize(tokenize::Args),
    /// Generate text from a prompt, streamed to stdout.
    Run(run::Args),
    /// Chat with a model in the terminal, through its chat template.
    Chat(chat::Args),
    /// Print the prompt a chat template makes of a conversation (JSON).
    Template(template::Args),
    /// Perplexity of a text file, computed as llama-perplexity does.
    Perplexity(perplexity::Args),
    /// Teacher-forced top-1 ids or log-probabilities of every line of a text file (JSON).
    Eval(eval::Args),
    /// Walk through a model's stages on a prompt, with its real numbers (and pictures).
    Explain(explain::Args),
    /// Prompt and generation speed, measured as llama-bench does.
    Bench(bench::Args),
    /// Requantize a model's weight matrices to IQ4_NL or IQ4_XS, as llama-quantize does.
    Quantize(quantize::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(a) => inspect::run(a),
        Command::Tokenize(a) => tokenize::run(a),
        Command::Run(a) => run::run(a),
        Command::Chat(a) => chat::run(a),
        Command::Template(a) => template::run(a),
        Command::Perplexity(a) => perplexity::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Explain(a) => explain::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Quantize(a) => quantize::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ember: {e}");
            ExitCode::from(1)
        }
    }
}
