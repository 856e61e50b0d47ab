//! Python behaviours that Jinja2 chat templates rely on and minijinja does not have
//! built in: `json.dumps` (for transformers' `tojson`), `str()`/`repr()` of values,
//! the exact `str.strip/split/...` semantics, and `strftime`.
//!
//! Pure functions over minijinja values and strings; it must not know about chat
//! templates, files or tokenizers.

use std::fmt::Write;

use minijinja::value::ValueKind;
use minijinja::{Error, ErrorKind, Value};

use crate::calendar::civil_from_days;

/// Python's `str.isspace()` for one character (Rust's White_Space plus U+001C..U+001F).
pub(crate) fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `float.__repr__`: shortest round-trip digits, fixed notation for exponents in
/// -4..16, otherwise `d.ddde±XX`.
pub(crate) fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f < 0.0 { "-inf".into() } else { "inf".into() };
    }
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').expect("LowerExp always writes an exponent");
    let exp: i32 = exp.parse().expect("LowerExp exponent is an integer");
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let sign = if f.is_sign_negative() { "-" } else { "" };
    if (-4..16).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        let body = if point <= 0 {
            format!("0.{}{}", "0".repeat((-point) as usize), digits)
        } else if point as usize >= digits.len() {
            format!("{}{}.0", digits, "0".repeat(point as usize - digits.len()))
        } else {
            format!("{}.{}", &digits[..point as usize], &digits[point as usize..])
        };
        format!("{sign}{body}")
    } else {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() { String::new() } else { format!(".{rest}") };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{first}{frac}e{esign}{:02}", exp.abs())
    }
}

fn number_str(value: &Value) -> String {
    if value.is_integer() {
        value.to_string()
    } else {
        float_repr(f64::try_from(value.clone()).unwrap_or(f64::NAN))
    }
}

/// Python `str(value)` as Jinja2 prints it.
pub(crate) fn py_str(value: &Value) -> String {
    match value.kind() {
        ValueKind::Undefined => String::new(),
        ValueKind::String => value.as_str().unwrap_or_default().to_string(),
        ValueKind::Number => number_str(value),
        ValueKind::Seq | ValueKind::Map => {
            let mut out = String::new();
            py_repr(value, &mut out);
            out
        }
        _ => value.to_string(),
    }
}

/// Python `repr(value)` for JSON-like values (strings quoted, lists and dicts in Python
/// syntax). Non-printable characters are escaped for the common cases (controls,
/// Unicode separators, zero-width and bidi marks).
pub(crate) fn py_repr(value: &Value, out: &mut String) {
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("None"),
        ValueKind::Bool => out.push_str(if value.is_true() { "True" } else { "False" }),
        ValueKind::Number => out.push_str(&number_str(value)),
        ValueKind::String => repr_str(value.as_str().unwrap_or_default(), out),
        ValueKind::Seq => {
            out.push('[');
            if let Ok(iter) = value.try_iter() {
                for (i, item) in iter.enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    py_repr(&item, out);
                }
            }
            out.push(']');
        }
        ValueKind::Map => {
            out.push('{');
            if let Ok(iter) = value.try_iter() {
                for (i, key) in iter.enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    py_repr(&key, out);
                    out.push_str(": ");
                    py_repr(&value.get_item(&key).unwrap_or_default(), out);
                }
            }
            out.push('}');
        }
        _ => out.push_str(&value.to_string()),
    }
}

fn is_py_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    let cp = u32::from(c);
    !(c.is_control()
        || is_py_space(c)
        || matches!(cp, 0xAD | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x206F | 0xFEFF | 0xFFF9..=0xFFFB)
        || (0xE000..=0xF8FF).contains(&cp))
}

fn repr_str(s: &str, out: &mut String) {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if is_py_printable(c) => out.push(c),
            c => {
                let cp = u32::from(c);
                let _ = if cp < 0x100 {
                    write!(out, "\\x{cp:02x}")
                } else if cp < 0x10000 {
                    write!(out, "\\u{cp:04x}")
                } else {
                    write!(out, "\\U{cp:08x}")
                };
            }
        }
    }
    out.push(quote);
}

