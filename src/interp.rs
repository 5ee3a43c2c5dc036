//! The interpreter: walks the resolved tree. Each OS thread runs its own `Interp`; they share
//! only the immutable program (behind `Arc`) and the explicit runtime objects.

use crate::builtins::{self, a_type, Args};
use crate::error::{ErrorKind, Frame, RuntimeError};
use crate::resolve::GlobalScope;
use crate::runtime::{self, cancel::CancelToken};
use crate::syntax::ast::*;
use crate::syntax::Span;
use crate::value::{Closure, Key, Value};
use std::sync::{Arc, RwLock};

/// Why evaluation stopped early.
#[derive(Debug)]
pub enum Unwind {
    Break,
    Continue,
    Return(Value),
    Error(Box<RuntimeError>),
}

pub type R<T> = Result<T, Unwind>;

impl From<RuntimeError> for Unwind {
    fn from(e: RuntimeError) -> Unwind {
        Unwind::Error(Box::new(e))
    }
}

/// Build an error result.
pub fn fail<T>(kind: ErrorKind, message: impl Into<String>, span: Span) -> R<T> {
    Err(Unwind::Error(Box::new(RuntimeError::new(kind, message, span))))
}

/// An imported module: its top-level code and the names it exports.
#[derive(Debug)]
pub struct Module {
    pub name: String,
    pub stmts: Vec<Stmt>,
    pub frame_size: u32,
    pub scope: GlobalScope,
}

/// Everything the threads of one engine share.
pub struct Shared {
    pub modules: RwLock<Vec<Arc<Module>>>,
    pub settings: crate::engine::Settings,
    pub output: crate::engine::Output,
    /// Cancelled by Ctrl-C or the host's interrupt handle; every task's token descends from it.
    pub root_cancel: CancelToken,
    pub tasks: runtime::registry::Registry,
    /// Every source file, so any thread can describe a span.
    pub sources: RwLock<crate::syntax::SourceMap>,
    pub threads: std::sync::atomic::AtomicUsize,
    pub processes: std::sync::atomic::AtomicUsize,
    /// Processes started by commands and not yet reaped.
    pub subprocesses: std::sync::atomic::AtomicUsize,
    /// When the engine was made (limits count from the start of each run: see [`RunBudget`]).
    pub started: std::time::Instant,
    /// Identifies this world to the process server, which keeps a copy of it (see
    /// `runtime/zygote.rs`); a forked process keeps its parent's id.
    pub world_id: u64,
    /// Every change to the world's engines, in order, so the process server can replay them.
    pub replay: std::sync::Mutex<Vec<crate::engine::Replay>>,
    pub next_engine: std::sync::atomic::AtomicU32,
    /// Every program compiled in this world, so a function can be found again by its span.
    pub programs: RwLock<Vec<crate::engine::Program>>,
    pub defs: std::sync::Mutex<runtime::portable::DefIndex>,
}

/// Per-thread interpreter state.
pub struct Interp {
    pub shared: Arc<Shared>,
    pub globals: Vec<Value>,
    /// The export map of each module once its top level has run in this thread's world.
    pub modules: Vec<Option<Value>>,
    pub(crate) stack: Vec<Value>,
    pub(crate) base: usize,
    pub(crate) closure: Option<Arc<Closure>>,
    depth: u32,
    ticks: u32,
    /// The limits' counters for the current run, shared by every task of the run.
    pub budget: Arc<RunBudget>,
    pub cancel: CancelToken,
    /// The scopes (`scope { }` blocks, and the whole script) that own the tasks started here.
    pub scopes: Vec<runtime::scope::ScopeFrame>,
    pub max_depth: u32,
    /// Shown in deadlock reports and thread names: `main`, or the construct and line that started it.
    pub task_name: Arc<str>,
    /// Which engine of the world this interpreter belongs to (see [`Shared::replay`]).
    pub engine_id: u32,
    /// Blocking calls here wait on behalf of another process, so they never count towards
    /// this process's deadlock detection.
    pub external_waits: bool,
}

/// What one run has used so far, against [`crate::engine::Limits`]: the operations of all its
/// tasks together, and the time since the run started (not since the engine was made).
#[derive(Debug)]
pub struct RunBudget {
    /// When the engine was made (limits count from the start of each run: see [`RunBudget`]).
    pub started: std::time::Instant,
    pub ops: std::sync::atomic::AtomicU64,
}

impl RunBudget {
    pub fn new() -> Arc<RunBudget> {
        Arc::new(RunBudget { started: std::time::Instant::now(), ops: std::sync::atomic::AtomicU64::new(0) })
    }
}

/// The stack is checked every this many nested calls; the red zone covers the calls in between.
const STACK_CHECK_EVERY: u32 = 16;
const STACK_RED_ZONE: usize = 1024 * 1024;
const STACK_GROWTH: usize = 8 * 1024 * 1024;

/// How often (in loop iterations and calls) the interpreter checks for cancellation and limits.
const POLL_INTERVAL: u32 = 1024;

