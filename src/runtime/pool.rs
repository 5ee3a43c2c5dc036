//! `pool map F over XS`.

use crate::error::ErrorKind;
use crate::interp::{fail, Interp, R};
use crate::syntax::Span;
use crate::value::Value;

pub fn pool_map(_interp: &mut Interp, _f: Value, _xs: Value, _opts: Value, span: Span, _fspan: Span) -> R<Value> {
    fail(ErrorKind::Value, "`pool map` is not available yet", span)
}
