//! Values: `Send + Sync`, with copy semantics. Compound payloads sit behind `Arc` and are
//! copied on write (`Arc::make_mut`), so a value handed to another task can never race.

use crate::error::RuntimeError;
use crate::syntax::ast::FnDef;
use indexmap::IndexMap;
use std::any::Any;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

pub type List = Vec<Value>;
pub type Map = IndexMap<Key, Value>;

#[derive(Clone, Default)]
pub enum Value {
    #[default]
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Arc<str>),
    Bytes(Arc<Vec<u8>>),
    List(Arc<List>),
    Map(Arc<Map>),
    Range(Arc<RangeValue>),
    Func(Arc<Closure>),
    Builtin(u32),
    Native(Arc<crate::engine::NativeFn>),
    Error(Arc<RuntimeError>),
    /// Runtime resources: tasks, channels, locks, shared cells, commands. Each is defined next
    /// to the construct it belongs to in `runtime/`.
    Object(Arc<dyn Object>),
}

/// A value built from a function definition and the values it captured when it was created.
#[derive(Debug)]
pub struct Closure {
    pub def: Arc<FnDef>,
    pub captures: Box<[Value]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeValue {
    pub start: i64,
    pub end: i64,
    pub step: i64,
}

impl RangeValue {
    pub fn len(&self) -> usize {
        let span =
            if self.step > 0 { self.end.saturating_sub(self.start) } else { self.start.saturating_sub(self.end) };
        if span <= 0 {
            0
        } else {
            ((span as u64).div_ceil(self.step.unsigned_abs())) as usize
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, i: usize) -> Option<i64> {
        (i < self.len()).then(|| self.start + self.step * i as i64)
    }
}

/// A runtime resource exposed to scripts. Methods are looked up by name at the call site.
pub trait Object: Send + Sync + fmt::Debug + Any {
    fn type_name(&self) -> &'static str;
    fn as_any(&self) -> &dyn Any;
    /// A short description shown by `print` and the REPL.
    fn describe(&self) -> String {
        format!("<{}>", self.type_name())
    }
}

/// Hashable map keys: nil, booleans, integers and strings.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    Nil,
    Bool(bool),
    Int(i64),
    Str(Arc<str>),
}

impl Key {
    pub fn from_value(v: &Value) -> Option<Key> {
        Some(match v {
            Value::Nil => Key::Nil,
            Value::Bool(b) => Key::Bool(*b),
            Value::Int(i) => Key::Int(*i),
            Value::Str(s) => Key::Str(s.clone()),
            _ => return None,
        })
    }

    pub fn to_value(&self) -> Value {
        match self {
            Key::Nil => Value::Nil,
            Key::Bool(b) => Value::Bool(*b),
            Key::Int(i) => Value::Int(*i),
            Key::Str(s) => Value::Str(s.clone()),
        }
    }
}

impl From<&str> for Key {
    fn from(s: &str) -> Key {
        Key::Str(s.into())
    }
}

impl Value {
    pub fn str(s: impl AsRef<str>) -> Value {
        Value::Str(Arc::from(s.as_ref()))
    }

    pub fn list(items: Vec<Value>) -> Value {
        Value::List(Arc::new(items))
    }

    pub fn map<K: Into<Key>>(entries: impl IntoIterator<Item = (K, Value)>) -> Value {
        Value::Map(Arc::new(entries.into_iter().map(|(k, v)| (k.into(), v)).collect()))
    }

    pub fn object(o: impl Object) -> Value {
        Value::Object(Arc::new(o))
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Map(_) => "map",
            Value::Range(_) => "range",
            Value::Func(_) | Value::Builtin(_) | Value::Native(_) => "function",
            Value::Error(_) => "error",
            Value::Object(o) => o.type_name(),
        }
    }

    pub fn truthy(&self) -> bool {
        match self {
            Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::Bytes(b) => !b.is_empty(),
            Value::List(l) => !l.is_empty(),
            Value::Map(m) => !m.is_empty(),
            Value::Range(r) => !r.is_empty(),
            _ => true,
        }
    }

    pub fn downcast<T: Object>(&self) -> Option<&T> {
        match self {
            Value::Object(o) => o.as_any().downcast_ref::<T>(),
            _ => None,
        }
    }

    /// The quoted form used inside lists and maps and by the REPL.
    pub fn repr(&self) -> String {
        let mut s = String::new();
        write_value(&mut s, self, true).expect("writing to a String cannot fail");
        s
    }

    /// Structural equality; ints and floats compare by numeric value.
    pub fn equals(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Nil, Value::Nil) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a == b,
            (Value::Int(a), Value::Float(b)) | (Value::Float(b), Value::Int(a)) => (*a as f64) == *b,
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::Bytes(a), Value::Bytes(b)) => a == b,
            (Value::List(a), Value::List(b)) => {
                Arc::ptr_eq(a, b) || (a.len() == b.len() && a.iter().zip(b.iter()).all(|(x, y)| x.equals(y)))
            }
            (Value::Map(a), Value::Map(b)) => {
                Arc::ptr_eq(a, b)
                    || (a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| v.equals(w))))
            }
            (Value::Range(a), Value::Range(b)) => a == b,
            (Value::Func(a), Value::Func(b)) => Arc::ptr_eq(a, b),
            (Value::Builtin(a), Value::Builtin(b)) => a == b,
            (Value::Native(a), Value::Native(b)) => Arc::ptr_eq(a, b),
            (Value::Error(a), Value::Error(b)) => Arc::ptr_eq(a, b) || a.message == b.message,
            (Value::Object(a), Value::Object(b)) => std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b)),
            _ => false,
        }
    }

    /// Ordering for `<` and `sort`: numbers with numbers, strings with strings, lists element-wise.
    pub fn compare(&self, other: &Value) -> Option<Ordering> {
        match (self, other) {
            (Value::Int(a), Value::Int(b)) => Some(a.cmp(b)),
            (Value::Float(a), Value::Float(b)) => a.partial_cmp(b),
            (Value::Int(a), Value::Float(b)) => (*a as f64).partial_cmp(b),
            (Value::Float(a), Value::Int(b)) => a.partial_cmp(&(*b as f64)),
            (Value::Str(a), Value::Str(b)) => Some(a.cmp(b)),
            (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
            (Value::Nil, Value::Nil) => Some(Ordering::Equal),
            (Value::List(a), Value::List(b)) => {
                for (x, y) in a.iter().zip(b.iter()) {
                    match x.compare(y)? {
                        Ordering::Equal => continue,
                        ord => return Some(ord),
                    }
                }
                Some(a.len().cmp(&b.len()))
            }
            _ => None,
        }
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        self.equals(other)
    }
}