impl Interp {
    pub fn new(shared: Arc<Shared>, globals: Vec<Value>, cancel: CancelToken, max_depth: u32) -> Interp {
        Interp {
            shared,
            globals,
            modules: Vec::new(),
            stack: Vec::with_capacity(256),
            base: 0,
            closure: None,
            depth: 0,
            ticks: 0,
            budget: RunBudget::new(),
            cancel,
            scopes: vec![runtime::scope::ScopeFrame::default()],
            max_depth,
            task_name: "main".into(),
            engine_id: 0,
            external_waits: false,
        }
    }

    /// A fresh interpreter for a new thread: a copy of this one's globals and modules.
    pub fn fork_world(&self, cancel: CancelToken, max_depth: u32) -> Interp {
        let mut child = Interp::new(self.shared.clone(), self.globals.clone(), cancel, max_depth);
        child.modules = self.modules.clone();
        child.engine_id = self.engine_id;
        child.budget = self.budget.clone();
        child
    }

    /// Run top-level statements in a fresh frame of `frame_size` locals; the value of the last
    /// expression statement is the result.
    pub fn run_unit(&mut self, stmts: &[Stmt], frame_size: u32) -> R<Value> {
        let saved_base = self.base;
        self.base = self.stack.len();
        self.stack.resize(self.base + frame_size as usize, Value::Nil);
        for stmt in stmts {
            if let Stmt::Fn(def, var) = stmt {
                if let Slot::Global(g) = var.slot {
                    self.globals[g as usize] =
                        Value::Func(Arc::new(Closure { def: def.clone(), captures: Box::new([]) }));
                }
            }
        }
        // The top level is compiled on each run; function bodies are compiled on their first call.
        let code = crate::compile::unit(stmts);
        let main = crate::compile::unit_def(frame_size);
        let result = code(self, &main);
        self.stack.truncate(self.base);
        self.base = saved_base;
        result
    }

    pub fn ensure_globals(&mut self, n: usize) {
        if self.globals.len() < n {
            self.globals.resize(n, Value::Nil);
        }
    }

    fn exec_stmts(&mut self, stmts: &[Stmt]) -> R<Value> {
        let mut last = Value::Nil;
        for stmt in stmts {
            last = self.exec(stmt)?;
        }
        Ok(last)
    }

    pub fn exec_block(&mut self, block: &Block) -> R<Value> {
        self.exec_stmts(&block.stmts)
    }

    #[inline]
    pub(crate) fn slot(&self, var: &Var) -> R<Value> {
        Ok(match var.slot {
            Slot::Local(i) => self.stack[self.base + i as usize].clone(),
            Slot::Global(g) => self.globals.get(g as usize).cloned().unwrap_or_default(),
            Slot::Capture(i) => self.closure.as_ref().map(|c| c.captures[i as usize].clone()).unwrap_or_default(),
            Slot::Builtin(b) => Value::Builtin(b),
            Slot::SelfFn => self.closure.as_ref().map(|c| Value::Func(c.clone())).unwrap_or_default(),
            Slot::Unresolved => return fail(ErrorKind::Name, format!("unresolved name `{}`", var.name), var.span),
        })
    }

    fn slot_mut(&mut self, var: &Var) -> R<&mut Value> {
        match var.slot {
            Slot::Local(i) => Ok(&mut self.stack[self.base + i as usize]),
            Slot::Global(g) => {
                self.ensure_globals(g as usize + 1);
                Ok(&mut self.globals[g as usize])
            }
            _ => fail(ErrorKind::Name, format!("cannot assign to `{}`", var.name), var.span),
        }
    }

    #[inline]
    pub(crate) fn set(&mut self, var: &Var, value: Value) -> R<()> {
        match var.slot {
            Slot::Local(i) => self.stack[self.base + i as usize] = value,
            Slot::Global(g) if (g as usize) < self.globals.len() => self.globals[g as usize] = value,
            _ => *self.slot_mut(var)? = value,
        }
        Ok(())
    }

    /// Check for cancellation and limits every so often; cheap enough for every loop back-edge.
    #[inline]
    pub fn tick(&mut self, span: Span) -> R<()> {
        self.ticks = self.ticks.wrapping_add(1);
        if self.ticks % POLL_INTERVAL == 0 {
            self.poll(span)?;
        }
        Ok(())
    }

    #[cold]
    fn poll(&mut self, span: Span) -> R<()> {
        if self.cancel.is_cancelled() {
            return Err(runtime::cancel::cancelled_error(span).into());
        }
        let ops = self.budget.ops.fetch_add(POLL_INTERVAL as u64, std::sync::atomic::Ordering::Relaxed);
        self.shared.settings.check_limits(ops + POLL_INTERVAL as u64, self.budget.started, span)?;
        Ok(())
    }

    /// Check the wall-clock limit; blocking operations call this while they wait.
    pub fn check_time_limit(&self, span: Span) -> R<()> {
        self.shared.settings.check_limits(0, self.budget.started, span)
    }

    /// Check for cancellation now; used by blocking operations.
    pub fn check_cancel(&self, span: Span) -> R<()> {
        if self.cancel.is_cancelled() {
            return Err(runtime::cancel::cancelled_error(span).into());
        }
        Ok(())
    }

