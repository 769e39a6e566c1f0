//! Times `kernels::matmul` on the real shapes of SmolLM2-135M and Gemma 3 270M.
//!
//! ```text
//! cargo run --release --example kernel-bench -- [--threads 1,2] [--tokens 1,128]
//!     [--filter SUBSTRING] [--min-ms 300] [--models DIR] [--random]
//! ```
//! Weights come from the model files when they are in `--models` (default
//! `$EMBER_MODELS_DIR`, else `models/`), otherwise random blocks of the same type.
//! `EMBER_KERNELS` selects the kernel set.
//!
//! `--model smollm2|gemma3|FILE.gguf` instead runs every matrix product of one forward pass of the
//! real model (all layers and the output) for `--tokens` tokens and reports tokens/s for
//! the products alone: the ceiling the rest of the forward pass eats into. `--pool`
//! reports the cost of one empty parallel operation. Prints time per call, weight bandwidth (GB/s)
//! and arithmetic rate (GFLOP/s, 2 per multiply-add, activation quantization included).
//! With one thread the time is the thread's CPU time (other processes on a shared
//! machine do not inflate it); with more, wall time.

use std::path::PathBuf;
use std::time::Instant;

use ember::kernels::{matmul, ActFormat, Kernels, Matrix, Pool};
use ember::{GgmlType, GgufFile};

struct Shape {
    name: &'static str,
    ty: GgmlType,
    rows: usize,
    cols: usize,
    /// (model file, tensor name) to take real weights from.
    src: Option<(&'static str, &'static str)>,
}

const SMOL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const GEMMA: &str = "gemma-3-270m-q4_k_m.gguf";

fn shapes() -> Vec<Shape> {
    use GgmlType::*;
    let s = |name, ty, rows, cols, src| Shape {
        name,
        ty,
        rows,
        cols,
        src,
    };
    vec![
        s(
            "smol.q 576x576",
            Q4_1,
            576,
            576,
            Some((SMOL, "blk.0.attn_q.weight")),
        ),
        s(
            "smol.k 576x192",
            Q4_1,
            192,
            576,
            Some((SMOL, "blk.0.attn_k.weight")),
        ),
        s(
            "smol.up 576x1536",
            Q4_1,
            1536,
            576,
            Some((SMOL, "blk.0.ffn_up.weight")),
        ),
        s(
            "smol.down 1536x576",
            Q4_1,
            576,
            1536,
            Some((SMOL, "blk.0.ffn_down.weight")),
        ),
        s(
            "smol.out 49152x576",
            Q8_0,
            49152,
            576,
            Some((SMOL, "token_embd.weight")),
        ),
        s("smol.q Q4_0", Q4_0, 576, 576, None),
        s("smol.up Q4_0", Q4_0, 1536, 576, None),
        s("smol.up Q8_0", Q8_0, 1536, 576, None),
        s("smol.up Q4_K", Q4_K, 1536, 768, None),
        s(
            "gemma.q 640x1024",
            Q5_0,
            1024,
            640,
            Some((GEMMA, "blk.0.attn_q.weight")),
        ),
        s(
            "gemma.o 1024x640",
            Q4_K,
            640,
            1024,
            Some((GEMMA, "blk.0.attn_output.weight")),
        ),
        s(
            "gemma.down 2048x640",
            Q6_K,
            640,
            2048,
            Some((GEMMA, "blk.0.ffn_down.weight")),
        ),
        s(
            "gemma.up 640x2048",
            Q5_0,
            2048,
            640,
            Some((GEMMA, "blk.0.ffn_up.weight")),
        ),
        s(
            "gemma.out 262144x640",
            Q8_0,
            262144,
            640,
            Some((GEMMA, "token_embd.weight")),
        ),
        s("misc Q5_1", Q5_1, 1536, 576, None),
        s("misc Q2_K", Q2_K, 1536, 768, None),
        s("misc Q3_K", Q3_K, 1536, 768, None),
        s("misc Q5_K", Q5_K, 1536, 768, None),
        s("misc F16", F16, 1536, 576, None),
        s("misc BF16", BF16, 1536, 576, None),
        s("misc F32", F32, 1536, 576, None),
    ]
}

