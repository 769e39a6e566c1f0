//! OLMoE: llama-shaped attention with NeoX RoPE and an RMSNorm over the whole query row and
//! the whole key row (not per head), then 64 routed experts whose top-k softmax weights are
//! used as they are, without renormalisation.

use crate::error::{Error, Result};

use super::blocks::{self, blk, LayerWeights};
use super::config::{Hparams, ModelConfig, RopeLayout};
use super::family::Family;
use super::weights::{self, Loader};

pub const OLMOE: Family = Family {
    name: "olmoe",
    archs: &["olmoe"],
    rope_layout: RopeLayout::Neox,
    configure,
    layer,
    freq_factors: weights::rope_freqs,
};

fn configure(hp: &Hparams<'_>, c: &mut ModelConfig) -> Result<()> {
    if c.moe.is_none() {
        return Err(Error::meta(hp.key("expert_count"), "olmoe needs experts"));
    }
    Ok(())
}

fn layer(l: &Loader<'_>, c: &ModelConfig, il: usize) -> Result<LayerWeights> {
    let mut attn = blocks::attention(l, c, il)?;
    attn.q_norm = Some(l.vec(&blk(il, "attn_q_norm.weight"), c.q_dim())?);
    attn.k_norm = Some(l.vec(&blk(il, "attn_k_norm.weight"), c.kv_dim())?);
    Ok(LayerWeights {
        attn,
        ffn: blocks::feed_forward(l, c, il)?,
    })
}
