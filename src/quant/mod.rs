//! Quantized block formats: layouts, scalar dequantization, and activation quantization.

pub mod blocks;
pub mod dequant;
pub mod quantize;
pub mod types;

pub use blocks::*;
pub use dequant::dequantize_row;
pub use quantize::{quantize_row_q8_0, quantize_row_q8_1, quantize_row_q8_k};
pub use types::{GgmlType, QK, QK_K};
