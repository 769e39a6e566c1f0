//! The transformer forward pass for every supported architecture. The families differ in
//! a handful of places (embedding scale, q/k norms, sandwich norms, activation, biases),
//! all read from the configuration, so one pass serves them all.

use std::sync::atomic::{AtomicBool, Ordering};

use super::kv::KvCache;
use crate::error::{Error, Result};
use crate::kernels::{self, ActFormat, Kernels, Pool};
use crate::quant::dequantize_row;
use crate::tokenizer::Token;

use super::attention::{self, AttnShape, ScoreRows};
use super::config::Arch;
use super::ops;
use super::ModelInner;

/// Buffers for one batch of up to `n_batch` tokens, made once per context.
pub struct Scratch {
    pub n_batch: usize,
    x: Vec<f32>,
    xn: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    proj: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    act: Vec<u8>,
    scores: ScoreRows,
    rope_cs: Vec<f32>,
    rope_cs_swa: Vec<f32>,
}

impl Scratch {
    pub fn new(m: &ModelInner, n_batch: usize, n_ctx: usize, n_threads: usize) -> Scratch {
        let c = &m.config;
        let act_row = m.max_act_row_bytes;
        Scratch {
            n_batch,
            x: vec![0.0; n_batch * c.n_embd],
            xn: vec![0.0; n_batch * c.n_embd.max(c.n_head * c.head_dim_v)],
            q: vec![0.0; n_batch * c.q_dim()],
            k: vec![0.0; n_batch * c.kv_dim()],
            v: vec![0.0; n_batch * c.kv_dim_v()],
            att: vec![0.0; n_batch * c.n_head * c.head_dim_v],
            proj: vec![0.0; n_batch * c.n_embd],
            gate: vec![0.0; n_batch * c.n_ff],
            up: vec![0.0; n_batch * c.n_ff],
            act: vec![0; n_batch * act_row],
            scores: ScoreRows::new(n_threads, n_ctx),
            rope_cs: vec![0.0; n_batch * c.rope.n_dims],
            rope_cs_swa: vec![0.0; n_batch * c.rope_swa.n_dims],
        }
    }