    #[inline]
    pub(crate) fn exec(&mut self, stmt: &Stmt) -> R<Value> {
        match stmt {
            Stmt::Expr(e) => self.eval(e),
            Stmt::Assign { place, op: AssignOp::Set, value, .. } if place.path.is_empty() => {
                let v = self.eval(value)?;
                self.set(&place.var, v)?;
                Ok(Value::Nil)
            }
            Stmt::Let { var, value } => {
                let v = self.eval(value)?;
                self.set(var, v)?;
                Ok(Value::Nil)
            }
            _ => self.exec_other(stmt),
        }
    }

    #[inline(never)]
    fn exec_other(&mut self, stmt: &Stmt) -> R<Value> {
        match stmt {
            Stmt::Expr(_) | Stmt::Let { .. } => self.exec(stmt),
            Stmt::Assign { place, op, value, span } => {
                self.assign(place, *op, value, *span)?;
                Ok(Value::Nil)
            }
            Stmt::While { cond, body, span } => {
                while self.cond(cond)? {
                    match self.exec_block(body) {
                        Ok(_) | Err(Unwind::Continue) => {}
                        Err(Unwind::Break) => break,
                        Err(e) => return Err(e),
                    }
                    self.tick(*span)?;
                }
                Ok(Value::Nil)
            }
            Stmt::For { key, value, iter, body, span } => {
                let it = self.eval(iter)?;
                self.for_loop(key, value.as_ref(), it, *span, iter.span(), |me| {
                    me.exec_block(body)?;
                    Ok(())
                })?;
                Ok(Value::Nil)
            }
            Stmt::Fn(def, var) => {
                if !matches!(var.slot, Slot::Global(_)) {
                    let f = self.make_closure(def);
                    self.set(var, f)?;
                }
                Ok(Value::Nil)
            }
            Stmt::Return { value, .. } => {
                let v = match value {
                    Some(e) => self.eval(e)?,
                    None => Value::Nil,
                };
                Err(Unwind::Return(v))
            }
            Stmt::Break(_) => Err(Unwind::Break),
            Stmt::Continue(_) => Err(Unwind::Continue),
            Stmt::Import { alias, module, span, .. } => {
                let exports = self.import(*module, *span)?;
                self.set(alias, exports)?;
                Ok(Value::Nil)
            }
        }
    }

    /// Run a module's top level once per world and return its exports as a map.
    pub(crate) fn import(&mut self, module: u32, span: Span) -> R<Value> {
        if let Some(Some(v)) = self.modules.get(module as usize) {
            return Ok(v.clone());
        }
        let m = self.shared.modules.read().expect("module table").get(module as usize).cloned();
        let Some(m) = m else {
            return fail(ErrorKind::Name, "module was not loaded", span);
        };
        let saved_closure = self.closure.take();
        let result = self.run_unit(&m.stmts, m.frame_size);
        self.closure = saved_closure;
        result?;
        let exports = m
            .scope
            .order
            .iter()
            .filter(|(name, _)| !name.starts_with('_'))
            .map(|(name, slot)| (Key::Str(name.clone()), self.globals.get(*slot as usize).cloned().unwrap_or_default()))
            .collect();
        let v = Value::Map(Arc::new(exports));
        if self.modules.len() <= module as usize {
            self.modules.resize(module as usize + 1, None);
        }
        self.modules[module as usize] = Some(v.clone());
        Ok(v)
    }

