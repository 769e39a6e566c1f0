//! llama and its look-alikes (mistral, SmolLM, Mixtral): pre-norm blocks, SwiGLU, RoPE on
//! adjacent pairs (how llama GGUFs store q and k), optional Llama 3 frequency factors,
//! a Mistral-style sliding window over every layer, and Mixtral's routed experts.

use crate::error::Result;

use super::blocks::{self, LayerWeights};
use super::config::{Hparams, ModelConfig, RopeLayout};
use super::family::Family;
use super::weights::{self, Loader};

pub const LLAMA: Family = Family {
    name: "llama",
    archs: &["llama", "mistral", "smollm"],
    rope_layout: RopeLayout::Normal,
    configure,
    layer,
    freq_factors: weights::rope_freqs,
};

fn configure(hp: &Hparams<'_>, c: &mut ModelConfig) -> Result<()> {
    // Mistral 7B v0.1 attends to the last 4096 keys in every layer. llama.cpp ignores the
    // key on this architecture; the model does not, so ember honours it.
    if let Some(w) = hp.u32_opt("attention.sliding_window")? {
        c.set_sliding_window(w as usize, |_| true);
    }
    if let Some(m) = &mut c.moe {
        // Mixtral renormalises the top-k softmax weights to sum to 1.
        m.norm_weights = hp.bool_opt("expert_weights_norm")?.unwrap_or(true);
    }
    Ok(())
}

fn layer(l: &Loader<'_>, c: &ModelConfig, il: usize) -> Result<LayerWeights> {
    Ok(LayerWeights {
        attn: blocks::attention(l, c, il)?,
        ffn: blocks::feed_forward(l, c, il)?,
    })
}
