//! `ember eval` on SmolLM2: its top-1 ids against the library's own logits for the same
//! tokens, its log-probabilities' sanity, its errors; and `--top1` on every synthetic model
//! in `$EMBER_MODELS_DIR/synthetic/`, when that folder exists.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use ember::{Context, ContextParams, Model, ModelParams, Token};
use serde_json::Value as Json;

/// English lines of different lengths; the blank line and the CRLF line end test that
/// blank lines are skipped and that `\r` is not part of a line.
const TEXT: &str = "The capital of France is Paris, and the capital of Germany is Berlin.\n\
\n\
Once upon a time, there was a little girl who lived in a village near the forest.\r\n\
Water boils at one hundred degrees Celsius at sea level.\n\
I like to read books in the evening before I go to sleep.\n";

/// Both the command and the library oracle run with this many threads.
const THREADS: usize = 2;

fn ember(args: &[&str]) -> Output {
    common::target_command(env!("CARGO_BIN_EXE_ember"))
        .args(args)
        .output()
        .expect("running ember")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ember-cli-eval-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn stdout_of(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The lines of TEXT that `ember eval` scores (non-empty, without `\r`).
fn lines() -> Vec<&'static str> {
    TEXT.lines().filter(|l| !l.is_empty()).collect()
}

/// `ember tokenize --ids LINE`.
fn tokenize(model: &Path, line: &str) -> Vec<Token> {
    let out = ember(&["tokenize", "-m", model.to_str().unwrap(), "--ids", line]);
    stdout_of(&out, "ember tokenize")
        .trim()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect()
}

/// `ember eval` on `text`: one parsed JSON array per output line.
fn eval(model: &Path, text: &Path, flag: &str) -> Vec<Vec<Json>> {
    let t = THREADS.to_string();
    let args = [
        "eval",
        "-m",
        model.to_str().unwrap(),
        "-f",
        text.to_str().unwrap(),
        flag,
        "-t",
        &t,
    ];
    stdout_of(&ember(&args), "ember eval")
        .lines()
        .map(|l| match serde_json::from_str(l) {
            Ok(Json::Array(a)) => a,
            _ => panic!("not a JSON array: {l}"),
        })
        .collect()
}

/// The logits after every position of `tokens`, decoded as one batch through the library.
fn library_logits(model: &Model, tokens: &[Token]) -> Vec<Vec<f32>> {
    let mut ctx = Context::new(
        model,
        ContextParams {
            n_ctx: tokens.len(),
            n_batch: tokens.len(),
            n_threads: THREADS,
            logits_all: true,
            ..ContextParams::default()
        },
    )
    .unwrap();
    ctx.decode_all(tokens).unwrap();
    (0..tokens.len())
        .map(|i| ctx.logits_ith(i).unwrap().to_vec())
        .collect()
}

/// Index of the largest logit, ties to the lowest id.
fn argmax(logits: &[f32]) -> Token {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as Token
}

fn text_file(dir: &Path) -> PathBuf {
    let p = dir.join("text.txt");
    std::fs::write(&p, TEXT).unwrap();
    p
}

#[test]
fn top1_is_the_argmax_of_the_library_logits() {
    let path = common::model("smollm2");
    let dir = scratch("top1");
    let rows = eval(&path, &text_file(&dir), "--top1");
    let lines = lines();
    assert_eq!(rows.len(), lines.len(), "one array per non-empty line");
    let model = Model::load(&path, &ModelParams::default()).unwrap();
    for (row, line) in rows.iter().zip(&lines) {
        let tokens = tokenize(&path, line);
        assert_eq!(row.len(), tokens.len(), "{line}");
        let got: Vec<Token> = row.iter().map(|v| v.as_u64().unwrap() as Token).collect();
        let want: Vec<Token> = library_logits(&model, &tokens)
            .iter()
            .map(|l| argmax(l))
            .collect();
        assert_eq!(got, want, "{line}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn logprobs_are_sane_and_match_the_library() {
    let path = common::model("smollm2");
    let dir = scratch("logprobs");
    let rows = eval(&path, &text_file(&dir), "--logprobs");
    let lines = lines();
    assert_eq!(rows.len(), lines.len(), "one array per non-empty line");
    let model = Model::load(&path, &ModelParams::default()).unwrap();
    let (mut sum, mut n) = (0.0f64, 0usize);
    for (row, line) in rows.iter().zip(&lines) {
        let tokens = tokenize(&path, line);
        assert_eq!(row.len(), tokens.len() - 1, "{line}");
        let logits = library_logits(&model, &tokens);
        for (i, v) in row.iter().enumerate() {
            let lp = v.as_f64().unwrap();
            assert!(lp <= 0.0, "{line}: position {i}: {lp}");
            // The same log-softmax, computed here in f64 from the library's logits.
            let l = &logits[i];
            let max = l.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
            let lse = max + l.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
            let want = l[tokens[i + 1] as usize] as f64 - lse;
            assert!(
                (lp - want).abs() <= 5e-7 + 1e-12,
                "{line}: position {i}: {lp} vs {want}"
            );
            // Printed with at most 6 decimals.
            let s = v.to_string();
            let decimals = s.split_once('.').map_or(0, |(_, d)| d.len());
            assert!(decimals <= 6, "{s}");
        }
        sum += row.iter().map(|v| v.as_f64().unwrap()).sum::<f64>();
        n += row.len();
    }
    let ppl = (-sum / n as f64).exp();
    eprintln!("SmolLM2 perplexity over {n} teacher-forced tokens: {ppl:.2}");
    assert!(ppl > 1.0 && ppl < 100.0, "perplexity {ppl}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Exit status 1, nothing on stdout, a one-line `ember: ...` message naming `expect`, and
/// no panic.
fn assert_error(out: &Output, expect: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(out.stdout.is_empty());
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("ember: ") && err.contains(expect), "{err}");
}

#[test]
fn errors_are_messages_not_panics() {
    let path = common::model("smollm2");
    let dir = scratch("errors");
    let text = text_file(&dir);
    let (m, t) = (path.to_str().unwrap(), text.to_str().unwrap());

    let missing = dir.join("no-such-text.txt");
    let out = ember(&["eval", "-m", m, "-f", missing.to_str().unwrap(), "--top1"]);
    assert_error(&out, "no-such-text.txt");

    let missing_model = dir.join("no-such-model.gguf");
    let out = ember(&[
        "eval",
        "-m",
        missing_model.to_str().unwrap(),
        "-f",
        t,
        "--top1",
    ]);
    assert_error(&out, "no-such-model.gguf");

    // A real header and metadata with the tensor data cut off, and a file that is not GGUF.
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert_error(
        &ember(&["eval", "-m", cut.to_str().unwrap(), "-f", t, "--top1"]),
        "malformed GGUF",
    );
    assert_error(&ember(&["eval", "-m", t, "-f", t, "--logprobs"]), "magic");

    // SmolLM2 was trained on 8192 positions; line 3 (the file's numbering, the blank line
    // counted) is about 9000 tokens.
    let long = dir.join("long.txt");
    std::fs::write(&long, format!("Hi.\n\n{}\n", "hello ".repeat(9000))).unwrap();
    assert_error(
        &ember(&["eval", "-m", m, "-f", long.to_str().unwrap(), "--top1"]),
        "line 3 of",
    );
    let out = ember(&["eval", "-m", m, "-f", long.to_str().unwrap(), "--logprobs"]);
    assert_error(&out, "training context of 8192 tokens");

    // Exactly one of --top1 and --logprobs (clap's usage errors exit with 2).
    for flags in [&[][..], &["--top1", "--logprobs"][..]] {
        let mut args = vec!["eval", "-m", m, "-f", t];
        args.extend_from_slice(flags);
        let out = ember(&args);
        assert_eq!(out.status.code(), Some(2), "{flags:?}");
        assert!(out.stdout.is_empty());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--top1` on every `*.gguf` in `$EMBER_MODELS_DIR/synthetic/` (models of many families):
/// it succeeds and prints as many ids as `ember tokenize --ids` gives. Every model is tried
/// and the failures are reported together.
#[test]
fn top1_on_every_synthetic_model() {
    let root = std::env::var_os("EMBER_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::repo_root().join("models"));
    let folder = root.join("synthetic");
    let Ok(entries) = std::fs::read_dir(&folder) else {
        eprintln!(
            "note: {} does not exist: no synthetic models to evaluate, test skipped",
            folder.display()
        );
        return;
    };
    let mut models: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
        .collect();
    models.sort();
    if models.is_empty() {
        eprintln!("note: no *.gguf in {}: test skipped", folder.display());
        return;
    }
    let dir = scratch("synthetic");
    let line = "The quick brown fox jumps over the lazy dog.";
    let text = dir.join("line.txt");
    std::fs::write(&text, format!("{line}\n")).unwrap();
    let mut failures = Vec::new();
    for m in &models {
        let name = m.file_name().unwrap().to_string_lossy();
        let ms = m.to_str().unwrap();
        let tok = ember(&["tokenize", "-m", ms, "--ids", line]);
        let out = ember(&["eval", "-m", ms, "-f", text.to_str().unwrap(), "--top1"]);
        let err = String::from_utf8_lossy(&out.stderr);
        if !tok.status.success() {
            let e = String::from_utf8_lossy(&tok.stderr);
            failures.push(format!("{name}: ember tokenize failed: {}", e.trim()));
            continue;
        }
        if !out.status.success() {
            failures.push(format!("{name}: ember eval failed: {}", err.trim()));
            continue;
        }
        let n_tokens = String::from_utf8_lossy(&tok.stdout)
            .trim()
            .split(',')
            .filter(|s| !s.is_empty())
            .count();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let rows: Vec<&str> = stdout.lines().collect();
        match serde_json::from_str::<Json>(rows.first().copied().unwrap_or("")) {
            Ok(Json::Array(a)) if rows.len() == 1 && a.len() == n_tokens => {}
            _ => failures.push(format!(
                "{name}: expected one array of {n_tokens} ids, got: {}",
                stdout.trim()
            )),
        }
    }
    eprintln!(
        "{} synthetic models evaluated, {} failed",
        models.len(),
        failures.len()
    );
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