    /// Run `body` once per item of `it`, binding `key` (and `value`) each time.
    pub(crate) fn for_loop(
        &mut self,
        key: &Var,
        value: Option<&Var>,
        it: Value,
        span: Span,
        iter_span: Span,
        mut body: impl FnMut(&mut Interp) -> R<()>,
    ) -> R<()> {
        macro_rules! run_body {
            () => {
                match body(self) {
                    Ok(_) | Err(Unwind::Continue) => {}
                    Err(Unwind::Break) => break,
                    Err(e) => return Err(e),
                }
                self.tick(span)?;
            };
        }
        match &it {
            Value::Range(r) => {
                let r = **r;
                let mut i = r.start;
                while (r.step > 0 && i < r.end) || (r.step < 0 && i > r.end) {
                    self.bind_pair(key, value, Value::Int(i), || Value::Nil)?;
                    run_body!();
                    i = match i.checked_add(r.step) {
                        Some(n) => n,
                        None => break,
                    };
                }
            }
            Value::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    if value.is_some() {
                        self.bind_pair(key, value, Value::Int(i as i64), || item.clone())?;
                    } else {
                        self.set(key, item.clone())?;
                    }
                    run_body!();
                }
            }
            Value::Map(m) => {
                for (k, v) in m.iter() {
                    self.bind_pair(key, value, k.to_value(), || v.clone())?;
                    run_body!();
                }
            }
            Value::Str(s) => {
                for (i, c) in s.chars().enumerate() {
                    if value.is_some() {
                        self.bind_pair(key, value, Value::Int(i as i64), || Value::str(c.encode_utf8(&mut [0; 4])))?;
                    } else {
                        self.set(key, Value::str(c.encode_utf8(&mut [0; 4])))?;
                    }
                    run_body!();
                }
            }
            Value::Object(_) => {
                let mut index = 0i64;
                while let Some(item) = runtime::iterate_next(self, &it, iter_span)? {
                    if value.is_some() {
                        self.bind_pair(key, value, Value::Int(index), || item.clone())?;
                    } else {
                        self.set(key, item)?;
                    }
                    index += 1;
                    run_body!();
                }
            }
            other => {
                return Err(RuntimeError::new(
                    ErrorKind::Type,
                    format!("cannot iterate over {}", a_type(other)),
                    iter_span,
                )
                .with_label(format!("this is {}", a_type(other)))
                .with_help("`for` works over lists, maps, ranges, strings and channels")
                .into())
            }
        }
        Ok(())
    }

    fn bind_pair(&mut self, key: &Var, value: Option<&Var>, k: Value, v: impl FnOnce() -> Value) -> R<()> {
        self.set(key, k)?;
        if let Some(var) = value {
            self.set(var, v())?;
        }
        Ok(())
    }

    pub fn make_closure(&self, def: &Arc<FnDef>) -> Value {
        let captures = def
            .captures
            .iter()
            .map(|slot| match *slot {
                Slot::Local(i) => self.stack[self.base + i as usize].clone(),
                Slot::Capture(i) => self.closure.as_ref().map(|c| c.captures[i as usize].clone()).unwrap_or_default(),
                Slot::SelfFn => self.closure.as_ref().map(|c| Value::Func(c.clone())).unwrap_or_default(),
                _ => Value::Nil,
            })
            .collect();
        Value::Func(Arc::new(Closure { def: def.clone(), captures }))
    }

    pub fn eval(&mut self, expr: &Expr) -> R<Value> {
        match expr {
            Expr::Int(i, _) => Ok(Value::Int(*i)),
            Expr::Var(var) => self.slot(var),
            Expr::Binary { op, lhs, rhs, span } => self.binary(*op, lhs, rhs, *span),
            Expr::Call { callee, args, span } => self.call_expr(callee, args, *span),
            Expr::If { cond, then, otherwise, .. } => {
                if self.cond(cond)? {
                    self.exec_block(then)
                } else if let Some(o) = otherwise {
                    self.eval(o)
                } else {
                    Ok(Value::Nil)
                }
            }
            _ => self.eval_other(expr),
        }
    }

    /// A condition's truth, without building a `Value::Bool` for integer comparisons.
    #[inline]
    fn cond(&mut self, e: &Expr) -> R<bool> {
        if let Expr::Binary { op, lhs, rhs, span } = e {
            if matches!(op, BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge | BinOp::Eq | BinOp::Ne) {
                let l = self.operand(lhs)?;
                let r = self.operand(rhs)?;
                if let (Value::Int(a), Value::Int(b)) = (&l, &r) {
                    return Ok(match op {
                        BinOp::Lt => a < b,
                        BinOp::Le => a <= b,
                        BinOp::Gt => a > b,
                        BinOp::Ge => a >= b,
                        BinOp::Eq => a == b,
                        _ => a != b,
                    });
                }
                return Ok(builtins::arith(*op, &l, &r, *span, lhs.span(), rhs.span())?.truthy());
            }
        }
        Ok(self.eval(e)?.truthy())
    }

    /// Evaluate an operand, reading literals and variables without a full `eval` dispatch.
    #[inline(always)]
    fn operand(&mut self, e: &Expr) -> R<Value> {
        match e {
            Expr::Int(i, _) => Ok(Value::Int(*i)),
            Expr::Var(v) => match v.slot {
                Slot::Local(i) => Ok(self.stack[self.base + i as usize].clone()),
                Slot::Global(g) if (g as usize) < self.globals.len() => Ok(self.globals[g as usize].clone()),
                _ => self.slot(v),
            },
            _ => self.eval(e),
        }
    }

    #[inline(never)]
    fn eval_other(&mut self, expr: &Expr) -> R<Value> {
        match expr {
            Expr::Int(..) | Expr::Var(_) | Expr::Binary { .. } | Expr::Call { .. } | Expr::If { .. } => self.eval(expr),
            Expr::Nil(_) => Ok(Value::Nil),
            Expr::Bool(b, _) => Ok(Value::Bool(*b)),
            Expr::Float(f, _) => Ok(Value::Float(*f)),
            Expr::Str(s, _) => Ok(Value::Str(s.clone())),
            Expr::Interp(parts, _) => {
                let mut out = String::new();
                for part in parts {
                    match part {
                        StrPart::Lit(s) => out.push_str(s),
                        StrPart::Expr(e, None) => {
                            use std::fmt::Write;
                            let v = self.eval(e)?;
                            let _ = write!(out, "{v}");
                        }
                        StrPart::Expr(e, Some(spec)) => {
                            let v = self.eval(e)?;
                            out.push_str(&builtins::format_with_spec(&v, spec, e.span())?);
                        }
                    }
                }
                Ok(Value::Str(out.into()))
            }
            Expr::List(items, _) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    out.push(self.eval(item)?);
                }
                Ok(Value::list(out))
            }
            Expr::Map(entries, _) => {
                let mut m = indexmap::IndexMap::with_capacity(entries.len());
                for (k, v) in entries {
                    m.insert(Key::Str(k.clone()), self.eval(v)?);
                }
                Ok(Value::Map(Arc::new(m)))
            }
            Expr::Unary { op, expr, span } => {
                let v = self.eval(expr)?;
                match op {
                    UnOp::Not => Ok(Value::Bool(!v.truthy())),
                    UnOp::Neg => match v {
                        Value::Int(i) => match i.checked_neg() {
                            Some(n) => Ok(Value::Int(n)),
                            None => fail(ErrorKind::Arithmetic, "integer overflow in negation", *span),
                        },
                        Value::Float(f) => Ok(Value::Float(-f)),
                        other => Err(type_error(format!("cannot negate {}", a_type(&other)), expr.span(), &other)),
                    },
                }
            }
            Expr::Method { recv, name, name_span, args, span } => self.method_expr(recv, name, *name_span, args, *span),
            Expr::Index { target, index, span } => {
                let t = self.eval(target)?;
                let i = self.eval(index)?;
                builtins::index(&t, &i, *span, index.span())
            }
            Expr::Field { target, name, span } => {
                let t = self.eval(target)?;
                builtins::field(self, &t, name, *span)
            }
            Expr::Block(b) => self.exec_block(b),
            Expr::Try { body, var, handler, .. } => match self.exec_block(body) {
                Err(Unwind::Error(e)) if e.kind != ErrorKind::Exit(0) && !matches!(e.kind, ErrorKind::Exit(_)) => {
                    if e.kind == ErrorKind::Cancelled && self.cancel.is_cancelled() {
                        return Err(Unwind::Error(e));
                    }
                    self.set(var, Value::Error(Arc::new(*e)))?;
                    self.exec_block(handler)
                }
                other => other,
            },
            Expr::Fn(def) => Ok(self.make_closure(def)),
            Expr::Spawn { body, span } => runtime::spawn::spawn(self, body, *span),
            Expr::Fork { body, span } => runtime::fork::fork(self, body, *span),
            Expr::Wait { any, target, span } => {
                let t = self.eval(target)?;
                runtime::wait::wait(self, t, *any, None, *span, target.span())
            }
            Expr::Lock { target, body, span } => {
                let l = self.eval(target)?;
                runtime::sync::with_lock(self, &l, body, *span, target.span())
            }
            Expr::Scope { body, span } => runtime::scope::run_scope(self, body, *span),
            Expr::PoolMap { func, items, options, span } => {
                let f = self.eval(func)?;
                let xs = self.eval(items)?;
                let opts = match options {
                    Some(o) => self.eval(o)?,
                    None => Value::Nil,
                };
                runtime::pool::pool_map(self, f, xs, opts, *span, func.span())
            }
            Expr::PoolNew { options, span } => {
                let opts = match options {
                    Some(o) => self.eval(o)?,
                    None => Value::Nil,
                };
                runtime::workpool::new_pool(self, opts, *span)
            }
            Expr::Select { arms, span } => runtime::channel::select(self, arms, *span),
        }
    }

    #[inline]
    fn binary(&mut self, op: BinOp, lhs: &Expr, rhs: &Expr, span: Span) -> R<Value> {
        if op == BinOp::Pipe {
            // The operands of `|` are commands: `run(a) | run(b)` must not run `a` on its own.
            let leaves = runtime::command::pipe_leaves(lhs, rhs);
            return runtime::command::eval_pipe(self, &leaves, span, |it, e| it.eval(e));
        }
        let l = self.operand(lhs)?;
        match op {
            BinOp::And => return if l.truthy() { self.eval(rhs) } else { Ok(l) },
            BinOp::Or => return if l.truthy() { Ok(l) } else { self.eval(rhs) },
            _ => {}
        }
        let r = self.operand(rhs)?;
        self.binary_values(op, l, r, span, lhs.span(), rhs.span())
    }

    /// Apply a binary operator (not `and`/`or`) to evaluated operands.
    #[inline]
    pub(crate) fn binary_values(
        &mut self,
        op: BinOp,
        l: Value,
        r: Value,
        span: Span,
        lspan: Span,
        rspan: Span,
    ) -> R<Value> {
        if let (Value::Int(a), Value::Int(b)) = (&l, &r) {
            let (a, b) = (*a, *b);
            let checked = match op {
                BinOp::Add => a.checked_add(b),
                BinOp::Sub => a.checked_sub(b),
                BinOp::Mul => a.checked_mul(b),
                BinOp::Lt => return Ok(Value::Bool(a < b)),
                BinOp::Le => return Ok(Value::Bool(a <= b)),
                BinOp::Gt => return Ok(Value::Bool(a > b)),
                BinOp::Ge => return Ok(Value::Bool(a >= b)),
                BinOp::Eq => return Ok(Value::Bool(a == b)),
                BinOp::Ne => return Ok(Value::Bool(a != b)),
                _ => return builtins::arith(op, &l, &r, span, lspan, rspan),
            };
            return match checked {
                Some(n) => Ok(Value::Int(n)),
                None => Err(overflow_error(op, a, b, span)),
            };
        }
        if op == BinOp::Pipe {
            return runtime::command::pipe(self, l, r, span, lspan, rspan);
        }
        builtins::arith(op, &l, &r, span, lspan, rspan)
    }

    fn call_expr(&mut self, callee: &Expr, args: &[Expr], span: Span) -> R<Value> {
        let f = self.eval(callee)?;
        match f {
            Value::Func(c) => {
                let base = self.stack.len();
                for a in args {
                    let v = match self.eval(a) {
                        Ok(v) => v,
                        Err(e) => {
                            self.stack.truncate(base);
                            return Err(e);
                        }
                    };
                    self.stack.push(v);
                }
                self.call_closure_at(c, base, span)
            }
            Value::Builtin(b) => {
                let args = self.eval_args(args, span)?;
                builtins::call(self, b, args)
            }
            other => {
                let args = self.eval_args(args, span)?;
                self.call_other(&other, args, span, callee.span())
            }
        }
    }

    /// Call a value that is neither a closure nor a builtin; a "not callable" error points at the callee.
    pub(crate) fn call_other(&mut self, f: &Value, args: Args, span: Span, callee_span: Span) -> R<Value> {
        if let Value::Native(n) = f {
            // The argument spans let a host function's type error point at the bad argument.
            return crate::engine::call_native(n, args.vals, &args.spans, span);
        }
        self.call_value(f, args.vals, span).map_err(|e| match e {
            Unwind::Error(mut err) if err.kind == ErrorKind::Type && err.span == Some(span) => {
                err.span = Some(callee_span);
                Unwind::Error(err)
            }
            e => e,
        })
    }

    pub fn eval_args(&mut self, args: &[Expr], call: Span) -> R<Args> {
        let mut out = Args::new(call, args.len());
        for a in args {
            let v = self.eval(a)?;
            out.push(v, a.span());
        }
        Ok(out)
    }

    /// Call a closure whose arguments are already on the stack from `base`.
    pub(crate) fn call_closure_at(&mut self, c: Arc<Closure>, base: usize, span: Span) -> R<Value> {
        // Only closures that capture, or name themselves, need to be reachable while they run.
        if !c.def.uses_self && c.def.captures.is_empty() {
            return self.call_def(&c.def, base, span);
        }
        let def = c.def.clone();
        let saved_closure = self.closure.replace(c);
        let result = self.call_def(&def, base, span);
        self.closure = saved_closure;
        result
    }

    /// Run `def`'s compiled body in a new frame whose arguments are on the stack from `base`.
    /// The caller has made `self.closure` whatever the body needs it to be.
    pub(crate) fn call_def(&mut self, def: &FnDef, base: usize, span: Span) -> R<Value> {
        let argc = self.stack.len() - base;
        if argc != def.params.len() || self.depth >= self.max_depth {
            self.stack.truncate(base);
            return Err(self.call_error(def, argc, span));
        }
        let code = def.code.get_or_init(|| crate::compile::function(def));
        if def.frame_size as usize > argc {
            self.stack.resize(base + def.frame_size as usize, Value::Nil);
        }
        let saved_base = std::mem::replace(&mut self.base, base);
        self.depth += 1;
        let result = if self.depth % STACK_CHECK_EVERY == 0 {
            // Deep recursion continues on a stack grown on the heap, so no host thread overflows.
            stacker::maybe_grow(STACK_RED_ZONE, STACK_GROWTH, || code.run(self, def))
        } else {
            code.run(self, def)
        };
        self.depth -= 1;
        self.base = saved_base;
        pop_frame(&mut self.stack, base);
        self.tick(span)?;
        // An int is rebuilt rather than moved: a whole-value copy of a freshly written result
        // stalls the processor.
        if let Ok(Value::Int(n)) = &result {
            let n = *n;
            std::mem::forget(result);
            return Ok(Value::Int(n));
        }
        match result {
            r @ Ok(_) => r,
            r => finish_call(r, def, span, &self.shared),
        }
    }

    #[cold]
    #[inline(never)]
    fn call_error(&self, def: &FnDef, argc: usize, span: Span) -> Unwind {
        if argc != def.params.len() {
            return arity_error(def, argc, span).into();
        }
        RuntimeError::new(ErrorKind::Limit, format!("call depth exceeded {} nested calls", self.max_depth), span)
            .with_label(format!("calling `{}` here went too deep", def.name))
            .with_help("is the recursion missing a base case?")
            .into()
    }

    /// Call any callable value with already evaluated arguments.
    pub fn call_value(&mut self, f: &Value, args: Vec<Value>, span: Span) -> R<Value> {
        match f {
            Value::Func(c) => {
                let base = self.stack.len();
                self.stack.extend(args);
                self.call_closure_at(c.clone(), base, span)
            }
            Value::Builtin(b) => {
                let mut a = Args::new(span, args.len());
                for v in args {
                    a.push(v, span);
                }
                builtins::call(self, *b, a)
            }
            Value::Native(n) => crate::engine::call_native(n, args, &[], span),
            other => Err(RuntimeError::new(ErrorKind::Type, format!("{} is not callable", a_type(other)), span)
                .with_label(format!("this is {}, not a function", a_type(other)))
                .into()),
        }
    }

    fn method_expr(&mut self, recv: &Expr, name: &Name, name_span: Span, args: &[Expr], span: Span) -> R<Value> {
        if builtins::is_mutating_method(name) {
            if let Some((var, path)) = place_of(recv) {
                let args = self.eval_args(args, span)?;
                return self.with_place(var, &path, span, |interp, target| {
                    builtins::call_mut_method(interp, target, name, name_span, args)
                });
            }
        }
        let r = self.eval(recv)?;
        let args = self.eval_args(args, span)?;
        self.method_call(r, name, name_span, args, span)
    }

    /// Call method `name` on an evaluated receiver with evaluated arguments.
    pub(crate) fn method_call(&mut self, r: Value, name: &Name, name_span: Span, args: Args, span: Span) -> R<Value> {
        // A module (a map) calls its function members directly: `json.encode(x)`.
        if let Value::Map(m) = &r {
            if let Some(f) = m.get(&Key::Str(name.clone())) {
                if matches!(f, Value::Func(_) | Value::Builtin(_) | Value::Native(_)) {
                    let f = f.clone();
                    return self.call_value(&f, args.vals, span);
                }
            }
        }
        builtins::call_method(self, r, name, name_span, args)
    }

    fn assign(&mut self, place: &Place, op: AssignOp, value: &Expr, span: Span) -> R<()> {
        let v = self.eval(value)?;
        if place.path.is_empty() && op == AssignOp::Set {
            return self.set(&place.var, v);
        }
        let path = self.eval_path(&place.path)?;
        self.assign_with(&place.var, &path, op, v, span, value.span())
    }

    /// Store `v` into `var` + `path` with `op` (`=`, `+=`, …); the path is already evaluated.
    pub(crate) fn assign_with(
        &mut self,
        var: &Var,
        path: &[(Value, Span)],
        op: AssignOp,
        v: Value,
        span: Span,
        value_span: Span,
    ) -> R<()> {
        self.with_place(var, path, span, |_, target| {
            let new = match op {
                AssignOp::Set => v,
                AssignOp::Add => builtins::arith(BinOp::Add, target, &v, span, span, value_span)?,
                AssignOp::Sub => builtins::arith(BinOp::Sub, target, &v, span, span, value_span)?,
                AssignOp::Mul => builtins::arith(BinOp::Mul, target, &v, span, span, value_span)?,
                AssignOp::Div => builtins::arith(BinOp::Div, target, &v, span, span, value_span)?,
            };
            *target = new;
            Ok(Value::Nil)
        })?;
        Ok(())
    }

    fn eval_path(&mut self, path: &[PathStep]) -> R<Vec<(Value, Span)>> {
        path.iter()
            .map(|step| match step {
                PathStep::Index(e) => Ok((self.eval(e)?, e.span())),
                PathStep::Field(name, span) => Ok((Value::Str(name.clone()), *span)),
            })
            .collect()
    }

    /// Run `f` on the value at `var` + `path`, taken out of its slot so `f` may call back into
    /// the interpreter; the value is put back whatever `f` returns.
    pub(crate) fn with_place(
        &mut self,
        var: &Var,
        path: &[(Value, Span)],
        span: Span,
        f: impl FnOnce(&mut Interp, &mut Value) -> R<Value>,
    ) -> R<Value> {
        if matches!(var.slot, Slot::Capture(_)) {
            // A captured event, cell or channel is a shared handle: `ev.set()` changes the shared
            // resource, not the closure's copy, so only captured lists and maps are refused.
            let mut copy = self.slot(var)?;
            let target = builtins::navigate_mut(&mut copy, path, span)?;
            if !matches!(target, Value::List(_) | Value::Map(_)) {
                let mut handle = std::mem::take(target);
                return f(self, &mut handle);
            }
            return Err(RuntimeError::new(
                ErrorKind::Name,
                format!("cannot change `{}`: it was captured by value", var.name),
                var.span,
            )
            .with_help("closures and tasks get their own copy; share state explicitly with `cell(value)`")
            .into());
        }
        let mut root = std::mem::take(self.slot_mut(var)?);
        let result = match builtins::navigate_mut(&mut root, path, span) {
            Ok(target) => f(self, target),
            Err(e) => Err(e),
        };
        *self.slot_mut(var)? = root;
        result
    }

    /// Current call depth, for tasks that inherit the limit.
    pub fn depth(&self) -> u32 {
        self.depth
    }
}