/// Random quants with small f16 scales at the offsets each block type keeps them.
fn random_weights(ty: GgmlType, rows: usize, cols: usize, seed: &mut u64) -> Vec<u8> {
    let mut next = || {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    };
    let ts = ty.type_size();
    let n = rows * cols / ty.block_size() * ts;
    let mut w: Vec<u8> = (0..n).map(|_| next() as u8).collect();
    let small = |v: u64| half::f16::from_f32(((v % 1000) as f32 + 1.0) * 1e-5).to_le_bytes();
    let scales: &[usize] = match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q2_K => &[80, 82],
        GgmlType::Q3_K => &[108],
        GgmlType::Q6_K => &[208],
        GgmlType::F16 | GgmlType::BF16 => {
            for c in w.chunks_exact_mut(2) {
                c.copy_from_slice(&small(next()));
            }
            &[]
        }
        GgmlType::F32 => {
            for c in w.chunks_exact_mut(4) {
                c.copy_from_slice(&(((next() % 1000) as f32) * 1e-3).to_le_bytes());
            }
            &[]
        }
        _ => &[],
    };
    for blk in w.chunks_exact_mut(ts) {
        for &o in scales {
            blk[o..o + 2].copy_from_slice(&small(next()));
        }
    }
    w
}

/// CPU time of the calling thread in seconds (Linux), to see through a busy machine:
/// with one thread, time the scheduler gave to others does not count.
fn thread_cpu() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(s.split_whitespace().next()?.parse::<f64>().ok()? / 1e9)
}

fn list(s: &str) -> Vec<usize> {
    s.split(',').filter_map(|v| v.trim().parse().ok()).collect()
}

