//! Contexts: one conversation's KV cache, decoding, logits, abort.

use std::cell::UnsafeCell;
use std::ffi::c_char;
use std::mem::{offset_of, size_of};
use std::sync::atomic::AtomicBool;

use super::model::{ember_model, path_arg};
use super::{
    check_out_struct, ember_status, ember_token, ffi_call, ffi_void, handle, out_ptr, put,
    read_params, slice_arg, spans, write_defaults, write_out_struct, Busy, Fail, FfiResult,
    Versioned,
};
use crate::runtime::{AbortHandle, Context, ContextMemory, ContextParams, KvType};

/// KV cache element type for `ember_context_params.kv_type`: 16-bit floats (default).
pub const EMBER_KV_F16: u32 = 0;
/// KV cache element type: 32-bit floats (twice the memory).
pub const EMBER_KV_F32: u32 = 1;
/// KV cache element type: 8-bit blocks of 32 with an f16 scale (llama.cpp's q8_0 cache),
/// 53% of f16's memory; needs head sizes that are multiples of 32.
pub const EMBER_KV_Q8_0: u32 = 2;

/// Most worker threads a context may ask for.
const MAX_THREADS: u32 = 1024;

/// One conversation with a model: the KV cache, scratch buffers, worker threads and
/// logits, all allocated by `ember_context_new()`, so decoding allocates nothing. Not
/// thread-safe: use a context from one thread at a time (a second thread, or a callback
/// re-entering ember with the same context, gets `EMBER_ERR_BUSY`). The exception is
/// `ember_context_abort()`, callable from any thread at any time. Many contexts can share
/// one model, each on its own thread.
pub struct ember_context {
    pub(crate) busy: AtomicBool,
    abort: AbortHandle,
    pub(crate) ctx: UnsafeCell<Context>,
}

// SAFETY: the Context inside is Send; every access to it goes through `Busy`, which gives
// one call at a time exclusive access, so sharing the handle between threads is sound.
unsafe impl Sync for ember_context {}

impl ember_context {
    /// Exclusive use of the context for one call.
    ///
    /// # Safety
    /// `p` is NULL or a live context handle.
    pub(crate) unsafe fn lock<'a>(p: *const ember_context) -> FfiResult<Busy<'a, Context>> {
        // SAFETY: the caller's contract.
        let h = unsafe { handle(p, "ctx") }?;
        // SAFETY: `busy` guards `ctx` in every function of this module family.
        unsafe { Busy::take(&h.busy, &h.ctx, "context") }
    }
}

/// How to make a context. Get one from `ember_context_params_default()`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ember_context_params {
    /// `sizeof(ember_context_params)` as the caller compiled it.
    pub struct_size: u32,
    /// Positions the KV cache holds; 0 (default) = the trained context, at most 4096.
    pub n_ctx: u32,
    /// Most tokens per forward pass; longer inputs are split (default 512).
    pub n_batch: u32,
    /// Worker threads; 0 (default) = one per core.
    pub n_threads: u32,
    /// `EMBER_KV_F16` (default), `EMBER_KV_F32` or `EMBER_KV_Q8_0`.
    pub kv_type: u32,
    /// Keep logits for every token of a batch (`ember_decode_all()`), not just the last
    /// (default false; costs n_batch * n_vocab floats).
    pub logits_all: bool,
    /// Refuse, with `EMBER_ERR_OVER_BUDGET` and before allocating anything, to make a
    /// context that would allocate more than this many bytes (`ember_context_estimate()`
    /// says how many it would); 0 (default) = no limit. Added after the first version:
    /// a caller built against that one gets the default.
    pub max_bytes: u64,
}

// SAFETY: repr(C), struct_size first; integers and one listed bool.
unsafe impl Versioned for ember_context_params {
    // The first version ended before `max_bytes`.
    const MIN_SIZE: usize = offset_of!(ember_context_params, max_bytes);
    const BOOL_OFFSETS: &'static [usize] = &[offset_of!(ember_context_params, logits_all)];
    const NAME: &'static str = "ember_context_params";
    fn defaults() -> Self {
        let d = ContextParams::default();
        ember_context_params {
            struct_size: size_of::<Self>() as u32,
            n_ctx: d.n_ctx as u32,
            n_batch: d.n_batch as u32,
            n_threads: d.n_threads as u32,
            kv_type: d.kv_type as u32,
            logits_all: d.logits_all,
            max_bytes: d.max_bytes,
        }
    }
    fn set_size(&mut self, size: u32) {
        self.struct_size = size;
    }
    fn spans(&self) -> Vec<(usize, usize)> {
        spans!(self, Self; struct_size, n_ctx, n_batch, n_threads, kv_type, logits_all, max_bytes)
    }
}

