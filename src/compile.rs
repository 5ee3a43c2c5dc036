//! The compiler: turns resolved code into a tree of closures before it runs. A function body
//! is compiled once, on its first call, and kept in its [`FnDef`]; a unit's top level is
//! compiled each time it runs. Each node is specialised for its shape — a local read,
//! `i < n` in a condition, `x = x + 1`, a call of a global function — so hot paths neither
//! match on the tree nor build values only to throw them away.
//!
//! Compiled code is `Send + Sync` and shared by every thread; all state lives in [`Interp`].
//! Every node does what the tree walker in `interp.rs` does for the same node, in the same
//! order, with the same errors; the runtime (`scope`, `lock`, `select` bodies) still runs
//! blocks through the tree walker.

use crate::builtins::{self, Args};
use crate::error::ErrorKind;
use crate::interp::{overflow_error, place_of, type_error, Interp, Unwind, R};
use crate::runtime;
use crate::runtime::channel::Channel;
use crate::syntax::ast::*;
use crate::syntax::Span;
use crate::value::{Key, Value};
use std::fmt;
use std::sync::{Arc, OnceLock};

/// A compiled expression. The `&FnDef` is the function whose frame is running, so a call can
/// recognise a function calling itself and skip the reference counting of an ordinary call.
type Ev = Box<dyn Fn(&mut Interp, &FnDef) -> R<Value> + Send + Sync>;
/// A compiled condition: an expression's truth, without building a value when it can.
type Cond = Box<dyn Fn(&mut Interp, &FnDef) -> R<bool> + Send + Sync>;
/// A compiled statement whose value nobody needs.
type Ex = Box<dyn Fn(&mut Interp, &FnDef) -> R<()> + Send + Sync>;

/// A compiled function body.
pub struct Code {
    body: Ev,
}

impl Code {
    #[inline]
    pub(crate) fn run(&self, it: &mut Interp, def: &FnDef) -> R<Value> {
        (self.body)(it, def)
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<compiled>")
    }
}

/// Compile a function body. A `return` in tail position becomes the body's plain value.
pub(crate) fn function(def: &FnDef) -> Code {
    Code { body: block(&def.body.stmts, true) }
}

/// Compile a unit's top-level statements; the value is the last statement's.
pub(crate) fn unit(stmts: &[Stmt]) -> Ev {
    block(stmts, false)
}

/// The stand-in "function" a unit's top level runs as.
/// Compile a function's body now if it has not been (the process server does this for
/// the children it forks).
pub fn ensure_compiled(def: &FnDef) {
    def.code.get_or_init(|| function(def));
}

pub(crate) fn unit_def(frame_size: u32) -> FnDef {
    FnDef {
        name: "<main>".into(),
        params: Vec::new(),
        body: Block { stmts: Vec::new(), span: Span::default() },
        span: Span::default(),
        frame_size,
        captures: Vec::new(),
        uses_self: false,
        code: OnceLock::new(),
        global_refs: OnceLock::new(),
    }
}

static NIL: Value = Value::Nil;

/// Push an int onto the stack, written in place. (Building the value first and moving it in
/// makes the processor reload it whole before its parts are stored, a costly stall.)
#[inline(always)]
fn push_int(stack: &mut Vec<Value>, n: i64) {
    stack.extend((0..1).map(move |_| Value::Int(n)));
}

/// The int in `r`, if it holds one. Taking it this way spares a destructor call on `r`.
#[inline(always)]
fn take_int(r: R<Value>) -> Result<i64, R<Value>> {
    if let Ok(Value::Int(x)) = &r {
        let x = *x;
        std::mem::forget(r);
        Ok(x)
    } else {
        Err(r)
    }
}

/// `*slot = v`, without a destructor call when the old value has none, and with ints
/// written field by field (see [`push_int`]).
#[inline(always)]
fn put(slot: &mut Value, v: Value) {
    if !matches!(slot, Value::Nil | Value::Bool(_) | Value::Int(_) | Value::Float(_)) {
        *slot = v;
        return;
    }
    // The old value owns nothing, so it is simply overwritten.
    let old = match take_int(Ok(v)) {
        Ok(n) => std::mem::replace(slot, Value::Int(n)),
        Err(v) => std::mem::replace(slot, v.unwrap_or_default()),
    };
    std::mem::forget(old);
}

/// `v.clone()`, with ints (the common case) copied without the general dispatch.
#[inline(always)]
fn fast_clone(v: &Value) -> Value {
    match v {
        Value::Int(i) => Value::Int(*i),
        other => clone_other(other),
    }
}

/// Kept apart so the compiler does not merge the int case into the general copy.
#[inline(never)]
fn clone_other(v: &Value) -> Value {
    v.clone()
}

fn nil() -> Ev {
    Box::new(|_, _| Ok(Value::Nil))
}

fn constant(v: Value) -> Ev {
    match v {
        Value::Int(i) => Box::new(move |_, _| Ok(Value::Int(i))),
        v => Box::new(move |_, _| Ok(v.clone())),
    }
}

// ---------------------------------------------------------------------------------------------
// Blocks and statements

/// A block's value is its last statement's (nil unless that is an expression).
fn block(stmts: &[Stmt], tail: bool) -> Ev {
    match stmts {
        [] => nil(),
        [last] => stmt_value(last, tail),
        [init @ .., last] => {
            let init = seq(init);
            let last = stmt_value(last, tail);
            Box::new(move |it, cx| {
                init(it, cx)?;
                last(it, cx)
            })
        }
    }
}

/// A statement whose value is wanted. In tail position of a function body, `return e` is `e`.
fn stmt_value(s: &Stmt, tail: bool) -> Ev {
    match s {
        Stmt::Expr(e) if tail => tail_expr(e),
        Stmt::Expr(e) => expr(e),
        Stmt::Return { value, .. } if tail => match value {
            Some(e) => tail_expr(e),
            None => nil(),
        },
        _ => {
            let x = stmt(s);
            Box::new(move |it, cx| {
                x(it, cx)?;
                Ok(Value::Nil)
            })
        }
    }
}

fn tail_expr(e: &Expr) -> Ev {
    match e {
        Expr::If { cond: c, then, otherwise, .. } => if_expr(c, then, otherwise.as_deref(), true),
        Expr::Block(b) => block(&b.stmts, true),
        _ => expr(e),
    }
}

/// Statements run for their effects, in order.
fn seq(stmts: &[Stmt]) -> Ex {
    let mut xs: Vec<Ex> = stmts.iter().map(stmt).collect();
    match xs.len() {
        0 => Box::new(|_, _| Ok(())),
        1 => xs.pop().expect("one statement"),
        2 => {
            let b = xs.pop().expect("two statements");
            let a = xs.pop().expect("two statements");
            Box::new(move |it, cx| {
                a(it, cx)?;
                b(it, cx)
            })
        }
        3 => {
            let c = xs.pop().expect("three statements");
            let b = xs.pop().expect("three statements");
            let a = xs.pop().expect("three statements");
            Box::new(move |it, cx| {
                a(it, cx)?;
                b(it, cx)?;
                c(it, cx)
            })
        }
        _ => {
            let xs = xs.into_boxed_slice();
            Box::new(move |it, cx| {
                for x in xs.iter() {
                    x(it, cx)?;
                }
                Ok(())
            })
        }
    }
}

