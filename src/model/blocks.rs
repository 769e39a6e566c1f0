//! The kinds of block a transformer layer is made of, and how the common ones are read.
//! Families pick and combine these (see `family.rs`); the forward pass dispatches on them,
//! so a new family reuses blocks instead of adding flags to the pass.

use crate::error::{Error, Result};

use super::config::ModelConfig;
use super::weights::{Experts, Loader, MatRef, VecRef};

/// How a layer projects its input to queries, keys and values.
#[derive(Clone, Debug)]
pub enum QkvProj {
    /// Three matrices, each with an optional bias (qwen2 has them).
    Separate {
        wq: MatRef,
        wk: MatRef,
        wv: MatRef,
        bq: Option<VecRef>,
        bk: Option<VecRef>,
        bv: Option<VecRef>,
    },
    /// One matrix whose output rows are q, then k, then v (phi3).
    Fused(MatRef),
}

/// Self-attention with its norms.
#[derive(Clone, Debug)]
pub struct Attention {
    pub norm: VecRef,
    pub qkv: QkvProj,
    /// RMSNorm of q (and k) before RoPE, over chunks as long as the weight: one head
    /// (qwen3, gemma3) or the whole row (olmoe).
    pub q_norm: Option<VecRef>,
    pub k_norm: Option<VecRef>,
    pub wo: MatRef,
    /// Norm of the attention output before the residual add (gemma's sandwich norm).
    pub post_norm: Option<VecRef>,
}

/// The gated feed-forward network of a layer.
#[derive(Clone, Debug)]
pub enum Ffn {
    Dense {
        gate: MatRef,
        up: MatRef,
        down: MatRef,
    },
    /// Gate and up stacked in one matrix (phi3): output rows [0, ff) gate, [ff, 2ff) up.
    FusedGateUp {
        gate_up: MatRef,
        down: MatRef,
    },
    Moe(Box<Moe>),
}

/// A Mixture-of-Experts feed-forward block.
#[derive(Clone, Debug)]
pub struct Moe {
    /// Router: one logit per expert.
    pub router: MatRef,
    pub gate: Experts,
    pub up: Experts,
    pub down: Experts,
    pub shared: Option<SharedExpert>,
}

/// An expert every token uses (qwen2moe), scaled by a sigmoid gate when there is one.
#[derive(Clone, Debug)]
pub struct SharedExpert {
    pub gate: MatRef,
    pub up: MatRef,
    pub down: MatRef,
    pub gate_inp: Option<VecRef>,
}

/// The feed-forward block with its norms.
#[derive(Clone, Debug)]
pub struct FeedForward {
    pub norm: VecRef,
    pub ffn: Ffn,
    /// Norm of the feed-forward output before the residual add (gemma).
    pub post_norm: Option<VecRef>,
}

/// The weights of one transformer block.
#[derive(Clone, Debug)]
pub struct LayerWeights {
    pub attn: Attention,
    pub ffn: FeedForward,
}

impl LayerWeights {
    /// Every matrix of the layer (expert 0 standing for its tensor), for sizing buffers.
    pub fn matrices(&self) -> Vec<&MatRef> {
        let mut v = vec![&self.attn.wo];
        match &self.attn.qkv {
            QkvProj::Separate { wq, wk, wv, .. } => v.extend([wq, wk, wv]),
            QkvProj::Fused(m) => v.push(m),
        }
        match &self.ffn.ffn {
            Ffn::Dense { gate, up, down } => v.extend([gate, up, down]),
            Ffn::FusedGateUp { gate_up, down } => v.extend([gate_up, down]),
            Ffn::Moe(m) => {
                v.extend([&m.router, &m.gate.first, &m.up.first, &m.down.first]);
                if let Some(s) = &m.shared {
                    v.extend([&s.gate, &s.up, &s.down]);
                }
            }
        }
        v
    }
}

/// `blk.<il>.<name>`: the name of a layer's tensor.
pub fn blk(il: usize, name: &str) -> String {
    format!("blk.{il}.{name}")
}

