//! ember: run large language models on the device, from GGUF files, through a safe Rust
//! API and a stable C ABI.

pub mod error;
pub mod gguf;
pub mod quant;
pub mod tokenizer;

pub use error::{Error, Result};
pub use gguf::{GgufFile, LoadOptions};
pub use quant::GgmlType;
pub use tokenizer::{EncodeOptions, StreamDecoder, Token, TokenAttr, Tokenizer, TokenizerKind};
pub mod kernels;
