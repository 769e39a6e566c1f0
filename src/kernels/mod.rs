//! Compute kernels: one table of function pointers chosen once at run time, the thread
//! pool, and the matrix product driver the model code calls.
//!
//! Weights stay in their quantized form, in place in the model file. Activations are
//! quantized once per product to the Q8 format matching the weight type ([`ActFormat`],
//! layout in `act`), then every weight row meets every activation row in integer
//! arithmetic. Decode (one token) is a matrix-vector product: one pass over the weights,
//! rows split across threads. Prefill multiplies each weight row by groups of 4 tokens at
//! once (8 with AVX2), so each weight block is unpacked once per group, not per token.

pub mod act;
mod pool;
pub mod scalar;

#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(target_arch = "aarch64")]
mod aarch64;

#[cfg(test)]
mod alloc_tests;
#[cfg(test)]
mod tests;

use std::sync::OnceLock;

use half::f16;

use pool::SendPtr;
pub use pool::{Pool, TaskFn};

use crate::error::{Error, Result};
use crate::quant::GgmlType;
use act::GROUP;

/// How activations are encoded before meeting a weight type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActFormat {
    /// Plain f32 (for F32/F16/BF16 weights).
    F32,
    /// 32-element blocks (for Q4_0, Q5_0, Q8_0, IQ4_NL).
    Q8_0,
    /// 32-element blocks with their sums, for weight types with a minimum (Q4_1, Q5_1).
    /// Same layout as `Q8_0` in ember: every 32-block carries its sum.
    Q8_1,
    /// 256-element blocks with sums of 16 for the k-quants and IQ4_XS.
    Q8K,
}

impl ActFormat {
    /// The activation format a weight type is dotted against.
    pub fn for_weight(ty: GgmlType) -> Result<ActFormat> {
        use GgmlType::*;
        Ok(match ty {
            F32 | F16 | BF16 => ActFormat::F32,
            // IQ4_NL and IQ4_XS pair with Q8_0 and Q8_K as in llama.cpp.
            Q4_0 | Q5_0 | Q8_0 | IQ4_NL => ActFormat::Q8_0,
            Q4_1 | Q5_1 => ActFormat::Q8_1,
            Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | IQ4_XS => ActFormat::Q8K,
            other => {
                return Err(Error::Unsupported(format!(
                    "matrix products with {other} weights"
                )))
            }
        })
    }

    /// Bytes of one quantized activation row of `k` elements; `n_tok` rows need
    /// `n_tok * row_bytes(k)` bytes of scratch.
    pub fn row_bytes(self, k: usize) -> usize {
        act::row_bytes(self, k)
    }

    /// Elements per block: `k` must be a multiple.
    pub fn block(self) -> usize {
        match self {
            ActFormat::F32 => 1,
            ActFormat::Q8_0 | ActFormat::Q8_1 => crate::quant::QK,
            ActFormat::Q8K => crate::quant::QK_K,
        }
    }
}

/// Matrix-vector kernel: `out[r] = dot(weight row r, act)` for `out.len()` rows of `k`
/// elements starting at `w`; `act` is one token in the single-token layout.
pub type VecFn = fn(w: &[u8], act: &[u8], k: usize, out: &mut [f32]);
/// Prefill kernel: `ng` consecutive token groups starting at `act`;
/// `out[t * rows + r] = dot(row r, token t)` with `rows = out.len() / (ng * GROUP)`.
pub type GemmFn = fn(w: &[u8], act: &[u8], k: usize, ng: usize, out: &mut [f32]);
/// Quantizes one token (`group == false`) or one group of [`act::GROUP`] tokens.
pub type QuantFn = fn(fmt: ActFormat, x: &[f32], k: usize, group: bool, out: &mut [u8]);

#[derive(Clone, Copy)]
pub(crate) struct MatFns {
    pub vec: VecFn,
    pub gemm: GemmFn,
}

const N_TYPES: usize = 40;

/// A set of kernels for one instruction set.
pub struct Kernels {
    pub name: &'static str,
    mats: [Option<MatFns>; N_TYPES],
    quant: QuantFn,
    dot_f32: fn(&[f32], &[f32]) -> f32,
    dot_f16: fn(&[f16], &[f32]) -> f32,
    axpy_f32: fn(&mut [f32], f32, &[f32]),
    axpy_f16: fn(&mut [f32], f32, &[f16]),
}

