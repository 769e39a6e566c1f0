//! Proves the hot paths allocate nothing: a counting global allocator (for this test
//! binary) counts allocations made by the test thread or by the worker threads of the
//! pool under test, while other tests keep running in parallel.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::pool::current_pool_id;
use super::tests::{random_weights, Rng};
use super::*;

struct Counting;

static COUNT: AtomicUsize = AtomicUsize::new(0);
/// Id of the pool whose workers are counted (0 = none).
static TRACKED_POOL: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static TRACKED: Cell<bool> = const { Cell::new(false) };
}

/// The counter is shared: these tests take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn note() {
    let pool = TRACKED_POOL.load(Ordering::Relaxed);
    let mine = TRACKED.try_with(|t| t.get()).unwrap_or(false);
    if mine || (pool != 0 && current_pool_id() == pool) {
        COUNT.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards every call unchanged to the system allocator; the bookkeeping only
// touches atomics and const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[test]
// Counts allocations, which Miri has nothing to say about, over 65 rounds of full-size
// products: hours interpreted. matmul_matches_scalar_dots runs the same paths under Miri.
#[cfg_attr(
    miri,
    ignore = "allocation counting over full-size products; too slow for Miri"
)]
fn matmul_and_pool_do_not_allocate() {
    let _serial = serial();
    let mut rng = Rng::new(7);
    let pool = Pool::new(2).unwrap();
    let k = Kernels::detect();
    let shapes = [
        (GgmlType::Q4_1, 192, 576),
        (GgmlType::Q8_0, 300, 576),
        (GgmlType::Q4_K, 130, 512),
        (GgmlType::Q6_K, 64, 1024),
        (GgmlType::Q5_0, 96, 640),
        (GgmlType::F16, 40, 96),
        (GgmlType::IQ4_NL, 100, 576),
        (GgmlType::IQ4_XS, 70, 512),
    ];
    let weights: Vec<Vec<u8>> = shapes
        .iter()
        .map(|&(ty, r, c)| random_weights(&mut rng, ty, r, c))
        .collect();
    let max_tok = 13;
    let x: Vec<f32> = (0..max_tok * 1024).map(|i| (i % 17) as f32 - 8.0).collect();
    let mut act = vec![0u8; max_tok * 1024 * 4];
    let mut out = vec![0f32; max_tok * 300];
    let mut scratch = vec![0f32; 4096];
    let mut run = |count: bool| {
        for (i, &(ty, rows, cols)) in shapes.iter().enumerate() {
            let m = Matrix::new(ty, rows, cols, &weights[i]).unwrap();
            for n_tok in [1, 13] {
                matmul(&pool, k, &m, &x[..n_tok * cols], n_tok, &mut act, &mut out).unwrap();
            }
        }
        pool.run(16, &|t, _| {
            std::hint::black_box(t);
        });
        pool.for_each_chunk(&mut scratch, 100, &|i, c, _| c.fill(i as f32));
        let h = [half::f16::from_f32(1.5); 64];
        let s = k.dot_f16(&h, &x[..64]) + k.dot_f32(&x[..64], &x[64..128]);
        k.axpy_f16(&mut scratch[..64], s, &h);
        if count {
            assert!(scratch[0].is_finite());
        }
    };
    // Warm up: one-time initialisation (kernel detection, thread start) may allocate.
    run(false);
    TRACKED_POOL.store(pool.id(), Ordering::SeqCst);
    TRACKED.with(|t| t.set(true));
    let before = COUNT.load(Ordering::SeqCst);
    for _ in 0..64 {
        run(true);
    }
    let after = COUNT.load(Ordering::SeqCst);
    TRACKED.with(|t| t.set(false));
    TRACKED_POOL.store(0, Ordering::SeqCst);
    assert_eq!(after - before, 0, "allocations in matmul / pool paths");
}

#[test]
fn the_counter_counts() {
    let _serial = serial();
    // Guards the test above against a counter that never counts.
    TRACKED.with(|t| t.set(true));
    let before = COUNT.load(Ordering::SeqCst);
    let v = std::hint::black_box(vec![1u8; 100]);
    let after = COUNT.load(Ordering::SeqCst);
    TRACKED.with(|t| t.set(false));
    drop(v);
    assert!(after > before);
}

#[test]
fn the_counter_counts_pool_workers() {
    let _serial = serial();
    let pool = Pool::new(2).unwrap();
    TRACKED_POOL.store(pool.id(), Ordering::SeqCst);
    let before = COUNT.load(Ordering::SeqCst);
    // Only tasks run by the worker allocate; retry until the worker has taken one.
    for _ in 0..10_000 {
        pool.run(8, &|_, th| {
            if th != 0 {
                std::hint::black_box(vec![0u8; 10]);
            }
            std::thread::sleep(std::time::Duration::from_micros(20));
        });
        if COUNT.load(Ordering::SeqCst) > before {
            break;
        }
    }
    TRACKED_POOL.store(0, Ordering::SeqCst);
    assert!(COUNT.load(Ordering::SeqCst) > before);
}