/// Attention with separate q, k, v (biases where the file has them) and no extra norms.
pub fn attention(l: &Loader<'_>, c: &ModelConfig, il: usize) -> Result<Attention> {
    let n = |s: &str| blk(il, s);
    let (qd, kd, vd) = (c.q_dim(), c.kv_dim(), c.kv_dim_v());
    let qkv = if l.has(&n("attn_qkv.weight")) {
        QkvProj::Fused(l.mat(&n("attn_qkv.weight"), c.n_embd, qd + kd + vd)?)
    } else {
        QkvProj::Separate {
            wq: l.mat(&n("attn_q.weight"), c.n_embd, qd)?,
            wk: l.mat(&n("attn_k.weight"), c.n_embd, kd)?,
            wv: l.mat(&n("attn_v.weight"), c.n_embd, vd)?,
            bq: l.vec_opt(&n("attn_q.bias"), qd)?,
            bk: l.vec_opt(&n("attn_k.bias"), kd)?,
            bv: l.vec_opt(&n("attn_v.bias"), vd)?,
        }
    };
    Ok(Attention {
        norm: l.vec(&n("attn_norm.weight"), c.n_embd)?,
        qkv,
        q_norm: None,
        k_norm: None,
        wo: l.mat(&n("attn_output.weight"), c.n_head * c.head_dim_v, c.n_embd)?,
        post_norm: None,
    })
}

/// The feed-forward block of layer `il`: routed experts when the model has them, else
/// dense gate/up/down.
pub fn feed_forward(l: &Loader<'_>, c: &ModelConfig, il: usize) -> Result<FeedForward> {
    let n = |s: &str| blk(il, s);
    let ffn = match c.moe {
        Some(_) => Ffn::Moe(Box::new(moe(l, c, il)?)),
        None if l.has(&n("ffn_gate_exps.weight")) => {
            return Err(Error::Unsupported(format!(
                "{}: the file has expert tensors but no {}.expert_count",
                n("ffn_gate_exps.weight"),
                c.arch_name
            )))
        }
        None => Ffn::Dense {
            gate: l.mat(&n("ffn_gate.weight"), c.n_embd, c.n_ff)?,
            up: l.mat(&n("ffn_up.weight"), c.n_embd, c.n_ff)?,
            down: l.mat(&n("ffn_down.weight"), c.n_ff, c.n_embd)?,
        },
    };
    Ok(FeedForward {
        norm: l.vec(&n("ffn_norm.weight"), c.n_embd)?,
        ffn,
        post_norm: None,
    })
}

fn moe(l: &Loader<'_>, c: &ModelConfig, il: usize) -> Result<Moe> {
    let n = |s: &str| blk(il, s);
    let Some(m) = c.moe else {
        return Err(Error::Unsupported("MoE block without expert_count".into()));
    };
    if !l.has(&n("ffn_gate_exps.weight")) {
        // Early Mixtral conversions stored one 2-D tensor per expert (ffn_gate.0.weight...);
        // llama.cpp has merged them into 3-D tensors since 2024.
        let layout = if l.has(&n("ffn_gate.0.weight")) {
            "one tensor per expert (ffn_gate.0.weight, ...): convert the file again with a current llama.cpp"
        } else {
            "no ffn_gate_exps tensor"
        };
        return Err(Error::Unsupported(format!(
            "Mixture-of-Experts layout of {} layer {il}: {layout}",
            c.arch_name
        )));
    }
    let (d, ff, ne) = (c.n_embd, m.n_ff_exp, m.n_expert);
    let shared = if m.n_ff_shexp > 0 {
        Some(SharedExpert {
            gate: l.mat(&n("ffn_gate_shexp.weight"), d, m.n_ff_shexp)?,
            up: l.mat(&n("ffn_up_shexp.weight"), d, m.n_ff_shexp)?,
            down: l.mat(&n("ffn_down_shexp.weight"), m.n_ff_shexp, d)?,
            gate_inp: l.vec_opt(&n("ffn_gate_inp_shexp.weight"), d)?,
        })
    } else {
        None
    };
    Ok(Moe {
        router: l.mat(&n("ffn_gate_inp.weight"), d, ne)?,
        gate: l.experts(&n("ffn_gate_exps.weight"), d, ff, ne)?,
        up: l.experts(&n("ffn_up_exps.weight"), d, ff, ne)?,
        down: l.experts(&n("ffn_down_exps.weight"), ff, d, ne)?,
        shared,
    })
}
