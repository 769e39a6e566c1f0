//! The stable C ABI (`include/ember.h`, generated from this module by cbindgen).
//!
//! Everything here follows one set of rules, written once in the header's preamble
//! (cbindgen.toml) and relied on by every function:
//! - every function body runs inside [`ffi_call`]: a panic is caught and reported as
//!   `EMBER_ERR_PANIC`, never unwound into C;
//! - every pointer is checked for NULL before use, out-params are written only on success
//!   (except the `needed` size of buffer-filling functions, which is always written);
//! - the thread-local last-error message is cleared on entry and set on failure;
//! - handles are `Box`es; a context and a sampler carry a busy flag so that a re-entrant
//!   or concurrent call gets `EMBER_ERR_BUSY` instead of aliasing a `&mut`.
//!
//! Names are the C names (`ember_model`, `EMBER_OK`) so that the header and the code read
//! the same; that is why the usual Rust casing lints are off here.
#![allow(non_camel_case_types)]

// In the order the header presents them (cbindgen follows declaration order).
pub mod model;

pub mod tokenize;

pub mod context;

pub mod sampler;

pub mod generate;

pub mod chat;

pub mod state;

pub mod observe;

use std::cell::RefCell;
use std::ffi::{c_char, CStr};
use std::mem::{align_of, size_of, MaybeUninit};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::Error;

/// The version of the C ABI described by this header. It changes only when a function or
/// type changes incompatibly; additions (new functions, new trailing struct fields) keep
/// it. Compare with `ember_abi_version()` at run time when loading ember dynamically.
pub const EMBER_ABI_VERSION: u32 = 1;

/// A token id: an index into the model's vocabulary, `0 .. n_vocab - 1`.
pub type ember_token = u32;

/// What a function did. Every function that can fail returns one; on anything but
/// `EMBER_OK`, `ember_last_error()` says what was wrong. The numbers are fixed: a code is
/// never renumbered, and a retired code is never reused for another meaning.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ember_status {
    /// Success.
    EMBER_OK = 0,
    /// A required pointer argument was NULL (including a handle that was freed and set to
    /// NULL).
    EMBER_ERR_NULL_ARGUMENT = 1,
    /// An argument is out of range or inconsistent (a size, a count, a parameter value, a
    /// `struct_size`, a batch position without logits).
    EMBER_ERR_INVALID_ARGUMENT = 2,
    /// Opening, mapping, reading or writing a file failed.
    EMBER_ERR_IO = 3,
    /// The model file is not valid GGUF, or its metadata or tensors are wrong.
    EMBER_ERR_MALFORMED_MODEL = 4,
    /// The request is valid but ember does not implement it (an architecture, a tensor
    /// type, a newer params struct with fields this library does not know).
    EMBER_ERR_UNSUPPORTED = 5,
    /// A token id is outside the model's vocabulary.
    EMBER_ERR_INVALID_TOKEN = 6,
    /// Text given to ember is not valid UTF-8.
    EMBER_ERR_INVALID_UTF8 = 7,
    /// The context cannot hold the tokens asked for.
    EMBER_ERR_CONTEXT_FULL = 8,
    /// The caller's buffer is too small; `*needed` says how large it must be.
    EMBER_ERR_BUFFER_TOO_SMALL = 9,
    /// `ember_context_abort()` stopped the work; the context is as it was before the
    /// interrupted batch.
    EMBER_ERR_ABORTED = 10,
    /// A saved state is corrupt, truncated, or was made with another model or KV layout.
    EMBER_ERR_INVALID_STATE = 11,
    /// A progress callback returned false.
    EMBER_ERR_CANCELLED = 12,
    /// The thing asked for does not exist (a metadata key, a chat template, a special
    /// token the model does not have).
    EMBER_ERR_NOT_FOUND = 13,
    /// The handle is in use by a call that has not returned: a callback called back into
    /// ember with the same context or sampler, or two threads used one at the same time.
    EMBER_ERR_BUSY = 14,
    /// A chat template failed to parse or render.
    EMBER_ERR_TEMPLATE = 15,
    /// An internal error (a bug in ember) was caught at the C boundary. The handles
    /// involved are still safe to free.
    EMBER_ERR_PANIC = 16,
    /// Creating a context would allocate more than its params' `max_bytes` allow
    /// (`ember_context_estimate()` says how much it needs).
    EMBER_ERR_OVER_BUDGET = 17,
}

