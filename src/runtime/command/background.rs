//! `start(...)`: a command running in the background, behind the same task handle as
//! `spawn`, so `wait`, timeouts, `cancel()` and scopes work on it. The processes start at
//! once, in the script's thread, so a missing program is an error at the call; a thread
//! then drives the command to its end.

use super::running::{signal_name, Procs, Running, Status};
use super::spec::{Node, Plan};
use crate::error::{ErrorKind, RuntimeError};
use crate::interp::{Interp, R};
use crate::runtime::cancel::{cancelled_error, SLICE};
use crate::runtime::task::{Task, TaskExtra, TaskKind, TaskResult};
use crate::value::Value;
use nix::sys::signal::Signal;
use std::sync::Arc;
use std::time::Instant;

/// What a command task's handle adds: its pids, its command line, its status once it has
/// one, and `kill`.
struct CommandTask {
    procs: Arc<Procs>,
    line: String,
}

impl TaskExtra for CommandTask {
    fn field(&self, name: &str) -> Option<Value> {
        let p = self.procs.lock();
        Some(match name {
            "pid" => p.pids.first().map_or(Value::Nil, |pid| Value::Int(*pid as i64)),
            "pids" => Value::list(p.pids.iter().map(|pid| Value::Int(*pid as i64)).collect()),
            "cmd" => Value::str(&self.line),
            // The last stage's status, once it has exited.
            "code" => match p.status.last().copied().flatten() {
                Some(Status::Code(c)) => Value::Int(c as i64),
                _ => Value::Nil,
            },
            "signal" => match p.status.last().copied().flatten() {
                Some(Status::Signal(s)) => Value::str(signal_name(s)),
                _ => Value::Nil,
            },
            _ => return None,
        })
    }

    fn kill(&self, signal: i32) -> Result<(), String> {
        let sig = Signal::try_from(signal).map_err(|_| format!("{signal} is not a signal number"))?;
        self.procs.signal(sig)
    }
}

pub fn start(it: &mut Interp, node: &Node, span: crate::syntax::Span) -> R<Value> {
    let plan = Plan::new(node, span);
    let line = plan.line.clone();
    let running = super::spawn::launch(&it.shared, plan, false)?;
    let pid = running.procs.lock().pids.first().copied().unwrap_or(0);
    let cancel = it.cancel.child();
    let name = crate::runtime::spawn::task_name(it, "start", span);
    let task = Arc::new(Task::new(name, span, cancel.clone(), TaskKind::Process { pid }));
    *task.extra.lock().unwrap_or_else(|e| e.into_inner()) =
        Some(Box::new(CommandTask { procs: running.procs.clone(), line }));
    let shared = it.shared.clone();
    // The driver counts as a live task, so a task waiting for it is never taken for deadlocked.
    shared.tasks.enter();
    let t = task.clone();
    let driven = std::thread::Builder::new().name("conc:command".into()).spawn(move || {
        // A panic must still finish the task, or whoever waits for it would wait forever.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drive(running, &t.cancel)))
            .unwrap_or_else(|panic| Err(Arc::new(crate::runtime::spawn::panic_error(panic, span))));
        t.finish(result);
        shared.tasks.leave();
    });
    match driven {
        Ok(h) => task.set_thread(h),
        Err(e) => {
            // The closure, and the command with it, was dropped: it is already stopped and reaped.
            it.shared.tasks.leave();
            return Err(RuntimeError::new(ErrorKind::Limit, format!("could not start a thread: {e}"), span).into());
        }
    }
    crate::runtime::scope::adopt(it, task.clone());
    Ok(Value::Object(task))
}

/// Run the command to its end, its timeout, or a cancel.
fn drive(mut r: Running, cancel: &crate::runtime::cancel::CancelToken) -> TaskResult {
    let deadline = r.plan.timeout.map(|t| r.started + t);
    loop {
        let slice = deadline.map_or(SLICE, |d| SLICE.min(d.saturating_duration_since(Instant::now())));
        if r.step(slice) {
            return match r.outcome() {
                (_, Some(e)) => Err(Arc::new(e)),
                (v, None) => Ok(v),
            };
        }
        if cancel.is_cancelled() {
            r.terminate();
            return Err(Arc::new(cancelled_error(r.plan.span)));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            r.terminate();
            return Err(Arc::new(super::timeout_error(&r)));
        }
    }
}
