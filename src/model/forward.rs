//! The one transformer forward pass, narrated: embed the tokens, then per layer an
//! attention block and a feed-forward block, each added to the residual stream, then the
//! final norm and the logits. Families differ only in which kinds of block they are made
//! of (see `blocks.rs`) and in values of the configuration; this pass dispatches on those.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};
use crate::kernels::{self, ActFormat, Kernels, Matrix, Pool};
use crate::quant::dequantize_row;
use crate::tokenizer::Token;

use super::attention::{self, AttnShape, ScoreRows};
use super::blocks::{Attention, FeedForward, Ffn, LayerWeights, QkvProj};
use super::config::Activation;
use super::config::ModelConfig;
use super::kv::KvCache;
use super::moe::{self, MoeLens, MoeScratch};
use super::observe::{self, Observer, Stage, NO_LAYER};
use super::ops;
use super::weights::Weights;
use super::ModelInner;

/// Buffers for one batch of up to `n_batch` tokens, made once per context.
pub struct Scratch {
    pub n_batch: usize,
    x: Vec<f32>,
    xn: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// Output of a fused q·k·v projection before it is split (empty when none is fused).
    qkv: Vec<f32>,
    att: Vec<f32>,
    proj: Vec<f32>,
    gate: Vec<f32>,
    /// Twice the widest FFN: a fused gate+up projection lands here whole.
    up: Vec<f32>,
    act: Vec<u8>,
    scores: ScoreRows,
    rope_cs: Vec<f32>,
    rope_cs_swa: Vec<f32>,
    /// Partial attention results of a decode whose keys are split across threads.
    attn_parts: Vec<f32>,
    moe: Option<MoeScratch>,
}

/// Facts about a model's weights that the scratch sizes depend on (beyond the config).
#[derive(Clone, Copy, Debug)]
pub struct WeightFacts {
    /// Largest quantized activation row any matrix product needs.
    pub max_act_row_bytes: usize,
    /// Some layer projects q, k and v with one fused matrix.
    pub fused_qkv: bool,
    /// Some layer projects gate and up with one fused matrix.
    pub fused_gate_up: bool,
}

impl WeightFacts {
    pub fn of(w: &Weights) -> Result<WeightFacts> {
        let mut max_act_row_bytes = 0;
        for m in w.matrices() {
            max_act_row_bytes =
                max_act_row_bytes.max(ActFormat::for_weight(m.ty)?.row_bytes(m.cols));
        }
        Ok(WeightFacts {
            max_act_row_bytes,
            fused_qkv: w
                .layers
                .iter()
                .any(|l| matches!(l.attn.qkv, QkvProj::Fused(_))),
            fused_gate_up: w
                .layers
                .iter()
                .any(|l| matches!(l.ffn.ffn, Ffn::FusedGateUp { .. })),
        })
    }
}

/// The element count of every scratch buffer: [`Scratch::new`] allocates exactly these,
/// and the memory estimate counts them, so the two agree by construction. Products are
/// checked: `None` means a buffer would not fit in `usize`.
#[derive(Clone, Copy, Debug)]
pub struct ScratchLens {
    n_batch: usize,
    /// x, xn, q, k, v, qkv, att, proj, gate, up, rope_cs, rope_cs_swa, attn_parts (in that
    /// order).
    f32s: [usize; 13],
    act: usize,
    score_rows: usize,
    score_len: usize,
    moe: Option<MoeLens>,
}

