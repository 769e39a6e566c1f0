//! The key/value cache: per layer, one key row and one value row per position.

use half::f16;

use crate::quant::blocks::BlockQ8_0;
use crate::quant::types::QK;

/// Element type of the KV cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u32)]
pub enum KvType {
    /// Half the memory of f32, and what llama.cpp uses by default.
    #[default]
    F16 = 0,
    F32 = 1,
    /// 8-bit blocks of 32 with an f16 scale (llama.cpp's `-ctk q8_0 -ctv q8_0`): 53% of
    /// f16's memory. Needs head sizes that are multiples of 32, so that every head starts
    /// a block.
    Q8_0 = 2,
}

impl KvType {
    /// Bytes of one cached row of `dim` values (`dim` a multiple of 32 for Q8_0).
    pub fn row_bytes(self, dim: usize) -> usize {
        match self {
            KvType::F16 => 2 * dim,
            KvType::F32 => 4 * dim,
            KvType::Q8_0 => dim / QK * std::mem::size_of::<BlockQ8_0>(),
        }
    }

    /// The name llama.cpp's `-ctk`/`-ctv` use.
    pub fn name(self) -> &'static str {
        match self {
            KvType::F16 => "f16",
            KvType::F32 => "f32",
            KvType::Q8_0 => "q8_0",
        }
    }
}

impl std::str::FromStr for KvType {
    type Err = String;

    fn from_str(s: &str) -> Result<KvType, String> {
        [KvType::F16, KvType::F32, KvType::Q8_0]
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown KV cache type '{s}' (f16, f32, q8_0)"))
    }
}

/// Rounds `x` (a multiple of 32 values) into Q8_0 blocks as llama.cpp's quantize_row_q8_0
/// does: the scale is max|x|/127, stored in f16, and values are rounded with the exact
/// reciprocal so that the largest lands on ±127.
fn quantize_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    for (b, xs) in out.iter_mut().zip(x.chunks_exact(QK)) {
        let amax = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f16::from_f32(d);
        for (q, &v) in b.qs.iter_mut().zip(xs) {
            *q = (v * id).round() as i8;
        }
    }
}

/// Widens Q8_0 blocks into `out`.
fn dequantize_q8_0(blocks: &[BlockQ8_0], out: &mut [f32]) {
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        for (o, &q) in o.iter_mut().zip(&b.qs) {
            *o = d * f32::from(q);
        }
    }
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
    /// `len / 32` blocks; a row of `dim` values is `dim / 32` consecutive blocks.
    Q8_0(Vec<BlockQ8_0>),
}

impl KvBuf {
    fn new(ty: KvType, len: usize) -> KvBuf {
        match ty {
            KvType::F16 => KvBuf::F16(vec![f16::ZERO; len]),
            KvType::F32 => KvBuf::F32(vec![0.0; len]),
            KvType::Q8_0 => KvBuf::Q8_0(vec![
                BlockQ8_0 {
                    d: f16::ZERO,
                    qs: [0; QK]
                };
                len / QK
            ]),
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
            KvBuf::Q8_0(b) => {
                let at = pos * dim / QK;
                quantize_q8_0(rows, &mut b[at..at + rows.len() / QK]);
            }
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
            KvBuf::Q8_0(b) => dequantize_q8_0(&b[pos * dim / QK..(pos + 1) * dim / QK], out),
        }
    }

    /// The raw bytes (for saving state).
    pub fn bytes(&self) -> &[u8] {
        match self {
            KvBuf::F16(b) => bytemuck::cast_slice(b),
            KvBuf::F32(b) => bytemuck::cast_slice(b),
            KvBuf::Q8_0(b) => bytemuck::cast_slice(b),
        }
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            KvBuf::F16(b) => bytemuck::cast_slice_mut(b),
            KvBuf::F32(b) => bytemuck::cast_slice_mut(b),
            KvBuf::Q8_0(b) => bytemuck::cast_slice_mut(b),
        }
    }

    /// Moves rows `src..src+n` to `dst..dst+n` (used by the context shift).
    pub fn move_rows(&mut self, dim: usize, src: usize, dst: usize, n: usize) {
        match self {
            KvBuf::F16(b) => b.copy_within(src * dim..(src + n) * dim, dst * dim),
            KvBuf::F32(b) => b.copy_within(src * dim..(src + n) * dim, dst * dim),
            KvBuf::Q8_0(b) => {
                let (src, dst, n) = (src * dim / QK, dst * dim / QK, n * dim / QK);
                b.copy_within(src..src + n, dst)
            }
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
