//! Native builtins: global functions, methods on built-in types, indexing and operators.
//! Library code that reads better in conc lives in `stdlib/` instead.

use crate::error::{ErrorKind, RuntimeError};
use crate::interp::{fail, type_error, Interp, Unwind, R};
use crate::syntax::ast::BinOp;
use crate::syntax::Span;
use crate::value::{Key, RangeValue, Value};
use std::cmp::Ordering;
use std::collections::HashMap;
use std::io::{BufRead, Read, Write};
use std::sync::{Arc, OnceLock};

/// Evaluated arguments with the span of each, so errors can point at the one that is wrong.
pub struct Args {
    pub vals: Vec<Value>,
    pub spans: Vec<Span>,
    pub call: Span,
}

impl Args {
    pub fn new(call: Span, n: usize) -> Args {
        Args { vals: Vec::with_capacity(n), spans: Vec::with_capacity(n), call }
    }

    pub fn push(&mut self, v: Value, span: Span) {
        self.vals.push(v);
        self.spans.push(span);
    }

    pub fn len(&self) -> usize {
        self.vals.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vals.is_empty()
    }

    pub fn span(&self, i: usize) -> Span {
        self.spans.get(i).copied().unwrap_or(self.call)
    }

    pub fn get(&self, i: usize) -> Option<&Value> {
        self.vals.get(i)
    }

    /// Check the argument count; `what` names the function in the message.
    pub fn expect(&self, what: &str, min: usize, max: usize) -> R<()> {
        let n = self.len();
        if n >= min && n <= max {
            return Ok(());
        }
        let want = if min == max {
            format!("{min} argument{}", if min == 1 { "" } else { "s" })
        } else if max == usize::MAX {
            format!("at least {min} argument{}", if min == 1 { "" } else { "s" })
        } else {
            format!("{min} to {max} arguments")
        };
        fail(
            ErrorKind::Type,
            format!("`{what}` takes {want} but {n} {} given", if n == 1 { "was" } else { "were" }),
            self.call,
        )
    }

    pub fn int(&self, i: usize, what: &str) -> R<i64> {
        match self.vals.get(i) {
            Some(Value::Int(n)) => Ok(*n),
            Some(v) => {
                Err(type_error(format!("`{what}` expects an int, got {}", crate::builtins::a_type(v)), self.span(i), v))
            }
            None => fail(ErrorKind::Type, format!("`{what}` is missing an argument"), self.call),
        }
    }

    pub fn num(&self, i: usize, what: &str) -> R<f64> {
        match self.vals.get(i) {
            Some(Value::Int(n)) => Ok(*n as f64),
            Some(Value::Float(f)) => Ok(*f),
            Some(v) => Err(type_error(
                format!("`{what}` expects a number, got {}", crate::builtins::a_type(v)),
                self.span(i),
                v,
            )),
            None => fail(ErrorKind::Type, format!("`{what}` is missing an argument"), self.call),
        }
    }

    pub fn str(&self, i: usize, what: &str) -> R<Arc<str>> {
        match self.vals.get(i) {
            Some(Value::Str(s)) => Ok(s.clone()),
            Some(v) => Err(type_error(
                format!("`{what}` expects a string, got {}", crate::builtins::a_type(v)),
                self.span(i),
                v,
            )),
            None => fail(ErrorKind::Type, format!("`{what}` is missing an argument"), self.call),
        }
    }

    pub fn list(&self, i: usize, what: &str) -> R<Arc<Vec<Value>>> {
        match self.vals.get(i) {
            Some(v) => to_list(v).ok_or_else(|| {
                type_error(format!("`{what}` expects a list, got {}", crate::builtins::a_type(v)), self.span(i), v)
            }),
            None => fail(ErrorKind::Type, format!("`{what}` is missing an argument"), self.call),
        }
    }

    /// An optional timeout in seconds; `nil` or absent means no timeout.
    pub fn timeout(&self, i: usize, what: &str) -> R<Option<std::time::Duration>> {
        match self.vals.get(i) {
            None | Some(Value::Nil) => Ok(None),
            Some(_) => {
                let secs = self.num(i, what)?;
                if secs < 0.0 || !secs.is_finite() {
                    return fail(
                        ErrorKind::Value,
                        format!("`{what}` needs a timeout of zero or more seconds"),
                        self.span(i),
                    );
                }
                Ok(Some(std::time::Duration::from_secs_f64(secs)))
            }
        }
    }
}

