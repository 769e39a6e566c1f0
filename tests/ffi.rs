//! The C ABI from the outside: the committed header matches the code, compiles strictly
//! as C and C++, the shared library exports exactly its functions, and the C misuse test
//! (tests/c/misuse.c) passes against the library this test run built.
//!
//! tools/test-c-abi goes further (release build, AddressSanitizer, Valgrind, threads,
//! examples, CMake and pkg-config); this file is what `cargo test` checks everywhere.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// target/<profile>, where cargo put libember.so for this test run.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/ffi-<hash>
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary in target/<profile>/deps")
        .to_path_buf()
}

/// libember.so of this test run's profile and target. `cargo test` builds the library
/// only as the rlib the tests link, so a fresh checkout has no cdylib yet, and an old
/// checkout has a stale one (missing the newest functions): build it with the same cargo,
/// profile and target (cargo releases its lock while tests run), once per test binary; a
/// no-op when it is up to date.
fn shared_lib() -> PathBuf {
    static SO: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    SO.get_or_init(build_shared_lib).clone()
}

fn build_shared_lib() -> PathBuf {
    let dir = lib_dir();
    let so = dir.join("libember.so");
    let profile = dir
        .file_name()
        .and_then(|p| p.to_str())
        .expect("profile dir");
    let parent = dir.parent().expect("target dir");
    let triple = env!("EMBER_BUILD_TARGET");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(root())
        .args(["build", "--lib", "-p", "ember", "--profile"])
        .arg(if profile == "debug" { "dev" } else { profile });
    if parent.file_name().and_then(|p| p.to_str()) == Some(triple) {
        cmd.args(["--target", triple])
            .arg("--target-dir")
            .arg(parent.parent().expect("target dir"));
    } else {
        cmd.arg("--target-dir").arg(parent);
    }
    run(&mut cmd);
    assert!(so.exists(), "{} was not built by {cmd:?}", so.display());
    so
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ember-ffi-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn committed_header_is_what_cbindgen_generates() {
    let generated = std::fs::read_to_string(concat!(env!("OUT_DIR"), "/ember.h"))
        .expect("OUT_DIR/ember.h (written by build.rs)");
    let committed =
        std::fs::read_to_string(root().join("include/ember.h")).expect("include/ember.h");
    assert!(
        generated == committed,
        "include/ember.h is stale: build outside CI (without EMBER_HEADER_CHECK=1) to \
         regenerate it from src/ffi, and commit it"
    );
}

#[test]
fn abi_version_is_the_same_everywhere() {
    let header = std::fs::read_to_string(root().join("include/ember.h")).unwrap();
    let in_header = header
        .lines()
        .find_map(|l| l.strip_prefix("#define EMBER_ABI_VERSION "))
        .expect("EMBER_ABI_VERSION in ember.h");
    let build = std::fs::read_to_string(root().join("build.rs")).unwrap();
    let in_build = build
        .lines()
        .find_map(|l| l.strip_prefix("const ABI_VERSION: u32 = "))
        .and_then(|v| v.strip_suffix(';'))
        .expect("ABI_VERSION in build.rs");
    let v = ember::ffi::EMBER_ABI_VERSION.to_string();
    assert_eq!(in_header, v);
    assert_eq!(in_build, v);
    assert_eq!(ember::ffi::ember_abi_version().to_string(), v);
}

/// The functions ember.h declares.
fn header_functions() -> BTreeSet<String> {
    let header = std::fs::read_to_string(root().join("include/ember.h")).unwrap();
    let mut names = BTreeSet::new();
    for line in header.lines().filter(|l| !l.starts_with(' ')) {
        // Declarations start at column 0: "ember_status ember_decode(struct ...".
        if let Some(open) = line.find('(') {
            if let Some(name) = line[..open].split([' ', '*']).next_back() {
                if name.starts_with("ember_") {
                    names.insert(name.to_string());
                }
            }
        }
    }
    names
}

#[test]
fn shared_library_exports_exactly_the_header_functions() {
    let so = shared_lib();
    let nm = common::target_tool("EMBER_TEST_NM", "nm");
    let out = run(Command::new(nm).args(["-D", "--defined-only"]).arg(&so));
    let exported: BTreeSet<String> = out
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .map(|s| s.split('@').next().unwrap_or(s).to_string())
        .collect();
    let stray: Vec<_> = exported
        .iter()
        .filter(|s| !s.starts_with("ember_"))
        .collect();
    assert!(
        stray.is_empty(),
        "libember.so exports non-ember symbols: {stray:?}"
    );
    let declared = header_functions();
    assert!(declared.len() > 40, "{declared:?}");
    assert_eq!(
        exported, declared,
        "exported functions and ember.h declarations differ"
    );
}

#[test]
fn header_compiles_strictly_as_c_and_cpp() {
    let dir = scratch("header");
    let c = dir.join("t.c");
    std::fs::write(
        &c,
        "#include \"ember.h\"\n\
         int main(void) { return (int)ember_abi_version() - EMBER_ABI_VERSION; }\n",
    )
    .unwrap();
    let cpp = dir.join("t.cpp");
    std::fs::write(
        &cpp,
        "#include \"ember.h\"\n#include \"ember.hpp\"\n\
         int main() { ember::ModelParams p; (void)p; return 0; }\n",
    )
    .unwrap();
    let mut compilers = vec![("gcc", "g++")];
    if have("clang") {
        compilers.push(("clang", "clang++"));
    } else {
        assert!(
            std::env::var_os("EMBER_REQUIRE_CLANG").is_none(),
            "clang is required (EMBER_REQUIRE_CLANG) but not installed"
        );
        eprintln!("clang not installed: checked with gcc only");
    }
    let strict = ["-Wall", "-Wextra", "-Werror", "-pedantic", "-fsyntax-only"];
    for (cc, cxx) in compilers {
        for std in ["-std=c99", "-std=c11"] {
            run(Command::new(cc)
                .args(strict)
                .arg(std)
                .arg("-I")
                .arg(root().join("include"))
                .arg(&c));
        }
        for std in ["-std=c++11", "-std=c++17"] {
            run(Command::new(cxx)
                .args(strict)
                .arg(std)
                .arg("-I")
                .arg(root().join("include"))
                .arg(&cpp));
        }
    }
}

#[test]
fn c_misuse_test_passes() {
    let dir = scratch("misuse");
    // The library's soname is libember.so.<ABI>: give the loader that name.
    let so = shared_lib();
    let soname = dir.join(format!("libember.so.{}", ember::ffi::EMBER_ABI_VERSION));
    let _ = std::fs::remove_file(&soname);
    std::os::unix::fs::symlink(&so, &soname).unwrap();
    let exe = dir.join("misuse");
    run(Command::new(common::target_tool("EMBER_TEST_CC", "cc"))
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-g"])
        .arg("-I")
        .arg(root().join("include"))
        .arg("-I")
        .arg(root().join("tests/c"))
        .arg(root().join("tests/c/misuse.c"))
        .arg("-o")
        .arg(&exe)
        .arg(format!("-L{}", dir.display()))
        .arg(format!("-l:libember.so.{}", ember::ffi::EMBER_ABI_VERSION))
        .arg(format!("-Wl,-rpath,{}", dir.display()))
        .arg("-lm"));
    let model = common::model("smollm2");
    let out = run(common::target_command(&exe).arg(&model).arg(&dir));
    assert!(out.contains(" 0 failed"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
