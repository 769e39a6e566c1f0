//! Mixture-of-Experts feed-forward: a router scores every expert for each token, the top k
//! run, and their outputs are summed with the router's weights. Tokens of a batch are
//! grouped by expert so each chosen expert's weights are read once per batch (a prefill of
//! 512 tokens reads at most every expert once, not 512 × k times), and decode computes
//! only the k chosen experts.

use crate::error::Result;
use crate::kernels::{self, Kernels, Pool};

use super::blocks::Moe;
use super::config::{Activation, MoeConfig};
use super::forward::{glu_ffn, GluBuffers};

/// Per-context buffers for routing a batch, sized once.
pub struct MoeScratch {
    /// Router logits, then probabilities: n_expert per token.
    probs: Vec<f32>,
    /// (expert, weight) for each token's k choices.
    choice: Vec<(u32, f32)>,
    /// Choice slots (t * k + j) grouped by expert, and where each expert's group starts.
    order: Vec<u32>,
    start: Vec<usize>,
    next: Vec<usize>,
    /// The rows of one expert's group, gathered, and its output.
    xg: Vec<f32>,
    yg: Vec<f32>,
    /// Expert weight passes made (one per expert per batch that chose it).
    pub passes: u64,
    /// Token rows those passes computed (k per token).
    pub rows: u64,
}

/// Element counts of the MoE scratch buffers (see `ScratchLens`).
#[derive(Clone, Copy, Debug)]
pub struct MoeLens {
    /// probs, choice/order, xg/yg, start.
    probs: usize,
    choices: usize,
    rows: usize,
    n_expert: usize,
}

impl MoeLens {
    pub fn new(m: &MoeConfig, n_batch: usize, n_embd: usize) -> Option<MoeLens> {
        Some(MoeLens {
            probs: n_batch.checked_mul(m.n_expert)?,
            choices: n_batch.checked_mul(m.n_expert_used)?,
            rows: n_batch.checked_mul(n_embd)?,
            n_expert: m.n_expert,
        })
    }

    /// The size in bytes of each buffer (checked by `bytes` first).
    pub fn blocks(&self) -> [u64; 7] {
        let n = |x: usize, size: usize| x as u64 * size as u64;
        [
            n(self.probs, 4),
            n(self.choices, size_of::<(u32, f32)>()),
            n(self.choices, 4),
            n(self.n_expert + 1, size_of::<usize>()),
            n(self.n_expert, size_of::<usize>()),
            n(self.rows, 4),
            n(self.rows, 4),
        ]
    }

    pub fn bytes(&self) -> Option<u64> {
        let n = |x: usize, size: usize| (x as u64).checked_mul(size as u64);
        [
            n(self.probs, 4)?,
            n(self.choices, size_of::<(u32, f32)>())?,
            n(self.choices, 4)?,
            n(self.n_expert.checked_add(1)?, size_of::<usize>())?,
            n(self.n_expert, size_of::<usize>())?,
            n(self.rows, 4)?,
            n(self.rows, 4)?,
        ]
        .into_iter()
        .try_fold(0u64, u64::checked_add)
    }
}

impl MoeScratch {
    pub fn new(l: &MoeLens) -> MoeScratch {
        MoeScratch {
            probs: vec![0.0; l.probs],
            choice: vec![(0, 0.0); l.choices],
            order: vec![0; l.choices],
            start: vec![0; l.n_expert + 1],
            next: vec![0; l.n_expert],
            xg: vec![0.0; l.rows],
            yg: vec![0.0; l.rows],
            passes: 0,
            rows: 0,
        }
    }

    /// The (expert, weight) choices of the last batch's first `n` tokens, `k` each.
    pub fn choices(&self, n: usize, k: usize) -> &[(u32, f32)] {
        &self.choice[..n * k]
    }

    pub fn size_bytes(&self) -> usize {
        4 * (self.probs.len() + self.order.len() + self.xg.len() + self.yg.len())
            + size_of::<(u32, f32)>() * self.choice.len()
            + size_of::<usize>() * (self.start.len() + self.next.len())
    }
}

/// Softmax over each token's router logits, then its top `k` experts, their weights
/// renormalised over the k when the model says so.
fn route(probs: &mut [f32], n_expert: usize, k: usize, norm: bool, choice: &mut [(u32, f32)]) {
    for (p, ch) in probs
        .chunks_exact_mut(n_expert)
        .zip(choice.chunks_exact_mut(k))
    {
        let max = p.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f64;
        for v in p.iter_mut() {
            *v = (*v - max).exp();
            sum += *v as f64;
        }
        let inv = (1.0 / sum) as f32;
        for v in p.iter_mut() {
            *v *= inv;
        }
        // k is small (2-8): repeated selection beats sorting all experts. Ties go to the
        // lower index.
        for j in 0..k {
            let mut best = usize::MAX;
            for (e, &v) in p.iter().enumerate() {
                let taken = ch[..j].iter().any(|&(c, _)| c as usize == e);
                if !taken && (best == usize::MAX || v > p[best]) {
                    best = e;
                }
            }
            ch[j] = (best as u32, p[best]);
        }
        if norm {
            let s: f32 = ch.iter().map(|c| c.1).sum();
            for c in ch.iter_mut() {
                c.1 /= s;
            }
        }
    }
}

