//! Chat sessions: messages rendered with the model's Jinja chat template, replies
//! streamed, the KV cache kept between turns.

use std::cell::UnsafeCell;
use std::ffi::{c_char, c_void, CStr};
use std::mem::{offset_of, size_of};
use std::sync::atomic::AtomicBool;

use super::context::{context_params, ember_context_params};
use super::generate::{ember_generate_params, ember_piece_fn, generate_params, stop_code};
use super::model::ember_model;
use super::sampler::ember_sampler;
use super::{
    check_out_struct, cstr_arg, ember_status, ffi_call, ffi_void, fill_text, handle, out_ptr, put,
    read_params, spans, text_arg, write_defaults, write_out_struct, Busy, Fail, FfiResult, OutBuf,
    Versioned,
};
use crate::chat::{Json, TemplateOrigin};
use crate::runtime::chat::{ChatParams, ChatSession};
use crate::runtime::generate::Control;
use crate::runtime::AbortHandle;

/// `ember_chat_info.template_origin`: the model file's own template
/// (`tokenizer.chat_template`).
pub const EMBER_TEMPLATE_MODEL: u32 = 0;
/// The template given in `ember_chat_params.chat_template`.
pub const EMBER_TEMPLATE_GIVEN: u32 = 1;
/// The file has no template: a built-in one chosen for its architecture
/// (`ember_chat_info.builtin_template` names it).
pub const EMBER_TEMPLATE_BUILTIN: u32 = 2;

/// Largest JSON text accepted for a message or the tools (bytes).
const MAX_JSON: usize = 64 << 20;

/// A conversation with a model: its messages, rendered with the model's Jinja chat
/// template (sandboxed and bounded), and its own context, whose KV cache is kept from turn
/// to turn so each reply processes only the new text. Not thread-safe, like a context
/// (concurrent or re-entrant use gets `EMBER_ERR_BUSY`), except `ember_chat_abort()`.
pub struct ember_chat {
    busy: AtomicBool,
    abort: AbortHandle,
    chat: UnsafeCell<ChatSession>,
}

// SAFETY: the session inside is Send; every access goes through `Busy`, one call at a
// time, as for ember_context.
unsafe impl Sync for ember_chat {}

impl ember_chat {
    /// # Safety
    /// `p` is NULL or a live chat handle.
    unsafe fn lock<'a>(p: *const ember_chat) -> FfiResult<Busy<'a, ChatSession>> {
        // SAFETY: the caller's contract.
        let h = unsafe { handle(p, "chat") }?;
        // SAFETY: `busy` guards `chat` in every function of this file.
        unsafe { Busy::take(&h.busy, &h.chat, "chat") }
    }
}

/// How to make a chat session. Get one from `ember_chat_params_default()`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ember_chat_params {
    /// `sizeof(ember_chat_params)` as the caller compiled it.
    pub struct_size: u32,
    /// Pin the "now" of the template's `strftime_now()` to `now_unix` (default false:
    /// the clock).
    pub pin_now: bool,
    /// Unix seconds, read as UTC, when `pin_now`.
    pub now_unix: i64,
    /// A Jinja chat template (NUL-terminated UTF-8) to use instead of the model's;
    /// NULL (default): the model's own, or a built-in for its architecture when the file
    /// has none. Copied.
    pub chat_template: *const c_char,
    /// Tools the template describes to the model: a JSON array of tool schemas
    /// (NUL-terminated), or NULL (default) for none. Copied.
    pub tools_json: *const c_char,
    /// More template variables, as a JSON object (`{"enable_thinking": false}`), or NULL
    /// (default). Copied.
    pub template_vars_json: *const c_char,
}

