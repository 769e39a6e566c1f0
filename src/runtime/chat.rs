//! A chat session: messages rendered with the model's chat template, replies generated
//! into a context that keeps its KV cache from turn to turn.
//!
//! Each turn renders the whole conversation, tokenizes it and compares it with the tokens
//! already in the cache: only what follows the common prefix is processed, so a turn
//! costs its new text, not the conversation. When the conversation no longer fits, the
//! oldest turns are dropped (system messages stay); the cache is kept up to the first
//! change, which is usually the end of the system prompt.

use std::time::Duration;

use crate::chat::{message, ChatTemplate, Json, RenderOptions};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::sampling::Sampler;
use crate::tokenizer::{EncodeOptions, Token};

use super::context::{AbortHandle, Context, ContextParams};
use super::generate::{Control, GenerateParams, StopReason};

/// How to make a chat session.
#[derive(Clone, Debug, Default)]
pub struct ChatParams {
    /// A Jinja template to use instead of the model's (`--template FILE`).
    pub template: Option<String>,
    /// The "now" of `strftime_now` (Unix seconds, read as UTC); `None` = the clock.
    pub now: Option<i64>,
    /// Tools (JSON schemas) the template describes to the model.
    pub tools: Vec<Json>,
    /// More template variables (`enable_thinking`...).
    pub extra: serde_json::Map<String, Json>,
}

/// What one turn did.
#[derive(Clone, Debug, Default)]
pub struct ChatStats {
    /// Tokens of the whole rendered conversation.
    pub prompt_tokens: usize,
    /// Of those, the tokens already in the cache from earlier turns (not processed again).
    pub prompt_reused: usize,
    /// Tokens processed this turn: `prompt_tokens - prompt_reused`.
    pub prompt_processed: usize,
    /// Messages dropped from the start of the conversation to make it fit.
    pub dropped_messages: usize,
    pub generated_tokens: usize,
    pub prompt_time: Duration,
    pub gen_time: Duration,
    pub stop_reason: Option<StopReason>,
}

impl ChatStats {
    pub fn gen_tok_per_s(&self) -> f64 {
        self.generated_tokens as f64 / self.gen_time.as_secs_f64().max(1e-9)
    }
}

/// A conversation with a model through its chat template.
pub struct ChatSession {
    ctx: Context,
    template: ChatTemplate,
    messages: Vec<Json>,
    params: ChatParams,
}

