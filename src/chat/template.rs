//! The sandbox a chat template renders in: jinja2 as transformers configures it
//! (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols) with its
//! `raise_exception`, `strftime_now` and `tojson`, Python's printing of values and
//! Python's string methods. No loader: a template can reach no file and no network.
//! Every render is bounded by fuel (instructions and the memory they create), a recursion
//! limit and an output size, so a looping or exploding template is an error, not a hang.

use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Environment, Error as JError, ErrorKind, State, UndefinedBehavior, Value};
use serde_json::Value as Json;

use super::pyjson::{self, JsonStyle};
use super::{python, strftime};
use crate::error::{Error, Result};

/// What one render may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TemplateLimits {
    /// minijinja fuel: one per instruction, plus one per 64 bytes of data the template
    /// creates or prints. It bounds both time and memory (about 64 bytes per fuel).
    pub fuel: u64,
    /// Nesting of macro calls, loops and conditionals (minijinja caps it at 500).
    pub recursion: usize,
    /// Most bytes of rendered prompt.
    pub max_output: usize,
}

impl Default for TemplateLimits {
    fn default() -> Self {
        TemplateLimits {
            // The fixture templates use 0.2-3k fuel for a short conversation, ~60 per
            // extra message: 1M is a conversation of ~15k messages or ~60 MB of data,
            // and a render that exhausts it takes well under a second.
            fuel: 1_000_000,
            recursion: 200,
            // 16 MiB: a prompt several times larger than any context holds.
            max_output: 16 << 20,
        }
    }
}

/// Where a session's template came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TemplateOrigin {
    /// The model file's `tokenizer.chat_template`.
    Model,
    /// Given by the caller (`--template FILE`, `ember_chat_params.template`).
    Given,
    /// The file has none: a llama.cpp built-in picked for its architecture (the name).
    Builtin(&'static str),
}

/// A compiled chat template and the special-token texts it is given.
pub struct ChatTemplate {
    source: String,
    bos_token: String,
    eos_token: String,
    origin: TemplateOrigin,
    limits: TemplateLimits,
}

/// What a render takes besides the messages.
#[derive(Clone, Debug, Default)]
pub struct RenderOptions<'a> {
    /// End with the header of an assistant turn, for the model to write it.
    pub add_generation_prompt: bool,
    /// The tools (JSON schemas) the template may describe; `None` gives the template
    /// `tools = None`, as transformers does.
    pub tools: Option<&'a [Json]>,
    /// More template variables (`enable_thinking`, `date_string`...).
    pub extra: Option<&'a serde_json::Map<String, Json>>,
    /// The "now" of `strftime_now`, in Unix seconds read as UTC; `None` = the clock.
    pub now: Option<i64>,
}

/// A message as templates expect it: `{"role": ..., "content": ...}`.
pub fn message(role: &str, content: &str) -> Json {
    serde_json::json!({ "role": role, "content": content })
}

/// Writes into a String, refusing to grow past a bound.
struct Bounded {
    out: Vec<u8>,
    max: usize,
    over: bool,
}

