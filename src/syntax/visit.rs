//! A read-only walk over a resolved function body, for the analyses that need to know which
//! names a function uses (what a process running it must be sent, say).

use super::ast::*;
use super::Span;
use std::sync::Arc;

/// What a walk reports. Both hooks default to doing nothing.
pub trait Visitor {
    fn var(&mut self, _var: &Var) {}
    /// A nested function, closure or task body; return whether to walk into it.
    fn function(&mut self, _def: &Arc<FnDef>) -> bool {
        true
    }
}

/// Walk a block's statements in source order.
pub fn walk(block: &Block, v: &mut impl Visitor) {
    Walker(v).block(block);
}

/// Walk top-level statements (a program or a module).
pub fn walk_stmts(stmts: &[Stmt], v: &mut impl Visitor) {
    let mut w = Walker(v);
    stmts.iter().for_each(|s| w.stmt(s));
}

struct Vars<F>(F, bool);

impl<F: FnMut(&Var)> Visitor for Vars<F> {
    fn var(&mut self, var: &Var) {
        (self.0)(var)
    }
    fn function(&mut self, _def: &Arc<FnDef>) -> bool {
        self.1
    }
}

/// The globals `def`'s body names, each once with its first use, computed once per definition.
pub fn global_refs(def: &FnDef) -> &[(u32, Span)] {
    def.global_refs.get_or_init(|| {
        let mut seen: Vec<(u32, Span)> = Vec::new();
        walk(
            &def.body,
            &mut Vars(
                |v: &Var| {
                    if let Slot::Global(g) = v.slot {
                        if !seen.iter().any(|(s, _)| *s == g) {
                            seen.push((g, v.span));
                        }
                    }
                },
                true,
            ),
        );
        seen.into_boxed_slice()
    })
}

/// Where the body first uses its capture number `index`.
pub fn capture_use(def: &FnDef, index: u32) -> Option<Span> {
    let mut found = None;
    // Only this body's own names: a nested closure numbers its captures afresh.
    walk(
        &def.body,
        &mut Vars(
            |v: &Var| {
                if found.is_none() && v.slot == Slot::Capture(index) {
                    found = Some(v.span);
                }
            },
            false,
        ),
    );
    found
}

struct Walker<'a, V>(&'a mut V);

impl<V: Visitor> Walker<'_, V> {
    fn block(&mut self, b: &Block) {
        for s in &b.stmts {
            self.stmt(s);
        }
    }

    fn function(&mut self, def: &Arc<FnDef>) {
        self.captures(def);
        if self.0.function(def) {
            self.block(&def.body);
        }
    }

    /// A nested function's captures are read where it is made.
    fn captures(&mut self, def: &FnDef) {
        for slot in &def.captures {
            self.0.var(&Var { name: "".into(), span: def.span, slot: *slot });
        }
    }

    fn stmt(&mut self, stmt: &Stmt) {
        match stmt {
            Stmt::Let { var, value } => {
                self.expr(value);
                self.0.var(var);
            }
            Stmt::Fn(def, var) => {
                self.0.var(var);
                self.function(def);
            }
            Stmt::Return { value, .. } => {
                if let Some(v) = value {
                    self.expr(v);
                }
            }
            Stmt::Break(_) | Stmt::Continue(_) => {}
            Stmt::Import { alias, .. } => self.0.var(alias),
            Stmt::While { cond, body, .. } => {
                self.expr(cond);
                self.block(body);
            }
            Stmt::For { key, value, iter, body, .. } => {
                self.expr(iter);
                self.0.var(key);
                if let Some(v) = value {
                    self.0.var(v);
                }
                self.block(body);
            }
            Stmt::Assign { place, value, .. } => {
                self.0.var(&place.var);
                for step in &place.path {
                    if let PathStep::Index(e) = step {
                        self.expr(e);
                    }
                }
                self.expr(value);
            }
            Stmt::Expr(e) => self.expr(e),
        }
    }

    fn exprs(&mut self, es: &[Expr]) {
        for e in es {
            self.expr(e);
        }
    }

    fn expr(&mut self, e: &Expr) {
        match e {
            Expr::Nil(_) | Expr::Bool(..) | Expr::Int(..) | Expr::Float(..) | Expr::Str(..) => {}
            Expr::Interp(parts, _) => {
                for p in parts {
                    if let StrPart::Expr(e, _) = p {
                        self.expr(e);
                    }
                }
            }
            Expr::List(items, _) => self.exprs(items),
            Expr::Map(entries, _) => entries.iter().for_each(|(_, v)| self.expr(v)),
            Expr::Var(v) => self.0.var(v),
            Expr::Unary { expr, .. } => self.expr(expr),
            Expr::Binary { lhs, rhs, .. } => {
                self.expr(lhs);
                self.expr(rhs);
            }
            Expr::Call { callee, args, .. } => {
                self.expr(callee);
                self.exprs(args);
            }
            Expr::Method { recv, args, .. } => {
                self.expr(recv);
                self.exprs(args);
            }
            Expr::Index { target, index, .. } => {
                self.expr(target);
                self.expr(index);
            }
            Expr::Field { target, .. } => self.expr(target),
            Expr::Block(b) => self.block(b),
            Expr::If { cond, then, otherwise, .. } => {
                self.expr(cond);
                self.block(then);
                if let Some(o) = otherwise {
                    self.expr(o);
                }
            }
            Expr::Try { body, var, handler, .. } => {
                self.block(body);
                self.0.var(var);
                self.block(handler);
            }
            Expr::Fn(def) | Expr::Spawn { body: def, .. } | Expr::Fork { body: def, .. } => {
                self.function(def);
            }
            Expr::Wait { target, .. } => self.expr(target),
            Expr::Lock { target, body, .. } => {
                self.expr(target);
                self.block(body);
            }
            Expr::Scope { body, .. } => self.block(body),
            Expr::PoolMap { func, items, options, .. } => {
                self.expr(func);
                self.expr(items);
                if let Some(o) = options {
                    self.expr(o);
                }
            }
            Expr::PoolNew { options, .. } => {
                if let Some(o) = options {
                    self.expr(o);
                }
            }
            Expr::Select { arms, .. } => {
                for arm in arms {
                    match arm {
                        SelectArm::Recv { chan, var, body, .. } => {
                            self.expr(chan);
                            self.0.var(var);
                            self.block(body);
                        }
                        SelectArm::Timeout { secs, body, .. } => {
                            self.expr(secs);
                            self.block(body);
                        }
                        SelectArm::Default { body, .. } => self.block(body),
                    }
                }
            }
        }
    }
}
