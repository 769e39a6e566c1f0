//! Samplers: a configured chain (bias, penalties, top-k, top-p, min-p, temperature, seeded
//! draw) made once and reused.

use std::cell::UnsafeCell;
use std::mem::size_of;
use std::sync::atomic::AtomicBool;

use super::context::ember_context;
use super::model::ember_model;
use super::{
    ember_status, ember_token, ffi_call, ffi_void, handle, out_ptr, put, read_params, slice_arg,
    spans, write_defaults, Busy, Fail, FfiResult, Versioned,
};
use crate::error::Error;
use crate::sampling::{Sampler, SamplerParams};

/// Longest penalty window accepted (the history is allocated up front).
const MAX_PENALTY_LAST_N: u32 = 1 << 20;

/// A sampling chain with its own random state and token history. Not thread-safe: one
/// thread at a time (concurrent or re-entrant use gets `EMBER_ERR_BUSY`). A sampler does
/// not belong to a context: it can be reused across contexts and conversations
/// (`ember_sampler_reset()` forgets the history).
pub struct ember_sampler {
    pub(crate) busy: AtomicBool,
    pub(crate) n_vocab: usize,
    pub(crate) sampler: UnsafeCell<Sampler>,
}

// SAFETY: the Sampler is Send; every access goes through `Busy`.
unsafe impl Sync for ember_sampler {}

impl ember_sampler {
    /// Exclusive use of the sampler for one call.
    ///
    /// # Safety
    /// `p` is NULL or a live sampler handle.
    pub(crate) unsafe fn lock<'a>(
        p: *const ember_sampler,
    ) -> FfiResult<(usize, Busy<'a, Sampler>)> {
        // SAFETY: the caller's contract.
        let h = unsafe { handle(p, "sampler") }?;
        // SAFETY: `busy` guards `sampler` everywhere.
        let b = unsafe { Busy::take(&h.busy, &h.sampler, "sampler") }?;
        Ok((h.n_vocab, b))
    }
}

/// A bias added to one token's logit before sampling.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ember_logit_bias {
    pub token: ember_token,
    /// Added to the logit; -INFINITY bans the token.
    pub bias: f32,
}

/// How to sample. Get one from `ember_sampler_params_default()` (llama.cpp's defaults:
/// temperature 0.8, top_k 40, top_p 0.95, min_p 0.05, no penalties).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ember_sampler_params {
    /// `sizeof(ember_sampler_params)` as the caller compiled it.
    pub struct_size: u32,
    /// 0 or less: greedy (argmax after bias and penalties).
    pub temperature: f32,
    /// Keep the k most likely tokens (0 = off).
    pub top_k: u32,
    /// Keep the smallest set whose probability reaches p (1 = off).
    pub top_p: f32,
    /// Drop tokens less likely than min_p times the most likely one (0 = off).
    pub min_p: f32,
    /// Divide positive (multiply negative) logits of recent tokens (1 = off).
    pub repeat_penalty: f32,
    /// Subtract count * this from recent tokens' logits (0 = off).
    pub frequency_penalty: f32,
    /// Subtract this once from each recent token's logit (0 = off).
    pub presence_penalty: f32,
    /// How many recent (accepted) tokens the penalties look at (default 64).
    pub penalty_last_n: u32,
    /// Seed of the random draw: the same seed and inputs give the same tokens.
    pub seed: u64,
    /// `n_logit_bias` biases (copied by `ember_sampler_new()`; may be NULL when 0).
    pub logit_bias: *const ember_logit_bias,
    pub n_logit_bias: usize,
}