impl ScratchLens {
    pub fn new(
        c: &ModelConfig,
        f: &WeightFacts,
        n_batch: usize,
        n_ctx: usize,
        n_threads: usize,
    ) -> Option<ScratchLens> {
        let rows = |w: usize| n_batch.checked_mul(w);
        let qkv_w = if f.fused_qkv {
            c.q_dim() + c.kv_dim() + c.kv_dim_v()
        } else {
            0
        };
        let ff = c.max_ff();
        // A fused gate+up projection lands in `up` whole; otherwise `up` holds only up,
        // and a second half would be memory no pass ever touches.
        let up_w = if f.fused_gate_up { 2 * ff } else { ff };
        let att_w = c.n_head.checked_mul(c.head_dim_v)?;
        Some(ScratchLens {
            n_batch,
            f32s: [
                rows(c.n_embd)?,
                rows(c.n_embd.max(att_w))?,
                rows(c.q_dim())?,
                rows(c.kv_dim())?,
                rows(c.kv_dim_v())?,
                rows(qkv_w)?,
                rows(att_w)?,
                rows(c.n_embd)?,
                rows(ff)?,
                rows(up_w)?,
                rows(c.rope.n_dims)?,
                rows(c.rope_swa.n_dims)?,
                attention::partials_len(n_threads, c.n_head, c.n_head_kv, c.head_dim_v),
            ],
            act: rows(f.max_act_row_bytes)?,
            // Only the observer's recomputation of attention weights uses a score row.
            score_rows: 1,
            score_len: n_ctx,
            moe: match c.moe {
                Some(mc) => Some(MoeLens::new(&mc, n_batch, c.n_embd)?),
                None => None,
            },
        })
    }

    /// The size in bytes of each buffer, one heap block each (the MoE ones not included:
    /// see [`MoeLens::blocks`]).
    pub fn blocks(&self) -> impl Iterator<Item = u64> + '_ {
        let f32s = self.f32s.iter().map(|&n| 4 * n as u64);
        let scores = std::iter::repeat_n(4 * self.score_len as u64, self.score_rows);
        let moe = self.moe.iter().flat_map(|m| m.blocks());
        f32s.chain([self.act as u64]).chain(scores).chain(moe)
    }

    /// Bytes the buffers take (`None` past `u64`).
    pub fn bytes(&self) -> Option<u64> {
        let f32s = self
            .f32s
            .iter()
            .try_fold(0u64, |acc, &n| acc.checked_add(n as u64))?
            .checked_mul(4)?;
        let scores = (self.score_rows as u64)
            .checked_mul(self.score_len as u64)?
            .checked_mul(4)?;
        let moe = self.moe.map_or(Some(0), |m| m.bytes())?;
        f32s.checked_add(self.act as u64)?
            .checked_add(scores)?
            .checked_add(moe)
    }
}

impl Scratch {
    /// Allocates the buffers `lens` describes (checked by the caller to fit in memory).
    pub fn new(lens: &ScratchLens) -> Scratch {
        let [x, xn, q, k, v, qkv, att, proj, gate, up, rope_cs, rope_cs_swa, attn_parts] =
            lens.f32s.map(|n| vec![0.0f32; n]);
        Scratch {
            n_batch: lens.n_batch,
            x,
            xn,
            q,
            k,
            v,
            qkv,
            att,
            proj,
            gate,
            up,
            act: vec![0; lens.act],
            scores: ScoreRows::new(lens.score_rows, lens.score_len),
            rope_cs,
            rope_cs_swa,
            attn_parts,
            moe: lens.moe.map(|m| MoeScratch::new(&m)),
        }
    }

    /// Bytes held by the scratch buffers.
    pub fn size_bytes(&self) -> usize {
        4 * [
            &self.x,
            &self.xn,
            &self.q,
            &self.k,
            &self.v,
            &self.qkv,
            &self.att,
            &self.proj,
            &self.gate,
            &self.up,
            &self.rope_cs,
            &self.rope_cs_swa,
            &self.attn_parts,
        ]
        .iter()
        .map(|b| b.len())
        .sum::<usize>()
            + self.act.len()
            + self.scores.size_bytes()
            + self.moe.as_ref().map_or(0, MoeScratch::size_bytes)
    }

    /// (expert weight passes, expert token rows) since the context was made: decode makes
    /// k passes of one row per layer; a batch makes one pass per chosen expert per layer.
    pub fn expert_counts(&self) -> (u64, u64) {
        self.moe.as_ref().map_or((0, 0), |m| (m.passes, m.rows))
    }
}

/// Which positions of a batch get logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outputs {
    Last,
    All,
    /// Only fill the cache (all but the last chunk of a long input): no output projection.
    None,
}