// SAFETY: repr(C), struct_size first; a listed bool, an integer, raw pointers.
unsafe impl Versioned for ember_chat_params {
    const MIN_SIZE: usize = size_of::<ember_chat_params>();
    const BOOL_OFFSETS: &'static [usize] = &[offset_of!(ember_chat_params, pin_now)];
    const NAME: &'static str = "ember_chat_params";
    fn defaults() -> Self {
        ember_chat_params {
            struct_size: size_of::<Self>() as u32,
            pin_now: false,
            now_unix: 0,
            chat_template: std::ptr::null(),
            tools_json: std::ptr::null(),
            template_vars_json: std::ptr::null(),
        }
    }
    fn set_size(&mut self, size: u32) {
        self.struct_size = size;
    }
    fn spans(&self) -> Vec<(usize, usize)> {
        spans!(self, Self; struct_size, pin_now, now_unix, chat_template, tools_json, template_vars_json)
    }
}

/// What one reply did. Set `struct_size = sizeof(ember_chat_result)` and pass it to
/// `ember_chat_generate()`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ember_chat_result {
    pub struct_size: u32,
    /// One of `EMBER_STOP_*`.
    pub stop_reason: u32,
    /// Tokens of the whole rendered conversation.
    pub prompt_tokens: u32,
    /// Of those, tokens already in the cache from earlier turns (not processed again).
    pub prompt_reused: u32,
    /// Tokens processed for this reply: `prompt_tokens - prompt_reused`.
    pub prompt_processed: u32,
    /// Tokens of the reply (not counting the end-of-turn token).
    pub generated_tokens: u32,
    /// Messages dropped from the start of the conversation (after the system messages)
    /// to make it fit the context.
    pub dropped_messages: u32,
    /// Milliseconds spent on the prompt.
    pub prompt_ms: f64,
    /// Milliseconds spent generating.
    pub generate_ms: f64,
}

// SAFETY: repr(C), struct_size first; numbers only.
unsafe impl Versioned for ember_chat_result {
    const MIN_SIZE: usize = size_of::<ember_chat_result>();
    const BOOL_OFFSETS: &'static [usize] = &[];
    const NAME: &'static str = "ember_chat_result";
    fn defaults() -> Self {
        ember_chat_result {
            struct_size: size_of::<Self>() as u32,
            stop_reason: 0,
            prompt_tokens: 0,
            prompt_reused: 0,
            prompt_processed: 0,
            generated_tokens: 0,
            dropped_messages: 0,
            prompt_ms: 0.0,
            generate_ms: 0.0,
        }
    }
    fn set_size(&mut self, size: u32) {
        self.struct_size = size;
    }
    fn spans(&self) -> Vec<(usize, usize)> {
        spans!(self, Self; struct_size, stop_reason, prompt_tokens, prompt_reused, prompt_processed, generated_tokens, dropped_messages, prompt_ms, generate_ms)
    }
}

/// A session's state. Set `struct_size = sizeof(ember_chat_info)`, then call
/// `ember_chat_get_info()`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ember_chat_info {
    pub struct_size: u32,
    /// One of `EMBER_TEMPLATE_*`.
    pub template_origin: u32,
    /// Messages in the conversation.
    pub n_messages: u32,
    /// Positions of the context filled.
    pub n_past: u32,
    /// Positions the context holds.
    pub n_ctx: u32,
    /// The name of the built-in template ("chatml", "gemma", "llama3") when
    /// `template_origin` is `EMBER_TEMPLATE_BUILTIN`, else NULL. Static storage.
    pub builtin_template: *const c_char,
}

// SAFETY: repr(C), struct_size first; integers and a pointer.
unsafe impl Versioned for ember_chat_info {
    const MIN_SIZE: usize = size_of::<ember_chat_info>();
    const BOOL_OFFSETS: &'static [usize] = &[];
    const NAME: &'static str = "ember_chat_info";
    fn defaults() -> Self {
        ember_chat_info {
            struct_size: size_of::<Self>() as u32,
            template_origin: 0,
            n_messages: 0,
            n_past: 0,
            n_ctx: 0,
            builtin_template: std::ptr::null(),
        }
    }
    fn set_size(&mut self, size: u32) {
        self.struct_size = size;
    }
    fn spans(&self) -> Vec<(usize, usize)> {
        spans!(self, Self; struct_size, template_origin, n_messages, n_past, n_ctx, builtin_template)
    }
}

