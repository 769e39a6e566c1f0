//! The worker threads of one context.
//!
//! A decoded token runs a few hundred parallel operations of a few microseconds each, so
//! the cost that matters is handing one operation to the workers and learning that it is
//! done. Workers spin on a shared state word for a while after each operation (waking a
//! sleeping thread costs tens of microseconds), then sleep on a condition variable. The
//! calling thread works too, and it never waits for a worker that has not joined: it
//! closes the operation once every task is claimed and waits only for the workers inside.
//!
//! Tasks are split into one contiguous range per thread, claimed from the front by their
//! owner (an uncontended atomic on the owner's cache line) and stolen one at a time from
//! the back by threads that run out. A thread that starts late, or is preempted on a
//! busy machine, thus holds up at most the one task it is running.
//!
//! When the machine has fewer free cores than the pool has threads, a preempted worker
//! can still hold up each operation for a scheduler time slice, making several threads
//! slower than one. The pool notices (operations keep taking longer than the caller's
//! own pace says it would have needed alone) and then runs the next operations on the
//! calling thread alone for a while before trying again. That while is measured in time,
//! not operations: 2 ms at first, doubling while the next attempts keep losing, at most
//! 256 ms. (Counted in operations it was a whole pp128 run after one preemption at its
//! start: prefill speed came out bimodal, one run in five at the single-thread rate.)
//! Waking a sleeping worker is never taken for a loss: after an idle spell, the first
//! operation always finds the workers asleep.
//! Nothing here allocates after [`Pool::new`].

