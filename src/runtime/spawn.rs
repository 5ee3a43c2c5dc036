//! `spawn`: run a closure on a new OS thread with its own interpreter.

use super::cancel::CancelToken;
use super::task::{Task, TaskKind, TaskResult};
use crate::error::{ErrorKind, RuntimeError};
use crate::interp::{Interp, Unwind, R};
use crate::syntax::ast::FnDef;
use crate::syntax::Span;
use crate::value::Value;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

/// Stack for spawned threads. Deep recursion grows onto the heap, so this can stay modest.
pub const THREAD_STACK: usize = 4 << 20;

pub fn spawn(interp: &mut Interp, body: &Arc<FnDef>, span: Span) -> R<Value> {
    let closure = interp.make_closure(body);
    let name = task_name(interp, "spawn", span);
    let cancel = interp.cancel.child();
    let task = Arc::new(Task::new(name.clone(), span, cancel.clone(), TaskKind::Thread));
    start_thread(interp, task.clone(), cancel, span, move |child| child.call_value(&closure, vec![], span))?;
    super::scope::adopt(interp, task.clone());
    Ok(Value::Object(task))
}

/// A readable task name: the construct and the line it was started on.
pub fn task_name(interp: &Interp, what: &str, span: Span) -> String {
    let sources = interp.shared.sources.read().unwrap_or_else(|e| e.into_inner());
    match sources.get(span.file) {
        Some(f) => format!("{what}@{}", f.line_col(span.start).0),
        None => what.to_string(),
    }
}

/// Run `work` on a new thread with a copy of this interpreter's world, and record its outcome in `task`.
pub fn start_thread(
    interp: &mut Interp,
    task: Arc<Task>,
    cancel: CancelToken,
    span: Span,
    work: impl FnOnce(&mut Interp) -> R<Value> + Send + 'static,
) -> R<()> {
    interp.shared.admit_thread(span)?;
    let mut child = interp.fork_world(cancel, interp.shared.settings.limits.max_call_depth);
    child.task_name = task.name.clone();
    let shared = interp.shared.clone();
    shared.tasks.enter();
    let t = task.clone();
    let os_name: String = format!("conc:{}", task.name).chars().take(15).collect();
    let spawned = std::thread::Builder::new().name(os_name).stack_size(THREAD_STACK).spawn(move || {
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let r = work(&mut child);
            let r = super::scope::finish_root(&mut child, r, span);
            let settled = super::broker::settle(&child);
            r.and_then(|v| settled.map(|_| v))
        }));
        let result: TaskResult = match outcome {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(Unwind::Error(e))) => Err(Arc::new(*e)),
            Ok(Err(_)) => Ok(Value::Nil),
            Err(panic) => Err(Arc::new(panic_error(panic, span))),
        };
        drop(child);
        t.finish(result);
        shared.tasks.leave();
        shared.release_thread();
    });
    match spawned {
        Ok(h) => {
            task.set_thread(h);
            Ok(())
        }
        Err(e) => {
            interp.shared.tasks.leave();
            interp.shared.release_thread();
            Err(RuntimeError::new(ErrorKind::Limit, format!("could not start a thread: {e}"), span).into())
        }
    }
}

/// A panic in native code becomes an ordinary error at the span that started the work.
pub fn panic_error(panic: Box<dyn std::any::Any + Send>, span: Span) -> RuntimeError {
    let msg = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    RuntimeError::new(ErrorKind::Task, format!("internal error (panic): {msg}"), span)
        .with_help("this is a bug in conc or in a native function; please report it")
}