impl std::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

macro_rules! scalar_mat {
    ($ty:ident) => {{
        fn v(w: &[u8], act: &[u8], k: usize, out: &mut [f32]) {
            scalar::matvec(GgmlType::$ty, w, act, k, out)
        }
        fn g(w: &[u8], act: &[u8], k: usize, ng: usize, out: &mut [f32]) {
            scalar::gemm(GgmlType::$ty, w, act, k, ng, out)
        }
        Some(MatFns { vec: v, gemm: g })
    }};
}

/// The scalar kernels' matrix functions, by type id; SIMD tables start from these.
pub(crate) const SCALAR_MATS: [Option<MatFns>; N_TYPES] = {
    let mut m: [Option<MatFns>; N_TYPES] = [None; N_TYPES];
    m[GgmlType::F32 as usize] = scalar_mat!(F32);
    m[GgmlType::F16 as usize] = scalar_mat!(F16);
    m[GgmlType::BF16 as usize] = scalar_mat!(BF16);
    m[GgmlType::Q4_0 as usize] = scalar_mat!(Q4_0);
    m[GgmlType::Q4_1 as usize] = scalar_mat!(Q4_1);
    m[GgmlType::Q5_0 as usize] = scalar_mat!(Q5_0);
    m[GgmlType::Q5_1 as usize] = scalar_mat!(Q5_1);
    m[GgmlType::Q8_0 as usize] = scalar_mat!(Q8_0);
    m[GgmlType::Q2_K as usize] = scalar_mat!(Q2_K);
    m[GgmlType::Q3_K as usize] = scalar_mat!(Q3_K);
    m[GgmlType::Q4_K as usize] = scalar_mat!(Q4_K);
    m[GgmlType::Q5_K as usize] = scalar_mat!(Q5_K);
    m[GgmlType::Q6_K as usize] = scalar_mat!(Q6_K);
    m[GgmlType::IQ4_NL as usize] = scalar_mat!(IQ4_NL);
    m[GgmlType::IQ4_XS as usize] = scalar_mat!(IQ4_XS);
    m
};

static SCALAR: Kernels = Kernels {
    name: "scalar",
    mats: SCALAR_MATS,
    quant: act::quantize_scalar,
    dot_f32: scalar::dot_f32_f32,
    dot_f16: scalar::dot_f16_f32,
    axpy_f32: scalar::axpy_f32,
    axpy_f16: scalar::axpy_f16,
};

impl Kernels {
    /// The best kernel set for this CPU, or the one named by `EMBER_KERNELS`
    /// (`scalar`, `avx2`, `neon`, `dotprod`, `i8mm`) when this CPU can run it.
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

    /// Kernel sets this CPU can run, best first (`scalar` is always last).
    pub fn available() -> Vec<&'static Kernels> {
        let mut v: Vec<&'static Kernels> = Vec::new();
        #[cfg(target_arch = "x86_64")]
        v.extend(x86::available());
        #[cfg(target_arch = "aarch64")]
        v.extend(aarch64::available());
        v.push(&SCALAR);
        v
    }

    pub fn by_name(name: &str) -> Option<&'static Kernels> {
        Kernels::available().into_iter().find(|k| k.name == name)
    }

    pub fn scalar() -> &'static Kernels {
        &SCALAR
    }

    /// Whether this set can multiply matrices of type `ty`.
    pub fn supports(&self, ty: GgmlType) -> bool {
        self.mats.get(ty as usize).copied().flatten().is_some()
    }

    fn mat_fns(&self, ty: GgmlType) -> Result<MatFns> {
        self.mats
            .get(ty as usize)
            .copied()
            .flatten()
            .ok_or_else(|| Error::Unsupported(format!("matrix products with {ty} weights")))
    }

    /// `sum(a[i] * b[i])`. Panics if the lengths differ.
    #[inline]
    pub fn dot_f32(&self, a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len(), "dot_f32 of unequal lengths");
        (self.dot_f32)(a, b)
    }

    /// `sum(a[i] * b[i])` with `a` in f16 (a K cache row, say). Panics if the lengths differ.
    #[inline]
    pub fn dot_f16(&self, a: &[f16], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len(), "dot_f16 of unequal lengths");
        (self.dot_f16)(a, b)
    }

    /// `out[i] += alpha * x[i]`. Panics if the lengths differ.
    #[inline]
    pub fn axpy_f32(&self, out: &mut [f32], alpha: f32, x: &[f32]) {
        assert_eq!(out.len(), x.len(), "axpy_f32 of unequal lengths");
        (self.axpy_f32)(out, alpha, x)
    }

    /// `out[i] += alpha * x[i]` with `x` in f16 (a V cache row, say). Panics if the lengths differ.
    #[inline]
    pub fn axpy_f16(&self, out: &mut [f32], alpha: f32, x: &[f16]) {
        assert_eq!(out.len(), x.len(), "axpy_f16 of unequal lengths");
        (self.axpy_f16)(out, alpha, x)
    }

    /// Quantizes one token (`x.len() == k`) into `out` (`fmt.row_bytes(k)` bytes).
    pub fn quantize_row(&self, fmt: ActFormat, x: &[f32], out: &mut [u8]) -> Result<()> {
        let k = x.len();
        check_k(fmt, k)?;
        let need = fmt.row_bytes(k);
        if out.len() < need {
            return Err(Error::InvalidArgument(format!(
                "activation scratch of {} bytes, {need} needed",
                out.len()
            )));
        }
        (self.quant)(fmt, x, k, false, &mut out[..need]);
        Ok(())
    }
}

