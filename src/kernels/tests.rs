//! Randomized comparisons: every kernel set the running CPU supports against the scalar
//! twins, and the scalar twins against plain f32 arithmetic on dequantized values.
//! Under qemu, `-cpu max` exercises the dotprod and i8mm sets, `-cpu cortex-a72` plain NEON.

use half::{bf16, f16};

use super::act::{self, Q8KView, Q8View, GROUP};
use super::*;
use crate::quant::{dequantize_row, QK, QK_K};

/// xorshift64*: deterministic, dependency-free.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub(crate) fn u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub(crate) fn f32(&mut self) -> f32 {
        (self.u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Roughly normal, with occasional outliers like real activations.
    pub(crate) fn act(&mut self) -> f32 {
        let v = (0..4).map(|_| self.f32()).sum::<f32>() - 2.0;
        if self.u64() % 64 == 0 {
            v * 20.0
        } else {
            v
        }
    }
    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u64() as u8).collect()
    }
}

pub(crate) const TYPES: [GgmlType; 15] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
];

/// Offsets of the f16 scale fields within a block, per type.
fn scale_offsets(ty: GgmlType) -> &'static [usize] {
    use GgmlType::*;
    match ty {
        Q4_0 | Q5_0 | Q8_0 | IQ4_NL | IQ4_XS => &[0],
        Q4_1 | Q5_1 | Q4_K | Q5_K => &[0, 2],
        Q2_K => &[80, 82],
        Q3_K => &[108],
        Q6_K => &[208],
        _ => &[],
    }
}

/// Random weights of `rows x cols`: random quants, sane random scales.
pub(crate) fn random_weights(rng: &mut Rng, ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let n = rows * cols;
    match ty {
        GgmlType::F32 => (0..n).flat_map(|_| rng.act().to_le_bytes()).collect(),
        GgmlType::F16 => (0..n)
            .flat_map(|_| f16::from_f32(rng.act()).to_le_bytes())
            .collect(),
        GgmlType::BF16 => (0..n)
            .flat_map(|_| bf16::from_f32(rng.act()).to_le_bytes())
            .collect(),
        _ => {
            let ts = ty.type_size();
            let mut w = rng.bytes(n / ty.block_size() * ts);
            for blk in w.chunks_exact_mut(ts) {
                for &o in scale_offsets(ty) {
                    let v = f16::from_f32((rng.f32() + 0.05) * 0.01);
                    blk[o..o + 2].copy_from_slice(&v.to_le_bytes());
                }
            }
            w
        }
    }
}

fn random_acts(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.act()).collect()
}

/// Dequantized activations of one token, from the layout.
fn deq_act(fmt: ActFormat, a: &[u8], k: usize, t: Option<usize>) -> Vec<f32> {
    match fmt {
        ActFormat::F32 => {
            let a = match t {
                None => &a[..4 * k],
                Some(t) => &a[4 * k * t..4 * k * (t + 1)],
            };
            a.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        }
        ActFormat::Q8_0 | ActFormat::Q8_1 => {
            let v = match t {
                None => Q8View::single(a, k),
                Some(t) => Q8View::in_group(a, k, t),
            };
            (0..k / QK)
                .flat_map(|b| v.qs(b).map(|q| q as f32 * v.d(b)))
                .collect()
        }
        ActFormat::Q8K => {
            let v = match t {
                None => Q8KView::single(a, k),
                Some(t) => Q8KView::in_group(a, k, t),
            };
            (0..k / QK_K)
                .flat_map(|b| v.qs(b).map(|q| q as f32 * v.d(b)))
                .collect()
        }
    }
}

/// Sum of |w_i * a_i|: the scale against which accumulation-order differences are judged.
fn magnitude(w: &[f32], a: &[f32]) -> f32 {
    w.iter().zip(a).map(|(w, a)| (w * a).abs()).sum()
}

fn close(got: f32, want: f32, mag: f32, rel: f32) -> bool {
    (got - want).abs() <= rel * mag + 1e-6
}

