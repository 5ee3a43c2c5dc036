//! The resolver: every name becomes a slot before anything runs, so the interpreter never
//! looks a variable up by its string. Also reports static errors such as undefined names.

use crate::builtins;
use crate::error::{ErrorKind, RuntimeError};
use crate::syntax::ast::*;
use crate::syntax::Span;
use std::collections::HashMap;
use std::sync::Arc;

/// The names a module (or the main program) declares at its top level.
#[derive(Debug, Default, Clone)]
pub struct GlobalScope {
    pub names: HashMap<Name, u32>,
    /// In declaration order, so a module can be exported as a map.
    pub order: Vec<(Name, u32)>,
}

impl GlobalScope {
    pub fn declare(&mut self, name: &Name, next_global: &mut u32) -> u32 {
        if let Some(&slot) = self.names.get(name) {
            return slot;
        }
        let slot = *next_global;
        *next_global += 1;
        self.names.insert(name.clone(), slot);
        self.order.push((name.clone(), slot));
        slot
    }
}

/// Loads an imported module and returns its module number; also hands out global slots,
/// which all modules draw from one counter.
pub trait ModuleLoader {
    fn load(&mut self, path: &str, span: Span) -> Result<u32, RuntimeError>;
    fn next_global(&mut self) -> &mut u32;
}

struct FnScope {
    /// Innermost block last; each entry maps a name to its local slot.
    blocks: Vec<Vec<(Name, u32)>>,
    next_slot: u32,
    max_slot: u32,
    /// Captured names and where each comes from in the enclosing function.
    captures: Vec<(Name, Slot)>,
    self_name: Option<Name>,
    uses_self: bool,
    /// The main program's frame: its outermost block declares globals.
    is_top: bool,
    /// The body of a `spawn` or `fork`, which runs with its own copy of every global.
    is_task: bool,
    loop_depth: u32,
}

impl FnScope {
    fn new(self_name: Option<Name>, is_top: bool) -> FnScope {
        FnScope {
            blocks: vec![vec![]],
            next_slot: 0,
            max_slot: 0,
            captures: vec![],
            self_name,
            uses_self: false,
            is_top,
            is_task: false,
            loop_depth: 0,
        }
    }

    fn find_local(&self, name: &str) -> Option<u32> {
        self.blocks.iter().rev().flat_map(|b| b.iter().rev()).find(|(n, _)| &**n == name).map(|(_, s)| *s)
    }
}

pub struct Resolver<'a> {
    globals: &'a mut GlobalScope,
    loader: &'a mut dyn ModuleLoader,
    fns: Vec<FnScope>,
    errors: Vec<RuntimeError>,
}

/// Resolve a top-level program in place. `globals` persists across REPL entries.
pub fn resolve_program(
    stmts: &mut [Stmt],
    globals: &mut GlobalScope,
    loader: &mut dyn ModuleLoader,
) -> Result<u32, Vec<RuntimeError>> {
    let mut r = Resolver { globals, loader, fns: vec![FnScope::new(None, true)], errors: vec![] };
    r.hoist(stmts);
    for stmt in stmts.iter_mut() {
        r.stmt(stmt);
    }
    let frame = r.fns.pop().expect("top scope");
    if r.errors.is_empty() {
        Ok(frame.max_slot)
    } else {
        Err(r.errors)
    }
}

