//! Phi-3 / Phi-3.5 / Phi-4 mini: one fused q·k·v projection, gate and up stacked in one
//! matrix, NeoX RoPE with LongRoPE frequency factors (short within the original training
//! length, long beyond it) and the attention factor the file carries.

use crate::error::Result;

use super::blocks::{self, blk, FeedForward, Ffn, LayerWeights};
use super::config::{Hparams, ModelConfig, RopeLayout};
use super::family::Family;
use super::weights::{self, FreqFactors, Loader};

pub const PHI3: Family = Family {
    name: "phi3",
    archs: &["phi3"],
    rope_layout: RopeLayout::Neox,
    configure,
    layer,
    freq_factors,
};

fn configure(_: &Hparams<'_>, _: &mut ModelConfig) -> Result<()> {
    // Phi-3's `attention.sliding_window` is ignored, as llama.cpp does: the converted files
    // give the value without saying which layers use it.
    Ok(())
}

fn layer(l: &Loader<'_>, c: &ModelConfig, il: usize) -> Result<LayerWeights> {
    let n = |s: &str| blk(il, s);
    let ffn = if l.has(&n("ffn_gate.weight")) {
        blocks::feed_forward(l, c, il)?
    } else {
        FeedForward {
            norm: l.vec(&n("ffn_norm.weight"), c.n_embd)?,
            ffn: Ffn::FusedGateUp {
                gate_up: l.mat(&n("ffn_up.weight"), c.n_embd, 2 * c.n_ff)?,
                down: l.mat(&n("ffn_down.weight"), c.n_ff, c.n_embd)?,
            },
            post_norm: None,
        }
    };
    Ok(LayerWeights {
        attn: blocks::attention(l, c, il)?,
        ffn,
    })
}

fn freq_factors(l: &Loader<'_>, c: &ModelConfig) -> Result<FreqFactors> {
    let half = c.rope.n_dims / 2;
    let short = l.vec_opt("rope_factors_short.weight", half)?;
    let long = l.vec_opt("rope_factors_long.weight", half)?;
    let orig_ctx = l
        .file()
        .u32_opt(&format!(
            "{}.rope.scaling.original_context_length",
            c.arch_name
        ))?
        .map_or(c.n_ctx_train, |v| v as usize);
    Ok(match (short, long) {
        (Some(short), Some(long)) => FreqFactors::ByContext {
            short,
            long,
            orig_ctx,
        },
        (Some(f), None) | (None, Some(f)) => FreqFactors::Fixed(f),
        (None, None) => weights::rope_freqs(l, c)?,
    })
}
