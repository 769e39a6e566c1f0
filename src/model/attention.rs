//! Causal multi-head attention with grouped-query heads over the KV cache, for a batch of
//! queries at consecutive positions.

use rayon::prelude::*;

use crate::kernels::Pool;
use crate::runtime::kv::{KvBuf, KvElem, LayerKv};

/// Shape and position of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    pub n_tok: usize,
    /// Position of the first query.
    pub pos0: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub head_dim_v: usize,
    /// Multiplier of q·k.
    pub scale: f32,
    /// Sliding window (keys at distance >= window are masked); 0 = none.
    pub window: usize,
}

/// `out[t, h, :] = softmax(scale * q[t, h] · K[..=pos_t]) · V` for every query `t` and head `h`.
///
/// `scores` is scratch of at least `groups(pool) * (pos0 + n_tok)` floats.
pub fn attention(
    pool: &Pool,
    s: &AttnShape,
    q: &[f32],
    kv: &LayerKv,
    scores: &mut [f32],
    out: &mut [f32],
) {
    match (&kv.k, &kv.v) {
        (KvBuf::F16(k), KvBuf::F16(v)) => run(pool, s, q, k, v, scores, out),
        (KvBuf::F32(k), KvBuf::F32(v)) => run(pool, s, q, k, v, scores, out),
        _ => unreachable!("keys and values share one element type"),
    }
}

/// How many independent work groups attention splits into (each needs its own scores row).
pub fn groups(n_threads: usize) -> usize {
    n_threads * 4
}

fn run<E: KvElem>(
    pool: &Pool,
    s: &AttnShape,
    q: &[f32],
    k: &[E],
    v: &[E],
    scores: &mut [f32],
    out: &mut [f32],
) {
    let n_ctx_used = s.pos0 + s.n_tok;
    let n_tasks = s.n_tok * s.n_head;
    let n_groups = groups(pool.n_threads()).min(n_tasks).max(1);
    let per_group = n_tasks.div_ceil(n_groups);
    let hdv = s.head_dim_v;
    let out = &mut out[..n_tasks * hdv];
    pool.install(|| {
        out.par_chunks_mut(per_group * hdv)
            .zip(scores.par_chunks_mut(n_ctx_used))
            .enumerate()
            .for_each(|(g, (out_g, sc))| {
                for (i, o) in out_g.chunks_exact_mut(hdv).enumerate() {
                    head(s, g * per_group + i, q, k, v, sc, o);
                }
            });
    });
}

#[inline]
fn head<E: KvElem>(
    s: &AttnShape,
    task: usize,
    q: &[f32],
    k: &[E],
    v: &[E],
    sc: &mut [f32],
    o: &mut [f32],
) {
    let t = task / s.n_head;
    let h = task % s.n_head;
    let kvh = h / (s.n_head / s.n_head_kv);
    let hd = s.head_dim;
    let hdv = s.head_dim_v;
    let k_dim = s.n_head_kv * hd;
    let v_dim = s.n_head_kv * hdv;
    let pos = s.pos0 + t;
    let start = if s.window > 0 {
        (pos + 1).saturating_sub(s.window)
    } else {
        0
    };
    let qh = &q[(t * s.n_head + h) * hd..(t * s.n_head + h + 1) * hd];
    let sc = &mut sc[start..=pos];
    let mut max = f32::NEG_INFINITY;
    for (j, sj) in sc.iter_mut().enumerate() {
        let kr = &k[(start + j) * k_dim + kvh * hd..(start + j) * k_dim + (kvh + 1) * hd];
        let mut d = 0.0f32;
        for (&a, &b) in qh.iter().zip(kr) {
            d += a * b.to_f32();
        }
        *sj = d * s.scale;
        max = max.max(*sj);
    }
    let mut sum = 0.0f64;
    for sj in sc.iter_mut() {
        *sj = (*sj - max).exp();
        sum += *sj as f64;
    }
    let inv = (1.0 / sum) as f32;
    o.fill(0.0);
    for (j, &p) in sc.iter().enumerate() {
        let w = p * inv;
        let vr = &v[(start + j) * v_dim + kvh * hdv..(start + j) * v_dim + (kvh + 1) * hdv];
        for (a, &b) in o.iter_mut().zip(vr) {
            *a += w * b.to_f32();
        }
    }
}
