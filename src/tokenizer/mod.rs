//! Tokenizers (placeholder for the token type until the tokenizer lands).

/// A token id.
pub type Token = u32;