impl Hash for Value {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.repr().hash(state)
    }
}

fn write_float(out: &mut impl fmt::Write, f: f64) -> fmt::Result {
    if f.is_finite() && f == f.trunc() && f.abs() < 1e16 {
        write!(out, "{f:.1}")
    } else if f.is_finite() && f == f.trunc() {
        // Large whole floats in exponent form, so they never read as ints.
        write!(out, "{f:e}")
    } else if f.is_nan() {
        write!(out, "nan")
    } else if f.is_infinite() {
        write!(out, "{}", if f > 0.0 { "inf" } else { "-inf" })
    } else {
        write!(out, "{f}")
    }
}

pub fn quote_str(out: &mut impl fmt::Write, s: &str) -> fmt::Result {
    out.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => out.write_str("\\\"")?,
            '\\' => out.write_str("\\\\")?,
            '\n' => out.write_str("\\n")?,
            '\t' => out.write_str("\\t")?,
            '\r' => out.write_str("\\r")?,
            '{' => out.write_str("{{")?,
            '}' => out.write_str("}}")?,
            c if c.is_control() => write!(out, "\\u{{{:x}}}", c as u32)?,
            c => out.write_char(c)?,
        }
    }
    out.write_char('"')
}

fn write_key(out: &mut impl fmt::Write, k: &Key) -> fmt::Result {
    match k {
        Key::Str(s) if is_plain_word(s) => out.write_str(s),
        other => write_value(out, &other.to_value(), true),
    }
}

fn is_plain_word(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn write_value(out: &mut impl fmt::Write, v: &Value, quoted: bool) -> fmt::Result {
    match v {
        Value::Nil => out.write_str("nil"),
        Value::Bool(b) => write!(out, "{b}"),
        Value::Int(i) => write!(out, "{i}"),
        Value::Float(f) => write_float(out, *f),
        Value::Str(s) if quoted => quote_str(out, s),
        Value::Str(s) => out.write_str(s),
        Value::Bytes(b) => write!(out, "<bytes len={}>", b.len()),
        Value::List(items) => {
            out.write_char('[')?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.write_str(", ")?;
                }
                write_value(out, item, true)?;
            }
            out.write_char(']')
        }
        Value::Map(m) => {
            out.write_char('{')?;
            for (i, (k, val)) in m.iter().enumerate() {
                if i > 0 {
                    out.write_str(", ")?;
                }
                write_key(out, k)?;
                out.write_str(": ")?;
                write_value(out, val, true)?;
            }
            out.write_char('}')
        }
        Value::Range(r) if r.step == 1 => write!(out, "range({}, {})", r.start, r.end),
        Value::Range(r) => write!(out, "range({}, {}, {})", r.start, r.end, r.step),
        Value::Func(c) => write!(out, "<fn {}>", c.def.name),
        Value::Builtin(i) => write!(out, "<builtin {}>", crate::builtins::name_of(*i)),
        Value::Native(n) => write!(out, "<native fn {}>", n.name),
        Value::Error(e) if quoted => write!(out, "<error: {}>", e.message),
        Value::Error(e) => out.write_str(&e.message),
        Value::Object(o) => out.write_str(&o.describe()),
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_value(f, self, false)
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_value(f, self, true)
    }
}

macro_rules! from_impl {
    ($t:ty, $v:ident, $e:expr) => {
        impl From<$t> for Value {
            fn from($v: $t) -> Value {
                $e
            }
        }
    };
}
from_impl!(bool, b, Value::Bool(b));
from_impl!(i64, i, Value::Int(i));
from_impl!(i32, i, Value::Int(i as i64));
from_impl!(usize, i, Value::Int(i as i64));
from_impl!(f64, f, Value::Float(f));
from_impl!(&str, s, Value::str(s));
from_impl!(String, s, Value::Str(s.into()));
from_impl!(Vec<Value>, v, Value::list(v));
from_impl!((), _u, Value::Nil);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Value>();
    }

    #[test]
    fn copy_on_write_never_shares_mutation() {
        let a = Value::list(vec![Value::Int(1)]);
        let mut b = a.clone();
        if let Value::List(l) = &mut b {
            Arc::make_mut(l).push(Value::Int(2));
        }
        assert_eq!(a.repr(), "[1]");
        assert_eq!(b.repr(), "[1, 2]");
    }

    #[test]
    fn floats_always_show_a_point() {
        assert_eq!(Value::Float(3.0).to_string(), "3.0");
        assert_eq!(Value::Float(0.5).to_string(), "0.5");
    }
}
