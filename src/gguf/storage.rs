//! Where a model's bytes live: a read-only memory map (the default, zero-copy) or a heap
//! buffer (when mapping is turned off or impossible).

use std::fs::File;
use std::path::Path;

use memmap2::{Mmap, MmapOptions};

use crate::error::{Error, Result};

/// The bytes of a GGUF file.
pub enum Storage {
    Mapped(Mmap),
    /// u64 words so that every block type (alignment at most 8) can be viewed in place.
    Heap {
        words: Vec<u64>,
        len: usize,
    },
}

/// How to bring a file into memory.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions {
    /// Read the whole file into the heap instead of mapping it.
    pub no_mmap: bool,
    /// Lock the mapped pages in RAM (best effort: failure is ignored, as llama.cpp does).
    pub mlock: bool,
    /// Start reading the whole map in the background (`MADV_WILLNEED`), a hint.
    pub prefetch: bool,
}

impl Storage {
    /// Maps (or reads) `path`.
    pub fn open(path: &Path, opts: LoadOptions) -> Result<Storage> {
        let file = File::open(path).map_err(|e| Error::io(path.display(), e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io(path.display(), e))?
            .len();
        Storage::from_file(&file, 0, len, opts, &path.display().to_string())
    }

    /// Maps (or reads) `len` bytes of an open file starting at `offset`: the form Android
    /// assets and iOS bundles hand out.
    pub fn from_file(
        file: &File,
        offset: u64,
        len: u64,
        opts: LoadOptions,
        what: &str,
    ) -> Result<Storage> {
        let file_len = file.metadata().map_err(|e| Error::io(what, e))?.len();
        let end = offset.checked_add(len).ok_or_else(|| {
            Error::InvalidArgument(format!("offset {offset} + length {len} overflows"))
        })?;
        if end > file_len {
            return Err(Error::InvalidArgument(format!(
                "{what}: offset {offset} + length {len} is past the end of the file ({file_len} bytes)"
            )));
        }
        // No slice may exceed isize::MAX bytes: on 32-bit targets (armv7) that is 2 GiB, so
        // a 3 GiB file passes usize::try_from but still cannot be one mapping or buffer.
        let len_usize = usize::try_from(len)
            .ok()
            .filter(|&n| isize::try_from(n).is_ok())
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "{what}: {len} bytes do not fit in this process's address space"
                ))
            })?;
        if len == 0 {
            return Err(Error::gguf("header", "file is empty"));
        }
        if opts.no_mmap {
            return Storage::read_into_heap(file, offset, len_usize, what);
        }
        // SAFETY: the map is read-only and private to this process. Like every mmap-based
        // loader we assume nobody truncates or rewrites the model file while it is loaded;
        // all parsing goes through bounds-checked slices of the map.
        let map = unsafe { MmapOptions::new().offset(offset).len(len_usize).map(file) };
        match map {
            Ok(map) => {
                // Hints only: a kernel that refuses them loads the model all the same.
                #[cfg(unix)]
                {
                    // Weights are read where the tensors are, not in file order:
                    // read-ahead around each fault would only bring in pages early.
                    let _ = map.advise(memmap2::Advice::Random);
                    if opts.prefetch {
                        let _ = map.advise(memmap2::Advice::WillNeed);
                    }
                }
                if opts.mlock {
                    let _ = map.lock();
                }
                Ok(Storage::Mapped(map))
            }
            // Some file systems cannot be mapped; reading is slower but works.
            Err(_) => Storage::read_into_heap(file, offset, len_usize, what),
        }
    }

    fn read_into_heap(file: &File, offset: u64, len: usize, what: &str) -> Result<Storage> {
        use std::io::{Read, Seek, SeekFrom};
        // This is also the fallback when mapping fails, which on a 32-bit device usually
        // means the address space is full: the allocation must fail as an error, not abort.
        let mut words = Vec::new();
        words
            .try_reserve_exact(len.div_ceil(8))
            .map_err(|_| Error::io(what, std::io::ErrorKind::OutOfMemory.into()))?;
        words.resize(len.div_ceil(8), 0u64);
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
        let mut f = file;
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| Error::io(what, e))?;
        f.read_exact(&mut bytes[..len])
            .map_err(|e| Error::io(what, e))?;
        Ok(Storage::Heap { words, len })
    }

    /// Wraps bytes already in memory (tests, and models embedded in an app binary).
    pub fn from_bytes(data: &[u8]) -> Storage {
        let mut words = vec![0u64; data.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..data.len()].copy_from_slice(data);
        Storage::Heap {
            words,
            len: data.len(),
        }
    }

    /// All bytes of the file.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(m) => m,
            Storage::Heap { words, len } => &bytemuck::cast_slice::<u64, u8>(words)[..*len],
        }
    }

    /// Heap bytes held (the copy, when the file is not mapped).
    pub fn heap_bytes(&self) -> usize {
        match self {
            Storage::Mapped(_) => 0,
            Storage::Heap { words, .. } => crate::heap::vec_bytes(words),
        }
    }

    /// Whether the bytes are a memory map (as opposed to a heap copy).
    pub fn is_mapped(&self) -> bool {
        matches!(self, Storage::Mapped(_))
    }
}
