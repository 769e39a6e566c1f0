//! Compute kernels: one table of function pointers chosen once at run time, and the
//! matrix product driver the model code calls.
//!
//! Weights stay in their quantized form. Activations are quantized once per product to
//! the Q8 format matching the weight type ([`ActFormat`]), then every weight row is dotted
//! against every activation row in integer arithmetic.

pub mod scalar;

use std::sync::OnceLock;

use bytemuck::Zeroable;

use crate::error::{Error, Result};
use crate::quant::blocks::{BlockQ8K, BlockQ8_0, BlockQ8_1};
use crate::quant::{self, GgmlType, QK, QK_K};

/// How activations are encoded before meeting a weight type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActFormat {
    /// Plain f32 (for F32/F16/BF16 weights).
    F32,
    Q8_0,
    /// Q8_0 plus the block sum, for weight types with a minimum (Q4_1, Q5_1).
    Q8_1,
    /// 256-element blocks for the k-quants.
    Q8K,
}

impl ActFormat {
    /// The activation format a weight type is dotted against.
    pub fn for_weight(ty: GgmlType) -> Result<ActFormat> {
        use GgmlType::*;
        Ok(match ty {
            F32 | F16 | BF16 => ActFormat::F32,
            Q4_0 | Q5_0 | Q8_0 => ActFormat::Q8_0,
            Q4_1 | Q5_1 => ActFormat::Q8_1,
            Q2_K | Q3_K | Q4_K | Q5_K | Q6_K => ActFormat::Q8K,
            other => {
                return Err(Error::Unsupported(format!(
                    "matrix products with {other} weights"
                )))
            }
        })
    }

    /// Bytes of one quantized activation row of `k` elements.
    pub fn row_bytes(self, k: usize) -> usize {
        match self {
            ActFormat::F32 => k * 4,
            ActFormat::Q8_0 => k / QK * std::mem::size_of::<BlockQ8_0>(),
            ActFormat::Q8_1 => k / QK * std::mem::size_of::<BlockQ8_1>(),
            ActFormat::Q8K => k / QK_K * std::mem::size_of::<BlockQ8K>(),
        }
    }
}

/// Dot product of one weight row with one activation row (both as bytes).
pub type DotFn = fn(w: &[u8], act: &[u8]) -> f32;

/// A set of kernels for one instruction set.
pub struct Kernels {
    pub name: &'static str,
    dots: [Option<DotFn>; 40],
}

impl std::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

fn f32_dot(f: fn(&[u8], &[f32]) -> f32) -> impl Fn(&[u8], &[u8]) -> f32 {
    move |w, a| {
        let x: Vec<f32> = a
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        f(w, &x)
    }
}

fn scalar_dot_f32(w: &[u8], a: &[u8]) -> f32 {
    f32_dot(scalar::dot_f32)(w, a)
}
fn scalar_dot_f16(w: &[u8], a: &[u8]) -> f32 {
    f32_dot(scalar::dot_f16)(w, a)
}
fn scalar_dot_bf16(w: &[u8], a: &[u8]) -> f32 {
    f32_dot(scalar::dot_bf16)(w, a)
}

static SCALAR: Kernels = {
    let mut dots: [Option<DotFn>; 40] = [None; 40];
    dots[GgmlType::F32 as usize] = Some(scalar_dot_f32);
    dots[GgmlType::F16 as usize] = Some(scalar_dot_f16);
    dots[GgmlType::BF16 as usize] = Some(scalar_dot_bf16);
    dots[GgmlType::Q4_0 as usize] = Some(scalar::dot_q4_0);
    dots[GgmlType::Q4_1 as usize] = Some(scalar::dot_q4_1);
    dots[GgmlType::Q5_0 as usize] = Some(scalar::dot_q5_0);
    dots[GgmlType::Q5_1 as usize] = Some(scalar::dot_q5_1);
    dots[GgmlType::Q8_0 as usize] = Some(scalar::dot_q8_0);
    dots[GgmlType::Q2_K as usize] = Some(scalar::dot_q2_k);
    dots[GgmlType::Q3_K as usize] = Some(scalar::dot_q3_k);
    dots[GgmlType::Q4_K as usize] = Some(scalar::dot_q4_k);
    dots[GgmlType::Q5_K as usize] = Some(scalar::dot_q5_k);
    dots[GgmlType::Q6_K as usize] = Some(scalar::dot_q6_k);
    Kernels {
        name: "scalar",
        dots,
    }
};

