//! Task handles: the one kind of handle that `spawn`, `fork` and background commands return,
//! so `wait`, timeouts and cancel work the same on all of them.

use super::cancel::CancelToken;
use crate::error::RuntimeError;
use crate::value::{Object, Value};
use crossbeam_channel::Sender;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

pub type TaskResult = Result<Value, Arc<RuntimeError>>;

/// What runs the task, for the fields a handle shows.
#[derive(Debug)]
pub enum TaskKind {
    Thread,
    Process { pid: i32 },
}

pub struct Task {
    pub id: u64,
    pub name: Arc<str>,
    pub span: crate::syntax::Span,
    pub kind: Mutex<TaskKind>,
    pub cancel: CancelToken,
    result: Mutex<Option<TaskResult>>,
    done: Condvar,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Someone has taken this task's outcome, so its scope need not report it again.
    pub waited: AtomicBool,
    pub detached: AtomicBool,
    watchers: Mutex<Vec<(Sender<usize>, usize)>>,
    /// Extra behaviour for processes and commands: how to kill, what status to show.
    pub extra: Mutex<Option<Box<dyn TaskExtra>>>,
}

/// Hooks for tasks that are not plain threads.
pub trait TaskExtra: Send + Sync {
    fn field(&self, name: &str) -> Option<Value>;
    fn kill(&self, signal: i32) -> Result<(), String>;
    /// A method without arguments (`h.is_alive()`, say).
    fn method(&self, _name: &str) -> Option<Value> {
        None
    }
    /// The process behind the task has ended.
    fn exited(&self, _status: super::zygote::ExitStatus) {}
    /// A way for `wait` to collect the outcome itself instead of being woken for it.
    fn driver(&self) -> Option<Arc<dyn Drive>> {
        None
    }
}

/// Collects a task's outcome on the waiting thread: one wake-up fewer than a hand-over
/// from a reactor thread.
pub trait Drive: Send + Sync {
    /// Wait up to `slice` for the outcome and complete the task if it came. `false` when
    /// this cannot help (the outcome is already in, or only the reactor can finish the
    /// task): then wait on the task itself.
    fn drive(&self, slice: std::time::Duration) -> bool;
}

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<task {}>", self.name)
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Task {
    pub fn new(name: impl Into<Arc<str>>, span: crate::syntax::Span, cancel: CancelToken, kind: TaskKind) -> Task {
        Task {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            name: name.into(),
            span,
            kind: Mutex::new(kind),
            cancel,
            result: Mutex::new(None),
            done: Condvar::new(),
            thread: Mutex::new(None),
            waited: AtomicBool::new(false),
            detached: AtomicBool::new(false),
            watchers: Mutex::new(Vec::new()),
            extra: Mutex::new(None),
        }
    }

    pub fn set_thread(&self, h: JoinHandle<()>) {
        *self.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(h);
    }

    /// Record the outcome and wake everyone waiting for it.
    pub fn finish(&self, r: TaskResult) {
        *self.result.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
        self.done.notify_all();
        for (tx, idx) in self.watchers.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            let _ = tx.send(idx);
        }
    }

    pub fn is_done(&self) -> bool {
        self.result.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Wait up to `slice` for the outcome, collecting it here when the task can be driven.
    pub fn poll_driving(&self, slice: std::time::Duration) -> Option<TaskResult> {
        if let Some(r) = self.outcome() {
            return Some(r);
        }
        let driver = self.extra.lock().unwrap_or_else(|e| e.into_inner()).as_ref().and_then(|x| x.driver());
        match driver {
            Some(d) if d.drive(slice) => self.outcome(),
            _ => self.poll(slice),
        }
    }

    /// Wait up to `slice` for the outcome.
    pub fn poll(&self, slice: std::time::Duration) -> Option<TaskResult> {
        let guard = self.result.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = self.done.wait_timeout_while(guard, slice, |r| r.is_none()).unwrap_or_else(|e| e.into_inner());
        guard.clone()
    }

    pub fn outcome(&self) -> Option<TaskResult> {
        self.result.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Send `idx` on `tx` when this task finishes (at once if it already has).
    pub fn watch(&self, tx: Sender<usize>, idx: usize) {
        let mut w = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        if self.is_done() {
            let _ = tx.send(idx);
        } else {
            w.push((tx, idx));
        }
    }

    /// Reclaim the OS thread once the task is done.
    pub fn join_thread(&self) {
        let h = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = h {
            let _ = h.join();
        }
    }
}

impl Object for Task {
    fn type_name(&self) -> &'static str {
        "task"
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn describe(&self) -> String {
        let state = if self.is_done() { "done" } else { "running" };
        format!("<task {} {state}>", self.name)
    }
}