use ember_status::*;

impl ember_status {
    fn name(self) -> &'static CStr {
        match self {
            EMBER_OK => c"EMBER_OK",
            EMBER_ERR_NULL_ARGUMENT => c"EMBER_ERR_NULL_ARGUMENT",
            EMBER_ERR_INVALID_ARGUMENT => c"EMBER_ERR_INVALID_ARGUMENT",
            EMBER_ERR_IO => c"EMBER_ERR_IO",
            EMBER_ERR_MALFORMED_MODEL => c"EMBER_ERR_MALFORMED_MODEL",
            EMBER_ERR_UNSUPPORTED => c"EMBER_ERR_UNSUPPORTED",
            EMBER_ERR_INVALID_TOKEN => c"EMBER_ERR_INVALID_TOKEN",
            EMBER_ERR_INVALID_UTF8 => c"EMBER_ERR_INVALID_UTF8",
            EMBER_ERR_CONTEXT_FULL => c"EMBER_ERR_CONTEXT_FULL",
            EMBER_ERR_BUFFER_TOO_SMALL => c"EMBER_ERR_BUFFER_TOO_SMALL",
            EMBER_ERR_ABORTED => c"EMBER_ERR_ABORTED",
            EMBER_ERR_INVALID_STATE => c"EMBER_ERR_INVALID_STATE",
            EMBER_ERR_CANCELLED => c"EMBER_ERR_CANCELLED",
            EMBER_ERR_NOT_FOUND => c"EMBER_ERR_NOT_FOUND",
            EMBER_ERR_BUSY => c"EMBER_ERR_BUSY",
            EMBER_ERR_TEMPLATE => c"EMBER_ERR_TEMPLATE",
            EMBER_ERR_PANIC => c"EMBER_ERR_PANIC",
            EMBER_ERR_OVER_BUDGET => c"EMBER_ERR_OVER_BUDGET",
        }
    }

    const ALL: [ember_status; 18] = [
        EMBER_OK,
        EMBER_ERR_NULL_ARGUMENT,
        EMBER_ERR_INVALID_ARGUMENT,
        EMBER_ERR_IO,
        EMBER_ERR_MALFORMED_MODEL,
        EMBER_ERR_UNSUPPORTED,
        EMBER_ERR_INVALID_TOKEN,
        EMBER_ERR_INVALID_UTF8,
        EMBER_ERR_CONTEXT_FULL,
        EMBER_ERR_BUFFER_TOO_SMALL,
        EMBER_ERR_ABORTED,
        EMBER_ERR_INVALID_STATE,
        EMBER_ERR_CANCELLED,
        EMBER_ERR_NOT_FOUND,
        EMBER_ERR_BUSY,
        EMBER_ERR_TEMPLATE,
        EMBER_ERR_PANIC,
        EMBER_ERR_OVER_BUDGET,
    ];
}

/// Why a call failed: the status returned and the message kept for `ember_last_error()`.
pub(crate) struct Fail {
    status: ember_status,
    msg: String,
}

impl Fail {
    pub(crate) fn new(status: ember_status, msg: impl Into<String>) -> Fail {
        Fail {
            status,
            msg: msg.into(),
        }
    }