impl Resolver<'_> {
    fn scope(&mut self) -> &mut FnScope {
        self.fns.last_mut().expect("a function scope is always open")
    }

    fn at_global_level(&self) -> bool {
        let f = self.fns.last().expect("scope");
        f.is_top && f.blocks.len() == 1
    }

    /// Top-level functions are visible everywhere in their block, so they may call each other.
    fn hoist(&mut self, stmts: &[Stmt]) {
        if !self.at_global_level() {
            return;
        }
        for stmt in stmts {
            if let Stmt::Fn(_, var) = stmt {
                self.globals.declare(&var.name, self.loader.next_global());
            }
        }
    }

    fn declare(&mut self, var: &mut Var) {
        if self.at_global_level() {
            var.slot = Slot::Global(self.globals.declare(&var.name, self.loader.next_global()));
            return;
        }
        let scope = self.scope();
        let slot = scope.next_slot;
        scope.next_slot += 1;
        scope.max_slot = scope.max_slot.max(scope.next_slot);
        scope.blocks.last_mut().expect("block").push((var.name.clone(), slot));
        var.slot = Slot::Local(slot);
    }

    fn error(&mut self, e: RuntimeError) {
        self.errors.push(e);
    }

    fn push_block(&mut self) {
        self.scope().blocks.push(vec![]);
    }

    fn pop_block(&mut self) {
        self.scope().blocks.pop();
    }

    /// Find `name` as seen from function scope `depth`, adding captures along the way.
    fn lookup_in(&mut self, depth: usize, name: &Name) -> Option<Slot> {
        let scope = &self.fns[depth];
        if let Some(slot) = scope.find_local(name) {
            let is_global_level = scope.is_top && scope.blocks.len() == 1;
            if !is_global_level {
                return Some(Slot::Local(slot));
            }
        }
        if scope.self_name.as_deref() == Some(&**name) {
            self.fns[depth].uses_self = true;
            return Some(Slot::SelfFn);
        }
        if let Some(i) = scope.captures.iter().position(|(n, _)| n == name) {
            return Some(Slot::Capture(i as u32));
        }
        if depth == 0 {
            return None;
        }
        let outer = self.lookup_in(depth - 1, name)?;
        match outer {
            Slot::Global(_) | Slot::Builtin(_) => Some(outer),
            from => {
                let scope = &mut self.fns[depth];
                scope.captures.push((name.clone(), from));
                Some(Slot::Capture((scope.captures.len() - 1) as u32))
            }
        }
    }

    fn lookup(&mut self, name: &Name) -> Option<Slot> {
        let depth = self.fns.len() - 1;
        if let Some(slot) = self.lookup_in(depth, name) {
            return Some(slot);
        }
        if let Some(&g) = self.globals.names.get(name) {
            return Some(Slot::Global(g));
        }
        builtins::lookup(name).map(Slot::Builtin)
    }

    fn use_var(&mut self, var: &mut Var) {
        match self.lookup(&var.name) {
            Some(slot) => var.slot = slot,
            None => {
                let err = RuntimeError::new(ErrorKind::Name, format!("undefined name `{}`", var.name), var.span)
                    .with_label("not defined in this scope");
                let err = match self.suggest(&var.name) {
                    Some(s) => err.with_help(format!("did you mean `{s}`?")),
                    None => err.with_help(format!("declare it first with `let {} = …`", var.name)),
                };
                self.error(err);
            }
        }
    }

    /// The visible name closest to `name`, for "did you mean" hints.
    fn suggest(&self, name: &str) -> Option<String> {
        let mut candidates: Vec<String> = self.globals.names.keys().map(|n| n.to_string()).collect();
        for f in &self.fns {
            candidates.extend(f.blocks.iter().flatten().map(|(n, _)| n.to_string()));
            candidates.extend(f.captures.iter().map(|(n, _)| n.to_string()));
            candidates.extend(f.self_name.as_deref().map(str::to_string));
        }
        candidates.extend(builtins::names().map(str::to_string));
        candidates
            .into_iter()
            .map(|c| (strsim::jaro_winkler(name, &c), c))
            .filter(|(score, _)| *score > 0.8)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, c)| c.to_string())
    }

    fn block(&mut self, block: &mut Block) {
        self.push_block();
        self.hoist(&block.stmts);
        for s in &mut block.stmts {
            self.stmt(s);
        }
        self.pop_block();
    }

    fn function(&mut self, def: &mut Arc<FnDef>, self_name: Option<Name>) {
        let def = Arc::get_mut(def).expect("function definitions are unshared until resolved");
        self.fns.push(FnScope::new(self_name, false));
        for p in &mut def.params {
            self.declare(p);
        }
        self.block(&mut def.body);
        let scope = self.fns.pop().expect("function scope");
        def.frame_size = scope.max_slot;
        def.captures = scope.captures.into_iter().map(|(_, s)| s).collect();
        def.uses_self = scope.uses_self;
    }

    fn task_body(&mut self, def: &mut Arc<FnDef>) {
        let def = Arc::get_mut(def).expect("function definitions are unshared until resolved");
        let mut scope = FnScope::new(None, false);
        scope.is_task = true;
        self.fns.push(scope);
        self.block(&mut def.body);
        let scope = self.fns.pop().expect("task scope");
        def.frame_size = scope.max_slot;
        def.captures = scope.captures.into_iter().map(|(_, s)| s).collect();
        def.uses_self = scope.uses_self;
    }

    fn stmt(&mut self, stmt: &mut Stmt) {
        match stmt {
            Stmt::Let { var, value } => {
                self.expr(value);
                self.declare(var);
            }
            Stmt::Fn(def, var) => {
                if self.at_global_level() {
                    self.declare(var);
                    self.function(def, None);
                } else {
                    self.declare(var);
                    self.function(def, Some(var.name.clone()));
                }
            }
            Stmt::Return { value, span } => {
                if self.fns.len() == 1 {
                    self.error(
                        RuntimeError::new(ErrorKind::Syntax, "`return` outside a function", *span)
                            .with_label("not inside any `fn`")
                            .with_help("use `exit(code)` to end the script early"),
                    );
                }
                if let Some(v) = value {
                    self.expr(v);
                }
            }
            Stmt::Break(span) | Stmt::Continue(span) => {
                let span = *span;
                let what = if matches!(stmt, Stmt::Break(_)) { "break" } else { "continue" };
                if self.scope().loop_depth == 0 {
                    self.error(
                        RuntimeError::new(ErrorKind::Syntax, format!("`{what}` outside a loop"), span)
                            .with_label("not inside `while` or `for`"),
                    );
                }
            }
            Stmt::Import { path, alias, span, module } => {
                match self.loader.load(path, *span) {
                    Ok(id) => *module = id,
                    Err(e) => self.error(e),
                }
                self.declare(alias);
            }
            Stmt::While { cond, body, .. } => {
                self.expr(cond);
                self.loop_body(body);
            }
            Stmt::For { key, value, iter, body, .. } => {
                self.expr(iter);
                self.push_block();
                self.force_local(key);
                if let Some(v) = value {
                    self.force_local(v);
                }
                self.loop_body(body);
                self.pop_block();
            }
            Stmt::Assign { place, value, .. } => {
                self.expr(value);
                for step in &mut place.path {
                    if let PathStep::Index(e) = step {
                        self.expr(e);
                    }
                }
                self.assign_target(&mut place.var);
            }
            Stmt::Expr(e) => self.expr(e),
        }
    }

    /// Loop variables are locals even at the top level, so each iteration's closures copy their own value.
    fn force_local(&mut self, var: &mut Var) {
        let scope = self.scope();
        let slot = scope.next_slot;
        scope.next_slot += 1;
        scope.max_slot = scope.max_slot.max(scope.next_slot);
        scope.blocks.last_mut().expect("block").push((var.name.clone(), slot));
        var.slot = Slot::Local(slot);
    }

    fn loop_body(&mut self, body: &mut Block) {
        self.scope().loop_depth += 1;
        self.block(body);
        self.scope().loop_depth -= 1;
    }

    fn assign_target(&mut self, var: &mut Var) {
        self.use_var(var);
        let problem = match var.slot {
            Slot::Capture(_) => Some((
                format!("cannot assign to `{}`: it was captured by value", var.name),
                "closures and tasks get a copy of this variable",
                "return the new value instead, or share it explicitly with `cell(value)`",
            )),
            Slot::Global(_) if self.fns.last().is_some_and(|f| f.is_task) => Some((
                format!("cannot assign to `{}` inside a task: the task has its own copy of it", var.name),
                "this change would be invisible outside the task",
                "return the value from the task and `wait` for it, or share state explicitly with `cell(value)`",
            )),
            Slot::Builtin(_) | Slot::SelfFn => Some((
                format!("cannot assign to `{}`", var.name),
                "this is a function, not a variable",
                "declare a new variable with `let`",
            )),
            _ => None,
        };
        if let Some((msg, label, help)) = problem {
            self.error(RuntimeError::new(ErrorKind::Name, msg, var.span).with_label(label).with_help(help));
        }
    }

    fn exprs(&mut self, es: &mut [Expr]) {
        for e in es {
            self.expr(e);
        }
    }

    fn expr(&mut self, expr: &mut Expr) {
        match expr {
            Expr::Nil(_) | Expr::Bool(..) | Expr::Int(..) | Expr::Float(..) | Expr::Str(..) => {}
            Expr::Interp(parts, _) => {
                for p in parts {
                    if let StrPart::Expr(e, _) = p {
                        self.expr(e);
                    }
                }
            }
            Expr::List(items, _) => self.exprs(items),
            Expr::Map(entries, _) => {
                for (_, v) in entries {
                    self.expr(v);
                }
            }
            Expr::Var(var) => self.use_var(var),
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
                self.push_block();
                self.force_local(var);
                self.block(handler);
                self.pop_block();
            }
            Expr::Fn(def) => self.function(def, None),
            Expr::Spawn { body, .. } | Expr::Fork { body, .. } => {
                // A task body is its own function: `break` and `return` cannot leave it.
                self.task_body(body);
            }
            Expr::Wait { target, .. } => self.expr(target),
            Expr::Lock { target, body, .. } => {
                self.expr(target);
                self.block(body);
            }
            Expr::Scope { body, .. } => self.block(body),
            Expr::PoolNew { options, .. } => {
                if let Some(o) = options {
                    self.expr(o);
                }
            }
            Expr::PoolMap { func, items, options, .. } => {
                self.expr(func);
                self.expr(items);
                if let Some(o) = options {
                    self.expr(o);
                }
            }
            Expr::Select { arms, .. } => {
                for arm in arms {
                    match arm {
                        SelectArm::Recv { chan, var, body, .. } => {
                            self.expr(chan);
                            self.push_block();
                            self.force_local(var);
                            self.block(body);
                            self.pop_block();
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
