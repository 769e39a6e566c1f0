//! The model's tensors, looked up by name, checked against the configuration, and kept as
//! references into the file (never copied).

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, TensorInfo};
use crate::kernels::{ActFormat, Matrix};
use crate::quant::GgmlType;

use super::config::{Arch, ModelConfig};

/// A 2-D weight matrix in place in the file.
#[derive(Clone, Copy, Debug)]
pub struct MatRef {
    pub ty: GgmlType,
    /// Elements per row (ggml ne0): the input width of the product.
    pub cols: usize,
    /// Number of rows: the output width of the product.
    pub rows: usize,
    offset: usize,
    size: usize,
}

impl MatRef {
    pub fn matrix<'a>(&self, file: &'a [u8]) -> Matrix<'a> {
        Matrix {
            ty: self.ty,
            rows: self.rows,
            cols: self.cols,
            data: &file[self.offset..self.offset + self.size],
        }
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.cols / self.ty.block_size() * self.ty.type_size()
    }

    /// The bytes of row `r` (caller checks `r < rows`).
    pub fn row<'a>(&self, file: &'a [u8], r: usize) -> &'a [u8] {
        let rb = self.row_bytes();
        &file[self.offset + r * rb..self.offset + (r + 1) * rb]
    }
}

/// A 1-D f32 weight (norm scales, biases): in place when the file stores it as aligned
/// F32, converted once at load otherwise (these are a few KiB).
#[derive(Clone, Debug)]
pub enum VecRef {
    Mapped { offset: usize, len: usize },
    Owned(Vec<f32>),
}

impl VecRef {
    pub fn get<'a>(&'a self, file: &'a [u8]) -> &'a [f32] {
        match self {
            VecRef::Mapped { offset, len } => {
                bytemuck::try_cast_slice(&file[*offset..*offset + len * 4]).unwrap_or(&[])
            }
            VecRef::Owned(v) => v,
        }
    }
}

/// The weights of one transformer block.
#[derive(Clone, Debug)]
pub struct LayerWeights {
    pub attn_norm: VecRef,
    pub wq: MatRef,
    pub wk: MatRef,
    pub wv: MatRef,
    pub wo: MatRef,
    pub bq: Option<VecRef>,
    pub bk: Option<VecRef>,
    pub bv: Option<VecRef>,
    pub q_norm: Option<VecRef>,
    pub k_norm: Option<VecRef>,
    pub attn_post_norm: Option<VecRef>,
    pub ffn_norm: VecRef,
    pub ffn_gate: MatRef,
    pub ffn_up: MatRef,
    pub ffn_down: MatRef,
    pub ffn_post_norm: Option<VecRef>,
}

/// All weights of a model.
#[derive(Clone, Debug)]
pub struct Weights {
    pub tok_embd: MatRef,
    pub output_norm: VecRef,
    /// The output projection (the token embedding when tied).
    pub output: MatRef,
    pub tied_output: bool,
    /// Per-dimension RoPE frequency divisors (llama 3.1 style), if present.
    pub rope_freqs: Option<VecRef>,
    pub layers: Vec<LayerWeights>,
}

struct Loader<'a> {
    file: &'a GgufFile,
}

impl<'a> Loader<'a> {
    fn info(&self, name: &str) -> Result<&'a TensorInfo> {
        self.file
            .tensor(name)
            .ok_or_else(|| Error::tensor(name, "missing from the model file"))
    }

    fn mat(&self, name: &str, cols: usize, rows: usize) -> Result<MatRef> {
        let t = self.info(name)?;
        let shape = t.shape();
        let ok = shape.len() == 2 && shape[0] == cols as u64 && shape[1] == rows as u64;
        if !ok {
            return Err(Error::tensor(
                name,
                format!("shape {shape:?}, expected [{cols}, {rows}]"),
            ));
        }
        ActFormat::for_weight(t.ty).map_err(|_| {
            Error::tensor(
                name,
                format!("type {} is not supported for matrix products", t.ty),
            )
        })?;
        let act_block = match ActFormat::for_weight(t.ty)? {
            ActFormat::Q8K => 256,
            ActFormat::Q8_0 | ActFormat::Q8_1 => 32,
            ActFormat::F32 => 1,
        };
        if cols % act_block != 0 {
            return Err(Error::tensor(
                name,
                format!(
                    "row length {cols} is not a multiple of {act_block} as {} needs",
                    t.ty
                ),
            ));
        }
        Ok(MatRef {
            ty: t.ty,
            cols,
            rows,
            offset: t.offset as usize,
            size: t.size as usize,
        })
    }

    fn vec(&self, name: &str, len: usize) -> Result<VecRef> {
        let t = self.info(name)?;
        if t.n_elements() != len as u64 || t.shape()[0] != len as u64 {
            return Err(Error::tensor(
                name,
                format!("shape {:?}, expected [{len}]", t.shape()),
            ));
        }
        let data = self.file.tensor_data(t);
        if t.ty == GgmlType::F32 && bytemuck::try_cast_slice::<u8, f32>(data).is_ok() {
            return Ok(VecRef::Mapped {
                offset: t.offset as usize,
                len,
            });
        }
        let mut v = vec![0.0f32; len];
        crate::quant::dequantize_row(t.ty, data, &mut v).map_err(|e| Error::tensor(name, e))?;
        Ok(VecRef::Owned(v))
    }

    fn vec_opt(&self, name: &str, len: usize) -> Result<Option<VecRef>> {
        if self.file.tensor(name).is_some() {
            self.vec(name, len).map(Some)
        } else {
            Ok(None)
        }
    }
}