/// The longest text a template may build: its output or one `tojson` result. minijinja
/// itself refuses `"x" * n` past the same 100 MB.
pub(crate) const MAX_TEMPLATE_TEXT: usize = 100_000_000;

/// The widest `tojson` indent accepted (real templates use 2 or 4).
const MAX_INDENT: usize = 256;

/// Options of Python's `json.dumps` that transformers' `tojson` filter exposes.
#[derive(Debug, Clone)]
pub(crate) struct JsonOptions {
    pub ensure_ascii: bool,
    /// `None`: one line. `Some(unit)`: one item per line, indented by `unit` per level.
    pub indent: Option<String>,
    pub item_separator: String,
    pub key_separator: String,
    pub sort_keys: bool,
}

impl Default for JsonOptions {
    fn default() -> Self {
        JsonOptions { ensure_ascii: false, indent: None, item_separator: ", ".into(), key_separator: ": ".into(), sort_keys: false }
    }
}

impl JsonOptions {
    /// Build options from `json.dumps` argument values (`None`/undefined = default).
    pub(crate) fn from_python_args(
        ensure_ascii: Option<&Value>,
        indent: Option<&Value>,
        separators: Option<&Value>,
        sort_keys: Option<&Value>,
    ) -> Result<Self, Error> {
        let given = |v: Option<&Value>| v.filter(|v| !v.is_undefined() && !v.is_none()).cloned();
        let mut opts = JsonOptions { ensure_ascii: given(ensure_ascii).is_some_and(|v| v.is_true()), ..Default::default() };
        opts.sort_keys = given(sort_keys).is_some_and(|v| v.is_true());
        if let Some(indent) = given(indent) {
            let unit = if let Some(s) = indent.as_str() {
                s.to_string()
            } else if let Ok(n) = i64::try_from(indent.clone()) {
                if n > MAX_INDENT as i64 {
                    return Err(Error::new(ErrorKind::InvalidOperation, format!("tojson: indent {n} is wider than {MAX_INDENT}")));
                }
                " ".repeat(n.max(0) as usize)
            } else {
                return Err(Error::new(ErrorKind::InvalidOperation, "tojson: indent must be an integer or a string"));
            };
            if unit.len() > MAX_INDENT {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("tojson: indent is {} bytes, wider than {MAX_INDENT}", unit.len()),
                ));
            }
            opts.indent = Some(unit);
            opts.item_separator = ",".into();
        }
        if let Some(seps) = given(separators) {
            let parts: Vec<Value> = seps.try_iter()?.collect();
            match parts.as_slice() {
                [item, key] if item.as_str().is_some() && key.as_str().is_some() => {
                    opts.item_separator = item.as_str().unwrap_or_default().to_string();
                    opts.key_separator = key.as_str().unwrap_or_default().to_string();
                }
                _ => {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: separators must be a pair of strings (item_separator, key_separator)",
                    ))
                }
            }
        }
        Ok(opts)
    }
}

/// Python `json.dumps(value, ...)` of a template value.
pub(crate) fn json_dumps(value: &Value, opts: &JsonOptions) -> Result<String, Error> {
    let mut out = String::new();
    write_json(value, opts, 0, &mut out)?;
    Ok(out)
}

fn newline_indent(opts: &JsonOptions, level: usize, out: &mut String) {
    if let Some(unit) = &opts.indent {
        out.push('\n');
        for _ in 0..level {
            out.push_str(unit);
        }
    }
}

