//! Per-conversation state: contexts, KV cache, state save/load.

pub mod context;

pub use crate::model::kv::{self, KvType};
pub use context::{AbortHandle, Context, ContextParams};
pub mod chat;
pub mod generate;
pub mod perplexity;
pub mod state;
