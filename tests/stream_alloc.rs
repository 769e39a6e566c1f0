//! The streaming decoder must not allocate per token: a generation loop calls it once per
//! generated token. A counting global allocator checks that.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use ember::{GgufFile, StreamDecoder, Tokenizer};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn stream_decoder_does_not_allocate_per_token() {
    for name in ["smollm2", "gemma3"] {
        let tok = Tokenizer::from_gguf(&GgufFile::open(common::model(name)).unwrap()).unwrap();
        let text = "Streaming: héllo 🙂👍🏽 中文 <|im_end|> ".repeat(50);
        let ids = tok.encode(&text, true, true).unwrap();
        let mut d = StreamDecoder::new(true);
        let mut bytes = 0usize;
        let before = ALLOCS.load(Ordering::Relaxed);
        for &t in &ids {
            d.push(&tok, t, |s| bytes += s.len()).unwrap();
            let _ = tok.is_eog(t);
            let _ = tok.token_to_piece(t, false).unwrap();
        }
        d.flush(|s| bytes += s.len());
        let after = ALLOCS.load(Ordering::Relaxed);
        assert_eq!(
            after - before,
            0,
            "{name}: {} allocations over {} tokens",
            after - before,
            ids.len()
        );
        assert!(bytes >= text.len());
    }
}
