//! `ember template -m FILE [--template T.jinja] -f MESSAGES.json [--no-generation-prompt]`:
//! prints the prompt the chat template makes of a conversation, exactly (no newline added).
//!
//! MESSAGES.json is an array of messages (`{"role": ..., "content": ...}`, plus any field
//! a template reads: content parts, tool_calls...), or an object with "messages" and
//! optionally "tools", other keys being more template variables (`enable_thinking`).

use std::path::{Path, PathBuf};

use ember::chat::{ChatTemplate, Json, RenderOptions, TemplateOrigin};
use ember::{Error, Model, ModelParams};

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF model whose template (and BOS/EOS tokens) to use.
    #[arg(short, long)]
    model: PathBuf,
    /// A Jinja template file to use instead of the model's.
    #[arg(long = "template")]
    template: Option<PathBuf>,
    /// The conversation (JSON).
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Do not end with the header of an assistant turn.
    #[arg(long)]
    no_generation_prompt: bool,
    /// Pin the "now" of strftime_now (Unix seconds, UTC) for reproducible output.
    #[arg(long)]
    now: Option<i64>,
}

fn read(path: &Path) -> ember::Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::Io {
        path: path.display().to_string(),
        source: e,
    })
}

/// The template a command renders with: `--template FILE`, else the model's, else the
/// built-in for its architecture (said on stderr, as the library returns it).
pub fn load_template(
    model: &Model,
    model_path: &Path,
    file: Option<&Path>,
) -> ember::Result<ChatTemplate> {
    let source = file.map(read).transpose()?;
    let t = ChatTemplate::for_model(model, source.as_deref())?;
    if let TemplateOrigin::Builtin(name) = t.origin() {
        eprintln!(
            "ember: {} has no chat template; using the built-in '{name}' template for its \
             architecture ({})",
            model_path.display(),
            model.config().arch_name
        );
    }
    Ok(t)
}

pub fn run(a: Args) -> ember::Result<()> {
    let model = Model::load(&a.model, &ModelParams::default())?;
    let tmpl = load_template(&model, &a.model, a.template.as_deref())?;
    let text = read(&a.file)?;
    let bad = |e: serde_json::Error| Error::InvalidArgument(format!("{}: {e}", a.file.display()));
    let doc: Json = serde_json::from_str(&text).map_err(bad)?;
    let (messages, tools, extra) = match doc {
        Json::Array(m) => (m, None, serde_json::Map::new()),
        Json::Object(mut o) => {
            let messages = match o.remove("messages") {
                Some(Json::Array(m)) => m,
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "{}: an object needs a \"messages\" array",
                        a.file.display()
                    )))
                }
            };
            let tools = match o.remove("tools") {
                None | Some(Json::Null) => None,
                Some(Json::Array(t)) => Some(t),
                Some(_) => {
                    return Err(Error::InvalidArgument(format!(
                        "{}: \"tools\" is not an array",
                        a.file.display()
                    )))
                }
            };
            (messages, tools, o)
        }
        _ => {
            return Err(Error::InvalidArgument(format!(
                "{}: expected an array of messages or an object with \"messages\"",
                a.file.display()
            )))
        }
    };
    let opts = RenderOptions {
        add_generation_prompt: !a.no_generation_prompt,
        tools: tools.as_deref(),
        extra: Some(&extra),
        now: a.now,
    };
    crate::sys::print_stdout(&tmpl.render(&messages, &opts)?)
}