/// Everything a forward pass mutates.
pub struct ForwardState<'a> {
    pub kv: &'a mut KvCache,
    pub scratch: &'a mut Scratch,
    pub pool: &'a Pool,
    pub kernels: &'a Kernels,
    pub abort: &'a AtomicBool,
    /// `n_vocab` floats per output row.
    pub logits: &'a mut [f32],
    /// Shown each stage's numbers when set (see `observe.rs`).
    pub observer: Option<&'a mut dyn Observer>,
}

/// Products of one input with several matrices: one parallel operation when they take
/// the same activation format (one quantization, one wake-up of the pool), else one each.
fn project(
    pool: &Pool,
    k: &Kernels,
    ws: &[&kernels::Matrix<'_>],
    x: &[f32],
    n: usize,
    act: &mut [u8],
    outs: &mut [&mut [f32]],
) -> Result<()> {
    let fmt = ActFormat::for_weight(ws[0].ty)?;
    let same = ws
        .iter()
        .all(|w| ActFormat::for_weight(w.ty).is_ok_and(|f| f == fmt) && w.cols == ws[0].cols);
    if same && ws.len() <= kernels::MAX_MANY {
        return kernels::matmul_many(pool, k, ws, x, n, act, outs);
    }
    for (w, o) in ws.iter().zip(outs.iter_mut()) {
        kernels::matmul(pool, k, w, x, n, act, o)?;
    }
    Ok(())
}

/// The buffers a gated FFN works in: its hidden activations and quantized inputs.
pub struct GluBuffers<'a> {
    pub gate: &'a mut [f32],
    pub up: &'a mut [f32],
    pub act: &'a mut [u8],
}

