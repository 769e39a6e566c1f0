#![no_main]
//! See ember_fuzz::run_tokenizer; the tokenizer is loaded once per process.

use std::sync::OnceLock;

use ember::Tokenizer;
use libfuzzer_sys::fuzz_target;

static TOK: OnceLock<Tokenizer> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let tok = TOK.get_or_init(ember_fuzz::bpe_tokenizer);
    ember_fuzz::run_tokenizer(tok, data);
});
