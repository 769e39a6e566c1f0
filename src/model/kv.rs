//! The key/value cache: per layer, one key row and one value row per position.

use half::f16;

/// Element type of the KV cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u32)]
pub enum KvType {
    /// Half the memory of f32, and what llama.cpp uses by default.
    #[default]
    F16 = 0,
    F32 = 1,
}

/// An element the cache can hold.
pub trait KvElem: Copy + Send + Sync + bytemuck::Pod {
    fn from_f32(v: f32) -> Self;
    fn to_f32(self) -> f32;
}

impl KvElem for f16 {
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

impl KvElem for f32 {
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

/// Storage of one layer's keys or values: `n_ctx` rows of `dim` elements.
pub enum KvBuf {
    F16(Vec<f16>),
    F32(Vec<f32>),
}

impl KvBuf {
    fn new(ty: KvType, len: usize) -> KvBuf {
        match ty {
            KvType::F16 => KvBuf::F16(vec![f16::ZERO; len]),
            KvType::F32 => KvBuf::F32(vec![0.0; len]),
        }
    }

    /// Writes `rows` (consecutive rows of `dim` values) starting at row `pos`.
    pub fn write(&mut self, pos: usize, dim: usize, rows: &[f32]) {
        match self {
            KvBuf::F16(b) => {
                for (o, &v) in b[pos * dim..pos * dim + rows.len()].iter_mut().zip(rows) {
                    *o = f16::from_f32(v);
                }
            }
            KvBuf::F32(b) => b[pos * dim..pos * dim + rows.len()].copy_from_slice(rows),
        }
    }

    /// Reads row `pos` into `out` (`dim` values).
    pub fn read_row(&self, pos: usize, dim: usize, out: &mut [f32]) {
        match self {
            KvBuf::F16(b) => {
                for (o, v) in out.iter_mut().zip(&b[pos * dim..(pos + 1) * dim]) {
                    *o = v.to_f32();
                }
            }
            KvBuf::F32(b) => out[..dim].copy_from_slice(&b[pos * dim..(pos + 1) * dim]),
        }
    }

    /// The raw bytes (for saving state).
    pub fn bytes(&self) -> &[u8] {
        match self {
            KvBuf::F16(b) => bytemuck::cast_slice(b),
            KvBuf::F32(b) => bytemuck::cast_slice(b),
        }
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            KvBuf::F16(b) => bytemuck::cast_slice_mut(b),
            KvBuf::F32(b) => bytemuck::cast_slice_mut(b),
        }
    }

    /// Moves rows `src..src+n` to `dst..dst+n` (used by the context shift).
    pub fn move_rows(&mut self, dim: usize, src: usize, dst: usize, n: usize) {
        match self {
            KvBuf::F16(b) => b.copy_within(src * dim..(src + n) * dim, dst * dim),
            KvBuf::F32(b) => b.copy_within(src * dim..(src + n) * dim, dst * dim),
        }
    }
}

/// Keys and values of one layer.
pub struct LayerKv {
    pub k: KvBuf,
    pub v: KvBuf,
}

/// The whole cache.
pub struct KvCache {
    pub ty: KvType,
    pub n_ctx: usize,
    pub k_dim: usize,
    pub v_dim: usize,
    pub layers: Vec<LayerKv>,
}

impl KvCache {
    pub fn new(ty: KvType, n_layer: usize, n_ctx: usize, k_dim: usize, v_dim: usize) -> KvCache {
        let layers = (0..n_layer)
            .map(|_| LayerKv {
                k: KvBuf::new(ty, n_ctx * k_dim),
                v: KvBuf::new(ty, n_ctx * v_dim),
            })
            .collect();
        KvCache {
            ty,
            n_ctx,
            k_dim,
            v_dim,
            layers,
        }
    }

    /// Bytes held by the cache.
    pub fn size_bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.k.bytes().len() + l.v.bytes().len())
            .sum()
    }
}
