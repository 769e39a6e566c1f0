//! Rewrites a GGUF model with its weight matrices requantized to IQ4_NL or IQ4_XS, as
//! `llama-quantize --allow-requantize IN OUT IQ4_NL` does without an importance matrix:
//! each matrix is dequantized to f32 and quantized again with [`super::iq4`], whose
//! blocks are bit-identical to ggml's. The output depends on nothing but the input (no
//! clock, no thread count, no CPU feature), which is what lets CI rebuild a test model
//! and check it against a recorded checksum.
//!
//! Which tensors change follows llama.cpp's rules for the llama family, simplified:
//! - 2-D `*.weight` matrices other than norms become the target type; a matrix whose rows
//!   are not whole IQ4_XS blocks (256) becomes IQ4_NL, as llama.cpp falls back;
//! - the token embedding and output matrices keep their type (llama.cpp gives them Q6_K,
//!   or Q8_0 when rows are not whole Q6_K blocks, as in SmolLM2);
//! - everything else (norms, biases, 1-D tensors) is copied;
//! - unlike llama.cpp, the first eighth of the `ffn_down` matrices are not promoted to
//!   Q5_K: every matrix exercises the target type.
//!
//! Metadata is copied, with `general.file_type` (llama.cpp's ftype id) and
//! `general.quantization_version` set as llama-quantize sets them.

use std::io::Write;

use bytemuck::Zeroable;

use super::blocks::{BlockIQ4NL, BlockIQ4XS};
use super::dequant::dequantize_row;
use super::iq4::{quantize_row_iq4_nl, quantize_row_iq4_xs};
use super::types::GgmlType;
use crate::error::{Error, Result};
use crate::gguf::{GgufFile, TensorInfo, Value};

/// llama.cpp's `LLAMA_FTYPE_MOSTLY_*` ids for the targets.
fn ftype(target: GgmlType) -> Result<u32> {
    match target {
        GgmlType::IQ4_NL => Ok(25),
        GgmlType::IQ4_XS => Ok(30),
        other => Err(Error::Unsupported(format!(
            "requantizing to {other} (ember quantizes to IQ4_NL and IQ4_XS)"
        ))),
    }
}

/// ggml's GGML_QNT_VERSION, which llama-quantize records.
const QUANTIZATION_VERSION: u32 = 2;

/// One tensor's fate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorPlan {
    pub name: String,
    pub from: GgmlType,
    pub to: GgmlType,
}

/// The type each tensor of `file` gets when the model is requantized to `target`.
pub fn plan(file: &GgufFile, target: GgmlType) -> Result<Vec<TensorPlan>> {
    ftype(target)?;
    Ok(file
        .tensors()
        .iter()
        .map(|t| TensorPlan {
            name: t.name.clone(),
            from: t.ty,
            to: tensor_type(t, target),
        })
        .collect())
}

fn tensor_type(t: &TensorInfo, target: GgmlType) -> GgmlType {
    let n = &t.name;
    let matrix = t.n_dims == 2
        && n.ends_with(".weight")
        && !n.contains("norm")
        && !matches!(n.as_str(), "token_embd.weight" | "output.weight");
    if !matrix {
        return t.ty;
    }
    let cols = t.dims[0];
    if cols % target.block_size() as u64 == 0 {
        target
    } else if cols % GgmlType::IQ4_NL.block_size() as u64 == 0 {
        GgmlType::IQ4_NL
    } else {
        t.ty
    }
}

/// Writes `file` requantized to `target` (IQ4_NL or IQ4_XS) to `out`, converting each
/// matrix on `n_threads` threads. Returns what happened to every tensor.
pub fn requantize(
    file: &GgufFile,
    target: GgmlType,
    n_threads: usize,
    out: &mut dyn Write,
) -> Result<Vec<TensorPlan>> {
    let plans = plan(file, target)?;
    let io = |e: std::io::Error| Error::Io {
        path: "requantized output".into(),
        source: e,
    };
    let align = file.alignment;
    let mut sizes = Vec::with_capacity(plans.len());
    for (t, p) in file.tensors().iter().zip(&plans) {
        let size =
            p.to.row_bytes(t.dims[0])
                .and_then(|rb| rb.checked_mul(t.n_rows()));
        sizes.push(size.ok_or_else(|| Error::tensor(&t.name, "size overflows"))?);
    }
    let header = encode_header(file, &plans, &sizes, target)?;
    out.write_all(&header).map_err(io)?;
    pad(out, header.len() as u64, align).map_err(io)?;
    for ((t, p), &size) in file.tensors().iter().zip(&plans).zip(&sizes) {
        let src = file.tensor_data(t);
        if p.to == t.ty {
            out.write_all(src).map_err(io)?;
        } else {
            let data = convert(t, src, p.to, n_threads)?;
            debug_assert_eq!(data.len() as u64, size);
            out.write_all(&data).map_err(io)?;
        }
        pad(out, size, align).map_err(io)?;
    }
    out.flush().map_err(io)?;
    Ok(plans)
}

fn pad(out: &mut dyn Write, len: u64, align: u64) -> std::io::Result<()> {
    let n = len.next_multiple_of(align) - len;
    out.write_all(&vec![0u8; n as usize])
}