    pub(crate) fn null(what: &str) -> Fail {
        Fail::new(EMBER_ERR_NULL_ARGUMENT, format!("{what} is NULL"))
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Fail {
        Fail::new(EMBER_ERR_INVALID_ARGUMENT, msg)
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        let status = match &e {
            Error::Io { .. } => EMBER_ERR_IO,
            Error::Gguf { .. } | Error::Metadata { .. } | Error::Tensor { .. } => {
                EMBER_ERR_MALFORMED_MODEL
            }
            Error::Unsupported(_) => EMBER_ERR_UNSUPPORTED,
            Error::InvalidToken { .. } => EMBER_ERR_INVALID_TOKEN,
            Error::InvalidUtf8 { .. } => EMBER_ERR_INVALID_UTF8,
            Error::ContextFull { .. } => EMBER_ERR_CONTEXT_FULL,
            Error::OverBudget { .. } => EMBER_ERR_OVER_BUDGET,
            Error::InvalidArgument(_) => EMBER_ERR_INVALID_ARGUMENT,
            Error::Aborted => EMBER_ERR_ABORTED,
            Error::State(_) => EMBER_ERR_INVALID_STATE,
            Error::Template(_) => EMBER_ERR_TEMPLATE,
        };
        Fail::new(status, e.to_string())
    }
}

pub(crate) type FfiResult<T = ()> = Result<T, Fail>;

thread_local! {
    /// The last error message of this thread, NUL-terminated; `[0]` when the last call
    /// succeeded. Reused, so a successful call does not allocate.
    static LAST_ERROR: RefCell<Vec<u8>> = RefCell::new(vec![0]);
}

fn set_last_error(func: &str, msg: &str) {
    // During thread teardown the slot may be gone; the status still tells what happened.
    let _ = LAST_ERROR.try_with(|e| {
        let mut e = e.borrow_mut();
        e.clear();
        e.extend_from_slice(func.as_bytes());
        e.extend_from_slice(b": ");
        // An interior NUL would cut the message short in C; show it instead.
        for &b in msg.as_bytes() {
            if b == 0 {
                e.extend_from_slice(b"\\0");
            } else {
                e.push(b);
            }
        }
        e.push(0);
    });
}

fn clear_last_error() {
    let _ = LAST_ERROR.try_with(|e| {
        let mut e = e.borrow_mut();
        e.clear();
        e.push(0);
    });
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "unknown panic payload"
    }
}

/// The panic boundary every exported function runs in: clears the last error, runs `f`,
/// and turns its error or panic into a status and a message.
pub(crate) fn ffi_call(func: &str, f: impl FnOnce() -> FfiResult) -> ember_status {
    clear_last_error();
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => EMBER_OK,
        Ok(Err(fail)) => {
            set_last_error(func, &fail.msg);
            fail.status
        }
        Err(payload) => {
            let msg = format!(
                "internal error (please report): {}",
                panic_message(&*payload)
            );
            set_last_error(func, &msg);
            EMBER_ERR_PANIC
        }
    }
}

/// Like [`ffi_call`] for functions that return nothing (`_free`): a panic is reported
/// through `ember_last_error()` only.
pub(crate) fn ffi_void(func: &str, f: impl FnOnce() -> FfiResult) {
    let _ = ffi_call(func, f);
}

// ---------------------------------------------------------------------------------------
// Arguments coming in from C.
// ---------------------------------------------------------------------------------------

/// A shared reference to a handle, or `EMBER_ERR_NULL_ARGUMENT`.
///
/// # Safety
/// `p` is NULL or a live handle made by ember (the caller's contract).
pub(crate) unsafe fn handle<'a, T>(p: *const T, what: &str) -> FfiResult<&'a T> {
    // SAFETY: non-NULL handles are live `Box`es made by ember (the caller's contract).
    unsafe { p.as_ref() }.ok_or_else(|| Fail::null(what))
}

/// Writes `v` to an out-param (called only once the call has succeeded).
///
/// # Safety
/// `out` was checked non-NULL and points to writable memory for a `T`.
pub(crate) unsafe fn put<T>(out: *mut T, v: T) {
    // SAFETY: checked non-NULL by the caller; unaligned writes keep a misaligned caller
    // pointer from being UB on our side.
    unsafe { out.write_unaligned(v) }
}

/// Checks that an out-param is not NULL.
pub(crate) fn out_ptr<T>(p: *mut T, what: &str) -> FfiResult<*mut T> {
    if p.is_null() {
        Err(Fail::null(what))
    } else {
        Ok(p)
    }
}

