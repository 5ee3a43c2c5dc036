//! Subprocesses and `|` pipelines.

use crate::builtins::Args;
use crate::interp::{Interp, R};
use crate::syntax::ast::BinOp;
use crate::syntax::Span;
use crate::value::Value;

type Builtin = fn(&mut Interp, Args) -> R<Value>;

/// Global functions for running commands.
pub static BUILTINS: &[(&str, Builtin)] = &[];

/// `a | b`: connect two commands into a pipeline.
pub fn pipe(_interp: &mut Interp, l: Value, r: Value, span: Span, ls: Span, rs: Span) -> R<Value> {
    crate::builtins::arith(BinOp::Pipe, &l, &r, span, ls, rs)
}

pub fn field(_v: &Value, _name: &str) -> Option<Value> {
    None
}

pub fn method(_interp: &mut Interp, _v: &Value, _name: &str, _span: Span, _a: &Args) -> Option<R<Value>> {
    None
}

pub fn iterate_next(_interp: &mut Interp, _v: &Value, _span: Span) -> Option<R<Option<Value>>> {
    None
}
