//! `wait`: join one task, a list of tasks, or the first of several; and the blocking helper
//! that every blocking conc call goes through, so each one honours timeouts, cancellation
//! and deadlock detection in the same way.

use super::cancel::SLICE;
use super::task::Task;
use crate::error::{ErrorKind, RuntimeError};
use crate::interp::{Interp, R};
use crate::syntax::Span;
use crate::value::{Object, Value};
use crossbeam_channel::Receiver;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Block until `attempt` yields a value. `attempt(slice)` may wait up to `slice` itself.
/// Without a timeout the caller counts as blocked for deadlock detection.
pub fn block_on<T>(
    interp: &Interp,
    span: Span,
    what: &str,
    timeout: Option<Duration>,
    attempt: impl FnMut(Duration) -> Option<T>,
) -> R<T> {
    block(interp, span, what, timeout, true, attempt)
}

/// As [`block_on`], for a wait on something outside conc (a process, a subprocess, a pipe
/// to one): the world outside can always still move, so it never counts towards a deadlock.
pub fn block_on_external<T>(
    interp: &Interp,
    span: Span,
    what: &str,
    timeout: Option<Duration>,
    attempt: impl FnMut(Duration) -> Option<T>,
) -> R<T> {
    block(interp, span, what, timeout, false, attempt)
}

fn block<T>(
    interp: &Interp,
    span: Span,
    what: &str,
    timeout: Option<Duration>,
    can_deadlock: bool,
    mut attempt: impl FnMut(Duration) -> Option<T>,
) -> R<T> {
    if let Some(v) = attempt(Duration::ZERO) {
        return Ok(v);
    }
    let deadline = timeout.map(|t| Instant::now() + t);
    let registry = &interp.shared.tasks;
    let root = &*interp.task_name == "main";
    let watch_deadlock = can_deadlock && timeout.is_none() && !interp.external_waits;
    let _guard = watch_deadlock.then(|| registry.block(&interp.task_name, what, span, root, &interp.cancel));
    loop {
        interp.check_cancel(span)?;
        // Blocked time counts against a wall-clock limit too.
        interp.check_time_limit(span)?;
        let slice = match deadline {
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return Err(timeout_error(what, timeout.unwrap_or_default(), span).into());
                }
                (d - now).min(SLICE)
            }
            None => SLICE,
        };
        if let Some(v) = attempt(slice) {
            return Ok(v);
        }
        if watch_deadlock {
            let describe = |s: Span| interp.shared.describe_span(s);
            if let Some(report) = registry.check_deadlock(root, &describe) {
                return Err(RuntimeError::new(
                    ErrorKind::Deadlock,
                    "deadlock: every task is blocked and none can continue",
                    span,
                )
                .with_label(format!("{} is blocked here forever", interp.task_name))
                .with_help(format!("blocked tasks:\n{report}\nacquire locks in one global order, or pass a timeout"))
                .into());
            }
        }
    }
}

pub fn timeout_error(what: &str, after: Duration, span: Span) -> RuntimeError {
    RuntimeError::new(ErrorKind::Timeout, format!("timed out after {} waiting for {what}", fmt_duration(after)), span)
        .with_label("gave up waiting here")
}

pub(crate) fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{s}s")
    } else {
        format!("{}ms", (s * 1000.0).round())
    }
}

/// Wait for a completion index while cleaning up after a failure; cancellation must not stop it.
pub fn recv_uncancellable(rx: &Receiver<usize>) -> usize {
    rx.recv().unwrap_or(0)
}

/// The error `wait` raises for a failed task: the start span first, the failure related.
pub fn task_failure(task: &Task, e: &Arc<RuntimeError>) -> RuntimeError {
    if e.kind == ErrorKind::Exit(0) || matches!(e.kind, ErrorKind::Exit(_)) {
        return (**e).clone();
    }
    let mut out = RuntimeError::new(e.kind, e.message.clone(), task.span)
        .with_label(format!("task {} started here failed", task.name))
        .with_data(e.data.clone());
    // A task that failed where it started (a process that died, say) has nothing to add.
    if e.span != Some(task.span) || !e.related.is_empty() {
        out = out.with_related(e.clone());
    }
    out.help = e.help.clone();
    out
}

/// Wait for one task and take its value, raising its error if it failed.
pub fn join(interp: &Interp, task: &Arc<Task>, timeout: Option<Duration>, span: Span) -> R<Value> {
    let what = format!("task {}", task.name);
    let outcome = block_on(interp, span, &what, timeout, |slice| task.poll_driving(slice))?;
    task.join_thread();
    task.waited.store(true, Ordering::SeqCst);
    interp.shared.tasks.bump();
    outcome.map_err(|e| task_failure(task, &e).into())
}