/// If `e` is a variable with a chain of indexes and fields, the variable and the path.
pub(crate) fn place_of(e: &Expr) -> Option<(&Var, Vec<(Value, Span)>)> {
    match e {
        Expr::Var(v) if matches!(v.slot, Slot::Local(_) | Slot::Global(_) | Slot::Capture(_)) => Some((v, vec![])),
        Expr::Field { target, name, span } => {
            let (v, mut path) = place_of(target)?;
            path.push((Value::Str(name.clone()), *span));
            Some((v, path))
        }
        Expr::Index { target, index, .. } => {
            let literal = match &**index {
                Expr::Int(i, _) => Value::Int(*i),
                Expr::Str(s, _) => Value::Str(s.clone()),
                _ => return None,
            };
            let (v, mut path) = place_of(target)?;
            path.push((literal, index.span()));
            Some((v, path))
        }
        _ => None,
    }
}

fn arity_error(def: &FnDef, argc: usize, span: Span) -> RuntimeError {
    let params: Vec<&str> = def.params.iter().map(|p| &*p.name).collect();
    RuntimeError::new(
        ErrorKind::Type,
        format!(
            "`{}` takes {} argument{} but {} {} given",
            def.name,
            params.len(),
            if params.len() == 1 { "" } else { "s" },
            argc,
            if argc == 1 { "was" } else { "were" }
        ),
        span,
    )
    .with_label(format!("called with {argc}"))
    .with_help(format!("`{}` is declared as `fn {}({})`", def.name, def.name, params.join(", ")))
}