type Builtin = fn(&mut Interp, Args) -> R<Value>;
/// The builtins in order, and their indexes by name.
type Table = (Vec<(&'static str, Builtin)>, HashMap<&'static str, u32>);

/// Every global builtin function, by name. Runtime constructs add theirs from `runtime::BUILTINS`.
fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut list: Vec<(&'static str, Builtin)> = vec![
            ("print", b_print),
            ("eprint", b_eprint),
            ("repr", |_, a| {
                a.expect("repr", 1, 1)?;
                Ok(Value::str(a.vals[0].repr()))
            }),
            ("len", b_len),
            ("range", b_range),
            ("type", |_, a| {
                a.expect("type", 1, 1)?;
                Ok(Value::str(a.vals[0].type_name()))
            }),
            ("str", |_, a| {
                a.expect("str", 1, 1)?;
                Ok(match &a.vals[0] {
                    Value::Str(s) => Value::Str(s.clone()),
                    Value::Bytes(b) => Value::str(String::from_utf8_lossy(b)),
                    v => Value::str(v.to_string()),
                })
            }),
            ("int", b_int),
            ("float", b_float),
            ("bool", |_, a| {
                a.expect("bool", 1, 1)?;
                Ok(Value::Bool(a.vals[0].truthy()))
            }),
            ("list", |i, a| {
                a.expect("list", 1, 1)?;
                if let Value::Object(_) = &a.vals[0] {
                    // Channels, files and other runtime objects that a `for` loop can go through.
                    let mut items = Vec::new();
                    while let Some(v) = crate::runtime::iterate_next(i, &a.vals[0], a.span(0))? {
                        items.push(v);
                    }
                    return Ok(Value::list(items));
                }
                Ok(Value::List(a.list(0, "list")?))
            }),
            ("error", b_error),
            ("assert", b_assert),
            ("assert_eq", b_assert_eq),
            ("now", |_, a| {
                a.expect("now", 0, 0)?;
                let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                Ok(Value::Float(t.as_secs_f64()))
            }),
            ("clock", |_, a| {
                a.expect("clock", 0, 0)?;
                static START: OnceLock<std::time::Instant> = OnceLock::new();
                Ok(Value::Float(START.get_or_init(std::time::Instant::now).elapsed().as_secs_f64()))
            }),
            ("sleep", b_sleep),
            ("read_file", b_read_file),
            ("write_file", |i, a| write_file(i, a, false)),
            ("append_file", |i, a| write_file(i, a, true)),
            ("exists", |i, a| {
                a.expect("exists", 1, 1)?;
                i.shared.settings.require_fs(a.call)?;
                Ok(Value::Bool(std::path::Path::new(&*a.str(0, "exists")?).exists()))
            }),
            ("is_dir", |i, a| {
                a.expect("is_dir", 1, 1)?;
                i.shared.settings.require_fs(a.call)?;
                Ok(Value::Bool(std::path::Path::new(&*a.str(0, "is_dir")?).is_dir()))
            }),
            ("list_dir", b_list_dir),
            ("stat", b_stat),
            ("remove_file", |i, a| {
                a.expect("remove_file", 1, 1)?;
                i.shared.settings.require_fs(a.call)?;
                let p = a.str(0, "remove_file")?;
                std::fs::remove_file(&*p).map_err(|e| io_error(&e, &p, a.span(0)))?;
                Ok(Value::Nil)
            }),
            ("make_dir", |i, a| {
                a.expect("make_dir", 1, 1)?;
                i.shared.settings.require_fs(a.call)?;
                let p = a.str(0, "make_dir")?;
                std::fs::create_dir_all(&*p).map_err(|e| io_error(&e, &p, a.span(0)))?;
                Ok(Value::Nil)
            }),
            ("env", b_env),
            ("set_env", |i, a| {
                a.expect("set_env", 2, 2)?;
                i.shared.settings.require_env(a.call)?;
                let (k, v) = (a.str(0, "set_env")?, a.vals[1].to_string());
                crate::runtime::set_env_var(&k, &v);
                Ok(Value::Nil)
            }),
            ("env_vars", |i, a| {
                a.expect("env_vars", 0, 0)?;
                i.shared.settings.require_env(a.call)?;
                Ok(Value::map(std::env::vars().map(|(k, v)| (Key::Str(k.into()), Value::str(v)))))
            }),
            ("read_line", |i, a| {
                a.expect("read_line", 0, 0)?;
                let mut line = String::new();
                let n = i.shared.output.read_line(&mut line).map_err(|e| io_error(&e, "stdin", a.call))?;
                if n == 0 {
                    return Ok(Value::Nil);
                }
                Ok(Value::str(line.trim_end_matches(['\n', '\r'])))
            }),
            ("read_stdin", |i, a| {
                a.expect("read_stdin", 0, 0)?;
                let mut all = String::new();
                i.shared.output.read_to_string(&mut all).map_err(|e| io_error(&e, "stdin", a.call))?;
                Ok(Value::str(all))
            }),
            ("stdin_lines", |i, a| {
                a.expect("stdin_lines", 0, 0)?;
                let mut all = String::new();
                i.shared.output.read_to_string(&mut all).map_err(|e| io_error(&e, "stdin", a.call))?;
                Ok(Value::list(all.lines().map(Value::str).collect()))
            }),
            ("exit", |_, a| {
                a.expect("exit", 0, 1)?;
                let code = if a.is_empty() { 0 } else { a.int(0, "exit")? };
                Err(RuntimeError::new(ErrorKind::Exit(code as i32), format!("exit({code})"), a.call).into())
            }),
            ("abs", |_, a| {
                a.expect("abs", 1, 1)?;
                match &a.vals[0] {
                    Value::Int(i) => i.checked_abs().map(Value::Int).ok_or_else(|| overflow(a.call)),
                    _ => Ok(Value::Float(a.num(0, "abs")?.abs())),
                }
            }),
            ("min", |i, a| extreme(i, a, "min", Ordering::Less)),
            ("max", |i, a| extreme(i, a, "max", Ordering::Greater)),
            ("sum", |_, a| {
                a.expect("sum", 1, 2)?;
                let items = a.list(0, "sum")?;
                let mut total = a.vals.get(1).cloned().unwrap_or(Value::Int(0));
                for (idx, v) in items.iter().enumerate() {
                    total = arith(BinOp::Add, &total, v, a.call, a.span(0), a.span(0))
                        .map_err(|e| annotate_item(e, idx))?;
                }
                Ok(total)
            }),
            ("sorted", |i, a| {
                a.expect("sorted", 1, 2)?;
                let mut items = (*a.list(0, "sorted")?).clone();
                sort_values(i, &mut items, a.vals.get(1), a.call)?;
                Ok(Value::list(items))
            }),
            ("zip", |_, a| {
                a.expect("zip", 2, usize::MAX)?;
                let lists = (0..a.len()).map(|i| a.list(i, "zip")).collect::<R<Vec<_>>>()?;
                let n = lists.iter().map(|l| l.len()).min().unwrap_or(0);
                Ok(Value::list((0..n).map(|i| Value::list(lists.iter().map(|l| l[i].clone()).collect())).collect()))
            }),
            ("enumerate", |_, a| {
                a.expect("enumerate", 1, 1)?;
                let items = a.list(0, "enumerate")?;
                Ok(Value::list(
                    items.iter().enumerate().map(|(i, v)| Value::list(vec![Value::Int(i as i64), v.clone()])).collect(),
                ))
            }),
            ("round", |_, a| {
                a.expect("round", 1, 2)?;
                let x = a.num(0, "round")?;
                if a.len() == 2 {
                    let p = 10f64.powi(a.int(1, "round")? as i32);
                    return Ok(Value::Float((x * p).round() / p));
                }
                float_to_int(x.round(), a.call)
            }),
            ("floor", |_, a| {
                a.expect("floor", 1, 1)?;
                float_to_int(a.num(0, "floor")?.floor(), a.call)
            }),
            ("ceil", |_, a| {
                a.expect("ceil", 1, 1)?;
                float_to_int(a.num(0, "ceil")?.ceil(), a.call)
            }),
            ("sqrt", |_, a| {
                a.expect("sqrt", 1, 1)?;
                Ok(Value::Float(a.num(0, "sqrt")?.sqrt()))
            }),
            ("chr", |_, a| {
                a.expect("chr", 1, 1)?;
                let n = a.int(0, "chr")?;
                let c = u32::try_from(n).ok().and_then(char::from_u32);
                c.map(|c| Value::str(c.to_string())).ok_or_else(|| {
                    RuntimeError::new(ErrorKind::Value, format!("{n} is not a Unicode code point"), a.span(0)).into()
                })
            }),
            ("ord", |_, a| {
                a.expect("ord", 1, 1)?;
                let s = a.str(0, "ord")?;
                let mut cs = s.chars();
                match (cs.next(), cs.next()) {
                    (Some(c), None) => Ok(Value::Int(c as i64)),
                    _ => fail(ErrorKind::Value, "`ord` expects a string of one character", a.span(0)),
                }
            }),
            ("format", |_, a| {
                a.expect("format", 1, usize::MAX)?;
                let f = a.str(0, "format")?;
                Ok(Value::str(format_template(&f, &a.vals[1..], a.span(0))?))
            }),
            ("bytes", |_, a| {
                a.expect("bytes", 1, 1)?;
                Ok(match &a.vals[0] {
                    Value::Str(s) => Value::Bytes(Arc::new(s.as_bytes().to_vec())),
                    Value::Bytes(b) => Value::Bytes(b.clone()),
                    v => {
                        let items = a.list(0, "bytes")?;
                        let bytes = items.iter().map(|x| match x {
                            Value::Int(n) if (0..256).contains(n) => Ok(*n as u8),
                            _ => Err(type_error("`bytes` expects ints from 0 to 255".into(), a.span(0), v)),
                        });
                        Value::Bytes(Arc::new(bytes.collect::<R<Vec<u8>>>()?))
                    }
                })
            }),
            ("pid", |_, a| {
                a.expect("pid", 0, 0)?;
                Ok(Value::Int(std::process::id() as i64))
            }),
        ];
        list.extend(crate::runtime::all_builtins());
        let index = list.iter().enumerate().map(|(i, (n, _))| (*n, i as u32)).collect();
        (list, index)
    })
}

pub fn lookup(name: &str) -> Option<u32> {
    table().1.get(name).copied()
}

pub fn names() -> impl Iterator<Item = &'static str> {
    table().0.iter().map(|(n, _)| *n)
}

pub fn name_of(i: u32) -> &'static str {
    table().0.get(i as usize).map_or("?", |(n, _)| n)
}

pub fn call(interp: &mut Interp, i: u32, args: Args) -> R<Value> {
    let f = table().0[i as usize].1;
    f(interp, args)
}

fn overflow(span: Span) -> Unwind {
    RuntimeError::new(ErrorKind::Arithmetic, "integer overflow", span).into()
}

fn float_to_int(f: f64, span: Span) -> R<Value> {
    if f.is_finite() && f >= i64::MIN as f64 && f < i64::MAX as f64 {
        Ok(Value::Int(f as i64))
    } else {
        fail(ErrorKind::Arithmetic, format!("{f} does not fit in an int"), span)
    }
}

fn annotate_item(e: Unwind, idx: usize) -> Unwind {
    match e {
        Unwind::Error(mut err) => {
            err.message = format!("{} (at item {idx})", err.message);
            Unwind::Error(err)
        }
        e => e,
    }
}

/// "a string", "an int": the type name with its article, for messages.
pub fn a_type(v: &Value) -> String {
    with_article(v.type_name())
}

/// A type name with its article: "a list", "an error".
pub fn with_article(t: &str) -> String {
    let article = if t.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
    format!("{article} {t}")
}

pub fn io_error(e: &std::io::Error, what: &str, span: Span) -> Unwind {
    let reason = match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        std::io::ErrorKind::InvalidData => "not valid UTF-8 text".to_string(),
        _ => e.to_string(),
    };
    RuntimeError::new(ErrorKind::Io, format!("{what}: {reason}"), span).with_label("this I/O operation failed").into()
}

