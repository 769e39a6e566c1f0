#![no_main]
//! See ember_fuzz::run_gguf.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ember_fuzz::run_gguf(data));
