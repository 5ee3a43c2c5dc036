//! The runtime: one file per construct. The interpreter calls in here for everything that
//! touches threads, processes, channels, locks or subprocesses.

pub mod broker;
pub mod cancel;
pub mod channel;
pub mod code_pages;
pub mod command;
pub mod file;
pub mod fork;
pub mod guardian;
pub mod ipc;
pub mod pool;
pub mod portable;
pub mod procpool;
pub mod procs;
pub mod pump;
pub mod registry;
pub mod scope;
pub mod signal;
pub mod spawn;
pub mod sync;
pub mod task;
pub mod wait;
pub mod workpool;
pub mod zygote;

use crate::builtins::Args;
use crate::error::{ErrorKind, RuntimeError};
use crate::interp::{fail, Interp, R};
use crate::syntax::Span;
use crate::value::Value;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use task::Task;

type Builtin = fn(&mut Interp, Args) -> R<Value>;

/// Every global function the runtime contributes.
pub fn all_builtins() -> Vec<(&'static str, Builtin)> {
    let mut all = BUILTINS.to_vec();
    all.extend_from_slice(sync::BUILTINS);
    all.push(("pipe", channel::make_pipe));
    all.extend_from_slice(command::BUILTINS);
    all.extend_from_slice(signal::BUILTINS);
    all.extend_from_slice(file::BUILTINS);
    all
}

/// Task helpers.
static BUILTINS: &[(&str, Builtin)] = &[
    ("completed", |_, a| {
        a.expect("completed", 1, 2)?;
        let tasks = wait::tasks_of(&a.vals[0], a.span(0))?;
        Ok(Value::object(wait::Completed::new(tasks, a.timeout(1, "completed")?)))
    }),
    ("wait_timeout", |i, a| {
        a.expect("wait_timeout", 2, 2)?;
        let t = a.timeout(1, "wait_timeout")?;
        wait::wait(i, a.vals[0].clone(), false, t, a.call, a.span(0))
    }),
];

/// Environment changes are process-wide; they go through one place so they can be serialised.
pub fn set_env_var(k: &str, v: &str) {
    static ENV_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // Rust 2021 keeps set_var safe; conc threads only read the environment through `env`.
    std::env::set_var(k, v);
}

pub(crate) fn task_of(v: &Value) -> Option<Arc<Task>> {
    match v {
        // The type is checked before the Arc is cloned: a clone and drop are two atomic
        // writes to a count that other threads using the same object write too.
        Value::Object(o) if o.as_any().is::<Task>() => {
            let any: Arc<dyn std::any::Any + Send + Sync> = o.clone();
            any.downcast::<Task>().ok()
        }
        _ => None,
    }
}

pub fn object_field(interp: &Interp, v: &Value, name: &str, span: Span) -> R<Value> {
    if let Some(t) = task_of(v) {
        let extra = t.extra.lock().unwrap_or_else(|e| e.into_inner()).as_ref().and_then(|x| x.field(name));
        if let Some(x) = extra {
            return Ok(x);
        }
        return Ok(match name {
            "name" => Value::str(&*t.name),
            "id" => Value::Int(t.id as i64),
            "done" => Value::Bool(t.is_done()),
            "cancelled" => Value::Bool(t.cancel.is_cancelled()),
            _ => return no_field(v, name, span, "tasks have `name`, `id`, `done` and `cancelled`"),
        });
    }
    if let Some(r) = v.downcast::<broker::Remote>() {
        return r.field(interp, name, span);
    }
    if let Some(f) = channel::field(v, name) {
        return Ok(f);
    }
    if let Some(f) = command::field(v, name) {
        return Ok(f);
    }
    if let Some(f) = file::field(v, name) {
        return Ok(f);
    }
    no_field(v, name, span, "")
}

fn no_field(v: &Value, name: &str, span: Span, help: &str) -> R<Value> {
    let e = RuntimeError::new(ErrorKind::Key, format!("{} has no field `{name}`", crate::builtins::a_type(v)), span)
        .with_label("unknown field");
    Err(if help.is_empty() { e } else { e.with_help(help) }.into())
}

