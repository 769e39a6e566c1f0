//! `ember bench` with comma lists and depths: one JSON line per combination, in llama-bench's
//! naming (`pp8 @ d16`), and a context that really holds the depth (a test at depth 16
//! with n_ctx sized for it would fail to decode past the end otherwise).

#[path = "../../tests/common/mod.rs"]
mod common;

use serde_json::Value;

#[test]
fn every_combination_of_lists_is_one_test() {
    let model = common::model("smollm2");
    let out = common::target_command(env!("CARGO_BIN_EXE_ember"))
        .args(["bench", "-m", model.to_str().unwrap()])
        .args([
            "-p", "8,4", "-n", "2", "-d", "16,0", "-t", "1,2", "-r", "1", "--json",
        ])
        .output()
        .expect("running ember");
    assert!(
        out.status.success(),
        "ember bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let tests: Vec<(String, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["test"].as_str().unwrap().to_string(),
                r["threads"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut want = Vec::new();
    for t in [1, 2] {
        for d in ["", " @ d16"] {
            for test in ["pp8", "pp4", "tg2"] {
                want.push((format!("{test}{d}"), t));
            }
        }
    }
    assert_eq!(tests, want);
    for r in &rows {
        assert!(r["avg_ts"].as_f64().unwrap() > 0.0, "{r}");
        let depth = if r["test"].as_str().unwrap().ends_with("d16") {
            16
        } else {
            0
        };
        assert_eq!(r["n_depth"].as_u64(), Some(depth));
    }
}
