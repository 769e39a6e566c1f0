//! Qwen 2 and 3, dense and MoE: llama-shaped blocks with NeoX RoPE. Qwen 2 adds biases to
//! q, k and v (read wherever the file has them); Qwen 3 drops them for an RMSNorm of each
//! query and key head. The MoE variants route each token to the top-k experts: Qwen 3
//! renormalises their weights, Qwen 2 does not but adds a shared expert behind a sigmoid gate.

use crate::error::{Error, Result};

use super::blocks::{self, blk, LayerWeights};
use super::config::{Hparams, ModelConfig, RopeLayout};
use super::family::Family;
use super::weights::{self, Loader};

pub const QWEN2: Family = Family {
    name: "qwen2",
    archs: &["qwen2", "qwen2moe"],
    rope_layout: RopeLayout::Neox,
    configure: configure_qwen2,
    layer: layer_qwen2,
    freq_factors: weights::rope_freqs,
};

pub const QWEN3: Family = Family {
    name: "qwen3",
    archs: &["qwen3", "qwen3moe"],
    rope_layout: RopeLayout::Neox,
    configure: configure_qwen3,
    layer: layer_qwen3,
    freq_factors: weights::rope_freqs,
};

fn configure_qwen2(hp: &Hparams<'_>, c: &mut ModelConfig) -> Result<()> {
    expect_moe(hp, c, "qwen2moe")?;
    if let Some(m) = &mut c.moe {
        // Without the key, llama.cpp sizes the shared expert like the dense FFN.
        if m.n_ff_shexp == 0 {
            m.n_ff_shexp = c.n_ff;
        }
    }
    Ok(())
}

fn configure_qwen3(hp: &Hparams<'_>, c: &mut ModelConfig) -> Result<()> {
    expect_moe(hp, c, "qwen3moe")?;
    if let Some(m) = &mut c.moe {
        m.norm_weights = hp.bool_opt("expert_weights_norm")?.unwrap_or(true);
    }
    Ok(())
}

/// The MoE architecture name must come with experts, and only it.
fn expect_moe(hp: &Hparams<'_>, c: &ModelConfig, moe_arch: &str) -> Result<()> {
    if (hp.arch == moe_arch) != c.moe.is_some() {
        return Err(Error::meta(
            hp.key("expert_count"),
            format!("{} needs it set and other archs not", moe_arch),
        ));
    }
    Ok(())
}

fn layer_qwen2(l: &Loader<'_>, c: &ModelConfig, il: usize) -> Result<LayerWeights> {
    Ok(LayerWeights {
        attn: blocks::attention(l, c, il)?,
        ffn: blocks::feed_forward(l, c, il)?,
    })
}

fn layer_qwen3(l: &Loader<'_>, c: &ModelConfig, il: usize) -> Result<LayerWeights> {
    let mut attn = blocks::attention(l, c, il)?;
    attn.q_norm = Some(l.vec(&blk(il, "attn_q_norm.weight"), c.head_dim)?);
    attn.k_norm = Some(l.vec(&blk(il, "attn_k_norm.weight"), c.head_dim)?);
    Ok(LayerWeights {
        attn,
        ffn: blocks::feed_forward(l, c, il)?,
    })
}
