//! Chat templates from GGUF metadata (`tokenizer.chat_template`), rendered as Hugging
//! Face transformers' `apply_chat_template` renders them, in a sandbox with bounded fuel,
//! recursion and output.

mod builtin;
mod pyjson;
mod python;
mod strftime;
mod template;

pub use serde_json::Value as Json;
pub use template::{message, ChatTemplate, RenderOptions, TemplateLimits, TemplateOrigin};

use crate::error::Result;
use crate::model::Model;

impl ChatTemplate {
    /// The template a chat with `model` uses: `source` when given, else the file's own,
    /// else a built-in chosen for the file's architecture ([`TemplateOrigin::Builtin`]).
    pub fn for_model(model: &Model, source: Option<&str>) -> Result<ChatTemplate> {
        let tok = model.tokenizer();
        let text = |t: Option<crate::tokenizer::Token>| {
            t.and_then(|t| tok.token_to_piece(t, true).ok())
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default()
        };
        let (bos, eos) = (text(tok.bos()), text(tok.eos()));
        match (source, model.chat_template()) {
            (Some(src), _) => ChatTemplate::new(src, &bos, &eos, TemplateOrigin::Given),
            (None, Some(src)) => ChatTemplate::new(src, &bos, &eos, TemplateOrigin::Model),
            (None, None) => {
                let (name, src) = builtin::for_model(model);
                ChatTemplate::new(src, &bos, &eos, TemplateOrigin::Builtin(name))
            }
        }
    }

    /// A built-in template by name (`chatml`, `gemma`, `llama3`), for tests and callers
    /// that want one explicitly.
    pub fn builtin(name: &str, bos_token: &str, eos_token: &str) -> Option<Result<ChatTemplate>> {
        let (name, src) = builtin::BUILTINS.iter().find(|(n, _)| *n == name)?;
        Some(ChatTemplate::new(
            src,
            bos_token,
            eos_token,
            TemplateOrigin::Builtin(name),
        ))
    }
}
