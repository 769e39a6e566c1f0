//! The dotprod extension (ARMv8.2 `sdot`, e.g. Cortex-A55/A76 and later, Apple M1):
//! one instruction multiplies 16 signed bytes by 16 and adds groups of 4 into 4 lanes.
//!
//! The Rust intrinsics for it are unstable, so it is written as inline assembly; the
//! `.arch_extension` directive lets the assembler accept it inside functions compiled
//! for the baseline. Only the dotprod and i8mm tables, handed out after runtime
//! detection, reach this code.

use std::arch::aarch64::*;
use std::arch::asm;

use super::neon::{ld, Isa};

#[inline(always)]
pub(super) unsafe fn sdot(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // SAFETY: registers only; the CPU has dotprod (see the module comment).
    unsafe {
        asm!(
            ".arch_extension dotprod",
            "sdot {0:v}.4s, {1:v}.16b, {2:v}.16b",
            inout(vreg) acc,
            in(vreg) a,
            in(vreg) b,
            options(pure, nomem, nostack)
        );
    }
    acc
}

/// `acc[i] += Σ_k a[4i + k] · b[4L + k]`.
#[inline(always)]
pub(super) unsafe fn sdot_lane<const L: i32>(
    mut acc: int32x4_t,
    a: int8x16_t,
    b: int8x16_t,
) -> int32x4_t {
    // SAFETY: registers only; the CPU has dotprod.
    unsafe {
        asm!(
            ".arch_extension dotprod",
            "sdot {0:v}.4s, {1:v}.16b, {2:v}.4b[{l}]",
            inout(vreg) acc,
            in(vreg) a,
            in(vreg) b,
            l = const L,
            options(pure, nomem, nostack)
        );
    }
    acc
}

pub(super) struct Sdot;

impl Isa for Sdot {
    #[inline(always)]
    unsafe fn dot16(acc: int32x4_t, w: int8x16_t, a: int8x16_t) -> int32x4_t {
        // SAFETY: see `sdot`.
        unsafe { sdot(acc, w, a) }
    }

    #[inline(always)]
    unsafe fn gdot16(acc: int32x4_t, w: int8x16_t, aq: *const u8, h: usize) -> int32x4_t {
        // SAFETY: the 128-byte sub-block at `aq` is readable (caller); chunk 2j+h holds
        // 4-element group j+4h of the 4 tokens, multiplied by group j of `w`.
        unsafe {
            let acc = sdot_lane::<0>(acc, ld(aq.add(16 * h)), w);
            let acc = sdot_lane::<1>(acc, ld(aq.add(32 + 16 * h)), w);
            let acc = sdot_lane::<2>(acc, ld(aq.add(64 + 16 * h)), w);
            sdot_lane::<3>(acc, ld(aq.add(96 + 16 * h)), w)
        }
    }
}
