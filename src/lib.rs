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

pub use error::{Error, Result};
pub use gguf::{GgufFile, LoadOptions};
pub use model::{Model, ModelConfig, ModelParams};
pub use quant::GgmlType;
pub use runtime::chat::{ChatParams, ChatSession, ChatStats};
pub use runtime::generate::{Control, GenerateParams, GenerateStats, StopReason};
pub use runtime::{AbortHandle, Context, ContextMemory, ContextParams, KvType, ModelMemory};
pub use sampling::{Sampler, SamplerParams};
pub use tokenizer::{EncodeOptions, StreamDecoder, Token, TokenAttr, Tokenizer, TokenizerKind};
