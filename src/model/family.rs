//! The registry of model families: which `general.architecture` names ember runs, and for
//! each the file (`llama.rs`, `gemma.rs`, ...) that says how its configuration and weights
//! are read and which blocks its layers are made of. Adding a family means adding its file
//! and one line to `FAMILIES`; the forward pass only ever sees block kinds.

use crate::error::{Error, Result};

use super::blocks::LayerWeights;
use super::config::{Hparams, ModelConfig, RopeLayout};
use super::weights::{FreqFactors, Loader};
use super::{gemma, llama, olmoe, phi3, qwen};

/// One family of architectures that share a layer layout.
pub struct Family {
    /// Shown by `ember inspect`.
    pub name: &'static str,
    /// The `general.architecture` values it runs.
    pub archs: &'static [&'static str],
    pub rope_layout: RopeLayout,
    /// Reads what the family adds to the shared hyper-parameters.
    pub configure: fn(&Hparams<'_>, &mut ModelConfig) -> Result<()>,
    /// Reads the weights of layer `il`.
    pub layer: fn(&Loader<'_>, &ModelConfig, usize) -> Result<LayerWeights>,
    /// Reads the RoPE frequency factors, if the family has any.
    pub freq_factors: fn(&Loader<'_>, &ModelConfig) -> Result<FreqFactors>,
}

const FAMILIES: &[&Family] = &[
    &llama::LLAMA,
    &qwen::QWEN2,
    &qwen::QWEN3,
    &phi3::PHI3,
    &gemma::GEMMA,
    &olmoe::OLMOE,
];

/// The family that runs `arch`, or an error naming it and listing what ember runs.
pub fn find(arch: &str) -> Result<&'static Family> {
    FAMILIES
        .iter()
        .copied()
        .find(|f| f.archs.contains(&arch))
        .ok_or_else(|| {
            Error::Unsupported(format!(
                "architecture '{arch}': ember runs {}",
                supported().join(", ")
            ))
        })
}

/// Every architecture name ember runs.
pub fn supported() -> Vec<&'static str> {
    FAMILIES
        .iter()
        .flat_map(|f| f.archs.iter().copied())
        .collect()
}
