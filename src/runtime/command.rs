//! Subprocesses and `|` pipelines.

use crate::interp::{Interp, R};
use crate::syntax::ast::BinOp;
use crate::syntax::Span;
use crate::value::Value;

pub fn pipe(_interp: &mut Interp, l: Value, r: Value, span: Span, ls: Span, rs: Span) -> R<Value> {
    crate::builtins::arith(BinOp::Pipe, &l, &r, span, ls, rs)
}