fn check_k(fmt: ActFormat, k: usize) -> Result<()> {
    if k == 0 || k % fmt.block() != 0 {
        return Err(Error::InvalidArgument(format!(
            "row length {k} is not a positive multiple of {}",
            fmt.block()
        )));
    }
    Ok(())
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
    /// A checked matrix view: `cols` a whole number of blocks, `data` exactly the size.
    pub fn new(ty: GgmlType, rows: usize, cols: usize, data: &'a [u8]) -> Result<Matrix<'a>> {
        let m = Matrix {
            ty,
            rows,
            cols,
            data,
        };
        m.validate()?;
        if data.len() != m.row_bytes() * rows {
            return Err(Error::InvalidArgument(format!(
                "{rows}x{cols} {ty} matrix needs {} bytes, got {}",
                m.row_bytes() * rows,
                data.len()
            )));
        }
        Ok(m)
    }

    pub fn row_bytes(&self) -> usize {
        self.cols / self.ty.block_size() * self.ty.type_size()
    }

    pub fn row(&self, r: usize) -> &'a [u8] {
        let rb = self.row_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }

    fn validate(&self) -> Result<()> {
        let fmt = ActFormat::for_weight(self.ty)?;
        check_k(fmt, self.cols)?;
        let need = self.row_bytes().checked_mul(self.rows);
        if need.is_none_or(|n| n > self.data.len()) {
            return Err(Error::InvalidArgument(format!(
                "{}x{} {} matrix needs {} bytes, has {}",
                self.rows,
                self.cols,
                self.ty,
                self.row_bytes().saturating_mul(self.rows),
                self.data.len()
            )));
        }
        Ok(())
    }
}

/// `out[t * w.rows + r] = dot(w.row(r), x[t * w.cols ..][.. w.cols])` for `n_tok` rows of `x`.
///
/// `act` is scratch for the quantized activations: at least
/// `n_tok * ActFormat::for_weight(w.ty)?.row_bytes(w.cols)` bytes (unused for float
/// weights). Nothing is allocated.
pub fn matmul(
    pool: &Pool,
    k: &Kernels,
    w: &Matrix<'_>,
    x: &[f32],
    n_tok: usize,
    act: &mut [u8],
    out: &mut [f32],
) -> Result<()> {
    let fmt = ActFormat::for_weight(w.ty)?;
    w.validate()?;
    let nx = n_tok.saturating_mul(w.cols);
    if x.len() < nx {
        return Err(Error::InvalidArgument(format!(
            "matmul input has {} values, {n_tok} tokens of {} need {nx}",
            x.len(),
            w.cols
        )));
    }
    if fmt == ActFormat::F32 {
        return matmul_act(pool, k, w, bytemuck::cast_slice(&x[..nx]), n_tok, out);
    }
    let need = quantize(pool, k, fmt, &x[..nx], w.cols, act)?;
    matmul_act(pool, k, w, &act[..need], n_tok, out)
}

