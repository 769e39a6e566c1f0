//! Saving and restoring a context's state (tokens, KV cache, last logits).

use std::ffi::c_char;

use super::context::ember_context;
use super::model::path_arg;
use super::{ember_status, ffi_call, out_ptr, put, slice_arg, OutBuf};

/// The bytes `ember_state_save()` needs for the context as it is now, in `*size`.
/// Not thread-safe.
///
/// # Safety
/// `ctx` is NULL or live; `size` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ember_state_size(
    ctx: *const ember_context,
    size: *mut usize,
) -> ember_status {
    ffi_call("ember_state_size", || {
        let out = out_ptr(size, "size")?;
        // SAFETY: the caller's contract.
        let c = unsafe { ember_context::lock(ctx) }?;
        // SAFETY: checked non-NULL.
        unsafe { put(out, c.state_size()) };
        Ok(())
    })
}

/// Saves the context's state (its tokens, KV cache and last logits, with the model's
/// fingerprint and a checksum) into `buf` of `capacity` bytes (buffer rules above:
/// `*needed` is the state's size). Not thread-safe.
///
/// # Safety
/// `ctx` is NULL or live; `buf` has room for `capacity` bytes; `needed` is NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn ember_state_save(
    ctx: *const ember_context,
    buf: *mut u8,
    capacity: usize,
    needed: *mut usize,
) -> ember_status {
    ffi_call("ember_state_save", || {
        // SAFETY: the caller's contract.
        let out = unsafe { OutBuf::new(buf, capacity, needed) }?;
        // SAFETY: the caller's contract.
        let c = unsafe { ember_context::lock(ctx) }?;
        let size = c.state_size();
        if buf.is_null() || capacity < size {
            // A size query or a short buffer: report the size without building the state.
            return out.fill_len(size);
        }
        // SAFETY: non-NULL with `capacity` writable bytes (the caller's contract), and
        // not ember's memory.
        let dst = unsafe { std::slice::from_raw_parts_mut(buf, capacity) };
        let n = c.save_state_into(dst)?;
        out.set_len(n);
        Ok(())
    })
}

/// Replaces the context's contents with a state saved by `ember_state_save()` (`len`
/// bytes at `buf`, copied during the call). The state is checked completely first (format,
/// checksum, model fingerprint, KV type and sizes, positions against n_ctx, token ids):
/// a truncated, corrupted or foreign state gives `EMBER_ERR_INVALID_STATE` and leaves the
/// context unchanged. Not thread-safe.
///
/// # Safety
/// `ctx` is NULL or live; `buf` is NULL or has `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn ember_state_load(
    ctx: *mut ember_context,
    buf: *const u8,
    len: usize,
) -> ember_status {
    ffi_call("ember_state_load", || {
        if buf.is_null() {
            return Err(super::Fail::null("buf"));
        }
        // SAFETY: the caller's contract.
        let data = unsafe { slice_arg(buf, len, "buf") }?;
        // SAFETY: the caller's contract.
        unsafe { ember_context::lock(ctx) }?.load_state(data)?;
        Ok(())
    })
}

/// Saves the context's state to the file at `path` (NUL-terminated), replacing it.
/// Not thread-safe.
///
/// # Safety
/// `ctx` is NULL or live; `path` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn ember_state_save_file(
    ctx: *const ember_context,
    path: *const c_char,
) -> ember_status {
    ffi_call("ember_state_save_file", || {
        // SAFETY: the caller's contract.
        let path = unsafe { path_arg(path) }?;
        // SAFETY: the caller's contract.
        unsafe { ember_context::lock(ctx) }?.save_state_file(path)?;
        Ok(())
    })
}

/// Loads a state saved with `ember_state_save_file()` (or `ember_state_save()` and
/// written to a file), checked as by `ember_state_load()`; a file larger than any state
/// this context could hold is refused without being read. Not thread-safe.
///
/// # Safety
/// `ctx` is NULL or live; `path` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn ember_state_load_file(
    ctx: *mut ember_context,
    path: *const c_char,
) -> ember_status {
    ffi_call("ember_state_load_file", || {
        // SAFETY: the caller's contract.
        let path = unsafe { path_arg(path) }?;
        // SAFETY: the caller's contract.
        unsafe { ember_context::lock(ctx) }?.load_state_file(path)?;
        Ok(())
    })
}
