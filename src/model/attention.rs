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

/// Rows of attention scores, each `n_ctx` long, for the observer's recomputation of the
/// attention weights (the pass itself needs none: its softmax is online).
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

/// Scores held at once on the stack by one pass over a run of keys: a run is this many
/// keys divided by the query heads that share them.
const RUN_SCORES: usize = 512;
/// Query heads of one group handled together (larger groups are taken in slices).
const SLICE: usize = 8;
/// Fewest keys a decode split covers: shorter, and merging costs more than it spreads.
const MIN_SPLIT_KEYS: usize = 64;

/// Most splits of the key range a decoded token's attention uses: enough tasks (kv heads
/// × splits) for eight per thread. [`attention`] needs `partials_len` floats of scratch.
pub fn max_splits(n_threads: usize, n_head_kv: usize) -> usize {
    (8 * n_threads.max(1)).div_ceil(n_head_kv.max(1)).max(1)
}

/// Floats of scratch [`attention`] needs: per query head and split, the unnormalized
/// output, the running maximum and the running sum.
pub fn partials_len(n_threads: usize, n_head: usize, n_head_kv: usize, head_dim_v: usize) -> usize {
    n_head * (head_dim_v + 2) * max_splits(n_threads, n_head_kv)
}

/// `out[t, h, :] = softmax(scale * q[t, h] · K[..=pos_t]) · V` for every query `t` and head `h`.
///
/// The query heads that share a kv head (GQA) are processed together, so each key and
/// value row is read once for the group, not once per head; the softmax is computed online
/// (running maximum and sum, rescaled as larger scores appear), over runs of keys, so no
/// buffer grows with the context. A batch makes one task per token and kv head. A single
/// token (decode) also splits the keys, so that a model with few kv heads keeps every
/// thread busy; the splits' partial results are merged with their maxima.
pub fn attention(
    pool: &Pool,
    k: &Kernels,
    s: &AttnShape,
    q: &[f32],
    kv: &LayerKv,
    partials: &mut [f32],
    out: &mut [f32],
) {
    let group = s.n_head / s.n_head_kv;
    let hdv = s.head_dim_v;
    let run = Run {
        k,
        s,
        q,
        kr: Rows::of(&kv.k),
        vr: Rows::of(&kv.v),
    };
    let (lo, hi) = run.keys(0);
    let splits = (partials.len() / (s.n_head * (hdv + 2)))
        .min((hi - lo) / MIN_SPLIT_KEYS)
        .max(1);
    if s.n_tok > 1 || splits == 1 {
        pool.for_each_chunk(
            &mut out[..s.n_tok * s.n_head * hdv],
            group * hdv,
            &|i, o, _| {
                let (t, kvh) = (i / s.n_head_kv, i % s.n_head_kv);
                run.heads(t, kvh, run.keys(t), o, None);
            },
        );
        return;
    }
    // Decode, split: chunk i is kv head i / splits, split i % splits, holding for each of
    // its group's heads the output, then maximum and sum.
    let per = group * (hdv + 2);
    let parts = &mut partials[..s.n_head_kv * splits * per];
    pool.for_each_chunk(parts, per, &|i, p, _| {
        let (kvh, sp) = (i / splits, i % splits);
        let (a, b) = (
            lo + (hi - lo) * sp / splits,
            lo + (hi - lo) * (sp + 1) / splits,
        );
        let (o, ml) = p.split_at_mut(group * hdv);
        run.heads(0, kvh, (a, b), o, Some(ml));
    });
    for h in 0..s.n_head {
        let (kvh, g) = (h / group, h % group);
        let part = |sp: usize| &parts[(kvh * splits + sp) * per..][..per];
        let ml = |sp: usize| {
            let p = part(sp);
            (p[group * hdv + 2 * g], p[group * hdv + 2 * g + 1])
        };
        let m = (0..splits)
            .map(|sp| ml(sp).0)
            .fold(f32::NEG_INFINITY, f32::max);
        let o = &mut out[h * hdv..(h + 1) * hdv];
        o.fill(0.0);
        let mut l = 0.0;
        for sp in 0..splits {
            let (ms, ls) = ml(sp);
            let w = (ms - m).exp();
            l += w * ls;
            for (x, &y) in o.iter_mut().zip(&part(sp)[g * hdv..(g + 1) * hdv]) {
                *x += w * y;
            }
        }
        let inv = 1.0 / l;
        o.iter_mut().for_each(|x| *x *= inv);
    }
}

/// One attention call's inputs.
struct Run<'a> {
    k: &'a Kernels,
    s: &'a AttnShape,
    q: &'a [f32],
    kr: Rows<'a>,
    vr: Rows<'a>,
}