/// Header, metadata and tensor infos of the output, in GGUF v3.
fn encode_header(
    file: &GgufFile,
    plans: &[TensorPlan],
    sizes: &[u64],
    target: GgmlType,
) -> Result<Vec<u8>> {
    let mut h = Vec::new();
    put_u32(&mut h, 0x4655_4747);
    put_u32(&mut h, 3);
    put_u64(&mut h, plans.len() as u64);
    let overrides = [
        ("general.file_type", ftype(target)?),
        ("general.quantization_version", QUANTIZATION_VERSION),
    ];
    let added = overrides.iter().filter(|(k, _)| !file.contains(k)).count();
    put_u64(&mut h, (file.metadata().len() + added) as u64);
    for kv in file.metadata() {
        put_str(&mut h, kv.key.as_bytes());
        match overrides.iter().find(|(k, _)| *k == kv.key) {
            Some(&(_, v)) => put_value(&mut h, file, &Value::U32(v))?,
            None => put_value(&mut h, file, &kv.value)?,
        }
    }
    for (k, v) in overrides.iter().filter(|(k, _)| !file.contains(k)) {
        put_str(&mut h, k.as_bytes());
        put_value(&mut h, file, &Value::U32(*v))?;
    }
    let mut offset = 0u64;
    for ((t, p), size) in file.tensors().iter().zip(plans).zip(sizes) {
        put_str(&mut h, t.name.as_bytes());
        put_u32(&mut h, t.n_dims as u32);
        for &d in t.shape() {
            put_u64(&mut h, d);
        }
        put_u32(&mut h, p.to.id());
        put_u64(&mut h, offset);
        offset += size.next_multiple_of(file.alignment);
    }
    Ok(h)
}

fn put_u32(h: &mut Vec<u8>, v: u32) {
    h.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(h: &mut Vec<u8>, v: u64) {
    h.extend_from_slice(&v.to_le_bytes());
}

fn put_str(h: &mut Vec<u8>, s: &[u8]) {
    put_u64(h, s.len() as u64);
    h.extend_from_slice(s);
}

/// A value's type id and encoding; strings and arrays are copied from the file as they
/// are (arrays keep their element encoding, nested arrays included).
fn put_value(h: &mut Vec<u8>, file: &GgufFile, v: &Value) -> Result<()> {
    put_u32(h, v.value_type() as u32);
    let bytes = file.bytes();
    let span = |start: usize, len: usize| {
        bytes
            .get(start..start.saturating_add(len))
            .ok_or_else(|| Error::gguf("metadata", "a value lies outside the file"))
    };
    match *v {
        Value::U8(x) => h.push(x),
        Value::I8(x) => h.push(x as u8),
        Value::U16(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => put_u32(h, x),
        Value::I32(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::U64(x) => put_u64(h, x),
        Value::I64(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => h.push(x as u8),
        Value::Str(s) => put_str(h, span(s.start, s.len)?),
        Value::Array(a) => {
            put_u32(h, a.elem as u32);
            put_u64(h, a.len as u64);
            h.extend_from_slice(span(a.bytes.start, a.bytes.len)?);
        }
    }
    Ok(())
}

/// Dequantizes and requantizes one tensor, rows split across threads.
fn convert(t: &TensorInfo, src: &[u8], to: GgmlType, n_threads: usize) -> Result<Vec<u8>> {
    let cols = t.dims[0] as usize;
    let rows = t.n_rows() as usize;
    let in_rb = t.ty.row_bytes(cols as u64).unwrap_or(0) as usize;
    let out_rb = cols / to.block_size() * to.type_size();
    if in_rb == 0 || out_rb == 0 || src.len() != rows * in_rb {
        return Err(Error::tensor(&t.name, "no whole rows to requantize"));
    }
    let mut out = vec![0u8; rows * out_rb];
    let per = rows.div_ceil(n_threads.max(1)).max(1);
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = out
            .chunks_mut(per * out_rb)
            .zip(src.chunks(per * in_rb))
            .map(|(o, i)| s.spawn(move || convert_rows(t, i, in_rb, o, out_rb, cols, to)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    results.into_iter().collect::<Result<()>>()?;
    Ok(out)
}

fn convert_rows(
    t: &TensorInfo,
    src: &[u8],
    in_rb: usize,
    out: &mut [u8],
    out_rb: usize,
    cols: usize,
    to: GgmlType,
) -> Result<()> {
    let mut x = vec![0f32; cols];
    let mut nl = vec![BlockIQ4NL::zeroed(); cols / 32];
    let mut xs = vec![BlockIQ4XS::zeroed(); cols / 256];
    for (i, o) in src.chunks_exact(in_rb).zip(out.chunks_exact_mut(out_rb)) {
        dequantize_row(t.ty, i, &mut x).map_err(|e| Error::tensor(&t.name, e))?;
        if to == GgmlType::IQ4_NL {
            quantize_row_iq4_nl(&x, &mut nl);
            o.copy_from_slice(bytemuck::cast_slice(&nl));
        } else {
            quantize_row_iq4_xs(&x, &mut xs);
            o.copy_from_slice(bytemuck::cast_slice(&xs));
        }
    }
    Ok(())
}
