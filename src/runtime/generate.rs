//! Text in, streamed text out: tokenize, prefill, then sample and decode one token at a
//! time, handing whole UTF-8 pieces to a callback until an end-of-generation token, a stop
//! string, the token limit, or the callback says stop.
//!
//! Everything the loop needs is allocated before the first token is sampled, so the
//! generation loop itself does not touch the heap.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::sampling::{Sampler, SamplerParams};
use crate::tokenizer::{EncodeOptions, StreamDecoder, Token};

use super::context::Context;

/// What the streaming callback wants next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    Continue,
    Stop,
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced an end-of-generation token.
    EndOfGeneration,
    /// `max_tokens` were generated.
    MaxTokens,
    /// A stop string appeared (it is not part of the output).
    StopString,
    /// The callback returned [`Control::Stop`].
    Callback,
}

/// Settings of one generation.
#[derive(Clone, Debug)]
pub struct GenerateParams {
    /// Most tokens to generate (0 = until end of generation or the context is full).
    pub max_tokens: usize,
    pub sampler: SamplerParams,
    /// Add BOS/EOS as the model's metadata says (only when the context is empty).
    pub add_special: bool,
    /// Treat special-token text in the prompt (`<|im_start|>`...) as those tokens.
    pub parse_special: bool,
    /// Stop when any of these appears in the output; the stop string is not emitted.
    pub stop: Vec<String>,
    /// When the context fills up, drop the older half of the conversation (after the
    /// first `n_keep` tokens) instead of failing with [`Error::ContextFull`].
    pub context_shift: bool,
    /// Tokens at the start never dropped by a context shift.
    pub n_keep: usize,
    /// Render special tokens in the output text.
    pub render_special: bool,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            max_tokens: 256,
            sampler: SamplerParams::default(),
            add_special: true,
            parse_special: true,
            stop: Vec::new(),
            context_shift: false,
            n_keep: 0,
            render_special: false,
        }
    }
}

/// What a generation did.
#[derive(Clone, Debug, Default)]
pub struct GenerateStats {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub prompt_time: Duration,
    pub gen_time: Duration,
    pub stop_reason: Option<StopReason>,
}

impl GenerateStats {
    pub fn prompt_tok_per_s(&self) -> f64 {
        self.prompt_tokens as f64 / self.prompt_time.as_secs_f64().max(1e-9)
    }

    pub fn gen_tok_per_s(&self) -> f64 {
        self.generated_tokens as f64 / self.gen_time.as_secs_f64().max(1e-9)
    }
}

/// Holds back output that could be the start of a stop string.
struct StopFilter<'a> {
    stops: &'a [String],
    pending: String,
    hit: bool,
}

impl StopFilter<'_> {
    /// Adds `piece`; calls `emit` with text that can no longer be part of a stop string.
    fn push(&mut self, piece: &str, emit: &mut impl FnMut(&str) -> Control) -> Control {
        if self.stops.is_empty() {
            return emit(piece);
        }
        self.pending.push_str(piece);
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min()
        {
            self.hit = true;
            if at > 0 {
                emit(&self.pending[..at]);
            }
            self.pending.clear();
            return Control::Stop;
        }
        // The longest tail of `pending` that starts some stop string must wait.
        let mut keep_from = self.pending.len();
        for (i, _) in self.pending.char_indices() {
            let tail = &self.pending[i..];
            if self.stops.iter().any(|s| s.starts_with(tail)) {
                keep_from = i;
                break;
            }
        }
        let mut ctl = Control::Continue;
        if keep_from > 0 {
            ctl = emit(&self.pending[..keep_from]);
            self.pending.drain(..keep_from);
        }
        ctl
    }

    fn flush(&mut self, emit: &mut impl FnMut(&str) -> Control) {
        if !self.pending.is_empty() && !self.hit {
            emit(&self.pending);
        }
        self.pending.clear();
    }
}

impl Context {
    /// Generates a continuation of `prompt`, streaming whole-UTF-8 pieces to `on_piece`.
    pub fn generate(
        &mut self,
        prompt: &str,
        params: &GenerateParams,
        on_piece: impl FnMut(&str) -> Control,
    ) -> Result<GenerateStats> {
        let mut sampler = Sampler::new(params.sampler.clone())?;
        self.generate_with(prompt, params, &mut sampler, on_piece)
    }