impl Run<'_> {
    /// The key positions query `t` attends to: `lo..hi`.
    fn keys(&self, t: usize) -> (usize, usize) {
        let pos = self.s.pos0 + t;
        let lo = if self.s.window > 0 {
            (pos + 1).saturating_sub(self.s.window)
        } else {
            0
        };
        (lo, pos + 1)
    }

    /// Attends the query heads of token `t` on kv head `kvh` (the whole group, in slices of
    /// at most SLICE heads) to keys `lo..hi`, into `o` (group × head_dim_v). With `ml`
    /// (2 × group floats) each head's output is left weighted by exp(score − its maximum)
    /// and not divided by the sum, and the maxima and sums are stored in `ml` in pairs, for
    /// a merge with other key ranges; without it, the outputs are normalized.
    fn heads(
        &self,
        t: usize,
        kvh: usize,
        (lo, hi): (usize, usize),
        o: &mut [f32],
        mut ml: Option<&mut [f32]>,
    ) {
        let s = self.s;
        let group = s.n_head / s.n_head_kv;
        let hdv = s.head_dim_v;
        o.fill(0.0);
        for g0 in (0..group).step_by(SLICE) {
            let n = SLICE.min(group - g0);
            let mut m = [f32::NEG_INFINITY; SLICE];
            let mut l = [0.0f32; SLICE];
            let oo = &mut o[g0 * hdv..(g0 + n) * hdv];
            self.accumulate(t, kvh * group + g0, n, kvh, (lo, hi), oo, &mut m, &mut l);
            for g in 0..n {
                match ml.as_deref_mut() {
                    Some(ml) => {
                        ml[2 * (g0 + g)] = m[g];
                        ml[2 * (g0 + g) + 1] = l[g];
                    }
                    None => {
                        let inv = 1.0 / l[g];
                        oo[g * hdv..(g + 1) * hdv]
                            .iter_mut()
                            .for_each(|x| *x *= inv);
                    }
                }
            }
        }
    }

    /// The online-softmax inner loop for heads `h0..h0 + n` of token `t`, all reading kv
    /// head `kvh`, over keys `lo..hi`: per run of keys, the scores of every head against
    /// each key row (read once), then each head's running maximum, sum and output rescaled,
    /// then each value row (read once) added to every head's output with its weight.
    #[allow(clippy::too_many_arguments)]
    fn accumulate(
        &self,
        t: usize,
        h0: usize,
        n: usize,
        kvh: usize,
        (lo, hi): (usize, usize),
        o: &mut [f32],
        m: &mut [f32; SLICE],
        l: &mut [f32; SLICE],
    ) {
        let (k, s) = (self.k, self.s);
        let (hd, hdv) = (s.head_dim, s.head_dim_v);
        let (k_dim, v_dim) = (s.n_head_kv * hd, s.n_head_kv * hdv);
        let qrow = |g: usize| {
            let at = (t * s.n_head + h0 + g) * hd;
            &self.q[at..at + hd]
        };
        let len = RUN_SCORES / n;
        let mut sc = [0.0f32; RUN_SCORES];
        let mut j0 = lo;
        while j0 < hi {
            let j1 = (j0 + len).min(hi);
            for j in j0..j1 {
                let at = j * k_dim + kvh * hd;
                for g in 0..n {
                    let mut x = self.kr.dot(k, at, hd, qrow(g)) * s.scale;
                    if s.softcap > 0.0 {
                        x = s.softcap * (x / s.softcap).tanh();
                    }
                    sc[g * len + j - j0] = x;
                }
            }
            for g in 0..n {
                let row = &mut sc[g * len..g * len + (j1 - j0)];
                let mx = row.iter().fold(m[g], |a, &b| a.max(b));
                let corr = (m[g] - mx).exp();
                m[g] = mx;
                // The sum in f64, as a long context adds thousands of terms.
                let mut sum = f64::from(l[g] * corr);
                if corr != 1.0 {
                    o[g * hdv..(g + 1) * hdv]
                        .iter_mut()
                        .for_each(|x| *x *= corr);
                }
                for x in row.iter_mut() {
                    *x = (*x - mx).exp();
                    sum += f64::from(*x);
                }
                l[g] = sum as f32;
            }
            for j in j0..j1 {
                let at = j * v_dim + kvh * hdv;
                for g in 0..n {
                    let w = sc[g * len + j - j0];
                    self.vr.axpy(k, at, hdv, w, &mut o[g * hdv..(g + 1) * hdv]);
                }
            }
            j0 = j1;
        }
    }
}

