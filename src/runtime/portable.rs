//! Values that cross a process boundary. A value is turned into a [`Wire`] tree and encoded
//! with serde and postcard (compact, varint-based). A function travels as a reference to its
//! definition, which the other process has too (it runs the same program), plus its captured
//! values. Channels, locks, cells and the other sync objects travel as references to the
//! process that owns them (see `broker.rs`). Anything else that cannot cross, a task handle
//! say, is an error naming what it is.

use crate::error::{ErrorKind, Frame, RuntimeError};
use crate::interp::Shared;
use crate::syntax::ast::{FnDef, Stmt};
use crate::syntax::visit::{walk_stmts, Visitor};
use crate::syntax::Span;
use crate::value::{Closure, Key, RangeValue, Value};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// Which function definition: its span, and which of the definitions with that span.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FnRef {
    pub span: Span,
    pub nth: u32,
}

/// A sync object or channel living in another process.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SharedRef {
    /// The owner's broker address (an abstract unix socket name).
    pub broker: String,
    pub owner_pid: i32,
    pub id: u64,
    pub kind: SharedKind,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedKind {
    Channel,
    Cell,
    Mutex,
    RLock,
    Semaphore,
    Event,
    Condition,
    Barrier,
}

impl SharedKind {
    pub fn type_name(self) -> &'static str {
        match self {
            SharedKind::Channel => "channel",
            SharedKind::Cell => "cell",
            SharedKind::Mutex => "mutex",
            SharedKind::RLock => "rlock",
            SharedKind::Semaphore => "semaphore",
            SharedKind::Event => "event",
            SharedKind::Condition => "condition",
            SharedKind::Barrier => "barrier",
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum WireKey {
    Nil,
    Bool(bool),
    Int(i64),
    Str(Arc<str>),
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub enum Wire {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Arc<str>),
    Bytes(serde_bytes::ByteBuf),
    List(Vec<Wire>),
    Map(Vec<(WireKey, Wire)>),
    Range(i64, i64, i64),
    Func(FnRef, Vec<Wire>),
    Builtin(u32),
    /// A native function registered by the host: only the host process can run it.
    Native(String),
    Error(Box<WireError>),
    Shared(SharedRef),
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct WireError {
    pub kind: ErrorKind,
    pub message: String,
    pub span: Option<Span>,
    pub label: Option<String>,
    pub help: Option<String>,
    pub data: Wire,
    pub stack: Vec<(String, Span)>,
    pub related: Vec<WireError>,
}

/// Why a value cannot cross: what it is, for the diagnostic.
#[derive(Debug)]
pub struct Unportable(pub String);

/// Every function definition of a world by span, so a [`FnRef`] finds its definition again.
#[derive(Default)]
pub struct DefIndex {
    by_span: HashMap<Span, Vec<Arc<FnDef>>>,
    programs_seen: usize,
    modules_seen: usize,
}

struct CollectDefs<'a>(&'a mut HashMap<Span, Vec<Arc<FnDef>>>);

impl Visitor for CollectDefs<'_> {
    fn function(&mut self, def: &Arc<FnDef>) -> bool {
        self.0.entry(def.span).or_default().push(def.clone());
        true
    }
}

impl DefIndex {
    fn add_stmts(&mut self, stmts: &[Stmt]) {
        let mut c = CollectDefs(&mut self.by_span);
        walk_stmts(stmts, &mut c);
    }

    /// Bring the index up to date with everything the world has compiled.
    fn refresh(&mut self, shared: &Shared) {
        let programs = shared.programs.read().unwrap_or_else(|e| e.into_inner());
        for p in &programs[self.programs_seen.min(programs.len())..] {
            self.add_stmts(p.stmts());
        }
        self.programs_seen = programs.len();
        let modules = shared.modules.read().unwrap_or_else(|e| e.into_inner());
        for m in &modules[self.modules_seen.min(modules.len())..] {
            self.add_stmts(&m.stmts);
        }
        self.modules_seen = modules.len();
    }