fn as_task(v: &Value, span: Span) -> R<Arc<Task>> {
    super::task_of(v).ok_or_else(|| {
        RuntimeError::new(
            ErrorKind::Type,
            format!("`wait` expects a task or a list of tasks, got {}", crate::builtins::a_type(v)),
            span,
        )
        .with_label(format!("this is {}", crate::builtins::a_type(v)))
        .with_help("tasks come from `spawn`, `fork` and `start(...)`")
        .into()
    })
}

pub fn tasks_of(v: &Value, span: Span) -> R<Vec<Arc<Task>>> {
    match v {
        Value::List(items) => items.iter().enumerate().map(|(i, t)| list_item_task(t, i, span)).collect(),
        other => Ok(vec![as_task(other, span)?]),
    }
}

fn list_item_task(v: &Value, index: usize, span: Span) -> R<Arc<Task>> {
    super::task_of(v).ok_or_else(|| {
        let what = crate::builtins::a_type(v);
        RuntimeError::new(
            ErrorKind::Type,
            format!("`wait` expects a task or a list of tasks, but item {index} of this list is {what}"),
            span,
        )
        .with_label(format!("a list with {what} at index {index}"))
        .with_help("tasks come from `spawn`, `fork` and `start(...)` (`pool map` gives results, not tasks)")
        .into()
    })
}

pub fn wait(
    interp: &mut Interp,
    target: Value,
    any: bool,
    timeout: Option<Duration>,
    span: Span,
    target_span: Span,
) -> R<Value> {
    if any {
        return wait_any(interp, &tasks_of(&target, target_span)?, timeout, span);
    }
    match &target {
        Value::List(_) => {
            let tasks = tasks_of(&target, target_span)?;
            let deadline = timeout.map(|t| Instant::now() + t);
            let mut out = Vec::with_capacity(tasks.len());
            for t in &tasks {
                let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                out.push(join(interp, t, left, span)?);
            }
            Ok(Value::list(out))
        }
        other => join(interp, &as_task(other, target_span)?, timeout, span),
    }
}

/// The first task to finish: `{index, task, value}`.
pub fn wait_any(interp: &Interp, tasks: &[Arc<Task>], timeout: Option<Duration>, span: Span) -> R<Value> {
    if tasks.is_empty() {
        return Err(RuntimeError::new(ErrorKind::Value, "`wait any` needs at least one task", span).into());
    }
    let (tx, rx) = crossbeam_channel::unbounded();
    for (i, t) in tasks.iter().enumerate() {
        t.watch(tx.clone(), i);
    }
    let idx = block_on(interp, span, "any of several tasks", timeout, |slice| rx.recv_timeout(slice).ok())?;
    let task = &tasks[idx];
    let value = join(interp, task, None, span)?;
    Ok(Value::map([("index", Value::Int(idx as i64)), ("task", Value::Object(task.clone())), ("value", value)]))
}

/// Tasks in the order they finish, like `as_completed`: `for r in completed(hs) { r.value }`.
pub struct Completed {
    tasks: Vec<Arc<Task>>,
    rx: Receiver<usize>,
    left: Mutex<usize>,
    timeout: Option<Duration>,
}

impl std::fmt::Debug for Completed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<completed {} tasks>", self.tasks.len())
    }
}

impl Object for Completed {
    fn type_name(&self) -> &'static str {
        "completed"
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Completed {
    pub fn new(tasks: Vec<Arc<Task>>, timeout: Option<Duration>) -> Completed {
        let (tx, rx) = crossbeam_channel::unbounded();
        for (i, t) in tasks.iter().enumerate() {
            t.watch(tx.clone(), i);
        }
        let left = Mutex::new(tasks.len());
        Completed { tasks, rx, left, timeout }
    }

    pub fn next(&self, interp: &Interp, span: Span) -> R<Option<Value>> {
        {
            let mut left = self.left.lock().unwrap_or_else(|e| e.into_inner());
            if *left == 0 {
                return Ok(None);
            }
            *left -= 1;
        }
        let idx = block_on(interp, span, "the next task to complete", self.timeout, |s| self.rx.recv_timeout(s).ok())?;
        let task = &self.tasks[idx];
        let value = join(interp, task, None, span)?;
        Ok(Some(Value::map([
            ("index", Value::Int(idx as i64)),
            ("task", Value::Object(task.clone())),
            ("value", value),
        ])))
    }
}