pub fn write_out(interp: &Interp, text: &str, to_stderr: bool) {
    interp.shared.output.write(text, to_stderr);
}

fn b_print(i: &mut Interp, a: Args) -> R<Value> {
    print_args(i, &a, false)
}

fn b_eprint(i: &mut Interp, a: Args) -> R<Value> {
    print_args(i, &a, true)
}

fn print_args(i: &mut Interp, a: &Args, to_stderr: bool) -> R<Value> {
    use std::fmt::Write as _;
    let mut line = String::new();
    for (n, v) in a.vals.iter().enumerate() {
        if n > 0 {
            line.push(' ');
        }
        let _ = write!(line, "{v}");
    }
    line.push('\n');
    write_out(i, &line, to_stderr);
    Ok(Value::Nil)
}

fn b_len(_: &mut Interp, a: Args) -> R<Value> {
    a.expect("len", 1, 1)?;
    let n = match &a.vals[0] {
        Value::Str(s) => s.chars().count(),
        Value::Bytes(b) => b.len(),
        Value::List(l) => l.len(),
        Value::Map(m) => m.len(),
        Value::Range(r) => r.len(),
        v => return Err(type_error(format!("{} has no length", a_type(v)), a.span(0), v)),
    };
    Ok(Value::Int(n as i64))
}

fn b_range(_: &mut Interp, a: Args) -> R<Value> {
    a.expect("range", 1, 3)?;
    let (start, end, step) = match a.len() {
        1 => (0, a.int(0, "range")?, 1),
        2 => (a.int(0, "range")?, a.int(1, "range")?, 1),
        _ => (a.int(0, "range")?, a.int(1, "range")?, a.int(2, "range")?),
    };
    if step == 0 {
        return fail(ErrorKind::Value, "`range` step cannot be zero", a.span(2));
    }
    Ok(Value::Range(Arc::new(RangeValue { start, end, step })))
}

fn b_int(_: &mut Interp, a: Args) -> R<Value> {
    a.expect("int", 1, 1)?;
    match &a.vals[0] {
        Value::Int(i) => Ok(Value::Int(*i)),
        Value::Float(f) => float_to_int(f.trunc(), a.span(0)),
        Value::Bool(b) => Ok(Value::Int(*b as i64)),
        Value::Str(s) => s.trim().replace('_', "").parse::<i64>().map(Value::Int).map_err(|_| {
            RuntimeError::new(
                ErrorKind::Value,
                format!("cannot convert {} to an int", Value::Str(s.clone()).repr()),
                a.span(0),
            )
            .with_label("not a whole number")
            .into()
        }),
        v => Err(type_error(format!("cannot convert {} to an int", crate::builtins::a_type(v)), a.span(0), v)),
    }
}

fn b_float(_: &mut Interp, a: Args) -> R<Value> {
    a.expect("float", 1, 1)?;
    match &a.vals[0] {
        Value::Int(i) => Ok(Value::Float(*i as f64)),
        Value::Float(f) => Ok(Value::Float(*f)),
        Value::Str(s) => s.trim().parse::<f64>().map(Value::Float).map_err(|_| {
            RuntimeError::new(
                ErrorKind::Value,
                format!("cannot convert {} to a float", Value::Str(s.clone()).repr()),
                a.span(0),
            )
            .with_label("not a number")
            .into()
        }),
        v => Err(type_error(format!("cannot convert {} to a float", crate::builtins::a_type(v)), a.span(0), v)),
    }
}

fn b_error(_: &mut Interp, a: Args) -> R<Value> {
    a.expect("error", 1, 2)?;
    if let Value::Error(e) = &a.vals[0] {
        return Err(Unwind::Error(Box::new((**e).clone())));
    }
    let message = a.vals[0].to_string();
    let data = a.vals.get(1).cloned().unwrap_or_default();
    Err(RuntimeError::new(ErrorKind::User, message, a.call).with_label("raised here").with_data(data).into())
}

fn b_assert(_: &mut Interp, a: Args) -> R<Value> {
    a.expect("assert", 1, 2)?;
    if a.vals[0].truthy() {
        return Ok(Value::Nil);
    }
    let msg = a.vals.get(1).map_or("assertion failed".to_string(), |m| format!("assertion failed: {m}"));
    Err(RuntimeError::new(ErrorKind::Assertion, msg, a.span(0)).with_label("this is false").into())
}

fn b_assert_eq(_: &mut Interp, a: Args) -> R<Value> {
    a.expect("assert_eq", 2, 3)?;
    if a.vals[0].equals(&a.vals[1]) {
        return Ok(Value::Nil);
    }
    let extra = a.vals.get(2).map_or(String::new(), |m| format!(": {m}"));
    let msg = format!("assertion failed{extra}: {} != {}", a.vals[0].repr(), a.vals[1].repr());
    Err(RuntimeError::new(ErrorKind::Assertion, msg, a.call)
        .with_label(format!("left is {}, right is {}", a.vals[0].repr(), a.vals[1].repr()))
        .into())
}

fn b_sleep(i: &mut Interp, a: Args) -> R<Value> {
    a.expect("sleep", 1, 1)?;
    let secs = a.num(0, "sleep")?;
    if secs < 0.0 || !secs.is_finite() {
        return fail(ErrorKind::Value, "`sleep` needs zero or more seconds", a.span(0));
    }
    crate::runtime::cancel::sleep(i, std::time::Duration::from_secs_f64(secs), a.call)?;
    Ok(Value::Nil)
}

fn b_read_file(i: &mut Interp, a: Args) -> R<Value> {
    a.expect("read_file", 1, 1)?;
    i.shared.settings.require_fs(a.call)?;
    let path = a.str(0, "read_file")?;
    std::fs::read_to_string(&*path).map(Value::str).map_err(|e| io_error(&e, &path, a.span(0)))
}

fn write_file(i: &mut Interp, a: Args, append: bool) -> R<Value> {
    let what = if append { "append_file" } else { "write_file" };
    a.expect(what, 2, 2)?;
    i.shared.settings.require_fs(a.call)?;
    let path = a.str(0, what)?;
    let data: Vec<u8> = match &a.vals[1] {
        Value::Bytes(b) => b.to_vec(),
        v => v.to_string().into_bytes(),
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(&*path)
        .map_err(|e| io_error(&e, &path, a.span(0)))?;
    f.write_all(&data).map_err(|e| io_error(&e, &path, a.span(0)))?;
    Ok(Value::Nil)
}

fn b_list_dir(i: &mut Interp, a: Args) -> R<Value> {
    a.expect("list_dir", 1, 1)?;
    i.shared.settings.require_fs(a.call)?;
    let path = a.str(0, "list_dir")?;
    let entries = std::fs::read_dir(&*path).map_err(|e| io_error(&e, &path, a.span(0)))?;
    let mut names: Vec<String> =
        entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    Ok(Value::list(names.into_iter().map(Value::str).collect()))
}

/// `stat(path)`: what a path is, without following a final symbolic link, so a tree walk can
/// tell a link from the directory it points to.
fn b_stat(i: &mut Interp, a: Args) -> R<Value> {
    a.expect("stat", 1, 1)?;
    i.shared.settings.require_fs(a.call)?;
    let path = a.str(0, "stat")?;
    let meta = std::fs::symlink_metadata(&*path).map_err(|e| io_error(&e, &path, a.span(0)))?;
    let kind = if meta.file_type().is_symlink() {
        "link"
    } else if meta.is_dir() {
        "dir"
    } else if meta.is_file() {
        "file"
    } else {
        "other"
    };
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(Value::Nil, |d| Value::Float(d.as_secs_f64()));
    Ok(Value::map([
        (Key::from("type"), Value::str(kind)),
        (Key::from("size"), Value::Int(meta.len() as i64)),
        (Key::from("modified"), modified),
        (Key::from("readonly"), Value::Bool(meta.permissions().readonly())),
    ]))
}

fn b_env(i: &mut Interp, a: Args) -> R<Value> {
    a.expect("env", 1, 2)?;
    i.shared.settings.require_env(a.call)?;
    let name = a.str(0, "env")?;
    Ok(match std::env::var(&*name) {
        Ok(v) => Value::str(v),
        Err(_) => a.vals.get(1).cloned().unwrap_or_default(),
    })
}

fn extreme(i: &mut Interp, a: Args, what: &str, want: Ordering) -> R<Value> {
    a.expect(what, 1, usize::MAX)?;
    let items: Arc<Vec<Value>> = if a.len() == 1 { a.list(0, what)? } else { Arc::new(a.vals.clone()) };
    let _ = i;
    let mut best: Option<&Value> = None;
    for v in items.iter() {
        best = match best {
            None => Some(v),
            Some(b) => match v.compare(b) {
                Some(o) if o == want => Some(v),
                Some(_) => Some(b),
                None => {
                    return fail(
                        ErrorKind::Type,
                        format!("cannot compare {} with {}", crate::builtins::a_type(v), crate::builtins::a_type(b)),
                        a.call,
                    )
                }
            },
        };
    }
    best.cloned()
        .ok_or_else(|| RuntimeError::new(ErrorKind::Value, format!("`{what}` of an empty list"), a.call).into())
}

/// Sort `items` in place, by `key(item)` when a key function is given.
pub fn sort_values(interp: &mut Interp, items: &mut Vec<Value>, key: Option<&Value>, span: Span) -> R<()> {
    let keys: Vec<Value> = match key {
        Some(f) if !matches!(f, Value::Nil) => {
            let mut ks = Vec::with_capacity(items.len());
            for v in items.iter() {
                ks.push(interp.call_value(f, vec![v.clone()], span)?);
            }
            ks
        }
        _ => items.clone(),
    };
    let mut bad = None;
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&x, &y| {
        keys[x].compare(&keys[y]).unwrap_or_else(|| {
            bad.get_or_insert((keys[x].type_name(), keys[y].type_name()));
            Ordering::Equal
        })
    });
    if let Some((l, r)) = bad {
        return Err(RuntimeError::new(
            ErrorKind::Type,
            format!("cannot sort: {} and {} do not compare", with_article(l), with_article(r)),
            span,
        )
        .with_help("pass a key function that returns comparable values: `xs.sort(fn(x) { x.name })`")
        .into());
    }
    let sorted: Vec<Value> = order.into_iter().map(|i| std::mem::take(&mut items[i])).collect();
    *items = sorted;
    Ok(())
}

