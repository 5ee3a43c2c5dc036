//! The abstract syntax tree. Every node carries a span; the resolver fills in each
//! name's [`Slot`] before anything runs.

use super::span::Span;
use std::sync::Arc;

pub type Name = Arc<str>;

/// Where a name lives at run time, decided by the resolver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    Unresolved,
    /// A slot in the current call frame.
    Local(u32),
    /// A value the current closure captured when it was created.
    Capture(u32),
    /// A program-wide global (top-level `let` or `fn`, or a module's).
    Global(u32),
    /// A native builtin, by index into the builtin table.
    Builtin(u32),
    /// The function currently running, for named local functions that recurse.
    SelfFn,
}

#[derive(Clone, Debug)]
pub struct Var {
    pub name: Name,
    pub span: Span,
    pub slot: Slot,
}

#[derive(Clone, Debug)]
pub struct Block {
    pub stmts: Vec<Stmt>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum Stmt {
    Let { var: Var, value: Expr },
    Fn(Arc<FnDef>, Var),
    Return { value: Option<Expr>, span: Span },
    Break(Span),
    Continue(Span),
    Import { path: String, alias: Var, span: Span, module: u32 },
    While { cond: Expr, body: Block, span: Span },
    For { key: Var, value: Option<Var>, iter: Expr, body: Block, span: Span },
    Assign { place: Place, op: AssignOp, value: Expr, span: Span },
    Expr(Expr),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssignOp {
    Set,
    Add,
    Sub,
    Mul,
    Div,
}

/// The target of an assignment: a variable with a path of indexes and fields into it.
#[derive(Clone, Debug)]
pub struct Place {
    pub var: Var,
    pub path: Vec<PathStep>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum PathStep {
    Index(Expr),
    Field(Name, Span),
}

/// A function's code. Shared by every closure made from it.
#[derive(Debug)]
pub struct FnDef {
    pub name: Name,
    pub params: Vec<Var>,
    pub body: Block,
    pub span: Span,
    /// Filled by the resolver: how many local slots a call frame needs.
    pub frame_size: u32,
    /// Filled by the resolver: where each captured value comes from in the enclosing frame.
    pub captures: Vec<Slot>,
    /// Filled by the resolver: whether the body refers to itself by name.
    pub uses_self: bool,
    /// The body compiled for the interpreter, built on the first call.
    pub code: std::sync::OnceLock<crate::compile::Code>,
    /// Every global the body (nested closures and tasks included) names, with the first
    /// place it does: what a process running this function must be sent. Built on demand.
    pub global_refs: std::sync::OnceLock<Box<[(u32, Span)]>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Pipe,
    Add,
    Sub,
    Mul,
    Div,
    FloorDiv,
    Rem,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Or => "or",
            BinOp::And => "and",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Pipe => "|",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::FloorDiv => "//",
            BinOp::Rem => "%",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnOp {
    Neg,
    Not,
}

#[derive(Clone, Debug)]
pub enum StrPart {
    Lit(String),
    /// An interpolated expression with an optional format spec (the text after `:`).
    Expr(Expr, Option<Arc<str>>),
}

#[derive(Clone, Debug)]
pub enum Expr {
    Nil(Span),
    Bool(bool, Span),
    Int(i64, Span),
    Float(f64, Span),
    Str(Arc<str>, Span),
    Interp(Vec<StrPart>, Span),
    List(Vec<Expr>, Span),
    Map(Vec<(Name, Expr)>, Span),
    Var(Var),
    Unary { op: UnOp, expr: Box<Expr>, span: Span },
    Binary { op: BinOp, lhs: Box<Expr>, rhs: Box<Expr>, span: Span },
    Call { callee: Box<Expr>, args: Vec<Expr>, span: Span },
    Method { recv: Box<Expr>, name: Name, name_span: Span, args: Vec<Expr>, span: Span },
    Index { target: Box<Expr>, index: Box<Expr>, span: Span },
    Field { target: Box<Expr>, name: Name, span: Span },
    Block(Box<Block>),
    If { cond: Box<Expr>, then: Box<Block>, otherwise: Option<Box<Expr>>, span: Span },
    Try { body: Box<Block>, var: Var, handler: Box<Block>, span: Span },
    Fn(Arc<FnDef>),
    Spawn { body: Arc<FnDef>, span: Span },
    Fork { body: Arc<FnDef>, span: Span },
    Wait { any: bool, target: Box<Expr>, span: Span },
    Lock { target: Box<Expr>, body: Box<Block>, span: Span },
    Scope { body: Box<Block>, span: Span },
    PoolMap { func: Box<Expr>, items: Box<Expr>, options: Option<Box<Expr>>, span: Span },
    PoolNew { options: Option<Box<Expr>>, span: Span },
    Select { arms: Vec<SelectArm>, span: Span },
}

#[derive(Clone, Debug)]
pub enum SelectArm {
    Recv { chan: Expr, var: Var, body: Block, span: Span },
    Timeout { secs: Expr, body: Block, span: Span },
    Default { body: Block, span: Span },
}

impl Expr {
    pub fn span(&self) -> Span {
        match self {
            Expr::Nil(s) | Expr::Bool(_, s) | Expr::Int(_, s) | Expr::Float(_, s) | Expr::Str(_, s) => *s,
            Expr::Interp(_, s) | Expr::List(_, s) | Expr::Map(_, s) => *s,
            Expr::Var(v) => v.span,
            Expr::Block(b) => b.span,
            Expr::Fn(f) => f.span,
            Expr::Unary { span, .. }
            | Expr::Binary { span, .. }
            | Expr::Call { span, .. }
            | Expr::Method { span, .. }
            | Expr::Index { span, .. }
            | Expr::Field { span, .. }
            | Expr::If { span, .. }
            | Expr::Try { span, .. }
            | Expr::Spawn { span, .. }
            | Expr::Fork { span, .. }
            | Expr::Wait { span, .. }
            | Expr::Lock { span, .. }
            | Expr::Scope { span, .. }
            | Expr::PoolMap { span, .. }
            | Expr::PoolNew { span, .. }
            | Expr::Select { span, .. } => *span,
        }
    }
}

impl Stmt {
    pub fn span(&self) -> Span {
        match self {
            Stmt::Let { var, value } => var.span.to(value.span()),
            Stmt::Fn(def, _) => def.span,
            Stmt::Return { span, .. }
            | Stmt::Import { span, .. }
            | Stmt::While { span, .. }
            | Stmt::For { span, .. }
            | Stmt::Assign { span, .. } => *span,
            Stmt::Break(s) | Stmt::Continue(s) => *s,
            Stmt::Expr(e) => e.span(),
        }
    }
}
