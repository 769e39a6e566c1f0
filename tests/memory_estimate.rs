//! Memory estimates: equal to what a model and a context actually allocate, within 1% of
//! what the process's resident set grows by when they are used, and the context budget.
//!
//! The resident measurements (Linux only: /proc/self/status) take care to see only the
//! operation measured: the first load happens before measuring (process-wide tables,
//! code pages), freed heap memory is handed back to the kernel (glibc's malloc_trim)
//! before each snapshot so that a later allocation reusing it still shows as growth, and
//! every test in this file holds one lock so nothing else in the process allocates
//! meanwhile. Contexts are big enough (tens of MB) that page rounding of their ~20
//! buffers stays far below 1%.

mod common;

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock};

use ember::{Context, ContextParams, Error, KvType, Model, ModelParams, Token};

/// Serializes the tests of this file: the resident-set measurements must not see another
/// test's allocations.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn smollm_path() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| common::model("smollm2"))
}

/// Token ids to fill a context with: any valid ids do, every position is written alike.
fn filler(n: usize) -> Vec<Token> {
    (0..n).map(|i| 100 + (i * 37 % 5000) as Token).collect()
}

fn params(n_ctx: usize, n_batch: usize, kv_type: KvType, n_threads: usize) -> ContextParams {
    ContextParams {
        n_ctx,
        n_batch,
        kv_type,
        n_threads,
        ..ContextParams::default()
    }
}

#[test]
fn context_estimate_is_what_the_context_allocates() {
    let _g = serial();
    let mut paths = vec![smollm_path().clone()];
    paths.extend(
        common::model_list("synthetic")
            .into_iter()
            .filter(|p| p.to_string_lossy().ends_with("q4_k_m.gguf")),
    );
    let cases = [
        params(64, 16, KvType::F16, 1),
        params(100, 33, KvType::F32, 2),
        ContextParams {
            logits_all: true,
            ..params(32, 32, KvType::F16, 3)
        },
        params(0, 512, KvType::F16, 0),
    ];
    for path in &paths {
        let model = Model::load(path, &ModelParams::default()).unwrap();
        for p in &cases {
            let est = Context::estimate(&model, p).unwrap();
            let from_file = Context::estimate_for_file(path, p).unwrap();
            assert_eq!(est, from_file, "{}: {p:?}", path.display());
            let ctx = Context::new(&model, *p).unwrap();
            assert_eq!(
                est.buffer_bytes(),
                ctx.size_bytes() as u64,
                "{}: {p:?}: {est:?}",
                path.display()
            );
            let q = ctx.params();
            assert_eq!(
                (est.n_ctx, est.n_batch, est.n_threads),
                (q.n_ctx, q.n_batch, q.n_threads)
            );
        }
    }
}

#[test]
fn model_estimate_is_what_the_model_holds() {
    let _g = serial();
    let path = smollm_path();
    let file_len = std::fs::metadata(path).unwrap().len();
    for use_mmap in [true, false] {
        let mp = ModelParams {
            use_mmap,
            ..ModelParams::default()
        };
        let est = Model::estimate(path, &mp).unwrap();
        let model = Model::load(path, &mp).unwrap();
        assert_eq!(est, model.memory(), "use_mmap {use_mmap}");
        if use_mmap {
            assert_eq!(est.mapped_bytes, file_len);
        } else {
            assert_eq!(est.mapped_bytes, 0);
            assert!(est.heap_bytes > file_len);
        }
    }
}

#[test]
fn a_context_over_its_budget_is_refused() {
    let _g = serial();
    let model = Model::load(smollm_path(), &ModelParams::default()).unwrap();
    let p = params(256, 64, KvType::F16, 1);
    let need = Context::estimate(&model, &p).unwrap().total();
    let over = ContextParams {
        max_bytes: need - 1,
        ..p
    };
    match Context::new(&model, over) {
        Err(Error::OverBudget { needed, max_bytes }) => {
            assert_eq!((needed, max_bytes), (need, need - 1));
        }
        Err(e) => panic!("expected OverBudget, got {e}"),
        Ok(_) => panic!(
            "a context of {need} bytes was made under a budget of {}",
            need - 1
        ),
    }
    // The estimate itself ignores the budget: it is how an app checks one.
    assert_eq!(Context::estimate(&model, &over).unwrap().total(), need);
    let exact = ContextParams {
        max_bytes: need,
        ..p
    };
    let ctx = Context::new(&model, exact).unwrap();
    assert_eq!(ctx.size_bytes() as u64, need - ctx_overhead(&model, &p));
}

fn ctx_overhead(model: &Model, p: &ContextParams) -> u64 {
    Context::estimate(model, p).unwrap().overhead_bytes
}

