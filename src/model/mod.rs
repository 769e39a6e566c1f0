//! Models: configuration, weights in place in the file, and the forward pass.

pub mod attention;
pub mod blocks;
pub mod config;
pub mod family;
pub(crate) mod forward;
pub mod kv;
mod moe;
pub mod observe;
pub mod ops;
pub mod weights;

// The families, one file each (registered in family.rs).
mod gemma;
mod llama;
mod olmoe;
mod phi3;
mod qwen;

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

pub use config::{Activation, ModelConfig, MoeConfig};

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, LoadOptions, Storage};
use crate::runtime::ModelMemory;
use crate::tokenizer::Tokenizer;
use forward::WeightFacts;
use ops::RopeTable;
use weights::Weights;

/// How to load a model.
#[derive(Clone, Copy, Debug)]
pub struct ModelParams {
    /// Map the file (default). Off: read it into memory.
    pub use_mmap: bool,
    /// Lock the model's pages in RAM (best effort).
    pub use_mlock: bool,
    /// Ask the OS to start reading the whole mapped file now (`MADV_WILLNEED`), in the
    /// background, so the first tokens do not wait on page faults; off, pages are read
    /// as the weights are first used (`MADV_RANDOM`: no read-ahead past what is needed).
    /// A hint, ignored where there is no `madvise`.
    pub prefetch: bool,
}

impl Default for ModelParams {
    fn default() -> Self {
        ModelParams {
            use_mmap: true,
            use_mlock: false,
            prefetch: false,
        }
    }
}

pub(crate) struct ModelInner {
    pub file: GgufFile,
    pub config: ModelConfig,
    pub weights: Weights,
    pub rope: RopeTable,
    pub rope_swa: RopeTable,
    /// What the scratch sizes depend on in the weights.
    pub facts: WeightFacts,
    /// Identifies the model for saved states.
    pub fingerprint: u64,
    pub tokenizer: Tokenizer,
}

impl ModelInner {
    /// Heap bytes of everything but the file's bytes (when those are on the heap).
    fn heap_bytes_besides_file(&self) -> u64 {
        let n = size_of::<ModelInner>()
            + self.file.heap_bytes()
            + self.tokenizer.heap_bytes()
            + crate::heap::vec_bytes(&self.weights.layers);
        n as u64
    }

    /// The RoPE frequency factors a context of `n_ctx` positions uses, if any.
    pub fn freq_factors(&self, n_ctx: usize) -> Option<&[f32]> {
        let file = self.file.bytes();
        self.weights
            .freq_factors
            .for_ctx(n_ctx)
            .map(|f| f.get(file))
    }
}

/// A loaded model: immutable, cheap to clone, `Send + Sync`, shared by any number of
/// contexts (each clone is a reference to the same weights).
#[derive(Clone)]
pub struct Model {
    pub(crate) inner: Arc<ModelInner>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("arch", &self.inner.config.arch_name)
            .field("n_layer", &self.inner.config.n_layer)
            .finish()
    }
}

/// Progress callback: receives a fraction in [0, 1]; returning false cancels the load.
pub type Progress<'a> = &'a mut dyn FnMut(f32) -> bool;

impl Model {
    /// Loads a GGUF model from `path`.
    pub fn load(path: impl AsRef<Path>, params: &ModelParams) -> Result<Model> {
        Model::load_with_progress(path, params, &mut |_| true)
    }