/// Row lengths in blocks. Under Miri (~1000x slower on this arithmetic) 1 and 2 only: the
/// scalar loops do the same for every block, and 33 blocks of 256 would take an hour.
const BLOCK_COUNTS: &[usize] = if cfg!(miri) {
    &[1, 2]
} else {
    &[1, 2, 3, 7, 33]
};

#[test]
fn scalar_matches_dequantized_f32() {
    let mut rng = Rng::new(1);
    for ty in TYPES {
        let fmt = ActFormat::for_weight(ty).unwrap();
        for &nb in BLOCK_COUNTS {
            let k = nb * fmt.block().max(32);
            // One row under Miri: the rows differ only in their random contents.
            let rows = if cfg!(miri) { 1 } else { 3 };
            let w = random_weights(&mut rng, ty, rows, k);
            let mut wd = vec![0f32; k];
            let x = random_acts(&mut rng, GROUP * k);
            let rb = fmt.row_bytes(k);
            let mut a1 = vec![0u8; rb];
            let mut ag = vec![0u8; GROUP * rb];
            act::quantize_scalar(fmt, &x[..k], k, false, &mut a1);
            act::quantize_scalar(fmt, &x, k, true, &mut ag);
            let wrb = w.len() / rows;
            for r in 0..rows {
                let row = &w[r * wrb..(r + 1) * wrb];
                dequantize_row(ty, row, &mut wd).unwrap();
                for t in [None, Some(0), Some(1), Some(3)] {
                    let a = if t.is_none() { &a1[..] } else { &ag[..] };
                    let ad = deq_act(fmt, a, k, t);
                    if t == Some(0) {
                        assert_eq!(ad, deq_act(fmt, &a1, k, None), "{ty} group token 0");
                    }
                    let want: f32 = wd.iter().zip(&ad).map(|(w, a)| w * a).sum();
                    let got = scalar::dot(ty, row, a, k, t);
                    let mag = magnitude(&wd, &ad);
                    assert!(
                        close(got, want, mag, 1e-4),
                        "{ty} k={k} row {r} tok {t:?}: scalar {got} vs f32 {want} (mag {mag})"
                    );
                }
            }
        }
    }
}

#[test]
fn quantization_matches_ggml_blocks() {
    // The layout's integers and scales are ggml's Q8_0 / Q8_K ones.
    let mut rng = Rng::new(2);
    let x = random_acts(&mut rng, 512);
    let mut a = vec![0u8; ActFormat::Q8_0.row_bytes(512)];
    act::quantize_scalar(ActFormat::Q8_0, &x, 512, false, &mut a);
    let mut g = vec![crate::quant::BlockQ8_0::default(); 16];
    crate::quant::quantize_row_q8_0(&x, &mut g);
    let v = Q8View::single(&a, 512);
    for (b, blk) in g.iter().enumerate() {
        assert_eq!(v.d(b), blk.d.to_f32());
        // ggml's reference rounds half away from zero, its SIMD paths (and ember) to even;
        // random data has no exact halves.
        assert_eq!(v.qs(b), blk.qs);
        let sum: i32 = blk.qs.iter().map(|&q| q as i32).sum();
        assert_eq!(v.s(b), blk.d.to_f32() * sum as f32);
    }
    let mut a = vec![0u8; ActFormat::Q8K.row_bytes(512)];
    act::quantize_scalar(ActFormat::Q8K, &x, 512, false, &mut a);
    let mut g = vec![crate::quant::BlockQ8K::default(); 2];
    crate::quant::quantize_row_q8_k(&x, &mut g);
    let v = Q8KView::single(&a, 512);
    for (b, blk) in g.iter().enumerate() {
        assert_eq!(v.d(b), blk.d);
        assert_eq!(v.qs(b), blk.qs);
        assert_eq!(v.bsums(b), blk.bsums);
    }
}