// SAFETY: repr(C), struct_size first; numbers and a raw pointer, all valid for any bits.
unsafe impl Versioned for ember_sampler_params {
    const MIN_SIZE: usize = size_of::<ember_sampler_params>();
    const BOOL_OFFSETS: &'static [usize] = &[];
    const NAME: &'static str = "ember_sampler_params";
    fn defaults() -> Self {
        let d = SamplerParams::default();
        ember_sampler_params {
            struct_size: size_of::<Self>() as u32,
            temperature: d.temperature,
            top_k: d.top_k as u32,
            top_p: d.top_p,
            min_p: d.min_p,
            repeat_penalty: d.repeat_penalty,
            frequency_penalty: d.frequency_penalty,
            presence_penalty: d.presence_penalty,
            penalty_last_n: d.penalty_last_n as u32,
            seed: d.seed,
            logit_bias: std::ptr::null(),
            n_logit_bias: 0,
        }
    }
    fn set_size(&mut self, size: u32) {
        self.struct_size = size;
    }
    fn spans(&self) -> Vec<(usize, usize)> {
        spans!(self, Self; struct_size, temperature, top_k, top_p, min_p, repeat_penalty, frequency_penalty, presence_penalty, penalty_last_n, seed, logit_bias, n_logit_bias)
    }
}

/// Writes the default sampler params into `*params`, a struct of `struct_size` bytes
/// (pass `sizeof(ember_sampler_params)`). Thread-safe.
///
/// # Safety
/// `params` is NULL or points to `struct_size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn ember_sampler_params_default(
    params: *mut ember_sampler_params,
    struct_size: usize,
) -> ember_status {
    ffi_call("ember_sampler_params_default", || {
        // SAFETY: forwarded contract.
        unsafe { write_defaults(params, struct_size) }
    })
}

/// Makes a sampler for the vocabulary of `model` (which need not outlive it); `params`
/// may be NULL for the defaults. Bias token ids are checked (`EMBER_ERR_INVALID_TOKEN`),
/// as are the parameter ranges (`EMBER_ERR_INVALID_ARGUMENT`). On success `*out` is a new
/// sampler the caller owns and frees with `ember_sampler_free()`. Thread-safe.
///
/// # Safety
/// `model` is NULL or live; `params` is NULL or a valid params struct whose `logit_bias`
/// has `n_logit_bias` readable entries; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ember_sampler_new(
    model: *const ember_model,
    params: *const ember_sampler_params,
    out: *mut *mut ember_sampler,
) -> ember_status {
    ffi_call("ember_sampler_new", || {
        let out = out_ptr(out, "out")?;
        // SAFETY: the caller's contract.
        let m = &unsafe { handle(model, "model") }?.model;
        // SAFETY: the caller's contract.
        let p = unsafe { read_params(params) }?;
        // SAFETY: the caller's contract.
        let bias = unsafe { slice_arg(p.logit_bias, p.n_logit_bias, "logit_bias") }?;
        let n_vocab = m.n_vocab();
        if let Some(b) = bias.iter().find(|b| b.token as usize >= n_vocab) {
            return Err(Error::InvalidToken {
                id: b.token as i64,
                n_vocab,
            }
            .into());
        }
        if p.penalty_last_n > MAX_PENALTY_LAST_N {
            return Err(Fail::invalid(format!(
                "penalty_last_n {} is more than {MAX_PENALTY_LAST_N}",
                p.penalty_last_n
            )));
        }
        let s = Sampler::new(SamplerParams {
            temperature: p.temperature,
            top_k: p.top_k as usize,
            top_p: p.top_p,
            min_p: p.min_p,
            repeat_penalty: p.repeat_penalty,
            frequency_penalty: p.frequency_penalty,
            presence_penalty: p.presence_penalty,
            penalty_last_n: p.penalty_last_n as usize,
            logit_bias: bias.iter().map(|b| (b.token, b.bias)).collect(),
            seed: p.seed,
        })?;
        let h = Box::new(ember_sampler {
            busy: AtomicBool::new(false),
            n_vocab,
            sampler: UnsafeCell::new(s),
        });
        // SAFETY: checked non-NULL.
        unsafe { put(out, Box::into_raw(h)) };
        Ok(())
    })
}

