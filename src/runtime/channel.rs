//! Channels (`pipe()`) and `select`.

use crate::builtins::Args;
use crate::error::ErrorKind;
use crate::interp::{fail, Interp, R};
use crate::syntax::ast::SelectArm;
use crate::syntax::Span;
use crate::value::Value;

pub fn field(_v: &Value, _name: &str) -> Option<Value> {
    None
}

pub fn method(_interp: &mut Interp, _v: &Value, _name: &str, _span: Span, _a: &Args) -> Option<R<Value>> {
    None
}

pub fn iterate_next(_interp: &mut Interp, _v: &Value, _span: Span) -> Option<R<Option<Value>>> {
    None
}

pub fn select(_interp: &mut Interp, _arms: &[SelectArm], span: Span) -> R<Value> {
    fail(ErrorKind::Value, "`select` is not available yet", span)
}
