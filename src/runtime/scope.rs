//! Structured scopes: every task belongs to the scope that started it, and leaving the
//! scope waits for all of them. On the first failure the rest are cancelled.

use super::task::Task;
use crate::error::{ErrorKind, RuntimeError};
use crate::interp::{Interp, Unwind, R};
use crate::syntax::ast::Block;
use crate::syntax::Span;
use crate::value::Value;
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[derive(Default)]
pub struct ScopeFrame {
    pub tasks: Vec<Arc<Task>>,
    prune_at: usize,
}

/// Make the innermost scope responsible for `task`.
pub fn adopt(interp: &mut Interp, task: Arc<Task>) {
    let frame = interp.scopes.last_mut().expect("an interpreter always has a root scope");
    frame.tasks.push(task);
    // Tasks already waited for need no more care; forget them so long loops stay small.
    if frame.tasks.len() >= frame.prune_at.max(64) {
        frame.tasks.retain(|t| !(t.waited.load(Ordering::Relaxed) && t.is_done()));
        frame.prune_at = frame.tasks.len() * 2;
    }
}

pub fn run_scope(interp: &mut Interp, body: &Block, span: Span) -> R<Value> {
    interp.scopes.push(ScopeFrame::default());
    let result = interp.exec_block(body);
    let frame = interp.scopes.pop().expect("scope pushed above");
    finish_frame(interp, frame, result, span)
}

/// End the interpreter's outermost scope (a script, or a task's own body).
pub fn finish_root(interp: &mut Interp, result: R<Value>, span: Span) -> R<Value> {
    let frame = std::mem::take(interp.scopes.first_mut().expect("root scope"));
    finish_frame(interp, frame, result, span)
}

/// Wait for every task of a finished scope. If the body failed, or a task fails, cancel the
/// others; the first error is raised with the others attached.
pub fn finish_frame(interp: &mut Interp, frame: ScopeFrame, result: R<Value>, span: Span) -> R<Value> {
    let pending: Vec<Arc<Task>> =
        frame.tasks.into_iter().filter(|t| !t.detached.load(Ordering::Relaxed) || t.is_done()).collect();
    if pending.is_empty() {
        return result;
    }
    let (mut first, result): (Option<Box<RuntimeError>>, R<Value>) = match result {
        Err(Unwind::Error(e)) => (Some(e), Ok(Value::Nil)),
        other => (None, other),
    };
    let body_failed = first.is_some();
    if body_failed {
        pending.iter().for_each(|t| t.cancel.cancel());
    }
    let (tx, rx) = crossbeam_channel::unbounded();
    for (i, t) in pending.iter().enumerate() {
        t.watch(tx.clone(), i);
    }
    let mut others: Vec<Arc<RuntimeError>> = Vec::new();
    let mut cancelled_rest = body_failed;
    for _ in 0..pending.len() {
        let idx = if cancelled_rest {
            // Already failing: wait without letting a second Ctrl-C-style cancel abort the cleanup.
            super::wait::recv_uncancellable(&rx)
        } else {
            match super::wait::block_on(interp, span, "the end of a scope", None, |slice| rx.recv_timeout(slice).ok()) {
                Ok(i) => i,
                Err(e) => {
                    pending.iter().for_each(|t| t.cancel.cancel());
                    cancelled_rest = true;
                    if first.is_none() {
                        if let Unwind::Error(e) = e {
                            first = Some(e);
                        }
                    }
                    super::wait::recv_uncancellable(&rx)
                }
            }
        };
        let task = &pending[idx];
        task.join_thread();
        let already_seen = task.waited.swap(true, Ordering::SeqCst);
        if let Some(Err(e)) = task.outcome() {
            // A task stopped by a cancel someone asked for has not failed.
            let asked_to_stop = cancelled_rest || task.cancel.is_cancelled();
            if already_seen || (e.kind == ErrorKind::Cancelled && asked_to_stop) {
                continue;
            }
            if first.is_none() {
                first = Some(Box::new(super::wait::task_failure(task, &e)));
                pending.iter().for_each(|t| t.cancel.cancel());
                cancelled_rest = true;
            } else {
                others.push(e);
            }
        }
    }
    match first {
        Some(mut e) => {
            e.related.extend(others);
            Err(Unwind::Error(e))
        }
        None => result,
    }
}