fn main() {
    let mut threads = vec![1, 2];
    let mut tokens = vec![1, 128];
    let mut filter = String::new();
    let mut min_ms = 300.0f64;
    let mut force_random = false;
    let mut model = String::new();
    let mut pool_only = false;
    let mut custom: Vec<Shape> = Vec::new();
    let mut dir =
        PathBuf::from(std::env::var("EMBER_MODELS_DIR").unwrap_or_else(|_| "models".into()));
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_default();
        match a.as_str() {
            "--threads" => threads = list(&val()),
            "--tokens" => tokens = list(&val()),
            "--filter" => filter = val(),
            "--min-ms" => min_ms = val().parse().unwrap_or(min_ms),
            "--models" => dir = PathBuf::from(val()),
            "--random" => force_random = true,
            "--model" => model = val(),
            "--pool" => pool_only = true,
            "--shape" => {
                // TYPE:ROWS:COLS, random weights.
                let v = val();
                let p: Vec<&str> = v.split(':').collect();
                let ty = p.first().and_then(|t| GgmlType::from_name(t));
                let (r, c) = (
                    p.get(1).and_then(|x| x.parse().ok()),
                    p.get(2).and_then(|x| x.parse().ok()),
                );
                match (ty, r, c) {
                    (Some(ty), Some(rows), Some(cols)) => custom.push(Shape {
                        name: "custom",
                        ty,
                        rows,
                        cols,
                        src: None,
                    }),
                    _ => {
                        eprintln!("--shape wants TYPE:ROWS:COLS, got {v}");
                        std::process::exit(2);
                    }
                }
            }
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    let kernels = Kernels::detect();
    println!("kernels: {}", kernels.name);
    if pool_only {
        return bench_pool(&threads);
    }
    if !model.is_empty() {
        return bench_model(&model, &dir, &threads, &tokens, min_ms, kernels);
    }
    let files: Vec<(&str, Option<GgufFile>)> = [SMOL, GEMMA]
        .iter()
        .map(|f| (*f, GgufFile::open(dir.join(f)).ok()))
        .collect();
    let pools: Vec<Pool> = threads
        .iter()
        .map(|&n| Pool::new(n).expect("pool"))
        .collect();
    println!(
        "{:<24} {:>5} {:>4} {:>3} {:>10} {:>8} {:>8}  weights",
        "shape", "type", "tok", "thr", "us/call", "GB/s", "GFLOP/s"
    );
    let mut seed = 0x1234_5678_9abc_def1u64;
    let list = if custom.is_empty() { shapes() } else { custom };
    for sh in list {
        if !sh.name.contains(&filter) {
            continue;
        }
        let real = sh.src.filter(|_| !force_random).and_then(|(file, tensor)| {
            let f = files.iter().find(|(n, _)| *n == file)?.1.as_ref()?;
            let t = f.tensor(tensor)?;
            (t.ty == sh.ty && t.dims[0] as usize == sh.cols && t.n_rows() as usize == sh.rows)
                .then(|| f.tensor_data(t))
        });
        let owned;
        let (data, origin) = match real {
            Some(d) => (d, "model"),
            None => {
                owned = random_weights(sh.ty, sh.rows, sh.cols, &mut seed);
                (&owned[..], "random")
            }
        };
        let m = Matrix {
            ty: sh.ty,
            rows: sh.rows,
            cols: sh.cols,
            data,
        };
        let fmt = ActFormat::for_weight(sh.ty).expect("supported type");
        for &n_tok in &tokens {
            let x: Vec<f32> = (0..n_tok * sh.cols)
                .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1e-3)
                .collect();
            let mut act = vec![0u8; n_tok * fmt.row_bytes(sh.cols).max(sh.cols * 4)];
            let mut out = vec![0f32; n_tok * sh.rows];
            for pool in &pools {
                let mut call =
                    || matmul(pool, kernels, &m, &x, n_tok, &mut act, &mut out).expect("matmul");
                call();
                // Calibrate, then take the best of several timed batches (the machine is shared).
                let t = Instant::now();
                call();
                let once = t.elapsed().as_secs_f64().max(1e-7);
                let per_batch = ((min_ms / 1e3 / 5.0) / once).ceil().max(1.0) as usize;
                let mut best = f64::INFINITY;
                let mut best_cpu = f64::INFINITY;
                for _ in 0..5 {
                    let c = thread_cpu();
                    let t = Instant::now();
                    for _ in 0..per_batch {
                        call();
                    }
                    best = best.min(t.elapsed().as_secs_f64() / per_batch as f64);
                    if let (Some(c0), Some(c1)) = (c, thread_cpu()) {
                        best_cpu = best_cpu.min((c1 - c0) / per_batch as f64);
                    }
                }
                // With one thread, CPU time is the better measure on a shared machine.
                if pool.n_threads() == 1 && best_cpu.is_finite() && best_cpu > 0.0 {
                    best = best_cpu;
                }
                let gbs = data.len() as f64 / best / 1e9;
                let gflops = 2.0 * (sh.rows * sh.cols * n_tok) as f64 / best / 1e9;
                println!(
                    "{:<24} {:>5} {:>4} {:>3} {:>10.1} {:>8.2} {:>8.2}  {origin}",
                    sh.name,
                    sh.ty.name(),
                    n_tok,
                    pool.n_threads(),
                    best * 1e6,
                    gbs,
                    gflops
                );
            }
        }
    }
}

fn bench_pool(threads: &[usize]) {
    // Spin for about `ns` nanoseconds of work.
    fn busy(ns: u64) {
        let t = Instant::now();
        while (t.elapsed().as_nanos() as u64) < ns {
            std::hint::spin_loop();
        }
    }
    for &n in threads {
        let pool = Pool::new(n).expect("pool");
        let counts: Vec<std::sync::atomic::AtomicUsize> = (0..n)
            .map(|_| std::sync::atomic::AtomicUsize::new(0))
            .collect();
        for (n_tasks, task_ns) in [(n, 0u64), (32, 500), (32, 2000)] {
            let op = || {
                pool.run(n_tasks, &|_, th| {
                    counts[th].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    busy(task_ns)
                })
            };
            for _ in 0..200 {
                op();
            }
            for c in &counts {
                c.store(0, std::sync::atomic::Ordering::Relaxed);
            }
            let reps = 2000;
            let mut best = f64::INFINITY;
            let mut each: Vec<f64> = Vec::with_capacity(reps * 5);
            for _ in 0..5 {
                let t = Instant::now();
                for _ in 0..reps {
                    let t1 = Instant::now();
                    op();
                    each.push(t1.elapsed().as_secs_f64() * 1e6);
                }
                best = best.min(t.elapsed().as_secs_f64() / reps as f64);
            }
            each.sort_by(|a, b| a.total_cmp(b));
            let pct = |p: f64| each[((each.len() - 1) as f64 * p) as usize];
            println!(
                "    per-operation us: p10 {:.1} p50 {:.1} p90 {:.1} p99 {:.1} max {:.1}",
                pct(0.1),
                pct(0.5),
                pct(0.9),
                pct(0.99),
                pct(1.0)
            );
            let ideal = (n_tasks as f64 * task_ns as f64 / n as f64) * 1e-3;
            let shares: Vec<usize> = counts
                .iter()
                .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
                .collect();
            println!(
                "pool threads={n}: {n_tasks} tasks of {task_ns} ns: {:8.2} us per operation (ideal {ideal:.2}), tasks per thread {shares:?}",
                best * 1e6
            );
        }
    }
}

