// Each test binary uses a different part of these helpers.
#![allow(dead_code)]

pub mod gguf_writer;
pub mod golden;
pub mod peak_alloc;

use std::path::PathBuf;

use ember::GgmlType;
use gguf_writer::{ty, Gguf, Tensor, Val};
use std::process::Command;

/// The repository root: the nearest folder above this package that holds tools/fetch-models
/// (the cli package's tests share these helpers).
pub fn repo_root() -> PathBuf {
    let pkg = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    pkg.ancestors()
        .find(|d| d.join("tools/fetch-models").is_file())
        .unwrap_or(&pkg)
        .to_path_buf()
}

/// What `tools/fetch-models NAME` prints: the path of each model it fetched or made,
/// checksum-verified, one per line.
fn fetch_models(name: &str) -> Vec<PathBuf> {
    let out = Command::new("python3")
        .arg(repo_root().join("tools/fetch-models"))
        .arg(name)
        .output()
        .expect("running python3 tools/fetch-models");
    assert!(
        out.status.success(),
        "tools/fetch-models {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| PathBuf::from(l.trim()))
        .collect()
}

/// Path of a test model, downloaded and checksum-verified by tools/fetch-models on first use.
pub fn model(name: &str) -> PathBuf {
    let mut paths = fetch_models(name);
    assert_eq!(paths.len(), 1, "tools/fetch-models {name}: {paths:?}");
    paths.remove(0)
}

/// Paths of a group of test models (e.g. `synthetic`).
pub fn model_list(name: &str) -> Vec<PathBuf> {
    fetch_models(name)
}

/// A command for a program built for the test target. When the tests are cross-compiled
/// (tools/test-aarch64), EMBER_TEST_RUNNER holds the emulator command line ("qemu-aarch64
/// -cpu max -L /usr/aarch64-linux-gnu") and the program runs under it.
pub fn target_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    match std::env::var("EMBER_TEST_RUNNER") {
        Ok(runner) if !runner.trim().is_empty() => {
            let mut words = runner.split_whitespace();
            let mut cmd = Command::new(words.next().unwrap());
            cmd.args(words).arg(program);
            cmd
        }
        _ => Command::new(program),
    }
}