    /// [`Context::generate`] with a caller-owned sampler (its history carries over).
    pub fn generate_with(
        &mut self,
        prompt: &str,
        params: &GenerateParams,
        sampler: &mut Sampler,
        on_piece: impl FnMut(&str) -> Control,
    ) -> Result<GenerateStats> {
        let tok = self.model().tokenizer();
        let first = self.n_past() == 0;
        let opts = EncodeOptions {
            add_bos: if params.add_special && first {
                None
            } else {
                Some(false)
            },
            add_eos: if params.add_special && first {
                None
            } else {
                Some(false)
            },
            parse_special: params.parse_special,
        };
        let prompt_tokens = tok.encode_with(prompt, &opts)?;
        self.generate_tokens(&prompt_tokens, params, sampler, on_piece)
    }

    /// Generation from already tokenized input.
    pub fn generate_tokens(
        &mut self,
        prompt: &[Token],
        params: &GenerateParams,
        sampler: &mut Sampler,
        mut on_piece: impl FnMut(&str) -> Control,
    ) -> Result<GenerateStats> {
        self.clear_abort();
        let mut stats = GenerateStats {
            prompt_tokens: prompt.len(),
            ..Default::default()
        };
        if prompt.is_empty() && self.n_past() == 0 {
            return Err(Error::InvalidArgument(
                "empty prompt in an empty context".into(),
            ));
        }
        if prompt.len() > self.n_ctx() {
            return Err(Error::ContextFull {
                needed: prompt.len(),
                n_ctx: self.n_ctx(),
            });
        }
        if self.n_past() + prompt.len() > self.n_ctx() {
            if !params.context_shift {
                return Err(Error::ContextFull {
                    needed: self.n_past() + prompt.len(),
                    n_ctx: self.n_ctx(),
                });
            }
            let over = self.n_past() + prompt.len() - self.n_ctx();
            self.make_room(params.n_keep, over)?;
        }
        let model = self.model().clone();
        let tok = model.tokenizer();
        let t0 = Instant::now();
        if !prompt.is_empty() {
            self.decode_step(prompt)?;
        }
        stats.prompt_time = t0.elapsed();
        for &t in prompt {
            sampler.accept(t);
        }

        let max_stop = params.stop.iter().map(String::len).max().unwrap_or(0);
        let mut filter = StopFilter {
            stops: &params.stop,
            pending: String::with_capacity(max_stop + 256),
            hit: false,
        };
        let mut stream = StreamDecoder::new(params.render_special);
        let mut stop = None;
        let t1 = Instant::now();
        while stop.is_none() {
            if params.max_tokens > 0 && stats.generated_tokens >= params.max_tokens {
                stop = Some(StopReason::MaxTokens);
                break;
            }
            let t = sampler.sample(self.logits())?;
            sampler.accept(t);
            if tok.is_eog(t) {
                stop = Some(StopReason::EndOfGeneration);
                break;
            }
            stats.generated_tokens += 1;
            let mut ctl = Control::Continue;
            stream.push(tok, t, |s| {
                if ctl == Control::Continue {
                    ctl = filter.push(s, &mut on_piece);
                }
            })?;
            if ctl == Control::Stop {
                stop = Some(if filter.hit {
                    StopReason::StopString
                } else {
                    StopReason::Callback
                });
                break;
            }
            if self.n_past() + 1 > self.n_ctx() {
                if !params.context_shift {
                    return Err(Error::ContextFull {
                        needed: self.n_past() + 1,
                        n_ctx: self.n_ctx(),
                    });
                }
                self.make_room(params.n_keep, 1)?;
            }
            self.decode_step(&[t])?;
        }
        if stop != Some(StopReason::StopString) && stop != Some(StopReason::Callback) {
            stream.flush(|s| {
                filter.push(s, &mut on_piece);
            });
            filter.flush(&mut on_piece);
        }
        stats.gen_time = t1.elapsed();
        stats.stop_reason = stop;
        Ok(stats)
    }

    /// Frees at least `need` positions by dropping half of what follows the first `n_keep`.
    fn make_room(&mut self, n_keep: usize, need: usize) -> Result<()> {
        let n_keep = n_keep.min(self.n_past());
        let movable = self.n_past() - n_keep;
        let n_discard = (movable / 2).max(need).min(movable);
        if n_discard < need {
            return Err(Error::ContextFull {
                needed: self.n_past() + need,
                n_ctx: self.n_ctx(),
            });
        }
        self.shift(n_keep, n_discard)
    }
}
