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
//!
//! Q4_K_M ([`requantize_q4_k_m`]) follows llama.cpp exactly instead, so that the output is
//! the very file `llama-quantize --allow-requantize IN OUT Q4_K_M` writes: its type mix
//! ([`plan_q4_k_m`]), its tensor order (by layer, then name) and its metadata order (the
//! two keys above moved last); ggml's reference quantizers in [`super::kquant`]. A tensor
//! that already has its target type is copied, not requantized, as llama-quantize does.

use std::io::Write;

use bytemuck::Zeroable;

use super::blocks::{BlockIQ4NL, BlockIQ4XS, BlockQ4K, BlockQ5_0, BlockQ6K, BlockQ8_0};
use super::dequant::dequantize_row;
use super::iq4::{quantize_row_iq4_nl, quantize_row_iq4_xs};
use super::kquant::{quantize_row_q4_k, quantize_row_q5_0, quantize_row_q6_k};
use super::quantize::quantize_row_q8_0;
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

/// What llama.cpp's quantizer calls a tensor's category (`tensor_get_category`): the
/// first of these its name matches.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Category {
    Output,
    TokenEmbd,
    AttnQkv,
    AttnKvB,
    AttnV,
    AttnK,
    AttnQ,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Other,
}

fn category(name: &str) -> Category {
    use Category::*;
    let table = [
        ("attn_qkv.weight", AttnQkv),
        ("attn_kv_b.weight", AttnKvB),
        ("attn_v.weight", AttnV),
        ("attn_k.weight", AttnK),
        ("attn_q.weight", AttnQ),
        ("attn_output.weight", AttnOutput),
        ("ffn_up", FfnUp),
        ("ffn_gate", FfnGate),
        ("ffn_down", FfnDown),
    ];
    match name {
        "output.weight" => Output,
        "token_embd.weight" => TokenEmbd,
        _ => table
            .iter()
            .find(|(pat, _)| name.contains(pat))
            .map_or(Other, |&(_, c)| c),
    }
}

/// ggml_n_dims: trailing dimensions of 1 do not count.
fn effective_dims(t: &TensorInfo) -> usize {
    t.shape().iter().rposition(|&d| d > 1).map_or(1, |i| i + 1)
}

/// llama.cpp's `tensor_allows_quantization`, for the tensors of the families ember reads:
/// 2-D and 3-D `*weight` tensors other than norms and expert routers.
fn allows_quantization(t: &TensorInfo) -> bool {
    let n = t.name.as_str();
    effective_dims(t) >= 2
        && n.ends_with("weight")
        && !n.contains("_norm.weight")
        && !n.contains("ffn_gate_inp.weight")
        && !n.contains("ffn_gate_tid2eid.weight")
        && ![
            "altup",
            "laurel",
            "per_layer_model_proj",
            "ssm_conv1d",
            "attn_rel_b.weight",
        ]
        .iter()
        .any(|p| n.contains(p))
        && !matches!(n, "position_embd.weight" | "token_types.weight")
}

/// llama.cpp's `use_more_bits`: the first and last eighth of the layers and every third
/// one between get more bits.
fn use_more_bits(i_layer: i64, n_layers: i64) -> bool {
    i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2
}

/// llama.cpp's `tensor_type_fallback`: a type whose blocks do not divide the rows falls
/// back to a 32-block one, and to F16 if even that does not fit.
fn fallback(cols: u64, ty: GgmlType) -> GgmlType {
    if cols % ty.block_size() as u64 == 0 {
        return ty;
    }
    let to = match ty {
        GgmlType::IQ4_XS => GgmlType::IQ4_NL,
        GgmlType::Q2_K | GgmlType::Q3_K => GgmlType::Q4_0,
        GgmlType::Q4_K => GgmlType::Q5_0,
        GgmlType::Q5_K => GgmlType::Q5_1,
        GgmlType::Q6_K => GgmlType::Q8_0,
        other => other,
    };
    if cols % to.block_size() as u64 == 0 {
        to
    } else {
        GgmlType::F16
    }
}

