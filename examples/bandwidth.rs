//! Measures the machine's memory read bandwidth the way decoding reads weights: each thread
//! streams its own contiguous slice of a buffer far larger than the caches, once per round.
//! Issue 11 compares a model's decode speed with this number: bytes read per token
//! (the weights, plus the KV cache at depth) × tokens per second ÷ bandwidth.
//!
//! Usage: cargo run --release --example bandwidth -- [THREADS] [MiB] [ROUNDS]
//! (defaults 2, 1024, 9). Prints every round and the median and best in GB/s (10^9 bytes).

use std::time::Instant;

/// Sums a slice with eight independent accumulators, so the loop is bound by loads, not by
/// one dependency chain of adds (the compiler vectorizes it).
fn stream(xs: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    let chunks = xs.chunks_exact(8);
    let tail: u64 = chunks.remainder().iter().fold(0, |a, &x| a.wrapping_add(x));
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = a.wrapping_add(x);
        }
    }
    acc.iter().fold(tail, |a, &x| a.wrapping_add(x))
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| {
            a.parse()
                .expect("arguments are numbers: THREADS MiB ROUNDS")
        })
        .collect();
    let threads = args.first().copied().unwrap_or(2).max(1);
    let mib = args.get(1).copied().unwrap_or(1024).max(1);
    let rounds = args.get(2).copied().unwrap_or(9).max(1);
    // Every page written first, so that the rounds read memory, not the zero page.
    let buf: Vec<u64> = (0..mib * (1 << 20) / 8).map(|i| i as u64).collect();
    let bytes = (buf.len() * 8) as f64;
    let per = buf.len().div_ceil(threads);
    let mut rates = Vec::with_capacity(rounds);
    let mut check = 0u64;
    for r in 0..rounds {
        let t = Instant::now();
        let sums: Vec<u64> = std::thread::scope(|s| {
            let hs: Vec<_> = buf
                .chunks(per)
                .map(|part| s.spawn(move || stream(std::hint::black_box(part))))
                .collect();
            hs.into_iter().map(|h| h.join().expect("thread")).collect()
        });
        let secs = t.elapsed().as_secs_f64();
        check = sums.iter().fold(check, |a, &x| a.wrapping_add(x));
        let gbs = bytes / secs / 1e9;
        println!("round {r}: {gbs:.2} GB/s");
        rates.push(gbs);
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "read bandwidth, {threads} threads, {mib} MiB: median {:.2} GB/s, best {:.2} GB/s (checksum {check:x})",
        rates[rates.len() / 2],
        rates[rates.len() - 1]
    );
}