/// A NUL-terminated JSON text, parsed.
///
/// # Safety
/// `p` is NULL or NUL-terminated.
unsafe fn json_arg(p: *const c_char, what: &str) -> FfiResult<Option<Json>> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: forwarded contract.
    let s = unsafe { cstr_arg(p, what) }?;
    parse_json(s, what).map(Some)
}

fn parse_json(s: &str, what: &str) -> FfiResult<Json> {
    if s.len() > MAX_JSON {
        return Err(Fail::invalid(format!("{what} is over {MAX_JSON} bytes")));
    }
    serde_json::from_str(s).map_err(|e| Fail::invalid(format!("{what} is not valid JSON: {e}")))
}

/// # Safety
/// The pointers in `p` are NULL or NUL-terminated.
unsafe fn chat_params(p: &ember_chat_params) -> FfiResult<ChatParams> {
    let template = if p.chat_template.is_null() {
        None
    } else {
        // SAFETY: the caller's contract.
        Some(unsafe { cstr_arg(p.chat_template, "chat_template") }?.to_owned())
    };
    // SAFETY: the caller's contract.
    let tools = match unsafe { json_arg(p.tools_json, "tools_json") }? {
        None => Vec::new(),
        Some(Json::Array(a)) => a,
        Some(_) => return Err(Fail::invalid("tools_json is not a JSON array")),
    };
    // SAFETY: the caller's contract.
    let extra = match unsafe { json_arg(p.template_vars_json, "template_vars_json") }? {
        None => serde_json::Map::new(),
        Some(Json::Object(o)) => o,
        Some(_) => return Err(Fail::invalid("template_vars_json is not a JSON object")),
    };
    Ok(ChatParams {
        template,
        now: p.pin_now.then_some(p.now_unix),
        tools,
        extra,
    })
}

/// Writes the default chat params into `*params`, a struct of `struct_size` bytes (pass
/// `sizeof(ember_chat_params)`). Thread-safe.
///
/// # Safety
/// `params` is NULL or points to `struct_size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn ember_chat_params_default(
    params: *mut ember_chat_params,
    struct_size: usize,
) -> ember_status {
    ffi_call("ember_chat_params_default", || {
        // SAFETY: forwarded contract.
        unsafe { write_defaults(params, struct_size) }
    })
}

/// Makes a chat session with `model`: a context made with `ctx_params` (NULL for the
/// defaults) and the chat template `params` says (NULL for the defaults: the model's
/// own). A template that does not compile fails with `EMBER_ERR_TEMPLATE`, its message
/// and line in `ember_last_error()`; bad JSON in `params` with
/// `EMBER_ERR_INVALID_ARGUMENT`. On success `*out` is a new session the caller frees with
/// `ember_chat_free()`; it keeps the model alive. Thread-safe with respect to the model.
///
/// # Safety
/// `model` is NULL or live; `ctx_params` and `params` are NULL or valid params structs;
/// `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ember_chat_new(
    model: *const ember_model,
    ctx_params: *const ember_context_params,
    params: *const ember_chat_params,
    out: *mut *mut ember_chat,
) -> ember_status {
    ffi_call("ember_chat_new", || {
        let out = out_ptr(out, "out")?;
        // SAFETY: the caller's contract.
        let m = &unsafe { handle(model, "model") }?.model;
        // SAFETY: the caller's contract.
        let cp = context_params(&unsafe { read_params(ctx_params) }?)?;
        // SAFETY: the caller's contract.
        let p = unsafe { chat_params(&read_params(params)?) }?;
        let session = ChatSession::new(m, cp, p)?;
        let h = Box::new(ember_chat {
            busy: AtomicBool::new(false),
            abort: session.abort_handle(),
            chat: UnsafeCell::new(session),
        });
        // SAFETY: checked non-NULL.
        unsafe { put(out, Box::into_raw(h)) };
        Ok(())
    })
}