/// The type each tensor gets from `llama-quantize IN OUT Q4_K_M` without an importance
/// matrix or overrides, in the order llama-quantize writes them (by layer, then name):
/// llama.cpp's `llama_tensor_get_type` with ftype Q4_K_M, whose default is Q4_K, and
/// - the output matrix, or the token embedding when it is also the output (no
///   `output.weight`), gets Q6_K, or Q8_0 when its rows are not whole Q6_K blocks;
/// - attn_v (and fused attn_qkv / attn_kv_b) gets Q6_K in the `use_more_bits` layers,
///   counted in file order over those tensors; with 8 experts, Q8_0;
/// - with 8 experts attn_k gets Q8_0 and attn_output Q5_K (llama.cpp's Q5_K rule for
///   attn_qkv is unreachable: attn_qkv takes the attn_v branch first);
/// - ffn_down (expert stacks included) gets Q6_K in the `use_more_bits` layers, the layer
///   being its ordinal among ffn_down tensors, or the `blk.N` of its name in an MoE model;
/// - norms, routers and 1-D tensors keep their type;
/// - then the shape fallback (Q4_K -> Q5_0, Q6_K -> Q8_0, Q5_K -> Q5_1 when rows are not
///   multiples of 256).
///
/// A tensor that already has its type is copied unchanged, as llama-quantize does.
pub fn plan_q4_k_m(file: &GgufFile) -> Result<Vec<TensorPlan>> {
    let arch = file.str("general.architecture")?.to_string();
    let n_layer = file.u32(&format!("{arch}.block_count"))? as i64;
    let n_expert = file
        .u32_opt(&format!("{arch}.expert_count"))?
        .unwrap_or(0)
        .max(1);
    // llama.cpp's loader keeps tensors in a map ordered by layer (-1 outside blk.N), then
    // name: it quantizes and writes them in that order, and the counters below follow it.
    let mut tensors: Vec<&TensorInfo> = file.tensors().iter().collect();
    tensors.sort_by_key(|t| (layer_of(&t.name).unwrap_or(-1), t.name.as_bytes()));
    let cats: Vec<Category> = tensors.iter().map(|t| category(&t.name)).collect();
    let is_attn_v =
        |c: Category| matches!(c, Category::AttnV | Category::AttnQkv | Category::AttnKvB);
    let n_attention_wv = cats.iter().filter(|&&c| is_attn_v(c)).count() as i64;
    let tied = !cats.contains(&Category::Output);
    let (mut i_attention_wv, mut i_ffn_down) = (0i64, 0i64);
    let mut plans = Vec::with_capacity(cats.len());
    for (t, &cat) in tensors.iter().zip(&cats) {
        let mut to = t.ty;
        if allows_quantization(t) {
            let cols = t.dims[0];
            to = GgmlType::Q4_K;
            if cat == Category::Output || (tied && cat == Category::TokenEmbd) {
                to = if cols % 256 != 0 {
                    GgmlType::Q8_0
                } else {
                    GgmlType::Q6_K
                };
            } else if is_attn_v(cat) {
                if use_more_bits(i_attention_wv, n_attention_wv) {
                    to = GgmlType::Q6_K;
                }
                if n_expert == 8 {
                    to = GgmlType::Q8_0;
                }
                i_attention_wv += 1;
            } else if cat == Category::AttnK && n_expert == 8 {
                to = GgmlType::Q8_0;
            } else if cat == Category::FfnDown {
                let i_layer = if n_expert > 1 {
                    layer_of(&t.name)?
                } else {
                    i_ffn_down
                };
                if use_more_bits(i_layer, n_layer) {
                    to = GgmlType::Q6_K;
                }
                i_ffn_down += 1;
            } else if cat == Category::AttnOutput && n_expert == 8 {
                to = GgmlType::Q5_K;
            }
            to = fallback(cols, to);
        }
        plans.push(TensorPlan {
            name: t.name.clone(),
            from: t.ty,
            to,
        });
    }
    Ok(plans)
}

/// The N of a `blk.N.` tensor name (what llama.cpp's `sscanf(name, "blk.%d.")` reads).
fn layer_of(name: &str) -> Result<i64> {
    name.strip_prefix("blk.")
        .and_then(|r| r.split('.').next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| Error::tensor(name, "an expert tensor outside a blk.N layer"))
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
    write(
        file,
        plans,
        ftype(target)?,
        KeyOrder::InPlace,
        n_threads,
        out,
    )
}

/// llama.cpp's LLAMA_FTYPE_MOSTLY_Q4_K_M.
const FTYPE_Q4_K_M: u32 = 15;

/// Writes `file` requantized with llama-quantize's Q4_K_M mix (see [`plan_q4_k_m`]).
pub fn requantize_q4_k_m(
    file: &GgufFile,
    n_threads: usize,
    out: &mut dyn Write,
) -> Result<Vec<TensorPlan>> {
    let plans = plan_q4_k_m(file)?;
    write(
        file,
        plans,
        FTYPE_Q4_K_M,
        KeyOrder::Appended,
        n_threads,
        out,
    )
}

fn write(
    file: &GgufFile,
    plans: Vec<TensorPlan>,
    ftype: u32,
    order: KeyOrder,
    n_threads: usize,
    out: &mut dyn Write,
) -> Result<Vec<TensorPlan>> {
    let io = |e: std::io::Error| Error::Io {
        path: "requantized output".into(),
        source: e,
    };
    let align = file.alignment;
    let mut sizes = Vec::with_capacity(plans.len());
    let tensors = output_tensors(file, &plans)?;
    for (t, p) in tensors.iter().zip(&plans) {
        let size =
            p.to.row_bytes(t.dims[0])
                .and_then(|rb| rb.checked_mul(t.n_rows()));
        sizes.push(size.ok_or_else(|| Error::tensor(&t.name, "size overflows"))?);
    }
    let header = encode_header(file, &plans, &sizes, ftype, order)?;
    out.write_all(&header).map_err(io)?;
    pad(out, header.len() as u64, align).map_err(io)?;
    for ((t, p), &size) in tensors.iter().zip(&plans).zip(&sizes) {
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

/// The tensors of `file` in the order of `plans` (the output's order).
fn output_tensors<'a>(file: &'a GgufFile, plans: &[TensorPlan]) -> Result<Vec<&'a TensorInfo>> {
    plans
        .iter()
        .map(|p| {
            file.tensor(&p.name)
                .ok_or_else(|| Error::tensor(&p.name, "planned but not in the file"))
        })
        .collect()
}

