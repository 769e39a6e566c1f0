//! Loading a model and reading what it is.

use std::ffi::{c_char, c_int, c_void};
use std::mem::{offset_of, size_of};

use super::{
    check_out_struct, ember_status, ffi_call, ffi_void, fill_text, handle, out_ptr, put,
    read_params, spans, write_defaults, write_out_struct, Fail, FfiResult, OutBuf, Versioned,
};
use crate::error::Error;
use crate::model::{Model, ModelParams};

/// A loaded model: weights (mapped from the file), configuration and tokenizer. Immutable
/// once loaded, so every function taking a `const ember_model *` is thread-safe: one
/// model serves any number of contexts on any number of threads. Free with
/// `ember_model_free()`; contexts and samplers made from it keep what they need alive,
/// so the model may be freed before them.
pub struct ember_model {
    pub(crate) model: Model,
}

/// Called while a model loads with the fraction done, in [0, 1]. Return true to go on,
/// false to cancel the load (it then fails with `EMBER_ERR_CANCELLED`). Runs on the
/// thread that called the load function; it must not throw or longjmp.
pub type ember_progress_fn =
    Option<unsafe extern "C" fn(progress: f32, user_data: *mut c_void) -> bool>;

/// How to load a model. Get one from `ember_model_params_default()`, then change fields.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ember_model_params {
    /// `sizeof(ember_model_params)` as the caller compiled it (set by the _default call).
    pub struct_size: u32,
    /// Map the file instead of reading it into memory (default true). Mapping makes loading
    /// nearly instant and shares the pages with the OS cache.
    pub use_mmap: bool,
    /// Lock the model's pages in RAM, best effort (default false).
    pub use_mlock: bool,
    /// Optional progress callback (default NULL).
    pub progress: ember_progress_fn,
    /// Passed to `progress` unchanged.
    pub progress_user_data: *mut c_void,
    /// Ask the OS to start reading the whole mapped file at load, in the background
    /// (`MADV_WILLNEED`), so the first tokens do not wait on page faults (default false:
    /// pages are read as the weights are first used, without read-ahead). A hint; ignored
    /// without mmap or where there is no `madvise`. Added after the first version: a
    /// caller built against that one gets the default.
    pub prefetch: bool,
}

// SAFETY: repr(C), struct_size first; every field but the bools accepts any bit pattern
// (the callback is an Option of a function pointer, so NULL is None).
unsafe impl Versioned for ember_model_params {
    // The first version ended before `prefetch`.
    const MIN_SIZE: usize = offset_of!(ember_model_params, prefetch);
    const BOOL_OFFSETS: &'static [usize] = &[
        offset_of!(ember_model_params, use_mmap),
        offset_of!(ember_model_params, use_mlock),
        offset_of!(ember_model_params, prefetch),
    ];
    const NAME: &'static str = "ember_model_params";
    fn defaults() -> Self {
        let d = ModelParams::default();
        ember_model_params {
            struct_size: size_of::<Self>() as u32,
            use_mmap: d.use_mmap,
            use_mlock: d.use_mlock,
            progress: None,
            progress_user_data: std::ptr::null_mut(),
            prefetch: d.prefetch,
        }
    }
    fn set_size(&mut self, size: u32) {
        self.struct_size = size;
    }
    fn spans(&self) -> Vec<(usize, usize)> {
        spans!(self, Self; struct_size, use_mmap, use_mlock, progress, progress_user_data, prefetch)
    }
}

/// What a model is: its shape and size. Set `struct_size = sizeof(ember_model_info)`,
/// then call `ember_model_get_info()`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ember_model_info {
    pub struct_size: u32,
    /// Tokens in the vocabulary (and logits per position).
    pub n_vocab: u32,
    /// The context length the model was trained with.
    pub n_ctx_train: u32,
    pub n_embd: u32,
    pub n_layer: u32,
    pub n_head: u32,
    pub n_head_kv: u32,
    /// Width of the feed-forward layers.
    pub n_ff: u32,
    /// Number of weights.
    pub n_params: u64,
    /// Bytes of tensor data.
    pub size_bytes: u64,
}

