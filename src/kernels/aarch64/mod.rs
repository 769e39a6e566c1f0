//! AArch64 kernel sets.

use super::Kernels;

pub(super) fn available() -> Vec<&'static Kernels> {
    Vec::new()
}