/// Quantizes `x` (`x.len() / cols` tokens of `cols` values) into `act` for products with
/// weights of format `fmt`, in parallel for prefill. Returns the bytes written. Use it with
/// [`matmul_quantized`] to quantize once for several matrices with the same input.
pub fn quantize(
    pool: &Pool,
    k: &Kernels,
    fmt: ActFormat,
    x: &[f32],
    cols: usize,
    act: &mut [u8],
) -> Result<usize> {
    check_k(fmt, cols)?;
    if x.len() % cols != 0 {
        return Err(Error::InvalidArgument(format!(
            "{} values are not whole rows of {cols}",
            x.len()
        )));
    }
    let n_tok = x.len() / cols;
    let rb = fmt.row_bytes(cols);
    let need = n_tok * rb;
    if act.len() < need {
        return Err(Error::InvalidArgument(format!(
            "activation scratch of {} bytes, {need} needed for {n_tok} tokens",
            act.len()
        )));
    }
    let act = &mut act[..need];
    let (ng, nt) = act::split_tokens(n_tok);
    let quant = k.quant;
    let units = ng + nt;
    // Byte offset of unit `u` (groups first, then single tokens).
    let start = |u: usize| {
        if u <= ng {
            u * GROUP * rb
        } else {
            (ng * GROUP + (u - ng)) * rb
        }
    };
    if n_tok * cols < 8192 || pool.n_threads() == 1 {
        // Too little work to be worth waking the other threads.
        quant_units(quant, fmt, x, cols, act, ng, 0..units);
        return Ok(need);
    }
    let per = units.div_ceil(pool.n_threads() * 4).max(1);
    let actp = SendPtr(act.as_mut_ptr());
    pool.run(units.div_ceil(per), &|task, _| {
        let range = task * per..((task + 1) * per).min(units);
        let (b0, b1) = (start(range.start), start(range.end));
        // SAFETY: the bytes of units `range` are `b0..b1`, inside `act` and disjoint from
        // every other task's; `act` stays mutably borrowed for the whole call.
        let part = unsafe { actp.slice(b0, b1 - b0) };
        quant_units(quant, fmt, x, cols, part, ng, range);
    });
    Ok(need)
}

/// Quantizes units `range` of the token layout (units below `ng` are groups, the rest
/// single tokens) into `part`, which holds exactly those units' bytes.
fn quant_units(
    quant: QuantFn,
    fmt: ActFormat,
    x: &[f32],
    cols: usize,
    part: &mut [u8],
    ng: usize,
    range: std::ops::Range<usize>,
) {
    let rb = fmt.row_bytes(cols);
    let mut off = 0;
    for u in range {
        let (t0, nt, group) = if u < ng {
            (u * GROUP, GROUP, true)
        } else {
            (ng * GROUP + (u - ng), 1, false)
        };
        let bytes = nt * rb;
        quant(
            fmt,
            &x[t0 * cols..(t0 + nt) * cols],
            cols,
            group,
            &mut part[off..off + bytes],
        );
        off += bytes;
    }
}

/// [`matmul`] on activations already quantized by [`quantize`] for this weight type
/// (`act.len() >= n_tok * row_bytes`; for float weights, the f32 inputs as bytes).
pub fn matmul_quantized(
    pool: &Pool,
    k: &Kernels,
    w: &Matrix<'_>,
    act: &[u8],
    n_tok: usize,
    out: &mut [f32],
) -> Result<()> {
    w.validate()?;
    matmul_act(pool, k, w, act, n_tok, out)
}

/// Rows per prefill task, and token groups per prefill task (bounds the stack tile).
const TASK_ROWS: usize = 16;
const TASK_GROUPS: usize = 16;

fn matmul_act(
    pool: &Pool,
    k: &Kernels,
    w: &Matrix<'_>,
    act: &[u8],
    n_tok: usize,
    out: &mut [f32],
) -> Result<()> {
    let job = Job::new(k, w, act, n_tok, out, pool.n_threads())?;
    pool.run(job.n_tasks(), &|task, _| job.run(task));
    Ok(())
}

/// Most matrices [`matmul_many`] takes at once.
pub const MAX_MANY: usize = 8;