/// A build tool for the test target: `$<VAR>` when set (tools/test-aarch64 sets
/// EMBER_TEST_CC=aarch64-linux-gnu-gcc and EMBER_TEST_NM=aarch64-linux-gnu-nm), else the
/// host's `default`.
pub fn target_tool(var: &str, default: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// Rounds for a randomized test: all of them natively; under Miri, which interprets
/// ~100x slower, EMBER_MIRI_PERCENT of them (default 2, at least 1; tools/miri forwards
/// the variable). Same rule as the library's unit tests.
pub fn test_rounds(native: usize) -> usize {
    if !cfg!(miri) {
        return native;
    }
    let percent = std::env::var("EMBER_MIRI_PERCENT")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(2);
    (native * percent / 100).clamp(1, native)
}

/// SplitMix64: a tiny deterministic generator so every random case can be replayed from
/// its seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

pub const NESTED: &str = "test.nested";

/// A file holding every value type as a scalar and as an array, nested arrays three levels
/// deep, empty arrays, and tensors of several ggml types.
pub fn rich_file(version: u32) -> Gguf {
    let mut rng = Rng(version as u64);
    let mut byte = move || rng.next_u64() as u8;
    Gguf {
        version,
        ..Gguf::default()
    }
    .kv("general.architecture", Val::str("llama"))
    .kv("general.alignment", Val::U32(64))
    .kv("test.u8", Val::U8(255))
    .kv("test.i8", Val::I8(-128))
    .kv("test.u16", Val::U16(65535))
    .kv("test.i16", Val::I16(-32768))
    .kv("test.u32", Val::U32(u32::MAX))
    .kv("test.i32", Val::I32(i32::MIN))
    .kv("test.f32", Val::F32(-1.5e-7))
    .kv("test.bool", Val::Bool(true))
    .kv("test.bool_false", Val::Bool(false))
    .kv("test.string", Val::str("héllo ✓ <|im_start|>"))
    .kv("test.empty_string", Val::str(""))
    .kv("test.u64", Val::U64(u64::MAX))
    .kv("test.i64", Val::I64(i64::MIN))
    .kv("test.f64", Val::F64(std::f64::consts::PI))
    .kv("arr.u8", Val::Array(ty::U8, vec![Val::U8(0), Val::U8(200)]))
    .kv(
        "arr.i8",
        Val::Array(ty::I8, vec![Val::I8(-1), Val::I8(127)]),
    )
    .kv(
        "arr.u16",
        Val::Array(ty::U16, vec![Val::U16(1), Val::U16(65535)]),
    )
    .kv(
        "arr.i16",
        Val::Array(ty::I16, vec![Val::I16(-300), Val::I16(300)]),
    )
    .kv(
        "arr.u32",
        Val::Array(ty::U32, vec![Val::U32(7), Val::U32(u32::MAX)]),
    )
    .kv(
        "arr.i32",
        Val::Array(ty::I32, vec![Val::I32(i32::MIN), Val::I32(3)]),
    )
    .kv(
        "arr.f32",
        Val::Array(
            ty::F32,
            vec![Val::F32(0.5), Val::F32(-2.25), Val::F32(1e30)],
        ),
    )
    .kv(
        "arr.bool",
        Val::Array(ty::BOOL, vec![Val::Bool(true), Val::Bool(false)]),
    )
    .kv("arr.string", Val::strs(&["a", "", "<0x0A>", "▁the"]))
    .kv(
        "arr.u64",
        Val::Array(ty::U64, vec![Val::U64(u64::MAX), Val::U64(1)]),
    )
    .kv(
        "arr.i64",
        Val::Array(ty::I64, vec![Val::I64(i64::MIN), Val::I64(-1)]),
    )
    .kv(
        "arr.f64",
        Val::Array(ty::F64, vec![Val::F64(1.0 / 3.0), Val::F64(-0.0)]),
    )
    .kv("arr.empty", Val::Array(ty::U32, vec![]))
    .kv("arr.empty_strings", Val::Array(ty::STRING, vec![]))
    .kv(
        NESTED,
        Val::Array(
            ty::ARRAY,
            vec![
                Val::Array(ty::U32, vec![Val::U32(1), Val::U32(2), Val::U32(3)]),
                Val::strs(&["x", "yz"]),
                Val::Array(
                    ty::ARRAY,
                    vec![
                        Val::Array(ty::F64, vec![Val::F64(2.5)]),
                        Val::Array(ty::I8, vec![]),
                    ],
                ),
                Val::Array(ty::U8, vec![]),
            ],
        ),
    )
    .kv("test.after_nested", Val::U32(42))
    .tensor(Tensor::filled("t.f32", &[4, 3], GgmlType::F32, &mut byte))
    .tensor(Tensor::filled("t.f16", &[8], GgmlType::F16, &mut byte))
    .tensor(Tensor::filled(
        "t.q4_0",
        &[64, 2],
        GgmlType::Q4_0,
        &mut byte,
    ))
    .tensor(Tensor::filled(
        "t.q8_0",
        &[32, 1, 2],
        GgmlType::Q8_0,
        &mut byte,
    ))
    .tensor(Tensor::filled(
        "t.q4_k",
        &[256, 2, 1, 2],
        GgmlType::Q4_K,
        &mut byte,
    ))
    .tensor(Tensor::filled("t.q6_k", &[512], GgmlType::Q6_K, &mut byte))
}

/// Whether the chat tests that run a model go ahead. Under emulation (tools/test-all's
/// aarch64 step sets EMBER_CHAT_MODEL_TESTS=0) they are skipped: they test the session
/// logic, which is the same on every architecture, and would cost ~15 minutes per qemu
/// CPU; the template tests still run there.
pub fn chat_model_tests() -> bool {
    let on = !matches!(std::env::var("EMBER_CHAT_MODEL_TESTS").as_deref(), Ok("0"));
    if !on {
        eprintln!("skipped: EMBER_CHAT_MODEL_TESTS=0");
    }
    on
}
