//! What a model and a context will cost in memory, known before they exist, so an app on
//! a phone can choose a model, a context length and a KV type that fit.
//!
//! A context allocates its buffers from the same [`ContextLayout`] the estimate counts,
//! so the estimate cannot drift from what [`Context::new`](super::Context::new) does.

use std::path::Path;

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, LoadOptions};
use crate::kernels::Pool;
use crate::model::config::ModelConfig;
use crate::model::family;
use crate::model::forward::{ScratchLens, WeightFacts};
use crate::model::kv::{KvType, LayerKv};
use crate::model::weights::Weights;
use crate::model::Model;

use super::context::ContextParams;

/// Memory a model takes once loaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModelMemory {
    /// Bytes of the file mapped read-only (0 when it is read into the heap instead). The
    /// OS brings these pages in as they are used and may drop them again under memory
    /// pressure (unless locked): file-backed, not anonymous, memory.
    pub mapped_bytes: u64,
    /// Bytes load allocates on the heap: the metadata and tensor index, the tokenizer
    /// tables, and the whole file when it is not mapped.
    pub heap_bytes: u64,
}

impl ModelMemory {
    pub fn total(&self) -> u64 {
        self.mapped_bytes + self.heap_bytes
    }
}

/// Memory a context allocates, by part, and the settings that determined it (zeros
/// replaced by the values a context would choose).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContextMemory {
    pub n_ctx: usize,
    pub n_batch: usize,
    pub n_threads: usize,
    /// Keys and values of every layer and position.
    pub kv_bytes: u64,
    /// The forward pass's buffers for one batch, and a row of attention scores per thread.
    pub scratch_bytes: u64,
    /// The logits kept after a decode (one row, or `n_batch` rows with `logits_all`).
    pub logits_bytes: u64,
    /// The token list and the context-shift buffers.
    pub other_bytes: u64,
    /// What the allocator adds to the parts above: each buffer is a heap block with a
    /// small header, and one of a page or more is made of whole pages of its own (counted
    /// as glibc, bionic's scudo and Apple's malloc do it for large blocks: a page more
    /// than the data at most). The KV cache is two blocks per layer, so this is a few
    /// hundred KiB; leaving it out made measured contexts ~0.8% larger than estimated.
    pub overhead_bytes: u64,
}

impl ContextMemory {
    /// Everything the context allocates, allocator overhead included, bar its worker
    /// threads' stacks (the OS commits those as they are used: a few pages each).
    pub fn total(&self) -> u64 {
        self.buffer_bytes() + self.overhead_bytes
    }

    /// The bytes of the buffers themselves (what `Context::size_bytes` counts).
    pub fn buffer_bytes(&self) -> u64 {
        self.kv_bytes + self.scratch_bytes + self.logits_bytes + self.other_bytes
    }
}

/// The allocation granule of large blocks.
const PAGE: u64 = if cfg!(all(target_vendor = "apple", target_arch = "aarch64")) {
    16384
} else {
    4096
};

/// A block's header (two words in glibc).
const BLOCK_HEADER: u64 = 16;

/// What the allocator takes beyond `bytes` for one block of that size.
fn block_overhead(bytes: u64) -> u64 {
    match bytes {
        0 => 0,
        b if b < PAGE => BLOCK_HEADER,
        b => (b + BLOCK_HEADER).div_ceil(PAGE) * PAGE - b,
    }
}

/// The size of every buffer of a context: what [`Context::new`](super::Context::new)
/// allocates and what [`ContextMemory`] counts.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ContextLayout {
    /// The parameters with n_ctx, n_batch and n_threads resolved.
    pub params: ContextParams,
    pub kv_type: KvType,
    pub n_layer: usize,
    pub k_dim: usize,
    pub v_dim: usize,
    pub scratch: ScratchLens,
    pub logits_len: usize,
    pub shift_cs_len: usize,
    pub shift_row_len: usize,
    pub memory: ContextMemory,
}