    /// Loads a model, reporting progress; the callback can cancel by returning false.
    pub fn load_with_progress(
        path: impl AsRef<Path>,
        params: &ModelParams,
        progress: Progress<'_>,
    ) -> Result<Model> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| Error::io(path.display(), e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io(path.display(), e))?
            .len();
        Model::load_from_file(&file, 0, len, params, progress)
    }

    /// Loads a model from `len` bytes of an open file starting at `offset` (an asset inside
    /// an APK or app bundle). The file may be closed once this returns.
    pub fn load_from_file(
        file: &File,
        offset: u64,
        len: u64,
        params: &ModelParams,
        progress: Progress<'_>,
    ) -> Result<Model> {
        let opts = LoadOptions {
            no_mmap: !params.use_mmap,
            mlock: params.use_mlock,
            prefetch: params.prefetch,
        };
        if !progress(0.0) {
            return Err(Error::Aborted);
        }
        let mut storage = Storage::from_file(file, offset, len, opts, "model")?;
        // Block views need the bytes at least 32-byte aligned; a mapping at an odd offset
        // inside a bundle may not be, and then a heap copy is the only safe choice.
        if storage.bytes().as_ptr() as usize % 32 != 0 {
            storage = Storage::from_bytes(storage.bytes());
        }
        if !progress(0.5) {
            return Err(Error::Aborted);
        }
        let gguf = GgufFile::from_storage(storage)?;
        let model = Model::from_gguf(gguf)?;
        if !progress(1.0) {
            return Err(Error::Aborted);
        }
        Ok(model)
    }

    /// What loading the model at `path` with `params` will take, without loading it. The
    /// file is opened by map and parsed as a load does (metadata, tensor index, tokenizer
    /// tables, all counted and dropped again); no tensor data is read, so this costs the
    /// header's pages and a few milliseconds, not the weights.
    pub fn estimate(path: impl AsRef<Path>, params: &ModelParams) -> Result<ModelMemory> {
        let probe = ModelParams {
            use_mmap: true,
            use_mlock: false,
            prefetch: false,
        };
        let m = Model::load(path, &probe)?;
        let file = m.inner.file.file_size();
        let own = m.inner.heap_bytes_besides_file();
        // A load without mmap reads the file into u64 words; one that cannot map falls
        // back to that too, which the probe would show as an unmapped file.
        Ok(if params.use_mmap && m.inner.file.is_mapped() {
            ModelMemory {
                mapped_bytes: file,
                heap_bytes: own,
            }
        } else {
            ModelMemory {
                mapped_bytes: 0,
                heap_bytes: own + file.div_ceil(8) * 8,
            }
        })
    }

    /// What this loaded model takes: the bytes mapped and what it holds on the heap.
    pub fn memory(&self) -> ModelMemory {
        let file = &self.inner.file;
        ModelMemory {
            mapped_bytes: if file.is_mapped() {
                file.file_size()
            } else {
                0
            },
            heap_bytes: self.inner.heap_bytes_besides_file() + file.heap_bytes_of_storage(),
        }
    }

    /// Builds a model from an opened GGUF file.
    pub fn from_gguf(file: GgufFile) -> Result<Model> {
        let config = ModelConfig::from_gguf(&file)?;
        let weights = Weights::load(&file, &config, family::find(&config.arch_name)?)?;
        let facts = WeightFacts::of(&weights)?;
        ops::warm_up();
        let fingerprint = fingerprint(&file);
        let tokenizer = Tokenizer::from_gguf(&file)?;
        if tokenizer.n_vocab() != config.n_vocab {
            return Err(Error::meta(
                "tokenizer.ggml.tokens",
                format!(
                    "{} tokens, but the model's output has {} rows",
                    tokenizer.n_vocab(),
                    config.n_vocab
                ),
            ));
        }
        Ok(Model {
            inner: Arc::new(ModelInner {
                rope: RopeTable::new(config.rope),
                rope_swa: RopeTable::new(config.rope_swa),
                file,
                config,
                weights,
                facts,
                fingerprint,
                tokenizer,
            }),
        })
    }

    /// The model's tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.inner.tokenizer
    }

    pub fn config(&self) -> &ModelConfig {
        &self.inner.config
    }

    /// The underlying GGUF file (metadata access).
    pub fn gguf(&self) -> &GgufFile {
        &self.inner.file
    }

    pub fn n_vocab(&self) -> usize {
        self.inner.config.n_vocab
    }

    pub fn n_ctx_train(&self) -> usize {
        self.inner.config.n_ctx_train
    }

    /// Total number of weights.
    pub fn n_params(&self) -> u64 {
        self.inner
            .file
            .tensors()
            .iter()
            .map(|t| t.n_elements())
            .sum()
    }

    /// Bytes of tensor data.
    pub fn size_bytes(&self) -> u64 {
        self.inner.file.tensors().iter().map(|t| t.size).sum()
    }

    /// Any metadata value rendered as a string.
    pub fn meta_str(&self, key: &str) -> Option<String> {
        self.inner.file.value_to_string(key, usize::MAX)
    }

    /// A hash of the file's size and tensor layout: states saved with one model are
    /// refused by another.
    pub fn fingerprint(&self) -> u64 {
        self.inner.fingerprint
    }

    /// The Jinja chat template stored in the file, if any.
    pub fn chat_template(&self) -> Option<&str> {
        self.inner
            .file
            .str_opt("tokenizer.chat_template")
            .ok()
            .flatten()
    }
}

/// Identifies the model a saved state belongs to: the tensor layout, and a sample of every
/// tensor's bytes (its first and last 16), so that two files of one layout but different
/// weights (two fine-tunes of one base model) do not take each other's states. Reading the
/// sample touches two pages per tensor, which loading reads anyway.
fn fingerprint(file: &GgufFile) -> u64 {
    use crate::fnv::{fnv1a, FNV_INIT};
    let mut h = fnv1a(FNV_INIT, &file.file_size().to_le_bytes());
    for t in file.tensors() {
        h = fnv1a(h, t.name.as_bytes());
        h = fnv1a(h, &t.ty.id().to_le_bytes());
        for d in t.shape() {
            h = fnv1a(h, &d.to_le_bytes());
        }
        h = fnv1a(h, &t.offset.to_le_bytes());
        let data = file.tensor_data(t);
        let n = data.len().min(16);
        h = fnv1a(h, &data[..n]);
        h = fnv1a(h, &data[data.len() - n..]);
    }
    h
}

/// Loads a model at `path` with default parameters (shorthand used by examples).
pub fn load(path: impl AsRef<Path>) -> Result<Model> {
    Model::load(path, &ModelParams::default())
}