/// `down(act(gate(x)) * up(x))` for `n` rows of `x`, into `out`: the dense FFN, one
/// routed expert, or a shared expert.
#[allow(clippy::too_many_arguments)]
pub fn glu_ffn(
    pool: &Pool,
    k: &Kernels,
    activation: Activation,
    [gate_w, up_w, down_w]: &[Matrix<'_>; 3],
    x: &[f32],
    n: usize,
    b: &mut GluBuffers<'_>,
    out: &mut [f32],
) -> Result<()> {
    let ff = gate_w.rows;
    let gate = &mut b.gate[..n * ff];
    let up = &mut b.up[..n * ff];
    project(
        pool,
        k,
        &[gate_w, up_w],
        x,
        n,
        b.act,
        &mut [&mut *gate, &mut *up],
    )?;
    glu(activation, gate, up);
    kernels::matmul(pool, k, down_w, gate, n, b.act, out)
}

fn glu(activation: Activation, gate: &mut [f32], up: &[f32]) {
    match activation {
        Activation::Silu => ops::swiglu(gate, up),
        Activation::GeluTanh => ops::geglu(gate, up),
    }
}

/// Runs `tokens` (at most `n_batch`) at positions `pos0..`, writing their keys and values
/// into the cache and the logits of the requested rows into `st.logits`.
pub fn forward(
    m: &ModelInner,
    st: &mut ForwardState<'_>,
    tokens: &[Token],
    pos0: usize,
    outputs: Outputs,
) -> Result<()> {
    embed(m, st.scratch, tokens)?;
    if let Some(o) = st.observer.as_deref_mut() {
        o.observe(&observe::View {
            stage: Stage::Tokens,
            layer: NO_LAYER,
            head: usize::MAX,
            pos0,
            rows: tokens.len(),
            data: &[],
            ids: tokens,
        });
    }
    let d = m.config.n_embd;
    let x = &st.scratch.x[..tokens.len() * d];
    observe::rows(
        &mut st.observer,
        Stage::Embedding,
        NO_LAYER,
        pos0,
        tokens.len(),
        x,
    );
    fill_rope(m, st, tokens.len(), pos0);
    for (il, lw) in m.weights.layers.iter().enumerate() {
        if st.abort.load(Ordering::Relaxed) {
            return Err(Error::Aborted);
        }
        attention_block(m, st, il, &lw.attn, tokens.len(), pos0)?;
        ffn_block(m, st, lw, il, tokens.len(), pos0)?;
        let x = &st.scratch.x[..tokens.len() * d];
        observe::rows(&mut st.observer, Stage::Residual, il, pos0, tokens.len(), x);
    }
    output(m, st, tokens.len(), pos0, outputs)
}

/// The token embeddings, scaled where the family scales them: the residual stream's start.
fn embed(m: &ModelInner, sc: &mut Scratch, tokens: &[Token]) -> Result<()> {
    let (c, w, file) = (&m.config, &m.weights, m.file.bytes());
    let d = c.n_embd;
    debug_assert!(tokens.len() <= sc.n_batch);
    for (t, &tok) in tokens.iter().enumerate() {
        if tok as usize >= c.n_vocab {
            return Err(Error::InvalidToken {
                id: tok as i64,
                n_vocab: c.n_vocab,
            });
        }
        let x = &mut sc.x[t * d..(t + 1) * d];
        dequantize_row(w.tok_embd.ty, w.tok_embd.row(file, tok as usize), x)?;
        if let Some(s) = c.embed_scale {
            x.iter_mut().for_each(|v| *v *= s);
        }
    }
    Ok(())
}

/// RoPE's (cos, sin) pairs for every position of the batch, for global and local layers.
fn fill_rope(m: &ModelInner, st: &mut ForwardState<'_>, n: usize, pos0: usize) {
    let factors = m.freq_factors(st.kv.n_ctx);
    let sc = &mut *st.scratch;
    let (nr, nr_swa) = (m.config.rope.n_dims, m.config.rope_swa.n_dims);
    for t in 0..n {
        m.rope
            .fill(pos0 + t, factors, &mut sc.rope_cs[t * nr..(t + 1) * nr]);
        m.rope_swa.fill(
            pos0 + t,
            None,
            &mut sc.rope_cs_swa[t * nr_swa..(t + 1) * nr_swa],
        );
    }
}

fn rms_rows(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    for (xr, on) in x.chunks_exact(w.len()).zip(out.chunks_exact_mut(w.len())) {
        ops::rms_norm(xr, Some(w), eps, on);
    }
}

/// Normalises each chunk of `x` as long as `w`: per head or per row, as the weight says.
fn rms_chunks(x: &mut [f32], w: &[f32], eps: f32) {
    for h in x.chunks_exact_mut(w.len()) {
        ops::rms_norm_inplace(h, w, eps);
    }
}

/// x += attention(norm(x)): projections, q/k norms, RoPE, the cache, attention, output.
fn attention_block(
    m: &ModelInner,
    st: &mut ForwardState<'_>,
    il: usize,
    a: &Attention,
    n: usize,
    pos0: usize,
) -> Result<()> {
    let (c, file) = (&m.config, m.file.bytes());
    let sc = &mut *st.scratch;
    let d = c.n_embd;
    let (qd, kd, vd) = (c.q_dim(), c.kv_dim(), c.kv_dim_v());
    rms_rows(
        &sc.x[..n * d],
        a.norm.get(file),
        c.rms_eps,
        &mut sc.xn[..n * d],
    );
    observe::rows(
        &mut st.observer,
        Stage::AttnInput,
        il,
        pos0,
        n,
        &sc.xn[..n * d],
    );
    let (q, k, v) = (
        &mut sc.q[..n * qd],
        &mut sc.k[..n * kd],
        &mut sc.v[..n * vd],
    );
    let xn = &sc.xn[..n * d];
    match &a.qkv {
        QkvProj::Separate {
            wq,
            wk,
            wv,
            bq,
            bk,
            bv,
        } => {
            let ws = [&wq.matrix(file), &wk.matrix(file), &wv.matrix(file)];
            project(
                st.pool,
                st.kernels,
                &ws,
                xn,
                n,
                &mut sc.act,
                &mut [&mut *q, &mut *k, &mut *v],
            )?;
            for (b, out) in [(bq, &mut *q), (bk, &mut *k), (bv, &mut *v)] {
                if let Some(b) = b {
                    ops::add_bias(out, b.get(file));
                }
            }
        }
        QkvProj::Fused(w) => {
            let qkv = &mut sc.qkv[..n * (qd + kd + vd)];
            kernels::matmul(
                st.pool,
                st.kernels,
                &w.matrix(file),
                xn,
                n,
                &mut sc.act,
                qkv,
            )?;
            for (t, row) in qkv.chunks_exact(qd + kd + vd).enumerate() {
                q[t * qd..(t + 1) * qd].copy_from_slice(&row[..qd]);
                k[t * kd..(t + 1) * kd].copy_from_slice(&row[qd..qd + kd]);
                v[t * vd..(t + 1) * vd].copy_from_slice(&row[qd + kd..]);
            }
        }
    }
    if let Some(w) = &a.q_norm {
        rms_chunks(q, w.get(file), c.rms_eps);
    }
    if let Some(w) = &a.k_norm {
        rms_chunks(k, w.get(file), c.rms_eps);
    }
    let swa = c.swa_layers[il];
    let (rope, cs, nr) = if swa {
        (&m.rope_swa, &sc.rope_cs_swa, c.rope_swa.n_dims)
    } else {
        (&m.rope, &sc.rope_cs, c.rope.n_dims)
    };
    for t in 0..n {
        let cs = &cs[t * nr..(t + 1) * nr];
        rope.apply(&mut q[t * qd..(t + 1) * qd], c.head_dim, cs);
        rope.apply(&mut k[t * kd..(t + 1) * kd], c.head_dim, cs);
    }
    observe::rows(&mut st.observer, Stage::Query, il, pos0, n, q);
    observe::rows(&mut st.observer, Stage::Key, il, pos0, n, k);
    let layer_kv = &mut st.kv.layers[il];
    layer_kv.k.write(pos0, kd, k);
    layer_kv.v.write(pos0, vd, v);

    let shape = AttnShape {
        n_tok: n,
        pos0,
        n_head: c.n_head,
        n_head_kv: c.n_head_kv,
        head_dim: c.head_dim,
        head_dim_v: c.head_dim_v,
        scale: c.attn_scale,
        softcap: c.attn_softcap,
        window: if swa { c.sliding_window } else { 0 },
    };
    let att = &mut sc.att[..n * c.n_head * c.head_dim_v];
    attention::attention(
        st.pool,
        st.kernels,
        &shape,
        q,
        layer_kv,
        &mut sc.attn_parts,
        att,
    );
    if let Some(o) = st.observer.as_deref_mut() {
        attention::observe_weights(st.kernels, &shape, il, q, layer_kv, &sc.scores, o);
    }
    let proj = &mut sc.proj[..n * d];
    kernels::matmul(
        st.pool,
        st.kernels,
        &a.wo.matrix(file),
        att,
        n,
        &mut sc.act,
        proj,
    )?;
    if let Some(pn) = &a.post_norm {
        rms_chunks(proj, pn.get(file), c.rms_eps);
    }
    observe::rows(&mut st.observer, Stage::AttnOut, il, pos0, n, proj);
    ops::add_assign(&mut sc.x[..n * d], proj);
    observe::rows(
        &mut st.observer,
        Stage::ResidualMid,
        il,
        pos0,
        n,
        &sc.x[..n * d],
    );
    Ok(())
}

/// x += ffn(norm(x)): dense, fused gate+up, or routed experts.
fn ffn_block(
    m: &ModelInner,
    st: &mut ForwardState<'_>,
    lw: &LayerWeights,
    il: usize,
    n: usize,
    pos0: usize,
) -> Result<()> {
    let (c, file) = (&m.config, m.file.bytes());
    let f: &FeedForward = &lw.ffn;
    let sc = &mut *st.scratch;
    let d = c.n_embd;
    rms_rows(
        &sc.x[..n * d],
        f.norm.get(file),
        c.rms_eps,
        &mut sc.xn[..n * d],
    );
    observe::rows(
        &mut st.observer,
        Stage::FfnInput,
        il,
        pos0,
        n,
        &sc.xn[..n * d],
    );
    let xn = &sc.xn[..n * d];
    let proj = &mut sc.proj[..n * d];
    let mut bufs = GluBuffers {
        gate: &mut sc.gate,
        up: &mut sc.up,
        act: &mut sc.act,
    };
    match &f.ffn {
        Ffn::Dense { gate, up, down } => {
            let mats = [gate.matrix(file), up.matrix(file), down.matrix(file)];
            glu_ffn(
                st.pool,
                st.kernels,
                c.activation,
                &mats,
                xn,
                n,
                &mut bufs,
                proj,
            )?;
            let h = &bufs.gate[..n * gate.rows];
            observe::rows(&mut st.observer, Stage::FfnHidden, il, pos0, n, h);
        }
        Ffn::FusedGateUp { gate_up, down } => {
            let ff = down.cols;
            let gu = &mut bufs.up[..n * 2 * ff];
            kernels::matmul(
                st.pool,
                st.kernels,
                &gate_up.matrix(file),
                xn,
                n,
                bufs.act,
                gu,
            )?;
            let gate = &mut bufs.gate[..n * ff];
            for (g, row) in gate.chunks_exact_mut(ff).zip(gu.chunks_exact(2 * ff)) {
                g.copy_from_slice(&row[..ff]);
                glu(c.activation, g, &row[ff..]);
            }
            kernels::matmul(
                st.pool,
                st.kernels,
                &down.matrix(file),
                gate,
                n,
                bufs.act,
                proj,
            )?;
            observe::rows(&mut st.observer, Stage::FfnHidden, il, pos0, n, gate);
        }
        Ffn::Moe(w) => {
            let (Some(mc), Some(ms)) = (&c.moe, sc.moe.as_mut()) else {
                return Err(Error::Unsupported(
                    "MoE block without an MoE configuration".into(),
                ));
            };
            moe::moe_ffn(
                st.pool,
                st.kernels,
                file,
                mc,
                c.activation,
                w,
                xn,
                n,
                &mut bufs,
                ms,
                proj,
            )?;
            let choice = ms.choices(n, mc.n_expert_used);
            observe::route(&mut st.observer, il, pos0, mc.n_expert_used, choice);
        }
    }
    if let Some(pn) = &f.post_norm {
        rms_chunks(proj, pn.get(file), c.rms_eps);
    }
    observe::rows(&mut st.observer, Stage::FfnOut, il, pos0, n, proj);
    ops::add_assign(&mut sc.x[..n * d], proj);
    Ok(())
}

/// The final norm and the output projection for the rows `outputs` asks for.
fn output(
    m: &ModelInner,
    st: &mut ForwardState<'_>,
    n: usize,
    pos0: usize,
    outputs: Outputs,
) -> Result<()> {
    let (c, w, file) = (&m.config, &m.weights, m.file.bytes());
    let sc = &mut *st.scratch;
    let d = c.n_embd;
    let (first, n_out) = match outputs {
        Outputs::Last => (n - 1, 1),
        Outputs::All => (0, n),
        Outputs::None => return Ok(()),
    };
    let x = &sc.x[first * d..(first + n_out) * d];
    rms_rows(
        x,
        w.output_norm.get(file),
        c.rms_eps,
        &mut sc.xn[..n_out * d],
    );
    let xn = &sc.xn[..n_out * d];
    observe::rows(
        &mut st.observer,
        Stage::FinalNorm,
        NO_LAYER,
        pos0 + first,
        n_out,
        xn,
    );
    let logits = &mut st.logits[..n_out * c.n_vocab];
    kernels::matmul(
        st.pool,
        st.kernels,
        &w.output.matrix(file),
        xn,
        n_out,
        &mut sc.act,
        logits,
    )?;
    if c.final_logit_softcap > 0.0 {
        ops::softcap(logits, c.final_logit_softcap);
    }
    observe::rows(
        &mut st.observer,
        Stage::Logits,
        NO_LAYER,
        pos0 + first,
        n_out,
        logits,
    );
    Ok(())
}
