//! Chat templates render byte for byte as Hugging Face transformers renders them.
//!
//! tests/fixtures/chat/renderings.json holds what transformers' `apply_chat_template`
//! made (tools/make-template-fixtures) of the conversations in conversations.json, for
//! SmolLM2's own template and real templates from llama.cpp's models/templates/ (taken
//! from the llama-cpp-python source package by tools/fetch-models, as at fixture time).
//! Where the template itself raised an error (raise_exception, or jinja2's own
//! TemplateError), ember must fail with the same message. Where Python raised a TypeError
//! inside the template (iterating None, json.dumps of a generator), minijinja is more
//! lenient and renders: those cases are counted, not compared.

mod common;

use ember::chat::{ChatTemplate, Json, RenderOptions, TemplateOrigin};
use ember::{Model, ModelParams};

fn load_json(name: &str) -> Json {
    let path = common::repo_root().join("tests/fixtures/chat").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The template source a fixture names: "model:smollm2" or "templates:FILE".
fn source(origin: &str, templates: &std::path::Path) -> String {
    if let Some(model) = origin.strip_prefix("model:") {
        let m = Model::load(common::model(model), &ModelParams::default()).unwrap();
        return m
            .chat_template()
            .expect("the model has a template")
            .to_owned();
    }
    let file = origin
        .strip_prefix("templates:")
        .expect("a known fixture source");
    std::fs::read_to_string(templates.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn first_difference(a: &str, b: &str) -> String {
    let at = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    let from = at.saturating_sub(60);
    let show = |s: &str| {
        String::from_utf8_lossy(&s.as_bytes()[from.min(s.len())..(at + 60).min(s.len())])
            .into_owned()
    };
    format!(
        "at byte {at}:\n  want …{:?}\n  got  …{:?}",
        show(a),
        show(b)
    )
}

#[test]
fn templates_render_as_transformers_does() {
    let fixtures = load_json("renderings.json");
    let convs = load_json("conversations.json");
    let now = fixtures["now_unix"].as_i64().unwrap();
    let own = fixtures["conversations"].as_array().unwrap();
    let conv = |name: &str| {
        convs
            .as_array()
            .unwrap()
            .iter()
            .chain(own)
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("conversation {name}"))
    };
    let templates = common::model("templates");
    let mut failures = Vec::new();
    let (mut n_out, mut n_err, mut n_lenient, mut n_templates) = (0, 0, 0, 0);
    let mut max_fuel = (0, String::new());
    for t in fixtures["templates"].as_array().unwrap() {
        let name = t["name"].as_str().unwrap();
        let src = match t.get("source_text") {
            Some(text) => text.as_str().unwrap().to_owned(),
            None => source(t["source"].as_str().unwrap(), &templates),
        };
        let tmpl = match ChatTemplate::new(
            &src,
            t["bos_token"].as_str().unwrap(),
            t["eos_token"].as_str().unwrap(),
            TemplateOrigin::Given,
        ) {
            Ok(t) => t,
            Err(e) => {
                failures.push(format!("{name}: does not compile: {e}"));
                continue;
            }
        };
        n_templates += 1;
        for case in t["cases"].as_array().unwrap() {
            let c = conv(case["conversation"].as_str().unwrap());
            let agp = case["add_generation_prompt"].as_bool().unwrap();
            let tools = c.get("tools").and_then(Json::as_array);
            let opts = RenderOptions {
                add_generation_prompt: agp,
                tools: tools.map(Vec::as_slice),
                extra: c.get("kwargs").and_then(Json::as_object),
                now: Some(now),
            };
            let what = format!(
                "{name} / {} (add_generation_prompt={agp})",
                case["conversation"]
            );
            let got = tmpl.render_measured(c["messages"].as_array().unwrap(), &opts);
            match (case.get("output").and_then(Json::as_str), got) {
                (Some(want), Ok((out, fuel))) => {
                    n_out += 1;
                    if fuel > max_fuel.0 {
                        max_fuel = (fuel, what.clone());
                    }
                    if want != out {
                        failures.push(format!("{what}: differs {}", first_difference(want, &out)));
                    }
                }
                (Some(_), Err(e)) => failures.push(format!("{what}: ember failed: {e}")),
                (None, Ok((out, _))) => {
                    if case["kind"] == "TemplateError" {
                        failures.push(format!(
                            "{what}: the template raised {:?} but ember rendered {:?}",
                            case["error"],
                            &out[..out.len().min(200)]
                        ));
                    }
                    n_lenient += 1;
                }
                (None, Err(e)) => {
                    n_err += 1;
                    let want = case["error"].as_str().unwrap();
                    if case["kind"] == "TemplateError" && !e.to_string().contains(want) {
                        failures.push(format!("{what}: error {e:?} does not carry {want:?}"));
                    }
                }
            }
        }
    }
    eprintln!(
        "{n_templates} templates: {n_out} renderings identical to transformers', {n_err} errors \
         where transformers failed too, {n_lenient} renderings where Python raised a TypeError; \
         most fuel: {} ({})",
        max_fuel.0, max_fuel.1
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn render_err(src: &str) -> String {
    let t = match ChatTemplate::new(src, "<s>", "</s>", TemplateOrigin::Given) {
        Ok(t) => t,
        Err(e) => return e.to_string(),
    };
    let msgs = [ember::chat::message("user", "hi")];
    match t.render(&msgs, &RenderOptions::default()) {
        Ok(out) => panic!("{src:?} rendered {:?}", &out[..out.len().min(100)]),
        Err(e) => {
            assert!(matches!(e, ember::Error::Template(_)), "{e:?}");
            e.to_string()
        }
    }
}

#[test]
fn bad_templates_say_what_and_where() {
    let e = render_err("{{ bos_token }}\n{% for m in messages %}\n{{ m.content }\n{% endfor %}");
    assert!(e.contains("syntax error") && e.contains("(line 3)"), "{e}");
    let e = render_err("{% for m in messages %}\n{% endfor %}\n{% if true %}");
    assert!(e.contains("syntax error") && e.contains("line 3"), "{e}");
    let e = render_err("ok\n{{ messages | no_such_filter }}");
    assert!(
        e.contains("unknown filter") && e.contains("(line 2)"),
        "{e}"
    );
    let e = render_err("{% if messages[0].role == 'user' %}\n  {{ raise_exception('Only system first, please') }}\n{% endif %}");
    assert!(
        e.contains("Only system first, please") && e.contains("(line 2)"),
        "{e}"
    );
    let e = render_err("{{ messages.no_such.attribute }}");
    assert!(e.contains("undefined") && e.contains("(line 1)"), "{e}");
    let e = render_err("{{ 'a'.no_such_method() }}");
    assert!(
        e.contains("unknown method") && e.contains("(line 1)"),
        "{e}"
    );
}

/// A template that never ends, recurses forever or builds a huge string fails within its
/// fuel, quickly, without the memory it asks for.
#[test]
fn runaway_templates_stop_within_their_bounds() {
    use std::time::{Duration, Instant};
    let cases = [
        ("nested loops", "{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}{% endfor %}{% endfor %}"),
        ("endless recursion", "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"),
        ("string doubling", "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}"),
        ("one huge string", "{{ 'x' * 10000000000 }}"),
        ("huge output", "{% for i in range(100000) %}{% for j in range(100000) %}xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx{% endfor %}{% endfor %}"),
        ("huge join", "{{ ('x' * 1000) | list | join('y' * 1000000) }}"),
        ("huge replace", "{{ ('x' * 10000).replace('x', 'y' * 100000) }}"),
    ];
    for (what, src) in cases {
        let t0 = Instant::now();
        let e = render_err(src);
        let took = t0.elapsed();
        eprintln!("{what}: {:?} in {took:?}", e);
        assert!(e.contains("fuel") || e.contains("recursion"), "{what}: {e}");
        // The default fuel (1M) is ~0.1 s of work on one core; 5 s leaves room for a slow,
        // loaded or emulated machine.
        assert!(took < Duration::from_secs(5), "{what} took {took:?}");
    }
    // The output bound on its own: plenty of fuel, a small output limit.
    let t = ChatTemplate::new(
        "{% for i in range(1000) %}0123456789{% endfor %}",
        "",
        "",
        TemplateOrigin::Given,
    )
    .unwrap()
    .with_limits(ember::chat::TemplateLimits {
        max_output: 5000,
        ..Default::default()
    });
    let e = t
        .render(&[], &RenderOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("over the limit of 5000 bytes"), "{e}");
}