/// A context's settings in effect (zeros replaced by what was chosen) and its memory.
/// Set `struct_size = sizeof(ember_context_info)`, then call `ember_context_get_info()`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ember_context_info {
    pub struct_size: u32,
    pub n_ctx: u32,
    pub n_batch: u32,
    pub n_threads: u32,
    pub kv_type: u32,
    /// Logits per position.
    pub n_vocab: u32,
    /// Positions filled at the time of the call.
    pub n_past: u32,
    pub logits_all: bool,
    /// Bytes the context's buffers hold (KV cache, scratch, logits, token list): the
    /// `total_bytes` of `ember_context_estimate()` less its `overhead_bytes`.
    pub size_bytes: u64,
}

// SAFETY: repr(C), struct_size first; integers and one listed bool.
unsafe impl Versioned for ember_context_info {
    const MIN_SIZE: usize = size_of::<ember_context_info>();
    const BOOL_OFFSETS: &'static [usize] = &[offset_of!(ember_context_info, logits_all)];
    const NAME: &'static str = "ember_context_info";
    fn defaults() -> Self {
        ember_context_info {
            struct_size: size_of::<Self>() as u32,
            n_ctx: 0,
            n_batch: 0,
            n_threads: 0,
            kv_type: 0,
            n_vocab: 0,
            n_past: 0,
            logits_all: false,
            size_bytes: 0,
        }
    }
    fn set_size(&mut self, size: u32) {
        self.struct_size = size;
    }
    fn spans(&self) -> Vec<(usize, usize)> {
        spans!(self, Self; struct_size, n_ctx, n_batch, n_threads, kv_type, n_vocab, n_past, logits_all, size_bytes)
    }
}

/// Writes the default context params into `*params`, a struct of `struct_size` bytes
/// (pass `sizeof(ember_context_params)`). Thread-safe.
///
/// # Safety
/// `params` is NULL or points to `struct_size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn ember_context_params_default(
    params: *mut ember_context_params,
    struct_size: usize,
) -> ember_status {
    ffi_call("ember_context_params_default", || {
        // SAFETY: forwarded contract.
        unsafe { write_defaults(params, struct_size) }
    })
}

/// Checks C context params and turns them into Rust ones.
pub(crate) fn context_params(p: &ember_context_params) -> FfiResult<ContextParams> {
    let kv_type = match p.kv_type {
        EMBER_KV_F16 => KvType::F16,
        EMBER_KV_F32 => KvType::F32,
        EMBER_KV_Q8_0 => KvType::Q8_0,
        t => return Err(Fail::invalid(format!("unknown kv_type {t}"))),
    };
    if p.n_threads > MAX_THREADS {
        return Err(Fail::invalid(format!(
            "n_threads {} is more than {MAX_THREADS}",
            p.n_threads
        )));
    }
    Ok(ContextParams {
        n_ctx: p.n_ctx as usize,
        n_batch: p.n_batch as usize,
        n_threads: p.n_threads as usize,
        kv_type,
        logits_all: p.logits_all,
        max_bytes: p.max_bytes,
    })
}

/// Makes a context for `model`; `params` may be NULL for the defaults. On success `*out`
/// is a new context the caller owns and frees with `ember_context_free()`. The context
/// keeps the model alive, so the model handle may be freed first. Thread-safe with
/// respect to the model.
///
/// # Safety
/// `model` is NULL or live; `params` is NULL or a valid params struct; `out` is NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn ember_context_new(
    model: *const ember_model,
    params: *const ember_context_params,
    out: *mut *mut ember_context,
) -> ember_status {
    ffi_call("ember_context_new", || {
        let out = out_ptr(out, "out")?;
        // SAFETY: the caller's contract.
        let m = &unsafe { handle(model, "model") }?.model;
        // SAFETY: the caller's contract.
        let p = unsafe { read_params(params) }?;
        let ctx = Context::new(m, context_params(&p)?)?;
        let h = Box::new(ember_context {
            busy: AtomicBool::new(false),
            abort: ctx.abort_handle(),
            ctx: UnsafeCell::new(ctx),
        });
        // SAFETY: checked non-NULL.
        unsafe { put(out, Box::into_raw(h)) };
        Ok(())
    })
}