/// Values that can stand in for a list: lists, ranges, and the keys of maps.
pub fn to_list(v: &Value) -> Option<Arc<Vec<Value>>> {
    Some(match v {
        Value::List(l) => l.clone(),
        Value::Range(r) => Arc::new((0..r.len()).filter_map(|i| r.get(i)).map(Value::Int).collect()),
        Value::Map(m) => Arc::new(m.keys().map(Key::to_value).collect()),
        Value::Str(s) => Arc::new(s.chars().map(|c| Value::str(c.to_string())).collect()),
        Value::Bytes(b) => Arc::new(b.iter().map(|x| Value::Int(*x as i64)).collect()),
        _ => return None,
    })
}

/// Binary operators on everything but the int fast path in the interpreter.
pub fn arith(op: BinOp, l: &Value, r: &Value, span: Span, lspan: Span, rspan: Span) -> R<Value> {
    use Value::*;
    let div_zero = || -> Unwind {
        RuntimeError::new(ErrorKind::Arithmetic, "division by zero", rspan).with_label("this is zero").into()
    };
    match op {
        BinOp::Eq => return Ok(Bool(l.equals(r))),
        BinOp::Ne => return Ok(Bool(!l.equals(r))),
        BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
            let ord = l.compare(r).ok_or_else(|| -> Unwind {
                RuntimeError::new(
                    ErrorKind::Type,
                    format!("cannot compare {} with {}", crate::builtins::a_type(l), crate::builtins::a_type(r)),
                    span,
                )
                .with_label(format!("{} {} {}", l.type_name(), op.symbol(), r.type_name()))
                .into()
            })?;
            return Ok(Bool(match op {
                BinOp::Lt => ord == Ordering::Less,
                BinOp::Le => ord != Ordering::Greater,
                BinOp::Gt => ord == Ordering::Greater,
                _ => ord != Ordering::Less,
            }));
        }
        _ => {}
    }
    let result = match (op, l, r) {
        (BinOp::Add, Int(a), Int(b)) => a.checked_add(*b).map(Int),
        (BinOp::Sub, Int(a), Int(b)) => a.checked_sub(*b).map(Int),
        (BinOp::Mul, Int(a), Int(b)) => a.checked_mul(*b).map(Int),
        (BinOp::Div, Int(_), Int(0)) | (BinOp::FloorDiv, Int(_), Int(0)) | (BinOp::Rem, Int(_), Int(0)) => {
            return Err(div_zero())
        }
        (BinOp::Div, Int(a), Int(b)) => Some(Float(*a as f64 / *b as f64)),
        (BinOp::Pipe, Int(_), Int(_)) => return Err(operand_error(op, l, r, span, lspan, rspan)),
        (BinOp::FloorDiv, Int(a), Int(b)) => a.checked_div(*b).map(|q| {
            // Round toward negative infinity, as Python does.
            Int(if a % b != 0 && ((*a < 0) != (*b < 0)) { q - 1 } else { q })
        }),
        (BinOp::Rem, Int(a), Int(b)) => {
            a.checked_rem(*b).map(|m| Int(if m != 0 && ((m < 0) != (*b < 0)) { m + b } else { m }))
        }
        (BinOp::Add, Str(a), Str(b)) => Some(Value::str(format!("{a}{b}"))),
        (BinOp::Add, List(a), List(b)) => {
            let mut v = Vec::with_capacity(a.len() + b.len());
            v.extend(a.iter().cloned());
            v.extend(b.iter().cloned());
            Some(Value::list(v))
        }
        (BinOp::Add, Map(a), Map(b)) => {
            let mut m = (**a).clone();
            m.extend(b.iter().map(|(k, v)| (k.clone(), v.clone())));
            Some(Map(Arc::new(m)))
        }
        (BinOp::Add, Bytes(a), Bytes(b)) => Some(Bytes(Arc::new([a.as_slice(), b.as_slice()].concat()))),
        (BinOp::Mul, Str(s), Int(n)) | (BinOp::Mul, Int(n), Str(s)) => {
            Some(Value::str(s.repeat(usize::try_from(*n).unwrap_or(0))))
        }
        (BinOp::Mul, List(l), Int(n)) | (BinOp::Mul, Int(n), List(l)) => {
            let n = usize::try_from(*n).unwrap_or(0);
            Some(Value::list(l.iter().cloned().cycle().take(l.len() * n).collect()))
        }
        (_, Int(_) | Float(_), Int(_) | Float(_)) => {
            let (a, b) = (as_f64(l), as_f64(r));
            match op {
                BinOp::Add => Some(Float(a + b)),
                BinOp::Sub => Some(Float(a - b)),
                BinOp::Mul => Some(Float(a * b)),
                BinOp::Div if b == 0.0 => return Err(div_zero()),
                BinOp::Div => Some(Float(a / b)),
                BinOp::FloorDiv if b == 0.0 => return Err(div_zero()),
                BinOp::FloorDiv => Some(Float((a / b).floor())),
                BinOp::Rem if b == 0.0 => return Err(div_zero()),
                BinOp::Rem => Some(Float(a - b * (a / b).floor())),
                _ => return Err(operand_error(op, l, r, span, lspan, rspan)),
            }
        }
        _ => return Err(operand_error(op, l, r, span, lspan, rspan)),
    };
    result.ok_or_else(|| {
        RuntimeError::new(ErrorKind::Arithmetic, format!("integer overflow: {l} {} {r}", op.symbol()), span)
            .with_label("the result does not fit in 64 bits")
            .into()
    })
}

fn operand_error(op: BinOp, l: &Value, r: &Value, span: Span, _lspan: Span, _rspan: Span) -> Unwind {
    let mut e = RuntimeError::new(
        ErrorKind::Type,
        format!("cannot apply `{}` to {} and {}", op.symbol(), crate::builtins::a_type(l), crate::builtins::a_type(r)),
        span,
    )
    .with_label(format!("{} {} {}", l.type_name(), op.symbol(), r.type_name()));
    if op == BinOp::Add && (matches!(l, Value::Str(_)) || matches!(r, Value::Str(_))) {
        e = e.with_help("convert with `str(x)`, or interpolate: \"{a}{b}\"");
    }
    if op == BinOp::Pipe {
        e = e.with_help("`|` connects commands: `run(\"ls\") | run(\"wc\", \"-l\")`");
    }
    e.into()
}

