//! `lock` and the other synchronisation primitives.

use crate::builtins::Args;
use crate::error::ErrorKind;
use crate::interp::{fail, Interp, R};
use crate::syntax::ast::Block;
use crate::syntax::Span;
use crate::value::Value;

pub fn method(_interp: &mut Interp, _v: &Value, _name: &str, _span: Span, _a: &Args) -> Option<R<Value>> {
    None
}

pub fn with_lock(_interp: &mut Interp, _l: &Value, _body: &Block, span: Span, _target: Span) -> R<Value> {
    fail(ErrorKind::Value, "`lock` is not available yet", span)
}