/// `n` elements at `p` as a slice; NULL is allowed only with `n == 0`.
///
/// # Safety
/// When non-NULL, `p` points to `n` readable, initialized `T`s that stay unchanged
/// during the call.
pub(crate) unsafe fn slice_arg<'a, T>(p: *const T, n: usize, what: &str) -> FfiResult<&'a [T]> {
    if p.is_null() {
        return if n == 0 {
            Ok(&[])
        } else {
            Err(Fail::null(what))
        };
    }
    if (p as usize) % align_of::<T>() != 0 {
        return Err(Fail::invalid(format!(
            "{what} is not aligned to {} bytes",
            align_of::<T>()
        )));
    }
    if n.checked_mul(size_of::<T>().max(1))
        .is_none_or(|b| b > isize::MAX as usize)
    {
        return Err(Fail::invalid(format!("{what}: {n} elements is too many")));
    }
    // SAFETY: non-NULL, aligned, size within isize::MAX; validity is the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// Text given as pointer and length, checked to be UTF-8.
///
/// # Safety
/// As for [`slice_arg`].
pub(crate) unsafe fn text_arg<'a>(p: *const c_char, len: usize, what: &str) -> FfiResult<&'a str> {
    // SAFETY: forwarded contract.
    let bytes = unsafe { slice_arg(p.cast::<u8>(), len, what) }?;
    std::str::from_utf8(bytes).map_err(|e| {
        Fail::new(
            EMBER_ERR_INVALID_UTF8,
            format!("{what} is not UTF-8 at byte {}", e.valid_up_to()),
        )
    })
}

/// A NUL-terminated C string, checked to be UTF-8.
///
/// # Safety
/// When non-NULL, `p` points to a NUL-terminated string.
pub(crate) unsafe fn cstr_arg<'a>(p: *const c_char, what: &str) -> FfiResult<&'a str> {
    if p.is_null() {
        return Err(Fail::null(what));
    }
    // SAFETY: non-NULL and NUL-terminated (the caller's contract).
    let c = unsafe { CStr::from_ptr(p) };
    c.to_str().map_err(|e| {
        Fail::new(
            EMBER_ERR_INVALID_UTF8,
            format!("{what} is not UTF-8 at byte {}", e.valid_up_to()),
        )
    })
}

/// Size negotiation for functions that fill a caller's buffer: always stores the element
/// count needed in `*needed` (0 before anything is known), then copies when `buf` holds it.
pub(crate) struct OutBuf<T> {
    buf: *mut T,
    cap: usize,
    needed: *mut usize,
}

impl<T: Copy> OutBuf<T> {
    /// Checks the arguments and stores 0 in `*needed`, so that every return path after
    /// this leaves a defined value there.
    ///
    /// # Safety
    /// When non-NULL, `buf` has room for `cap` `T`s and `needed` points to a `size_t`.
    pub(crate) unsafe fn new(buf: *mut T, cap: usize, needed: *mut usize) -> FfiResult<Self> {
        if needed.is_null() {
            return Err(Fail::null("needed (the size out-param)"));
        }
        // SAFETY: checked non-NULL above.
        unsafe { put(needed, 0) };
        if buf.is_null() && cap != 0 {
            return Err(Fail::null("buffer (with a nonzero capacity)"));
        }
        if !buf.is_null() && (buf as usize) % align_of::<T>() != 0 {
            return Err(Fail::invalid("buffer is misaligned"));
        }
        Ok(OutBuf { buf, cap, needed })
    }

    /// Stores the size, then copies `parts` one after the other (and a trailing `term`
    /// when given). A NULL buffer with capacity 0 is a size query and succeeds.
    pub(crate) fn fill(&self, parts: &[&[T]], term: Option<T>) -> FfiResult {
        let len: usize = parts.iter().map(|p| p.len()).sum::<usize>() + usize::from(term.is_some());
        self.fill_len(len)?;
        if self.buf.is_null() {
            return Ok(());
        }
        let mut at = 0;
        for p in parts {
            // SAFETY: the buffer has room for `cap >= len` elements and does not overlap
            // ember's memory (it is the caller's).
            unsafe { std::ptr::copy_nonoverlapping(p.as_ptr(), self.buf.add(at), p.len()) };
            at += p.len();
        }
        if let Some(t) = term {
            // SAFETY: `at < len <= cap`.
            unsafe { self.buf.add(at).write(t) };
        }
        Ok(())
    }
}

impl<T> OutBuf<T> {
    /// Stores `len` as the size needed and checks it fits: `Ok` means the caller may
    /// write `len` elements (or that this is a size query, when the buffer is NULL).
    pub(crate) fn fill_len(&self, len: usize) -> FfiResult {
        self.set_len(len);
        if !self.buf.is_null() && self.cap < len {
            return Err(Fail::new(
                EMBER_ERR_BUFFER_TOO_SMALL,
                format!("the buffer holds {}, {len} needed", self.cap),
            ));
        }
        Ok(())
    }

    pub(crate) fn set_len(&self, len: usize) {
        // SAFETY: `needed` was checked non-NULL in `new`.
        unsafe { put(self.needed, len) };
    }
}

/// Fills a text buffer: the bytes of `s` and a terminating NUL (`*needed` counts it).
pub(crate) fn fill_text(out: &OutBuf<c_char>, s: &[u8]) -> FfiResult {
    // SAFETY: u8 and c_char have the same size and alignment.
    let s = unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<c_char>(), s.len()) };
    out.fill(&[s], Some(0))
}