/// What a context will allocate, by part. Set `struct_size = sizeof(ember_context_memory)`,
/// then call `ember_context_estimate()` or `ember_context_estimate_file()`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ember_context_memory {
    pub struct_size: u32,
    /// The settings the estimate is for, zeros replaced by what a context would choose.
    pub n_ctx: u32,
    pub n_batch: u32,
    pub n_threads: u32,
    /// Keys and values of every layer and position.
    pub kv_bytes: u64,
    /// The forward pass's buffers for one batch, and attention scores per thread.
    pub scratch_bytes: u64,
    /// The logits kept after a decode.
    pub logits_bytes: u64,
    /// The token list and context-shift buffers.
    pub other_bytes: u64,
    /// What the allocator adds: block headers, and large blocks rounded to whole pages.
    pub overhead_bytes: u64,
    /// The sum of the above: what `max_bytes` is compared with, and what the process's
    /// resident memory grows by once the context is full. Worker thread stacks are not
    /// included (the OS commits them as used, a few pages each).
    pub total_bytes: u64,
}

// SAFETY: repr(C), struct_size first, integers only.
unsafe impl Versioned for ember_context_memory {
    const MIN_SIZE: usize = size_of::<ember_context_memory>();
    const BOOL_OFFSETS: &'static [usize] = &[];
    const NAME: &'static str = "ember_context_memory";
    fn defaults() -> Self {
        ember_context_memory {
            struct_size: size_of::<Self>() as u32,
            n_ctx: 0,
            n_batch: 0,
            n_threads: 0,
            kv_bytes: 0,
            scratch_bytes: 0,
            logits_bytes: 0,
            other_bytes: 0,
            overhead_bytes: 0,
            total_bytes: 0,
        }
    }
    fn set_size(&mut self, size: u32) {
        self.struct_size = size;
    }
    fn spans(&self) -> Vec<(usize, usize)> {
        spans!(self, Self; struct_size, n_ctx, n_batch, n_threads, kv_bytes, scratch_bytes, logits_bytes, other_bytes, overhead_bytes, total_bytes)
    }
}

/// Reads C params, estimates with `run` and writes the result to `out`.
///
/// # Safety
/// `params` is NULL or a valid params struct; `out` is NULL or points to
/// `out->struct_size` bytes.
unsafe fn estimate(
    params: *const ember_context_params,
    out: *mut ember_context_memory,
    run: impl FnOnce(&ContextParams) -> crate::Result<ContextMemory>,
) -> FfiResult {
    out_ptr(out, "out")?;
    // SAFETY: the caller's contract.
    unsafe { check_out_struct(out) }?;
    // SAFETY: the caller's contract.
    let p = unsafe { read_params(params) }?;
    let m = run(&context_params(&p)?)?;
    let v = ember_context_memory {
        n_ctx: m.n_ctx as u32,
        n_batch: m.n_batch as u32,
        n_threads: m.n_threads as u32,
        kv_bytes: m.kv_bytes,
        scratch_bytes: m.scratch_bytes,
        logits_bytes: m.logits_bytes,
        other_bytes: m.other_bytes,
        overhead_bytes: m.overhead_bytes,
        total_bytes: m.total(),
        ..ember_context_memory::defaults()
    };
    // SAFETY: the caller's contract.
    unsafe { write_out_struct(out, v) }
}

/// Fills `*out` (whose `struct_size` the caller set) with what `ember_context_new()` with
/// the same `model` and `params` (NULL for the defaults) would allocate, without
/// allocating it. Fails as `ember_context_new()` would for parameters it refuses, except
/// that `max_bytes` is not applied (compare `out->total_bytes` with your budget).
/// Thread-safe.
///
/// # Safety
/// `model` is NULL or live; `params` is NULL or a valid params struct; `out` is NULL or
/// points to `out->struct_size` bytes.
#[no_mangle]
pub unsafe extern "C" fn ember_context_estimate(
    model: *const ember_model,
    params: *const ember_context_params,
    out: *mut ember_context_memory,
) -> ember_status {
    ffi_call("ember_context_estimate", || {
        // SAFETY: the caller's contract.
        let m = &unsafe { handle(model, "model") }?.model;
        // SAFETY: the caller's contract.
        unsafe { estimate(params, out, |p| Context::estimate(m, p)) }
    })
}

