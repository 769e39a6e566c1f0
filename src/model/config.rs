//! Model hyper-parameters read from GGUF metadata, with llama.cpp's defaults where a key
//! is optional.

use crate::error::{Error, Result};
use crate::gguf::GgufFile;

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
    },
}

/// Rotary embedding parameters for one kind of layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rope {
    pub base: f32,
    pub n_dims: usize,
    pub layout: RopeLayout,
    pub scaling: RopeScaling,
    /// Multiplies every cos and sin (so q·k by its square): `rope.scaling.attn_factor`,
    /// which LongRoPE (phi3) and YaRN files carry.
    pub attn_factor: f32,
}

/// The non-linearity of the gated feed-forward network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// SwiGLU: `silu(gate) * up` (llama, qwen, phi3, the MoE families).
    Silu,
    /// GeGLU with tanh-approximated GELU (gemma).
    GeluTanh,
}

/// Mixture-of-Experts shape of a model whose feed-forward blocks route each token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MoeConfig {
    pub n_expert: usize,
    /// Experts each token uses (top-k).
    pub n_expert_used: usize,
    /// Hidden width of one routed expert.
    pub n_ff_exp: usize,
    /// Hidden width of the always-on shared expert (0: none).
    pub n_ff_shexp: usize,
    /// Renormalise the chosen experts' softmax weights to sum to 1 (mixtral, qwen3moe).
    pub norm_weights: bool,
}

/// Everything the forward pass needs to know about a model's shape.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    /// The family that runs this file (see `family.rs`), e.g. "llama".
    pub family: &'static str,
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
    /// Hidden width of the dense feed-forward network (0 in pure MoE models).
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
    /// tanh soft-capping of the attention scores (0 = off; gemma2).
    pub attn_softcap: f32,
    /// Multiply the embeddings by this (gemma: sqrt(n_embd)).
    pub embed_scale: Option<f32>,
    /// tanh soft-capping of the final logits (0 = off).
    pub final_logit_softcap: f32,
    pub activation: Activation,
    pub moe: Option<MoeConfig>,
}

/// Reads `<arch>.<key>` metadata with the checks every family needs.
pub struct Hparams<'a> {
    pub file: &'a GgufFile,
    pub arch: &'a str,
}

impl Hparams<'_> {
    pub fn key(&self, s: &str) -> String {
        format!("{}.{s}", self.arch)
    }

    pub fn u32_opt(&self, s: &str) -> Result<Option<u32>> {
        self.file.u32_opt(&self.key(s))
    }

    pub fn f32_opt(&self, s: &str) -> Result<Option<f32>> {
        self.file.f32_opt(&self.key(s))
    }

    pub fn bool_opt(&self, s: &str) -> Result<Option<bool>> {
        self.file.bool_opt(&self.key(s))
    }

    /// A count that must be present and positive.
    pub fn count(&self, s: &str) -> Result<usize> {
        self.positive(s, self.file.u32(&self.key(s))?)
    }

    /// A count that may be absent (then `default`) but is positive when present.
    pub fn count_or(&self, s: &str, default: usize) -> Result<usize> {
        match self.u32_opt(s)? {
            Some(v) => self.positive(s, v),
            None => Ok(default),
        }
    }

    fn positive(&self, s: &str, v: u32) -> Result<usize> {
        if v == 0 {
            Err(Error::meta(self.key(s), "must be greater than 0"))
        } else {
            Ok(v as usize)
        }
    }

    /// A soft-capping value: absent or 0 means off.
    pub fn softcap(&self, s: &str) -> Result<f32> {
        let v = self.f32_opt(s)?.unwrap_or(0.0);
        if !(v.is_finite() && v >= 0.0) {
            return Err(Error::meta(self.key(s), format!("{v} is not a valid cap")));
        }
        Ok(v)
    }
}

impl ModelConfig {
    /// Reads the configuration of `file`, checking every value ember relies on: first what
    /// every family shares, then what the file's family adds (see `family.rs`).
    pub fn from_gguf(file: &GgufFile) -> Result<ModelConfig> {
        let arch_name = file.str("general.architecture")?.to_string();
        let family = super::family::find(&arch_name)?;
        let hp = Hparams {
            file,
            arch: &arch_name,
        };
        let mut c = ModelConfig::common(&hp, family.name, family.rope_layout)?;
        (family.configure)(&hp, &mut c)?;
        c.check_moe(&hp)?;
        Ok(c)
    }