#[test]
fn prefetch_loads_the_same_model() {
    let _g = serial();
    let mp = ModelParams {
        prefetch: true,
        ..ModelParams::default()
    };
    let a = Model::load(smollm_path(), &mp).unwrap();
    let b = Model::load(smollm_path(), &ModelParams::default()).unwrap();
    let (mut ca, mut cb) = (
        Context::new(&a, params(16, 16, KvType::F16, 1)).unwrap(),
        Context::new(&b, params(16, 16, KvType::F16, 1)).unwrap(),
    );
    ca.decode(&filler(8)).unwrap();
    cb.decode(&filler(8)).unwrap();
    assert_eq!(ca.logits(), cb.logits());
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod resident {
    use super::*;

    extern "C" {
        /// glibc: returns free heap memory to the kernel, whole pages in the middle of
        /// the heap included.
        fn malloc_trim(pad: usize) -> i32;
        fn mallopt(param: i32, value: i32) -> i32;
    }

    /// glibc's `M_MMAP_THRESHOLD`.
    const M_MMAP_THRESHOLD: i32 = -3;

    /// Gives every allocation of 64 KiB or more its own mapping, returned to the kernel
    /// when freed. By default glibc raises that threshold when such a block is freed, and
    /// later big blocks then come from the heap, where freed memory can stay resident
    /// (malloc_trim does not return all of it): a load after another one measured a
    /// third of its tokenizer tables that way.
    fn fixed_mmap_threshold() {
        // SAFETY: mallopt changes glibc's tuning under its own lock.
        assert_eq!(unsafe { mallopt(M_MMAP_THRESHOLD, 64 << 10) }, 1);
    }

    /// (RssAnon, RssFile) in bytes, after returning freed heap pages.
    fn rss() -> (i64, i64) {
        // SAFETY: malloc_trim only walks glibc's own heap, under its own locks.
        unsafe { malloc_trim(0) };
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let kb = |key: &str| -> i64 {
            let line = status.lines().find(|l| l.starts_with(key)).unwrap();
            let n = line.split_whitespace().nth(1).unwrap();
            n.parse::<i64>().unwrap() * 1024
        };
        (kb("RssAnon:"), kb("RssFile:"))
    }

    /// Reads one byte of every page, so that the whole map is resident.
    fn touch(bytes: &[u8]) -> u64 {
        bytes.iter().step_by(4096).map(|&b| b as u64).sum()
    }

    fn rel(measured: i64, estimate: u64) -> f64 {
        (measured as f64 - estimate as f64).abs() / estimate as f64
    }

    /// Runs [`measure`] in a process of its own: in this one, the threads of tests that
    /// just finished are still being torn down (their stacks and malloc arenas returned)
    /// while the next test runs, which showed up as resident memory shrinking during a
    /// load.
    #[test]
    fn estimates_match_resident_growth() {
        if std::env::var_os(CHILD).is_some() {
            return measure();
        }
        if std::env::var("EMBER_TEST_RUNNER").is_ok_and(|r| !r.trim().is_empty()) {
            eprintln!("skipped: under an emulator the resident set is the emulator's");
            return;
        }
        let _g = serial();
        let out = common::target_command(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "resident::estimates_match_resident_growth",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stderr);
        eprintln!("{log}");
        assert!(out.status.success(), "the measuring process failed");
        assert!(
            log.contains("context n_ctx 1536"),
            "the measurements did not run"
        );
    }

    const CHILD: &str = "EMBER_MEMORY_ESTIMATE_CHILD";

    fn measure() {
        fixed_mmap_threshold();
        let path = smollm_path();
        let est = Model::estimate(path, &ModelParams::default()).unwrap();
        // Process-wide one-time work (kernel tables, code pages, the GELU table) happens
        // on the first load and context; the measured ones come after.
        {
            let m = Model::load(path, &ModelParams::default()).unwrap();
            let mut c = Context::new(&m, params(64, 32, KvType::F16, 2)).unwrap();
            c.decode(&filler(40)).unwrap();
        }
        let before = rss();
        let model = Model::load(path, &ModelParams::default()).unwrap();
        let sum = touch(model.gguf().bytes());
        let after = rss();
        let (anon, file) = (after.0 - before.0, after.1 - before.1);
        eprintln!(
            "model: estimate mapped {} + heap {} = {}; resident file {file} + anon {anon} = {} \
             ({:.3}% off; file {:.3}%, anon {:.3}%; checksum {sum})",
            est.mapped_bytes,
            est.heap_bytes,
            est.total(),
            anon + file,
            100.0 * rel(anon + file, est.total()),
            100.0 * rel(file, est.mapped_bytes),
            100.0 * rel(anon, est.heap_bytes),
        );
        assert!(rel(anon + file, est.total()) < 0.01);
        assert!(rel(file, est.mapped_bytes) < 0.01);
        assert!(rel(anon, est.heap_bytes) < 0.01);

        let cases = [
            params(1024, 256, KvType::F16, 1),
            params(512, 512, KvType::F32, 2),
            params(1536, 64, KvType::Q8_0, 1),
        ];
        for p in cases {
            let est = Context::estimate(&model, &p).unwrap();
            let before = rss();
            let mut ctx = Context::new(&model, p).unwrap();
            // Fills every position in batches of n_batch: every page of the cache and of
            // the scratch buffers is written.
            ctx.decode(&filler(est.n_ctx)).unwrap();
            let after = rss();
            let (anon, file) = (after.0 - before.0, after.1 - before.1);
            eprintln!(
                "context n_ctx {} n_batch {} {:?} threads {}: estimate {} (kv {} scratch {} \
                 logits {} other {} overhead {}); resident anon {anon} file {file} ({:.3}% off)",
                est.n_ctx,
                est.n_batch,
                p.kv_type,
                est.n_threads,
                est.total(),
                est.kv_bytes,
                est.scratch_bytes,
                est.logits_bytes,
                est.other_bytes,
                est.overhead_bytes,
                100.0 * rel(anon + file, est.total())
            );
            assert!(rel(anon + file, est.total()) < 0.01, "{p:?}");
            drop(ctx);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
#[test]
fn estimates_match_resident_growth() {
    eprintln!("skipped: resident-set growth is measured on Linux with glibc only");
}