/// `ember_context_estimate()` for the model file at `path` (as for `ember_model_load()`),
/// without loading it: only the file's header is read. Thread-safe.
///
/// # Safety
/// `path` is NULL or NUL-terminated; `params` and `out` as for `ember_context_estimate()`.
#[no_mangle]
pub unsafe extern "C" fn ember_context_estimate_file(
    path: *const c_char,
    params: *const ember_context_params,
    out: *mut ember_context_memory,
) -> ember_status {
    ffi_call("ember_context_estimate_file", || {
        // SAFETY: the caller's contract.
        let path = unsafe { path_arg(path) }?;
        // SAFETY: the caller's contract.
        unsafe { estimate(params, out, |p| Context::estimate_for_file(&path, p)) }
    })
}

/// Frees a context (and its worker threads). NULL does nothing. A context that is in use
/// (by a call on another thread, or from inside one of its own callbacks) is not freed:
/// the call does nothing and `ember_last_error()` says why.
///
/// # Safety
/// `ctx` is NULL or a live context handle, not used again after a successful free.
#[no_mangle]
pub unsafe extern "C" fn ember_context_free(ctx: *mut ember_context) {
    ffi_void("ember_context_free", || {
        if ctx.is_null() {
            return Ok(());
        }
        // Holding the busy flag proves nobody is inside the context; it is never released
        // because the handle is gone after this.
        // SAFETY: the caller's contract.
        let guard = unsafe { ember_context::lock(ctx) }?;
        std::mem::forget(guard);
        // SAFETY: made by Box::into_raw in ember_context_new; the caller gives it up.
        drop(unsafe { Box::from_raw(ctx) });
        Ok(())
    })
}

/// Forgets every position: the next decode starts a new conversation. Not thread-safe.
///
/// # Safety
/// `ctx` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn ember_context_reset(ctx: *mut ember_context) -> ember_status {
    ffi_call("ember_context_reset", || {
        // SAFETY: the caller's contract.
        unsafe { ember_context::lock(ctx) }?.reset();
        Ok(())
    })
}

/// Keeps only the first `n_past` positions (rolls a conversation back, e.g. to retry a
/// reply). `EMBER_ERR_INVALID_ARGUMENT` when `n_past` is more than the context holds.
/// Not thread-safe.
///
/// # Safety
/// `ctx` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn ember_context_truncate(
    ctx: *mut ember_context,
    n_past: u32,
) -> ember_status {
    ffi_call("ember_context_truncate", || {
        // SAFETY: the caller's contract.
        let mut c = unsafe { ember_context::lock(ctx) }?;
        if n_past as usize > c.n_past() {
            return Err(Fail::invalid(format!(
                "cannot keep {n_past} positions, the context holds {}",
                c.n_past()
            )));
        }
        c.truncate(n_past as usize);
        Ok(())
    })
}

/// The number of positions filled, in `*n_past`. Not thread-safe.
///
/// # Safety
/// `ctx` is NULL or live; `n_past` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ember_context_n_past(
    ctx: *const ember_context,
    n_past: *mut u32,
) -> ember_status {
    ffi_call("ember_context_n_past", || {
        let out = out_ptr(n_past, "n_past")?;
        // SAFETY: the caller's contract.
        let c = unsafe { ember_context::lock(ctx) }?;
        // SAFETY: checked non-NULL.
        unsafe { put(out, c.n_past() as u32) };
        Ok(())
    })
}

/// Fills `*info` (whose `struct_size` the caller set) with the settings in effect. Not
/// thread-safe.
///
/// # Safety
/// `ctx` is NULL or live; `info` is NULL or points to `info->struct_size` bytes.
#[no_mangle]
pub unsafe extern "C" fn ember_context_get_info(
    ctx: *const ember_context,
    info: *mut ember_context_info,
) -> ember_status {
    ffi_call("ember_context_get_info", || {
        // SAFETY: the caller's contract.
        let c = unsafe { ember_context::lock(ctx) }?;
        let p = c.params();
        let v = ember_context_info {
            n_ctx: p.n_ctx as u32,
            n_batch: p.n_batch as u32,
            n_threads: p.n_threads as u32,
            kv_type: p.kv_type as u32,
            logits_all: p.logits_all,
            n_vocab: c.model().n_vocab() as u32,
            n_past: c.n_past() as u32,
            size_bytes: c.size_bytes() as u64,
            ..ember_context_info::defaults()
        };
        drop(c);
        // SAFETY: the caller's contract.
        unsafe { write_out_struct(info, v) }
    })
}

