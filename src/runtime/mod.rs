//! Per-conversation state: contexts, KV cache, state save/load.

pub mod context;
pub mod memory;

pub use crate::model::kv::{self, KvType};
pub use context::{AbortHandle, Context, ContextParams};
pub use memory::{ContextMemory, ModelMemory};
pub mod chat;
pub mod generate;
pub mod perplexity;
pub mod state;
