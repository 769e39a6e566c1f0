//! Generates the C header from src/ffi and sets up the shared library's exports.
//!
//! The header is written to OUT_DIR/ember.h on every build. The committed copy,
//! include/ember.h, is refreshed from it when they differ, except in CI (`CI` set) or
//! with `EMBER_HEADER_CHECK=1`: then it is left alone and tests/ffi.rs fails when it is
//! stale, so a change to the ABI cannot land without its header.

use std::env;
use std::fs;
use std::path::PathBuf;

/// Must match `EMBER_ABI_VERSION` in src/ffi/mod.rs (tests/ffi.rs checks it).
const ABI_VERSION: u32 = 1;

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-env-changed=CI");
    println!("cargo:rerun-if-env-changed=EMBER_HEADER_CHECK");
    // tests/ffi.rs builds the cdylib with a nested cargo when `cargo test` did not, and
    // needs the triple to find (or make) it when the tests are cross-compiled.
    println!(
        "cargo:rustc-env=EMBER_BUILD_TARGET={}",
        env::var("TARGET").expect("TARGET")
    );

    let config = cbindgen::Config::from_file(root.join("cbindgen.toml"))
        .unwrap_or_else(|e| panic!("cbindgen.toml: {e}"));
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(root.join("src/ffi/mod.rs"))
        .generate()
        .unwrap_or_else(|e| panic!("generating ember.h: {e}"));
    let mut header = Vec::new();
    bindings.write(&mut header);
    fs::write(out.join("ember.h"), &header).expect("writing OUT_DIR/ember.h");

    let check_only = env::var_os("CI").is_some_and(|v| !v.is_empty())
        || env::var("EMBER_HEADER_CHECK").is_ok_and(|v| v == "1");
    let committed = root.join("include/ember.h");
    if !check_only && fs::read(&committed).ok().as_deref() != Some(&header[..]) {
        if let Err(e) =
            fs::create_dir_all(root.join("include")).and_then(|()| fs::write(&committed, &header))
        {
            println!("cargo:warning=could not update include/ember.h: {e}");
        }
    }

    // rustc already exports only the `#[no_mangle]` functions from a cdylib (its own
    // version script hides the rest; a second script cannot override it), and
    // tests/ffi.rs checks that they all start with `ember_`. The soname carries the ABI
    // version so that an incompatible libember is never picked up by the loader. Android
    // loads libraries by file name from the APK, so it keeps the plain name.
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "linux" {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libember.so.{ABI_VERSION}");
    }
}