#[allow(unreachable_patterns)]
fn stmt(s: &Stmt) -> Ex {
    match s {
        Stmt::Expr(e) => {
            let f = expr(e);
            Box::new(move |it, cx| {
                f(it, cx)?;
                Ok(())
            })
        }
        Stmt::Let { var, value } => store(var, expr(value)),
        Stmt::Assign { place, op, value, span } => assign(place, *op, value, *span),
        Stmt::While { cond: c, body, span } => with_cond(c, WhileNode { body: seq(&body.stmts), span: *span }),
        Stmt::For { key, value, iter, body, span } => {
            let (key, value, span, iter_span) = (key.clone(), value.clone(), *span, iter.span());
            let iter = expr(iter);
            let body = seq(&body.stmts);
            Box::new(move |it, cx| {
                let items = iter(it, cx)?;
                it.for_loop(&key, value.as_ref(), items, span, iter_span, |it| body(it, cx))
            })
        }
        Stmt::Fn(def, var) => {
            if matches!(var.slot, Slot::Global(_)) {
                // Top-level functions are bound before the unit runs.
                return Box::new(|_, _| Ok(()));
            }
            let (def, var) = (def.clone(), var.clone());
            Box::new(move |it, _| {
                let f = it.make_closure(&def);
                it.set(&var, f)
            })
        }
        Stmt::Return { value, .. } => match value {
            Some(e) => {
                let f = expr(e);
                Box::new(move |it, cx| Err(Unwind::Return(f(it, cx)?)))
            }
            None => Box::new(|_, _| Err(Unwind::Return(Value::Nil))),
        },
        Stmt::Break(_) => Box::new(|_, _| Err(Unwind::Break)),
        Stmt::Continue(_) => Box::new(|_, _| Err(Unwind::Continue)),
        Stmt::Import { alias, module, span, .. } => {
            let (alias, module, span) = (alias.clone(), *module, *span);
            Box::new(move |it, _| {
                let exports = it.import(module, span)?;
                it.set(&alias, exports)
            })
        }
        // Anything newer than this compiler runs in the tree walker.
        other => {
            let s = other.clone();
            Box::new(move |it, _| {
                it.exec(&s)?;
                Ok(())
            })
        }
    }
}

/// `var = value`, as `Interp::set` does it.
fn store(var: &Var, value: Ev) -> Ex {
    match var.slot {
        Slot::Local(i) => {
            let i = i as usize;
            Box::new(move |it, cx| {
                let v = value(it, cx)?;
                let b = it.base;
                put(&mut it.stack[b + i], v);
                Ok(())
            })
        }
        Slot::Global(g) => {
            let var = var.clone();
            let g = g as usize;
            Box::new(move |it, cx| {
                let v = value(it, cx)?;
                match it.globals.get_mut(g) {
                    Some(slot) => {
                        put(slot, v);
                        Ok(())
                    }
                    None => it.set(&var, v),
                }
            })
        }
        _ => {
            let var = var.clone();
            Box::new(move |it, cx| {
                let v = value(it, cx)?;
                it.set(&var, v)
            })
        }
    }
}

/// The slot of a plain variable, for in-place updates.
#[inline(always)]
fn place_mut(it: &mut Interp, slot: Slot) -> Option<&mut Value> {
    match slot {
        Slot::Local(i) => {
            let b = it.base;
            Some(&mut it.stack[b + i as usize])
        }
        Slot::Global(g) => it.globals.get_mut(g as usize),
        _ => None,
    }
}

enum PathEv {
    Index(Ev, Span),
    Field(Value, Span),
}

fn assign(place: &Place, op: AssignOp, value: &Expr, span: Span) -> Ex {
    let var = &place.var;
    let plain = matches!(var.slot, Slot::Local(_) | Slot::Global(_));
    if place.path.is_empty() {
        if op == AssignOp::Set {
            if let Some(x) = self_update(var, value) {
                return x;
            }
            return store(var, expr(value));
        }
        if plain && matches!(op, AssignOp::Add | AssignOp::Sub | AssignOp::Mul) {
            return compound(var, op, value, span);
        }
    }
    let (var, value_span) = (var.clone(), value.span());
    let value = expr(value);
    let path: Vec<PathEv> = place
        .path
        .iter()
        .map(|step| match step {
            PathStep::Index(e) => PathEv::Index(expr(e), e.span()),
            PathStep::Field(name, s) => PathEv::Field(Value::Str(name.clone()), *s),
        })
        .collect();
    Box::new(move |it, cx| {
        let v = value(it, cx)?;
        if path.is_empty() && op == AssignOp::Set {
            return it.set(&var, v);
        }
        let mut p = Vec::with_capacity(path.len());
        for step in &path {
            p.push(match step {
                PathEv::Index(e, s) => (e(it, cx)?, *s),
                PathEv::Field(k, s) => (k.clone(), *s),
            });
        }
        it.assign_with(&var, &p, op, v, span, value_span)
    })
}

/// `x += e` (and `-=`, `*=`) on a plain variable: ints are updated in place; anything else
/// (and overflow, for its message) takes the general path.
fn compound(var: &Var, op: AssignOp, value: &Expr, span: Span) -> Ex {
    let (var, value_span) = (var.clone(), value.span());
    let value = expr(value);
    Box::new(move |it, cx| {
        let v = value(it, cx)?;
        if let (Some(Value::Int(a)), Value::Int(b)) = (place_mut(it, var.slot), &v) {
            let r = match op {
                AssignOp::Add => a.checked_add(*b),
                AssignOp::Sub => a.checked_sub(*b),
                _ => a.checked_mul(*b),
            };
            if let Some(n) = r {
                *a = n;
                return Ok(());
            }
        }
        it.assign_with(&var, &[], op, v, span, value_span)
    })
}

/// `x = x + y` where `y` is a variable or an int literal: updates an int in place.
fn self_update(var: &Var, value: &Expr) -> Option<Ex> {
    let Expr::Binary { op: op @ (BinOp::Add | BinOp::Sub | BinOp::Mul), lhs, rhs, span } = value else {
        return None;
    };
    let Expr::Var(l) = &**lhs else { return None };
    if l.slot != var.slot || !matches!(var.slot, Slot::Local(_) | Slot::Global(_)) {
        return None;
    }
    let rhs = match operand(rhs) {
        Op::Dyn(_) => return None,
        pure => pure,
    };
    let general = store(var, expr(value));
    Some(with_one(rhs, SelfUpdate { slot: var.slot, op: *op, span: *span, general }))
}

