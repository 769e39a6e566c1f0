//! `ember inspect` on both test models, and its errors. This test lives in the cli package
//! because Cargo gives a package's own integration tests the path of its binaries
//! (CARGO_BIN_EXE_ember) and builds them first, with the same profile; a test in the root
//! package would have to run a nested `cargo build` and guess the target folder.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

use common::gguf_writer::{Gguf, Tensor, Val};

fn ember(args: &[&str]) -> Output {
    common::target_command(env!("CARGO_BIN_EXE_ember"))
        .args(args)
        .output()
        .expect("running ember")
}

fn inspect(path: &Path, flags: &[&str]) -> String {
    let mut args = vec!["inspect", path.to_str().unwrap()];
    args.extend_from_slice(flags);
    let out = ember(&args);
    assert!(
        out.status.success(),
        "ember inspect failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The value after `label:` on its line.
fn field<'a>(text: &'a str, label: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{label}:")))
        .unwrap_or_else(|| panic!("no '{label}:' line in:\n{text}"))
        .trim()
}

struct Row {
    ty: String,
    shape: String,
    bytes: u64,
}

/// The tensor table: name -> (type, shape, bytes).
fn table(text: &str) -> BTreeMap<String, Row> {
    let mut rows = BTreeMap::new();
    let mut in_table = false;
    for line in text.lines() {
        if line.starts_with("#     name") {
            in_table = true;
            continue;
        }
        if !in_table || line.trim().is_empty() {
            in_table = in_table && !line.trim().is_empty();
            continue;
        }
        // index, name, type, shape ("[a, b]"), bytes
        let (head, shape_and_bytes) = line.split_once('[').unwrap();
        let mut head = head.split_whitespace();
        let (_, name, ty) = (head.next(), head.next().unwrap(), head.next().unwrap());
        let (dims, bytes) = shape_and_bytes.split_once(']').unwrap();
        let row = Row {
            ty: ty.to_string(),
            shape: format!("[{dims}]"),
            bytes: bytes.trim().parse().unwrap(),
        };
        assert!(rows.insert(name.to_string(), row).is_none(), "{name} twice");
    }
    rows
}

struct Expect {
    model: &'static str,
    arch: &'static str,
    tokenizer: &'static str,
    vocab: &'static str,
    chat_template: &'static str,
    block_count: &'static str,
    n_tensors: usize,
    types: &'static [(&'static str, usize)],
    /// Shapes as llama.cpp reports them (ne0 first), cross-checked with gguf-py's reader.
    shapes: &'static [(&'static str, &'static str, &'static str, u64)],
}

const SMOLLM2: Expect = Expect {
    model: "smollm2",
    arch: "llama",
    tokenizer: "GPT-2 byte-level BPE (gpt2)",
    vocab: "49152",
    chat_template: "present",
    block_count: "30",
    n_tensors: 272,
    types: &[("Q4_1", 210), ("Q8_0", 1), ("F32", 61)],
    shapes: &[
        ("token_embd.weight", "Q8_0", "[576, 49152]", 30081024),
        ("blk.0.attn_q.weight", "Q4_1", "[576, 576]", 207360),
        ("blk.0.attn_k.weight", "Q4_1", "[576, 192]", 69120),
        ("blk.0.ffn_down.weight", "Q4_1", "[1536, 576]", 552960),
        ("blk.29.ffn_gate.weight", "Q4_1", "[576, 1536]", 552960),
        ("blk.0.attn_norm.weight", "F32", "[576]", 2304),
        ("output_norm.weight", "F32", "[576]", 2304),
    ],
};

const GEMMA3: Expect = Expect {
    model: "gemma3",
    arch: "gemma3",
    tokenizer: "SentencePiece (llama)",
    vocab: "262144",
    chat_template: "absent",
    block_count: "18",
    n_tensors: 236,
    types: &[
        ("F32", 109),
        ("Q8_0", 10),
        ("Q5_0", 81),
        ("Q4_K", 27),
        ("Q6_K", 9),
    ],
    shapes: &[
        ("token_embd.weight", "Q8_0", "[640, 262144]", 178257920),
        ("blk.0.attn_q.weight", "Q5_0", "[640, 1024]", 450560),
        ("blk.0.attn_k.weight", "Q5_0", "[640, 256]", 112640),
        ("blk.0.attn_v.weight", "Q8_0", "[640, 256]", 174080),
        ("blk.0.attn_output.weight", "Q4_K", "[1024, 640]", 368640),
        ("blk.0.ffn_down.weight", "Q6_K", "[2048, 640]", 1075200),
        ("blk.0.attn_k_norm.weight", "F32", "[256]", 1024),
        ("output_norm.weight", "F32", "[640]", 2560),
    ],
};