fn bench_model(
    name: &str,
    dir: &std::path::Path,
    threads: &[usize],
    tokens: &[usize],
    min_ms: f64,
    k: &Kernels,
) {
    let path = match name {
        "smollm2" => dir.join(SMOL),
        "gemma3" => dir.join(GEMMA),
        other if other.ends_with(".gguf") => PathBuf::from(other),
        other => {
            eprintln!("unknown model {other} (smollm2, gemma3 or a .gguf path)");
            std::process::exit(2);
        }
    };
    let f = GgufFile::open(&path).expect("model file (run tools/fetch-models)");
    let mut mats: Vec<Matrix<'_>> = Vec::new();
    for t in f.tensors() {
        let is_mat = t.name.starts_with("blk.") && !t.name.contains("norm") && t.n_dims == 2;
        if is_mat
            || t.name == "token_embd.weight" && f.tensor("output.weight").is_none()
            || t.name == "output.weight"
        {
            mats.push(Matrix {
                ty: t.ty,
                rows: t.n_rows() as usize,
                cols: t.dims[0] as usize,
                data: f.tensor_data(t),
            });
        }
    }
    let bytes: usize = mats.iter().map(|m| m.data.len()).sum();
    let max_cols = mats.iter().map(|m| m.cols).max().unwrap_or(0);
    let max_rows = mats.iter().map(|m| m.rows).max().unwrap_or(0);
    let mut types: Vec<&str> = mats.iter().map(|m| m.ty.name()).collect();
    types.sort();
    types.dedup();
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or(name);
    println!(
        "{name}: {} matrices ({}), {:.1} MiB",
        mats.len(),
        types.join(" "),
        bytes as f64 / (1 << 20) as f64
    );
    for &n_tok in tokens {
        let x: Vec<f32> = (0..n_tok * max_cols)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1e-3)
            .collect();
        let mut act = vec![0u8; n_tok * max_cols * 4];
        let mut out = vec![0f32; n_tok * max_rows];
        for &n in threads {
            let pool = Pool::new(n).expect("pool");
            let pass = |act: &mut [u8], out: &mut [f32]| {
                for m in &mats {
                    // Prefill needs logits for the last token only.
                    let nt = if m.rows > 100_000 || m.rows == max_rows {
                        1
                    } else {
                        n_tok
                    };
                    matmul(&pool, k, m, &x[..nt * m.cols], nt, act, out).expect("matmul");
                }
            };
            pass(&mut act, &mut out);
            let mut best = f64::INFINITY;
            let mut best_cpu = f64::INFINITY;
            let start = Instant::now();
            while start.elapsed().as_secs_f64() * 1e3 < min_ms.max(1.0) * 3.0 {
                let c = thread_cpu();
                let t = Instant::now();
                pass(&mut act, &mut out);
                best = best.min(t.elapsed().as_secs_f64());
                if let (Some(c0), Some(c1)) = (c, thread_cpu()) {
                    best_cpu = best_cpu.min(c1 - c0);
                }
            }
            println!(
                "{name} n_tok={n_tok:<4} threads={n}: {:8.2} ms per pass (wall), {:8.1} tok/s (matrix products only); calling thread's CPU time {:.2} ms",
                best * 1e3,
                n_tok as f64 / best,
                best_cpu * 1e3
            );
        }
    }
}