pub fn object_method(interp: &mut Interp, v: &Value, name: &str, name_span: Span, a: Args) -> R<Value> {
    if let Some(t) = task_of(v) {
        return task_method(interp, &t, name, name_span, a);
    }
    if let Some(r) = v.downcast::<broker::Remote>() {
        return r.method(interp, name, a);
    }
    if let Some(r) = channel::method(interp, v, name, name_span, &a) {
        return r;
    }
    if let Some(r) = sync::method(interp, v, name, name_span, &a) {
        return r;
    }
    if let Some(r) = workpool::method(interp, v, name, name_span, &a) {
        return r;
    }
    if let Some(r) = command::method(interp, v, name, name_span, &a) {
        return r;
    }
    if let Some(r) = file::method(interp, v, name, name_span, &a) {
        return r;
    }
    fail(ErrorKind::Type, format!("{} has no method `{name}`", crate::builtins::a_type(v)), name_span)
}

fn task_method(interp: &mut Interp, t: &Arc<Task>, name: &str, name_span: Span, a: Args) -> R<Value> {
    match name {
        "wait" | "result" => {
            a.expect(name, 0, 1)?;
            wait::join(interp, t, a.timeout(0, name)?, a.call)
        }
        "cancel" => {
            t.cancel.cancel();
            interp.shared.tasks.bump();
            Ok(Value::Nil)
        }
        "detach" => {
            t.detached.store(true, Ordering::SeqCst);
            Ok(Value::Nil)
        }
        "is_done" => Ok(Value::Bool(t.is_done())),
        "kill" => {
            a.expect("kill", 0, 1)?;
            let sig = match a.vals.first() {
                Some(Value::Str(s)) => fork::signal_number(s)
                    .ok_or_else(|| RuntimeError::new(ErrorKind::Value, format!("unknown signal `{s}`"), a.span(0)))?,
                Some(_) => a.int(0, "kill")? as i32,
                // The same default as the `kill(task)` builtin and the shell's `kill`.
                None => 15,
            };
            broker::flush_sends();
            let extra = t.extra.lock().unwrap_or_else(|e| e.into_inner());
            match extra.as_ref() {
                Some(x) => {
                    x.kill(sig).map_err(|e| RuntimeError::new(ErrorKind::Io, e, a.call).into()).map(|_| Value::Nil)
                }
                None => fail(
                    ErrorKind::Type,
                    "only process and command tasks can be killed; use `cancel()` for threads",
                    name_span,
                ),
            }
        }
        _ => match (a.vals.is_empty(), extra_method(t, name)) {
            (true, Some(v)) => Ok(v),
            _ => fail(ErrorKind::Type, format!("a task has no method `{name}`"), name_span).map_err(|e| match e {
                crate::interp::Unwind::Error(mut err) => {
                    err.help = Some(
                        "tasks have `wait(timeout)`, `cancel()`, `detach()`, `is_done()` and `kill(signal)`".into(),
                    );
                    crate::interp::Unwind::Error(err)
                }
                e => e,
            }),
        },
    }
}

/// A method a process or command task adds to the task's own (`is_alive`, say).
fn extra_method(t: &Task, name: &str) -> Option<Value> {
    t.extra.lock().unwrap_or_else(|e| e.into_inner()).as_ref().and_then(|x| x.method(name))
}

/// The next item when a `for` loop runs over a runtime object (a channel, say).
pub fn iterate_next(interp: &mut Interp, v: &Value, span: Span) -> R<Option<Value>> {
    if let Some(c) = v.downcast::<wait::Completed>() {
        return c.next(interp, span);
    }
    if let Some(r) = v.downcast::<broker::Remote>() {
        return r.next(interp, span);
    }
    if let Some(r) = channel::iterate_next(interp, v, span) {
        return r;
    }
    if let Some(r) = command::iterate_next(interp, v, span) {
        return r;
    }
    if let Some(r) = file::iterate_next(interp, v, span) {
        return r;
    }
    fail(ErrorKind::Type, format!("cannot iterate over {}", crate::builtins::a_type(v)), span)
}

/// Child processes this conc process started and has not yet reaped, so a forced exit can kill them.
static CHILDREN: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

pub fn track_child(pid: i32) {
    CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
}

pub fn untrack_child(pid: i32) {
    CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).retain(|p| *p != pid);
}

/// Kill every child still running: the last resort of a second Ctrl-C.
pub fn kill_all_children() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    for pid in CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let _ = kill(Pid::from_raw(-*pid), Signal::SIGKILL);
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
}