// SAFETY: repr(C), struct_size first, integers only.
unsafe impl Versioned for ember_model_info {
    const MIN_SIZE: usize = size_of::<ember_model_info>();
    const BOOL_OFFSETS: &'static [usize] = &[];
    const NAME: &'static str = "ember_model_info";
    fn defaults() -> Self {
        ember_model_info {
            struct_size: size_of::<Self>() as u32,
            n_vocab: 0,
            n_ctx_train: 0,
            n_embd: 0,
            n_layer: 0,
            n_head: 0,
            n_head_kv: 0,
            n_ff: 0,
            n_params: 0,
            size_bytes: 0,
        }
    }
    fn set_size(&mut self, size: u32) {
        self.struct_size = size;
    }
    fn spans(&self) -> Vec<(usize, usize)> {
        spans!(self, Self; struct_size, n_vocab, n_ctx_train, n_embd, n_layer, n_head, n_head_kv, n_ff, n_params, size_bytes)
    }
}

/// Writes the default model params into `*params`, a struct of `struct_size` bytes (pass
/// `sizeof(ember_model_params)`). Thread-safe.
///
/// # Safety
/// `params` is NULL or points to `struct_size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn ember_model_params_default(
    params: *mut ember_model_params,
    struct_size: usize,
) -> ember_status {
    ffi_call("ember_model_params_default", || {
        // SAFETY: forwarded contract.
        unsafe { write_defaults(params, struct_size) }
    })
}

fn model_params(p: &ember_model_params) -> ModelParams {
    ModelParams {
        use_mmap: p.use_mmap,
        use_mlock: p.use_mlock,
        prefetch: p.prefetch,
    }
}

fn load(
    params: *const ember_model_params,
    out: *mut *mut ember_model,
    run: impl FnOnce(&ModelParams, &mut dyn FnMut(f32) -> bool) -> crate::Result<Model>,
) -> FfiResult {
    let out = out_ptr(out, "out")?;
    // SAFETY: the caller's contract for `params`.
    let p = unsafe { read_params(params) }?;
    let mp = model_params(&p);
    let mut cancelled = false;
    let mut progress = |f: f32| match p.progress {
        None => true,
        Some(cb) => {
            // SAFETY: a C function pointer the caller supplied with its own user data.
            let go_on = unsafe { cb(f, p.progress_user_data) };
            cancelled |= !go_on;
            go_on
        }
    };
    let model = match run(&mp, &mut progress) {
        Ok(m) => m,
        Err(Error::Aborted) if cancelled => {
            return Err(Fail::new(
                ember_status::EMBER_ERR_CANCELLED,
                "the progress callback cancelled the load",
            ))
        }
        Err(e) => return Err(e.into()),
    };
    let h = Box::into_raw(Box::new(ember_model { model }));
    // SAFETY: `out` was checked non-NULL.
    unsafe { put(out, h) };
    Ok(())
}

/// Loads a GGUF model from the file at `path` (NUL-terminated; on Unix any bytes, else
/// UTF-8). `params` may be NULL for the defaults. On success `*out` is a new model the
/// caller owns and frees with `ember_model_free()`; on failure `*out` is untouched.
/// Thread-safe (loads may run on several threads at once).
///
/// # Safety
/// `path` is NULL or NUL-terminated; `params` is NULL or a valid params struct; `out` is
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ember_model_load(
    path: *const c_char,
    params: *const ember_model_params,
    out: *mut *mut ember_model,
) -> ember_status {
    ffi_call("ember_model_load", || {
        // SAFETY: the caller's contract.
        let path = unsafe { path_arg(path) }?;
        load(params, out, |mp, progress| {
            Model::load_with_progress(&path, mp, progress)
        })
    })
}

