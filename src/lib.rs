//! ember: run large language models on the device, from GGUF files, through a safe Rust
//! API and a stable C ABI.

pub mod chat;
pub mod error;
pub mod ffi;
mod fnv;
pub mod gguf;
mod heap;
pub mod kernels;
pub mod model;
pub mod quant;
pub mod runtime;
pub mod sampling;
pub mod tokenizer;

/// Rounds for a randomized or exhaustive unit test: all of them natively; under Miri,
/// which interprets ~100x slower, EMBER_MIRI_PERCENT of them (default 2, at least 1), so
/// every code path still runs on fewer inputs (tools/miri forwards the variable).
#[cfg(test)]
pub(crate) fn test_rounds(native: usize) -> usize {
    if !cfg!(miri) {
        return native;
    }
    let percent = std::env::var("EMBER_MIRI_PERCENT")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(2);
    (native * percent / 100).clamp(1, native)
}

pub use error::{Error, Result};
pub use gguf::{GgufFile, LoadOptions};
pub use model::{Model, ModelConfig, ModelParams};
pub use quant::GgmlType;
pub use runtime::chat::{ChatParams, ChatSession, ChatStats};
pub use runtime::generate::{Control, GenerateParams, GenerateStats, StopReason};
pub use runtime::{AbortHandle, Context, ContextMemory, ContextParams, KvType, ModelMemory};
pub use sampling::{Sampler, SamplerParams};
pub use tokenizer::{EncodeOptions, StreamDecoder, Token, TokenAttr, Tokenizer, TokenizerKind};
