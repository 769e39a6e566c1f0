//! Element-wise and row-wise operations of the forward pass. They follow ggml's order of
//! operations where that affects rounding, so ember's logits track llama.cpp's closely.

use std::sync::OnceLock;

use half::f16;

use super::config::{Rope, RopeLayout, RopeScaling};

/// `out = x / rms(x) * w` (w omitted: no scale). The sum of squares is accumulated in f64
/// as ggml does.
pub fn rms_norm(x: &[f32], w: Option<&[f32]>, eps: f32, out: &mut [f32]) {
    let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    match w {
        Some(w) => {
            for ((o, &v), &w) in out.iter_mut().zip(x).zip(w) {
                *o = v * scale * w;
            }
        }
        None => {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = v * scale;
            }
        }
    }
}

/// In-place RMS norm.
pub fn rms_norm_inplace(x: &mut [f32], w: &[f32], eps: f32) {
    let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for (v, &w) in x.iter_mut().zip(w) {
        *v = *v * scale * w;
    }
}

#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// `gate = silu(gate) * up`.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = silu(*g) * u;
    }
}

/// tanh-approximated GELU.
#[inline]
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    const COEF_A: f32 = 0.044715;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + COEF_A * x * x)).tanh())
}

/// GELU of every f16 value, rounded to f16: ggml evaluates GELU through this table on
/// CPUs, and matching it keeps ember's activations on llama.cpp's.
fn gelu_table() -> &'static [f16] {
    static TABLE: OnceLock<Vec<f16>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|b| f16::from_f32(gelu_tanh(f16::from_bits(b).to_f32())))
            .collect()
    })
}

/// Prepares the GELU table so the first forward pass does not allocate it.
pub fn warm_up() {
    gelu_table();
}

/// `gate = gelu(gate) * up`, as ggml's geglu.
pub fn geglu(gate: &mut [f32], up: &[f32]) {
    let table = gelu_table();
    for (g, &u) in gate.iter_mut().zip(up) {
        let x = *g;
        *g = if x <= -10.0 {
            0.0
        } else if x >= 10.0 {
            x * u
        } else {
            table[f16::from_f32(x).to_bits() as usize].to_f32() * u
        };
    }
}

/// Adds `b` to every row of `x`.
pub fn add_bias(x: &mut [f32], b: &[f32]) {
    for row in x.chunks_exact_mut(b.len()) {
        for (v, &b) in row.iter_mut().zip(b) {
            *v += b;
        }
    }
}