fn as_f64(v: &Value) -> f64 {
    match v {
        Value::Int(i) => *i as f64,
        Value::Float(f) => *f,
        _ => f64::NAN,
    }
}

fn list_index(len: usize, i: i64) -> Option<usize> {
    let idx = if i < 0 { len as i64 + i } else { i };
    (idx >= 0 && (idx as usize) < len).then_some(idx as usize)
}

fn index_error(i: i64, len: usize, span: Span) -> Unwind {
    RuntimeError::new(ErrorKind::Index, format!("index {i} is out of range for length {len}"), span)
        .with_label("no item here")
        .into()
}

fn key_error(m: &crate::value::Map, k: &Value, span: Span) -> Unwind {
    let mut e = RuntimeError::new(ErrorKind::Key, format!("key {} is not in the map", k.repr()), span)
        .with_label("missing key");
    if let Value::Str(want) = k {
        let best = m
            .keys()
            .filter_map(|key| if let Key::Str(s) = key { Some(s) } else { None })
            .map(|s| (strsim::jaro_winkler(want, s), s))
            .filter(|(score, _)| *score > 0.8)
            .max_by(|a, b| a.0.total_cmp(&b.0));
        if let Some((_, s)) = best {
            e = e.with_help(format!("did you mean `{s}`?"));
        } else {
            e = e.with_help("use `m.get(key, default)` when a key may be absent");
        }
    }
    e.into()
}

/// `target[index]`.
pub fn index(target: &Value, idx: &Value, span: Span, idx_span: Span) -> R<Value> {
    match (target, idx) {
        (Value::List(l), Value::Int(i)) => {
            list_index(l.len(), *i).map(|i| l[i].clone()).ok_or_else(|| index_error(*i, l.len(), idx_span))
        }
        (Value::Str(s), Value::Int(i)) => {
            let n = s.chars().count();
            list_index(n, *i)
                .and_then(|i| s.chars().nth(i))
                .map(|c| Value::str(c.to_string()))
                .ok_or_else(|| index_error(*i, n, idx_span))
        }
        (Value::Bytes(b), Value::Int(i)) => {
            list_index(b.len(), *i).map(|i| Value::Int(b[i] as i64)).ok_or_else(|| index_error(*i, b.len(), idx_span))
        }
        (Value::Range(r), Value::Int(i)) => list_index(r.len(), *i)
            .and_then(|i| r.get(i))
            .map(Value::Int)
            .ok_or_else(|| index_error(*i, r.len(), idx_span)),
        (Value::Map(m), k) => match Key::from_value(k) {
            Some(key) => m.get(&key).cloned().ok_or_else(|| key_error(m, k, idx_span)),
            None => Err(type_error(format!("{} cannot be a map key", crate::builtins::a_type(k)), idx_span, k)),
        },
        (Value::List(_) | Value::Str(_) | Value::Range(_) | Value::Bytes(_), other) => {
            Err(type_error(format!("indexes must be ints, not {}", crate::builtins::a_type(other)), idx_span, other))
        }
        (other, _) => Err(type_error(format!("{} cannot be indexed", crate::builtins::a_type(other)), span, other)),
    }
}

/// `target.name`.
pub fn field(interp: &Interp, target: &Value, name: &str, span: Span) -> R<Value> {
    match target {
        Value::Map(m) => m.get(&Key::Str(name.into())).cloned().ok_or_else(|| key_error(m, &Value::str(name), span)),
        Value::Error(e) => Ok(match name {
            "message" => Value::str(&e.message),
            "kind" => Value::str(e.kind.name()),
            "data" => e.data.clone(),
            "related" => Value::list(e.related.iter().map(|r| Value::Error(r.clone())).collect()),
            _ => {
                return fail(ErrorKind::Key, format!("an error has no field `{name}`"), span)
                    .map_err(|e| with_help(e, "errors have `message`, `kind`, `data` and `related`"))
            }
        }),
        Value::Object(_) => crate::runtime::object_field(interp, target, name, span),
        other => Err(RuntimeError::new(
            ErrorKind::Type,
            format!("{} has no field `{name}`", crate::builtins::a_type(other)),
            span,
        )
        .with_label(format!("this is {}", crate::builtins::a_type(other)))
        .with_help(if matches!(other, Value::Str(_) | Value::List(_)) {
            format!("to call a method, add parentheses: `.{name}()`")
        } else {
            "fields exist on maps, errors and runtime objects".into()
        })
        .into()),
    }
}

fn with_help(e: Unwind, help: &str) -> Unwind {
    match e {
        Unwind::Error(mut err) => {
            err.help = Some(help.into());
            Unwind::Error(err)
        }
        e => e,
    }
}

/// Walk `path` inside `root` for an in-place change. Only the last step may add a new map
/// key, so a failed assignment never leaves half-built structure behind.
pub fn navigate_mut<'a>(root: &'a mut Value, path: &[(Value, Span)], span: Span) -> R<&'a mut Value> {
    let mut cur = root;
    for (step, (k, kspan)) in path.iter().enumerate() {
        let last = step + 1 == path.len();
        cur = match cur {
            Value::List(l) => {
                let Value::Int(i) = k else {
                    if let Value::Str(name) = k {
                        return Err(RuntimeError::new(
                            ErrorKind::Type,
                            format!("a list has no field `{name}`"),
                            *kspan,
                        )
                        .with_label("lists are indexed with ints")
                        .into());
                    }
                    return Err(type_error(
                        format!("indexes must be ints, not {}", crate::builtins::a_type(k)),
                        *kspan,
                        k,
                    ));
                };
                let len = l.len();
                let idx = list_index(len, *i).ok_or_else(|| index_error(*i, len, *kspan))?;
                &mut Arc::make_mut(l)[idx]
            }
            Value::Map(m) => {
                let key = Key::from_value(k).ok_or_else(|| {
                    type_error(format!("{} cannot be a map key", crate::builtins::a_type(k)), *kspan, k)
                })?;
                if !last && !m.contains_key(&key) {
                    return Err(key_error(m, k, *kspan));
                }
                Arc::make_mut(m).entry(key).or_insert(Value::Nil)
            }
            other => {
                return Err(RuntimeError::new(
                    ErrorKind::Type,
                    format!("cannot change part of {}", crate::builtins::a_type(other)),
                    span,
                )
                .with_label(format!("this is {}", crate::builtins::a_type(other)))
                .into())
            }
        };
    }
    Ok(cur)
}

const MUTATING: &[&str] = &["push", "pop", "insert", "remove", "clear", "extend", "sort", "reverse", "set"];

pub fn is_mutating_method(name: &str) -> bool {
    MUTATING.contains(&name)
}

