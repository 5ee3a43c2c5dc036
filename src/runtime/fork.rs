//! `fork`: run a closure in another OS process.

use crate::error::ErrorKind;
use crate::interp::{fail, Interp, R};
use crate::syntax::ast::FnDef;
use crate::syntax::Span;
use crate::value::Value;
use std::sync::Arc;

pub fn fork(_interp: &mut Interp, _body: &Arc<FnDef>, span: Span) -> R<Value> {
    fail(ErrorKind::Value, "`fork` is not available yet", span)
}

/// A signal by name (`"TERM"`, `"SIGKILL"`, …).
pub fn signal_number(name: &str) -> Option<i32> {
    let n = name.trim_start_matches("SIG");
    Some(match n {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "KILL" => 9,
        "USR1" => 10,
        "USR2" => 12,
        "TERM" => 15,
        "CONT" => 18,
        "STOP" => 19,
        _ => return None,
    })
}