fn write_json(value: &Value, opts: &JsonOptions, level: usize, out: &mut String) -> Result<(), Error> {
    if out.len() > MAX_TEMPLATE_TEXT {
        return Err(Error::new(ErrorKind::InvalidOperation, format!("tojson: the result is longer than {MAX_TEMPLATE_TEXT} bytes")));
    }
    match value.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if value.is_integer() {
                out.push_str(&value.to_string());
            } else {
                let f = f64::try_from(value.clone())?;
                if f.is_nan() {
                    out.push_str("NaN");
                } else if f.is_infinite() {
                    out.push_str(if f < 0.0 { "-Infinity" } else { "Infinity" });
                } else {
                    out.push_str(&float_repr(f));
                }
            }
        }
        ValueKind::String => json_str(value.as_str().unwrap_or_default(), opts.ensure_ascii, out),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&opts.item_separator);
                }
                newline_indent(opts, level + 1, out);
                write_json(item, opts, level + 1, out)?;
            }
            newline_indent(opts, level, out);
            out.push(']');
        }
        ValueKind::Map => {
            let mut entries = Vec::new();
            for key in value.try_iter()? {
                let item = value.get_item(&key)?;
                entries.push((json_key(&key)?, item));
            }
            if entries.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            if opts.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
            out.push('{');
            for (i, (key, item)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(&opts.item_separator);
                }
                newline_indent(opts, level + 1, out);
                json_str(key, opts.ensure_ascii, out);
                out.push_str(&opts.key_separator);
                write_json(item, opts, level + 1, out)?;
            }
            newline_indent(opts, level, out);
            out.push('}');
        }
        kind => return Err(Error::new(ErrorKind::InvalidOperation, format!("tojson: object of type {kind} is not JSON serializable"))),
    }
    Ok(())
}

/// Python's conversion of dict keys for JSON: strings as is, numbers, booleans, None.
fn json_key(key: &Value) -> Result<String, Error> {
    Ok(match key.kind() {
        ValueKind::String => key.as_str().unwrap_or_default().to_string(),
        ValueKind::Number => number_str(key),
        ValueKind::Bool => (if key.is_true() { "true" } else { "false" }).into(),
        ValueKind::None => "null".into(),
        kind => {
            return Err(Error::new(ErrorKind::InvalidOperation, format!("tojson: keys must be str, int, float, bool or None, not {kind}")))
        }
    })
}