struct SelfUpdate {
    slot: Slot,
    op: BinOp,
    span: Span,
    general: Ex,
}

impl Build1 for SelfUpdate {
    type Out = Ex;
    fn build<Rr: Opnd>(self, r: Rr) -> Ex {
        match self.op {
            BinOp::Add => self_update_op::<Rr, ADD>(r, self),
            BinOp::Sub => self_update_op::<Rr, SUB>(r, self),
            _ => self_update_op::<Rr, MUL>(r, self),
        }
    }
}

fn self_update_op<Rr: Opnd, const OP: u8>(r: Rr, u: SelfUpdate) -> Ex {
    let SelfUpdate { slot, span, general, .. } = u;
    Box::new(move |it, cx| {
        if let Some(b) = r.int(it) {
            if let Some(Value::Int(a)) = place_mut(it, slot) {
                return match checked::<OP>(*a, b) {
                    Some(n) => {
                        *a = n;
                        Ok(())
                    }
                    None => Err(overflow_error(bin_op(OP), *a, b, span)),
                };
            }
        }
        general(it, cx)
    })
}

// ---------------------------------------------------------------------------------------------
// Expressions

thread_local! {
    /// How deeply the expression being compiled is nested (compile-time bookkeeping only).
    static NESTING: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Every this many levels of expression nesting, compiled code checks its stack.
const GUARD_EVERY: u32 = 64;

fn expr(e: &Expr) -> Ev {
    // Compiling recurses on nesting, and long operator chains nest deeply.
    let depth = NESTING.with(|n| {
        n.set(n.get() + 1);
        n.get()
    });
    let f = stacker::maybe_grow(64 * 1024, 1024 * 1024, || expr_inner(e));
    NESTING.with(|n| n.set(depth - 1));
    if depth % GUARD_EVERY != 0 {
        return f;
    }
    // Running such code recurses as deeply, so it grows its stack on the heap when short.
    Box::new(move |it, cx| stacker::maybe_grow(256 * 1024, 4 * 1024 * 1024, || f(it, cx)))
}

#[allow(unreachable_patterns)]
fn expr_inner(e: &Expr) -> Ev {
    match e {
        Expr::Nil(_) => nil(),
        Expr::Bool(b, _) => constant(Value::Bool(*b)),
        Expr::Int(i, _) => constant(Value::Int(*i)),
        Expr::Float(f, _) => constant(Value::Float(*f)),
        Expr::Str(s, _) => constant(Value::Str(s.clone())),
        Expr::Interp(parts, _) => interpolate(parts),
        Expr::List(items, _) => {
            let items: Vec<Ev> = items.iter().map(expr).collect();
            Box::new(move |it, cx| {
                let mut out = Vec::with_capacity(items.len());
                for item in &items {
                    out.push(item(it, cx)?);
                }
                Ok(Value::list(out))
            })
        }
        Expr::Map(entries, _) => {
            let entries: Vec<(Key, Ev)> = entries.iter().map(|(k, v)| (Key::Str(k.clone()), expr(v))).collect();
            Box::new(move |it, cx| {
                let mut m = indexmap::IndexMap::with_capacity(entries.len());
                for (k, v) in &entries {
                    m.insert(k.clone(), v(it, cx)?);
                }
                Ok(Value::Map(Arc::new(m)))
            })
        }
        Expr::Var(v) => read(v),
        Expr::Unary { op: UnOp::Not, expr: inner, .. } => {
            let c = cond(inner);
            Box::new(move |it, cx| Ok(Value::Bool(!c(it, cx)?)))
        }
        Expr::Unary { op: UnOp::Neg, expr: inner, span } => {
            if let Some(v) = negated_literal(inner) {
                return constant(v);
            }
            let (span, inner_span) = (*span, inner.span());
            let f = expr(inner);
            Box::new(move |it, cx| match f(it, cx)? {
                Value::Int(i) => match i.checked_neg() {
                    Some(n) => Ok(Value::Int(n)),
                    None => crate::interp::fail(ErrorKind::Arithmetic, "integer overflow in negation", span),
                },
                Value::Float(f) => Ok(Value::Float(-f)),
                other => {
                    Err(type_error(format!("cannot negate {}", crate::builtins::a_type(&other)), inner_span, &other))
                }
            })
        }
        Expr::Binary { op, lhs, rhs, span } => binary(*op, lhs, rhs, *span),
        Expr::Call { callee, args, span } => call(callee, args, *span),
        Expr::Method { recv, name, name_span, args, span } => method(recv, name, *name_span, args, *span),
        Expr::Index { target, index, span } => {
            with_pair(operand(target), operand(index), IndexNode { span: *span, index_span: index.span() })
        }
        Expr::Field { target, name, span } => {
            let f = Field { key: Key::Str(name.clone()), name: name.clone(), span: *span };
            match operand(target) {
                Op::Loc(i) => Box::new(move |it, _| f.get(it, &it.stack[it.base + i])),
                Op::Glob(g) => Box::new(move |it, _| f.get(it, it.globals.get(g).unwrap_or(&NIL))),
                Op::Int(k) => Box::new(move |it, _| f.get(it, &Value::Int(k))),
                Op::Dyn(t) => Box::new(move |it, cx| {
                    let t = t(it, cx)?;
                    f.get(it, &t)
                }),
            }
        }
        Expr::Block(b) => block(&b.stmts, false),
        Expr::If { cond: c, then, otherwise, .. } => if_expr(c, then, otherwise.as_deref(), false),
        Expr::Try { body, var, handler, .. } => {
            let body = block(&body.stmts, false);
            let handler = block(&handler.stmts, false);
            let var = var.clone();
            Box::new(move |it, cx| match body(it, cx) {
                Err(Unwind::Error(e)) if !matches!(e.kind, ErrorKind::Exit(_)) => {
                    if e.kind == ErrorKind::Cancelled && it.cancel.is_cancelled() {
                        return Err(Unwind::Error(e));
                    }
                    it.set(&var, Value::Error(Arc::new(*e)))?;
                    handler(it, cx)
                }
                other => other,
            })
        }
        Expr::Fn(def) => {
            let def = def.clone();
            Box::new(move |it, _| Ok(it.make_closure(&def)))
        }
        Expr::Spawn { body, span } => {
            let (body, span) = (body.clone(), *span);
            Box::new(move |it, _| runtime::spawn::spawn(it, &body, span))
        }
        Expr::Fork { body, span } => {
            let (body, span) = (body.clone(), *span);
            Box::new(move |it, _| runtime::fork::fork(it, &body, span))
        }
        Expr::Wait { any, target, span } => {
            let (any, span, target_span) = (*any, *span, target.span());
            let target = expr(target);
            Box::new(move |it, cx| {
                let t = target(it, cx)?;
                runtime::wait::wait(it, t, any, None, span, target_span)
            })
        }
        Expr::Lock { target, body, span } => {
            let (span, target_span, body) = (*span, target.span(), (**body).clone());
            let target = expr(target);
            Box::new(move |it, cx| {
                let l = target(it, cx)?;
                runtime::sync::with_lock(it, &l, &body, span, target_span)
            })
        }
        Expr::Scope { body, span } => {
            let (body, span) = ((**body).clone(), *span);
            Box::new(move |it, _| runtime::scope::run_scope(it, &body, span))
        }
        Expr::PoolMap { func, items, options, span } => {
            let (span, func_span) = (*span, func.span());
            let func = expr(func);
            let items = expr(items);
            let options = options.as_deref().map(expr);
            Box::new(move |it, cx| {
                let f = func(it, cx)?;
                let xs = items(it, cx)?;
                let opts = match &options {
                    Some(o) => o(it, cx)?,
                    None => Value::Nil,
                };
                runtime::pool::pool_map(it, f, xs, opts, span, func_span)
            })
        }
        Expr::PoolNew { options, span } => {
            let span = *span;
            let options = options.as_deref().map(expr);
            Box::new(move |it, cx| {
                let opts = match &options {
                    Some(o) => o(it, cx)?,
                    None => Value::Nil,
                };
                runtime::workpool::new_pool(it, opts, span)
            })
        }
        Expr::Select { arms, span } => {
            let (arms, span) = (arms.clone(), *span);
            Box::new(move |it, _| runtime::channel::select(it, &arms, span))
        }
        // Anything newer than this compiler runs in the tree walker.
        other => {
            let e = other.clone();
            Box::new(move |it, _| it.eval(&e))
        }
    }
}

/// `target.name`.
struct Field {
    key: Key,
    name: Name,
    span: Span,
}

impl Field {
    #[inline]
    fn get(&self, it: &Interp, target: &Value) -> R<Value> {
        // A map entry is found with the key made once; everything else, misses included,
        // is `builtins::field`'s.
        if let Value::Map(m) = target {
            if let Some(v) = m.get(&self.key) {
                return Ok(v.clone());
            }
        }
        builtins::field(it, target, &self.name, self.span)
    }
}

/// `-5`, `-1.5`: folded to a constant.
fn negated_literal(e: &Expr) -> Option<Value> {
    match e {
        Expr::Int(i, _) => i.checked_neg().map(Value::Int),
        Expr::Float(f, _) => Some(Value::Float(-f)),
        _ => None,
    }
}

fn read(v: &Var) -> Ev {
    match v.slot {
        Slot::Local(i) => {
            let i = i as usize;
            Box::new(move |it, _| Ok(fast_clone(&it.stack[it.base + i])))
        }
        Slot::Global(g) => {
            let g = g as usize;
            Box::new(move |it, _| Ok(fast_clone(it.globals.get(g).unwrap_or(&NIL))))
        }
        Slot::Capture(i) => {
            let i = i as usize;
            Box::new(move |it, _| Ok(it.closure.as_ref().map(|c| fast_clone(&c.captures[i])).unwrap_or_default()))
        }
        Slot::Builtin(b) => constant(Value::Builtin(b)),
        _ => {
            let v = v.clone();
            Box::new(move |it, _| it.slot(&v))
        }
    }
}

fn interpolate(parts: &[StrPart]) -> Ev {
    enum Part {
        Lit(String),
        Plain(Ev),
        Spec(Ev, Arc<str>, Span),
    }
    let parts: Vec<Part> = parts
        .iter()
        .map(|p| match p {
            StrPart::Lit(s) => Part::Lit(s.clone()),
            StrPart::Expr(e, None) => Part::Plain(expr(e)),
            StrPart::Expr(e, Some(spec)) => Part::Spec(expr(e), spec.clone(), e.span()),
        })
        .collect();
    Box::new(move |it, cx| {
        use std::fmt::Write;
        let mut out = String::new();
        for part in &parts {
            match part {
                Part::Lit(s) => out.push_str(s),
                Part::Plain(e) => {
                    let v = e(it, cx)?;
                    let _ = write!(out, "{v}");
                }
                Part::Spec(e, spec, span) => {
                    let v = e(it, cx)?;
                    out.push_str(&builtins::format_with_spec(&v, spec, *span)?);
                }
            }
        }
        Ok(Value::Str(out.into()))
    })
}

fn if_expr(c: &Expr, then: &Block, otherwise: Option<&Expr>, tail: bool) -> Ev {
    let then = match &then.stmts[..] {
        [Stmt::Expr(e)] => leaf(e).unwrap_or_else(|| Leaf::Dyn(block(&then.stmts, tail))),
        stmts => Leaf::Dyn(block(stmts, tail)),
    };
    let otherwise = match otherwise {
        None => Leaf::Nil,
        Some(o) => leaf(o).unwrap_or_else(|| Leaf::Dyn(if tail { tail_expr(o) } else { expr(o) })),
    };
    with_cond(c, IfNode { then, otherwise })
}

/// An `if` branch; the simplest ones are evaluated without a call.
enum Leaf {
    Nil,
    Local(usize),
    Int(i64),
    Dyn(Ev),
}

fn leaf(e: &Expr) -> Option<Leaf> {
    match e {
        Expr::Var(Var { slot: Slot::Local(i), .. }) => Some(Leaf::Local(*i as usize)),
        Expr::Int(k, _) => Some(Leaf::Int(*k)),
        Expr::Nil(_) => Some(Leaf::Nil),
        _ => None,
    }
}

impl Leaf {
    #[inline(always)]
    fn eval(&self, it: &mut Interp, cx: &FnDef) -> R<Value> {
        match self {
            Leaf::Nil => Ok(Value::Nil),
            Leaf::Local(i) => Ok(fast_clone(&it.stack[it.base + i])),
            Leaf::Int(k) => Ok(Value::Int(*k)),
            Leaf::Dyn(f) => f(it, cx),
        }
    }
}

/// A node with a condition in it, built around a condition of known type.
trait WithCond {
    type Out;
    fn build<C: Test>(self, c: C) -> Self::Out;
}

/// Build `node` around condition `e`, fusing an int comparison into it.
fn with_cond<W: WithCond>(e: &Expr, node: W) -> W::Out {
    match e {
        Expr::Binary {
            op: op @ (BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge | BinOp::Eq | BinOp::Ne),
            lhs,
            rhs,
            span,
        } => {
            let spans = Spans { op: *span, l: lhs.span(), r: rhs.span() };
            with_pair(operand(lhs), operand(rhs), CmpNode { op: *op, spans, node })
        }
        _ => node.build(DynTest(cond(e))),
    }
}

/// A condition of known type.
trait Test: Send + Sync + 'static {
    fn test(&self, it: &mut Interp, cx: &FnDef) -> R<bool>;
}