/// What a model takes in memory. Set `struct_size = sizeof(ember_model_memory)`, then
/// call `ember_model_estimate()` (before loading) or `ember_model_get_memory()`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ember_model_memory {
    pub struct_size: u32,
    /// Bytes of the file mapped read-only (0 without mmap). File-backed: the OS reads
    /// these pages as they are used and may drop them under memory pressure unless
    /// they are locked.
    pub mapped_bytes: u64,
    /// Bytes allocated on the heap: metadata, tensor index, tokenizer tables, and the
    /// whole file without mmap.
    pub heap_bytes: u64,
    /// `mapped_bytes + heap_bytes`: resident once every weight has been used.
    pub total_bytes: u64,
}

// SAFETY: repr(C), struct_size first, integers only.
unsafe impl Versioned for ember_model_memory {
    const MIN_SIZE: usize = size_of::<ember_model_memory>();
    const BOOL_OFFSETS: &'static [usize] = &[];
    const NAME: &'static str = "ember_model_memory";
    fn defaults() -> Self {
        ember_model_memory {
            struct_size: size_of::<Self>() as u32,
            mapped_bytes: 0,
            heap_bytes: 0,
            total_bytes: 0,
        }
    }
    fn set_size(&mut self, size: u32) {
        self.struct_size = size;
    }
    fn spans(&self) -> Vec<(usize, usize)> {
        spans!(self, Self; struct_size, mapped_bytes, heap_bytes, total_bytes)
    }
}

fn memory_struct(m: crate::ModelMemory) -> ember_model_memory {
    ember_model_memory {
        mapped_bytes: m.mapped_bytes,
        heap_bytes: m.heap_bytes,
        total_bytes: m.total(),
        ..ember_model_memory::defaults()
    }
}

/// Fills `*out` (whose `struct_size` the caller set) with what `ember_model_load()` of
/// `path` with `params` (NULL for the defaults) would take, without loading it: the file
/// is mapped and its header parsed as a load does (tokenizer tables included, then
/// dropped); no tensor data is read. The progress callback is not called. Thread-safe.
///
/// # Safety
/// `path` is NULL or NUL-terminated; `params` is NULL or a valid params struct; `out` is
/// NULL or points to `out->struct_size` bytes.
#[no_mangle]
pub unsafe extern "C" fn ember_model_estimate(
    path: *const c_char,
    params: *const ember_model_params,
    out: *mut ember_model_memory,
) -> ember_status {
    ffi_call("ember_model_estimate", || {
        out_ptr(out, "out")?;
        // SAFETY: the caller's contract.
        unsafe { check_out_struct(out) }?;
        // SAFETY: the caller's contract.
        let path = unsafe { path_arg(path) }?;
        // SAFETY: the caller's contract.
        let p = unsafe { read_params(params) }?;
        let m = Model::estimate(&path, &model_params(&p))?;
        // SAFETY: the caller's contract.
        unsafe { write_out_struct(out, memory_struct(m)) }
    })
}

/// Fills `*out` (whose `struct_size` the caller set) with what the loaded `model` takes.
/// Thread-safe.
///
/// # Safety
/// `model` is NULL or live; `out` is NULL or points to `out->struct_size` bytes.
#[no_mangle]
pub unsafe extern "C" fn ember_model_get_memory(
    model: *const ember_model,
    out: *mut ember_model_memory,
) -> ember_status {
    ffi_call("ember_model_get_memory", || {
        // SAFETY: the caller's contract.
        let m = &unsafe { handle(model, "model") }?.model;
        // SAFETY: the caller's contract.
        unsafe { write_out_struct(out, memory_struct(m.memory())) }
    })
}

/// A path argument: bytes on Unix, UTF-8 elsewhere.
///
/// # Safety
/// `p` is NULL or NUL-terminated.
pub(crate) unsafe fn path_arg(p: *const c_char) -> FfiResult<std::path::PathBuf> {
    if p.is_null() {
        return Err(Fail::null("path"));
    }
    // SAFETY: non-NULL and NUL-terminated (the caller's contract).
    let c = unsafe { std::ffi::CStr::from_ptr(p) };
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        Ok(std::ffi::OsStr::from_bytes(c.to_bytes()).into())
    }
    #[cfg(not(unix))]
    {
        // SAFETY: as above.
        Ok(unsafe { super::cstr_arg(p, "path") }?.into())
    }
}

