//! Causal multi-head attention with grouped-query heads over the KV cache, for a batch of
//! queries at consecutive positions.

use std::sync::Mutex;

use half::f16;

use super::kv::{KvBuf, LayerKv};
use crate::kernels::{Kernels, Pool};
use crate::quant::blocks::BlockQ8_0;
use crate::quant::types::QK;

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
    /// tanh soft-capping of the scaled scores (0 = off; gemma2).
    pub softcap: f32,
    /// Sliding window (keys at distance >= window are masked); 0 = none.
    pub window: usize,
}

/// Per-thread rows of attention scores, each `n_ctx` long. A worker only ever locks its
/// own row, so the locks are never contended; they make the sharing safe without `unsafe`.
pub struct ScoreRows(Vec<Mutex<Vec<f32>>>);

impl ScoreRows {
    pub fn new(n_threads: usize, n_ctx: usize) -> ScoreRows {
        ScoreRows(
            (0..n_threads.max(1))
                .map(|_| Mutex::new(vec![0.0; n_ctx]))
                .collect(),
        )
    }

    pub fn size_bytes(&self) -> usize {
        self.0
            .iter()
            .map(|m| m.lock().map_or(0, |v| v.len() * 4))
            .sum()
    }
}

/// Keys or values of one layer as a typed slice.
#[derive(Clone, Copy)]
enum Rows<'a> {
    F16(&'a [f16]),
    F32(&'a [f32]),
    Q8_0(&'a [BlockQ8_0]),
}

impl<'a> Rows<'a> {
    fn of(b: &'a KvBuf) -> Rows<'a> {
        match b {
            KvBuf::F16(v) => Rows::F16(v),
            KvBuf::F32(v) => Rows::F32(v),
            KvBuf::Q8_0(v) => Rows::Q8_0(v),
        }
    }

    #[inline]
    fn dot(self, k: &Kernels, at: usize, n: usize, q: &[f32]) -> f32 {
        match self {
            Rows::F16(v) => k.dot_f16(&v[at..at + n], q),
            Rows::F32(v) => k.dot_f32(&v[at..at + n], q),
            Rows::Q8_0(v) => dot_q8_0(&v[at / QK..(at + n) / QK], q),
        }
    }

    #[inline]
    fn axpy(self, k: &Kernels, at: usize, n: usize, w: f32, out: &mut [f32]) {
        match self {
            Rows::F16(v) => k.axpy_f16(out, w, &v[at..at + n]),
            Rows::F32(v) => k.axpy_f32(out, w, &v[at..at + n]),
            Rows::Q8_0(v) => axpy_q8_0(&v[at / QK..(at + n) / QK], w, out),
        }
    }
}

/// `q · k` for a Q8_0 key row. Portable code the compiler vectorizes: the 8-bit cache is an
/// option for memory, not the fast path (f16 is, with its SIMD kernels).
#[inline]
fn dot_q8_0(k: &[BlockQ8_0], q: &[f32]) -> f32 {
    k.iter()
        .zip(q.chunks_exact(QK))
        .map(|(b, q)| {
            let s: f32 = b.qs.iter().zip(q).map(|(&x, &y)| f32::from(x) * y).sum();
            b.d.to_f32() * s
        })
        .sum()
}

/// `out += w · v` for a Q8_0 value row.
#[inline]
fn axpy_q8_0(v: &[BlockQ8_0], w: f32, out: &mut [f32]) {
    for (b, o) in v.iter().zip(out.chunks_exact_mut(QK)) {
        let wd = w * b.d.to_f32();
        for (o, &x) in o.iter_mut().zip(&b.qs) {
            *o += wd * f32::from(x);
        }
    }
}

/// `out[t, h, :] = softmax(scale * q[t, h] · K[..=pos_t]) · V` for every query `t` and head `h`.
pub fn attention(
    pool: &Pool,
    k: &Kernels,
    s: &AttnShape,
    q: &[f32],
    kv: &LayerKv,
    scores: &ScoreRows,
    out: &mut [f32],
) {
    let n_tasks = s.n_tok * s.n_head;
    let hdv = s.head_dim_v;
    // A few tasks per thread so uneven rows (longer contexts for later tokens) balance out.
    let per_task = n_tasks.div_ceil(pool.n_threads() * 4).max(1);
    let (kr, vr) = (Rows::of(&kv.k), Rows::of(&kv.v));
    pool.for_each_chunk(
        &mut out[..n_tasks * hdv],
        per_task * hdv,
        &|i, chunk, thread| {
            let Ok(mut sc) = scores.0[thread % scores.0.len()].lock() else {
                return;
            };
            for (j, o) in chunk.chunks_exact_mut(hdv).enumerate() {
                head(k, s, i * per_task + j, q, kr, vr, &mut sc, o);
            }
        },
    );
}

#[allow(clippy::too_many_arguments)]
#[inline]
fn head(
    k: &Kernels,
    s: &AttnShape,
    task: usize,
    q: &[f32],
    kr: Rows<'_>,
    vr: Rows<'_>,
    sc: &mut [f32],
    o: &mut [f32],
) {
    let t = task / s.n_head;
    let h = task % s.n_head;
    let kvh = h / (s.n_head / s.n_head_kv);
    let (hd, hdv) = (s.head_dim, s.head_dim_v);
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
        *sj = kr.dot(k, (start + j) * k_dim + kvh * hd, hd, qh) * s.scale;
        if s.softcap > 0.0 {
            *sj = s.softcap * (*sj / s.softcap).tanh();
        }
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
        vr.axpy(k, (start + j) * v_dim + kvh * hdv, hdv, p * inv, o);
    }
}

/// Shows the observer the softmax weights of the heads it wants, recomputed on this thread
/// into the first score row: `head` keeps none of them (its workers reuse their rows), and
/// doing it here keeps the kernels free of any observer test.
pub(crate) fn observe_weights(
    k: &Kernels,
    s: &AttnShape,
    layer: usize,
    q: &[f32],
    kv: &LayerKv,
    scores: &ScoreRows,
    obs: &mut dyn super::observe::Observer,
) {
    let Ok(mut sc) = scores.0[0].lock() else {
        return;
    };
    let kr = Rows::of(&kv.k);
    let (hd, k_dim) = (s.head_dim, s.n_head_kv * s.head_dim);
    for h in 0..s.n_head {
        if !obs.wants_attention(layer, h) {
            continue;
        }
        let kvh = h / (s.n_head / s.n_head_kv);
        for t in 0..s.n_tok {
            let pos = s.pos0 + t;
            let start = if s.window > 0 {
                (pos + 1).saturating_sub(s.window)
            } else {
                0
            };
            let qh = &q[(t * s.n_head + h) * hd..(t * s.n_head + h + 1) * hd];
            let row = &mut sc[start..=pos];
            // The same arithmetic as `head`, so the weights are the ones the pass used.
            let mut max = f32::NEG_INFINITY;
            for (j, sj) in row.iter_mut().enumerate() {
                *sj = kr.dot(k, (start + j) * k_dim + kvh * hd, hd, qh) * s.scale;
                if s.softcap > 0.0 {
                    *sj = s.softcap * (*sj / s.softcap).tanh();
                }
                max = max.max(*sj);
            }
            let mut sum = 0.0f64;
            for sj in row.iter_mut() {
                *sj = (*sj - max).exp();
                sum += *sj as f64;
            }
            let inv = (1.0 / sum) as f32;
            row.iter_mut().for_each(|p| *p *= inv);
            obs.observe(&super::observe::View {
                stage: super::observe::Stage::AttnWeights,
                layer,
                head: h,
                pos0: pos,
                rows: 1,
                data: row,
                ids: &[],
            });
        }
    }
}