    /// Bytes held by the scratch buffers.
    pub fn size_bytes(&self) -> usize {
        4 * (self.x.len()
            + self.xn.len()
            + self.q.len()
            + self.k.len()
            + self.v.len()
            + self.att.len()
            + self.proj.len()
            + self.gate.len()
            + self.up.len()
            + self.rope_cs.len()
            + self.rope_cs_swa.len())
            + self.act.len()
            + self.scores.size_bytes()
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

/// Runs `tokens` (at most `n_batch`) at positions `pos0..`, writing their keys and values
/// into the cache and the logits of the requested rows into `st.logits`.
pub fn forward(
    m: &ModelInner,
    st: &mut ForwardState<'_>,
    tokens: &[Token],
    pos0: usize,
    outputs: Outputs,
) -> Result<()> {
    let c = &m.config;
    let w = &m.weights;
    let file = m.file.bytes();
    let n = tokens.len();
    let sc = &mut *st.scratch;
    debug_assert!(n <= sc.n_batch && pos0 + n <= st.kv.n_ctx);
    let (d, ff) = (c.n_embd, c.n_ff);

    for (t, &tok) in tokens.iter().enumerate() {
        if tok as usize >= c.n_vocab {
            return Err(Error::InvalidToken {
                id: tok as i64,
                n_vocab: c.n_vocab,
            });
        }
        let row = w.tok_embd.row(file, tok as usize);
        dequantize_row(w.tok_embd.ty, row, &mut sc.x[t * d..(t + 1) * d])?;
        if let Some(s) = c.embed_scale {
            for v in &mut sc.x[t * d..(t + 1) * d] {
                *v *= s;
            }
        }
    }

    let freq_factors = w.rope_freqs.as_ref().map(|f| f.get(file));
    let nr = c.rope.n_dims;
    let nr_swa = c.rope_swa.n_dims;
    for t in 0..n {
        m.rope.fill(
            pos0 + t,
            freq_factors,
            &mut sc.rope_cs[t * nr..(t + 1) * nr],
        );
        m.rope_swa.fill(
            pos0 + t,
            None,
            &mut sc.rope_cs_swa[t * nr_swa..(t + 1) * nr_swa],
        );
    }

    let (qd, kd, vd) = (c.q_dim(), c.kv_dim(), c.kv_dim_v());
    let od = c.n_head * c.head_dim_v;
    for (il, lw) in w.layers.iter().enumerate() {
        if st.abort.load(Ordering::Relaxed) {
            return Err(Error::Aborted);
        }
        let swa = c.swa_layers[il];
        let x = &mut sc.x[..n * d];
        let xn = &mut sc.xn[..n * d];
        let attn_norm = lw.attn_norm.get(file);
        for (xr, on) in x.chunks_exact(d).zip(xn.chunks_exact_mut(d)) {
            ops::rms_norm(xr, Some(attn_norm), c.rms_eps, on);
        }
        let q = &mut sc.q[..n * qd];
        let k = &mut sc.k[..n * kd];
        let v = &mut sc.v[..n * vd];
        project(
            st.pool,
            st.kernels,
            &[
                &lw.wq.matrix(file),
                &lw.wk.matrix(file),
                &lw.wv.matrix(file),
            ],
            xn,
            n,
            &mut sc.act,
            &mut [&mut *q, &mut *k, &mut *v],
        )?;
        if let Some(b) = &lw.bq {
            ops::add_bias(q, b.get(file));
        }
        if let Some(b) = &lw.bk {
            ops::add_bias(k, b.get(file));
        }
        if let Some(b) = &lw.bv {
            ops::add_bias(v, b.get(file));
        }
        if let Some(qn) = &lw.q_norm {
            let qn = qn.get(file);
            for h in q.chunks_exact_mut(c.head_dim) {
                ops::rms_norm_inplace(h, qn, c.rms_eps);
            }
        }
        if let Some(kn) = &lw.k_norm {
            let kn = kn.get(file);
            for h in k.chunks_exact_mut(c.head_dim) {
                ops::rms_norm_inplace(h, kn, c.rms_eps);
            }
        }
        let (rope, cs, nr) = if swa {
            (&m.rope_swa, &sc.rope_cs_swa, nr_swa)
        } else {
            (&m.rope, &sc.rope_cs, nr)
        };
        for t in 0..n {
            let cs = &cs[t * nr..(t + 1) * nr];
            rope.apply(&mut q[t * qd..(t + 1) * qd], c.head_dim, cs);
            rope.apply(&mut k[t * kd..(t + 1) * kd], c.head_dim, cs);
        }
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
            window: if swa { c.sliding_window } else { 0 },
        };
        let att = &mut sc.att[..n * od];
        attention::attention(st.pool, st.kernels, &shape, q, layer_kv, &sc.scores, att);

        let proj = &mut sc.proj[..n * d];
        kernels::matmul(
            st.pool,
            st.kernels,
            &lw.wo.matrix(file),
            att,
            n,
            &mut sc.act,
            proj,
        )?;
        if let Some(pn) = &lw.attn_post_norm {
            let pn = pn.get(file);
            for r in proj.chunks_exact_mut(d) {
                ops::rms_norm_inplace(r, pn, c.rms_eps);
            }
        }
        let x = &mut sc.x[..n * d];
        ops::add_assign(x, proj);

        let xn = &mut sc.xn[..n * d];
        let ffn_norm = lw.ffn_norm.get(file);
        for (xr, on) in x.chunks_exact(d).zip(xn.chunks_exact_mut(d)) {
            ops::rms_norm(xr, Some(ffn_norm), c.rms_eps, on);
        }
        let gate = &mut sc.gate[..n * ff];
        let up = &mut sc.up[..n * ff];
        project(
            st.pool,
            st.kernels,
            &[&lw.ffn_gate.matrix(file), &lw.ffn_up.matrix(file)],
            xn,
            n,
            &mut sc.act,
            &mut [&mut *gate, &mut *up],
        )?;
        match c.arch {
            Arch::Gemma3 => ops::geglu(gate, up),
            Arch::Llama | Arch::Qwen2 => ops::swiglu(gate, up),
        }
        kernels::matmul(
            st.pool,
            st.kernels,
            &lw.ffn_down.matrix(file),
            gate,
            n,
            &mut sc.act,
            proj,
        )?;
        if let Some(pn) = &lw.ffn_post_norm {
            let pn = pn.get(file);
            for r in proj.chunks_exact_mut(d) {
                ops::rms_norm_inplace(r, pn, c.rms_eps);
            }
        }
        ops::add_assign(x, proj);
    }

    let (first, n_out) = match outputs {
        Outputs::Last => (n - 1, 1),
        Outputs::All => (0, n),
        Outputs::None => return Ok(()),
    };
    let out_norm = w.output_norm.get(file);
    let x = &sc.x[first * d..(first + n_out) * d];
    let xn = &mut sc.xn[..n_out * d];
    for (xr, on) in x.chunks_exact(d).zip(xn.chunks_exact_mut(d)) {
        ops::rms_norm(xr, Some(out_norm), c.rms_eps, on);
    }
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
    Ok(())
}