// ---------------------------------------------------------------------------------------
// Versioned params structs.
// ---------------------------------------------------------------------------------------

/// The largest `struct_size` believed: a bigger one is a struct that was never initialized.
const MAX_STRUCT_SIZE: usize = 4096;

/// A C struct that starts with `uint32_t struct_size` and may grow at the end.
///
/// # Safety
/// Implementors are `#[repr(C)]` with `struct_size: u32` first, and every bit pattern of
/// every field is valid except for the `bool`s listed in `BOOL_OFFSETS`.
pub(crate) unsafe trait Versioned: Copy {
    /// The size of the first published version: older callers never pass less.
    const MIN_SIZE: usize;
    /// Offsets of the `bool` fields (normalized to 0/1 when read from C).
    const BOOL_OFFSETS: &'static [usize];
    const NAME: &'static str;
    fn defaults() -> Self;
    fn set_size(&mut self, size: u32);
    /// `(offset, size)` of every field ([`spans!`]): what is written back to C, so that
    /// padding bytes go out as zeros rather than whatever was on ember's stack.
    fn spans(&self) -> Vec<(usize, usize)>;
}

/// The `(offset, size)` of each named field of `$v`, a `$t`.
macro_rules! spans {
    ($v:expr, $t:ty; $($f:ident),+ $(,)?) => {
        vec![$((std::mem::offset_of!($t, $f), std::mem::size_of_val(&$v.$f))),+]
    };
}
pub(crate) use spans;

fn check_struct_size<T: Versioned>(size: u32) -> FfiResult<usize> {
    let size = size as usize;
    if size < T::MIN_SIZE || size > MAX_STRUCT_SIZE {
        return Err(Fail::invalid(format!(
            "{}.struct_size is {size}; expected {} (set it with the matching _default function \
             or to sizeof the struct)",
            T::NAME,
            size_of::<T>()
        )));
    }
    Ok(size)
}

