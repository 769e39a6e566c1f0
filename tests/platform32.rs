//! 32-bit targets (armv7: 32-bit Raspberry Pi OS, armeabi-v7a Android): sizes that fit in
//! a u64 but not in this address space are errors, not panics, aborts or wrapped
//! arithmetic. Compiled only where usize is 32 bits: tools/test-platforms runs it under
//! qemu-arm. (On a 64-bit target the same requests are merely very large allocations, so
//! there is nothing of this kind to test there.)
#![cfg(target_pointer_width = "32")]

mod common;

use std::fs::File;

use ember::{Context, ContextParams, Error, Model, ModelParams};

/// A file one byte past the largest slice a 32-bit process can hold (2 GiB). It is
/// sparse, so it costs no disk; its content never matters, as the size is refused first.
#[test]
fn a_model_file_past_the_address_space_is_an_error() {
    let dir = std::env::temp_dir().join(format!("ember-platform32-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("huge.gguf");
    File::create(&path)
        .and_then(|f| f.set_len(isize::MAX as u64 + 1))
        .unwrap();
    for use_mmap in [true, false] {
        let params = ModelParams {
            use_mmap,
            ..ModelParams::default()
        };
        match Model::load(&path, &params) {
            Err(Error::InvalidArgument(m)) => assert!(m.contains("address space"), "{m}"),
            Err(e) => panic!("use_mmap {use_mmap}: expected the address-space error, got {e}"),
            Ok(_) => panic!("use_mmap {use_mmap}: a {} byte file loaded", isize::MAX),
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// On SmolLM2, the largest n_ctx ember accepts (2^24) needs a 386 GB KV cache, and a
/// context of 2^16 positions in batches of 2^16 needs 1.5 GB of KV cache and 1.8 GB of
/// scratch (3.3 GB: more than 2 GiB; the exact layout of runtime/memory.rs says so, where
/// the earlier, generous count already refused 2^15 × 2^15, which is 1.7 GB and fits):
/// allocated one buffer at a time, the first overflows a usize product (a panic, or a
/// wrap for wider models) and the second exhausts the address space part way (an abort).
#[test]
fn a_context_past_the_address_space_is_an_error() {
    let model = Model::load(common::model("smollm2"), &ModelParams::default()).unwrap();
    for (n_ctx, n_batch) in [(1 << 24, 512), (1 << 16, 1 << 16)] {
        let params = ContextParams {
            n_ctx,
            n_batch,
            n_threads: 1,
            ..ContextParams::default()
        };
        match Context::new(&model, params) {
            Err(Error::InvalidArgument(m)) => assert!(m.contains("can address"), "{m}"),
            Err(e) => panic!("n_ctx {n_ctx}: expected the address-space error, got {e}"),
            Ok(_) => panic!("n_ctx {n_ctx}: a context that cannot fit was made"),
        }
    }
    // A context of the usual size still works.
    let mut ctx = Context::new(&model, ContextParams::default()).unwrap();
    let tokens = model.tokenizer().encode("Hello", true, false).unwrap();
    ctx.decode(&tokens).unwrap();
    assert_eq!(ctx.logits().len(), model.n_vocab());
}
