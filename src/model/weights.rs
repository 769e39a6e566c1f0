//! The model's tensors, looked up by name, checked against the configuration, and kept as
//! references into the file (never copied).

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, TensorInfo};
use crate::kernels::{ActFormat, Matrix};
use crate::quant::GgmlType;

use super::blocks::LayerWeights;
use super::config::ModelConfig;
use super::family::Family;

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

/// RoPE frequency divisors per dimension pair.
#[derive(Clone, Debug)]
pub enum FreqFactors {
    None,
    /// One set for every context (llama 3's `rope_freqs`).
    Fixed(VecRef),
    /// LongRoPE (phi3): the short factors while the context fits the original training
    /// length, the long ones beyond it, chosen per context as llama.cpp does.
    ByContext {
        short: VecRef,
        long: VecRef,
        orig_ctx: usize,
    },
}

impl FreqFactors {
    /// The factors a context of `n_ctx` positions uses.
    pub fn for_ctx(&self, n_ctx: usize) -> Option<&VecRef> {
        match self {
            FreqFactors::None => None,
            FreqFactors::Fixed(f) => Some(f),
            FreqFactors::ByContext {
                short,
                long,
                orig_ctx,
            } => Some(if n_ctx > *orig_ctx { long } else { short }),
        }
    }
}

/// All weights of a model.
#[derive(Clone, Debug)]
pub struct Weights {
    pub tok_embd: MatRef,
    pub output_norm: VecRef,
    /// The output projection (the token embedding when tied).
    pub output: MatRef,
    pub tied_output: bool,
    pub freq_factors: FreqFactors,
    pub layers: Vec<LayerWeights>,
}

/// The experts of one MoE projection: a 3-D tensor viewed in place, one matrix per expert.
#[derive(Clone, Copy, Debug)]
pub struct Experts {
    /// Expert 0; expert `e` is the same shape `e * stride` bytes further on.
    pub first: MatRef,
    pub count: usize,
    stride: usize,
}

impl Experts {
    pub fn matrix<'a>(&self, file: &'a [u8], e: usize) -> Matrix<'a> {
        let m = MatRef {
            offset: self.first.offset + e * self.stride,
            ..self.first
        };
        m.matrix(file)
    }
}

pub struct Loader<'a> {
    file: &'a GgufFile,
}

impl<'a> Loader<'a> {
    pub fn new(file: &'a GgufFile) -> Loader<'a> {
        Loader { file }
    }

    pub fn file(&self) -> &'a GgufFile {
        self.file
    }

    pub fn has(&self, name: &str) -> bool {
        self.file.tensor(name).is_some()
    }

    fn info(&self, name: &str) -> Result<&'a TensorInfo> {
        self.file
            .tensor(name)
            .ok_or_else(|| Error::tensor(name, "missing from the model file"))
    }

    pub fn mat(&self, name: &str, cols: usize, rows: usize) -> Result<MatRef> {
        self.mat_of(name, &[cols, rows])
    }

    /// The `n` experts of a 3-D tensor of shape [cols, rows, n], viewed in place.
    pub fn experts(&self, name: &str, cols: usize, rows: usize, n: usize) -> Result<Experts> {
        let first = self.mat_of(name, &[cols, rows, n])?;
        let stride = rows * first.row_bytes();
        Ok(Experts {
            first: MatRef {
                size: stride,
                ..first
            },
            count: n,
            stride,
        })
    }

    fn mat_of(&self, name: &str, want: &[usize]) -> Result<MatRef> {
        let t = self.info(name)?;
        let shape = t.shape();
        let ok = shape.len() == want.len() && shape.iter().zip(want).all(|(&a, &b)| a == b as u64);
        if !ok {
            return Err(Error::tensor(
                name,
                format!("shape {shape:?}, expected {want:?}"),
            ));
        }
        let (cols, rows) = (want[0], want[1]);
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

    pub fn vec(&self, name: &str, len: usize) -> Result<VecRef> {
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

    pub fn vec_opt(&self, name: &str, len: usize) -> Result<Option<VecRef>> {
        if self.file.tensor(name).is_some() {
            self.vec(name, len).map(Some)
        } else {
            Ok(None)
        }
    }
}

impl Weights {
    pub fn load(file: &GgufFile, c: &ModelConfig, family: &Family) -> Result<Weights> {
        let l = Loader { file };
        let tok_embd = l.mat("token_embd.weight", c.n_embd, c.n_vocab)?;
        if !tok_embd.ty.is_supported() {
            return Err(Error::tensor(
                "token_embd.weight",
                format!("type {} is not supported", tok_embd.ty),
            ));
        }
        let (output, tied_output) = if l.has("output.weight") {
            (l.mat("output.weight", c.n_embd, c.n_vocab)?, false)
        } else {
            (tok_embd, true)
        };
        let layers = (0..c.n_layer)
            .map(|il| (family.layer)(&l, c, il))
            .collect::<Result<Vec<_>>>()?;
        Ok(Weights {
            tok_embd,
            output_norm: l.vec("output_norm.weight", c.n_embd)?,
            output,
            tied_output,
            freq_factors: (family.freq_factors)(&l, c)?,
            layers,
        })
    }

    /// Every matrix (one per expert tensor), for sizing scratch buffers.
    pub fn matrices(&self) -> impl Iterator<Item = &MatRef> {
        [&self.tok_embd, &self.output]
            .into_iter()
            .chain(self.layers.iter().flat_map(|l| l.matrices()))
    }
}

/// Llama 3's `rope_freqs.weight`, when the file has it: the default for families without
/// factors of their own.
pub fn rope_freqs(l: &Loader<'_>, c: &ModelConfig) -> Result<FreqFactors> {
    Ok(match l.vec_opt("rope_freqs.weight", c.rope.n_dims / 2)? {
        Some(f) => FreqFactors::Fixed(f),
        None => FreqFactors::None,
    })
}
