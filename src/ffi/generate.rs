//! One call from prompt text to streamed output text.

use std::ffi::{c_char, c_void};
use std::mem::{offset_of, size_of};

use super::context::ember_context;
use super::sampler::ember_sampler;
use super::{
    check_out_struct, cstr_arg, ember_status, ffi_call, read_params, slice_arg, spans, text_arg,
    write_defaults, write_out_struct, Fail, FfiResult, Versioned,
};
use crate::runtime::generate::{Control, GenerateParams, StopReason};

/// `ember_generate_result.stop_reason`: the model produced an end-of-generation token.
pub const EMBER_STOP_END_OF_GENERATION: u32 = 1;
/// `max_tokens` tokens were generated.
pub const EMBER_STOP_MAX_TOKENS: u32 = 2;
/// A stop string appeared (it is not part of the streamed text).
pub const EMBER_STOP_STRING: u32 = 3;
/// The piece callback returned false.
pub const EMBER_STOP_CALLBACK: u32 = 4;

/// Receives generated text: `len` bytes of whole UTF-8 characters at `piece`, followed by
/// a NUL (not counted in `len`). The bytes belong to ember and are valid only during the
/// call. Return true to go on, false to stop the generation (`EMBER_STOP_CALLBACK`). Runs
/// on the thread that called `ember_generate()`. It may call `ember_context_abort()` and
/// any function on other handles; calls on the same context or sampler fail with
/// `EMBER_ERR_BUSY`. It must not throw or longjmp.
pub type ember_piece_fn =
    Option<unsafe extern "C" fn(piece: *const c_char, len: usize, user_data: *mut c_void) -> bool>;

/// How to generate. Get one from `ember_generate_params_default()`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ember_generate_params {
    /// `sizeof(ember_generate_params)` as the caller compiled it.
    pub struct_size: u32,
    /// Most tokens to generate; 0 = until end of generation or the context is full
    /// (default 256).
    pub max_tokens: u32,
    /// Tokens at the start of the context never dropped by a context shift (default 0).
    pub n_keep: u32,
    /// Add BOS/EOS as the model's metadata says, when the context is empty (default true).
    pub add_special: bool,
    /// Turn special-token text in the prompt ("<|im_start|>") into those tokens (default
    /// true).
    pub parse_special: bool,
    /// Render special tokens in the output (default false).
    pub render_special: bool,
    /// When the context fills up, drop the older half of the conversation after the first
    /// `n_keep` tokens instead of failing with `EMBER_ERR_CONTEXT_FULL` (default false).
    pub context_shift: bool,
    /// `n_stop` NUL-terminated UTF-8 strings: generation stops when one appears in the
    /// output, which is cut before it. Copied during the call; may be NULL when 0.
    pub stop: *const *const c_char,
    pub n_stop: usize,
}

// SAFETY: repr(C), struct_size first; integers, listed bools, a raw pointer.
unsafe impl Versioned for ember_generate_params {
    const MIN_SIZE: usize = size_of::<ember_generate_params>();
    const BOOL_OFFSETS: &'static [usize] = &[
        offset_of!(ember_generate_params, add_special),
        offset_of!(ember_generate_params, parse_special),
        offset_of!(ember_generate_params, render_special),
        offset_of!(ember_generate_params, context_shift),
    ];
    const NAME: &'static str = "ember_generate_params";
    fn defaults() -> Self {
        let d = GenerateParams::default();
        ember_generate_params {
            struct_size: size_of::<Self>() as u32,
            max_tokens: d.max_tokens as u32,
            n_keep: d.n_keep as u32,
            add_special: d.add_special,
            parse_special: d.parse_special,
            render_special: d.render_special,
            context_shift: d.context_shift,
            stop: std::ptr::null(),
            n_stop: 0,
        }
    }
    fn set_size(&mut self, size: u32) {
        self.struct_size = size;
    }
    fn spans(&self) -> Vec<(usize, usize)> {
        spans!(self, Self; struct_size, max_tokens, n_keep, add_special, parse_special, render_special, context_shift, stop, n_stop)
    }
}

/// What a generation did. Set `struct_size = sizeof(ember_generate_result)` and pass it
/// to `ember_generate()`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ember_generate_result {
    pub struct_size: u32,
    /// One of `EMBER_STOP_*`.
    pub stop_reason: u32,
    /// Tokens the prompt became.
    pub prompt_tokens: u32,
    /// Tokens sampled (not counting an end-of-generation token).
    pub generated_tokens: u32,
    /// Milliseconds spent on the prompt (prefill).
    pub prompt_ms: f64,
    /// Milliseconds spent generating.
    pub generate_ms: f64,
}

// SAFETY: repr(C), struct_size first; numbers only.
unsafe impl Versioned for ember_generate_result {
    const MIN_SIZE: usize = size_of::<ember_generate_result>();
    const BOOL_OFFSETS: &'static [usize] = &[];
    const NAME: &'static str = "ember_generate_result";
    fn defaults() -> Self {
        ember_generate_result {
            struct_size: size_of::<Self>() as u32,
            stop_reason: 0,
            prompt_tokens: 0,
            generated_tokens: 0,
            prompt_ms: 0.0,
            generate_ms: 0.0,
        }
    }
    fn set_size(&mut self, size: u32) {
        self.struct_size = size;
    }
    fn spans(&self) -> Vec<(usize, usize)> {
        spans!(self, Self; struct_size, stop_reason, prompt_tokens, generated_tokens, prompt_ms, generate_ms)
    }
}

