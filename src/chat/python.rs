//! The Python `str`, `dict` and `list` methods that chat templates call
//! (`message.content.strip()`, `tool.items()`...), with Python's semantics: jinja2 runs
//! templates in Python, so a method behaves as CPython's does, whitespace set included.

use minijinja::value::{from_args, Kwargs, Rest, ValueKind};
use minijinja::{Error, ErrorKind, State, Value};

/// Python's `str.isspace()` for one character: Unicode White_Space plus the four ASCII
/// information separators (0x1c..0x1f), which Python counts and Rust does not.
pub(crate) fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.splitlines()` boundaries.
fn is_line_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r'
            | '\u{b}'
            | '\u{c}'
            | '\u{1c}'
            | '\u{1d}'
            | '\u{1e}'
            | '\u{85}'
            | '\u{2028}'
            | '\u{2029}'
    )
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg.into())
}

/// `strip`/`lstrip`/`rstrip` with Python's argument: None strips whitespace, a string
/// strips any of its characters.
pub(crate) fn py_strip<'a>(
    s: &'a str,
    chars: Option<&Value>,
    left: bool,
    right: bool,
) -> Result<&'a str, Error> {
    let set: Option<Vec<char>> = match chars {
        None => None,
        Some(v) if v.is_none() || v.is_undefined() => None,
        Some(v) => Some(
            v.as_str()
                .ok_or_else(|| invalid("strip arg must be None or str"))?
                .chars()
                .collect(),
        ),
    };
    let strip = |c: char| match &set {
        None => is_py_space(c),
        Some(set) => set.contains(&c),
    };
    let mut s = s;
    if left {
        s = s.trim_start_matches(strip);
    }
    if right {
        s = s.trim_end_matches(strip);
    }
    Ok(s)
}

/// `str.split(sep=None, maxsplit=-1)` (or `rsplit` when `from_right`).
fn py_split(
    s: &str,
    sep: Option<&str>,
    maxsplit: i64,
    from_right: bool,
) -> Result<Vec<String>, Error> {
    let limit = if maxsplit < 0 {
        usize::MAX
    } else {
        maxsplit as usize
    };
    let mut parts: Vec<String> = Vec::new();
    match sep {
        Some("") => return Err(invalid("empty separator")),
        Some(sep) => {
            if from_right {
                let mut rest = s;
                while parts.len() < limit {
                    match rest.rfind(sep) {
                        Some(i) => {
                            parts.push(rest[i + sep.len()..].to_owned());
                            rest = &rest[..i];
                        }
                        None => break,
                    }
                }
                parts.push(rest.to_owned());
                parts.reverse();
            } else {
                let mut rest = s;
                while parts.len() < limit {
                    match rest.find(sep) {
                        Some(i) => {
                            parts.push(rest[..i].to_owned());
                            rest = &rest[i + sep.len()..];
                        }
                        None => break,
                    }
                }
                parts.push(rest.to_owned());
            }
        }
        None => {
            // Runs of whitespace separate; leading and trailing whitespace give no empty
            // parts; after maxsplit splits the rest is one part with its leading space cut.
            if from_right {
                let mut rest = s.trim_end_matches(is_py_space);
                while !rest.is_empty() {
                    if parts.len() == limit {
                        parts.push(rest.to_owned());
                        break;
                    }
                    match rest.rfind(is_py_space) {
                        Some(i) => {
                            let ch = rest[i..].chars().next().map_or(1, char::len_utf8);
                            parts.push(rest[i + ch..].to_owned());
                            rest = rest[..i].trim_end_matches(is_py_space);
                        }
                        None => {
                            parts.push(rest.to_owned());
                            break;
                        }
                    }
                }
                parts.reverse();
            } else {
                let mut rest = s.trim_start_matches(is_py_space);
                while !rest.is_empty() {
                    if parts.len() == limit {
                        parts.push(rest.to_owned());
                        break;
                    }
                    match rest.find(is_py_space) {
                        Some(i) => {
                            parts.push(rest[..i].to_owned());
                            rest = rest[i..].trim_start_matches(is_py_space);
                        }
                        None => {
                            parts.push(rest.to_owned());
                            break;
                        }
                    }
                }
            }
        }
    }
    Ok(parts)
}

fn py_splitlines(s: &str, keepends: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut it = s.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        if is_line_break(c) {
            let mut end = i + c.len_utf8();
            if c == '\r' && it.peek().map(|&(_, n)| n) == Some('\n') {
                it.next();
                end += 1;
            }
            out.push(s[start..if keepends { end } else { i }].to_owned());
            start = end;
        }
    }
    if start < s.len() {
        out.push(s[start..].to_owned());
    }
    out
}

fn is_cased(c: char) -> bool {
    c.is_lowercase() || c.is_uppercase() || c.to_lowercase().ne(c.to_uppercase())
}

/// Python's title case of one character, approximated from its upper case: a
/// multi-character upper case keeps only its first letter upper (ß -> Ss, ﬁ -> Fi).
fn push_title(c: char, out: &mut String) {
    let mut up = c.to_uppercase();
    out.extend(up.next());
    out.extend(up.flat_map(char::to_lowercase));
}

/// `str.title()`: each run of cased characters starts upper and goes on lower.
pub(crate) fn py_title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_cased = false;
    for c in s.chars() {
        if prev_cased {
            out.extend(c.to_lowercase());
        } else {
            push_title(c, &mut out);
        }
        prev_cased = is_cased(c);
    }
    out
}

fn py_capitalize(s: &str) -> String {
    let mut cs = s.chars();
    let mut out = String::with_capacity(s.len());
    if let Some(f) = cs.next() {
        push_title(f, &mut out);
    }
    out.extend(cs.flat_map(char::to_lowercase));
    out
}

/// The prefix (or tuple of prefixes) argument of startswith/endswith.
fn any_affix(arg: &Value, test: impl Fn(&str) -> bool) -> Result<bool, Error> {
    if let Some(a) = arg.as_str() {
        return Ok(test(a));
    }
    if matches!(arg.kind(), ValueKind::Seq | ValueKind::Iterable) {
        for a in arg.try_iter()? {
            let a = a
                .as_str()
                .ok_or_else(|| invalid("tuple for startswith/endswith must only contain str"))?
                .to_owned();
            if test(&a) {
                return Ok(true);
            }
        }
        return Ok(false);
    }
    Err(invalid(format!(
        "startswith/endswith first arg must be str or a tuple of str, not {}",
        arg.kind()
    )))
}

fn char_index(s: &str, byte: Option<usize>) -> i64 {
    byte.map_or(-1, |b| s[..b].chars().count() as i64)
}

fn strs(v: Vec<String>) -> Value {
    Value::from(v.into_iter().map(Value::from).collect::<Vec<_>>())
}

/// Charges fuel for output a method creates beyond its input, before creating it.
fn pay(state: &State, bytes: usize) -> Result<(), Error> {
    state.consume_fuel((bytes / 64) as u64)
}

fn string_method(state: &State, s: &str, method: &str, args: &[Value]) -> Result<Value, Error> {
    let v = |x: &str| Value::from(x.to_owned());
    Ok(match method {
        "upper" => {
            let () = from_args(args)?;
            Value::from(s.to_uppercase())
        }
        "lower" => {
            let () = from_args(args)?;
            Value::from(s.to_lowercase())
        }
        "strip" | "lstrip" | "rstrip" => {
            let (chars,): (Option<Value>,) = from_args(args)?;
            let (l, r) = (method != "rstrip", method != "lstrip");
            v(py_strip(s, chars.as_ref(), l, r)?)
        }
        "split" | "rsplit" => {
            let (sep, maxsplit, kw): (Option<Value>, Option<i64>, Kwargs) = from_args(args)?;
            let sep = kw.get::<Option<Value>>("sep")?.or(sep);
            let maxsplit = kw
                .get::<Option<i64>>("maxsplit")?
                .or(maxsplit)
                .unwrap_or(-1);
            kw.assert_all_used()?;
            let sep = match &sep {
                Some(x) if !x.is_none() => Some(
                    x.as_str()
                        .ok_or_else(|| invalid("must be str or None"))?
                        .to_owned(),
                ),
                _ => None,
            };
            strs(py_split(s, sep.as_deref(), maxsplit, method == "rsplit")?)
        }
        "splitlines" => {
            let (keepends,): (Option<bool>,) = from_args(args)?;
            strs(py_splitlines(s, keepends.unwrap_or(false)))
        }
        "startswith" => {
            let (p, _rest): (Value, Rest<Value>) = from_args(args)?;
            Value::from(any_affix(&p, |a| s.starts_with(a))?)
        }
        "endswith" => {
            let (p, _rest): (Value, Rest<Value>) = from_args(args)?;
            Value::from(any_affix(&p, |a| s.ends_with(a))?)
        }
        "replace" => {
            let (old, new, count): (&str, &str, Option<i64>) = from_args(args)?;
            let n = s.matches(old).count() + usize::from(old.is_empty());
            let n = match count {
                Some(c) if c >= 0 => n.min(c as usize),
                _ => n,
            };
            pay(state, n.saturating_mul(new.len()))?;
            Value::from(s.replacen(old, new, n))
        }
        "title" => {
            let () = from_args(args)?;
            Value::from(py_title(s))
        }
        "capitalize" => {
            let () = from_args(args)?;
            Value::from(py_capitalize(s))
        }
        "find" | "index" => {
            let (sub,): (&str,) = from_args(args)?;
            let i = char_index(s, s.find(sub));
            if i < 0 && method == "index" {
                return Err(invalid("substring not found"));
            }
            Value::from(i)
        }
        "rfind" | "rindex" => {
            let (sub,): (&str,) = from_args(args)?;
            let i = char_index(s, s.rfind(sub));
            if i < 0 && method == "rindex" {
                return Err(invalid("substring not found"));
            }
            Value::from(i)
        }
        "count" => {
            let (sub,): (&str,) = from_args(args)?;
            Value::from(if sub.is_empty() {
                s.chars().count() + 1
            } else {
                s.matches(sub).count()
            })
        }
        "join" => {
            let (items,): (Value,) = from_args(args)?;
            let mut out = String::new();
            for (i, item) in items.try_iter()?.enumerate() {
                let item = item
                    .as_str()
                    .ok_or_else(|| invalid(format!("sequence item {i}: expected str instance")))?
                    .to_owned();
                if i > 0 {
                    pay(state, s.len())?;
                    out.push_str(s);
                }
                out.push_str(&item);
            }
            Value::from(out)
        }
        "isspace" => Value::from(!s.is_empty() && s.chars().all(is_py_space)),
        "isdigit" | "isnumeric" | "isdecimal" => {
            Value::from(!s.is_empty() && s.chars().all(|c| c.is_numeric()))
        }
        "isalpha" => Value::from(!s.is_empty() && s.chars().all(char::is_alphabetic)),
        "isalnum" => Value::from(!s.is_empty() && s.chars().all(char::is_alphanumeric)),
        "isupper" => {
            Value::from(s.chars().any(char::is_uppercase) && !s.chars().any(char::is_lowercase))
        }
        "islower" => {
            Value::from(s.chars().any(char::is_lowercase) && !s.chars().any(char::is_uppercase))
        }
        "removeprefix" => {
            let (p,): (&str,) = from_args(args)?;
            v(s.strip_prefix(p).unwrap_or(s))
        }
        "removesuffix" => {
            let (p,): (&str,) = from_args(args)?;
            v(s.strip_suffix(p).unwrap_or(s))
        }
        _ => return Err(Error::from(ErrorKind::UnknownMethod)),
    })
}

fn map_method(value: &Value, method: &str, args: &[Value]) -> Result<Value, Error> {
    Ok(match method {
        "items" => {
            let () = from_args(args)?;
            let mut pairs = Vec::new();
            for k in value.try_iter()? {
                let val = value.get_item(&k)?;
                pairs.push(Value::from(vec![k, val]));
            }
            Value::from(pairs)
        }
        "keys" => {
            let () = from_args(args)?;
            Value::from(value.try_iter()?.collect::<Vec<_>>())
        }
        "values" => {
            let () = from_args(args)?;
            let mut vals = Vec::new();
            for k in value.try_iter()? {
                vals.push(value.get_item(&k)?);
            }
            Value::from(vals)
        }
        "get" => {
            let (key, default): (Value, Option<Value>) = from_args(args)?;
            let got = value.get_item(&key)?;
            if got.is_undefined() {
                default.unwrap_or(Value::from(()))
            } else {
                got
            }
        }
        _ => return Err(Error::from(ErrorKind::UnknownMethod)),
    })
}

fn seq_method(value: &Value, method: &str, args: &[Value]) -> Result<Value, Error> {
    Ok(match method {
        "count" => {
            let (what,): (Value,) = from_args(args)?;
            Value::from(value.try_iter()?.filter(|x| *x == what).count())
        }
        "index" => {
            let (what,): (Value,) = from_args(args)?;
            match value.try_iter()?.position(|x| x == what) {
                Some(i) => Value::from(i),
                None => return Err(invalid(format!("{what} is not in list"))),
            }
        }
        _ => return Err(Error::from(ErrorKind::UnknownMethod)),
    })
}

/// minijinja's hook for methods it does not know itself.
pub(crate) fn unknown_method(
    state: &State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, Error> {
    match value.kind() {
        ValueKind::String => string_method(state, value.as_str().unwrap_or_default(), method, args),
        ValueKind::Map => map_method(value, method, args),
        ValueKind::Seq => seq_method(value, method, args),
        _ => Err(Error::from(ErrorKind::UnknownMethod)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &str, sep: Option<&str>, n: i64, r: bool) -> Vec<String> {
        py_split(s, sep, n, r).unwrap()
    }

    #[test]
    fn split_is_pythons() {
        // Expected values are what CPython 3.11 returns.
        assert_eq!(split("  a  b c ", None, -1, false), ["a", "b", "c"]);
        assert_eq!(split("  a  b c ", None, 1, false), ["a", "b c "]);
        assert_eq!(split("  a  b c ", None, 1, true), ["  a  b", "c"]);
        assert_eq!(split("a,b,,c", Some(","), -1, false), ["a", "b", "", "c"]);
        assert_eq!(split("a,b,,c", Some(","), 2, true), ["a,b", "", "c"]);
        assert_eq!(split("", None, -1, false), Vec::<String>::new());
        assert_eq!(split("", Some(","), -1, false), [""]);
        assert_eq!(split("x</think>y", Some("</think>"), -1, false), ["x", "y"]);
        assert_eq!(split("a\u{1c}b", None, -1, false), ["a", "b"]);
    }

    #[test]
    fn splitlines_title_strip_are_pythons() {
        assert_eq!(
            py_splitlines("a\r\nb\rc\n\nd\u{2028}", false),
            ["a", "b", "c", "", "d"]
        );
        assert_eq!(py_splitlines("a\r\nb", true), ["a\r\n", "b"]);
        assert_eq!(py_title("they're bill's friends"), "They'Re Bill'S Friends");
        assert_eq!(py_title("hello wORLD 3rd"), "Hello World 3Rd");
        assert_eq!(py_capitalize("hELLO"), "Hello");
        assert_eq!(py_strip("\u{1f} x \n", None, true, true).unwrap(), "x");
        let chars = Value::from("xy");
        assert_eq!(py_strip("xyaxy", Some(&chars), true, false).unwrap(), "axy");
    }
}