use std::cell::{Cell, UnsafeCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// A task body: called with (task index, thread index). Thread indices are below
/// [`Pool::n_threads`] and no two tasks run at the same time with the same thread index,
/// so they can select per-thread scratch.
pub type TaskFn<'a> = dyn Fn(usize, usize) + Sync + 'a;

/// Bit layout of `Shared::state`: epoch in the high 32 bits, a "closed" flag, and the
/// number of workers currently inside the operation in the low bits.
const CLOSED: u64 = 1 << 31;
const INSIDE_MASK: u64 = CLOSED - 1;
const EPOCH_ONE: u64 = 1 << 32;

/// How long an idle worker spins before it sleeps. Long enough to bridge the gaps
/// between the operations of one token (and between tokens), short enough that an idle
/// context stops burning a core almost at once.
const SPIN: Duration = Duration::from_micros(300);
/// Waiting longer than this (for the next operation, or for a worker to finish), a
/// thread yields its core between checks: the thread it waits for may share the core.
const YIELD_AFTER: Duration = Duration::from_micros(20);
/// An operation this long without help means the workers are not running.
const ABSENT_AFTER: Duration = Duration::from_micros(30);

fn noop(_: usize, _: usize) {}
const NOOP: &TaskFn<'static> = &noop;

struct Job {
    f: *const TaskFn<'static>,
}

/// One thread's remaining task range, `start | end << 32`, alone on its cache line.
#[repr(align(128))]
struct Range(AtomicU64);

impl Range {
    fn set(&self, start: usize, end: usize) {
        self.0
            .store(start as u64 | (end as u64) << 32, Ordering::Relaxed);
    }

    /// Takes the first task (the owner) or the last (a thief).
    fn take(&self, front: bool) -> Option<usize> {
        let mut v = self.0.load(Ordering::Relaxed);
        loop {
            let (s, e) = (v & 0xFFFF_FFFF, v >> 32);
            if s >= e {
                return None;
            }
            let (next, t) = if front {
                (v + 1, s)
            } else {
                (s | (e - 1) << 32, e - 1)
            };
            match self
                .0
                .compare_exchange_weak(v, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Some(t as usize),
                Err(now) => v = now,
            }
        }
    }

    fn clear(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

struct Shared {
    state: AtomicU64,
    ranges: Box<[Range]>,
    /// Written only by the thread that owns the current operation, while no worker is
    /// inside it; read by workers only after they have joined (see `run`).
    job: UnsafeCell<Job>,
    sleepers: AtomicUsize,
    shutdown: AtomicBool,
    /// A task panicked on a worker; the owner re-raises after the operation.
    panicked: AtomicBool,
    /// One operation at a time; a second caller waits, a nested call runs inline.
    busy: AtomicBool,
    /// Identifies this pool to its worker threads (for nested calls).
    id: usize,
    /// Until when (ns since `t0`) operations run on the calling thread alone, and how
    /// long the next such period lasts (see the module comment).
    solo_until: AtomicU64,
    solo_ns: AtomicU64,
    t0: Instant,
    /// Evidence that workers slow operations down: +2 per operation that took longer
    /// than the caller alone would have, -1 per operation that went faster.
    score: AtomicU32,
    /// Workers that have begun running (see `Pool::new`).
    started: AtomicUsize,
}

/// The first period alone after parallel operations keep losing, and the longest.
const SOLO_MIN_NS: u64 = 2_000_000;
const SOLO_MAX_NS: u64 = 256_000_000;
const SCORE_LIMIT: u32 = 6;

/// What one operation says about running in parallel.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Outcome {
    /// Slower than the caller alone would have been.
    Lost,
    /// The workers helped and it paid.
    Won,
    /// Nothing either way (the workers took no part, or were being woken).
    Neutral,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    fn solo(&self, now: u64) -> bool {
        now < self.solo_until.load(Ordering::Relaxed)
    }

    /// Updates the evidence with one operation's outcome; enough losses in a row start a
    /// period alone, each one twice as long as the last until the workers win again.
    fn record(&self, outcome: Outcome, now: u64) {
        let score = self.score.load(Ordering::Relaxed);
        match outcome {
            Outcome::Lost if score + 2 >= SCORE_LIMIT => {
                self.score.store(0, Ordering::Relaxed);
                let len = self.solo_ns.load(Ordering::Relaxed);
                self.solo_until.store(now + len, Ordering::Relaxed);
                self.solo_ns
                    .store((len * 2).min(SOLO_MAX_NS), Ordering::Relaxed);
            }
            Outcome::Lost => self.score.store(score + 2, Ordering::Relaxed),
            Outcome::Won => {
                self.score.store(score.saturating_sub(1), Ordering::Relaxed);
                if score <= 1 {
                    self.solo_ns.store(SOLO_MIN_NS, Ordering::Relaxed);
                }
            }
            Outcome::Neutral => {}
        }
    }
}

// SAFETY: `job` is the only non-Sync field. It is written by the owner of the `busy` flag
// only while no worker is inside an operation, and read by workers only between a
// successful join (Acquire on `state`) and their leave; the protocol in `run` orders these.
unsafe impl Sync for Shared {}
// SAFETY: the raw pointer in `job` points to a `Sync` closure; see above.
unsafe impl Send for Shared {}

thread_local! {
    /// (pool id, thread index) of the pool worker running on this thread, if any.
    static WORKER: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

/// The id of the pool the current thread works for (or runs an operation of), 0 if none.
#[cfg(test)]
pub(crate) fn current_pool_id() -> usize {
    WORKER.with(|w| w.get().0)
}

/// The worker threads of one context. Every parallel operation of a forward pass runs on
/// it; the thread that calls [`Pool::run`] takes part as thread 0.
pub struct Pool {
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
    n_threads: usize,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("n_threads", &self.n_threads)
            .finish()
    }
}

impl Pool {
    /// A pool of `n_threads` threads including the caller's (0 = one per available core).
    pub fn new(n_threads: usize) -> Result<Pool> {
        let n = Pool::resolve_threads(n_threads)?;
        static NEXT_ID: AtomicUsize = AtomicUsize::new(1);
        let shared = Arc::new(Shared {
            state: AtomicU64::new(0),
            ranges: (0..n).map(|_| Range(AtomicU64::new(0))).collect(),
            job: UnsafeCell::new(Job { f: NOOP }),
            sleepers: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            busy: AtomicBool::new(false),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            solo_until: AtomicU64::new(0),
            solo_ns: AtomicU64::new(SOLO_MIN_NS),
            t0: Instant::now(),
            score: AtomicU32::new(0),
            started: AtomicUsize::new(0),
        });
        let mut pool = Pool {
            shared,
            handles: Vec::with_capacity(n - 1),
            n_threads: n,
        };
        for index in 1..n {
            let shared = Arc::clone(&pool.shared);
            let h = std::thread::Builder::new()
                .name(format!("ember-worker-{index}"))
                .spawn(move || worker(shared, index))
                .map_err(|e| Error::InvalidArgument(format!("cannot start {n} threads: {e}")));
            match h {
                Ok(h) => pool.handles.push(h),
                // Dropping `pool` stops the threads already started.
                Err(e) => return Err(e),
            }
        }
        // A context is ready when its threads are: a thread's start-up allocates, and left
        // to the scheduler it could land inside the first tokens of a generation.
        while pool.shared.started.load(Ordering::Acquire) < n - 1 {
            std::thread::yield_now();
        }
        Ok(pool)
    }

    /// The thread count `Pool::new(n_threads)` makes (0 = one per available core), so
    /// that what depends on it can be sized before the threads exist.
    pub fn resolve_threads(n_threads: usize) -> Result<usize> {
        let n = if n_threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            n_threads
        };
        if n > 1024 {
            return Err(Error::InvalidArgument(format!(
                "{n} threads is more than ember supports (1024)"
            )));
        }
        Ok(n)
    }

    /// Threads taking part in each operation, the caller's included.
    pub fn n_threads(&self) -> usize {
        self.n_threads
    }

    /// Identifies this pool's worker threads (see [`current_pool_id`]).
    #[cfg(test)]
    pub(crate) fn id(&self) -> usize {
        self.shared.id
    }

    /// Runs `f(task, thread)` for every task in `0..n_tasks`, spread over the threads,
    /// and returns when all are done. Each thread starts on its own contiguous share of
    /// the tasks in order (neighbouring tasks stay on one core) and helps the others
    /// when it is done, one task at a time, so uneven tasks balance themselves; a task
    /// of a microsecond or more amortizes the bookkeeping.
    ///
    /// Called from inside a task of the same pool, the tasks run inline on the calling
    /// thread (with its thread index); called from two threads at once, the calls take turns.
    /// A panic in a task is re-raised here once every thread has left the operation.
    pub fn run(&self, n_tasks: usize, f: &TaskFn<'_>) {
        let sh = &*self.shared;
        let (pid, me) = WORKER.with(|w| w.get());
        if pid == sh.id {
            // Nested inside one of our own tasks: the other threads are busy with the
            // outer operation, so do the work here.
            (0..n_tasks).for_each(|t| f(t, me));
            return;
        }
        if n_tasks == 0 {
            return;
        }
        let _busy = self.acquire();
        if self.n_threads == 1 || n_tasks == 1 || sh.solo(sh.now_ns()) {
            (0..n_tasks).for_each(|t| f(t, 0));
            return;
        }
        if n_tasks > u32::MAX as usize {
            // Tasks are numbered in 32 bits; so many is a caller bug, not input.
            panic!("pool operation with {n_tasks} tasks");
        }
        // SAFETY: only the lifetime is erased. The closure outlives every use: workers
        // reach it only while inside this operation, and `Closer` (also on unwind) waits
        // until none is inside before this function returns.
        let fp: *const TaskFn<'static> =
            unsafe { std::mem::transmute::<*const TaskFn<'_>, *const TaskFn<'static>>(f) };
        // SAFETY: we hold `busy` and the previous operation ended with no worker inside
        // and its state closed, so no other thread reads `job` now (a worker joins only
        // an open operation, which the store below creates).
        unsafe {
            *sh.job.get() = Job { f: fp };
        }
        let nt = self.n_threads;
        for (i, r) in sh.ranges.iter().enumerate() {
            r.set(i * n_tasks / nt, (i + 1) * n_tasks / nt);
        }
        let epoch = (sh.state.load(Ordering::Relaxed) >> 32).wrapping_add(1) & 0xFFFF_FFFF;
        // Release: publishes `job` and the ranges to the workers that join.
        sh.state.store(epoch << 32, Ordering::SeqCst);
        let woke = sh.sleepers.load(Ordering::SeqCst) > 0;
        if woke {
            self.wake_all();
        }
        let mut closer = Closer { sh, done: false };
        let start = Instant::now();
        let mine = work(sh, 0, f);
        let worked = start.elapsed();
        let waited = closer.close();
        // The caller alone would have taken about `worked` scaled to all tasks; when
        // operations keep taking longer than that (workers preempted on a busy machine),
        // run alone for a while.
        if mine > 0 {
            let solo_est = worked.as_secs_f64() * n_tasks as f64 / mine as f64;
            let took = (worked + waited).as_secs_f64();
            // Only clear losses count: a worker that joins late and takes the last task
            // costs a little, a preempted one costs a time slice. A worker that never
            // joins an operation long enough for a spinning thread to notice is not
            // getting a core (the scheduler put it beside the caller): it only slows
            // the caller down. An operation that had to wake sleepers says nothing either way.
            let absent = mine == n_tasks && worked > ABSENT_AFTER;
            let outcome = if woke {
                Outcome::Neutral
            } else if took > solo_est * 1.25 + 20e-6 || absent {
                Outcome::Lost
            } else if mine < n_tasks {
                Outcome::Won
            } else {
                Outcome::Neutral
            };
            sh.record(outcome, sh.now_ns());
        }
        if sh.panicked.swap(false, Ordering::Relaxed) {
            panic!("a task panicked on an ember worker thread");
        }
    }

    /// Splits `data` into chunks of `chunk` elements (the last may be shorter) and runs
    /// `f(chunk index, chunk, thread)` on each in parallel.
    pub fn for_each_chunk<T: Send>(
        &self,
        data: &mut [T],
        chunk: usize,
        f: &(dyn Fn(usize, &mut [T], usize) + Sync),
    ) {
        let chunk = chunk.max(1);
        let len = data.len();
        let n = len.div_ceil(chunk);
        let base = SendPtr(data.as_mut_ptr());
        self.run(n, &|i, th| {
            let start = i * chunk;
            let end = (start + chunk).min(len);
            // SAFETY: chunk `i` covers `start..end`, inside `data` and disjoint from every
            // other chunk; each index runs exactly once, and `data` stays mutably borrowed
            // for the whole call.
            let s = unsafe { base.slice(start, end - start) };
            f(i, s, th)
        });
    }

    /// Unparks every worker. No lock is involved, so a worker preempted on its way to
    /// sleep cannot hold up the caller.
    fn wake_all(&self) {
        for h in &self.handles {
            h.thread().unpark();
        }
    }

    /// Takes the pool for one operation; the guard gives it back, also on unwind.
    fn acquire(&self) -> Busy<'_> {
        let sh = &*self.shared;
        while sh
            .busy
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::thread::yield_now();
        }
        // Tasks run on this thread as thread 0; a nested `run` from one of them must see it.
        let prev = WORKER.with(|w| w.replace((sh.id, 0)));
        Busy { sh, prev }
    }
}