/// Writes the default generation params into `*params`, a struct of `struct_size` bytes
/// (pass `sizeof(ember_generate_params)`). Thread-safe.
///
/// # Safety
/// `params` is NULL or points to `struct_size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn ember_generate_params_default(
    params: *mut ember_generate_params,
    struct_size: usize,
) -> ember_status {
    ffi_call("ember_generate_params_default", || {
        // SAFETY: forwarded contract.
        unsafe { write_defaults(params, struct_size) }
    })
}

/// Checks C generation params (copying the stop strings) and turns them into Rust ones.
///
/// # Safety
/// `p.stop` is NULL or holds `p.n_stop` NUL-terminated strings.
pub(crate) unsafe fn generate_params(p: &ember_generate_params) -> FfiResult<GenerateParams> {
    // SAFETY: the caller's contract.
    let stop_ptrs = unsafe { slice_arg(p.stop, p.n_stop, "stop") }?;
    let mut stop = Vec::with_capacity(stop_ptrs.len());
    for (i, &s) in stop_ptrs.iter().enumerate() {
        // SAFETY: the caller's contract.
        let s = unsafe { cstr_arg(s, &format!("stop[{i}]")) }?;
        if s.is_empty() {
            return Err(Fail::invalid(format!("stop[{i}] is empty")));
        }
        stop.push(s.to_owned());
    }
    Ok(GenerateParams {
        max_tokens: p.max_tokens as usize,
        add_special: p.add_special,
        parse_special: p.parse_special,
        stop,
        context_shift: p.context_shift,
        n_keep: p.n_keep as usize,
        render_special: p.render_special,
        ..GenerateParams::default()
    })
}

/// The `EMBER_STOP_*` code of a stop reason.
pub(crate) fn stop_code(r: Option<StopReason>) -> u32 {
    match r {
        Some(StopReason::EndOfGeneration) => EMBER_STOP_END_OF_GENERATION,
        Some(StopReason::MaxTokens) => EMBER_STOP_MAX_TOKENS,
        Some(StopReason::StopString) => EMBER_STOP_STRING,
        Some(StopReason::Callback) => EMBER_STOP_CALLBACK,
        None => 0,
    }
}

/// Generates a continuation of `prompt` (`prompt_len` bytes of UTF-8; NULL allowed when
/// 0, to continue a conversation already in the context): tokenizes it, appends it to
/// the context, then samples with `sampler` and streams the text to `on_piece` in whole
/// UTF-8 characters until an end-of-generation token, `max_tokens`, a stop string, or
/// `on_piece` returns false. The context keeps the conversation (prompt and reply), so
/// the next call continues it. `params` may be NULL for the defaults; `result` may be
/// NULL, else it is filled on success. Errors: `EMBER_ERR_ABORTED` after
/// `ember_context_abort()` (the text already streamed stays in the context),
/// `EMBER_ERR_CONTEXT_FULL` without `context_shift`, and those of `ember_decode()`.
/// Not thread-safe for `ctx` and `sampler`; many contexts may generate at once on one
/// model, each on its own thread.
///
/// # Safety
/// `ctx` and `sampler` are NULL or live; `prompt` is NULL or has `prompt_len` readable
/// bytes; `params` is NULL or a valid params struct whose `stop` holds `n_stop`
/// NUL-terminated strings; `result` is NULL or points to `result->struct_size` bytes.
#[no_mangle]
pub unsafe extern "C" fn ember_generate(
    ctx: *mut ember_context,
    sampler: *mut ember_sampler,
    prompt: *const c_char,
    prompt_len: usize,
    params: *const ember_generate_params,
    on_piece: ember_piece_fn,
    user_data: *mut c_void,
    result: *mut ember_generate_result,
) -> ember_status {
    ffi_call("ember_generate", || {
        let on_piece = on_piece.ok_or_else(|| Fail::null("on_piece"))?;
        // SAFETY: the caller's contract.
        unsafe { check_out_struct(result) }?;
        // SAFETY: the caller's contract.
        let prompt = unsafe { text_arg(prompt, prompt_len, "prompt") }?;
        // SAFETY: the caller's contract.
        let gp = unsafe { generate_params(&read_params(params)?) }?;
        // SAFETY: the caller's contract.
        let mut c = unsafe { ember_context::lock(ctx) }?;
        // SAFETY: the caller's contract.
        let (n_vocab, mut s) = unsafe { ember_sampler::lock(sampler) }?;
        if c.model().n_vocab() != n_vocab {
            return Err(Fail::invalid(format!(
                "the sampler was made for {n_vocab} tokens, the context's model has {}",
                c.model().n_vocab()
            )));
        }
        // Pieces are handed over NUL-terminated; the buffer is reused, so steady-state
        // generation does not allocate for it.
        let mut piece_buf: Vec<u8> = Vec::with_capacity(256);
        let stats = c.generate_with(prompt, &gp, &mut s, |piece| {
            piece_buf.clear();
            piece_buf.extend_from_slice(piece.as_bytes());
            piece_buf.push(0);
            // SAFETY: a C callback supplied by the caller with its own user data; the
            // piece is NUL-terminated and outlives the call.
            let go_on = unsafe { on_piece(piece_buf.as_ptr().cast(), piece.len(), user_data) };
            if go_on {
                Control::Continue
            } else {
                Control::Stop
            }
        })?;
        drop(c);
        drop(s);
        if !result.is_null() {
            let v = ember_generate_result {
                stop_reason: stop_code(stats.stop_reason),
                prompt_tokens: stats.prompt_tokens as u32,
                generated_tokens: stats.generated_tokens as u32,
                prompt_ms: stats.prompt_time.as_secs_f64() * 1e3,
                generate_ms: stats.gen_time.as_secs_f64() * 1e3,
                ..ember_generate_result::defaults()
            };
            // SAFETY: the caller's contract.
            unsafe { write_out_struct(result, v) }?;
        }
        Ok(())
    })
}