/// Methods that change a list or map in place.
pub fn call_mut_method(interp: &mut Interp, target: &mut Value, name: &str, name_span: Span, a: Args) -> R<Value> {
    match target {
        Value::List(l) => {
            let items = Arc::make_mut(l);
            match name {
                "push" => {
                    a.expect("push", 1, 1)?;
                    items.push(a.vals.into_iter().next().unwrap_or_default());
                    Ok(Value::Nil)
                }
                "pop" => {
                    a.expect("pop", 0, 0)?;
                    items
                        .pop()
                        .ok_or_else(|| RuntimeError::new(ErrorKind::Index, "pop from an empty list", a.call).into())
                }
                "insert" => {
                    a.expect("insert", 2, 2)?;
                    let i = a.int(0, "insert")?;
                    let len = items.len();
                    let idx = if i == len as i64 {
                        len
                    } else {
                        list_index(len, i).ok_or_else(|| index_error(i, len, a.span(0)))?
                    };
                    items.insert(idx, a.vals[1].clone());
                    Ok(Value::Nil)
                }
                "remove" => {
                    a.expect("remove", 1, 1)?;
                    let i = a.int(0, "remove")?;
                    let idx = list_index(items.len(), i).ok_or_else(|| index_error(i, items.len(), a.span(0)))?;
                    Ok(items.remove(idx))
                }
                "clear" => {
                    items.clear();
                    Ok(Value::Nil)
                }
                "extend" => {
                    a.expect("extend", 1, 1)?;
                    items.extend(a.list(0, "extend")?.iter().cloned());
                    Ok(Value::Nil)
                }
                "sort" => {
                    a.expect("sort", 0, 1)?;
                    sort_values(interp, items, a.vals.first(), a.call)?;
                    Ok(Value::Nil)
                }
                "reverse" => {
                    items.reverse();
                    Ok(Value::Nil)
                }
                _ => no_method(target, name, name_span),
            }
        }
        Value::Map(m) => {
            let map = Arc::make_mut(m);
            match name {
                "set" | "insert" => {
                    a.expect(name, 2, 2)?;
                    let key = Key::from_value(&a.vals[0]).ok_or_else(|| {
                        type_error(
                            format!("{} cannot be a map key", crate::builtins::a_type(&a.vals[0])),
                            a.span(0),
                            &a.vals[0],
                        )
                    })?;
                    map.insert(key, a.vals[1].clone());
                    Ok(Value::Nil)
                }
                "remove" | "pop" => {
                    a.expect(name, 1, 2)?;
                    let key = Key::from_value(&a.vals[0]);
                    match key.and_then(|k| map.shift_remove(&k)) {
                        Some(v) => Ok(v),
                        None if a.len() == 2 => Ok(a.vals[1].clone()),
                        None => Err(key_error(map, &a.vals[0], a.span(0))),
                    }
                }
                "clear" => {
                    map.clear();
                    Ok(Value::Nil)
                }
                "extend" => {
                    a.expect("extend", 1, 1)?;
                    match &a.vals[0] {
                        Value::Map(other) => map.extend(other.iter().map(|(k, v)| (k.clone(), v.clone()))),
                        v => {
                            return Err(type_error(
                                format!("`extend` on a map expects a map, got {}", crate::builtins::a_type(v)),
                                a.span(0),
                                v,
                            ))
                        }
                    }
                    Ok(Value::Nil)
                }
                _ => no_method(target, name, name_span),
            }
        }
        other => {
            let v = std::mem::take(other);
            let result = call_method(interp, v.clone(), name, name_span, a);
            *other = v;
            result
        }
    }
}

fn no_method(v: &Value, name: &str, span: Span) -> R<Value> {
    let known = methods_of(v);
    let mut e =
        RuntimeError::new(ErrorKind::Type, format!("{} has no method `{name}`", crate::builtins::a_type(v)), span)
            .with_label("unknown method");
    let best = known
        .iter()
        .map(|m| (strsim::jaro_winkler(name, m), m))
        .filter(|(s, _)| *s > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    if let Some((_, m)) = best {
        e = e.with_help(format!("did you mean `{m}`?"));
    } else if !known.is_empty() {
        e = e.with_help(format!("{} methods: {}", v.type_name(), known.join(", ")));
    }
    Err(e.into())
}

fn methods_of(v: &Value) -> Vec<&'static str> {
    match v {
        Value::Str(_) => STR_METHODS.to_vec(),
        Value::List(_) | Value::Range(_) => [LIST_METHODS, MUTATING].concat(),
        Value::Map(_) => MAP_METHODS.to_vec(),
        _ => vec![],
    }
}

const STR_METHODS: &[&str] = &[
    "len",
    "split",
    "join",
    "trim",
    "trim_start",
    "trim_end",
    "contains",
    "replace",
    "lines",
    "starts_with",
    "ends_with",
    "format",
    "upper",
    "lower",
    "find",
    "chars",
    "repeat",
    "slice",
    "is_empty",
    "count",
    "pad_left",
    "pad_right",
    "center",
    "bytes",
];
const LIST_METHODS: &[&str] = &[
    "len",
    "map",
    "filter",
    "reduce",
    "zip",
    "enumerate",
    "join",
    "contains",
    "index",
    "slice",
    "first",
    "last",
    "sum",
    "min",
    "max",
    "any",
    "all",
    "each",
    "is_empty",
    "count",
    "sorted",
    "reversed",
    "flatten",
    "unique",
    "take",
    "skip",
    "chunks",
    "find",
];
const MAP_METHODS: &[&str] = &[
    "len", "keys", "values", "items", "get", "contains", "has", "is_empty", "set", "remove", "merge", "map", "filter",
];

/// Methods that do not change their receiver.
pub fn call_method(interp: &mut Interp, recv: Value, name: &str, name_span: Span, a: Args) -> R<Value> {
    match &recv {
        Value::Str(s) => str_method(s, name, name_span, a, &recv),
        Value::List(l) => list_method(interp, l.clone(), name, name_span, a, &recv),
        Value::Range(_) | Value::Bytes(_) if name != "len" && name != "contains" => {
            let l = to_list(&recv).unwrap_or_default();
            list_method(interp, l, name, name_span, a, &recv)
        }
        Value::Range(r) => match name {
            "len" => Ok(Value::Int(r.len() as i64)),
            _ => {
                a.expect("contains", 1, 1)?;
                let x = a.int(0, "contains")?;
                let inside = if r.step > 0 { x >= r.start && x < r.end } else { x <= r.start && x > r.end };
                Ok(Value::Bool(inside && (x - r.start) % r.step == 0))
            }
        },
        Value::Bytes(b) => match name {
            "len" => Ok(Value::Int(b.len() as i64)),
            _ => {
                a.expect("contains", 1, 1)?;
                Ok(Value::Bool(b.contains(&(a.int(0, "contains")? as u8))))
            }
        },
        Value::Map(m) => map_method(interp, m, name, name_span, a, &recv),
        Value::Object(_) => crate::runtime::object_method(interp, &recv, name, name_span, a),
        Value::Func(_) | Value::Builtin(_) | Value::Native(_) if name == "call" => {
            interp.call_value(&recv, a.vals, a.call)
        }
        _ => no_method(&recv, name, name_span),
    }
}

fn str_method(s: &Arc<str>, name: &str, name_span: Span, a: Args, recv: &Value) -> R<Value> {
    let strs = |v: Vec<&str>| Value::list(v.into_iter().map(Value::str).collect());
    Ok(match name {
        "len" => Value::Int(s.chars().count() as i64),
        "split" => {
            a.expect("split", 0, 2)?;
            match a.vals.first() {
                None | Some(Value::Nil) => strs(s.split_whitespace().collect()),
                Some(_) => {
                    let sep = a.str(0, "split")?;
                    if sep.is_empty() {
                        return fail(ErrorKind::Value, "`split` separator cannot be empty", a.span(0));
                    }
                    match a.vals.get(1) {
                        Some(_) => strs(s.splitn(a.int(1, "split")?.max(1) as usize + 1, &*sep).collect()),
                        None => strs(s.split(&*sep).collect()),
                    }
                }
            }
        }
        "join" => {
            a.expect("join", 1, 1)?;
            let items = a.list(0, "join")?;
            Value::str(items.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(s))
        }
        "trim" => Value::str(s.trim()),
        "trim_start" => Value::str(s.trim_start()),
        "trim_end" => Value::str(s.trim_end()),
        "contains" => {
            a.expect("contains", 1, 1)?;
            Value::Bool(s.contains(&*a.str(0, "contains")?))
        }
        "replace" => {
            a.expect("replace", 2, 2)?;
            Value::str(s.replace(&*a.str(0, "replace")?, &a.str(1, "replace")?))
        }
        "lines" => strs(s.lines().collect()),
        "chars" => Value::list(s.chars().map(|c| Value::str(c.to_string())).collect()),
        "starts_with" => {
            a.expect("starts_with", 1, 1)?;
            Value::Bool(s.starts_with(&*a.str(0, "starts_with")?))
        }
        "ends_with" => {
            a.expect("ends_with", 1, 1)?;
            Value::Bool(s.ends_with(&*a.str(0, "ends_with")?))
        }
        "format" => Value::str(format_template(s, &a.vals, a.call)?),
        "upper" => Value::str(s.to_uppercase()),
        "lower" => Value::str(s.to_lowercase()),
        "is_empty" => Value::Bool(s.is_empty()),
        "find" => {
            a.expect("find", 1, 1)?;
            match s.find(&*a.str(0, "find")?) {
                Some(byte) => Value::Int(s[..byte].chars().count() as i64),
                None => Value::Nil,
            }
        }
        "count" => {
            a.expect("count", 1, 1)?;
            let sub = a.str(0, "count")?;
            if sub.is_empty() {
                return fail(ErrorKind::Value, "`count` needs a non-empty string", a.span(0));
            }
            Value::Int(s.matches(&*sub).count() as i64)
        }
        "repeat" => {
            a.expect("repeat", 1, 1)?;
            Value::str(s.repeat(a.int(0, "repeat")?.max(0) as usize))
        }
        "slice" => {
            a.expect("slice", 1, 2)?;
            let chars: Vec<char> = s.chars().collect();
            let (from, to) = slice_bounds(chars.len(), &a)?;
            Value::str(chars[from..to].iter().collect::<String>())
        }
        "pad_left" | "pad_right" | "center" => {
            a.expect(name, 1, 2)?;
            let width = a.int(0, name)?.max(0) as usize;
            let fill = match a.vals.get(1) {
                Some(_) => a.str(1, name)?.chars().next().unwrap_or(' '),
                None => ' ',
            };
            let align = match name {
                "pad_left" => '>',
                "pad_right" => '<',
                _ => '^',
            };
            Value::str(pad(s, width, align, fill))
        }
        "bytes" => Value::Bytes(Arc::new(s.as_bytes().to_vec())),
        _ => return no_method(recv, name, name_span),
    })
}