/// Drop a frame's values: those without destructors are checked inline instead of each
/// costing a call.
#[inline(always)]
fn pop_frame(stack: &mut Vec<Value>, base: usize) {
    while stack.len() > base {
        if let Some(v) = stack.pop() {
            if matches!(v, Value::Nil | Value::Bool(_) | Value::Int(_) | Value::Float(_)) {
                // Nothing to release.
                std::mem::forget(v);
            } else {
                drop(v);
            }
        }
    }
}

/// The outcome of a call whose body did not simply produce a value.
#[cold]
#[inline(never)]
fn finish_call(result: R<Value>, def: &FnDef, span: Span, shared: &Shared) -> R<Value> {
    match result {
        Ok(v) | Err(Unwind::Return(v)) => Ok(v),
        Err(Unwind::Error(e)) => Err(Unwind::Error(with_frame(e, def, span, shared))),
        Err(Unwind::Break | Unwind::Continue) => Ok(Value::Nil),
    }
}

/// Record the call a failing function was running in, for the call stack in diagnostics.
#[cold]
#[inline(never)]
fn with_frame(mut e: Box<RuntimeError>, def: &FnDef, span: Span, shared: &Shared) -> Box<RuntimeError> {
    if let Some(in_library) = leaving_library(&e, def, span, shared) {
        return blame_caller(e, def, span, &in_library);
    }
    if e.stack.len() < 64 || e.kind != ErrorKind::Limit {
        e.stack.push(Frame { function: def.name.clone(), call_span: span });
    }
    e
}

