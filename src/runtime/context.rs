//! A context is one conversation: a KV cache, the scratch buffers of a forward pass, a
//! thread pool and the logits, all made when the context is created so decoding allocates
//! nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::kernels::{Kernels, Pool};
use crate::model::forward::{self, ForwardState, Outputs, Scratch};
use crate::model::observe::Observer;
use crate::model::Model;
use crate::tokenizer::Token;

use crate::model::kv::{KvCache, KvType, LayerKv};

use super::memory::{ContextLayout, ContextMemory};

/// How to create a context.
#[derive(Clone, Copy, Debug)]
pub struct ContextParams {
    /// Positions the KV cache holds (0 = min(trained context, 4096)).
    pub n_ctx: usize,
    /// Most tokens processed in one forward pass (prompts are split into batches this size).
    pub n_batch: usize,
    /// Worker threads (0 = one per available core).
    pub n_threads: usize,
    pub kv_type: KvType,
    /// Keep logits for every token of a batch, not just the last (needs n_batch * n_vocab floats).
    pub logits_all: bool,
    /// Refuse to create a context that would allocate more than this many bytes
    /// ([`Context::estimate`]), with [`Error::OverBudget`] (0 = no limit).
    pub max_bytes: u64,
}

impl Default for ContextParams {
    fn default() -> Self {
        ContextParams {
            n_ctx: 0,
            n_batch: 512,
            n_threads: 0,
            kv_type: KvType::F16,
            logits_all: false,
            max_bytes: 0,
        }
    }
}

/// Stops a running decode or generation from any thread.
#[derive(Clone, Debug)]
pub struct AbortHandle(Arc<AtomicBool>);