impl ContextLayout {
    /// Resolves and checks `p` for a model of config `c`, and sizes everything. Sizes are
    /// products of numbers from the model file and the caller; on a 32-bit target (armv7,
    /// where no buffer may pass 2 GiB) such a product could wrap and leave a buffer too
    /// small for the indexing that follows, so every one is checked here, in u64.
    pub fn new(c: &ModelConfig, f: &WeightFacts, p: &ContextParams) -> Result<ContextLayout> {
        let n_ctx = if p.n_ctx == 0 {
            c.n_ctx_train.min(4096)
        } else {
            p.n_ctx
        };
        if n_ctx > 1 << 24 {
            return Err(Error::InvalidArgument(format!(
                "n_ctx {n_ctx} is too large"
            )));
        }
        if p.n_batch == 0 {
            return Err(Error::InvalidArgument("n_batch must be at least 1".into()));
        }
        let n_batch = p.n_batch.min(n_ctx);
        if p.kv_type == KvType::Q8_0 && (c.head_dim % 32 != 0 || c.head_dim_v % 32 != 0) {
            return Err(Error::InvalidArgument(format!(
                "a q8_0 KV cache needs head sizes that are multiples of 32; this model's are {} \
                 (keys) and {} (values): use f16",
                c.head_dim, c.head_dim_v
            )));
        }
        let n_threads = Pool::resolve_threads(p.n_threads)?;
        let params = ContextParams {
            n_ctx,
            n_batch,
            n_threads,
            ..*p
        };
        let n_out_rows = if p.logits_all { n_batch } else { 1 };
        let too_big = |total: Option<u64>| {
            Error::InvalidArgument(format!(
                "a context of {n_ctx} positions and batches of {n_batch} needs more memory \
                 ({}) than this {}-bit process can address",
                total.map_or_else(|| "over 2^64 bytes".to_string(), |t| format!("{t} bytes")),
                usize::BITS
            ))
        };
        let scratch = ScratchLens::new(c, f, n_batch, n_ctx, n_threads).ok_or(too_big(None))?;
        let logits_len = n_out_rows.checked_mul(c.n_vocab).ok_or(too_big(None))?;
        let shift_cs_len = c.rope.n_dims.max(c.rope_swa.n_dims);
        let mul = |xs: &[u64]| xs.iter().try_fold(1u64, |acc, &x| acc.checked_mul(x));
        let n = |x: usize| x as u64;
        // Bytes of one cached row: the dimensions are checked products, so a row's bytes are
        // computed in u64 here, not with KvType::row_bytes's usize.
        let row = |dim: usize| match p.kv_type {
            KvType::F16 => n(dim).checked_mul(2),
            KvType::F32 => n(dim).checked_mul(4),
            KvType::Q8_0 => n(dim / 32).checked_mul(n(KvType::Q8_0.row_bytes(32))),
        };
        let (k_row, v_row) = (row(c.kv_dim()), row(c.kv_dim_v()));
        let kv_width = k_row.zip(v_row).and_then(|(k, v)| k.checked_add(v));
        let kv_bytes = kv_width.and_then(|w| mul(&[n(c.n_layer), n(n_ctx), w]));
        let other = mul(&[n(n_ctx), 4]).and_then(|tokens| {
            let shift = mul(&[n(shift_cs_len) + n(c.kv_dim()), 4])?;
            let layers = mul(&[n(c.n_layer), n(size_of::<LayerKv>())])?;
            tokens.checked_add(shift)?.checked_add(layers)
        });
        let parts = [kv_bytes, scratch.bytes(), mul(&[n(logits_len), 4]), other];
        let total = parts.iter().try_fold(0u64, |acc, x| acc.checked_add((*x)?));
        let [Some(kv_bytes), Some(scratch_bytes), Some(logits_bytes), Some(other_bytes)] = parts
        else {
            return Err(too_big(total));
        };
        match total {
            Some(t) if t <= isize::MAX as u64 => {}
            _ => return Err(too_big(total)),
        }
        // Within isize::MAX bytes in all, none of these products can overflow.
        let k_block = n(n_ctx) * k_row.unwrap_or(0);
        let v_block = n(n_ctx) * v_row.unwrap_or(0);
        let per_layer = block_overhead(k_block) + block_overhead(v_block);
        let others = [
            n(c.n_layer) * n(size_of::<LayerKv>()),
            4 * n(logits_len),
            4 * n(n_ctx),
            4 * n(shift_cs_len),
            4 * n(c.kv_dim()),
        ];
        let overhead_bytes = n(c.n_layer).saturating_mul(per_layer)
            + scratch.blocks().map(block_overhead).sum::<u64>()
            + others.into_iter().map(block_overhead).sum::<u64>();
        Ok(ContextLayout {
            params,
            kv_type: p.kv_type,
            n_layer: c.n_layer,
            k_dim: c.kv_dim(),
            v_dim: c.kv_dim_v(),
            scratch,
            logits_len,
            shift_cs_len,
            shift_row_len: c.kv_dim(),
            memory: ContextMemory {
                n_ctx,
                n_batch,
                n_threads,
                kv_bytes,
                scratch_bytes,
                logits_bytes,
                other_bytes,
                overhead_bytes,
            },
        })
    }
}

/// What a context for `model` with `params` would allocate. Fails as
/// [`Context::new`](super::Context::new) would for parameters it refuses, except that a
/// `max_bytes` budget is not applied: the estimate is how it is checked.
pub fn context_memory(model: &Model, params: &ContextParams) -> Result<ContextMemory> {
    let m = &model.inner;
    ContextLayout::new(&m.config, &m.facts, params).map(|l| l.memory)
}

/// [`context_memory`] for the model at `path`, without loading it: the file is mapped
/// and only its header is read (metadata and tensor index; no tensor data, no tokenizer).
pub fn context_memory_for_file(
    path: impl AsRef<Path>,
    params: &ContextParams,
) -> Result<ContextMemory> {
    let file = GgufFile::open_with(path, LoadOptions::default())?;
    let config = ModelConfig::from_gguf(&file)?;
    let weights = Weights::load(&file, &config, family::find(&config.arch_name)?)?;
    let facts = WeightFacts::of(&weights)?;
    ContextLayout::new(&config, &facts, params).map(|l| l.memory)
}