/// When an error raised inside a standard-library function is leaving it for the script that
/// called it, a test for "this span is in the library". Errors from the script's own callbacks
/// already point at the script.
fn leaving_library(e: &RuntimeError, def: &FnDef, call: Span, shared: &Shared) -> Option<impl Fn(Span) -> bool> {
    let at = e.span?;
    let sources = shared.sources.read().unwrap_or_else(|e| e.into_inner());
    let is_library = |file: u32| sources.get(file).is_some_and(|f| crate::stdlib::is_library_file(&f.name));
    // The usual case, an error in the script's own code, costs one lookup.
    if !is_library(at.file) || !is_library(def.span.file) || is_library(call.file) {
        return None;
    }
    let library: Vec<bool> = (0..sources.len() as u32).map(is_library).collect();
    Some(move |s: Span| library.get(s.file as usize).copied().unwrap_or(false))
}

/// Point a library error at the script's call, like Rust's `#[track_caller]`: the script's
/// author needs their own line, not the module's internals. The frames collected so far are
/// all inside the library, so they go, and so do the library's own tasks among the related
/// errors (what they point to stays).
fn blame_caller(
    mut e: Box<RuntimeError>,
    def: &FnDef,
    call: Span,
    in_library: &impl Fn(Span) -> bool,
) -> Box<RuntimeError> {
    e.span = Some(call);
    e.label = Some(format!("in this call to `{}`", def.name));
    e.stack.clear();
    e.related = outside_library(&e.related, in_library);
    e
}