impl AbortHandle {
    /// Asks the context to stop at the next layer boundary. The context stays usable: the
    /// interrupted batch is simply not part of it.
    pub fn abort(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// One conversation with a model. Not `Sync`: use one context per thread.
pub struct Context {
    model: Model,
    params: ContextParams,
    pub(crate) kv: KvCache,
    scratch: Scratch,
    pool: Pool,
    kernels: &'static Kernels,
    logits: Vec<f32>,
    n_outputs: usize,
    /// The tokens whose keys and values are in the cache, in order.
    tokens: Vec<Token>,
    abort: Arc<AtomicBool>,
    /// Buffers for re-rotating keys in a context shift.
    shift_cs: Vec<f32>,
    shift_row: Vec<f32>,
    /// Shown every decode's stages when set (None: the pass skips each stage's test).
    observer: Option<Box<dyn Observer + Send>>,
}

impl Context {
    /// Creates a context for `model`, allocating everything a decode step needs.
    pub fn new(model: &Model, params: ContextParams) -> Result<Context> {
        let c = model.config();
        let layout = ContextLayout::new(c, &model.inner.facts, &params)?;
        let needed = layout.memory.total();
        if params.max_bytes > 0 && needed > params.max_bytes {
            return Err(Error::OverBudget {
                needed,
                max_bytes: params.max_bytes,
            });
        }
        let pool = Pool::new(layout.params.n_threads)?;
        let n_ctx = layout.params.n_ctx;
        Ok(Context {
            kv: KvCache::new(
                layout.kv_type,
                layout.n_layer,
                n_ctx,
                layout.k_dim,
                layout.v_dim,
            ),
            scratch: Scratch::new(&layout.scratch),
            kernels: Kernels::detect(),
            logits: vec![0.0; layout.logits_len],
            n_outputs: 0,
            tokens: Vec::with_capacity(n_ctx),
            abort: Arc::new(AtomicBool::new(false)),
            shift_cs: vec![0.0; layout.shift_cs_len],
            shift_row: vec![0.0; layout.shift_row_len],
            observer: None,
            pool,
            params: layout.params,
            model: model.clone(),
        })
    }

    /// What a context for `model` with `params` would allocate, without allocating it
    /// (the `max_bytes` budget is not applied: this is how to check it beforehand).
    pub fn estimate(model: &Model, params: &ContextParams) -> Result<ContextMemory> {
        super::memory::context_memory(model, params)
    }

    /// [`Context::estimate`] for the model file at `path`, without loading the model:
    /// only the file's header is read.
    pub fn estimate_for_file(
        path: impl AsRef<std::path::Path>,
        params: &ContextParams,
    ) -> Result<ContextMemory> {
        super::memory::context_memory_for_file(path, params)
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The parameters in effect (zeros replaced by the values chosen).
    pub fn params(&self) -> &ContextParams {
        &self.params
    }

    pub fn n_ctx(&self) -> usize {
        self.params.n_ctx
    }

    /// Number of positions filled.
    pub fn n_past(&self) -> usize {
        self.tokens.len()
    }

    /// The tokens in the cache.
    pub fn tokens(&self) -> &[Token] {
        &self.tokens
    }

    /// Name of the kernel set in use.
    /// (expert weight passes, expert token rows) of an MoE model since this context was
    /// made, (0, 0) for a dense one: each token costs k rows, and a batch reads each chosen
    /// expert's weights once.
    pub fn expert_counts(&self) -> (u64, u64) {
        self.scratch.expert_counts()
    }

    pub fn kernels_name(&self) -> &'static str {
        self.kernels.name
    }

    /// Bytes of memory the context holds (KV cache, scratch, logits, token list and
    /// shift buffers), counted from the buffers themselves: what
    /// [`ContextMemory::buffer_bytes`] of [`Context::estimate`] says before they exist.
    pub fn size_bytes(&self) -> usize {
        self.kv.size_bytes()
            + self.kv.layers.capacity() * size_of::<LayerKv>()
            + self.scratch.size_bytes()
            + 4 * (self.logits.capacity()
                + self.tokens.capacity()
                + self.shift_cs.capacity()
                + self.shift_row.capacity())
    }

    /// A handle that stops decoding from another thread.
    pub fn abort_handle(&self) -> AbortHandle {
        AbortHandle(self.abort.clone())
    }

    /// Forgets every position.
    pub fn reset(&mut self) {
        self.tokens.clear();
        self.n_outputs = 0;
    }

    /// Keeps only the first `n` positions (rolls the conversation back).
    pub fn truncate(&mut self, n: usize) {
        self.tokens.truncate(n);
        self.n_outputs = 0;
    }

    /// Makes room by dropping `n_discard` positions after the first `n_keep`: later keys
    /// and values move down and keys are re-rotated to their new positions, so generation
    /// continues with the dropped text forgotten instead of failing with a full context.
    pub fn shift(&mut self, n_keep: usize, n_discard: usize) -> Result<()> {
        let n_past = self.tokens.len();
        if n_keep.checked_add(n_discard).is_none_or(|e| e > n_past) {
            return Err(Error::InvalidArgument(format!(
                "cannot keep {n_keep} and discard {n_discard} of {n_past} positions"
            )));
        }
        if n_discard == 0 {
            return Ok(());
        }
        let inner = &self.model.inner;
        let c = &inner.config;
        let freq_factors = inner.freq_factors(self.kv.n_ctx);
        let n_move = n_past - n_keep - n_discard;
        let (kd, vd) = (self.kv.k_dim, self.kv.v_dim);
        for (il, layer) in self.kv.layers.iter_mut().enumerate() {
            layer.k.move_rows(kd, n_keep + n_discard, n_keep, n_move);
            layer.v.move_rows(vd, n_keep + n_discard, n_keep, n_move);
            let (rope, ff) = if c.swa_layers[il] {
                (&inner.rope_swa, None)
            } else {
                (&inner.rope, freq_factors)
            };
            // Rotating by -n_discard: RoPE angles are linear in the position.
            let cs = &mut self.shift_cs[..rope.n_dims()];
            rope.fill(n_discard, ff, cs);
            for pair in cs.chunks_exact_mut(2) {
                pair[1] = -pair[1];
            }
            for pos in n_keep..n_keep + n_move {
                layer.k.read_row(pos, kd, &mut self.shift_row);
                rope.apply(&mut self.shift_row, c.head_dim, cs);
                layer.k.write(pos, kd, &self.shift_row);
            }
        }
        self.tokens.drain(n_keep..n_keep + n_discard);
        self.n_outputs = 0;
        Ok(())
    }

    /// Appends `tokens` to the context; afterwards [`Context::logits`] holds the next-token
    /// logits after the last of them.
    pub fn decode(&mut self, tokens: &[Token]) -> Result<()> {
        self.clear_abort();
        self.decode_impl(tokens, Outputs::Last)
    }

    /// Drops an abort request made while nothing was running: each public entry point
    /// starts fresh, while the steps inside one call (the tokens of a generation) keep
    /// seeing a request made between them.
    pub(crate) fn clear_abort(&self) {
        self.abort.store(false, Ordering::Relaxed);
    }

    /// [`Context::decode`] as one step of a longer call: an abort requested since that
    /// call began stops it.
    pub(crate) fn decode_step(&mut self, tokens: &[Token]) -> Result<()> {
        self.decode_impl(tokens, Outputs::Last)
    }

    /// Like [`Context::decode`] but keeps the logits after every token (needs
    /// `logits_all` and at most `n_batch` tokens).
    pub fn decode_all(&mut self, tokens: &[Token]) -> Result<()> {
        if !self.params.logits_all {
            return Err(Error::InvalidArgument(
                "logits for every token need a context created with logits_all".into(),
            ));
        }
        if tokens.len() > self.params.n_batch {
            return Err(Error::InvalidArgument(format!(
                "{} tokens with logits for each exceed n_batch {}",
                tokens.len(),
                self.params.n_batch
            )));
        }
        self.clear_abort();
        self.decode_impl(tokens, Outputs::All)
    }

    /// Sets (or with `None` removes) the observer every later decode shows its stages to.
    pub fn set_observer(&mut self, observer: Option<Box<dyn Observer + Send>>) {
        self.observer = observer;
    }

    /// Removes the observer and returns it.
    pub fn take_observer(&mut self) -> Option<Box<dyn Observer + Send>> {
        self.observer.take()
    }

    /// [`Context::decode_all`] (with `all`, else [`Context::decode`]) showing this call's
    /// stages to `obs`, borrowed for the call only.
    pub fn decode_observed(
        &mut self,
        tokens: &[Token],
        all: bool,
        obs: &mut dyn Observer,
    ) -> Result<()> {
        if all && !self.params.logits_all {
            return Err(Error::InvalidArgument(
                "logits for every token need a context created with logits_all".into(),
            ));
        }
        self.clear_abort();
        let out = if all { Outputs::All } else { Outputs::Last };
        self.decode_with(tokens, out, Some(obs))
    }

    fn decode_impl(&mut self, tokens: &[Token], outputs: Outputs) -> Result<()> {
        // Taken out for the call so the pass can borrow it beside the context's buffers.
        let mut boxed = self.observer.take();
        let obs = boxed.as_deref_mut().map(|o| o as &mut dyn Observer);
        let r = self.decode_with(tokens, outputs, obs);
        self.observer = boxed;
        r
    }

    fn decode_with(
        &mut self,
        tokens: &[Token],
        outputs: Outputs,
        mut obs: Option<&mut dyn Observer>,
    ) -> Result<()> {
        if tokens.is_empty() {
            return Err(Error::InvalidArgument("no tokens to decode".into()));
        }
        let n_vocab = self.model.n_vocab();
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(Error::InvalidToken {
                id: bad as i64,
                n_vocab,
            });
        }
        let needed = self.tokens.len() + tokens.len();
        if needed > self.params.n_ctx {
            return Err(Error::ContextFull {
                needed,
                n_ctx: self.params.n_ctx,
            });
        }
        let prev_outputs = self.n_outputs;
        self.n_outputs = 0;
        let start = self.tokens.len();
        let inner = &self.model.inner;
        let chunks = tokens.chunks(self.params.n_batch);
        let n_chunks = chunks.len();
        for (i, chunk) in chunks.enumerate() {
            let last = i + 1 == n_chunks;
            // Earlier chunks only fill the cache; their logits would never be read.
            let out = if last { outputs } else { Outputs::None };
            let mut st = ForwardState {
                kv: &mut self.kv,
                scratch: &mut self.scratch,
                pool: &self.pool,
                kernels: self.kernels,
                abort: &self.abort,
                logits: &mut self.logits,
                observer: obs.as_mut().map(|o| &mut **o as &mut dyn Observer),
            };
            let pos0 = self.tokens.len();
            if let Err(e) = forward::forward(inner, &mut st, chunk, pos0, out) {
                // The cache rows past n_past are garbage but unreachable, and only the
                // last chunk writes logits, after its last layer: the context, logits
                // included, is exactly as it was before this call.
                self.tokens.truncate(start);
                self.n_outputs = prev_outputs;
                return Err(e);
            }
            self.tokens.extend_from_slice(chunk);
            if last {
                self.n_outputs = if out == Outputs::All { chunk.len() } else { 1 };
            }
        }
        Ok(())
    }

    /// Installs a validated saved state.
    pub(crate) fn set_restored(&mut self, tokens: Vec<Token>, logits: &[f32]) {
        self.tokens.clear();
        self.tokens.extend_from_slice(&tokens);
        self.logits[..logits.len()].copy_from_slice(logits);
        self.n_outputs = usize::from(!logits.is_empty());
    }

    /// Logits after the last decoded token (`n_vocab` floats; empty before any decode).
    pub fn logits(&self) -> &[f32] {
        if self.n_outputs == 0 {
            return &[];
        }
        let n = self.model.n_vocab();
        &self.logits[(self.n_outputs - 1) * n..self.n_outputs * n]
    }

    /// Logits after token `i` of the last batch decoded with [`Context::decode_all`]
    /// (or `i = 0` after [`Context::decode`]).
    pub fn logits_ith(&self, i: usize) -> Result<&[f32]> {
        if i >= self.n_outputs {
            return Err(Error::InvalidArgument(format!(
                "no logits for batch position {i} ({} available)",
                self.n_outputs
            )));
        }
        let n = self.model.n_vocab();
        Ok(&self.logits[i * n..(i + 1) * n])
    }
}