    fn locate(&mut self, shared: &Shared, def: &Arc<FnDef>) -> Option<FnRef> {
        for pass in 0..2 {
            if let Some(defs) = self.by_span.get(&def.span) {
                if let Some(nth) = defs.iter().position(|d| Arc::ptr_eq(d, def)) {
                    return Some(FnRef { span: def.span, nth: nth as u32 });
                }
            }
            if pass == 0 {
                self.refresh(shared);
            }
        }
        None
    }

    fn find(&mut self, shared: &Shared, r: FnRef) -> Option<Arc<FnDef>> {
        if !self.by_span.contains_key(&r.span) {
            self.refresh(shared);
        }
        self.by_span.get(&r.span)?.get(r.nth as usize).cloned()
    }
}

/// Every function definition in top-level statements, nested ones included.
pub fn each_def_in(stmts: &[Stmt], f: &mut impl FnMut(&Arc<FnDef>)) {
    struct Each<'a, F>(&'a mut F);
    impl<F: FnMut(&Arc<FnDef>)> Visitor for Each<'_, F> {
        fn function(&mut self, def: &Arc<FnDef>) -> bool {
            (self.0)(def);
            true
        }
    }
    walk_stmts(stmts, &mut Each(f));
}

fn key_to_wire(k: &Key) -> WireKey {
    match k {
        Key::Nil => WireKey::Nil,
        Key::Bool(b) => WireKey::Bool(*b),
        Key::Int(i) => WireKey::Int(*i),
        Key::Str(s) => WireKey::Str(s.clone()),
    }
}

fn wire_to_key(k: WireKey) -> Key {
    match k {
        WireKey::Nil => Key::Nil,
        WireKey::Bool(b) => Key::Bool(b),
        WireKey::Int(i) => Key::Int(i),
        WireKey::Str(s) => Key::Str(s),
    }
}

/// Turns values into wire trees for one world.
pub struct Exporter<'a> {
    pub shared: &'a Arc<Shared>,
}

impl Exporter<'_> {
    pub fn value(&self, v: &Value) -> Result<Wire, Unportable> {
        Ok(match v {
            Value::Nil => Wire::Nil,
            Value::Bool(b) => Wire::Bool(*b),
            Value::Int(i) => Wire::Int(*i),
            Value::Float(f) => Wire::Float(*f),
            Value::Str(s) => Wire::Str(s.clone()),
            Value::Bytes(b) => Wire::Bytes(serde_bytes::ByteBuf::from(b.as_slice())),
            Value::List(items) => Wire::List(items.iter().map(|x| self.value(x)).collect::<Result<_, _>>()?),
            Value::Map(m) => Wire::Map(
                m.iter().map(|(k, x)| Ok((key_to_wire(k), self.value(x)?))).collect::<Result<_, Unportable>>()?,
            ),
            Value::Range(r) => Wire::Range(r.start, r.end, r.step),
            Value::Func(c) => self.closure(c)?,
            Value::Builtin(b) => Wire::Builtin(*b),
            Value::Native(n) => Wire::Native(n.name.clone()),
            Value::Error(e) => Wire::Error(Box::new(self.error(e)?)),
            Value::Object(_) => match super::broker::share(v, self.shared) {
                Some(r) => Wire::Shared(r),
                None => return Err(Unportable(describe_unportable(v))),
            },
        })
    }

    fn closure(&self, c: &Closure) -> Result<Wire, Unportable> {
        let mut index = self.shared.defs.lock().unwrap_or_else(|e| e.into_inner());
        let r = index
            .locate(self.shared, &c.def)
            .ok_or_else(|| Unportable(format!("the function `{}`, which this process made at run time", c.def.name)))?;
        drop(index);
        let captures = c.captures.iter().map(|x| self.value(x)).collect::<Result<_, _>>()?;
        Ok(Wire::Func(r, captures))
    }

    pub fn error(&self, e: &RuntimeError) -> Result<WireError, Unportable> {
        Ok(WireError {
            kind: e.kind,
            message: e.message.clone(),
            span: e.span,
            label: e.label.clone(),
            help: e.help.clone(),
            // Error data that cannot cross is dropped rather than losing the error itself.
            data: self.value(&e.data).unwrap_or(Wire::Nil),
            stack: e.stack.iter().map(|f| (f.function.to_string(), f.call_span)).collect(),
            related: e.related.iter().map(|r| self.error(r)).collect::<Result<_, _>>()?,
        })
    }
}