/// The length of the common prefix of two token lists.
fn common_prefix(a: &[Token], b: &[Token]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn role_of(m: &Json) -> &str {
    m.get("role").and_then(Json::as_str).unwrap_or("")
}

impl ChatSession {
    /// A session with its own context. The template is `params.template`, else the
    /// model's, else a built-in for its architecture (see [`ChatTemplate::for_model`]).
    pub fn new(
        model: &Model,
        ctx_params: ContextParams,
        params: ChatParams,
    ) -> Result<ChatSession> {
        let template = ChatTemplate::for_model(model, params.template.as_deref())?;
        Self::with_template(model, ctx_params, template, params)
    }

    /// A session with a template already made (`params.template` is not used).
    pub fn with_template(
        model: &Model,
        ctx_params: ContextParams,
        template: ChatTemplate,
        params: ChatParams,
    ) -> Result<ChatSession> {
        Ok(ChatSession {
            ctx: Context::new(model, ctx_params)?,
            template,
            messages: Vec::new(),
            params,
        })
    }

    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Stops a running [`ChatSession::reply`] from any thread.
    pub fn abort_handle(&self) -> AbortHandle {
        self.ctx.abort_handle()
    }

    pub fn messages(&self) -> &[Json] {
        &self.messages
    }

    /// Appends a message with a text content.
    pub fn add_message(&mut self, role: &str, content: &str) {
        self.messages.push(message(role, content));
    }

    /// Appends a message given as JSON (content parts, tool calls, tool results...): an
    /// object with a string `role`.
    pub fn push_message(&mut self, m: Json) -> Result<()> {
        if !m.is_object() || !m.get("role").is_some_and(Json::is_string) {
            return Err(Error::InvalidArgument(
                "a message is a JSON object with a string \"role\"".into(),
            ));
        }
        self.messages.push(m);
        Ok(())
    }

    /// Starts a new conversation: every message but the system messages is forgotten.
    /// The cache is kept: the next turn reuses the system prompt's part of it.
    pub fn reset(&mut self) {
        self.messages.retain(|m| role_of(m) == "system");
    }

    /// The conversation rendered by the template.
    pub fn render(&self, add_generation_prompt: bool) -> Result<String> {
        self.render_messages(&self.messages, add_generation_prompt)
    }

    fn render_messages(&self, messages: &[Json], add_generation_prompt: bool) -> Result<String> {
        let opts = RenderOptions {
            add_generation_prompt,
            tools: (!self.params.tools.is_empty()).then_some(self.params.tools.as_slice()),
            extra: Some(&self.params.extra),
            now: self.params.now,
        };
        self.template.render(messages, &opts)
    }

    /// The tokens of a rendered prompt. A template that writes the BOS token itself gets
    /// no second one from the tokenizer.
    fn tokenize(&self, text: &str) -> Result<Vec<Token>> {
        let tok = self.ctx.model().tokenizer();
        let bos = self.template.bos_token();
        let opts = EncodeOptions {
            add_bos: (!bos.is_empty() && text.starts_with(bos)).then_some(false),
            add_eos: Some(false),
            parse_special: true,
        };
        tok.encode_with(text, &opts)
    }

    /// Drops the oldest turn after the system messages: the first non-system message and
    /// whatever follows it up to the next user message. Returns how many messages went:
    /// 0 when only the last user turn is left.
    fn drop_oldest_turn(messages: &mut Vec<Json>) -> usize {
        let Some(first) = messages.iter().position(|m| role_of(m) != "system") else {
            return 0;
        };
        let next_user = messages[first + 1..]
            .iter()
            .position(|m| role_of(m) == "user")
            .map(|i| first + 1 + i);
        match next_user {
            Some(end) => {
                messages.drain(first..end);
                end - first
            }
            None => 0,
        }
    }

    /// The prompt tokens for this turn, dropping old turns until they fit with `room`
    /// positions left for the reply.
    fn fit_prompt(&mut self, room: usize) -> Result<(Vec<Token>, usize)> {
        let n_ctx = self.ctx.n_ctx();
        let mut dropped = 0;
        loop {
            let tokens = self.tokenize(&self.render_messages(&self.messages, true)?)?;
            if tokens.len() + room <= n_ctx {
                return Ok((tokens, dropped));
            }
            let mut fewer = self.messages.clone();
            let n = Self::drop_oldest_turn(&mut fewer);
            if n == 0 {
                // Nothing left to drop: go on with less room if the prompt fits at all.
                if tokens.len() < n_ctx {
                    return Ok((tokens, dropped));
                }
                return Err(Error::ContextFull {
                    needed: tokens.len() + 1,
                    n_ctx,
                });
            }
            self.messages = fewer;
            dropped += n;
        }
    }

    /// Generates the assistant's reply to the conversation, streaming it to `on_piece` in
    /// whole UTF-8 pieces, and appends it to the messages. `params.max_tokens` bounds the
    /// reply (0: until the end of generation or of the context); `params.stop` stops it;
    /// the template's end-of-turn token (`<|im_end|>`, `<end_of_turn>`, `<|eot_id|>`)
    /// ends it. `add_special`, `context_shift` and `n_keep` do not apply: the session
    /// manages the context. After an abort the text streamed so far is kept as the
    /// reply, and [`Error::Aborted`] is returned.
    pub fn reply(
        &mut self,
        params: &GenerateParams,
        sampler: &mut Sampler,
        mut on_piece: impl FnMut(&str) -> Control,
    ) -> Result<ChatStats> {
        if self.messages.is_empty() {
            return Err(Error::InvalidArgument(
                "the conversation has no messages".into(),
            ));
        }
        let n_ctx = self.ctx.n_ctx();
        // Keep room for a reply: all of max_tokens when it is small, else a quarter of
        // the context.
        let room = match params.max_tokens {
            0 => n_ctx / 4,
            n => n.min(n_ctx / 2),
        };
        let (tokens, dropped) = self.fit_prompt(room)?;
        let mut reused = common_prefix(self.ctx.tokens(), &tokens);
        if reused == tokens.len() {
            // Everything is cached, but the logits after the last token are not kept:
            // process that one again.
            reused -= 1;
        }
        self.ctx.truncate(reused);
        for &t in &tokens[..reused] {
            sampler.accept(t);
        }
        let left = n_ctx - tokens.len();
        let gp = GenerateParams {
            max_tokens: if params.max_tokens == 0 {
                left
            } else {
                params.max_tokens.min(left)
            },
            add_special: false,
            context_shift: false,
            n_keep: 0,
            ..params.clone()
        };
        let mut reply = String::new();
        let result = self
            .ctx
            .generate_tokens(&tokens[reused..], &gp, sampler, |piece| {
                reply.push_str(piece);
                on_piece(piece)
            });
        if matches!(result, Ok(_) | Err(Error::Aborted)) {
            self.messages.push(message("assistant", &reply));
        }
        let g = result?;
        Ok(ChatStats {
            prompt_tokens: tokens.len(),
            prompt_reused: reused,
            prompt_processed: tokens.len() - reused,
            dropped_messages: dropped,
            generated_tokens: g.generated_tokens,
            prompt_time: g.prompt_time,
            gen_time: g.gen_time,
            stop_reason: g.stop_reason,
        })
    }
}