/// Several products of the same input in one parallel operation (one wake-up and one
/// barrier instead of one each): `outs[i]` receives `ws[i] · x` as in [`matmul`]. Typical
/// use: the Q, K and V projections, or the gate and up projections. All weights must take
/// the same activation format and have the same `cols`; at most [`MAX_MANY`] matrices.
pub fn matmul_many(
    pool: &Pool,
    k: &Kernels,
    ws: &[&Matrix<'_>],
    x: &[f32],
    n_tok: usize,
    act: &mut [u8],
    outs: &mut [&mut [f32]],
) -> Result<()> {
    if ws.is_empty() || ws.len() != outs.len() || ws.len() > MAX_MANY {
        return Err(Error::InvalidArgument(format!(
            "matmul_many takes 1 to {MAX_MANY} matrices and as many outputs, got {} and {}",
            ws.len(),
            outs.len()
        )));
    }
    let fmt = ActFormat::for_weight(ws[0].ty)?;
    for w in ws {
        w.validate()?;
        if ActFormat::for_weight(w.ty)? != fmt || w.cols != ws[0].cols {
            return Err(Error::InvalidArgument(format!(
                "matmul_many: {}x{} {} does not share the input format of {}x{} {}",
                w.rows, w.cols, w.ty, ws[0].rows, ws[0].cols, ws[0].ty
            )));
        }
    }
    let cols = ws[0].cols;
    let nx = n_tok.saturating_mul(cols);
    if x.len() < nx {
        return Err(Error::InvalidArgument(format!(
            "matmul input has {} values, {n_tok} tokens of {cols} need {nx}",
            x.len()
        )));
    }
    let act: &[u8] = if fmt == ActFormat::F32 {
        bytemuck::cast_slice(&x[..nx])
    } else {
        let need = quantize(pool, k, fmt, &x[..nx], cols, act)?;
        &act[..need]
    };
    let mut jobs: [Option<Job<'_>>; MAX_MANY] = Default::default();
    let mut starts = [0usize; MAX_MANY + 1];
    for (i, (w, out)) in ws.iter().zip(outs.iter_mut()).enumerate() {
        let job = Job::new(k, w, act, n_tok, out, pool.n_threads())?;
        starts[i + 1] = starts[i] + job.n_tasks();
        jobs[i] = Some(job);
    }
    let n = ws.len();
    pool.run(starts[n], &|task, _| {
        let i = starts[1..=n]
            .iter()
            .position(|&s| task < s)
            .unwrap_or(n - 1);
        if let Some(job) = &jobs[i] {
            job.run(task - starts[i]);
        }
    });
    Ok(())
}

/// One matrix product cut into tasks; validated on creation, so `run` cannot fail.
struct Job<'a> {
    fns: MatFns,
    w: &'a [u8],
    wrb: usize,
    rows: usize,
    cols: usize,
    act: &'a [u8],
    /// Bytes of one token's activations.
    rb: usize,
    ng: usize,
    plan: RowPlan,
    row_tiles: usize,
    n_gemm_tasks: usize,
    n_vec_tasks: usize,
    out: SendPtr<f32>,
}

impl<'a> Job<'a> {
    fn new(
        k: &Kernels,
        w: &Matrix<'a>,
        act: &'a [u8],
        n_tok: usize,
        out: &'a mut [f32],
        n_threads: usize,
    ) -> Result<Job<'a>> {
        let fmt = ActFormat::for_weight(w.ty)?;
        let fns = k.mat_fns(w.ty)?;
        let (rows, cols) = (w.rows, w.cols);
        let rb = fmt.row_bytes(cols);
        if act.len() < n_tok * rb {
            return Err(Error::InvalidArgument(format!(
                "quantized activations of {} bytes, {n_tok} tokens need {}",
                act.len(),
                n_tok * rb
            )));
        }
        let nout = n_tok * rows;
        if out.len() < nout {
            return Err(Error::InvalidArgument(format!(
                "matmul output has {} values, {n_tok}x{rows} needed",
                out.len()
            )));
        }
        let wrb = w.row_bytes();
        let (ng, nt) = if rows == 0 {
            (0, 0)
        } else {
            act::split_tokens(n_tok)
        };
        // Single tokens (decode, and the tokens after the last whole group): each task is
        // a range of rows of one token, written straight into `out`.
        let plan = RowPlan::new(rows, n_threads, wrb * rows);
        // Groups: each task is up to TASK_ROWS rows by TASK_GROUPS groups.
        let row_tiles = rows.div_ceil(TASK_ROWS);
        Ok(Job {
            fns,
            w: &w.data[..rows * wrb],
            wrb,
            rows,
            cols,
            act,
            rb,
            ng,
            plan,
            row_tiles,
            n_gemm_tasks: row_tiles * ng.div_ceil(TASK_GROUPS),
            n_vec_tasks: plan.n_tasks * nt,
            out: SendPtr(out.as_mut_ptr()),
        })
    }

    fn n_tasks(&self) -> usize {
        self.n_gemm_tasks + self.n_vec_tasks
    }

    fn run(&self, task: usize) {
        let (rows, cols, rb, wrb) = (self.rows, self.cols, self.rb, self.wrb);
        if task < self.n_gemm_tasks {
            let (rt, gt) = (task % self.row_tiles, task / self.row_tiles);
            let r0 = rt * TASK_ROWS;
            let nr = TASK_ROWS.min(rows - r0);
            let g0 = gt * TASK_GROUPS;
            let ngt = TASK_GROUPS.min(self.ng - g0);
            let mut tile = [0f32; TASK_ROWS * TASK_GROUPS * GROUP];
            let tile = &mut tile[..nr * ngt * GROUP];
            let a0 = g0 * GROUP * rb;
            (self.fns.gemm)(
                &self.w[r0 * wrb..(r0 + nr) * wrb],
                &self.act[a0..a0 + ngt * GROUP * rb],
                cols,
                ngt,
                tile,
            );
            for t in 0..ngt * GROUP {
                let base = (g0 * GROUP + t) * rows + r0;
                for r in 0..nr {
                    // SAFETY: this task alone owns rows r0..r0+nr of the tokens of its
                    // groups; the index is inside `out` (length checked in `new`), which
                    // stays mutably borrowed while the job exists.
                    unsafe { self.out.write(base + r, tile[t * nr + r]) };
                }
            }
        } else if task < self.n_tasks() {
            let task = task - self.n_gemm_tasks;
            let (chunk, tail) = (task % self.plan.n_tasks, task / self.plan.n_tasks);
            let t = self.ng * GROUP + tail;
            let range = self.plan.range(chunk);
            // SAFETY: rows `range` of token `t` belong to this task alone and lie inside
            // `out` (length checked in `new`), mutably borrowed while the job exists.
            let o = unsafe { self.out.slice(t * rows + range.start, range.len()) };
            (self.fns.vec)(
                &self.w[range.start * wrb..range.end * wrb],
                &self.act[t * rb..(t + 1) * rb],
                cols,
                o,
            );
        }
    }
}