fn outside_library(related: &[Arc<RuntimeError>], in_library: &impl Fn(Span) -> bool) -> Vec<Arc<RuntimeError>> {
    let mut kept = Vec::new();
    for r in related {
        if r.span.is_some_and(in_library) {
            kept.extend(outside_library(&r.related, in_library));
        } else {
            let mut r = (**r).clone();
            r.stack.retain(|f| !in_library(f.call_span));
            r.related = outside_library(&r.related, in_library);
            kept.push(Arc::new(r));
        }
    }
    kept
}

/// The error for `a op b` on ints when the result does not fit.
#[cold]
#[inline(never)]
pub(crate) fn overflow_error(op: BinOp, a: i64, b: i64, span: Span) -> Unwind {
    RuntimeError::new(ErrorKind::Arithmetic, format!("integer overflow: {a} {} {b}", op.symbol()), span)
        .with_label("the result does not fit in 64 bits")
        .with_help("convert to a float with `float(x)` for approximate large numbers")
        .into()
}

pub fn type_error(message: String, span: Span, v: &Value) -> Unwind {
    RuntimeError::new(ErrorKind::Type, message, span).with_label(format!("this is {}", a_type(v))).into()
}

impl Interp {
    /// Bind a value to a resolved variable; runtime constructs such as `select` use it for the
    /// names they introduce.
    pub fn bind_var(&mut self, var: &Var, value: Value) -> R<()> {
        *self.slot_mut(var)? = value;
        Ok(())
    }
}
