//! Quantized block formats: layouts, scalar dequantization, activation quantization, and
//! the IQ4 weight quantizers with the model requantizer built on them.

pub mod blocks;
pub mod dequant;
pub mod iq4;
pub mod kquant;
pub mod quantize;
pub mod requantize;
pub mod types;

pub use blocks::*;
pub use dequant::dequantize_row;
pub use iq4::{quantize_row_iq4_nl, quantize_row_iq4_xs};
pub use kquant::{quantize_row_q4_k, quantize_row_q5_0, quantize_row_q6_k};
pub use quantize::{quantize_row_q8_0, quantize_row_q8_1, quantize_row_q8_k};
pub use types::{GgmlType, QK, QK_K};