struct DynTest(Cond);

impl Test for DynTest {
    #[inline(always)]
    fn test(&self, it: &mut Interp, cx: &FnDef) -> R<bool> {
        (self.0)(it, cx)
    }
}

struct IfNode {
    then: Leaf,
    otherwise: Leaf,
}

impl WithCond for IfNode {
    type Out = Ev;
    fn build<C: Test>(self, c: C) -> Ev {
        let IfNode { then, otherwise } = self;
        Box::new(move |it, cx| if c.test(it, cx)? { then.eval(it, cx) } else { otherwise.eval(it, cx) })
    }
}

struct WhileNode {
    body: Ex,
    span: Span,
}

impl WithCond for WhileNode {
    type Out = Ex;
    fn build<C: Test>(self, c: C) -> Ex {
        let WhileNode { body, span } = self;
        Box::new(move |it, cx| {
            while c.test(it, cx)? {
                match body(it, cx) {
                    Ok(()) | Err(Unwind::Continue) => {}
                    Err(Unwind::Break) => break,
                    Err(e) => return Err(e),
                }
                it.tick(span)?;
            }
            Ok(())
        })
    }
}

/// The condition itself, as a closure.
struct CondOnly;

impl WithCond for CondOnly {
    type Out = Cond;
    fn build<C: Test>(self, c: C) -> Cond {
        Box::new(move |it, cx| c.test(it, cx))
    }
}

