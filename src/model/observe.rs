//! A window on the forward pass: an observer set on a context receives, per layer and
//! stage, read-only views of the buffers the pass has just computed. It is off by default;
//! when off each stage costs one test of an `Option` outside the kernels and nothing is
//! allocated. Attention weights are not kept by the pass (each worker reuses one score
//! row), so they are recomputed for the heads an observer asks for, only then.

use crate::error::Result;
use crate::kernels::{self, Kernels, Pool};
use crate::tokenizer::Token;

use super::ops;
use super::Model;

/// What a [`View`] shows. The numbers are fixed (the C API passes them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Stage {
    /// The batch's token ids (`ids`; no `data`).
    Tokens = 0,
    /// Embedding rows (scaled as the family scales them): the residual stream's start.
    Embedding = 1,
    /// The residual after RMSNorm: the attention block's input.
    AttnInput = 2,
    /// Queries after RoPE, `n_head * head_dim` per row.
    Query = 3,
    /// Keys after RoPE, `n_head_kv * head_dim` per row.
    Key = 4,
    /// Softmax weights of one query (`pos0`) of one head over the keys `pos0 + 1 -
    /// data.len() ..= pos0` (one row; only for heads the observer wants).
    AttnWeights = 5,
    /// The attention block's output, as added to the residual.
    AttnOut = 6,
    /// The residual after the attention block.
    ResidualMid = 7,
    /// The residual after RMSNorm: the feed-forward block's input.
    FfnInput = 8,
    /// The gated hidden activations `act(gate) * up` of a dense feed-forward block.
    FfnHidden = 9,
    /// The experts an MoE router chose, `k` per token (`ids`), and their weights (`data`).
    MoeRoute = 10,
    /// The feed-forward block's output, as added to the residual.
    FfnOut = 11,
    /// The residual after the layer: the next layer's input.
    Residual = 12,
    /// The final norm of the rows that get logits.
    FinalNorm = 13,
    /// The logits.
    Logits = 14,
}

/// One stage's numbers: `rows` rows of `data.len() / rows` floats, for positions
/// `pos0..pos0 + rows` (for `FinalNorm` and `Logits`, the last rows of the batch).
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    pub stage: Stage,
    /// The layer, or `usize::MAX` outside the layers.
    pub layer: usize,
    /// The attention head of `AttnWeights`, else `usize::MAX`.
    pub head: usize,
    pub pos0: usize,
    pub rows: usize,
    pub data: &'a [f32],
    /// Token ids (`Tokens`) or chosen experts (`MoeRoute`), else empty.
    pub ids: &'a [u32],
}

/// Receives the views of a forward pass. Views live only during the call.
pub trait Observer {
    fn observe(&mut self, v: &View<'_>);

    /// Whether to compute the attention weights of `head` in `layer` (they cost a second
    /// pass over that head's scores, made only when asked).
    fn wants_attention(&self, _layer: usize, _head: usize) -> bool {
        false
    }
}

/// `layer` value of views outside the layers.
pub const NO_LAYER: usize = usize::MAX;

/// Shows `data` (rows of equal width) to the observer, if there is one.
#[inline]
pub(crate) fn rows(
    obs: &mut Option<&mut dyn Observer>,
    stage: Stage,
    layer: usize,
    pos0: usize,
    rows: usize,
    data: &[f32],
) {
    if let Some(o) = obs {
        o.observe(&View {
            stage,
            layer,
            head: usize::MAX,
            pos0,
            rows,
            data,
            ids: &[],
        });
    }
}

/// Shows the router's choices of `n` tokens, one token per view: the pass keeps them as
/// (expert, weight) pairs, split here into a small stack buffer so nothing is allocated.
pub(crate) fn route(
    obs: &mut Option<&mut dyn Observer>,
    layer: usize,
    pos0: usize,
    k: usize,
    choice: &[(u32, f32)],
) {
    let Some(o) = obs else { return };
    const MAX_K: usize = 64;
    let (mut ids, mut w) = ([0u32; MAX_K], [0f32; MAX_K]);
    for (t, ch) in choice.chunks_exact(k).enumerate() {
        let k = k.min(MAX_K);
        for (j, &(e, wt)) in ch[..k].iter().enumerate() {
            (ids[j], w[j]) = (e, wt);
        }
        o.observe(&View {
            stage: Stage::MoeRoute,
            layer,
            head: usize::MAX,
            pos0: pos0 + t,
            rows: 1,
            data: &w[..k],
            ids: &ids[..k],
        });
    }
}

/// The logits the model would give if its residual stream ended as `x` (rows of n_embd):
/// the final norm and output projection applied early (the "logit lens"). Allocates; for
/// inspection, not decoding.
pub fn logit_lens(model: &Model, x: &[f32]) -> Result<Vec<f32>> {
    let m = &model.inner;
    let (c, w, file) = (&m.config, &m.weights, m.file.bytes());
    let n = x.len() / c.n_embd;
    let mut xn = vec![0.0; x.len()];
    for (xr, on) in x.chunks_exact(c.n_embd).zip(xn.chunks_exact_mut(c.n_embd)) {
        ops::rms_norm(xr, Some(w.output_norm.get(file)), c.rms_eps, on);
    }
    let mut logits = vec![0.0; n * c.n_vocab];
    let mut act = vec![0u8; n * m.facts.max_act_row_bytes];
    let pool = Pool::new(1)?;
    let k = Kernels::detect();
    kernels::matmul(
        &pool,
        k,
        &w.output.matrix(file),
        &xn,
        n,
        &mut act,
        &mut logits,
    )?;
    if c.final_logit_softcap > 0.0 {
        ops::softcap(&mut logits, c.final_logit_softcap);
    }
    Ok(logits)
}

/// Token `tok`'s embedding row, unscaled, into `out` (n_embd floats).
pub fn embedding_row(model: &Model, tok: Token, out: &mut [f32]) -> Result<()> {
    let m = &model.inner;
    let (c, w, file) = (&m.config, &m.weights, m.file.bytes());
    if tok as usize >= c.n_vocab {
        return Err(crate::Error::InvalidToken {
            id: tok as i64,
            n_vocab: c.n_vocab,
        });
    }
    crate::quant::dequantize_row(w.tok_embd.ty, w.tok_embd.row(file, tok as usize), out)
}
