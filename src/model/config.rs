//! Model hyper-parameters read from GGUF metadata, with llama.cpp's defaults where a key
//! is optional.

use crate::error::{Error, Result};
use crate::gguf::GgufFile;

/// The architecture families ember runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// llama, mistral, smollm and other llama-shaped models.
    Llama,
    /// qwen2: llama with biases on q, k and v, NeoX RoPE.
    Qwen2,
    /// gemma3: scaled embeddings, q/k norms, sandwich norms, GeGLU, interleaved sliding window.
    Gemma3,
}

impl Arch {
    pub fn from_name(name: &str) -> Result<Arch> {
        match name {
            "llama" | "mistral" | "smollm" => Ok(Arch::Llama),
            "qwen2" => Ok(Arch::Qwen2),
            "gemma3" => Ok(Arch::Gemma3),
            other => Err(Error::Unsupported(format!(
                "architecture '{other}' (ember runs llama, mistral, qwen2 and gemma3)"
            ))),
        }
    }
}

/// How rotary position embeddings pair up dimensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeLayout {
    /// Adjacent pairs (x[2i], x[2i+1]): ggml's "normal" mode, used by llama GGUFs.
    Normal,
    /// Halves (x[i], x[i + d/2]): GPT-NeoX style, used by gemma and qwen.
    Neox,
}

/// Context-extension scaling of RoPE frequencies.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor`.
    Linear {
        factor: f32,
    },
    /// YaRN: interpolation blended with extrapolation per dimension, plus attention scaling.
    Yarn {
        factor: f32,
        orig_ctx: u32,
        beta_fast: f32,
        beta_slow: f32,
        attn_factor: f32,
    },
}

/// Rotary embedding parameters for one kind of layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rope {
    pub base: f32,
    pub n_dims: usize,
    pub layout: RopeLayout,
    pub scaling: RopeScaling,
}

/// Everything the forward pass needs to know about a model's shape.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    pub arch: Arch,
    /// `general.architecture` as written in the file.
    pub arch_name: String,
    pub name: Option<String>,
    pub n_vocab: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub head_dim_v: usize,
    pub n_ff: usize,
    pub rms_eps: f32,
    pub n_ctx_train: usize,
    /// RoPE for full-attention layers.
    pub rope: Rope,
    /// RoPE for sliding-window layers (same as `rope` when there are none).
    pub rope_swa: Rope,
    /// Sliding window size (keys at distance >= window are masked), 0 when unused.
    pub sliding_window: usize,
    /// Per layer: does it use the sliding window?
    pub swa_layers: Vec<bool>,
    /// Multiplier applied to q·k.
    pub attn_scale: f32,
    /// Multiply the embeddings by sqrt(n_embd) (gemma).
    pub embed_scale: Option<f32>,
    /// tanh soft-capping of the final logits (0 = off).
    pub final_logit_softcap: f32,
}

impl ModelConfig {
    /// Reads the configuration of `file`, checking every value ember relies on.
    pub fn from_gguf(file: &GgufFile) -> Result<ModelConfig> {
        let arch_name = file.str("general.architecture")?.to_string();
        let arch = Arch::from_name(&arch_name)?;
        let k = |s: &str| format!("{arch_name}.{s}");

        let positive = |key: String, v: u32| -> Result<usize> {
            if v == 0 {
                Err(Error::meta(key, "must be greater than 0"))
            } else {
                Ok(v as usize)
            }
        };
        let n_embd = positive(k("embedding_length"), file.u32(&k("embedding_length"))?)?;
        let n_layer = positive(k("block_count"), file.u32(&k("block_count"))?)?;
        let n_ff = positive(
            k("feed_forward_length"),
            file.u32(&k("feed_forward_length"))?,
        )?;
        let n_head = positive(
            k("attention.head_count"),
            file.u32(&k("attention.head_count"))?,
        )?;
        let n_head_kv = match file.u32_opt(&k("attention.head_count_kv"))? {
            Some(v) => positive(k("attention.head_count_kv"), v)?,
            None => n_head,
        };
        if n_head % n_head_kv != 0 {
            return Err(Error::meta(
                k("attention.head_count_kv"),
                format!("{n_head_kv} does not divide head_count {n_head}"),
            ));
        }
        let head_dim = match file.u32_opt(&k("attention.key_length"))? {
            Some(v) => positive(k("attention.key_length"), v)?,
            None => n_embd / n_head,
        };
        let head_dim_v = match file.u32_opt(&k("attention.value_length"))? {
            Some(v) => positive(k("attention.value_length"), v)?,
            None => n_embd / n_head,
        };
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(Error::meta(
                k("attention.key_length"),
                format!("head size {head_dim} must be even and positive"),
            ));
        }
        let rms_eps = file.f32(&k("attention.layer_norm_rms_epsilon"))?;
        if !(rms_eps.is_finite() && rms_eps >= 0.0) {
            return Err(Error::meta(
                k("attention.layer_norm_rms_epsilon"),
                format!("{rms_eps} is not a valid epsilon"),
            ));
        }
        let n_ctx_train = file.u32_opt(&k("context_length"))?.unwrap_or(2048).max(1) as usize;
        let n_vocab = match file.u32_opt(&k("vocab_size"))? {
            Some(v) => v as usize,
            None => file.array("tokenizer.ggml.tokens")?.len(),
        };