impl Weights {
    pub fn load(file: &GgufFile, c: &ModelConfig) -> Result<Weights> {
        let l = Loader { file };
        let tok_embd = l.mat("token_embd.weight", c.n_embd, c.n_vocab)?;
        if !tok_embd.ty.is_supported() {
            return Err(Error::tensor(
                "token_embd.weight",
                format!("type {} is not supported", tok_embd.ty),
            ));
        }
        let (output, tied_output) = if file.tensor("output.weight").is_some() {
            (l.mat("output.weight", c.n_embd, c.n_vocab)?, false)
        } else {
            (tok_embd, true)
        };
        let output_norm = l.vec("output_norm.weight", c.n_embd)?;
        let rope_freqs = l.vec_opt("rope_freqs.weight", c.rope.n_dims / 2)?;
        let q_dim = c.n_head * c.head_dim;
        let o_dim = c.n_head * c.head_dim_v;
        let mut layers = Vec::with_capacity(c.n_layer);
        for i in 0..c.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}");
            let gemma = c.arch == Arch::Gemma3;
            let qwen = c.arch == Arch::Qwen2;
            let layer = LayerWeights {
                attn_norm: l.vec(&n("attn_norm.weight"), c.n_embd)?,
                wq: l.mat(&n("attn_q.weight"), c.n_embd, q_dim)?,
                wk: l.mat(&n("attn_k.weight"), c.n_embd, c.kv_dim())?,
                wv: l.mat(&n("attn_v.weight"), c.n_embd, c.kv_dim_v())?,
                wo: l.mat(&n("attn_output.weight"), o_dim, c.n_embd)?,
                bq: if qwen {
                    Some(l.vec(&n("attn_q.bias"), q_dim)?)
                } else {
                    l.vec_opt(&n("attn_q.bias"), q_dim)?
                },
                bk: if qwen {
                    Some(l.vec(&n("attn_k.bias"), c.kv_dim())?)
                } else {
                    l.vec_opt(&n("attn_k.bias"), c.kv_dim())?
                },
                bv: if qwen {
                    Some(l.vec(&n("attn_v.bias"), c.kv_dim_v())?)
                } else {
                    l.vec_opt(&n("attn_v.bias"), c.kv_dim_v())?
                },
                q_norm: if gemma {
                    Some(l.vec(&n("attn_q_norm.weight"), c.head_dim)?)
                } else {
                    None
                },
                k_norm: if gemma {
                    Some(l.vec(&n("attn_k_norm.weight"), c.head_dim)?)
                } else {
                    None
                },
                attn_post_norm: if gemma {
                    Some(l.vec(&n("post_attention_norm.weight"), c.n_embd)?)
                } else {
                    None
                },
                ffn_norm: l.vec(&n("ffn_norm.weight"), c.n_embd)?,
                ffn_gate: l.mat(&n("ffn_gate.weight"), c.n_embd, c.n_ff)?,
                ffn_up: l.mat(&n("ffn_up.weight"), c.n_embd, c.n_ff)?,
                ffn_down: l.mat(&n("ffn_down.weight"), c.n_ff, c.n_embd)?,
                ffn_post_norm: if gemma {
                    Some(l.vec(&n("post_ffw_norm.weight"), c.n_embd)?)
                } else {
                    None
                },
            };
            layers.push(layer);
        }
        Ok(Weights {
            tok_embd,
            output_norm,
            output,
            tied_output,
            rope_freqs,
            layers,
        })
    }

    /// Every matrix, for sizing scratch buffers.
    pub fn matrices(&self) -> impl Iterator<Item = &MatRef> {
        [&self.tok_embd, &self.output]
            .into_iter()
            .chain(self.layers.iter().flat_map(|l| {
                [
                    &l.wq,
                    &l.wk,
                    &l.wv,
                    &l.wo,
                    &l.ffn_gate,
                    &l.ffn_up,
                    &l.ffn_down,
                ]
            }))
    }
}