/// Reads a params struct of any supported version. NULL gives the defaults. Fields the
/// caller's (older) version lacks keep their defaults; fields of a newer version than this
/// library must be zero (meaning "not used"), or the call is refused as unsupported.
///
/// # Safety
/// When non-NULL, `p` points to at least `p->struct_size` readable bytes.
pub(crate) unsafe fn read_params<T: Versioned>(p: *const T) -> FfiResult<T> {
    if p.is_null() {
        return Ok(T::defaults());
    }
    // SAFETY: `struct_size` is the first field, so at least 4 bytes are readable.
    let size = check_struct_size::<T>(unsafe { p.cast::<u32>().read_unaligned() })?;
    let base = p.cast::<u8>();
    let known = size.min(size_of::<T>());
    for i in known..size {
        // SAFETY: within the caller's `struct_size` bytes.
        if unsafe { base.add(i).read() } != 0 {
            return Err(Fail::new(
                EMBER_ERR_UNSUPPORTED,
                format!(
                    "{} has fields this ember {} does not know (byte {i} is set)",
                    T::NAME,
                    env!("CARGO_PKG_VERSION")
                ),
            ));
        }
    }
    let mut out = MaybeUninit::new(T::defaults());
    let dst = out.as_mut_ptr().cast::<u8>();
    // SAFETY: `known` bytes are readable at `base` and writable in `out`; byte copies may
    // carry the caller's padding, which is never read as a value.
    unsafe { std::ptr::copy_nonoverlapping(base, dst, known) };
    for &off in T::BOOL_OFFSETS {
        if off < known {
            // SAFETY: `off` is a bool field inside the copied prefix; C code may have put
            // any byte there (memset, garbage), and Rust bools must be 0 or 1.
            unsafe {
                let b = dst.add(off);
                b.write(u8::from(b.read() != 0));
            }
        }
    }
    // SAFETY: started from a valid `T`; the copied fields are valid for any bit pattern
    // (the trait's contract) and the bools were normalized.
    Ok(unsafe { out.assume_init() })
}

/// Writes the defaults into a caller's struct of `struct_size` bytes (the `_default`
/// functions): the fields this library knows, zeros after them.
///
/// # Safety
/// When non-NULL, `out` points to `struct_size` writable bytes.
pub(crate) unsafe fn write_defaults<T: Versioned>(out: *mut T, struct_size: usize) -> FfiResult {
    // SAFETY: forwarded contract.
    unsafe { write_versioned(out, struct_size, T::defaults(), "params") }
}

/// Writes `v` into a caller's struct of `struct_size` bytes: as much of `v` as fits,
/// zeros for fields of a newer version, and `struct_size` itself.
///
/// # Safety
/// When non-NULL, `out` points to `struct_size` writable bytes.
pub(crate) unsafe fn write_versioned<T: Versioned>(
    out: *mut T,
    struct_size: usize,
    mut v: T,
    what: &str,
) -> FfiResult {
    if out.is_null() {
        return Err(Fail::null(what));
    }
    let size = u32::try_from(struct_size)
        .map_err(|_| Fail::invalid(format!("struct_size {struct_size} is too large")))
        .and_then(check_struct_size::<T>)?;
    v.set_size(size as u32);
    let mut bytes = vec![0u8; size_of::<T>()];
    let src = (&v as *const T).cast::<u8>();
    for (off, len) in v.spans() {
        // SAFETY: a field of `v`: initialized bytes inside it.
        let field = unsafe { std::slice::from_raw_parts(src.add(off), len) };
        bytes[off..off + len].copy_from_slice(field);
    }
    let base = out.cast::<u8>();
    let known = size.min(size_of::<T>());
    // SAFETY: `known <= size` bytes are writable at `base` (the caller's contract).
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), base, known);
        std::ptr::write_bytes(base.add(known), 0, size - known);
    }
    Ok(())
}

/// Checks an out-struct's `struct_size` before any work is done, so that a bad one does
/// not waste (or half-report) a long call.
///
/// # Safety
/// When non-NULL, `out` points to at least 4 readable bytes.
pub(crate) unsafe fn check_out_struct<T: Versioned>(out: *const T) -> FfiResult {
    if out.is_null() {
        return Ok(());
    }
    // SAFETY: non-NULL; `struct_size` is the first field.
    check_struct_size::<T>(unsafe { out.cast::<u32>().read_unaligned() }).map(|_| ())
}