/// Loads a model from `len` bytes of the open file `fd`, starting at byte `offset`: a
/// model stored inside an Android APK (AssetFileDescriptor gives fd, offset and length)
/// or an app bundle. `len` 0 means "to the end of the file". The caller keeps `fd`: ember
/// duplicates it, so `fd` may be closed as soon as this returns. Unix only: elsewhere the
/// call returns `EMBER_ERR_UNSUPPORTED`. Otherwise as `ember_model_load()`.
///
/// # Safety
/// `params` is NULL or a valid params struct; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ember_model_load_fd(
    fd: c_int,
    offset: u64,
    len: u64,
    params: *const ember_model_params,
    out: *mut *mut ember_model,
) -> ember_status {
    ffi_call("ember_model_load_fd", || {
        load_fd(fd, offset, len, params, out)
    })
}

#[cfg(unix)]
fn load_fd(
    fd: c_int,
    offset: u64,
    len: u64,
    params: *const ember_model_params,
    out: *mut *mut ember_model,
) -> FfiResult {
    use std::os::fd::BorrowedFd;
    out_ptr(out, "out")?;
    if fd < 0 {
        return Err(Fail::invalid(format!("fd {fd} is not a file descriptor")));
    }
    // SAFETY: the descriptor is only duplicated here (dup fails with EBADF if it is not
    // open); everything after works on the duplicate, which we own and close.
    let owned = unsafe { BorrowedFd::borrow_raw(fd) }
        .try_clone_to_owned()
        .map_err(|e| Error::io(format!("fd {fd}"), e))?;
    let file = std::fs::File::from(owned);
    let len = if len == 0 {
        let size = file
            .metadata()
            .map_err(|e| Error::io(format!("fd {fd}"), e))?
            .len();
        size.checked_sub(offset).ok_or_else(|| {
            Fail::invalid(format!(
                "offset {offset} is past the end of the file ({size} bytes)"
            ))
        })?
    } else {
        len
    };
    load(params, out, |mp, progress| {
        Model::load_from_file(&file, offset, len, mp, progress)
    })
}

#[cfg(not(unix))]
fn load_fd(
    _fd: c_int,
    _offset: u64,
    _len: u64,
    _params: *const ember_model_params,
    _out: *mut *mut ember_model,
) -> FfiResult {
    Err(Fail::new(
        ember_status::EMBER_ERR_UNSUPPORTED,
        "loading from a file descriptor needs a Unix system",
    ))
}

/// Frees a model. NULL does nothing. Contexts and samplers made from it stay valid. Do not
/// free a model while another thread is using this handle.
///
/// # Safety
/// `model` is NULL or a live model handle, not used again after this call.
#[no_mangle]
pub unsafe extern "C" fn ember_model_free(model: *mut ember_model) {
    ffi_void("ember_model_free", || {
        if !model.is_null() {
            // SAFETY: made by Box::into_raw in a load function; the caller gives it up.
            drop(unsafe { Box::from_raw(model) });
        }
        Ok(())
    })
}

/// Fills `*info` (whose `struct_size` the caller set) with the model's shape. Thread-safe.
///
/// # Safety
/// `model` is NULL or live; `info` is NULL or points to `info->struct_size` bytes.
#[no_mangle]
pub unsafe extern "C" fn ember_model_get_info(
    model: *const ember_model,
    info: *mut ember_model_info,
) -> ember_status {
    ffi_call("ember_model_get_info", || {
        // SAFETY: the caller's contract.
        let m = &unsafe { handle(model, "model") }?.model;
        let c = m.config();
        let v = ember_model_info {
            n_vocab: c.n_vocab as u32,
            n_ctx_train: c.n_ctx_train.min(u32::MAX as usize) as u32,
            n_embd: c.n_embd as u32,
            n_layer: c.n_layer as u32,
            n_head: c.n_head as u32,
            n_head_kv: c.n_head_kv as u32,
            n_ff: c.n_ff as u32,
            n_params: m.n_params(),
            size_bytes: m.size_bytes(),
            ..ember_model_info::defaults()
        };
        // SAFETY: the caller's contract.
        unsafe { write_out_struct(info, v) }
    })
}