/// Frees a chat session and its context. NULL does nothing. A session in use (by a call
/// on another thread, or from inside its own callback) is not freed: the call does nothing
/// and `ember_last_error()` says why.
///
/// # Safety
/// `chat` is NULL or a live chat handle, not used again after a successful free.
#[no_mangle]
pub unsafe extern "C" fn ember_chat_free(chat: *mut ember_chat) {
    ffi_void("ember_chat_free", || {
        if chat.is_null() {
            return Ok(());
        }
        // Holding the busy flag proves nobody is inside; the handle is gone after this.
        // SAFETY: the caller's contract.
        let guard = unsafe { ember_chat::lock(chat) }?;
        std::mem::forget(guard);
        // SAFETY: made by Box::into_raw in ember_chat_new; the caller gives it up.
        drop(unsafe { Box::from_raw(chat) });
        Ok(())
    })
}

/// Appends a message: `role` ("system", "user", "assistant", "tool"...) NUL-terminated,
/// `content` as `content_len` bytes of UTF-8 (NULL allowed when 0). Both are copied. Not
/// thread-safe.
///
/// # Safety
/// `chat` is NULL or live; `role` is NULL or NUL-terminated; `content` is NULL or has
/// `content_len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn ember_chat_add_message(
    chat: *mut ember_chat,
    role: *const c_char,
    content: *const c_char,
    content_len: usize,
) -> ember_status {
    ffi_call("ember_chat_add_message", || {
        // SAFETY: the caller's contract.
        let role = unsafe { cstr_arg(role, "role") }?;
        if role.is_empty() {
            return Err(Fail::invalid("role is empty"));
        }
        // SAFETY: the caller's contract.
        let content = unsafe { text_arg(content, content_len, "content") }?;
        // SAFETY: the caller's contract.
        unsafe { ember_chat::lock(chat) }?.add_message(role, content);
        Ok(())
    })
}

/// Appends a message given as a JSON object of `json_len` bytes, for what a role and a
/// text cannot say: content as a list of parts, an assistant's `tool_calls`, a tool
/// result's `tool_call_id`. It needs a string "role"; the template sees every field.
/// Copied. Not thread-safe.
///
/// # Safety
/// `chat` is NULL or live; `json` is NULL or has `json_len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn ember_chat_add_message_json(
    chat: *mut ember_chat,
    json: *const c_char,
    json_len: usize,
) -> ember_status {
    ffi_call("ember_chat_add_message_json", || {
        // SAFETY: the caller's contract.
        let text = unsafe { text_arg(json, json_len, "json") }?;
        let m = parse_json(text, "json")?;
        // SAFETY: the caller's contract.
        unsafe { ember_chat::lock(chat) }?.push_message(m)?;
        Ok(())
    })
}