impl io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.out.len() + buf.len() > self.max {
            self.over = true;
            return Err(io::Error::other("output limit"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A template error as ember reports it: the template's own message and line.
fn template_error(e: &JError, limits: &TemplateLimits) -> Error {
    let what = match e.kind() {
        ErrorKind::OutOfFuel => format!(
            "the template ran out of fuel ({} units: too much work, a loop that does not end, \
             or too much data)",
            limits.fuel
        ),
        kind => match e.detail() {
            Some(d) => format!("{kind}: {d}"),
            None => kind.to_string(),
        },
    };
    Error::Template(match e.line() {
        Some(line) => format!("{what} (line {line})"),
        None => what,
    })
}

fn raise_exception(msg: String) -> std::result::Result<Value, JError> {
    Err(JError::new(ErrorKind::InvalidOperation, msg))
}

/// transformers' `tojson(x, ensure_ascii=False, indent=None, separators=None,
/// sort_keys=False)`, i.e. Python's json.dumps.
fn tojson(
    state: &State,
    v: Value,
    ensure_ascii: Option<Value>,
    indent: Option<Value>,
    kw: Kwargs,
) -> std::result::Result<Value, JError> {
    // separators and sort_keys by keyword only (minijinja functions take few positionals).
    let mut opt = [ensure_ascii, indent, None, None];
    for (i, n) in ["ensure_ascii", "indent", "separators", "sort_keys"]
        .iter()
        .enumerate()
    {
        if let Some(v) = kw.get::<Option<Value>>(n)? {
            opt[i] = Some(v);
        }
    }
    kw.assert_all_used()?;
    fn set(v: &Option<Value>) -> Option<&Value> {
        v.as_ref().filter(|v| !v.is_none() && !v.is_undefined())
    }
    let mut style = JsonStyle {
        ensure_ascii: set(&opt[0]).is_some_and(Value::is_true),
        sort_keys: set(&opt[3]).is_some_and(Value::is_true),
        ..JsonStyle::default()
    };
    if let Some(ind) = set(&opt[1]) {
        style.indent = Some(match ind.as_str() {
            Some(s) => s.to_owned(),
            None => " ".repeat(ind.as_i64().unwrap_or(0).clamp(0, 64) as usize),
        });
        style.item_sep = ",".into();
    }
    if let Some(sep) = set(&opt[2]) {
        let parts: Vec<Value> = sep.try_iter()?.collect();
        match (
            parts.first().and_then(Value::as_str),
            parts.get(1).and_then(Value::as_str),
            parts.len(),
        ) {
            (Some(a), Some(b), 2) => {
                style.item_sep = a.to_owned();
                style.key_sep = b.to_owned();
            }
            _ => {
                return Err(JError::new(
                    ErrorKind::InvalidOperation,
                    "separators must be two strings",
                ))
            }
        }
    }
    let mut out = String::new();
    pyjson::dumps(&v, &style, 0, &mut out)?;
    state.consume_fuel((out.len() / 64) as u64)?;
    Ok(Value::from(out))
}

/// Python's `str(x)` (jinja2's `string` filter).
fn py_string(v: Value) -> std::result::Result<Value, JError> {
    let mut s = String::new();
    pyjson::str_of(&v, 0, &mut s)?;
    Ok(Value::from(s))
}

/// jinja2's `trim(value, chars=None)` is Python's `str.strip`.
fn py_trim(v: Value, chars: Option<Value>) -> std::result::Result<Value, JError> {
    let mut s = String::new();
    pyjson::str_of(&v, 0, &mut s)?;
    Ok(Value::from(
        python::py_strip(&s, chars.as_ref(), true, true)?.to_owned(),
    ))
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl ChatTemplate {
    /// Compiles `source` (an error names the line of a syntax error). `bos_token` and
    /// `eos_token` are the texts the template sees as those variables.
    pub fn new(
        source: &str,
        bos_token: &str,
        eos_token: &str,
        origin: TemplateOrigin,
    ) -> Result<ChatTemplate> {
        let t = ChatTemplate {
            source: source.to_owned(),
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
            origin,
            limits: TemplateLimits::default(),
        };
        let env = t.env(0);
        env.template_from_named_str("chat_template", &t.source)
            .map_err(|e| template_error(&e, &t.limits))?;
        Ok(t)
    }

    /// Replaces the render limits.
    pub fn with_limits(mut self, limits: TemplateLimits) -> ChatTemplate {
        self.limits = limits;
        self
    }

    pub fn limits(&self) -> &TemplateLimits {
        &self.limits
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn origin(&self) -> &TemplateOrigin {
        &self.origin
    }

    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }

    pub fn eos_token(&self) -> &str {
        &self.eos_token
    }

    fn env(&self, now: i64) -> Environment<'_> {
        // The builtin filters, tests and globals (range, dict, namespace); no loader.
        let mut env = Environment::new();
        let mut syntax = minijinja::syntax::SyntaxConfig::builder();
        // jinja2's default keep_trailing_newline=False drops the source's last newline.
        syntax
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(false);
        if let Ok(s) = syntax.build() {
            env.set_syntax(s);
        }
        env.set_undefined_behavior(UndefinedBehavior::Lenient);
        env.set_fuel(Some(self.limits.fuel));
        env.set_recursion_limit(self.limits.recursion);
        env.set_unknown_method_callback(|st, v, m, a| python::unknown_method(st, v, m, a));
        env.set_formatter(|out, _state, v| {
            if let Some(s) = v.as_str() {
                out.write_str(s)
                    .map_err(|_| JError::from(ErrorKind::WriteFailure))
            } else {
                let mut s = String::new();
                pyjson::str_of(v, 0, &mut s)?;
                out.write_str(&s)
                    .map_err(|_| JError::from(ErrorKind::WriteFailure))
            }
        });
        env.add_filter("tojson", tojson);
        env.add_filter("string", py_string);
        env.add_filter("trim", py_trim);
        // jinja2's tests ask Python: None is not iterable; a str or a dict is a sequence.
        env.add_test("iterable", |v: Value| {
            v.kind() != ValueKind::None && v.try_iter().is_ok()
        });
        env.add_test("sequence", |v: Value| {
            matches!(
                v.kind(),
                ValueKind::String | ValueKind::Seq | ValueKind::Map | ValueKind::Undefined
            )
        });
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", move |fmt: String| {
            Value::from(strftime::strftime(&fmt, &strftime::civil(now)))
        });
        env
    }

    /// Renders `messages` (JSON objects with at least a role) as the prompt text.
    pub fn render(&self, messages: &[Json], opts: &RenderOptions<'_>) -> Result<String> {
        self.render_measured(messages, opts).map(|(s, _)| s)
    }

    /// [`ChatTemplate::render`] that also says how much fuel the render used.
    pub fn render_measured(
        &self,
        messages: &[Json],
        opts: &RenderOptions<'_>,
    ) -> Result<(String, u64)> {
        let env = self.env(opts.now.unwrap_or_else(now_unix));
        let ctx = self.context(messages, opts)?;
        let tmpl = env
            .template_from_named_str("chat_template", &self.source)
            .map_err(|e| template_error(&e, &self.limits))?;
        let mut w = Bounded {
            out: Vec::new(),
            max: self.limits.max_output,
            over: false,
        };
        let rendered = tmpl
            .render_captured_to(ctx, &mut w)
            .map(|c| c.state().fuel_levels().map_or(0, |(used, _)| used));
        match rendered {
            Ok(used) => {
                let s = String::from_utf8(w.out).map_err(|e| {
                    Error::Template(format!(
                        "the output is not UTF-8 at byte {}",
                        e.utf8_error().valid_up_to()
                    ))
                })?;
                Ok((s, used))
            }
            Err(_) if w.over => Err(Error::Template(format!(
                "the rendered prompt is over the limit of {} bytes",
                self.limits.max_output
            ))),
            Err(e) => Err(template_error(&e, &self.limits)),
        }
    }

    /// The template's variables, as transformers' `apply_chat_template` passes them:
    /// messages with None-valued keys dropped and reasoning aliased, tools, documents,
    /// add_generation_prompt, the special tokens, then the extra variables.
    fn context(&self, messages: &[Json], opts: &RenderOptions<'_>) -> Result<Value> {
        let mut msgs = Vec::with_capacity(messages.len());
        for (i, m) in messages.iter().enumerate() {
            let Json::Object(obj) = m else {
                return Err(Error::InvalidArgument(format!(
                    "message {i} is not a JSON object"
                )));
            };
            let mut obj: serde_json::Map<String, Json> = obj
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            alias_reasoning(&mut obj);
            msgs.push(Json::Object(obj));
        }
        let mut vars: Vec<(String, Value)> = vec![
            ("messages".into(), to_value(&Json::Array(msgs))),
            (
                "tools".into(),
                opts.tools.map_or(Value::from(()), |t| {
                    Value::from(t.iter().map(to_value).collect::<Vec<_>>())
                }),
            ),
            ("documents".into(), Value::from(())),
            (
                "add_generation_prompt".into(),
                Value::from(opts.add_generation_prompt),
            ),
            ("bos_token".into(), Value::from(self.bos_token.clone())),
            ("eos_token".into(), Value::from(self.eos_token.clone())),
        ];
        for (k, v) in opts.extra.into_iter().flatten() {
            let fixed = ["messages", "tools", "documents", "add_generation_prompt"];
            if fixed.contains(&k.as_str()) {
                return Err(Error::InvalidArgument(format!(
                    "template variable '{k}' is set by ember"
                )));
            }
            let v = to_value(v);
            match vars.iter_mut().find(|(n, _)| n == k) {
                Some(slot) => slot.1 = v,
                None => vars.push((k.clone(), v)),
            }
        }
        Ok(Value::from_pairs(vars))
    }
}

/// A JSON value as a template value (maps keep their key order).
pub(crate) fn to_value(j: &Json) -> Value {
    match j {
        Json::Null => Value::from(()),
        Json::Bool(b) => Value::from(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Json::String(s) => Value::from(s.as_str()),
        Json::Array(a) => Value::from(a.iter().map(to_value).collect::<Vec<_>>()),
        Json::Object(o) => Value::from_pairs(o.iter().map(|(k, v)| (k.as_str(), to_value(v)))),
    }
}

/// transformers' `_alias_reasoning_fields`: a message's reasoning, under any of its names,
/// is also given as `thinking` (first) and `reasoning_content` (last).
fn alias_reasoning(obj: &mut serde_json::Map<String, Json>) {
    let Some(r) = ["reasoning_content", "thinking", "reasoning"]
        .iter()
        .find_map(|k| obj.get(*k).cloned())
    else {
        return;
    };
    let mut out = serde_json::Map::new();
    out.insert("thinking".into(), r.clone());
    for (k, v) in std::mem::take(obj) {
        out.insert(k, v);
    }
    out.insert("reasoning_content".into(), r);
    *obj = out;
}
