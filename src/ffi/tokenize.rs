//! Text to tokens and back, and the special tokens.

use std::ffi::c_char;

use super::model::ember_model;
use super::{
    ember_status, ember_token, ffi_call, fill_text, handle, out_ptr, put, slice_arg, text_arg,
    Fail, OutBuf,
};
use crate::tokenizer::EncodeOptions;

/// `ember_token_special()` kind: beginning of sequence.
pub const EMBER_SPECIAL_BOS: u32 = 0;
/// End of sequence.
pub const EMBER_SPECIAL_EOS: u32 = 1;
/// End of turn (chat models).
pub const EMBER_SPECIAL_EOT: u32 = 2;
/// End of message.
pub const EMBER_SPECIAL_EOM: u32 = 3;
/// Unknown token.
pub const EMBER_SPECIAL_UNK: u32 = 4;
/// Separator.
pub const EMBER_SPECIAL_SEP: u32 = 5;
/// Padding.
pub const EMBER_SPECIAL_PAD: u32 = 6;
/// Mask.
pub const EMBER_SPECIAL_MASK: u32 = 7;
/// Fill-in-the-middle: prefix.
pub const EMBER_SPECIAL_FIM_PRE: u32 = 8;
/// Fill-in-the-middle: suffix.
pub const EMBER_SPECIAL_FIM_SUF: u32 = 9;
/// Fill-in-the-middle: middle.
pub const EMBER_SPECIAL_FIM_MID: u32 = 10;

/// Tokenizes `text_len` bytes of UTF-8 at `text` (no NUL needed; NULL is allowed when
/// `text_len` is 0) into `tokens`, a buffer of `capacity` ids. `*n_tokens` receives the
/// number of tokens the text needs (buffer rules above: `EMBER_ERR_BUFFER_TOO_SMALL`
/// when `capacity` is less; `tokens` NULL with `capacity` 0 asks for the count).
/// `add_special` adds BOS/EOS where the model's metadata asks for them; `parse_special`
/// turns the text of control tokens (e.g. "<|im_start|>") into those tokens. Invalid
/// UTF-8 gives `EMBER_ERR_INVALID_UTF8`. Thread-safe.
///
/// # Safety
/// `model` is NULL or live; `text` is NULL or has `text_len` readable bytes; `tokens` has
/// room for `capacity` ids; `n_tokens` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ember_tokenize(
    model: *const ember_model,
    text: *const c_char,
    text_len: usize,
    add_special: bool,
    parse_special: bool,
    tokens: *mut ember_token,
    capacity: usize,
    n_tokens: *mut usize,
) -> ember_status {
    ffi_call("ember_tokenize", || {
        // SAFETY: the caller's contract.
        let out = unsafe { OutBuf::new(tokens, capacity, n_tokens) }?;
        // SAFETY: the caller's contract.
        let m = &unsafe { handle(model, "model") }?.model;
        // SAFETY: the caller's contract.
        let text = unsafe { text_arg(text, text_len, "text") }?;
        let tok = m.tokenizer();
        let ids = tok.encode_with(
            text,
            &EncodeOptions {
                add_bos: Some(add_special && tok.add_bos()),
                add_eos: Some(add_special && tok.add_eos()),
                parse_special,
            },
        )?;
        out.fill(&[&ids], None)
    })
}

/// Turns `n_tokens` ids into text, NUL-terminated, in `buf` of `capacity` bytes
/// (buffer rules above). `remove_special` drops a leading BOS and trailing EOS that the
/// model adds itself; `unparse_special` renders control tokens as their text. The bytes
/// are UTF-8 unless the tokens cut a character in two. Thread-safe.
///
/// # Safety
/// `model` is NULL or live; `tokens` is NULL or has `n_tokens` readable ids; `buf` has
/// room for `capacity` bytes; `needed` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ember_detokenize(
    model: *const ember_model,
    tokens: *const ember_token,
    n_tokens: usize,
    remove_special: bool,
    unparse_special: bool,
    buf: *mut c_char,
    capacity: usize,
    needed: *mut usize,
) -> ember_status {
    ffi_call("ember_detokenize", || {
        // SAFETY: the caller's contract.
        let out = unsafe { OutBuf::new(buf, capacity, needed) }?;
        // SAFETY: the caller's contract.
        let m = &unsafe { handle(model, "model") }?.model;
        // SAFETY: the caller's contract.
        let ids = unsafe { slice_arg(tokens, n_tokens, "tokens") }?;
        let text = m.tokenizer().decode(ids, remove_special, unparse_special)?;
        fill_text(&out, &text)
    })
}