/// `x += y`.
pub fn add_assign(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// The (cos, sin) pairs for one position, computed as ggml's rope cache does.
pub struct RopeTable {
    rope: Rope,
    theta_scale: f32,
    corr_dims: [f32; 2],
    freq_scale: f32,
    ext_factor: f32,
    mscale: f32,
}

impl RopeTable {
    pub fn new(rope: Rope) -> RopeTable {
        let n_dims = rope.n_dims as f32;
        let theta_scale = rope.base.powf(-2.0 / n_dims);
        let (freq_scale, ext_factor, mscale, corr_dims) = match rope.scaling {
            RopeScaling::None => (1.0, 0.0, rope.attn_factor, [0.0, 0.0]),
            RopeScaling::Linear { factor } => (1.0 / factor, 0.0, rope.attn_factor, [0.0, 0.0]),
            RopeScaling::Yarn {
                factor,
                orig_ctx,
                beta_fast,
                beta_slow,
            } => {
                let corr_dim = |n_rot: f32| {
                    n_dims * (orig_ctx as f32 / (n_rot * 2.0 * std::f32::consts::PI)).ln()
                        / (2.0 * rope.base.ln())
                };
                let start = corr_dim(beta_fast).floor().max(0.0);
                let end = corr_dim(beta_slow).ceil().min(n_dims - 1.0);
                // llama.cpp cancels its get_mscale(factor) against the 1 + 0.1 ln(factor) that
                // the rope kernel applies (see `fill`), so only the file's attn_factor is left.
                (1.0 / factor, 1.0, rope.attn_factor, [start, end])
            }
        };
        RopeTable {
            rope,
            theta_scale,
            corr_dims,
            freq_scale,
            ext_factor,
            mscale,
        }
    }

    pub fn n_dims(&self) -> usize {
        self.rope.n_dims
    }

    /// Fills `cs` (n_dims values: cos, sin interleaved) for position `pos`.
    pub fn fill(&self, pos: usize, freq_factors: Option<&[f32]>, cs: &mut [f32]) {
        let mut theta = pos as f32;
        for i in 0..self.rope.n_dims / 2 {
            let ff = freq_factors.map_or(1.0, |f| f[i]);
            let theta_extrap = theta / ff;
            let theta_interp = self.freq_scale * theta_extrap;
            let mut th = theta_interp;
            let mut mscale = self.mscale;
            if self.ext_factor != 0.0 {
                let y = ((2 * i) as f32 / 2.0 - self.corr_dims[0])
                    / (self.corr_dims[1] - self.corr_dims[0]).max(0.001);
                let ramp = 1.0 - y.clamp(0.0, 1.0);
                let mix = ramp * self.ext_factor;
                th = theta_interp * (1.0 - mix) + theta_extrap * mix;
                mscale *= 1.0 + 0.1 * (1.0 / self.freq_scale).ln();
            }
            cs[2 * i] = th.cos() * mscale;
            cs[2 * i + 1] = th.sin() * mscale;
            theta *= self.theta_scale;
        }
    }

    /// Rotates every head of `x` (n_heads * head_dim values) with the pairs in `cs`.
    pub fn apply(&self, x: &mut [f32], head_dim: usize, cs: &[f32]) {
        let n = self.rope.n_dims;
        for head in x.chunks_exact_mut(head_dim) {
            match self.rope.layout {
                RopeLayout::Normal => {
                    for i in 0..n / 2 {
                        let (c, s) = (cs[2 * i], cs[2 * i + 1]);
                        let (x0, x1) = (head[2 * i], head[2 * i + 1]);
                        head[2 * i] = x0 * c - x1 * s;
                        head[2 * i + 1] = x0 * s + x1 * c;
                    }
                }
                RopeLayout::Neox => {
                    let h = n / 2;
                    for i in 0..h {
                        let (c, s) = (cs[2 * i], cs[2 * i + 1]);
                        let (x0, x1) = (head[i], head[i + h]);
                        head[i] = x0 * c - x1 * s;
                        head[i + h] = x0 * s + x1 * c;
                    }
                }
            }
        }
    }
}

/// Soft-caps logits: `cap * tanh(x / cap)`.
pub fn softcap(x: &mut [f32], cap: f32) {
    for v in x {
        *v = cap * (*v / cap).tanh();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_normal_rotates_pairs_by_position() {
        let rope = Rope {
            base: 10000.0,
            n_dims: 4,
            layout: RopeLayout::Normal,
            scaling: RopeScaling::None,
            attn_factor: 1.0,
        };
        let t = RopeTable::new(rope);
        let mut cs = [0.0; 4];
        t.fill(3, None, &mut cs);
        let mut x = [1.0, 0.0, 1.0, 0.0];
        t.apply(&mut x, 4, &cs);
        // First pair turns by 3 radians, second by 3 / 100.
        assert!((x[0] - 3f32.cos()).abs() < 1e-6 && (x[1] - 3f32.sin()).abs() < 1e-6);
        assert!((x[2] - 0.03f32.cos()).abs() < 1e-6 && (x[3] - 0.03f32.sin()).abs() < 1e-6);
    }

    #[test]
    fn rope_neox_pairs_halves() {
        let rope = Rope {
            base: 10000.0,
            n_dims: 4,
            layout: RopeLayout::Neox,
            scaling: RopeScaling::None,
            attn_factor: 1.0,
        };
        let t = RopeTable::new(rope);
        let mut cs = [0.0; 4];
        t.fill(2, None, &mut cs);
        let mut x = [1.0, 1.0, 0.0, 0.0];
        t.apply(&mut x, 4, &cs);
        assert!((x[0] - 2f32.cos()).abs() < 1e-6 && (x[2] - 2f32.sin()).abs() < 1e-6);
        assert!((x[1] - 0.02f32.cos()).abs() < 1e-6 && (x[3] - 0.02f32.sin()).abs() < 1e-6);
    }

    #[test]
    fn rotating_back_by_d_equals_rotating_at_pos_minus_d() {
        for layout in [RopeLayout::Normal, RopeLayout::Neox] {
            let t = RopeTable::new(Rope {
                base: 10000.0,
                n_dims: 8,
                layout,
                scaling: RopeScaling::None,
                attn_factor: 1.0,
            });
            let x: Vec<f32> = (0..16).map(|i| (i as f32 * 0.37).sin()).collect();
            let (mut cs_p, mut cs_d, mut cs_pd) = ([0.0; 8], [0.0; 8], [0.0; 8]);
            t.fill(57, None, &mut cs_p);
            t.fill(20, None, &mut cs_d);
            t.fill(37, None, &mut cs_pd);
            for pair in cs_d.chunks_exact_mut(2) {
                pair[1] = -pair[1];
            }
            let mut a = x.clone();
            t.apply(&mut a, 8, &cs_p);
            t.apply(&mut a, 8, &cs_d);
            let mut b = x.clone();
            t.apply(&mut b, 8, &cs_pd);
            for (u, v) in a.iter().zip(&b) {
                assert!((u - v).abs() < 1e-4, "{layout:?}: {u} vs {v}");
            }
        }
    }

    #[test]
    fn rms_norm_unit_rms() {
        let x = [3.0, -4.0, 0.0, 5.0];
        let mut out = [0.0; 4];
        rms_norm(&x, None, 0.0, &mut out);
        let ms: f32 = out.iter().map(|v| v * v).sum::<f32>() / 4.0;
        assert!((ms - 1.0).abs() < 1e-6);
    }

    #[test]
    fn geglu_table_tracks_exact_gelu() {
        let mut g = [-12.0, -1.0, 0.0, 0.5, 2.0, 11.0];
        let up = [1.0; 6];
        let exact: Vec<f32> = g
            .iter()
            .map(|&x| if x <= -10.0 { 0.0 } else { gelu_tanh(x) })
            .collect();
        geglu(&mut g, &up);
        for (a, b) in g.iter().zip(exact) {
            assert!((a - b).abs() <= 2e-3 * b.abs().max(1.0), "{a} vs {b}");
        }
    }
}