fn json_str(s: &str, ensure_ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if ensure_ascii && !(' '..='~').contains(&c) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

// ---------------------------------------------------------------- str methods

/// Python string methods whose minijinja-contrib versions differ from Python
/// (`strip()` whitespace set, `split()` with `maxsplit`, `rsplit`, ...).
/// Returns `None` for methods not handled here.
pub(crate) fn string_method(s: &str, method: &str, args: &[Value]) -> Option<Result<Value, Error>> {
    let result = match method {
        "strip" | "lstrip" | "rstrip" => strip_args(method, args).map(|chars| {
            let matches = |c: char| match &chars {
                Some(set) => set.contains(&c),
                None => is_py_space(c),
            };
            Value::from(match method {
                "strip" => s.trim_matches(matches),
                "lstrip" => s.trim_start_matches(matches),
                _ => s.trim_end_matches(matches),
            })
        }),
        "split" | "rsplit" => split_args(method, args).and_then(|(sep, maxsplit)| {
            let parts = match (&sep, method) {
                (None, "split") => split_whitespace(s, maxsplit),
                (None, _) => rsplit_whitespace(s, maxsplit),
                (Some(sep), _) if sep.is_empty() => {
                    return Err(Error::new(ErrorKind::InvalidOperation, "empty separator"));
                }
                (Some(sep), "split") => match maxsplit {
                    Some(n) => s.splitn(n + 1, sep.as_str()).map(str::to_string).collect(),
                    None => s.split(sep.as_str()).map(str::to_string).collect(),
                },
                (Some(sep), _) => {
                    let mut parts: Vec<String> = match maxsplit {
                        Some(n) => s.rsplitn(n + 1, sep.as_str()).map(str::to_string).collect(),
                        None => s.rsplit(sep.as_str()).map(str::to_string).collect(),
                    };
                    parts.reverse();
                    parts
                }
            };
            Ok(Value::from(parts))
        }),
        "removeprefix" | "removesuffix" => single_str_arg(method, args).map(|affix| {
            Value::from(if method == "removeprefix" {
                s.strip_prefix(affix.as_str()).unwrap_or(s)
            } else {
                s.strip_suffix(affix.as_str()).unwrap_or(s)
            })
        }),
        _ => return None,
    };
    Some(result)
}

fn arg_error(method: &str, what: &str) -> Error {
    Error::new(ErrorKind::InvalidOperation, format!("str.{method}(): {what}"))
}

fn positional(args: &[Value]) -> &[Value] {
    match args.last() {
        Some(last) if last.is_kwargs() => &args[..args.len() - 1],
        _ => args,
    }
}

fn strip_args(method: &str, args: &[Value]) -> Result<Option<Vec<char>>, Error> {
    match positional(args) {
        [] => Ok(None),
        [v] if v.is_none() || v.is_undefined() => Ok(None),
        [v] => match v.as_str() {
            Some(s) => Ok(Some(s.chars().collect())),
            None => Err(arg_error(method, "arg must be None or str")),
        },
        _ => Err(arg_error(method, "takes at most 1 argument")),
    }
}

fn split_args(method: &str, args: &[Value]) -> Result<(Option<String>, Option<usize>), Error> {
    let mut sep = None;
    let mut maxsplit = None;
    let positional_args = positional(args);
    if positional_args.len() > 2 {
        return Err(arg_error(method, "takes at most 2 arguments"));
    }
    let mut set_sep = |v: &Value| -> Result<(), Error> {
        if !(v.is_none() || v.is_undefined()) {
            sep = Some(v.as_str().ok_or_else(|| arg_error(method, "must be str or None"))?.to_string());
        }
        Ok(())
    };
    if let Some(v) = positional_args.first() {
        set_sep(v)?;
    }
    let mut max_value = positional_args.get(1).cloned();
    if let Some(kwargs) = args.last().filter(|v| v.is_kwargs()) {
        for key in kwargs.try_iter()? {
            let v = kwargs.get_item(&key)?;
            match key.as_str() {
                Some("sep") => set_sep(&v)?,
                Some("maxsplit") => max_value = Some(v),
                _ => return Err(arg_error(method, &format!("unexpected keyword argument {key}"))),
            }
        }
    }
    if let Some(v) = max_value {
        let n = i64::try_from(v).map_err(|_| arg_error(method, "maxsplit must be an integer"))?;
        maxsplit = (n >= 0).then_some(n as usize);
    }
    Ok((sep, maxsplit))
}

fn single_str_arg(method: &str, args: &[Value]) -> Result<String, Error> {
    match positional(args) {
        [v] => v.as_str().map(str::to_string).ok_or_else(|| arg_error(method, "argument must be str")),
        _ => Err(arg_error(method, "takes exactly one argument")),
    }
}

fn split_whitespace(s: &str, maxsplit: Option<usize>) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest = s.trim_start_matches(is_py_space);
    while !rest.is_empty() {
        if maxsplit == Some(parts.len()) {
            parts.push(rest.to_string());
            break;
        }
        let end = rest.find(is_py_space).unwrap_or(rest.len());
        parts.push(rest[..end].to_string());
        rest = rest[end..].trim_start_matches(is_py_space);
    }
    parts
}

fn rsplit_whitespace(s: &str, maxsplit: Option<usize>) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest = s.trim_end_matches(is_py_space);
    while !rest.is_empty() {
        if maxsplit == Some(parts.len()) {
            parts.push(rest.to_string());
            break;
        }
        let start = rest.rfind(is_py_space).map(|i| i + rest[i..].chars().next().map_or(1, char::len_utf8)).unwrap_or(0);
        parts.push(rest[start..].to_string());
        rest = rest[..start].trim_end_matches(is_py_space);
    }
    parts.reverse();
    parts
}

// ---------------------------------------------------------------- strftime

const WEEKDAYS: [&str; 7] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
const MONTHS: [&str; 12] =
    ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// C `strftime` of a UTC time given as seconds since the Unix epoch. Supports