/// Inputs with exact ties, zeros, all-equal blocks and negative maxima.
fn awkward_acts(rng: &mut Rng, n: usize) -> Vec<f32> {
    let mut x = random_acts(rng, n);
    for (i, v) in x.iter_mut().enumerate() {
        match (i / 32) % 6 {
            0 => *v = 0.0,
            1 => *v = (i % 7) as f32 - 3.0,
            2 => *v = -4.0,
            3 => *v = (i % 5) as f32 * 0.5 - 1.0,
            _ => {}
        }
    }
    x
}

#[test]
#[cfg_attr(
    miri,
    ignore = "compares SIMD quantizers with the scalar one; Miri has only the scalar set"
)]
fn simd_quantizers_match_scalar() {
    let mut rng = Rng::new(3);
    for k in Kernels::available() {
        for fmt in [
            ActFormat::Q8_0,
            ActFormat::Q8_1,
            ActFormat::Q8K,
            ActFormat::F32,
        ] {
            for &nb in BLOCK_COUNTS {
                let cols = nb * fmt.block().max(32);
                for x in [
                    random_acts(&mut rng, GROUP * cols),
                    awkward_acts(&mut rng, GROUP * cols),
                ] {
                    for group in [false, true] {
                        let n = if group { GROUP } else { 1 };
                        let rb = n * fmt.row_bytes(cols);
                        let mut want = vec![0u8; rb];
                        let mut got = vec![0x55u8; rb];
                        act::quantize_scalar(fmt, &x[..n * cols], cols, group, &mut want);
                        (k.quant)(fmt, &x[..n * cols], cols, group, &mut got);
                        assert!(
                            want == got,
                            "{}: {fmt:?} k={cols} group={group} differs from scalar",
                            k.name
                        );
                    }
                }
            }
        }
    }
}