impl Kernels {
    /// The best kernel set for this CPU, or the one named by `EMBER_KERNELS`.
    pub fn detect() -> &'static Kernels {
        static CHOSEN: OnceLock<&'static Kernels> = OnceLock::new();
        CHOSEN.get_or_init(|| {
            if let Ok(name) = std::env::var("EMBER_KERNELS") {
                if let Some(k) = Kernels::by_name(&name) {
                    return k;
                }
            }
            Kernels::available()[0]
        })
    }

    /// Kernel sets this CPU can run, best first.
    pub fn available() -> Vec<&'static Kernels> {
        vec![&SCALAR]
    }

    pub fn by_name(name: &str) -> Option<&'static Kernels> {
        Kernels::available().into_iter().find(|k| k.name == name)
    }

    pub fn scalar() -> &'static Kernels {
        &SCALAR
    }

    pub fn dot_fn(&self, ty: GgmlType) -> Result<DotFn> {
        self.dots
            .get(ty as usize)
            .copied()
            .flatten()
            .ok_or_else(|| Error::Unsupported(format!("no dot-product kernel for {ty}")))
    }

    /// Quantizes one activation row into `out` (exactly `fmt.row_bytes(x.len())` bytes).
    pub fn quantize_row(&self, fmt: ActFormat, x: &[f32], out: &mut [u8]) {
        match fmt {
            ActFormat::F32 => {
                for (o, v) in out.chunks_exact_mut(4).zip(x) {
                    o.copy_from_slice(&v.to_le_bytes());
                }
            }
            ActFormat::Q8_0 => {
                let mut tmp = vec![BlockQ8_0::zeroed(); x.len() / QK];
                quant::quantize_row_q8_0(x, &mut tmp);
                out.copy_from_slice(bytemuck::cast_slice(&tmp));
            }
            ActFormat::Q8_1 => {
                let mut tmp = vec![BlockQ8_1::zeroed(); x.len() / QK];
                quant::quantize_row_q8_1(x, &mut tmp);
                out.copy_from_slice(bytemuck::cast_slice(&tmp));
            }
            ActFormat::Q8K => {
                let mut tmp = vec![BlockQ8K::zeroed(); x.len() / QK_K];
                quant::quantize_row_q8_k(x, &mut tmp);
                out.copy_from_slice(bytemuck::cast_slice(&tmp));
            }
        }
    }
}

/// A weight matrix in place in the model file: `rows` rows of `cols` elements of `ty`.
#[derive(Clone, Copy, Debug)]
pub struct Matrix<'a> {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
}

impl<'a> Matrix<'a> {
    pub fn row_bytes(&self) -> usize {
        self.cols / self.ty.block_size() * self.ty.type_size()
    }

    pub fn row(&self, r: usize) -> &'a [u8] {
        let rb = self.row_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }
}

/// The worker threads of one context. Every parallel operation of a forward pass runs on it.
pub struct Pool {
    inner: rayon::ThreadPool,
    n_threads: usize,
}

impl Pool {
    /// A pool of `n_threads` threads (0 = one per available core).
    pub fn new(n_threads: usize) -> Result<Pool> {
        let n = if n_threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            n_threads
        };
        let inner = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .map_err(|e| Error::InvalidArgument(format!("cannot start {n} threads: {e}")))?;
        Ok(Pool {
            inner,
            n_threads: n,
        })
    }

    pub fn n_threads(&self) -> usize {
        self.n_threads
    }

    /// Runs `f` inside the pool, so that parallel iterators in it use the pool's threads.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.inner.install(f)
    }
}

/// `out[t * w.rows + r] = dot(w.row(r), x[t * w.cols ..])` for `n_tok` activation rows.
///
/// `act` is scratch for the quantized activations (at least `n_tok * row_bytes`).
pub fn matmul(
    pool: &Pool,
    k: &Kernels,
    w: &Matrix<'_>,
    x: &[f32],
    n_tok: usize,
    act: &mut [u8],
    out: &mut [f32],
) -> Result<()> {
    pool.inner
        .install(|| matmul_in_pool(k, w, x, n_tok, act, out))
}

fn matmul_in_pool(
    k: &Kernels,
    w: &Matrix<'_>,
    x: &[f32],
    n_tok: usize,
    act: &mut [u8],
    out: &mut [f32],
) -> Result<()> {
    use rayon::prelude::*;
    let fmt = ActFormat::for_weight(w.ty)?;
    let dot = k.dot_fn(w.ty)?;
    let arb = fmt.row_bytes(w.cols);
    let act = &mut act[..n_tok * arb];
    for (xr, ar) in x
        .chunks_exact(w.cols)
        .zip(act.chunks_exact_mut(arb))
        .take(n_tok)
    {
        k.quantize_row(fmt, xr, ar);
    }
    let act = &*act;
    let out = &mut out[..n_tok * w.rows];
    if n_tok == 1 {
        out.par_chunks_mut(64).enumerate().for_each(|(ci, o)| {
            for (i, v) in o.iter_mut().enumerate() {
                *v = dot(w.row(ci * 64 + i), act);
            }
        });
    } else {
        out.par_chunks_mut(w.rows).enumerate().for_each(|(t, o)| {
            let a = &act[t * arb..(t + 1) * arb];
            for (r, v) in o.iter_mut().enumerate() {
                *v = dot(w.row(r), a);
            }
        });
    }
    Ok(())
}