fn check_model(e: &Expect) {
    let path = common::model(e.model);
    let text = inspect(&path, &["--tensors"]);
    assert_eq!(field(&text, "architecture"), e.arch);
    assert_eq!(field(&text, "tokenizer"), e.tokenizer);
    assert_eq!(field(&text, "vocab size"), e.vocab);
    assert_eq!(field(&text, "chat template"), e.chat_template);
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(field(&text, "file size").contains(&format!("({size} bytes)")));
    let bc = text
        .lines()
        .find(|l| l.trim_start().starts_with("block_count "))
        .expect("block_count among the hyper-parameters");
    assert_eq!(bc.split_whitespace().nth(1), Some(e.block_count));

    let rows = table(&text);
    assert_eq!(rows.len(), e.n_tensors);
    assert!(field(&text, "tensors").starts_with(&format!("{} (", e.n_tensors)));
    let mut by_type = BTreeMap::new();
    for r in rows.values() {
        *by_type.entry(r.ty.as_str()).or_insert(0) += 1;
    }
    let want: BTreeMap<&str, usize> = e.types.iter().copied().collect();
    assert_eq!(by_type, want);
    for (name, ty, shape, bytes) in e.shapes {
        let r = &rows[*name];
        assert_eq!(
            (r.ty.as_str(), r.shape.as_str(), r.bytes),
            (*ty, *shape, *bytes),
            "{name}"
        );
    }
}

#[test]
fn smollm2_tensors_and_metadata() {
    check_model(&SMOLLM2);
}

#[test]
fn gemma3_tensors_and_metadata() {
    check_model(&GEMMA3);
}

/// Opening reads no tensor data: the process stays within the metadata size plus 8 MiB,
/// and opening takes under 50 ms (the best of three runs, so a busy machine does not fail
/// the test).
#[test]
fn open_is_fast_and_reads_no_tensor_data() {
    // Under an emulator (tools/test-aarch64) the process is qemu: its resident memory holds
    // the translated code and its clock runs ~30x slow, so neither number means anything.
    if std::env::var("EMBER_TEST_RUNNER").is_ok_and(|r| !r.trim().is_empty()) {
        eprintln!("emulated run: open time and resident memory not checked");
        return;
    }
    for e in [&SMOLLM2, &GEMMA3] {
        let path = common::model(e.model);
        let mut best = f64::INFINITY;
        for _ in 0..3 {
            let text = inspect(&path, &["--stats"]);
            let ms: f64 = field(&text, "open time")
                .trim_end_matches(" ms")
                .parse()
                .unwrap();
            best = best.min(ms);
            let budget = field(&text, "budget");
            assert!(budget.ends_with("-> within"), "{}: {budget}", e.model);
        }
        assert!(best < 50.0, "{}: opening took {best} ms", e.model);
    }
}

fn assert_one_line_error(out: &Output, expect: &str) {
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected, got: {err}");
    assert!(lines[0].starts_with("ember: "), "{err}");
    assert!(
        lines[0].contains(expect),
        "'{err}' should mention '{expect}'"
    );
}

#[test]
fn errors_print_one_line_and_exit_1() {
    let dir = std::env::temp_dir().join(format!("ember-inspect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let missing = dir.join("no-such-model.gguf");
    assert_one_line_error(
        &ember(&["inspect", missing.to_str().unwrap()]),
        "no-such-model.gguf",
    );

    let text = dir.join("notes.txt");
    std::fs::write(&text, "not a model at all\n").unwrap();
    assert_one_line_error(&ember(&["inspect", text.to_str().unwrap()]), "magic");

    let empty = dir.join("empty.gguf");
    std::fs::write(&empty, "").unwrap();
    assert_one_line_error(&ember(&["inspect", empty.to_str().unwrap()]), "empty");

    let mut bytes = Gguf::default()
        .kv("general.architecture", Val::str("llama"))
        .tensor(Tensor::filled("w", &[64], ember::GgmlType::Q8_0, || 7))
        .bytes();
    bytes.truncate(bytes.len() - 10);
    let cut = dir.join("cut.gguf");
    std::fs::write(&cut, &bytes).unwrap();
    assert_one_line_error(
        &ember(&["inspect", cut.to_str().unwrap(), "--tensors"]),
        "malformed GGUF: tensor 'w'",
    );

    assert_one_line_error(&ember(&["inspect", dir.to_str().unwrap()]), "");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every synthetic model shows the family that runs it, and the MoE ones their experts.
#[test]
fn synthetic_models_show_their_family_and_experts() {
    let families = [
        ("llama-moe", "llama", Some("4 (2 used per token")),
        ("llama-rope-freqs", "llama", None),
        ("llama", "llama", None),
        ("mistral", "llama", None),
        ("qwen2moe", "qwen2", Some("shared expert FFN")),
        ("qwen2", "qwen2", None),
        ("qwen3moe", "qwen3", Some("used per token")),
        ("qwen3", "qwen3", None),
        ("phi3", "phi3", None),
        ("gemma2", "gemma", None),
        ("gemma3", "gemma", None),
        ("olmoe", "olmoe", Some("weights as routed")),
    ];
    let models = common::model_list("synthetic");
    // Q8_0, Q4_0 and Q4_K_M of each.
    assert_eq!(models.len(), 3 * families.len(), "{models:?}");
    for path in &models {
        let stem = path.file_stem().unwrap().to_str().unwrap();
        let (_, family, experts) = families
            .iter()
            .find(|(f, _, _)| stem.strip_prefix(f).is_some_and(|q| q.starts_with("-q")))
            .unwrap_or_else(|| panic!("unexpected synthetic model {stem}"));
        let text = inspect(path, &[]);
        assert_eq!(field(&text, "family"), *family, "{stem}");
        match experts {
            Some(e) => assert!(field(&text, "experts").contains(e), "{stem}:\n{text}"),
            None => assert!(!text.contains("experts:"), "{stem}"),
        }
    }
}