        let n_rot = file
            .u32_opt(&k("rope.dimension_count"))?
            .map(|v| v as usize)
            .unwrap_or(head_dim);
        if n_rot == 0 || n_rot > head_dim || n_rot % 2 != 0 {
            return Err(Error::meta(
                k("rope.dimension_count"),
                format!("{n_rot} must be even and at most the head size {head_dim}"),
            ));
        }
        let base = file.f32_opt(&k("rope.freq_base"))?.unwrap_or(10000.0);
        if !(base.is_finite() && base > 0.0) {
            return Err(Error::meta(
                k("rope.freq_base"),
                format!("{base} is not a valid base"),
            ));
        }
        let layout = match arch {
            Arch::Llama => RopeLayout::Normal,
            Arch::Qwen2 | Arch::Gemma3 => RopeLayout::Neox,
        };
        let scaling = rope_scaling(file, &arch_name, n_ctx_train)?;
        let rope = Rope {
            base,
            n_dims: n_rot,
            layout,
            scaling,
        };

        let mut sliding_window = 0usize;
        let mut swa_layers = vec![false; n_layer];
        let mut rope_swa = rope;
        let mut attn_scale = 1.0 / (head_dim as f32).sqrt();
        let mut embed_scale = None;
        let mut final_logit_softcap = 0.0;
        if arch == Arch::Gemma3 {
            embed_scale = Some((n_embd as f32).sqrt());
            final_logit_softcap = file.f32_opt(&k("final_logit_softcapping"))?.unwrap_or(0.0);
            if let Some(w) = file.u32_opt(&k("attention.sliding_window"))? {
                if w > 0 {
                    sliding_window = w as usize;
                    // Five local layers, then one global, unless the file says otherwise.
                    let pattern = file
                        .u32_opt(&k("attention.sliding_window_pattern"))?
                        .unwrap_or(6) as usize;
                    for (il, s) in swa_layers.iter_mut().enumerate() {
                        *s = pattern == 0 || il % pattern < pattern - 1;
                    }
                    rope_swa = Rope {
                        base: file.f32_opt(&k("rope.freq_base_swa"))?.unwrap_or(10000.0),
                        scaling: RopeScaling::None,
                        ..rope
                    };
                }
            }
            // gemma_pytorch scales queries by the head size except for the 27B model.
            attn_scale = if n_layer == 62 {
                1.0 / ((n_embd / n_head) as f32).sqrt()
            } else {
                1.0 / (head_dim as f32).sqrt()
            };
        }

        Ok(ModelConfig {
            arch,
            arch_name,
            name: file.str_opt("general.name")?.map(str::to_string),
            n_vocab,
            n_embd,
            n_layer,
            n_head,
            n_head_kv,
            head_dim,
            head_dim_v,
            n_ff,
            rms_eps,
            n_ctx_train,
            rope,
            rope_swa,
            sliding_window,
            swa_layers,
            attn_scale,
            embed_scale,
            final_logit_softcap,
        })
    }

    /// Width of the key (and value) rows one layer stores per token.
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    pub fn kv_dim_v(&self) -> usize {
        self.n_head_kv * self.head_dim_v
    }

    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }
}

fn rope_scaling(file: &GgufFile, arch: &str, n_ctx_train: usize) -> Result<RopeScaling> {
    let k = |s: &str| format!("{arch}.{s}");
    let kind = file.str_opt(&k("rope.scaling.type"))?.unwrap_or("linear");
    let factor = match file.f32_opt(&k("rope.scaling.factor"))? {
        Some(f) => f,
        None => file.f32_opt(&k("rope.scale_linear"))?.unwrap_or(0.0),
    };
    if !factor.is_finite() || factor < 0.0 {
        return Err(Error::meta(
            k("rope.scaling.factor"),
            format!("{factor} is not a valid factor"),
        ));
    }
    let attn_factor = file.f32_opt(&k("rope.scaling.attn_factor"))?.unwrap_or(1.0);
    Ok(match kind {
        "none" => RopeScaling::None,
        "linear" if factor == 0.0 || factor == 1.0 => RopeScaling::None,
        "linear" => RopeScaling::Linear { factor },
        "yarn" if factor == 0.0 || factor == 1.0 => RopeScaling::None,
        "yarn" => RopeScaling::Yarn {
            factor,
            orig_ctx: file
                .u32_opt(&k("rope.scaling.original_context_length"))?
                .unwrap_or(n_ctx_train as u32),
            beta_fast: 32.0,
            beta_slow: 1.0,
            attn_factor,
        },
        other => {
            return Err(Error::Unsupported(format!(
                "RoPE scaling type '{other}' in {}",
                k("rope.scaling.type")
            )))
        }
    })
}