/// Frees a sampler. NULL does nothing; a sampler in use is not freed (as for
/// `ember_context_free()`).
///
/// # Safety
/// `sampler` is NULL or a live sampler handle, not used again after a successful free.
#[no_mangle]
pub unsafe extern "C" fn ember_sampler_free(sampler: *mut ember_sampler) {
    ffi_void("ember_sampler_free", || {
        if sampler.is_null() {
            return Ok(());
        }
        // SAFETY: the caller's contract.
        let (_, guard) = unsafe { ember_sampler::lock(sampler) }?;
        std::mem::forget(guard);
        // SAFETY: made by Box::into_raw in ember_sampler_new; the caller gives it up.
        drop(unsafe { Box::from_raw(sampler) });
        Ok(())
    })
}

/// Chooses the next token from the context's last logits, in `*token`. Does not record
/// it: call `ember_sampler_accept()` with the token you keep (so that the penalties see
/// it). `EMBER_ERR_INVALID_ARGUMENT` before any decode. Not thread-safe (for the sampler
/// and the context).
///
/// # Safety
/// `sampler` and `ctx` are NULL or live; `token` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ember_sampler_sample(
    sampler: *mut ember_sampler,
    ctx: *const ember_context,
    token: *mut ember_token,
) -> ember_status {
    ffi_call("ember_sampler_sample", || {
        let out = out_ptr(token, "token")?;
        // SAFETY: the caller's contract.
        let (n_vocab, mut s) = unsafe { ember_sampler::lock(sampler) }?;
        // SAFETY: the caller's contract.
        let c = unsafe { ember_context::lock(ctx) }?;
        if c.model().n_vocab() != n_vocab {
            return Err(Fail::invalid(format!(
                "the sampler was made for {n_vocab} tokens, the context's model has {}",
                c.model().n_vocab()
            )));
        }
        let t = s.sample(c.logits())?;
        // SAFETY: checked non-NULL.
        unsafe { put(out, t) };
        Ok(())
    })
}

/// Chooses a token from `n_logits` logits given by the caller (e.g. a row from
/// `ember_context_logits_ith()`); `n_logits` must be the vocabulary size. Otherwise as
/// `ember_sampler_sample()`.
///
/// # Safety
/// `sampler` is NULL or live; `logits` is NULL or has `n_logits` readable floats; `token`
/// is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ember_sampler_sample_logits(
    sampler: *mut ember_sampler,
    logits: *const f32,
    n_logits: usize,
    token: *mut ember_token,
) -> ember_status {
    ffi_call("ember_sampler_sample_logits", || {
        let out = out_ptr(token, "token")?;
        if logits.is_null() {
            return Err(Fail::null("logits"));
        }
        // SAFETY: the caller's contract.
        let l = unsafe { slice_arg(logits, n_logits, "logits") }?;
        // SAFETY: the caller's contract.
        let (n_vocab, mut s) = unsafe { ember_sampler::lock(sampler) }?;
        if l.len() != n_vocab {
            return Err(Fail::invalid(format!(
                "{} logits given, the vocabulary has {n_vocab}",
                l.len()
            )));
        }
        let t = s.sample(l)?;
        // SAFETY: checked non-NULL.
        unsafe { put(out, t) };
        Ok(())
    })
}

/// Records `token` as part of the text, for the repetition penalties.
/// `EMBER_ERR_INVALID_TOKEN` outside the vocabulary. Not thread-safe.
///
/// # Safety
/// `sampler` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn ember_sampler_accept(
    sampler: *mut ember_sampler,
    token: ember_token,
) -> ember_status {
    ffi_call("ember_sampler_accept", || {
        // SAFETY: the caller's contract.
        let (n_vocab, mut s) = unsafe { ember_sampler::lock(sampler) }?;
        if token as usize >= n_vocab {
            return Err(Error::InvalidToken {
                id: token as i64,
                n_vocab,
            }
            .into());
        }
        s.accept(token);
        Ok(())
    })
}

/// Forgets the accepted tokens and reseeds the random draw: the sampler behaves as new.
/// Not thread-safe.
///
/// # Safety
/// `sampler` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn ember_sampler_reset(sampler: *mut ember_sampler) -> ember_status {
    ffi_call("ember_sampler_reset", || {
        // SAFETY: the caller's contract.
        unsafe { ember_sampler::lock(sampler) }?.1.reset();
        Ok(())
    })
}