/// An expression's truth. Equal to `expr(e)(…)?.truthy()` in every case, errors included.
fn cond(e: &Expr) -> Cond {
    match e {
        Expr::Binary { op: BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge | BinOp::Eq | BinOp::Ne, .. } => {
            with_cond(e, CondOnly)
        }
        Expr::Binary { op: BinOp::And, lhs, rhs, .. } => {
            let (a, b) = (cond(lhs), cond(rhs));
            Box::new(move |it, cx| Ok(a(it, cx)? && b(it, cx)?))
        }
        Expr::Binary { op: BinOp::Or, lhs, rhs, .. } => {
            let (a, b) = (cond(lhs), cond(rhs));
            Box::new(move |it, cx| Ok(a(it, cx)? || b(it, cx)?))
        }
        Expr::Unary { op: UnOp::Not, expr: inner, .. } => {
            let a = cond(inner);
            Box::new(move |it, cx| Ok(!a(it, cx)?))
        }
        Expr::Bool(b, _) => {
            let b = *b;
            Box::new(move |_, _| Ok(b))
        }
        Expr::Var(Var { slot: Slot::Local(i), .. }) => {
            let i = *i as usize;
            Box::new(move |it, _| Ok(it.stack[it.base + i].truthy()))
        }
        _ => {
            let f = expr(e);
            Box::new(move |it, cx| Ok(f(it, cx)?.truthy()))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Operators

/// An operand, by how it can be read: variables and int literals are read in place.
enum Op {
    Loc(usize),
    Glob(usize),
    Int(i64),
    Dyn(Ev),
}

fn operand(e: &Expr) -> Op {
    match e {
        Expr::Int(i, _) => Op::Int(*i),
        Expr::Unary { op: UnOp::Neg, expr: inner, .. } if matches!(**inner, Expr::Int(..)) => {
            match negated_literal(inner) {
                Some(Value::Int(i)) => Op::Int(i),
                _ => Op::Dyn(expr(e)),
            }
        }
        Expr::Var(Var { slot: Slot::Local(i), .. }) => Op::Loc(*i as usize),
        Expr::Var(Var { slot: Slot::Global(g), .. }) => Op::Glob(*g as usize),
        _ => Op::Dyn(expr(e)),
    }
}

/// An operand specialised by type. `PURE` operands are read without side effects, so they can
/// be borrowed in place instead of cloned; a `Dyn` operand is only ever evaluated.
trait Opnd: Send + Sync + 'static {
    const PURE: bool;
    fn get<'a>(&'a self, it: &'a Interp) -> &'a Value;
    fn eval(&self, it: &mut Interp, cx: &FnDef) -> R<Value>;
    #[inline(always)]
    fn int(&self, it: &Interp) -> Option<i64> {
        match self.get(it) {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}

struct Loc(usize);
struct Glob(usize);
struct KInt(i64, Value);
struct Dyn(Ev);

impl Opnd for Loc {
    const PURE: bool = true;
    #[inline(always)]
    fn get<'a>(&'a self, it: &'a Interp) -> &'a Value {
        &it.stack[it.base + self.0]
    }
    #[inline(always)]
    fn eval(&self, it: &mut Interp, _: &FnDef) -> R<Value> {
        Ok(fast_clone(self.get(it)))
    }
}

impl Opnd for Glob {
    const PURE: bool = true;
    #[inline(always)]
    fn get<'a>(&'a self, it: &'a Interp) -> &'a Value {
        it.globals.get(self.0).unwrap_or(&NIL)
    }
    #[inline(always)]
    fn eval(&self, it: &mut Interp, _: &FnDef) -> R<Value> {
        Ok(fast_clone(self.get(it)))
    }
}

impl Opnd for KInt {
    const PURE: bool = true;
    #[inline(always)]
    fn get<'a>(&'a self, _: &'a Interp) -> &'a Value {
        &self.1
    }
    #[inline(always)]
    fn eval(&self, _: &mut Interp, _: &FnDef) -> R<Value> {
        Ok(Value::Int(self.0))
    }
    #[inline(always)]
    fn int(&self, _: &Interp) -> Option<i64> {
        Some(self.0)
    }
}

impl Opnd for Dyn {
    const PURE: bool = false;
    fn get<'a>(&'a self, _: &'a Interp) -> &'a Value {
        unreachable!("a computed operand is never read in place")
    }
    #[inline(always)]
    fn eval(&self, it: &mut Interp, cx: &FnDef) -> R<Value> {
        (self.0)(it, cx)
    }
}

/// Builds a node from two operands of known types.
trait Build2 {
    type Out;
    fn build<L: Opnd, Rr: Opnd>(self, l: L, r: Rr) -> Self::Out;
}

/// Builds a node from one operand of a known type.
trait Build1 {
    type Out;
    fn build<Rr: Opnd>(self, r: Rr) -> Self::Out;
}

fn with_one<B: Build1>(r: Op, b: B) -> B::Out {
    match r {
        Op::Loc(i) => b.build(Loc(i)),
        Op::Glob(g) => b.build(Glob(g)),
        Op::Int(k) => b.build(KInt(k, Value::Int(k))),
        Op::Dyn(e) => b.build(Dyn(e)),
    }
}

fn with_pair<B: Build2>(l: Op, r: Op, b: B) -> B::Out {
    struct Left<L, B>(L, B);
    impl<L: Opnd, B: Build2> Build1 for Left<L, B> {
        type Out = B::Out;
        fn build<Rr: Opnd>(self, r: Rr) -> B::Out {
            self.1.build(self.0, r)
        }
    }
    match l {
        Op::Loc(i) => with_one(r, Left(Loc(i), b)),
        Op::Glob(g) => with_one(r, Left(Glob(g), b)),
        Op::Int(k) => with_one(r, Left(KInt(k, Value::Int(k)), b)),
        Op::Dyn(e) => with_one(r, Left(Dyn(e), b)),
    }
}

const ADD: u8 = 0;
const SUB: u8 = 1;
const MUL: u8 = 2;
const fn bin_op(op: u8) -> BinOp {
    match op {
        ADD => BinOp::Add,
        SUB => BinOp::Sub,
        _ => BinOp::Mul,
    }
}

#[derive(Clone, Copy)]
struct Spans {
    op: Span,
    l: Span,
    r: Span,
}

#[inline(always)]
fn checked<const OP: u8>(a: i64, b: i64) -> Option<i64> {
    match OP {
        ADD => a.checked_add(b),
        SUB => a.checked_sub(b),
        _ => a.checked_mul(b),
    }
}

/// `a op b` for arithmetic on ints, as `Interp::binary_values` computes it.
#[inline(always)]
fn int_op<const OP: u8>(a: i64, b: i64, span: Span) -> R<Value> {
    match checked::<OP>(a, b) {
        Some(n) => Ok(Value::Int(n)),
        None => Err(overflow_error(bin_op(OP), a, b, span)),
    }
}

/// A comparison operator as the set of orderings it accepts: bit 0 less, 1 equal, 2 greater.
fn cmp_mask(op: BinOp) -> u8 {
    match op {
        BinOp::Lt => 0b001,
        BinOp::Le => 0b011,
        BinOp::Gt => 0b100,
        BinOp::Ge => 0b110,
        BinOp::Eq => 0b010,
        _ => 0b101,
    }
}

#[inline(always)]
fn accepts(mask: u8, ord: std::cmp::Ordering) -> bool {
    (mask >> (ord as i8 + 1)) & 1 != 0
}

/// `a op b` on two floats where the result is certain to match `builtins::arith`.
#[inline(always)]
fn float_op(op: BinOp, a: &Value, b: &Value) -> Option<Value> {
    let (Value::Float(a), Value::Float(b)) = (a, b) else { return None };
    Some(match op {
        BinOp::Add => Value::Float(a + b),
        BinOp::Sub => Value::Float(a - b),
        BinOp::Mul => Value::Float(a * b),
        BinOp::Eq => Value::Bool(a == b),
        BinOp::Ne => Value::Bool(a != b),
        // NaN has no order: the general path raises the error.
        _ => Value::Bool(accepts(cmp_mask(op), a.partial_cmp(b)?)),
    })
}

/// `a op b` for anything but two ints.
#[inline(never)]
fn slow(it: &mut Interp, op: BinOp, a: Value, b: Value, s: Spans) -> R<Value> {
    if let Some(v) = float_op(op, &a, &b) {
        return Ok(v);
    }
    it.binary_values(op, a, b, s.op, s.l, s.r)
}

/// The rest of `l op r` when `l` did not produce an int.
#[inline(never)]
fn slow_rest<Rr: Opnd>(it: &mut Interp, cx: &FnDef, op: BinOp, a: R<Value>, r: &Rr, s: Spans) -> R<Value> {
    let a = a?;
    let b = r.eval(it, cx)?;
    slow(it, op, a, b, s)
}

struct ArithNode {
    op: BinOp,
    spans: Spans,
}

impl Build2 for ArithNode {
    type Out = Ev;
    fn build<L: Opnd, Rr: Opnd>(self, l: L, r: Rr) -> Ev {
        let s = self.spans;
        match self.op {
            BinOp::Add => arith::<L, Rr, ADD>(l, r, s),
            BinOp::Sub => arith::<L, Rr, SUB>(l, r, s),
            BinOp::Mul => arith::<L, Rr, MUL>(l, r, s),
            op => {
                let c = Cmp { l, r, s, op, mask: cmp_mask(op) };
                Box::new(move |it, cx| c.value(it, cx))
            }
        }
    }
}

fn arith<L: Opnd, Rr: Opnd, const OP: u8>(l: L, r: Rr, s: Spans) -> Ev {
    Box::new(move |it, cx| {
        if L::PURE && Rr::PURE {
            if let (Some(a), Some(b)) = (l.int(it), r.int(it)) {
                return int_op::<OP>(a, b, s.op);
            }
            let (a, b) = (l.get(it).clone(), r.get(it).clone());
            return slow(it, bin_op(OP), a, b, s);
        }
        // Computed results are taken apart, not moved whole: that would stall.
        let x = match take_int(l.eval(it, cx)) {
            Ok(x) => x,
            Err(a) => return slow_rest(it, cx, bin_op(OP), a, &r, s),
        };
        match take_int(r.eval(it, cx)) {
            Ok(y) => int_op::<OP>(x, y, s.op),
            Err(b) => slow(it, bin_op(OP), Value::Int(x), b?, s),
        }
    })
}

/// Builds the node `W` around a comparison of two operands of known types.
struct CmpNode<W> {
    op: BinOp,
    spans: Spans,
    node: W,
}

impl<W: WithCond> Build2 for CmpNode<W> {
    type Out = W::Out;
    fn build<L: Opnd, Rr: Opnd>(self, l: L, r: Rr) -> W::Out {
        self.node.build(Cmp { l, r, s: self.spans, op: self.op, mask: cmp_mask(self.op) })
    }
}

/// `l op r` for a comparison: ints compare without building a `Value::Bool`.
struct Cmp<L, Rr> {
    l: L,
    r: Rr,
    s: Spans,
    op: BinOp,
    mask: u8,
}

impl<L: Opnd, Rr: Opnd> Cmp<L, Rr> {
    /// The ints compared, or the general result.
    #[inline(always)]
    fn run(&self, it: &mut Interp, cx: &FnDef) -> Result<bool, R<Value>> {
        if L::PURE && Rr::PURE {
            if let (Some(a), Some(b)) = (self.l.int(it), self.r.int(it)) {
                return Ok(accepts(self.mask, a.cmp(&b)));
            }
            let (a, b) = (self.l.get(it).clone(), self.r.get(it).clone());
            return Err(slow(it, self.op, a, b, self.s));
        }
        let x = match take_int(self.l.eval(it, cx)) {
            Ok(x) => x,
            Err(a) => return Err(slow_rest(it, cx, self.op, a, &self.r, self.s)),
        };
        match take_int(self.r.eval(it, cx)) {
            Ok(y) => Ok(accepts(self.mask, x.cmp(&y))),
            Err(b) => Err(b.and_then(|b| slow(it, self.op, Value::Int(x), b, self.s))),
        }
    }

    #[inline(always)]
    fn value(&self, it: &mut Interp, cx: &FnDef) -> R<Value> {
        match self.run(it, cx) {
            Ok(b) => Ok(Value::Bool(b)),
            Err(v) => v,
        }
    }
}

impl<L: Opnd, Rr: Opnd> Test for Cmp<L, Rr> {
    #[inline(always)]
    fn test(&self, it: &mut Interp, cx: &FnDef) -> R<bool> {
        match self.run(it, cx) {
            Ok(b) => Ok(b),
            Err(v) => Ok(v?.truthy()),
        }
    }
}

fn binary(op: BinOp, lhs: &Expr, rhs: &Expr, span: Span) -> Ev {
    let spans = Spans { op: span, l: lhs.span(), r: rhs.span() };
    match op {
        BinOp::And => {
            let (l, r) = (expr(lhs), expr(rhs));
            Box::new(move |it, cx| {
                let v = l(it, cx)?;
                if v.truthy() {
                    r(it, cx)
                } else {
                    Ok(v)
                }
            })
        }
        BinOp::Or => {
            let (l, r) = (expr(lhs), expr(rhs));
            Box::new(move |it, cx| {
                let v = l(it, cx)?;
                if v.truthy() {
                    Ok(v)
                } else {
                    r(it, cx)
                }
            })
        }
        BinOp::Add
        | BinOp::Sub
        | BinOp::Mul
        | BinOp::Lt
        | BinOp::Le
        | BinOp::Gt
        | BinOp::Ge
        | BinOp::Eq
        | BinOp::Ne => with_pair(operand(lhs), operand(rhs), ArithNode { op, spans }),
        BinOp::Pipe => {
            // The operands of `|` are commands: `run(a) | run(b)` must not run `a` on its own.
            let leaves: Vec<_> = runtime::command::pipe_leaves(lhs, rhs).into_iter().map(|l| l.map(expr)).collect();
            Box::new(move |it, cx| runtime::command::eval_pipe(it, &leaves, span, |it, e| e(it, cx)))
        }
        _ => {
            let (l, r) = (expr(lhs), expr(rhs));
            Box::new(move |it, cx| {
                let a = l(it, cx)?;
                let b = r(it, cx)?;
                it.binary_values(op, a, b, spans.op, spans.l, spans.r)
            })
        }
    }
}

struct IndexNode {
    span: Span,
    index_span: Span,
}

impl Build2 for IndexNode {
    type Out = Ev;
    fn build<L: Opnd, Rr: Opnd>(self, t: L, i: Rr) -> Ev {
        let IndexNode { span, index_span } = self;
        Box::new(move |it, cx| {
            if L::PURE && Rr::PURE {
                return builtins::index(t.get(it), i.get(it), span, index_span);
            }
            let tv = t.eval(it, cx)?;
            let iv = i.eval(it, cx)?;
            builtins::index(&tv, &iv, span, index_span)
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Calls

/// Something that pushes call arguments onto the stack.
trait Push: Send + Sync + 'static {
    fn push(&self, it: &mut Interp, cx: &FnDef) -> R<()>;
}

/// Pushes a computed value.
struct PushDyn(Ev);
/// Pushes a copy of a local.
struct PushLocal(usize);
/// Pushes an int literal.
struct PushInt(i64);
/// Pushes `l op r` computed from in-place operands.
struct PushArith<L, Rr, const OP: u8> {
    l: L,
    r: Rr,
    s: Spans,
}
/// Pushes each of several arguments in turn.
struct PushAll(Box<[Box<dyn Push>]>);

impl Push for PushDyn {
    #[inline(always)]
    fn push(&self, it: &mut Interp, cx: &FnDef) -> R<()> {
        let v = (self.0)(it, cx)?;
        it.stack.push(v);
        Ok(())
    }
}

impl Push for PushLocal {
    #[inline(always)]
    fn push(&self, it: &mut Interp, _: &FnDef) -> R<()> {
        match &it.stack[it.base + self.0] {
            Value::Int(n) => {
                let n = *n;
                push_int(&mut it.stack, n)
            }
            other => {
                let v = other.clone();
                it.stack.push(v)
            }
        }
        Ok(())
    }
}

impl Push for PushInt {
    #[inline(always)]
    fn push(&self, it: &mut Interp, _: &FnDef) -> R<()> {
        push_int(&mut it.stack, self.0);
        Ok(())
    }
}

impl<L: Opnd, Rr: Opnd, const OP: u8> Push for PushArith<L, Rr, OP> {
    #[inline(always)]
    fn push(&self, it: &mut Interp, _: &FnDef) -> R<()> {
        if let (Some(a), Some(b)) = (self.l.int(it), self.r.int(it)) {
            return match checked::<OP>(a, b) {
                Some(n) => {
                    push_int(&mut it.stack, n);
                    Ok(())
                }
                None => Err(overflow_error(bin_op(OP), a, b, self.s.op)),
            };
        }
        let (a, b) = (self.l.get(it).clone(), self.r.get(it).clone());
        let v = slow(it, bin_op(OP), a, b, self.s)?;
        it.stack.push(v);
        Ok(())
    }
}

impl Push for PushAll {
    #[inline(always)]
    fn push(&self, it: &mut Interp, cx: &FnDef) -> R<()> {
        for p in self.0.iter() {
            p.push(it, cx)?;
        }
        Ok(())
    }
}

impl Push for Box<dyn Push> {
    #[inline(always)]
    fn push(&self, it: &mut Interp, cx: &FnDef) -> R<()> {
        (**self).push(it, cx)
    }
}

/// Builds a node around an argument pusher of known type.
trait BuildPush {
    type Out;
    fn build<P: Push>(self, p: P) -> Self::Out;
}

/// Build `b` around a pusher for argument `e`, specialised for its shape.
fn with_pusher<B: BuildPush>(e: &Expr, b: B) -> B::Out {
    match e {
        Expr::Binary { op: op @ (BinOp::Add | BinOp::Sub | BinOp::Mul), lhs, rhs, span } => {
            let (l, r) = (operand(lhs), operand(rhs));
            if !matches!(l, Op::Dyn(_)) && !matches!(r, Op::Dyn(_)) {
                let s = Spans { op: *span, l: lhs.span(), r: rhs.span() };
                return with_pair(l, r, ArithPusher { op: *op, s, b });
            }
            b.build(PushDyn(binary(*op, lhs, rhs, *span)))
        }
        Expr::Var(Var { slot: Slot::Local(i), .. }) => b.build(PushLocal(*i as usize)),
        Expr::Int(k, _) => b.build(PushInt(*k)),
        _ => b.build(PushDyn(expr(e))),
    }
}

struct ArithPusher<B> {
    op: BinOp,
    s: Spans,
    b: B,
}

impl<B: BuildPush> Build2 for ArithPusher<B> {
    type Out = B::Out;
    fn build<L: Opnd, Rr: Opnd>(self, l: L, r: Rr) -> B::Out {
        let s = self.s;
        match self.op {
            BinOp::Add => self.b.build(PushArith::<L, Rr, ADD> { l, r, s }),
            BinOp::Sub => self.b.build(PushArith::<L, Rr, SUB> { l, r, s }),
            _ => self.b.build(PushArith::<L, Rr, MUL> { l, r, s }),
        }
    }
}

/// A pusher for argument `e`, boxed.
fn boxed_pusher(e: &Expr) -> Box<dyn Push> {
    struct Boxer;
    impl BuildPush for Boxer {
        type Out = Box<dyn Push>;
        fn build<P: Push>(self, p: P) -> Box<dyn Push> {
            Box::new(p)
        }
    }
    with_pusher(e, Boxer)
}

/// Evaluate arguments onto the stack; the new frame starts at the returned base.
#[inline(always)]
fn push_args<P: Push>(it: &mut Interp, cx: &FnDef, args: &P) -> R<usize> {
    let base = it.stack.len();
    if let Err(e) = args.push(it, cx) {
        it.stack.truncate(base);
        return Err(e);
    }
    Ok(base)
}

fn eval_args(it: &mut Interp, cx: &FnDef, args: &[Ev], spans: &[Span], call: Span) -> R<Args> {
    let mut out = Args::new(call, args.len());
    for (a, s) in args.iter().zip(spans) {
        let v = a(it, cx)?;
        out.push(v, *s);
    }
    Ok(out)
}

struct CallSite<P> {
    args: P,
    argc: usize,
    spans: Box<[Span]>,
    span: Span,
    callee_span: Span,
}

impl<P: Push> CallSite<P> {
    /// Call an evaluated callee, as `Interp::call_expr` does.
    #[inline]
    fn call(&self, it: &mut Interp, cx: &FnDef, f: Value) -> R<Value> {
        let base = push_args(it, cx, &self.args)?;
        call_pushed(it, f, base, self.argc, &self.spans, self.span, self.callee_span)
    }
}

/// Call `f` with the arguments on the stack from `base`.
fn call_pushed(
    it: &mut Interp,
    f: Value,
    base: usize,
    argc: usize,
    spans: &[Span],
    span: Span,
    callee_span: Span,
) -> R<Value> {
    match f {
        Value::Func(c) => it.call_closure_at(c, base, span),
        f => {
            let mut a = Args::new(span, argc);
            for (v, s) in it.stack.drain(base..).zip(spans.iter()) {
                a.push(v, *s);
            }
            match f {
                Value::Builtin(b) => builtins::call(it, b, a),
                other => it.call_other(&other, a, span, callee_span),
            }
        }
    }
}

fn call(callee: &Expr, args: &[Expr], span: Span) -> Ev {
    let spans: Box<[Span]> = args.iter().map(Expr::span).collect();
    let slot = match callee {
        Expr::Var(v) => v.slot,
        _ => Slot::Unresolved,
    };
    if let Slot::Builtin(b) = slot {
        let args: Box<[Ev]> = args.iter().map(expr).collect();
        return Box::new(move |it, cx| {
            let a = eval_args(it, cx, &args, &spans, span)?;
            builtins::call(it, b, a)
        });
    }
    let callee_span = callee.span();
    match slot {
        Slot::Global(_) | Slot::SelfFn => {
            let node = CallNode { slot, argc: args.len(), spans, span, callee_span };
            match args {
                // A call with one argument gets a pusher of its own type.
                [one] => with_pusher(one, node),
                _ => node.build(PushAll(args.iter().map(boxed_pusher).collect())),
            }
        }
        _ => {
            let site = CallSite {
                args: PushAll(args.iter().map(boxed_pusher).collect()),
                argc: args.len(),
                spans,
                span,
                callee_span,
            };
            let callee = expr(callee);
            Box::new(move |it, cx| {
                let f = callee(it, cx)?;
                site.call(it, cx, f)
            })
        }
    }
}

/// A call of a global function, or of the running function by its own name.
struct CallNode {
    slot: Slot,
    argc: usize,
    spans: Box<[Span]>,
    span: Span,
    callee_span: Span,
}

impl BuildPush for CallNode {
    type Out = Ev;
    fn build<P: Push>(self, args: P) -> Ev {
        let site =
            CallSite { args, argc: self.argc, spans: self.spans, span: self.span, callee_span: self.callee_span };
        if let Slot::Global(g) = self.slot {
            let g = g as usize;
            return Box::new(move |it, cx| {
                // A function calling itself runs on the definition already at hand.
                let recursive = match it.globals.get(g) {
                    Some(Value::Func(c)) => {
                        std::ptr::eq(Arc::as_ptr(&c.def), cx) && c.captures.is_empty() && !cx.uses_self
                    }
                    _ => false,
                };
                if recursive {
                    let base = push_args(it, cx, &site.args)?;
                    return it.call_def(cx, base, site.span);
                }
                let f = it.globals.get(g).cloned().unwrap_or_default();
                site.call(it, cx, f)
            });
        }
        Box::new(move |it, cx| {
            // The running closure is the callee, and stays current for the call.
            if matches!(&it.closure, Some(c) if std::ptr::eq(Arc::as_ptr(&c.def), cx)) {
                let base = push_args(it, cx, &site.args)?;
                return it.call_def(cx, base, site.span);
            }
            let f = it.closure.as_ref().map(|c| Value::Func(c.clone())).unwrap_or_default();
            site.call(it, cx, f)
        })
    }
}

fn method(recv: &Expr, name: &Name, name_span: Span, args: &[Expr], span: Span) -> Ev {
    let argv: Box<[Ev]> = args.iter().map(expr).collect();
    let spans: Box<[Span]> = args.iter().map(Expr::span).collect();
    let name = name.clone();
    if builtins::is_mutating_method(&name) {
        if let Some((var, path)) = place_of(recv) {
            let var = var.clone();
            return Box::new(move |it, cx| {
                let a = eval_args(it, cx, &argv, &spans, span)?;
                it.with_place(&var, &path, span, |interp, target| {
                    builtins::call_mut_method(interp, target, &name, name_span, a)
                })
            });
        }
    }
    let recv = expr(recv);
    let on_channel = channel_shortcut(&name, argv.len());
    Box::new(move |it, cx| {
        let r = recv(it, cx)?;
        if let Some(shortcut) = on_channel {
            if let Some(ch) = r.downcast::<Channel>() {
                return match shortcut {
                    ChannelCall::Send => {
                        let v = argv[0](it, cx)?;
                        ch.send(it, v, None, span).map(|_| Value::Nil)
                    }
                    ChannelCall::Recv => ch.recv_value(it, None, span),
                };
            }
        }
        let a = eval_args(it, cx, &argv, &spans, span)?;
        it.method_call(r, &name, name_span, a, span)
    })
}

/// `ch.send(v)` and `ch.recv()` in a loop are what channel-heavy code runs most: on a
/// channel of this process they skip the generic method path (an argument vector, dispatch
/// by type and then by name), doing what `channel::method` would.
#[derive(Clone, Copy)]
enum ChannelCall {
    Send,
    Recv,
}

fn channel_shortcut(name: &str, argc: usize) -> Option<ChannelCall> {
    match (name, argc) {
        ("send", 1) => Some(ChannelCall::Send),
        ("recv", 0) => Some(ChannelCall::Recv),
        _ => None,
    }
}