fn slice_bounds(len: usize, a: &Args) -> R<(usize, usize)> {
    let clamp = |i: i64| -> usize {
        let i = if i < 0 { len as i64 + i } else { i };
        i.clamp(0, len as i64) as usize
    };
    let from = clamp(a.int(0, "slice")?);
    let to = match a.vals.get(1) {
        None | Some(Value::Nil) => len,
        Some(_) => clamp(a.int(1, "slice")?),
    };
    Ok((from, to.max(from)))
}

fn call_fn(interp: &mut Interp, f: &Value, args: Vec<Value>, span: Span, idx: usize) -> R<Value> {
    interp.call_value(f, args, span).map_err(|e| annotate_item(e, idx))
}

fn list_method(
    interp: &mut Interp,
    l: Arc<Vec<Value>>,
    name: &str,
    name_span: Span,
    a: Args,
    recv: &Value,
) -> R<Value> {
    let f = || -> R<Value> {
        a.vals
            .first()
            .cloned()
            .ok_or_else(|| RuntimeError::new(ErrorKind::Type, format!("`{name}` needs a function"), a.call).into())
    };
    Ok(match name {
        "len" => Value::Int(l.len() as i64),
        "is_empty" => Value::Bool(l.is_empty()),
        "map" => {
            let f = f()?;
            let mut out = Vec::with_capacity(l.len());
            for (i, v) in l.iter().enumerate() {
                out.push(call_fn(interp, &f, vec![v.clone()], a.call, i)?);
            }
            Value::list(out)
        }
        "filter" => {
            let f = f()?;
            let mut out = Vec::new();
            for (i, v) in l.iter().enumerate() {
                if call_fn(interp, &f, vec![v.clone()], a.call, i)?.truthy() {
                    out.push(v.clone());
                }
            }
            Value::list(out)
        }
        "each" => {
            let f = f()?;
            for (i, v) in l.iter().enumerate() {
                call_fn(interp, &f, vec![v.clone()], a.call, i)?;
            }
            Value::Nil
        }
        "find" => {
            let f = f()?;
            for (i, v) in l.iter().enumerate() {
                if call_fn(interp, &f, vec![v.clone()], a.call, i)?.truthy() {
                    return Ok(v.clone());
                }
            }
            Value::Nil
        }
        "reduce" => {
            a.expect("reduce", 1, 2)?;
            let f = f()?;
            let mut items = l.iter().cloned().enumerate();
            let mut acc = match a.vals.get(1) {
                Some(init) => init.clone(),
                None => match items.next() {
                    Some((_, v)) => v,
                    None => return fail(ErrorKind::Value, "`reduce` of an empty list with no initial value", a.call),
                },
            };
            for (i, v) in items {
                acc = call_fn(interp, &f, vec![acc, v], a.call, i)?;
            }
            acc
        }
        "any" | "all" => {
            let want_all = name == "all";
            for (i, v) in l.iter().enumerate() {
                let t = match a.vals.first() {
                    Some(f) => call_fn(interp, f, vec![v.clone()], a.call, i)?.truthy(),
                    None => v.truthy(),
                };
                if t != want_all {
                    return Ok(Value::Bool(!want_all));
                }
            }
            Value::Bool(want_all)
        }
        "zip" => {
            a.expect("zip", 1, 1)?;
            let other = a.list(0, "zip")?;
            Value::list(l.iter().zip(other.iter()).map(|(x, y)| Value::list(vec![x.clone(), y.clone()])).collect())
        }
        "enumerate" => {
            Value::list(l.iter().enumerate().map(|(i, v)| Value::list(vec![Value::Int(i as i64), v.clone()])).collect())
        }
        "join" => {
            a.expect("join", 0, 1)?;
            let sep = if a.is_empty() { "".into() } else { a.str(0, "join")? };
            Value::str(l.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(&sep))
        }
        "contains" => {
            a.expect("contains", 1, 1)?;
            Value::Bool(l.iter().any(|v| v.equals(&a.vals[0])))
        }
        "index" => {
            a.expect("index", 1, 1)?;
            l.iter().position(|v| v.equals(&a.vals[0])).map_or(Value::Nil, |i| Value::Int(i as i64))
        }
        "count" => {
            a.expect("count", 1, 1)?;
            Value::Int(l.iter().filter(|v| v.equals(&a.vals[0])).count() as i64)
        }
        "slice" => {
            a.expect("slice", 1, 2)?;
            let (from, to) = slice_bounds(l.len(), &a)?;
            Value::list(l[from..to].to_vec())
        }
        "take" => {
            a.expect("take", 1, 1)?;
            let n = (a.int(0, "take")?.max(0) as usize).min(l.len());
            Value::list(l[..n].to_vec())
        }
        "skip" => {
            a.expect("skip", 1, 1)?;
            let n = (a.int(0, "skip")?.max(0) as usize).min(l.len());
            Value::list(l[n..].to_vec())
        }
        "chunks" => {
            a.expect("chunks", 1, 1)?;
            let n = a.int(0, "chunks")?;
            if n <= 0 {
                return fail(ErrorKind::Value, "`chunks` size must be positive", a.span(0));
            }
            Value::list(l.chunks(n as usize).map(|c| Value::list(c.to_vec())).collect())
        }
        "first" => l.first().cloned().unwrap_or_default(),
        "last" => l.last().cloned().unwrap_or_default(),
        "sum" => {
            let mut total = Value::Int(0);
            for (i, v) in l.iter().enumerate() {
                total = arith(BinOp::Add, &total, v, a.call, a.call, a.call).map_err(|e| annotate_item(e, i))?;
            }
            total
        }
        "min" | "max" => {
            let mut args = Args::new(a.call, 1);
            args.push(Value::List(l.clone()), a.call);
            return extreme(interp, args, name, if name == "min" { Ordering::Less } else { Ordering::Greater });
        }
        "sorted" => {
            a.expect("sorted", 0, 1)?;
            let mut items = (*l).clone();
            sort_values(interp, &mut items, a.vals.first(), a.call)?;
            Value::list(items)
        }
        "reversed" => Value::list(l.iter().rev().cloned().collect()),
        "flatten" => {
            let mut out = Vec::new();
            for v in l.iter() {
                match v {
                    Value::List(inner) => out.extend(inner.iter().cloned()),
                    other => out.push(other.clone()),
                }
            }
            Value::list(out)
        }
        "unique" => {
            let mut out: Vec<Value> = Vec::new();
            for v in l.iter() {
                if !out.iter().any(|o| o.equals(v)) {
                    out.push(v.clone());
                }
            }
            Value::list(out)
        }
        m if MUTATING.contains(&m) => {
            return Err(RuntimeError::new(
                ErrorKind::Type,
                format!("`{m}` changes a list in place, but this list is a temporary value"),
                name_span,
            )
            .with_label("not stored in a variable")
            .with_help(format!("store it first: `let xs = …` then `xs.{m}(…)`"))
            .into())
        }
        _ => return no_method(recv, name, name_span),
    })
}