    fn common(hp: &Hparams<'_>, family: &'static str, layout: RopeLayout) -> Result<ModelConfig> {
        let file = hp.file;
        let n_embd = hp.count("embedding_length")?;
        let n_layer = hp.count("block_count")?;
        // Every layer needs tensors: a larger count is a lie, and nothing may be sized by it.
        if n_layer > file.tensors().len() {
            return Err(Error::meta(
                hp.key("block_count"),
                format!(
                    "{n_layer} layers, but the file has {} tensors",
                    file.tensors().len()
                ),
            ));
        }
        let n_ff = hp.u32_opt("feed_forward_length")?.unwrap_or(0) as usize;
        let n_head = hp.count("attention.head_count")?;
        let n_head_kv = hp.count_or("attention.head_count_kv", n_head)?;
        if n_head % n_head_kv != 0 {
            return Err(Error::meta(
                hp.key("attention.head_count_kv"),
                format!("{n_head_kv} does not divide head_count {n_head}"),
            ));
        }
        let per_head = |key: &str| -> Result<usize> {
            if hp.u32_opt(key)?.is_none() && n_embd % n_head != 0 {
                return Err(Error::meta(
                    hp.key("embedding_length"),
                    format!("{n_embd} is not divisible by head_count {n_head} (and no {key})"),
                ));
            }
            hp.count_or(key, n_embd / n_head)
        };
        let head_dim = per_head("attention.key_length")?;
        let head_dim_v = per_head("attention.value_length")?;
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(Error::meta(
                hp.key("attention.key_length"),
                format!("head size {head_dim} must be even and positive"),
            ));
        }
        let rms_eps = file.f32(&hp.key("attention.layer_norm_rms_epsilon"))?;
        if !(rms_eps.is_finite() && rms_eps >= 0.0) {
            return Err(Error::meta(
                hp.key("attention.layer_norm_rms_epsilon"),
                format!("{rms_eps} is not a valid epsilon"),
            ));
        }
        let n_ctx_train = hp.u32_opt("context_length")?.unwrap_or(2048).max(1) as usize;
        let n_vocab = match hp.u32_opt("vocab_size")? {
            Some(v) => v as usize,
            None => file.array("tokenizer.ggml.tokens")?.len(),
        };
        let rope = read_rope(hp, head_dim, layout, n_ctx_train)?;
        // Routers other than a softmax (DeepSeek's sigmoid) are a flavour ember does not run.
        if let Some(g) = hp.u32_opt("expert_gating_func")? {
            if g != 1 {
                return Err(Error::Unsupported(format!(
                    "Mixture-of-Experts gating function {g} in {} (ember runs softmax routers)",
                    hp.key("expert_gating_func")
                )));
            }
        }
        let moe = match hp.u32_opt("expert_count")?.unwrap_or(0) {
            0 => None,
            n_expert => Some(MoeConfig {
                n_expert: n_expert as usize,
                n_expert_used: hp.count("expert_used_count")?,
                n_ff_exp: hp.count_or("expert_feed_forward_length", n_ff)?,
                n_ff_shexp: hp
                    .u32_opt("expert_shared_feed_forward_length")?
                    .unwrap_or(0) as usize,
                norm_weights: hp.bool_opt("expert_weights_norm")?.unwrap_or(false),
            }),
        };
        Ok(ModelConfig {
            family,
            arch_name: hp.arch.to_string(),
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
            rope_swa: rope,
            sliding_window: 0,
            swa_layers: vec![false; n_layer],
            attn_scale: 1.0 / (head_dim as f32).sqrt(),
            attn_softcap: 0.0,
            embed_scale: None,
            final_logit_softcap: 0.0,
            activation: Activation::Silu,
            moe,
        })
    }

    /// Sets a sliding window on the layers `is_swa` picks (a window of 0 turns it off).
    pub fn set_sliding_window(&mut self, window: usize, is_swa: impl Fn(usize) -> bool) {
        self.sliding_window = window;
        for (il, s) in self.swa_layers.iter_mut().enumerate() {
            *s = window > 0 && is_swa(il);
        }
    }

    /// The expert counts must make sense whatever the family did with them.
    fn check_moe(&self, hp: &Hparams<'_>) -> Result<()> {
        match &self.moe {
            None if self.n_ff == 0 => Err(Error::meta(
                hp.key("feed_forward_length"),
                "must be greater than 0",
            )),
            None => Ok(()),
            Some(m) if m.n_expert_used > m.n_expert || m.n_expert > 4096 => Err(Error::meta(
                hp.key("expert_used_count"),
                format!("{} of {} experts", m.n_expert_used, m.n_expert),
            )),
            Some(m) if m.n_ff_exp == 0 => Err(Error::meta(
                hp.key("expert_feed_forward_length"),
                "must be greater than 0",
            )),
            Some(_) => Ok(()),
        }
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

    /// The widest feed-forward hidden layer of any block (dense, routed or shared expert).
    pub fn max_ff(&self) -> usize {
        let moe = self.moe.map_or(0, |m| m.n_ff_exp.max(m.n_ff_shexp));
        self.n_ff.max(moe)
    }
}

fn read_rope(
    hp: &Hparams<'_>,
    head_dim: usize,
    layout: RopeLayout,
    n_ctx_train: usize,
) -> Result<Rope> {
    let n_rot = hp
        .u32_opt("rope.dimension_count")?
        .map(|v| v as usize)
        .unwrap_or(head_dim);
    if n_rot == 0 || n_rot > head_dim || n_rot % 2 != 0 {
        return Err(Error::meta(
            hp.key("rope.dimension_count"),
            format!("{n_rot} must be even and at most the head size {head_dim}"),
        ));
    }
    let base = hp.f32_opt("rope.freq_base")?.unwrap_or(10000.0);
    if !(base.is_finite() && base > 0.0) {
        return Err(Error::meta(
            hp.key("rope.freq_base"),
            format!("{base} is not a valid base"),
        ));
    }
    let attn_factor = hp.f32_opt("rope.scaling.attn_factor")?.unwrap_or(1.0);
    if !(attn_factor.is_finite() && attn_factor > 0.0) {
        return Err(Error::meta(
            hp.key("rope.scaling.attn_factor"),
            format!("{attn_factor} is not a valid factor"),
        ));
    }
    Ok(Rope {
        base,
        n_dims: n_rot,
        layout,
        scaling: rope_scaling(hp.file, hp.arch, n_ctx_train)?,
        attn_factor,
    })
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
        },
        other => {
            return Err(Error::Unsupported(format!(
                "RoPE scaling type '{other}' in {}",
                k("rope.scaling.type")
            )))
        }
    })
}
