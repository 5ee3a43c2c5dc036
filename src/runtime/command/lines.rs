//! `for line in c.lines() { … }`: a command's stdout, a line at a time as it arrives. The
//! command is read only as fast as the loop takes lines; when the output ends, its status
//! is checked like `run`'s. Leaving the loop early (or failing in it) stops the command.

use super::running::Running;
use super::spec::{Node, Plan};
use crate::error::{ErrorKind, RuntimeError};
use crate::interp::{Interp, R};
use crate::syntax::Span;
use crate::value::{Object, Value};
use std::sync::Mutex;
use std::time::Instant;

pub struct LineStream {
    line: String,
    /// `None` once the command has finished and its status was checked.
    running: Mutex<Option<Running>>,
}

impl std::fmt::Debug for LineStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.describe())
    }
}

impl Object for LineStream {
    fn type_name(&self) -> &'static str {
        "command output"
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn describe(&self) -> String {
        format!("<lines of {}>", self.line)
    }
}

enum Next {
    Line(Vec<u8>),
    End,
    TimedOut,
}

impl LineStream {
    pub fn start(it: &mut Interp, node: &Node, span: Span) -> R<Value> {
        let plan = Plan::new(node, span);
        let line = plan.line.clone();
        let running = super::spawn::launch(&it.shared, plan, true)?;
        Ok(Value::object(LineStream { line, running: Mutex::new(Some(running)) }))
    }

    pub fn next(&self, it: &Interp, span: Span) -> R<Option<Value>> {
        let Ok(mut guard) = self.running.try_lock() else {
            return Err(RuntimeError::new(ErrorKind::Value, "another task is reading these lines", span)
                .with_label("already being read")
                .into());
        };
        let Some(r) = guard.as_mut() else { return Ok(None) };
        let deadline = r.plan.timeout.map(|t| r.started + t);
        let what = format!("output of `{}`", self.line);
        let next = crate::runtime::wait::block_on_external(it, span, &what, None, |slice| {
            if let Some(l) = r.lines.next_line() {
                return Some(Next::Line(l));
            }
            if r.is_done() {
                return Some(Next::End);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Some(Next::TimedOut);
            }
            let slice = deadline.map_or(slice, |d| slice.min(d.saturating_duration_since(Instant::now())));
            r.step(slice);
            r.lines.next_line().map(Next::Line)
        });
        match next {
            Ok(Next::Line(l)) => Ok(Some(r.line_value(l))),
            Ok(Next::End) => {
                let failed = r.outcome().1;
                *guard = None;
                failed.map_or(Ok(None), |e| Err(e.into()))
            }
            Ok(Next::TimedOut) => {
                r.terminate();
                let e = super::timeout_error(r);
                *guard = None;
                Err(e.into())
            }
            Err(e) => {
                *guard = None;
                Err(e)
            }
        }
    }
}