/// Every kernel set, every type: matrix-vector and group kernels against the scalar twins.
#[test]
// Miri detects no SIMD set, so this would compare the scalar set with itself, for 4 of
// Miri's minutes even at one block; matmul_matches_scalar_dots runs the scalar matrix
// loops there.
#[cfg_attr(
    miri,
    ignore = "compares SIMD kernels with scalar ones; Miri has only the scalar set"
)]
fn kernels_match_scalar() {
    let mut rng = Rng::new(4);
    for k in Kernels::available() {
        for ty in TYPES {
            let Some(fns) = k.mats[ty as usize] else {
                continue;
            };
            let fmt = ActFormat::for_weight(ty).unwrap();
            // Long rows (129 blocks of 32) take the prefill path for rows too long for
            // the unpacked-row scratch.
            let long: &[usize] = if fmt.block() == 32 { &[129] } else { &[] };
            // Float rows may be any length: odd ones exercise the SIMD kernels' tails.
            let odd: &[usize] = if fmt.block() == 1 { &[13, 37] } else { &[] };
            let lens = BLOCK_COUNTS
                .iter()
                .chain(long)
                .map(|nb| nb * fmt.block().max(32));
            for cols in lens.chain(odd.iter().copied()) {
                for rows in [1, 3, 4, 5, 8, 13] {
                    let w = random_weights(&mut rng, ty, rows, cols);
                    let wrb = w.len() / rows;
                    let x = random_acts(&mut rng, 2 * GROUP * cols);
                    let rb = fmt.row_bytes(cols);
                    let mut a = vec![0u8; 2 * GROUP * rb];
                    act::quantize_scalar(fmt, &x[..GROUP * cols], cols, true, &mut a[..GROUP * rb]);
                    act::quantize_scalar(fmt, &x[GROUP * cols..], cols, true, &mut a[GROUP * rb..]);
                    let mut a1 = vec![0u8; rb];
                    act::quantize_scalar(fmt, &x[..cols], cols, false, &mut a1);
                    let mut wd = vec![0f32; cols];
                    let mut got = vec![0f32; rows];
                    (fns.vec)(&w, &a1, cols, &mut got);
                    let ad1 = deq_act(fmt, &a1, cols, None);
                    for r in 0..rows {
                        let row = &w[r * wrb..(r + 1) * wrb];
                        dequantize_row(ty, row, &mut wd).unwrap();
                        let want = scalar::dot(ty, row, &a1, cols, None);
                        let mag = magnitude(&wd, &ad1);
                        assert!(
                            close(got[r], want, mag, 2e-6),
                            "{} {ty} vec k={cols} rows={rows} row {r}: {} vs scalar {want} (mag {mag})",
                            k.name,
                            got[r]
                        );
                    }
                    for ng in [1, 2] {
                        let mut got = vec![0f32; rows * ng * GROUP];
                        (fns.gemm)(&w, &a[..ng * GROUP * rb], cols, ng, &mut got);
                        for t in 0..ng * GROUP {
                            let ga = &a[(t / GROUP) * GROUP * rb..(t / GROUP + 1) * GROUP * rb];
                            let ad = deq_act(fmt, ga, cols, Some(t % GROUP));
                            for r in 0..rows {
                                let row = &w[r * wrb..(r + 1) * wrb];
                                dequantize_row(ty, row, &mut wd).unwrap();
                                let want = scalar::dot(ty, row, ga, cols, Some(t % GROUP));
                                let mag = magnitude(&wd, &ad);
                                let g = got[t * rows + r];
                                assert!(
                                    close(g, want, mag, 2e-6),
                                    "{} {ty} gemm ng={ng} k={cols} rows={rows} row {r} tok {t}: {g} vs scalar {want} (mag {mag})",
                                    k.name
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn vector_helpers_match_scalar() {
    let mut rng = Rng::new(5);
    for k in Kernels::available() {
        for n in [0, 1, 3, 8, 15, 16, 31, 64, 100, 256, 259] {
            let a = random_acts(&mut rng, n);
            let b = random_acts(&mut rng, n);
            let h: Vec<f16> = a.iter().map(|&v| f16::from_f32(v)).collect();
            let ha: Vec<f32> = h.iter().map(|v| v.to_f32()).collect();
            let mag = magnitude(&a, &b);
            let want = scalar::dot_f32_f32(&a, &b);
            assert!(
                close(k.dot_f32(&a, &b), want, mag, 1e-6),
                "{} dot_f32 n={n}",
                k.name
            );
            let want = scalar::dot_f16_f32(&h, &b);
            let magh = magnitude(&ha, &b);
            assert!(
                close(k.dot_f16(&h, &b), want, magh, 1e-6),
                "{} dot_f16 n={n}",
                k.name
            );
            let alpha = rng.act();
            let mut o1 = b.clone();
            let mut o2 = b.clone();
            scalar::axpy_f32(&mut o1, alpha, &a);
            k.axpy_f32(&mut o2, alpha, &a);
            for (x, y) in o1.iter().zip(&o2) {
                assert!(
                    (x - y).abs() <= 1e-5 * (1.0 + x.abs()),
                    "{} axpy_f32",
                    k.name
                );
            }
            let mut o1 = b.clone();
            let mut o2 = b.clone();
            scalar::axpy_f16(&mut o1, alpha, &h);
            k.axpy_f16(&mut o2, alpha, &h);
            for (x, y) in o1.iter().zip(&o2) {
                assert!(
                    (x - y).abs() <= 1e-5 * (1.0 + x.abs()),
                    "{} axpy_f16",
                    k.name
                );
            }
        }
    }
}

/// The whole driver: token counts that exercise groups, pairs of groups and left-over
/// tokens; row counts that exercise partial tiles; several thread counts.
#[test]
fn matmul_matches_scalar_dots() {
    let mut rng = Rng::new(6);
    // Under Miri (minutes per product): smaller matrices, 9 tokens only (two groups and a
    // leftover), still on 1 to 3 threads (Miri checks the pool's hand-offs for races).
    let pools: Vec<Pool> = [1, 2, 3].iter().map(|&n| Pool::new(n).unwrap()).collect();
    // (row counts, columns of the k-quants and of the others, token counts)
    let (row_counts, cols_k, cols, tok_counts): (&[usize], usize, usize, &[usize]) = if cfg!(miri) {
        (&[4, 5, 13], 256, 64, &[9])
    } else {
        (&[37, 64, 300], 512, 96, &[1, 2, 3, 4, 5, 8, 9, 13, 40])
    };
    let types = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
        GgmlType::F16,
    ];
    for k in Kernels::available() {
        for (pi, pool) in pools.iter().enumerate() {
            for (ti, &ty) in types.iter().enumerate() {
                let fmt = ActFormat::for_weight(ty).unwrap();
                let cols = if fmt == ActFormat::Q8K { cols_k } else { cols };
                let rows = row_counts[(ti + pi) % 3];
                let w = random_weights(&mut rng, ty, rows, cols);
                let m = Matrix::new(ty, rows, cols, &w).unwrap();
                for &n_tok in tok_counts {
                    let x = random_acts(&mut rng, n_tok * cols);
                    let mut act = vec![0u8; n_tok * fmt.row_bytes(cols)];
                    let mut out = vec![f32::NAN; n_tok * rows];
                    matmul(pool, k, &m, &x, n_tok, &mut act, &mut out).unwrap();
                    let mut a1 = vec![0u8; fmt.row_bytes(cols)];
                    for t in 0..n_tok {
                        act::quantize_scalar(
                            fmt,
                            &x[t * cols..(t + 1) * cols],
                            cols,
                            false,
                            &mut a1,
                        );
                        for r in 0..rows {
                            let want = scalar::dot(ty, m.row(r), &a1, cols, None);
                            let got = out[t * rows + r];
                            assert!(
                                (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                                "{} {ty} threads={} n_tok={n_tok} r={r} t={t}: {got} vs {want}",
                                k.name,
                                pool.n_threads()
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn matmul_rejects_bad_sizes() {
    let pool = Pool::new(1).unwrap();
    let k = Kernels::detect();
    let w = vec![0u8; 4 * 20];
    let m = Matrix {
        ty: GgmlType::Q4_1,
        rows: 4,
        cols: 32,
        data: &w,
    };
    let x = vec![0f32; 64];
    let mut act = vec![0u8; 80];
    let mut out = vec![0f32; 8];
    assert!(matmul(&pool, k, &m, &x, 2, &mut act, &mut out).is_ok());
    assert!(matmul(&pool, k, &m, &x, 3, &mut act, &mut out).is_err());
    assert!(matmul(&pool, k, &m, &x, 2, &mut act[..79], &mut out).is_err());
    assert!(matmul(&pool, k, &m, &x, 2, &mut act, &mut out[..7]).is_err());
    let short = Matrix {
        data: &w[..79],
        ..m
    };
    assert!(matmul(&pool, k, &short, &x, 2, &mut act, &mut out).is_err());
    let odd = Matrix { cols: 33, ..m };
    assert!(matmul(&pool, k, &odd, &x, 1, &mut act, &mut out).is_err());
    assert!(Matrix::new(GgmlType::Q4_1, 4, 32, &w[..79]).is_err());
    assert!(Matrix::new(GgmlType::IQ2_XS, 4, 256, &w).is_err());
}

#[test]
fn pool_runs_every_task_once() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    for n in [1, 2, 3, 5] {
        let pool = Pool::new(n).unwrap();
        assert_eq!(pool.n_threads(), n);
        for round in 0..crate::test_rounds(200) {
            let n_tasks = round % 37;
            let hits: Vec<AtomicUsize> = (0..n_tasks).map(|_| AtomicUsize::new(0)).collect();
            let threads: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            pool.run(n_tasks, &|t, th| {
                hits[t].fetch_add(1, Ordering::Relaxed);
                assert!(th < n);
                // Each thread index is used by one thread at a time.
                assert_eq!(threads[th].fetch_add(1, Ordering::SeqCst), 0);
                std::hint::black_box((0..50).sum::<usize>());
                threads[th].fetch_sub(1, Ordering::SeqCst);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        }
        // After sleeping, workers wake up for new operations.
        std::thread::sleep(std::time::Duration::from_millis(5));
        let count = AtomicUsize::new(0);
        pool.run(100, &|_, _| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 100);
    }
}

#[test]
fn pool_nested_and_chunks() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let pool = Pool::new(3).unwrap();
    let count = AtomicUsize::new(0);
    pool.run(8, &|_, th| {
        pool.run(4, &|_, inner| {
            assert_eq!(inner, th);
            count.fetch_add(1, Ordering::Relaxed);
        });
    });
    assert_eq!(count.load(Ordering::Relaxed), 32);
    let mut data: Vec<usize> = vec![0; 1003];
    pool.for_each_chunk(&mut data, 10, &|i, c, _| {
        for (j, v) in c.iter_mut().enumerate() {
            *v = i * 10 + j;
        }
    });
    assert!(data.iter().enumerate().all(|(i, &v)| i == v));
}

#[test]
fn pool_shared_between_threads() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let pool = Pool::new(2).unwrap();
    let count = AtomicUsize::new(0);
    let rounds = crate::test_rounds(100);
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                for _ in 0..rounds {
                    pool.run(5, &|_, _| {
                        count.fetch_add(1, Ordering::Relaxed);
                    });
                }
            });
        }
    });
    assert_eq!(count.load(Ordering::Relaxed), 3 * rounds * 5);
}

#[test]
fn pool_task_panic_propagates() {
    let pool = Pool::new(2).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pool.run(64, &|t, _| {
            if t == 40 {
                panic!("task 40");
            }
        });
    }));
    assert!(r.is_err());
    // The pool still works afterwards.
    let count = std::sync::atomic::AtomicUsize::new(0);
    pool.run(10, &|_, _| {
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    });
    assert_eq!(count.into_inner(), 10);
}

#[test]
fn env_override_names_are_known() {
    let names: Vec<&str> = Kernels::available().iter().map(|k| k.name).collect();
    assert_eq!(*names.last().unwrap(), "scalar");
    for n in &names {
        assert_eq!(Kernels::by_name(n).unwrap().name, *n);
        assert!(["scalar", "avx2", "neon", "dotprod", "i8mm"].contains(n));
    }
    assert!(Kernels::by_name("nonsense").is_none());
}

#[test]
fn pool_dropped_before_workers_start() {
    // Workers that start after the pool is already shutting down must still exit.
    for n in [2, 4] {
        for _ in 0..crate::test_rounds(50) {
            drop(Pool::new(n).unwrap());
        }
    }
}

#[test]
// Over 4 minutes under Miri even at 9 tokens; the unsafe parts it reaches (the driver's
// shared output and activation slices, the pool) are those of matmul_matches_scalar_dots.
#[cfg_attr(
    miri,
    ignore = "too slow for Miri; its unsafe paths run in matmul_matches_scalar_dots"
)]
fn matmul_many_matches_separate_products() {
    let mut rng = Rng::new(8);
    let pool = Pool::new(2).unwrap();
    for k in Kernels::available() {
        for (tys, cols) in [
            (&[GgmlType::Q4_1, GgmlType::Q4_1, GgmlType::Q4_1][..], 96),
            (&[GgmlType::Q5_0, GgmlType::Q8_0, GgmlType::Q4_0][..], 64),
            (&[GgmlType::Q4_K, GgmlType::Q6_K][..], 256),
            (&[GgmlType::F16, GgmlType::F32][..], 40),
        ] {
            let rows = [40, 12, 7];
            let ws: Vec<Vec<u8>> = tys
                .iter()
                .zip(rows)
                .map(|(&ty, r)| random_weights(&mut rng, ty, r, cols))
                .collect();
            let ms: Vec<Matrix> = tys
                .iter()
                .zip(rows)
                .zip(&ws)
                .map(|((&ty, r), w)| Matrix::new(ty, r, cols, w).unwrap())
                .collect();
            let refs: Vec<&Matrix> = ms.iter().collect();
            for n_tok in [1, 6, 9] {
                let x = random_acts(&mut rng, n_tok * cols);
                let mut act = vec![0u8; n_tok * cols * 4];
                let mut outs: Vec<Vec<f32>> =
                    ms.iter().map(|m| vec![0f32; n_tok * m.rows]).collect();
                let mut views: Vec<&mut [f32]> = outs.iter_mut().map(|o| &mut o[..]).collect();
                matmul_many(&pool, k, &refs, &x, n_tok, &mut act, &mut views).unwrap();
                for (m, got) in ms.iter().zip(&outs) {
                    let mut want = vec![0f32; n_tok * m.rows];
                    matmul(&pool, k, m, &x, n_tok, &mut act, &mut want).unwrap();
                    assert_eq!(got, &want, "{} {} n_tok={n_tok}", k.name, m.ty);
                }
            }
        }
    }
    // Mixed activation formats are refused.
    let w1 = random_weights(&mut rng, GgmlType::Q4_1, 4, 256);
    let w2 = random_weights(&mut rng, GgmlType::Q4_K, 4, 256);
    let m1 = Matrix::new(GgmlType::Q4_1, 4, 256, &w1).unwrap();
    let m2 = Matrix::new(GgmlType::Q4_K, 4, 256, &w2).unwrap();
    let x = vec![0f32; 256];
    let mut act = vec![0u8; 2048];
    let (mut o1, mut o2) = (vec![0f32; 4], vec![0f32; 4]);
    let r = matmul_many(
        &pool,
        Kernels::detect(),
        &[&m1, &m2],
        &x,
        1,
        &mut act,
        &mut [&mut o1, &mut o2],
    );
    assert!(r.is_err());
}

#[test]
// A heuristic on elapsed times (a worker sleeping 2 ms against a caller spinning 20 us):
// under Miri, with isolation, the clock counts interpreted steps, not the sleep's real
// cost, so the comparison means nothing there. No unsafe code is specific to it.
#[cfg_attr(
    miri,
    ignore = "timing heuristic; Miri's clock counts interpreted steps"
)]
fn pool_runs_alone_when_workers_hold_it_up_then_recovers() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let pool = Pool::new(2).unwrap();
    let on_worker = AtomicUsize::new(0);
    // A worker that sleeps in every task it takes makes operations slower than the caller
    // alone; after a few such operations the pool stops handing out work, which shows as
    // a long run of operations the worker takes no part in.
    let mut solo = false;
    let mut quiet = 0;
    for _ in 0..2000 {
        on_worker.store(0, Ordering::SeqCst);
        pool.run(8, &|_, th| {
            if th != 0 {
                on_worker.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(2));
            } else {
                std::thread::sleep(std::time::Duration::from_micros(20));
            }
        });
        if on_worker.load(Ordering::SeqCst) == 0 {
            quiet += 1;
            if quiet == 50 {
                solo = true;
                break;
            }
        } else {
            quiet = 0;
        }
    }
    assert!(solo, "the pool never stopped waiting for its slow worker");
    // It tries the workers again after a while.
    let mut back = false;
    for _ in 0..20_000 {
        let n = AtomicUsize::new(0);
        pool.run(8, &|_, th| {
            if th != 0 {
                n.fetch_add(1, Ordering::SeqCst);
            }
            // Long enough for a spinning worker to join before the caller has done it all.
            let t = std::time::Instant::now();
            while t.elapsed() < std::time::Duration::from_micros(2) {
                std::hint::spin_loop();
            }
        });
        if n.load(Ordering::SeqCst) > 0 {
            back = true;
            break;
        }
    }
    assert!(back, "the pool never went back to its workers");
}