struct Busy<'a> {
    sh: &'a Shared,
    prev: (usize, usize),
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        WORKER.with(|w| w.set(self.prev));
        self.sh.busy.store(false, Ordering::Release);
    }
}

/// Closes the current operation and waits for the workers inside it to leave; runs on
/// unwind too, so a panicking task cannot leave workers holding a dangling closure.
struct Closer<'a> {
    sh: &'a Shared,
    done: bool,
}

impl Closer<'_> {
    /// Closes the operation and returns how long the workers inside kept us waiting.
    fn close(&mut self) -> Duration {
        self.done = true;
        // Drop every unclaimed task so workers inside stop soon (matters on unwind).
        for r in self.sh.ranges.iter() {
            r.clear();
        }
        let s = self.sh.state.fetch_or(CLOSED, Ordering::AcqRel);
        if s & INSIDE_MASK == 0 {
            return Duration::ZERO;
        }
        let start = Instant::now();
        let mut spins = 0u32;
        while self.sh.state.load(Ordering::Acquire) & INSIDE_MASK != 0 {
            spins = spins.wrapping_add(1);
            if spins % 64 == 0 && start.elapsed() > YIELD_AFTER {
                // The worker we wait for may be waiting for our core.
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        start.elapsed()
    }
}

impl Drop for Closer<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.close();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let sh = &*self.shared;
        sh.shutdown.store(true, Ordering::SeqCst);
        // A new epoch wakes spinners; unparking wakes sleepers.
        sh.state.fetch_add(EPOCH_ONE, Ordering::SeqCst);
        self.wake_all();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

fn worker(sh: Arc<Shared>, index: usize) {
    WORKER.with(|w| w.set((sh.id, index)));
    sh.started.fetch_add(1, Ordering::Release);
    let mut seen = sh.state.load(Ordering::Acquire) >> 32;
    loop {
        let s = wait_for_epoch(&sh, seen);
        if sh.shutdown.load(Ordering::SeqCst) {
            return;
        }
        seen = s >> 32;
        if !join(&sh, s) {
            continue;
        }
        // SAFETY: joined an open operation: its owner wrote `job` before publishing the
        // epoch (Release, paired with the Acquire of the join) and does not touch it, nor
        // free the closure, until we leave below.
        let job = unsafe { &*sh.job.get() };
        // SAFETY: as above, the closure is alive until we leave.
        let f = unsafe { &*job.f };
        let r = catch_unwind(AssertUnwindSafe(|| {
            work(&sh, index, f);
        }));
        if r.is_err() {
            sh.panicked.store(true, Ordering::Relaxed);
            for r in sh.ranges.iter() {
                r.clear();
            }
        }
        // Release: our task writes happen before the owner sees us gone.
        sh.state.fetch_sub(1, Ordering::Release);
    }
}

/// Runs thread `me`'s own tasks front to back, then steals from the others' backs.
/// Returns how many tasks it ran.
fn work(sh: &Shared, me: usize, f: &TaskFn<'_>) -> usize {
    let mut done = 0;
    while let Some(t) = sh.ranges[me].take(true) {
        f(t, me);
        done += 1;
    }
    let n = sh.ranges.len();
    let mut victim = (me + 1) % n;
    let mut empty = 0;
    // Stop after a full round of empty ranges.
    while empty < n {
        match sh.ranges[victim].take(false) {
            Some(t) => {
                f(t, me);
                done += 1;
                empty = 0;
            }
            None => {
                empty += 1;
                victim = (victim + 1) % n;
            }
        }
    }
    done
}

/// Enters the operation published as state `s` unless it is already closed or replaced.
fn join(sh: &Shared, mut s: u64) -> bool {
    let epoch = s >> 32;
    loop {
        if s >> 32 != epoch || s & CLOSED != 0 {
            return false;
        }
        match sh
            .state
            .compare_exchange_weak(s, s + 1, Ordering::Acquire, Ordering::Relaxed)
        {
            Ok(_) => return true,
            Err(now) => s = now,
        }
    }
}

/// Returns the state once its epoch differs from `seen` or the pool shuts down: spins for
/// [`SPIN`], then sleeps.
fn wait_for_epoch(sh: &Shared, seen: u64) -> u64 {
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        let s = sh.state.load(Ordering::Acquire);
        // A worker that starts late may read an epoch that is already its pool's last,
        // so shutdown is checked on its own, not only through an epoch change.
        if s >> 32 != seen || sh.shutdown.load(Ordering::Relaxed) {
            return s;
        }
        spins = spins.wrapping_add(1);
        if spins % 256 == 0 {
            let waited = start.elapsed();
            // While the pool runs alone there is nothing to spin for, and spinning would
            // take a core the caller may need.
            if waited > SPIN || sh.solo(sh.now_ns()) {
                break;
            }
            if waited > YIELD_AFTER {
                // If the scheduler put the caller on our core, it needs it to publish the
                // next operation; when it did not, this returns at once.
                std::thread::yield_now();
                continue;
            }
        }
        std::hint::spin_loop();
    }
    // SeqCst on both sides (here and in `run`) means either the owner sees us asleep and
    // unparks us, or we see its new epoch before parking. An unpark that comes before the
    // park makes the park return at once; spurious returns just loop.
    sh.sleepers.fetch_add(1, Ordering::SeqCst);
    loop {
        let s = sh.state.load(Ordering::SeqCst);
        if s >> 32 != seen || sh.shutdown.load(Ordering::SeqCst) {
            sh.sleepers.fetch_sub(1, Ordering::SeqCst);
            return s;
        }
        std::thread::park();
    }
}