/// Generates the assistant's reply to the conversation, streams it to `on_piece` in whole
/// UTF-8 characters (as `ember_generate()` does) and appends it to the messages. The
/// conversation is rendered with the template; only the tokens after what the context
/// already holds are processed. When it does not fit, the oldest turns are dropped (system
/// messages stay) until it does, with room for the reply. The reply ends at the model's
/// end-of-turn token, `max_tokens`, a stop string, or when `on_piece` returns false.
/// `params` (NULL for the defaults) is an ember_generate_params: `max_tokens`,
/// `stop`/`n_stop` and `render_special` apply; `add_special`, `parse_special`,
/// `context_shift` and `n_keep` are ignored (the session manages the context). `result`
/// may be NULL. Errors: `EMBER_ERR_TEMPLATE` (the template failed: its message and line),
/// `EMBER_ERR_ABORTED` after `ember_chat_abort()` (the text streamed so far is kept as the
/// reply), `EMBER_ERR_CONTEXT_FULL` when even the last message alone does not fit, and
/// those of `ember_decode()`. Not thread-safe for `chat` and `sampler`.
///
/// # Safety
/// `chat` and `sampler` are NULL or live; `params` is NULL or a valid params struct whose
/// `stop` holds `n_stop` NUL-terminated strings; `result` is NULL or points to
/// `result->struct_size` bytes.
#[no_mangle]
pub unsafe extern "C" fn ember_chat_generate(
    chat: *mut ember_chat,
    sampler: *mut ember_sampler,
    params: *const ember_generate_params,
    on_piece: ember_piece_fn,
    user_data: *mut c_void,
    result: *mut ember_chat_result,
) -> ember_status {
    ffi_call("ember_chat_generate", || {
        let on_piece = on_piece.ok_or_else(|| Fail::null("on_piece"))?;
        // SAFETY: the caller's contract.
        unsafe { check_out_struct(result) }?;
        // SAFETY: the caller's contract.
        let gp = unsafe { generate_params(&read_params(params)?) }?;
        // SAFETY: the caller's contract.
        let mut c = unsafe { ember_chat::lock(chat) }?;
        // SAFETY: the caller's contract.
        let (n_vocab, mut s) = unsafe { ember_sampler::lock(sampler) }?;
        let model_vocab = c.context().model().n_vocab();
        if model_vocab != n_vocab {
            return Err(Fail::invalid(format!(
                "the sampler was made for {n_vocab} tokens, the chat's model has {model_vocab}"
            )));
        }
        let mut piece_buf: Vec<u8> = Vec::with_capacity(256);
        let st = c.reply(&gp, &mut s, |piece| {
            piece_buf.clear();
            piece_buf.extend_from_slice(piece.as_bytes());
            piece_buf.push(0);
            // SAFETY: a C callback supplied by the caller with its own user data; the
            // piece is NUL-terminated and outlives the call.
            if unsafe { on_piece(piece_buf.as_ptr().cast(), piece.len(), user_data) } {
                Control::Continue
            } else {
                Control::Stop
            }
        })?;
        drop(c);
        drop(s);
        if !result.is_null() {
            let v = ember_chat_result {
                stop_reason: stop_code(st.stop_reason),
                prompt_tokens: st.prompt_tokens as u32,
                prompt_reused: st.prompt_reused as u32,
                prompt_processed: st.prompt_processed as u32,
                generated_tokens: st.generated_tokens as u32,
                dropped_messages: st.dropped_messages as u32,
                prompt_ms: st.prompt_time.as_secs_f64() * 1e3,
                generate_ms: st.gen_time.as_secs_f64() * 1e3,
                ..ember_chat_result::defaults()
            };
            // SAFETY: the caller's contract.
            unsafe { write_out_struct(result, v) }?;
        }
        Ok(())
    })
}

/// Starts a new conversation with the same system messages: every other message is
/// forgotten. The context keeps what it can reuse (the system prompt). Not thread-safe.
///
/// # Safety
/// `chat` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn ember_chat_reset(chat: *mut ember_chat) -> ember_status {
    ffi_call("ember_chat_reset", || {
        // SAFETY: the caller's contract.
        unsafe { ember_chat::lock(chat) }?.reset();
        Ok(())
    })
}

/// Asks a running `ember_chat_generate()` to stop: it returns `EMBER_ERR_ABORTED` within
/// one layer, with the text streamed so far kept as the reply. Thread-safe: any thread,
/// or the piece callback. A request made while nothing runs is dropped when the next
/// reply starts.
///
/// # Safety
/// `chat` is NULL or live (not being freed concurrently).
#[no_mangle]
pub unsafe extern "C" fn ember_chat_abort(chat: *const ember_chat) -> ember_status {
    ffi_call("ember_chat_abort", || {
        // SAFETY: the caller's contract; only the shared abort handle is touched.
        unsafe { handle(chat, "chat") }?.abort.abort();
        Ok(())
    })
}