/// Fills an out-struct whose `struct_size` the caller set (`ember_model_get_info`...).
///
/// # Safety
/// When non-NULL, `out` points to `out->struct_size` writable bytes.
pub(crate) unsafe fn write_out_struct<T: Versioned>(out: *mut T, v: T) -> FfiResult {
    if out.is_null() {
        return Err(Fail::null("out"));
    }
    // SAFETY: non-NULL; `struct_size` is the first field.
    let size = unsafe { out.cast::<u32>().read_unaligned() } as usize;
    // SAFETY: forwarded contract.
    unsafe { write_versioned(out, size, v, "out") }
}

// ---------------------------------------------------------------------------------------
// Exclusive use of a context or sampler.
// ---------------------------------------------------------------------------------------

/// Exclusive access to a handle's contents for the length of one call, taken with a
/// compare-and-swap so that a re-entrant or concurrent call is refused, not raced.
pub(crate) struct Busy<'a, T> {
    flag: &'a AtomicBool,
    val: &'a mut T,
}

impl<'a, T> Busy<'a, T> {
    /// # Safety
    /// `cell` belongs to a live handle whose `flag` guards it.
    pub(crate) unsafe fn take(
        flag: &'a AtomicBool,
        cell: &'a std::cell::UnsafeCell<T>,
        what: &str,
    ) -> FfiResult<Busy<'a, T>> {
        if flag
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(Fail::new(
                EMBER_ERR_BUSY,
                format!(
                    "the {what} is in use by another call (a callback re-entering ember, \
                     or two threads sharing it)"
                ),
            ));
        }
        Ok(Busy {
            flag,
            // SAFETY: the flag was false and is now ours: no other reference to the
            // contents exists until it is cleared in `drop`.
            val: unsafe { &mut *cell.get() },
        })
    }
}

impl<T> std::ops::Deref for Busy<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.val
    }
}

impl<T> std::ops::DerefMut for Busy<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.val
    }
}

impl<T> Drop for Busy<'_, T> {
    fn drop(&mut self) {
        self.flag.store(false, Ordering::Release);
    }
}

// ---------------------------------------------------------------------------------------
// Library-wide functions.
// ---------------------------------------------------------------------------------------

/// The library version, e.g. "0.1.0". Static storage: never free it. Thread-safe.
#[no_mangle]
pub extern "C" fn ember_version() -> *const c_char {
    const V: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => c"unknown",
        };
    V.as_ptr()
}

/// The ABI version of the loaded library (compare with `EMBER_ABI_VERSION`). Thread-safe.
#[no_mangle]
pub extern "C" fn ember_abi_version() -> u32 {
    EMBER_ABI_VERSION
}

/// The message describing why the last failed ember call on this thread failed, or ""
/// when the last call succeeded. Never NULL. The string belongs to ember and stays valid
/// until the next ember call on the same thread (copy it to keep it). Thread-safe: each
/// thread has its own message. Does not itself change the message.
#[no_mangle]
pub extern "C" fn ember_last_error() -> *const c_char {
    catch_unwind(|| {
        LAST_ERROR
            .try_with(|e| e.borrow().as_ptr().cast::<c_char>())
            .unwrap_or(c"".as_ptr())
    })
    .unwrap_or(c"".as_ptr())
}

