//! Gemma 2 and 3: embeddings scaled by sqrt(n_embd), GeGLU, NeoX RoPE, "sandwich" norms
//! after attention and after the FFN, and sliding-window attention on most layers.
//! Gemma 2 soft-caps the attention scores and the final logits and alternates local and
//! global layers; Gemma 3 replaces the attention cap by RMSNorm of each q and k head, puts
//! five local layers before each global one, and gives local layers their own RoPE base.

use crate::error::Result;

use super::blocks::{self, blk, LayerWeights};
use super::config::{Activation, Hparams, ModelConfig, Rope, RopeLayout, RopeScaling};
use super::family::Family;
use super::weights::{self, Loader};

pub const GEMMA: Family = Family {
    name: "gemma",
    archs: &["gemma2", "gemma3"],
    rope_layout: RopeLayout::Neox,
    configure,
    layer,
    freq_factors: weights::rope_freqs,
};

fn configure(hp: &Hparams<'_>, c: &mut ModelConfig) -> Result<()> {
    let gemma2 = hp.arch == "gemma2";
    c.activation = Activation::GeluTanh;
    c.embed_scale = Some((c.n_embd as f32).sqrt());
    c.final_logit_softcap = hp.softcap("final_logit_softcapping")?;
    // gemma_pytorch scales queries by the head size except for the 27B models, which use
    // n_embd / n_head (llama.cpp keys that on the layer count).
    let big = (gemma2 && c.n_layer == 46) || (!gemma2 && c.n_layer == 62);
    let scale_dim = if big { c.n_embd / c.n_head } else { c.head_dim };
    c.attn_scale = 1.0 / (scale_dim as f32).sqrt();
    // Gemma 2 alternates local and global layers (local first) with a 4096 window; Gemma 3
    // puts five local layers before each global one. Local layers have their own RoPE base.
    let (window, pattern, swa_base) = if gemma2 {
        c.attn_softcap = hp.softcap("attn_logit_softcapping")?;
        (4096, 2, c.rope.base)
    } else {
        (0, 6, 10000.0)
    };
    let window = hp.u32_opt("attention.sliding_window")?.unwrap_or(window) as usize;
    let pattern = hp
        .u32_opt("attention.sliding_window_pattern")?
        .unwrap_or(pattern) as usize;
    c.set_sliding_window(window, |il| pattern == 0 || il % pattern < pattern - 1);
    if window > 0 {
        c.rope_swa = Rope {
            base: hp.f32_opt("rope.freq_base_swa")?.unwrap_or(swa_base),
            scaling: if gemma2 {
                c.rope.scaling
            } else {
                RopeScaling::None
            },
            ..c.rope
        };
    }
    Ok(())
}

fn layer(l: &Loader<'_>, c: &ModelConfig, il: usize) -> Result<LayerWeights> {
    let n = |s: &str| blk(il, s);
    let mut attn = blocks::attention(l, c, il)?;
    attn.q_norm = l.vec_opt(&n("attn_q_norm.weight"), c.head_dim)?;
    attn.k_norm = l.vec_opt(&n("attn_k_norm.weight"), c.head_dim)?;
    attn.post_norm = Some(l.vec(&n("post_attention_norm.weight"), c.n_embd)?);
    let mut ffn = blocks::feed_forward(l, c, il)?;
    ffn.post_norm = Some(l.vec(&n("post_ffw_norm.weight"), c.n_embd)?);
    Ok(LayerWeights { attn, ffn })
}