/// Appends `n_tokens` tokens to the context and runs the model over them (in batches of
/// n_batch); afterwards `ember_context_logits()` gives the next-token logits after the
/// last of them. On any error (`EMBER_ERR_INVALID_TOKEN`, `EMBER_ERR_CONTEXT_FULL`,
/// `EMBER_ERR_ABORTED`...) the context is as it was before the call. Not thread-safe;
/// `ember_context_abort()` from another thread stops it within one layer.
///
/// # Safety
/// `ctx` is NULL or live; `tokens` is NULL or has `n_tokens` readable ids.
#[no_mangle]
pub unsafe extern "C" fn ember_decode(
    ctx: *mut ember_context,
    tokens: *const ember_token,
    n_tokens: usize,
) -> ember_status {
    ffi_call("ember_decode", || {
        // SAFETY: the caller's contract.
        let ids = unsafe { slice_arg(tokens, n_tokens, "tokens") }?;
        // SAFETY: the caller's contract.
        unsafe { ember_context::lock(ctx) }?.decode(ids)?;
        Ok(())
    })
}

/// Like `ember_decode()` but keeps the logits after every token of the batch, for
/// `ember_context_logits_ith()`. Needs a context made with `logits_all` and at most
/// n_batch tokens. Not thread-safe.
///
/// # Safety
/// As for `ember_decode`.
#[no_mangle]
pub unsafe extern "C" fn ember_decode_all(
    ctx: *mut ember_context,
    tokens: *const ember_token,
    n_tokens: usize,
) -> ember_status {
    ffi_call("ember_decode_all", || {
        // SAFETY: the caller's contract.
        let ids = unsafe { slice_arg(tokens, n_tokens, "tokens") }?;
        // SAFETY: the caller's contract.
        unsafe { ember_context::lock(ctx) }?.decode_all(ids)?;
        Ok(())
    })
}

fn put_logits(l: &[f32], logits: *mut *const f32, n_logits: *mut usize) {
    // SAFETY: both checked non-NULL by the callers.
    unsafe {
        put(logits, l.as_ptr());
        put(n_logits, l.len());
    }
}

/// The next-token logits after the last decoded token: `*logits` points to `*n_logits`
/// (= n_vocab) floats owned by the context, valid until the next call that changes the
/// context (decode, generate, reset, truncate, state load, free). Before any decode:
/// `EMBER_ERR_INVALID_ARGUMENT`. Not thread-safe.
///
/// # Safety
/// `ctx` is NULL or live; `logits` and `n_logits` are NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ember_context_logits(
    ctx: *const ember_context,
    logits: *mut *const f32,
    n_logits: *mut usize,
) -> ember_status {
    ffi_call("ember_context_logits", || {
        out_ptr(logits, "logits")?;
        out_ptr(n_logits, "n_logits")?;
        // SAFETY: the caller's contract.
        let c = unsafe { ember_context::lock(ctx) }?;
        let l = c.logits();
        if l.is_empty() {
            return Err(Fail::invalid("no logits yet: decode first"));
        }
        put_logits(l, logits, n_logits);
        Ok(())
    })
}

/// The logits after token `i` of the last batch given to `ember_decode_all()` (or `i` 0
/// after `ember_decode()`), as for `ember_context_logits()`. `EMBER_ERR_INVALID_ARGUMENT`
/// when that batch had no position `i`. Not thread-safe.
///
/// # Safety
/// As for `ember_context_logits`.
#[no_mangle]
pub unsafe extern "C" fn ember_context_logits_ith(
    ctx: *const ember_context,
    i: usize,
    logits: *mut *const f32,
    n_logits: *mut usize,
) -> ember_status {
    ffi_call("ember_context_logits_ith", || {
        out_ptr(logits, "logits")?;
        out_ptr(n_logits, "n_logits")?;
        // SAFETY: the caller's contract.
        let c = unsafe { ember_context::lock(ctx) }?;
        put_logits(c.logits_ith(i)?, logits, n_logits);
        Ok(())
    })
}

/// Asks the decode or generation running on `ctx` to stop: it returns `EMBER_ERR_ABORTED`
/// within one layer, and the context keeps everything before the interrupted batch (a
/// generation keeps the tokens it already produced and the text it already streamed).
/// Thread-safe: call it from any thread, or from a callback of the running call. A
/// request made while nothing runs is dropped when the next decode or generation starts.
///
/// # Safety
/// `ctx` is NULL or live (not being freed concurrently).
#[no_mangle]
pub unsafe extern "C" fn ember_context_abort(ctx: *const ember_context) -> ember_status {
    ffi_call("ember_context_abort", || {
        // SAFETY: the caller's contract; only the shared abort handle is touched, never
        // the context the busy flag guards.
        unsafe { handle(ctx, "ctx") }?.abort.abort();
        Ok(())
    })
}