/// `%a %A %b %B %c %d %e %F %H %I %j %m %M %p %S %T %u %w %y %Y %z %Z %%` and glibc's
/// `%-d`-style "no padding" flag; unknown directives are copied as they are.
pub(crate) fn strftime_utc(format: &str, unix_seconds: i64) -> String {
    let days = unix_seconds.div_euclid(86_400);
    let secs = unix_seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let weekday = (days + 4).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    const CUMULATIVE: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = CUMULATIVE[month as usize - 1] + day + u32::from(month > 2 && is_leap(year));
    let hour12 = if hour % 12 == 0 { 12 } else { hour % 12 };

    let mut out = String::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let no_pad = chars.peek() == Some(&'-');
        if no_pad {
            chars.next();
        }
        let Some(d) = chars.next() else {
            out.push('%');
            break;
        };
        let num = |v: i64, width: usize| {
            if no_pad {
                v.to_string()
            } else {
                format!("{v:0width$}")
            }
        };
        let text = match d {
            'a' => WEEKDAYS[weekday][..3].to_string(),
            'A' => WEEKDAYS[weekday].to_string(),
            'b' | 'h' => MONTHS[month as usize - 1][..3].to_string(),
            'B' => MONTHS[month as usize - 1].to_string(),
            'c' => format!(
                "{} {} {:>2} {:02}:{:02}:{:02} {}",
                &WEEKDAYS[weekday][..3],
                &MONTHS[month as usize - 1][..3],
                day,
                hour,
                minute,
                second,
                year
            ),
            'd' => num(day.into(), 2),
            'e' => {
                if no_pad {
                    day.to_string()
                } else {
                    format!("{day:>2}")
                }
            }
            'F' => format!("{year:04}-{month:02}-{day:02}"),
            'H' => num(hour, 2),
            'I' => num(hour12, 2),
            'j' => num(yday.into(), 3),
            'm' => num(month.into(), 2),
            'M' => num(minute, 2),
            'p' => (if hour < 12 { "AM" } else { "PM" }).to_string(),
            'S' => num(second, 2),
            'T' => format!("{hour:02}:{minute:02}:{second:02}"),
            'u' => (if weekday == 0 { 7 } else { weekday }).to_string(),
            'w' => weekday.to_string(),
            'y' => num(year.rem_euclid(100), 2),
            'Y' => year.to_string(),
            'z' => "+0000".to_string(),
            'Z' => "UTC".to_string(),
            '%' => "%".to_string(),
            other => format!("%{}{other}", if no_pad { "-" } else { "" }),
        };
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_repr_matches_python() {
        let cases = [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (1e-4, "0.0001"),
            (1e-5, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1e16, "1e+16"),
            (123456789012345678.0, "1.2345678901234568e+17"),
            (1e15, "1000000000000000.0"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (123.456, "123.456"),
            (1e300, "1e+300"),
        ];
        for (f, want) in cases {
            assert_eq!(float_repr(f), want, "repr({f:?})");
        }
    }

    fn dumps(v: serde_json::Value, opts: &JsonOptions) -> String {
        json_dumps(&Value::from_serialize(&v), opts).unwrap()
    }

    #[test]
    fn json_dumps_matches_python_defaults() {
        let v = serde_json::json!({"z": 1, "a": [1, 2.5, true, null], "s": "<b>&'\"\\\n\t\u{1}é😀", "e": {}, "l": []});
        // python3 -c 'import json; print(json.dumps({...}, ensure_ascii=False))'
        assert_eq!(
            dumps(v.clone(), &JsonOptions::default()),
            r#"{"z": 1, "a": [1, 2.5, true, null], "s": "<b>&'\"\\\n\t\u0001é😀", "e": {}, "l": []}"#
        );
        let ascii = JsonOptions { ensure_ascii: true, sort_keys: true, ..Default::default() };
        assert_eq!(
            dumps(v, &ascii),
            r#"{"a": [1, 2.5, true, null], "e": {}, "l": [], "s": "<b>&'\"\\\n\t\u0001\u00e9\ud83d\ude00", "z": 1}"#
        );
    }

    #[test]
    fn json_dumps_indent_and_separators() {
        let v = serde_json::json!({"a": [1, {"b": null}], "c": {}});
        let opts = JsonOptions::from_python_args(None, Some(&Value::from(2)), None, None).unwrap();
        assert_eq!(dumps(v.clone(), &opts), "{\n  \"a\": [\n    1,\n    {\n      \"b\": null\n    }\n  ],\n  \"c\": {}\n}");
        let opts = JsonOptions::from_python_args(None, Some(&Value::from(0)), None, None).unwrap();
        assert_eq!(dumps(serde_json::json!([1, 2]), &opts), "[\n1,\n2\n]");
        let seps = Value::from(vec![Value::from(","), Value::from(":")]);
        let opts = JsonOptions::from_python_args(None, None, Some(&seps), None).unwrap();
        assert_eq!(dumps(v, &opts), r#"{"a":[1,{"b":null}],"c":{}}"#);
    }

    fn call(s: &str, method: &str, args: &[Value]) -> Value {
        string_method(s, method, args).unwrap().unwrap()
    }

    fn strs(v: Value) -> Vec<String> {
        v.try_iter().unwrap().map(|x| x.as_str().unwrap().to_string()).collect()
    }

    #[test]
    fn string_methods_follow_python() {
        assert_eq!(call("\x1f a \n", "strip", &[]).as_str(), Some("a"));
        assert_eq!(call("\n\nx\n", "lstrip", &[Value::from("\n")]).as_str(), Some("x\n"));
        assert_eq!(call("xyhixy", "rstrip", &[Value::from("xy")]).as_str(), Some("xyhi"));
        assert_eq!(strs(call("  a b  c  ", "split", &[])), ["a", "b", "c"]);
        assert_eq!(strs(call("  a b  c  ", "split", &[Value::from(()), Value::from(1)])), ["a", "b  c  "]);
        assert_eq!(strs(call("  a b  c  ", "rsplit", &[Value::from(()), Value::from(1)])), ["  a b", "c"]);
        assert_eq!(strs(call("a</think>b</think>c", "split", &[Value::from("</think>")])), ["a", "b", "c"]);
        assert_eq!(strs(call("a,b,c", "rsplit", &[Value::from(","), Value::from(1)])), ["a,b", "c"]);
        assert_eq!(strs(call("", "split", &[])), Vec::<String>::new());
        assert_eq!(strs(call("", "split", &[Value::from(",")])), [""]);
        assert!(string_method("a", "split", &[Value::from("")]).unwrap().is_err());
        assert_eq!(call("prefix-x", "removeprefix", &[Value::from("prefix-")]).as_str(), Some("x"));
        assert!(string_method("a", "upper", &[]).is_none());
    }

    #[test]
    fn py_str_and_repr() {
        let v = Value::from_serialize(serde_json::json!(["it's", "a\"b'", 1.5, null, true, {"k": [1e-5]}]));
        assert_eq!(py_str(&v), r#"["it's", 'a"b\'', 1.5, None, True, {'k': [1e-05]}]"#);
        assert_eq!(py_str(&Value::from(())), "None");
        assert_eq!(py_str(&Value::UNDEFINED), "");
        assert_eq!(py_str(&Value::from(false)), "False");
        let mut out = String::new();
        py_repr(&Value::from("tab\there\u{7f}\u{a0}é"), &mut out);
        assert_eq!(out, r"'tab\there\x7f\xa0é'");
    }

    #[test]
    fn strftime_formats_known_dates() {
        // 2024-02-29T13:05:09Z, a Thursday, day 60 of a leap year.
        let t = 1_709_211_909;
        assert_eq!(strftime_utc("%Y-%m-%d %H:%M:%S", t), "2024-02-29 13:05:09");
        assert_eq!(strftime_utc("%d %b %Y", t), "29 Feb 2024");
        assert_eq!(strftime_utc("%A, %B %-d, %j, %I%p %y %% %Q", t), "Thursday, February 29, 060, 01PM 24 % %Q");
        assert_eq!(strftime_utc("%a %e %-m", 0), "Thu  1 1");
        // 1969-12-31T23:59:59Z
        assert_eq!(strftime_utc("%F %T %w", -1), "1969-12-31 23:59:59 3");
    }
}