fn pad(out: &mut dyn Write, len: u64, align: u64) -> std::io::Result<()> {
    let n = len.next_multiple_of(align) - len;
    out.write_all(&vec![0u8; n as usize])
}

/// Where the output's `general.file_type` and `general.quantization_version` go.
#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyOrder {
    /// Where the input has them (appended if it has not).
    InPlace,
    /// Last, as llama-quantize writes them.
    Appended,
}

/// Header, metadata and tensor infos of the output, in GGUF v3.
fn encode_header(
    file: &GgufFile,
    plans: &[TensorPlan],
    sizes: &[u64],
    ftype: u32,
    order: KeyOrder,
) -> Result<Vec<u8>> {
    let mut h = Vec::new();
    put_u32(&mut h, 0x4655_4747);
    put_u32(&mut h, 3);
    put_u64(&mut h, plans.len() as u64);
    // llama-quantize's gguf_set_val removes a key and appends it: quantization_version
    // then file_type come last. The IQ4 files keep them in place, as their recorded
    // checksums (and the fixtures made from those files) were made that way.
    let overrides = [
        ("general.quantization_version", QUANTIZATION_VERSION),
        ("general.file_type", ftype),
    ];
    let present = overrides.iter().filter(|(k, _)| file.contains(k)).count();
    let n_kv = file.metadata().len() - present + overrides.len();
    put_u64(&mut h, n_kv as u64);
    for kv in file.metadata() {
        match overrides.iter().find(|(k, _)| *k == kv.key) {
            Some(_) if order == KeyOrder::Appended => {}
            Some(&(_, v)) => {
                put_str(&mut h, kv.key.as_bytes());
                put_value(&mut h, file, &Value::U32(v))?;
            }
            None => {
                put_str(&mut h, kv.key.as_bytes());
                put_value(&mut h, file, &kv.value)?;
            }
        }
    }
    for (k, v) in overrides.iter() {
        if order == KeyOrder::Appended || !file.contains(k) {
            put_str(&mut h, k.as_bytes());
            put_value(&mut h, file, &Value::U32(*v))?;
        }
    }
    let mut offset = 0u64;
    for ((t, p), size) in output_tensors(file, plans)?.iter().zip(plans).zip(sizes) {
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
    for (i, o) in src.chunks_exact(in_rb).zip(out.chunks_exact_mut(out_rb)) {
        dequantize_row(t.ty, i, &mut x).map_err(|e| Error::tensor(&t.name, e))?;
        quantize_row(to, &x, o).map_err(|e| Error::tensor(&t.name, e))?;
    }
    Ok(())
}

/// Quantizes one row `x` to `to`, writing the blocks' bytes to `out`.
fn quantize_row(to: GgmlType, x: &[f32], out: &mut [u8]) -> std::result::Result<(), String> {
    fn blocks<B: bytemuck::Pod + Zeroable>(
        x: &[f32],
        out: &mut [u8],
        block: usize,
        f: fn(&[f32], &mut [B]),
    ) {
        let mut b = vec![B::zeroed(); x.len() / block];
        f(x, &mut b);
        out.copy_from_slice(bytemuck::cast_slice(&b));
    }
    match to {
        GgmlType::IQ4_NL => blocks::<BlockIQ4NL>(x, out, 32, quantize_row_iq4_nl),
        GgmlType::IQ4_XS => blocks::<BlockIQ4XS>(x, out, 256, quantize_row_iq4_xs),
        GgmlType::Q4_K => blocks::<BlockQ4K>(x, out, 256, quantize_row_q4_k),
        GgmlType::Q6_K => blocks::<BlockQ6K>(x, out, 256, quantize_row_q6_k),
        GgmlType::Q5_0 => blocks::<BlockQ5_0>(x, out, 32, quantize_row_q5_0),
        GgmlType::Q8_0 => blocks::<BlockQ8_0>(x, out, 32, quantize_row_q8_0),
        GgmlType::F32 => out.copy_from_slice(bytemuck::cast_slice(x)),
        GgmlType::F16 => {
            for (o, &v) in out.chunks_exact_mut(2).zip(x) {
                o.copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
            }
        }
        other => return Err(format!("ember cannot quantize to {other}")),
    }
    Ok(())
}