/// Splits the rows of a matrix-vector product into tasks of equal size: small enough
/// that threads balance (the pool gives each thread a contiguous share and lets the
/// others steal from its end), large enough that bookkeeping stays negligible.
#[derive(Clone, Copy, Debug)]
struct RowPlan {
    rows: usize,
    per: usize,
    n_tasks: usize,
}

impl RowPlan {
    /// Rows are handed out in multiples of this (SIMD kernels work on 4 rows at a time).
    const ALIGN: usize = 4;
    /// Below this many weight bytes per product a single thread does it all: waking the
    /// others costs more than it saves.
    const MIN_PARALLEL_BYTES: usize = 16 * 1024;
    /// Tasks per thread to aim for, the fewest weight bytes per task (below that the
    /// claiming and the call cost more than the balance gains), the most rows per task.
    const PER_THREAD: usize = 8;
    const MIN_TASK_BYTES: usize = 16 * 1024;
    const MAX_ROWS: usize = 256;

    fn new(rows: usize, n_threads: usize, bytes: usize) -> RowPlan {
        if n_threads <= 1 || bytes < Self::MIN_PARALLEL_BYTES || rows <= Self::ALIGN {
            return RowPlan {
                rows,
                per: rows.max(1),
                n_tasks: 1,
            };
        }
        let a = Self::ALIGN;
        let row_bytes = (bytes / rows).max(1);
        let min_rows = Self::MIN_TASK_BYTES.div_ceil(row_bytes);
        let per = (rows / (n_threads * Self::PER_THREAD))
            .max(min_rows)
            .clamp(a, Self::MAX_ROWS.max(a))
            / a
            * a;
        RowPlan {
            rows,
            per,
            n_tasks: rows.div_ceil(per),
        }
    }

    fn range(&self, i: usize) -> std::ops::Range<usize> {
        let s = i * self.per;
        s..(s + self.per).min(self.rows)
    }
}