/// The MoE block's output for `n` normed rows `xn`, written to `out`.
#[allow(clippy::too_many_arguments)]
pub fn moe_ffn(
    pool: &Pool,
    k: &Kernels,
    file: &[u8],
    cfg: &MoeConfig,
    activation: Activation,
    w: &Moe,
    xn: &[f32],
    n: usize,
    bufs: &mut GluBuffers<'_>,
    ms: &mut MoeScratch,
    out: &mut [f32],
) -> Result<()> {
    let (ne, nk) = (cfg.n_expert, cfg.n_expert_used);
    let d = xn.len() / n;
    let probs = &mut ms.probs[..n * ne];
    kernels::matmul(pool, k, &w.router.matrix(file), xn, n, bufs.act, probs)?;
    let choice = &mut ms.choice[..n * nk];
    route(probs, ne, nk, cfg.norm_weights, choice);

    // Counting sort of the choice slots by expert.
    ms.start.fill(0);
    for &(e, _) in choice.iter() {
        ms.start[e as usize + 1] += 1;
    }
    for e in 0..ne {
        ms.start[e + 1] += ms.start[e];
    }
    ms.next.copy_from_slice(&ms.start[..ne]);
    for (slot, &(e, _)) in choice.iter().enumerate() {
        let at = &mut ms.next[e as usize];
        ms.order[*at] = slot as u32;
        *at += 1;
    }

    out[..n * d].fill(0.0);
    for e in 0..ne {
        let group = &ms.order[ms.start[e]..ms.start[e + 1]];
        if group.is_empty() {
            continue;
        }
        let rows = group.len();
        for (i, &slot) in group.iter().enumerate() {
            let t = slot as usize / nk;
            ms.xg[i * d..(i + 1) * d].copy_from_slice(&xn[t * d..(t + 1) * d]);
        }
        let mats = [
            w.gate.matrix(file, e),
            w.up.matrix(file, e),
            w.down.matrix(file, e),
        ];
        glu_ffn(
            pool,
            k,
            activation,
            &mats,
            &ms.xg[..rows * d],
            rows,
            bufs,
            &mut ms.yg[..rows * d],
        )?;
        for (i, &slot) in group.iter().enumerate() {
            let (t, wt) = (slot as usize / nk, choice[slot as usize].1);
            for (o, &y) in out[t * d..(t + 1) * d]
                .iter_mut()
                .zip(&ms.yg[i * d..(i + 1) * d])
            {
                *o += wt * y;
            }
        }
        ms.passes += 1;
        ms.rows += rows as u64;
    }

    if let Some(s) = &w.shared {
        let mats = [s.gate.matrix(file), s.up.matrix(file), s.down.matrix(file)];
        glu_ffn(pool, k, activation, &mats, xn, n, bufs, &mut ms.yg[..n * d])?;
        for t in 0..n {
            // qwen2moe scales the shared expert by sigmoid(x · w) per token.
            let g = s.gate_inp.as_ref().map_or(1.0, |gi| {
                let dot: f32 = xn[t * d..(t + 1) * d]
                    .iter()
                    .zip(gi.get(file))
                    .map(|(a, b)| a * b)
                    .sum();
                1.0 / (1.0 + (-dot).exp())
            });
            for (o, &y) in out[t * d..(t + 1) * d]
                .iter_mut()
                .zip(&ms.yg[t * d..(t + 1) * d])
            {
                *o += g * y;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::route;

    #[test]
    fn route_picks_top_k_and_renormalises() {
        let mut p = [0.0, 2.0, 1.0, -1.0];
        let mut ch = [(0, 0.0); 2];
        route(&mut p, 4, 2, true, &mut ch);
        assert_eq!((ch[0].0, ch[1].0), (1, 2));
        assert!((ch[0].1 + ch[1].1 - 1.0).abs() < 1e-6);
        let e = 1f32.exp();
        assert!((ch[0].1 - e / (e + 1.0)).abs() < 1e-6);
    }

    #[test]
    fn route_without_renormalising_keeps_softmax_weights() {
        let mut p = [0.0, 0.0, 0.0, 0.0];
        let mut ch = [(0, 0.0); 2];
        route(&mut p, 4, 2, false, &mut ch);
        assert_eq!((ch[0].0, ch[1].0), (0, 1));
        assert!((ch[0].1 - 0.25).abs() < 1e-6 && (ch[1].1 - 0.25).abs() < 1e-6);
    }
}