/// The name of a status code ("EMBER_ERR_IO"), or "EMBER_ERR_UNKNOWN" for a number this
/// library does not know. Static storage. Thread-safe. Does not change the last error.
#[no_mangle]
pub extern "C" fn ember_status_name(status: i32) -> *const c_char {
    ember_status::ALL
        .iter()
        .find(|s| **s as i32 == status)
        .map_or(c"EMBER_ERR_UNKNOWN", |s| s.name())
        .as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_numbers_are_fixed() {
        // The numbers are ABI: this list may grow, never change.
        let want = [
            (EMBER_OK, 0),
            (EMBER_ERR_NULL_ARGUMENT, 1),
            (EMBER_ERR_INVALID_ARGUMENT, 2),
            (EMBER_ERR_IO, 3),
            (EMBER_ERR_MALFORMED_MODEL, 4),
            (EMBER_ERR_UNSUPPORTED, 5),
            (EMBER_ERR_INVALID_TOKEN, 6),
            (EMBER_ERR_INVALID_UTF8, 7),
            (EMBER_ERR_CONTEXT_FULL, 8),
            (EMBER_ERR_BUFFER_TOO_SMALL, 9),
            (EMBER_ERR_ABORTED, 10),
            (EMBER_ERR_INVALID_STATE, 11),
            (EMBER_ERR_CANCELLED, 12),
            (EMBER_ERR_NOT_FOUND, 13),
            (EMBER_ERR_BUSY, 14),
            (EMBER_ERR_TEMPLATE, 15),
            (EMBER_ERR_PANIC, 16),
            (EMBER_ERR_OVER_BUDGET, 17),
        ];
        assert_eq!(want.len(), ember_status::ALL.len());
        for (s, n) in want {
            assert_eq!(s as i32, n);
            // SAFETY: ember_status_name returns a static NUL-terminated string.
            let name = unsafe { CStr::from_ptr(ember_status_name(n)) };
            assert_eq!(name, s.name());
        }
    }

    fn check_spans<T: Versioned>(named: usize) {
        let mut spans = T::defaults().spans();
        assert_eq!(spans.len(), named, "{}: every field is listed", T::NAME);
        spans.sort_unstable();
        assert_eq!(spans[0], (0, 4), "{}: struct_size first", T::NAME);
        for w in spans.windows(2) {
            assert!(w[0].0 + w[0].1 <= w[1].0, "{}: fields overlap", T::NAME);
        }
        let (off, len) = spans[spans.len() - 1];
        assert!(off + len <= size_of::<T>());
        // Version 1 is the whole struct or ends where a later field starts.
        assert!(
            T::MIN_SIZE == size_of::<T>() || spans.iter().any(|&(o, _)| o == T::MIN_SIZE),
            "{}: MIN_SIZE {} is not a field boundary",
            T::NAME,
            T::MIN_SIZE
        );
        for &b in T::BOOL_OFFSETS {
            assert!(spans.contains(&(b, 1)), "{}: bool at {b}", T::NAME);
        }
    }

    #[test]
    fn versioned_structs_list_their_fields() {
        // The counts are the number of fields each struct declares.
        check_spans::<model::ember_model_params>(6);
        check_spans::<model::ember_model_info>(10);
        check_spans::<model::ember_model_memory>(4);
        check_spans::<context::ember_context_params>(7);
        check_spans::<context::ember_context_memory>(10);
        check_spans::<context::ember_context_info>(9);
        check_spans::<sampler::ember_sampler_params>(12);
        check_spans::<generate::ember_generate_params>(9);
        check_spans::<generate::ember_generate_result>(6);
        check_spans::<chat::ember_chat_params>(6);
        check_spans::<chat::ember_chat_result>(9);
        check_spans::<chat::ember_chat_info>(6);
    }

    #[test]
    fn padding_goes_out_as_zeros() {
        let mut out = [0xAAu8; size_of::<model::ember_model_params>() + 8];
        // SAFETY: `out` has that many writable bytes.
        let st = unsafe {
            write_defaults(
                out.as_mut_ptr().cast::<model::ember_model_params>(),
                out.len(),
            )
        };
        assert!(st.is_ok());
        let spans = model::ember_model_params::defaults().spans();
        for (i, &b) in out.iter().enumerate() {
            let in_field = spans.iter().any(|&(o, l)| (o..o + l).contains(&i));
            if !in_field {
                assert_eq!(b, 0, "byte {i}");
            }
        }
    }

    #[test]
    fn panics_become_a_status_and_a_message() {
        let st = ffi_call("t", || panic!("boom"));
        assert_eq!(st, EMBER_ERR_PANIC);
        // SAFETY: ember_last_error never returns NULL and the string lives until the next call.
        let msg = unsafe { CStr::from_ptr(ember_last_error()) };
        assert!(msg.to_str().unwrap().contains("boom"), "{msg:?}");
        assert_eq!(ffi_call("t", || Ok(())), EMBER_OK);
        // SAFETY: as above.
        let msg = unsafe { CStr::from_ptr(ember_last_error()) };
        assert!(msg.is_empty());
    }
}
