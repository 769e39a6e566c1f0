//! `ember template`, `ember run --chat` and `ember chat` (through a pseudo-terminal).

#[path = "../../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value as Json;

fn ember(args: &[&str]) -> Output {
    common::target_command(env!("CARGO_BIN_EXE_ember"))
        .args(args)
        .output()
        .expect("running ember")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ember-cli-chat-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn fixture(name: &str) -> Json {
    let p = common::repo_root().join("tests/fixtures/chat").join(name);
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Writes a fixture conversation as `ember template -f` reads it.
fn conversation_file(dir: &Path, conv: &Json) -> PathBuf {
    let mut doc = serde_json::Map::new();
    doc.insert("messages".into(), conv["messages"].clone());
    if let Some(t) = conv.get("tools") {
        doc.insert("tools".into(), t.clone());
    }
    for (k, v) in conv
        .get("kwargs")
        .and_then(Json::as_object)
        .into_iter()
        .flatten()
    {
        doc.insert(k.clone(), v.clone());
    }
    let path = dir.join(format!("{}.json", conv["name"].as_str().unwrap()));
    std::fs::write(&path, serde_json::to_string(&Json::Object(doc)).unwrap()).unwrap();
    path
}

/// `ember template` prints exactly what transformers renders (the fixtures), with the
/// model's own template and with `--template FILE`. The fixtures' conversations include a
/// pinned-date one, tools and a tool call, unicode and braces.
#[test]
fn template_prints_the_prompt_exactly() {
    let dir = scratch("template");
    let smollm2 = common::model("smollm2");
    let templates = common::model("templates");
    let fx = fixture("renderings.json");
    let convs = fixture("conversations.json");
    let now = fx["now_unix"].as_i64().unwrap().to_string();
    let mut checked = 0;
    for t in fx["templates"].as_array().unwrap() {
        let src = t["source"].as_str().unwrap();
        let file = match src.strip_prefix("templates:") {
            // Templates that do not print bos_token or eos_token (which come from the
            // model here, SmolLM2, not from the fixture).
            Some(f) if f.starts_with("Qwen-Qwen2.5") || f.starts_with("Qwen-Qwen3-") => {
                Some(templates.join(f))
            }
            _ if src == "model:smollm2" => None,
            _ => continue,
        };
        for case in t["cases"].as_array().unwrap() {
            let Some(want) = case.get("output").and_then(Json::as_str) else {
                continue;
            };
            let conv = convs
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == case["conversation"])
                .unwrap();
            let path = conversation_file(&dir, conv);
            let mut args = vec![
                "template",
                "-m",
                smollm2.to_str().unwrap(),
                "-f",
                path.to_str().unwrap(),
            ];
            args.extend(["--now", &now]);
            if let Some(f) = &file {
                args.extend(["--template", f.to_str().unwrap()]);
            }
            if case["add_generation_prompt"] == false {
                args.push("--no-generation-prompt");
            }
            let out = ember(&args);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(
                String::from_utf8(out.stdout).unwrap(),
                want,
                "{} {}",
                t["name"],
                case["conversation"]
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "{checked} renderings checked");

    // A file without a template: the built-in for its architecture, said on stderr.
    let gemma = common::model("gemma3");
    let path = dir.join("plain.json");
    std::fs::write(&path, r#"[{"role": "user", "content": "Hi"}]"#).unwrap();
    let out = ember(&[
        "template",
        "-m",
        gemma.to_str().unwrap(),
        "-f",
        path.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    );
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("has no chat template; using the built-in 'gemma'"));

    // A template that raises: the template's message and line, exit status 1.
    let bad = dir.join("bad.jinja");
    std::fs::write(
        &bad,
        "{% for m in messages %}\n{{ raise_exception('no ' + m.role + ' here') }}\n{% endfor %}",
    )
    .unwrap();
    let out = ember(&[
        "template",
        "-m",
        smollm2.to_str().unwrap(),
        "--template",
        bad.to_str().unwrap(),
        "-f",
        path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no user here (line 2)"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn run_chat_applies_the_template() {
    if !common::chat_model_tests() {
        return;
    }
    let smollm2 = common::model("smollm2");
    let out = ember(&[
        "run",
        "-m",
        smollm2.to_str().unwrap(),
        "--chat",
        "-p",
        "What is the capital of France?",
        "--system",
        "Answer in one sentence.",
        "--temp",
        "0",
        "-n",
        "24",
        "-t",
        "2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Paris") && !text.contains("<|im_"), "{text}");
}

/// An interactive chat through a pseudo-terminal (cli/tests/chat_pty.py): a reply with
/// its speed, Ctrl-C stopping a long reply but not the program, /reset, /exit.
#[test]
fn chat_in_a_terminal() {
    if !common::chat_model_tests() {
        return;
    }
    let smollm2 = common::model("smollm2");
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(common::repo_root().join("cli/tests/chat_pty.py"))
        .arg("--");
    // The same program line target_command would run (an emulator first when cross-testing).
    let target = common::target_command(env!("CARGO_BIN_EXE_ember"));
    cmd.arg(target.get_program()).args(target.get_args());
    cmd.args([
        "chat",
        "-m",
        smollm2.to_str().unwrap(),
        "--temp",
        "0",
        "-t",
        "2",
    ]);
    cmd.args(["--system", "You are a helpful assistant."]);
    let out = cmd.output().expect("running python3 chat_pty.py");
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && transcript.contains("chat_pty: ok"),
        "{transcript}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
