//! `open(path)`: a file read lazily, a line at a time, so a script can go through a file larger
//! than memory with `for line in open(path) { }` or stop after the first few lines.
//!
//! The handle is shared by every copy of the value (like a channel) and the file is closed by
//! `close()` or when the last copy is dropped.

use crate::builtins::{io_error, Args};
use crate::error::{ErrorKind, RuntimeError};
use crate::interp::{Interp, R};
use crate::syntax::Span;
use crate::value::{Object, Value};
use std::io::BufRead;
use std::sync::{Arc, Mutex};

type Builtin = fn(&mut Interp, Args) -> R<Value>;

pub static BUILTINS: &[(&str, Builtin)] = &[("open", open)];

pub struct FileReader {
    path: Arc<str>,
    state: Mutex<ReaderState>,
}

struct ReaderState {
    /// `None` once closed.
    reader: Option<std::io::BufReader<std::fs::File>>,
    /// Lines read so far, to say which line is not valid text.
    line: u64,
}

impl std::fmt::Debug for FileReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.describe())
    }
}

impl Object for FileReader {
    fn type_name(&self) -> &'static str {
        "file"
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn describe(&self) -> String {
        let closed = if self.is_closed() { ", closed" } else { "" };
        format!("<file {}{closed}>", Value::Str(self.path.clone()).repr())
    }
}

impl FileReader {
    fn is_closed(&self) -> bool {
        self.lock().reader.is_none()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReaderState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next line without its line ending, or `None` at the end of the file.
    fn read_line(&self, span: Span) -> R<Option<Value>> {
        let mut state = self.lock();
        let line_no = state.line + 1;
        let Some(reader) = state.reader.as_mut() else {
            return Err(RuntimeError::new(ErrorKind::Io, format!("{}: the file is closed", self.path), span)
                .with_label("read after `close()`")
                .into());
        };
        let mut buf = Vec::new();
        let n = reader.read_until(b'\n', &mut buf).map_err(|e| io_error(&e, &self.path, span))?;
        if n == 0 {
            return Ok(None);
        }
        state.line = line_no;
        if buf.ends_with(b"\n") {
            buf.pop();
            if buf.ends_with(b"\r") {
                buf.pop();
            }
        }
        match String::from_utf8(buf) {
            Ok(text) => Ok(Some(Value::str(text))),
            Err(_) => Err(RuntimeError::new(
                ErrorKind::Io,
                format!("{}: line {line_no} is not valid UTF-8 text", self.path),
                span,
            )
            .with_label("while reading this file")
            .with_help("read binary files whole with `read_file`, or check the file's encoding")
            .into()),
        }
    }
}

fn open(interp: &mut Interp, a: Args) -> R<Value> {
    a.expect("open", 1, 1)?;
    interp.shared.settings.require_fs(a.call)?;
    let path = a.str(0, "open")?;
    if std::path::Path::new(&*path).is_dir() {
        return Err(RuntimeError::new(ErrorKind::Io, format!("{path}: is a directory"), a.span(0))
            .with_label("a directory, not a file")
            .with_help("list a directory with `list_dir(path)`")
            .into());
    }
    let file = std::fs::File::open(&*path).map_err(|e| io_error(&e, &path, a.span(0)))?;
    let state = ReaderState { reader: Some(std::io::BufReader::new(file)), line: 0 };
    Ok(Value::object(FileReader { path, state: Mutex::new(state) }))
}

pub fn field(v: &Value, name: &str) -> Option<Value> {
    let f = v.downcast::<FileReader>()?;
    match name {
        "path" => Some(Value::Str(f.path.clone())),
        "closed" => Some(Value::Bool(f.is_closed())),
        _ => None,
    }
}

pub fn method(_interp: &mut Interp, v: &Value, name: &str, name_span: Span, a: &Args) -> Option<R<Value>> {
    let f = v.downcast::<FileReader>()?;
    Some(match name {
        "read_line" => a.expect("read_line", 0, 0).and_then(|_| Ok(f.read_line(a.call)?.unwrap_or_default())),
        "close" => a.expect("close", 0, 0).map(|_| {
            f.lock().reader = None;
            Value::Nil
        }),
        _ => Err(RuntimeError::new(ErrorKind::Type, format!("a file has no method `{name}`"), name_span)
            .with_label("unknown method")
            .with_help("files have `read_line()`, `close()` and the fields `path` and `closed`; `for line in file { }` reads every line")
            .into()),
    })
}

pub fn iterate_next(_interp: &mut Interp, v: &Value, span: Span) -> Option<R<Option<Value>>> {
    let f = v.downcast::<FileReader>()?;
    Some(f.read_line(span))
}