/// Renders the conversation with the template into `buf` (NUL-terminated; see the
/// buffer rules), ending with the header of an assistant turn when
/// `add_generation_prompt`: the exact prompt a reply would be generated from.
/// `EMBER_ERR_TEMPLATE` when the template fails. Not thread-safe.
///
/// # Safety
/// `chat` is NULL or live; `buf` is NULL or has `capacity` writable bytes; `needed` is
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ember_chat_render(
    chat: *const ember_chat,
    add_generation_prompt: bool,
    buf: *mut c_char,
    capacity: usize,
    needed: *mut usize,
) -> ember_status {
    ffi_call("ember_chat_render", || {
        // SAFETY: the caller's contract.
        let out = unsafe { OutBuf::new(buf, capacity, needed) }?;
        // SAFETY: the caller's contract.
        let text = unsafe { ember_chat::lock(chat) }?.render(add_generation_prompt)?;
        fill_text(&out, text.as_bytes())
    })
}

/// Message `index` (0 = the first) as a JSON object, e.g. `{"role": "assistant",
/// "content": "..."}`, into `buf` (NUL-terminated; see the buffer rules).
/// `EMBER_ERR_INVALID_ARGUMENT` when there is no such message. Not thread-safe.
///
/// # Safety
/// `chat` is NULL or live; `buf` is NULL or has `capacity` writable bytes; `needed` is
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ember_chat_message_json(
    chat: *const ember_chat,
    index: usize,
    buf: *mut c_char,
    capacity: usize,
    needed: *mut usize,
) -> ember_status {
    ffi_call("ember_chat_message_json", || {
        // SAFETY: the caller's contract.
        let out = unsafe { OutBuf::new(buf, capacity, needed) }?;
        // SAFETY: the caller's contract.
        let c = unsafe { ember_chat::lock(chat) }?;
        let m = c.messages().get(index).ok_or_else(|| {
            Fail::invalid(format!(
                "no message {index}: the conversation has {}",
                c.messages().len()
            ))
        })?;
        fill_text(&out, m.to_string().as_bytes())
    })
}

/// Fills `*info` (whose `struct_size` the caller set). Not thread-safe.
///
/// # Safety
/// `chat` is NULL or live; `info` is NULL or points to `info->struct_size` bytes.
#[no_mangle]
pub unsafe extern "C" fn ember_chat_get_info(
    chat: *const ember_chat,
    info: *mut ember_chat_info,
) -> ember_status {
    ffi_call("ember_chat_get_info", || {
        // SAFETY: the caller's contract.
        let c = unsafe { ember_chat::lock(chat) }?;
        let (template_origin, builtin_template) = match c.template().origin() {
            TemplateOrigin::Model => (EMBER_TEMPLATE_MODEL, std::ptr::null()),
            TemplateOrigin::Given => (EMBER_TEMPLATE_GIVEN, std::ptr::null()),
            TemplateOrigin::Builtin(name) => (EMBER_TEMPLATE_BUILTIN, builtin_name(name)),
        };
        let v = ember_chat_info {
            template_origin,
            n_messages: c.messages().len() as u32,
            n_past: c.context().n_past() as u32,
            n_ctx: c.context().n_ctx() as u32,
            builtin_template,
            ..ember_chat_info::defaults()
        };
        drop(c);
        // SAFETY: the caller's contract.
        unsafe { write_out_struct(info, v) }
    })
}

/// The static C string of a built-in template's name.
fn builtin_name(name: &str) -> *const c_char {
    let s: &'static CStr = match name {
        "gemma" => c"gemma",
        "llama3" => c"llama3",
        _ => c"chatml",
    };
    s.as_ptr()
}
