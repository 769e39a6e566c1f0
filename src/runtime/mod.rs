//! Per-conversation state: contexts, KV cache, state save/load.

pub mod context;
pub mod kv;

pub use context::{AbortHandle, Context, ContextParams};
pub use kv::KvType;
pub mod chat;
pub mod generate;
pub mod perplexity;
pub mod state;