/// The text of one token, NUL-terminated, in `buf` of `capacity` bytes (buffer rules
/// above). With `special` false, control tokens render as "". A piece can be part of a
/// UTF-8 character (byte tokens): join pieces before showing them, or use
/// `ember_generate()`, which streams whole characters. Thread-safe.
///
/// # Safety
/// As for `ember_detokenize`.
#[no_mangle]
pub unsafe extern "C" fn ember_token_to_piece(
    model: *const ember_model,
    token: ember_token,
    special: bool,
    buf: *mut c_char,
    capacity: usize,
    needed: *mut usize,
) -> ember_status {
    ffi_call("ember_token_to_piece", || {
        // SAFETY: the caller's contract.
        let out = unsafe { OutBuf::new(buf, capacity, needed) }?;
        // SAFETY: the caller's contract.
        let m = &unsafe { handle(model, "model") }?.model;
        let piece = m.tokenizer().token_to_piece(token, special)?;
        fill_text(&out, piece)
    })
}

/// The id of a special token, `kind` one of `EMBER_SPECIAL_*`, in `*token`;
/// `EMBER_ERR_NOT_FOUND` when the model has no such token, `EMBER_ERR_INVALID_ARGUMENT`
/// for an unknown kind. Thread-safe.
///
/// # Safety
/// `model` is NULL or live; `token` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ember_token_special(
    model: *const ember_model,
    kind: u32,
    token: *mut ember_token,
) -> ember_status {
    ffi_call("ember_token_special", || {
        let out = out_ptr(token, "token")?;
        // SAFETY: the caller's contract.
        let m = &unsafe { handle(model, "model") }?.model;
        let s = m.tokenizer().special_tokens();
        let (name, id) = match kind {
            EMBER_SPECIAL_BOS => ("BOS", s.bos),
            EMBER_SPECIAL_EOS => ("EOS", s.eos),
            EMBER_SPECIAL_EOT => ("EOT", s.eot),
            EMBER_SPECIAL_EOM => ("EOM", s.eom),
            EMBER_SPECIAL_UNK => ("UNK", s.unk),
            EMBER_SPECIAL_SEP => ("SEP", s.sep),
            EMBER_SPECIAL_PAD => ("PAD", s.pad),
            EMBER_SPECIAL_MASK => ("MASK", s.mask),
            EMBER_SPECIAL_FIM_PRE => ("FIM_PRE", s.fim_pre),
            EMBER_SPECIAL_FIM_SUF => ("FIM_SUF", s.fim_suf),
            EMBER_SPECIAL_FIM_MID => ("FIM_MID", s.fim_mid),
            _ => return Err(Fail::invalid(format!("unknown special token kind {kind}"))),
        };
        let id = id.ok_or_else(|| {
            Fail::new(
                ember_status::EMBER_ERR_NOT_FOUND,
                format!("the model has no {name} token"),
            )
        })?;
        // SAFETY: checked non-NULL.
        unsafe { put(out, id) };
        Ok(())
    })
}

/// Whether `token` ends generation (EOS, EOT, EOM and the like) in `*is_eog`.
/// `EMBER_ERR_INVALID_TOKEN` for an id outside the vocabulary. Thread-safe.
///
/// # Safety
/// `model` is NULL or live; `is_eog` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ember_token_is_eog(
    model: *const ember_model,
    token: ember_token,
    is_eog: *mut bool,
) -> ember_status {
    ffi_call("ember_token_is_eog", || {
        let out = out_ptr(is_eog, "is_eog")?;
        // SAFETY: the caller's contract.
        let m = &unsafe { handle(model, "model") }?.model;
        let tok = m.tokenizer();
        tok.token_attr(token)?;
        // SAFETY: checked non-NULL.
        unsafe { put(out, tok.is_eog(token)) };
        Ok(())
    })
}