fn map_method(
    interp: &mut Interp,
    m: &Arc<crate::value::Map>,
    name: &str,
    name_span: Span,
    a: Args,
    recv: &Value,
) -> R<Value> {
    let key = |i: usize| -> R<Key> {
        let v = a.vals.get(i).ok_or_else(|| -> Unwind {
            RuntimeError::new(ErrorKind::Type, format!("`{name}` needs a key"), a.call).into()
        })?;
        Key::from_value(v)
            .ok_or_else(|| type_error(format!("{} cannot be a map key", crate::builtins::a_type(v)), a.span(i), v))
    };
    Ok(match name {
        "len" => Value::Int(m.len() as i64),
        "is_empty" => Value::Bool(m.is_empty()),
        "keys" => Value::list(m.keys().map(Key::to_value).collect()),
        "values" => Value::list(m.values().cloned().collect()),
        "items" => Value::list(m.iter().map(|(k, v)| Value::list(vec![k.to_value(), v.clone()])).collect()),
        "get" => {
            a.expect("get", 1, 2)?;
            m.get(&key(0)?).cloned().unwrap_or_else(|| a.vals.get(1).cloned().unwrap_or_default())
        }
        "contains" | "has" => {
            a.expect(name, 1, 1)?;
            Value::Bool(m.contains_key(&key(0)?))
        }
        "merge" => {
            a.expect("merge", 1, 1)?;
            let mut out = (**m).clone();
            match &a.vals[0] {
                Value::Map(other) => out.extend(other.iter().map(|(k, v)| (k.clone(), v.clone()))),
                v => {
                    return Err(type_error(
                        format!("`merge` expects a map, got {}", crate::builtins::a_type(v)),
                        a.span(0),
                        v,
                    ))
                }
            }
            Value::Map(Arc::new(out))
        }
        "map" | "filter" => {
            a.expect(name, 1, 1)?;
            let f = a.vals[0].clone();
            let mut out = crate::value::Map::new();
            for (i, (k, v)) in m.iter().enumerate() {
                let r = call_fn(interp, &f, vec![k.to_value(), v.clone()], a.call, i)?;
                if name == "map" {
                    out.insert(k.clone(), r);
                } else if r.truthy() {
                    out.insert(k.clone(), v.clone());
                }
            }
            Value::Map(Arc::new(out))
        }
        m if MUTATING.contains(&m) => {
            return Err(RuntimeError::new(
                ErrorKind::Type,
                format!("`{m}` changes a map in place, but this map is a temporary value"),
                name_span,
            )
            .with_help(format!("store it first: `let m = …` then `m.{m}(…)`"))
            .into())
        }
        _ => return no_method(recv, name, name_span),
    })
}

fn pad(s: &str, width: usize, align: char, fill: char) -> String {
    let len = s.chars().count();
    if len >= width {
        return s.to_string();
    }
    let gap = width - len;
    let (left, right) = match align {
        '>' => (gap, 0),
        '^' => (gap / 2, gap - gap / 2),
        _ => (0, gap),
    };
    let mut out = String::with_capacity(width);
    out.extend(std::iter::repeat_n(fill, left));
    out.push_str(s);
    out.extend(std::iter::repeat_n(fill, right));
    out
}

/// Format one value by a spec such as `>8`, `<10`, `^5`, `.2`, `08.3` or `x`.
pub fn format_with_spec(v: &Value, spec: &str, span: Span) -> R<String> {
    let bad = || -> Unwind {
        RuntimeError::new(ErrorKind::Value, format!("invalid format spec `{spec}`"), span)
            .with_help(
                "specs look like `>8` (align right), `<8`, `^8`, `.2` (precision), `08.2` (zero-pad) or `x` (hex)",
            )
            .into()
    };
    let mut chars = spec.chars().peekable();
    let mut align = None;
    let mut fill = ' ';
    let rest: String = chars.clone().collect();
    let mut it = rest.chars();
    if let (Some(c), Some(a)) = (it.next(), it.next()) {
        if matches!(a, '<' | '>' | '^') {
            fill = c;
            align = Some(a);
            chars.next();
            chars.next();
        }
    }
    if align.is_none() {
        if let Some(&c) = chars.peek() {
            if matches!(c, '<' | '>' | '^') {
                align = Some(c);
                chars.next();
            }
        }
    }
    if chars.peek() == Some(&'0') && align.is_none() {
        fill = '0';
        align = Some('0');
        chars.next();
    }
    let mut width = String::new();
    while let Some(&c) = chars.peek() {
        if !c.is_ascii_digit() {
            break;
        }
        width.push(c);
        chars.next();
    }
    let mut precision = None;
    if chars.peek() == Some(&'.') {
        chars.next();
        let mut p = String::new();
        while let Some(&c) = chars.peek() {
            if !c.is_ascii_digit() {
                break;
            }
            p.push(c);
            chars.next();
        }
        precision = Some(p.parse::<usize>().map_err(|_| bad())?);
    }
    let kind: String = chars.collect();
    let body = match (kind.as_str(), v, precision) {
        ("", Value::Float(f), Some(p)) | ("f", Value::Float(f), Some(p)) => format!("{f:.p$}"),
        ("", Value::Int(i), Some(p)) | ("f", Value::Int(i), Some(p)) => format!("{:.p$}", *i as f64),
        ("f", Value::Float(f), None) => format!("{f:.6}"),
        ("x", Value::Int(i), _) => format!("{i:x}"),
        ("X", Value::Int(i), _) => format!("{i:X}"),
        ("b", Value::Int(i), _) => format!("{i:b}"),
        ("o", Value::Int(i), _) => format!("{i:o}"),
        ("r", v, _) => v.repr(),
        ("", v, Some(p)) => v.to_string().chars().take(p).collect(),
        ("", v, None) => v.to_string(),
        _ => return Err(bad()),
    };
    let width: usize = if width.is_empty() { 0 } else { width.parse().map_err(|_| bad())? };
    Ok(match align {
        Some('0') => {
            let (sign, digits) = body.strip_prefix('-').map_or(("", body.as_str()), |d| ("-", d));
            format!("{sign}{}", pad(digits, width.saturating_sub(sign.len()), '>', '0'))
        }
        Some(a) => pad(&body, width, a, fill),
        None if matches!(v, Value::Int(_) | Value::Float(_)) => pad(&body, width, '>', fill),
        None => pad(&body, width, '<', fill),
    })
}

/// `"{} has {:>5}".format(a, b)`: positional `{}`, indexed `{0}`, and specs after `:`.
pub fn format_template(template: &str, args: &[Value], span: Span) -> R<String> {
    let mut out = String::new();
    let mut next = 0;
    let mut chars = template.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        match c {
            '{' if chars.peek().map(|p| p.1) == Some('{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek().map(|p| p.1) == Some('}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let mut hole = String::new();
                let mut closed = false;
                for (_, c) in chars.by_ref() {
                    if c == '}' {
                        closed = true;
                        break;
                    }
                    hole.push(c);
                }
                if !closed {
                    return fail(ErrorKind::Value, "unclosed `{` in format string", span);
                }
                let (which, spec) = hole.split_once(':').unwrap_or((&hole, ""));
                let idx = if which.is_empty() {
                    next += 1;
                    next - 1
                } else {
                    which.trim().parse::<usize>().map_err(|_| -> Unwind {
                        RuntimeError::new(
                            ErrorKind::Value,
                            format!("format hole `{{{hole}}}` is not `{{}}` or a position"),
                            span,
                        )
                        .into()
                    })?
                };
                let v = args.get(idx).ok_or_else(|| -> Unwind {
                    let given = match args.len() {
                        0 => "no arguments were given".to_string(),
                        1 => "only 1 argument was given".to_string(),
                        n => format!("only {n} arguments were given"),
                    };
                    RuntimeError::new(
                        ErrorKind::Value,
                        format!("format string has a hole for argument {} but {given}", idx + 1),
                        span,
                    )
                    .into()
                })?;
                out.push_str(&format_with_spec(v, spec, span)?);
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Read from the engine's stdin, shared by `read_line` and friends.
pub fn read_line_from(r: &mut dyn BufRead, buf: &mut String) -> std::io::Result<usize> {
    r.read_line(buf)
}

pub fn read_all_from(r: &mut dyn Read, buf: &mut String) -> std::io::Result<usize> {
    r.read_to_string(buf)
}