/// Copies a string the model has into the caller's buffer (see the buffer rules above).
///
/// # Safety
/// `buf`/`needed` as for [`OutBuf::new`].
unsafe fn model_string(
    model: *const ember_model,
    buf: *mut c_char,
    capacity: usize,
    needed: *mut usize,
    get: impl FnOnce(&Model) -> FfiResult<String>,
) -> FfiResult {
    // SAFETY: the caller's contract.
    let out = unsafe { OutBuf::new(buf, capacity, needed) }?;
    // SAFETY: the caller's contract.
    let m = &unsafe { handle(model, "model") }?.model;
    fill_text(&out, get(m)?.as_bytes())
}

/// The architecture name (`general.architecture`, e.g. "llama"), NUL-terminated, into
/// `buf` (buffer rules above). Thread-safe.
///
/// # Safety
/// `model` is NULL or live; `buf` has room for `capacity` bytes; `needed` is NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn ember_model_architecture(
    model: *const ember_model,
    buf: *mut c_char,
    capacity: usize,
    needed: *mut usize,
) -> ember_status {
    ffi_call("ember_model_architecture", || {
        // SAFETY: the caller's contract.
        unsafe {
            model_string(model, buf, capacity, needed, |m| {
                Ok(m.config().arch_name.clone())
            })
        }
    })
}

/// The Jinja chat template stored in the model (`tokenizer.chat_template`),
/// NUL-terminated, into `buf` (buffer rules above); `EMBER_ERR_NOT_FOUND` when the model
/// has none. Thread-safe.
///
/// # Safety
/// As for `ember_model_architecture`.
#[no_mangle]
pub unsafe extern "C" fn ember_model_chat_template(
    model: *const ember_model,
    buf: *mut c_char,
    capacity: usize,
    needed: *mut usize,
) -> ember_status {
    ffi_call("ember_model_chat_template", || {
        // SAFETY: the caller's contract.
        unsafe {
            model_string(model, buf, capacity, needed, |m| {
                m.chat_template().map(str::to_owned).ok_or_else(|| {
                    Fail::new(
                        ember_status::EMBER_ERR_NOT_FOUND,
                        "the model has no chat template",
                    )
                })
            })
        }
    })
}

/// Any metadata value by key (e.g. "general.name", "llama.context_length"), rendered as a
/// string (numbers in decimal, arrays as "[a, b, ...]"), NUL-terminated, into `buf`
/// (buffer rules above); `EMBER_ERR_NOT_FOUND` when the key is absent. `key` is
/// NUL-terminated UTF-8. Thread-safe.
///
/// # Safety
/// As for `ember_model_architecture`; `key` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn ember_model_meta(
    model: *const ember_model,
    key: *const c_char,
    buf: *mut c_char,
    capacity: usize,
    needed: *mut usize,
) -> ember_status {
    ffi_call("ember_model_meta", || {
        // SAFETY: the caller's contract.
        let out = unsafe { OutBuf::new(buf, capacity, needed) }?;
        // SAFETY: the caller's contract.
        let key = unsafe { super::cstr_arg(key, "key") }?;
        // SAFETY: the caller's contract.
        let m = &unsafe { handle(model, "model") }?.model;
        let v = m.meta_str(key).ok_or_else(|| {
            Fail::new(
                ember_status::EMBER_ERR_NOT_FOUND,
                format!("no metadata key '{key}'"),
            )
        })?;
        fill_text(&out, v.as_bytes())
    })
}