/// Turns wire trees back into values in this process's copy of the world.
pub struct Importer<'a> {
    pub shared: &'a Shared,
}

impl Importer<'_> {
    pub fn value(&self, w: Wire) -> Result<Value, String> {
        Ok(match w {
            Wire::Nil => Value::Nil,
            Wire::Bool(b) => Value::Bool(b),
            Wire::Int(i) => Value::Int(i),
            Wire::Float(f) => Value::Float(f),
            Wire::Str(s) => Value::Str(s),
            Wire::Bytes(b) => Value::Bytes(Arc::new(b.into_vec())),
            Wire::List(items) => Value::list(items.into_iter().map(|x| self.value(x)).collect::<Result<_, _>>()?),
            Wire::Map(entries) => Value::Map(Arc::new(
                entries
                    .into_iter()
                    .map(|(k, x)| Ok((wire_to_key(k), self.value(x)?)))
                    .collect::<Result<_, String>>()?,
            )),
            Wire::Range(start, end, step) => Value::Range(Arc::new(RangeValue { start, end, step })),
            Wire::Func(r, captures) => {
                let def = self.shared.defs.lock().unwrap_or_else(|e| e.into_inner()).find(self.shared, r);
                let def = def.ok_or_else(|| format!("no function defined at {:?} in this process", r.span))?;
                let captures = captures.into_iter().map(|x| self.value(x)).collect::<Result<Vec<_>, _>>()?;
                Value::Func(Arc::new(Closure { def, captures: captures.into_boxed_slice() }))
            }
            Wire::Builtin(b) => Value::Builtin(b),
            Wire::Native(name) => unavailable_native(name),
            Wire::Error(e) => Value::Error(Arc::new(self.error(*e)?)),
            Wire::Shared(r) => super::broker::proxy(r),
        })
    }

    pub fn error(&self, e: WireError) -> Result<RuntimeError, String> {
        Ok(RuntimeError {
            kind: e.kind,
            message: e.message,
            span: e.span,
            label: e.label,
            help: e.help,
            data: self.value(e.data)?,
            stack: e.stack.into_iter().map(|(f, s)| Frame { function: f.into(), call_span: s }).collect(),
            related: e.related.into_iter().map(|r| self.error(r).map(Arc::new)).collect::<Result<_, _>>()?,
        })
    }
}

/// A host function seen from a forked process: calling it explains why it cannot run there.
fn unavailable_native(name: String) -> Value {
    let shown = name.clone();
    let func = move |_: &[Value]| -> Result<Value, crate::engine::NativeError> {
        Err(crate::engine::NativeError::Failed(format!(
            "`{shown}` is a native function of the host program, and cannot run in a forked process; \
             call it before the fork and send the result"
        )))
    };
    Value::Native(Arc::new(crate::engine::NativeFn { name, func: Box::new(func) }))
}

fn describe_unportable(v: &Value) -> String {
    match v.type_name() {
        "task" => "a task handle: a task stays in the process that started it (send its result instead)".into(),
        _ => format!("{}, which lives only in this process", crate::builtins::a_type(v)),
    }
}

/// Encode for the wire.
pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_stdvec(v).expect("encoding into memory cannot fail")
}

pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| format!("corrupt message from another process: {e}"))
}

/// The error for a value that cannot cross, at the place that tried to send it.
pub fn unportable_error(what: &str, u: Unportable, span: Span) -> RuntimeError {
    RuntimeError::new(ErrorKind::Type, format!("{what} cannot cross into another process: it is {}", u.0), span)
        .with_label("this value cannot be sent to another process")
        .with_help(
            "processes share only plain data (numbers, strings, lists, maps, functions), channels, cells and locks",
        )
}