/// Shows the observer the softmax weights of the heads it wants, recomputed on this thread
/// into the first score row: the pass keeps none of them (its softmax is online), and
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
            // The same scores as the pass; the softmax is the exact one the online
            // version computes, up to rounding.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::kv::{KvCache, KvType};

    /// A small deterministic generator (xorshift), values in -1..1.
    fn values(seed: &mut u64, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                (*seed >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// The definition, in f64: scores, softmax over the visible keys, weighted values.
    fn naive(s: &AttnShape, q: &[f32], k: &[f32], v: &[f32]) -> Vec<f32> {
        let (hd, hdv, group) = (s.head_dim, s.head_dim_v, s.n_head / s.n_head_kv);
        let mut out = vec![0.0; s.n_tok * s.n_head * hdv];
        for t in 0..s.n_tok {
            let pos = s.pos0 + t;
            let lo = if s.window > 0 {
                (pos + 1).saturating_sub(s.window)
            } else {
                0
            };
            for h in 0..s.n_head {
                let kvh = h / group;
                let qh = &q[(t * s.n_head + h) * hd..][..hd];
                let sc: Vec<f64> = (lo..=pos)
                    .map(|j| {
                        let kj = &k[(j * s.n_head_kv + kvh) * hd..][..hd];
                        let x = qh
                            .iter()
                            .zip(kj)
                            .map(|(&a, &b)| a as f64 * b as f64)
                            .sum::<f64>()
                            * s.scale as f64;
                        if s.softcap > 0.0 {
                            s.softcap as f64 * (x / s.softcap as f64).tanh()
                        } else {
                            x
                        }
                    })
                    .collect();
                let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = sc.iter().map(|x| (x - m).exp()).sum();
                for (i, j) in (lo..=pos).enumerate() {
                    let p = (sc[i] - m).exp() / z;
                    let vj = &v[(j * s.n_head_kv + kvh) * hdv..][..hdv];
                    for (o, &x) in out[(t * s.n_head + h) * hdv..][..hdv].iter_mut().zip(vj) {
                        *o += (p * x as f64) as f32;
                    }
                }
            }
        }
        out
    }

    /// Batches and single tokens (split across threads or not), GQA groups smaller and
    /// larger than a slice, odd head sizes, windows and soft-capping: all equal the
    /// definition.
    #[test]
    fn attention_matches_the_definition() {
        let pool = Pool::new(2).unwrap();
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        // (n_head, n_head_kv, head_dim, head_dim_v, n_ctx, n_tok, pos0, window, softcap)
        let cases = [
            (4, 2, 16, 16, 40, 40, 0, 0, 0.0),
            (9, 3, 64, 64, 700, 1, 699, 0, 0.0),
            (12, 1, 24, 20, 1000, 1, 999, 0, 0.0),
            (20, 2, 17, 33, 300, 5, 295, 0, 0.0),
            (4, 4, 32, 32, 900, 1, 899, 100, 0.0),
            (8, 2, 16, 16, 600, 3, 597, 0, 3.0),
            (2, 1, 8, 8, 5, 1, 4, 0, 0.0),
        ];
        for (n_head, n_head_kv, hd, hdv, n_ctx, n_tok, pos0, window, softcap) in cases {
            let s = AttnShape {
                n_tok,
                pos0,
                n_head,
                n_head_kv,
                head_dim: hd,
                head_dim_v: hdv,
                scale: 1.0 / (hd as f32).sqrt(),
                softcap,
                window,
            };
            let q = values(&mut seed, n_tok * n_head * hd);
            let k = values(&mut seed, n_ctx * n_head_kv * hd);
            let v = values(&mut seed, n_ctx * n_head_kv * hdv);
            let mut cache = KvCache::new(KvType::F32, 1, n_ctx, n_head_kv * hd, n_head_kv * hdv);
            cache.layers[0].k.write(0, n_head_kv * hd, &k);
            cache.layers[0].v.write(0, n_head_kv * hdv, &v);
            let want = naive(&s, &q, &k, &v);
            for threads in [1, 2, 7] {
                let mut parts = vec![0.0; partials_len(threads, n_head, n_head_kv, hdv)];
                let mut out = vec![f32::NAN; n_tok * n_head * hdv];
                let k = Kernels::detect();
                attention(&pool, k, &s, &q, &cache.layers[0], &mut parts, &mut out);
                let err = out
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max);
                assert!(
                    err < 1e-5,
                    "heads {n_head}/{n_head_kv}, dims {hd}/{hdv}, {n_tok} tokens at {pos0}, \
                     window {window}, cap {softcap}, scratch for {threads} threads: error {err}"
                );
            }
        }
    }
}