/// A raw pointer that may cross threads, for handing disjoint parts of one buffer to
/// parallel tasks.
pub(crate) struct SendPtr<T>(pub *mut T);

impl<T> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for SendPtr<T> {}

// SAFETY: users only create disjoint slices from it (see `slice`); `T: Send` makes moving
// those parts to other threads sound.
unsafe impl<T: Send> Send for SendPtr<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// # Safety
    /// `start..start + len` must lie in the allocation and no other live reference may
    /// overlap it.
    pub(crate) unsafe fn slice<'a>(self, start: usize, len: usize) -> &'a mut [T] {
        // SAFETY: guaranteed by the caller.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(start), len) }
    }

    /// # Safety
    /// `i` must be in the allocation and no other thread may access it concurrently.
    #[inline(always)]
    pub(crate) unsafe fn write(self, i: usize, v: T) {
        // SAFETY: guaranteed by the caller.
        unsafe { self.0.add(i).write(v) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn losses_start_periods_alone_that_double_and_reset_after_wins() {
        let pool = Pool::new(2).unwrap();
        let sh = &*pool.shared;
        let t = 1_000 * MS;
        // Two losses are not enough; the third starts 2 ms alone.
        sh.record(Outcome::Lost, t);
        sh.record(Outcome::Lost, t);
        assert!(!sh.solo(t));
        sh.record(Outcome::Lost, t);
        assert!(sh.solo(t) && sh.solo(t + 2 * MS - 1) && !sh.solo(t + 2 * MS));
        // Losing again right after: 4 ms, then 8, ... up to 256.
        let mut at = t + 2 * MS;
        for want in [4, 8, 16, 32, 64, 128, 256, 256] {
            for _ in 0..3 {
                sh.record(Outcome::Lost, at);
            }
            assert!(
                sh.solo(at + want * MS - 1) && !sh.solo(at + want * MS),
                "{want} ms"
            );
            at += want * MS;
        }
        // Wins bring the next period back to 2 ms; neutral operations change nothing.
        for _ in 0..4 {
            sh.record(Outcome::Won, at);
            sh.record(Outcome::Neutral, at);
        }
        for _ in 0..3 {
            sh.record(Outcome::Lost, at);
        }
        assert!(sh.solo(at + 2 * MS - 1) && !sh.solo(at + 2 * MS));
    }

    #[test]
    fn an_idle_pool_wakes_without_going_solo() {
        let pool = Pool::new(2).unwrap();
        let out: Vec<AtomicUsize> = (0..64).map(|_| AtomicUsize::new(0)).collect();
        for _ in 0..5 {
            // Long enough idle for the worker to fall asleep before every operation.
            std::thread::sleep(Duration::from_millis(20));
            pool.run(64, &|t, _| {
                out[t].fetch_add(1, Ordering::Relaxed);
            });
        }
        assert!(out.iter().all(|c| c.load(Ordering::Relaxed) == 5));
        assert!(!pool.shared.solo(pool.shared.now_ns()));
        assert_eq!(pool.shared.score.load(Ordering::Relaxed), 0);
    }
}
