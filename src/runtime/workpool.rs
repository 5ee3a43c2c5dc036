//! `pool with {…}`: a pool object for dynamic work, like `concurrent.futures` executors.
//! `p.submit(f, args…)` returns a task handle (a future) at once; `p.map(f, xs)` runs a
//! function over items on the pool's workers; `p.shutdown()` waits for the work submitted,
//! `p.shutdown(true)` cancels what has not started. Workers are threads, or processes with
//! `backend: "processes"`; a worker process that dies fails only the task it was running and
//! is replaced.

use super::fork::{export_closure, reachable_globals};
use super::ipc::{self, Reassembler};
use super::pool::Options;
use super::portable::{decode, encode, Exporter, Importer, Wire};
use super::procs::{self, Server};
use super::task::{Task, TaskKind};
use super::zygote::{ExitStatus, FromWorker, Job, ToWorker};
use crate::builtins::Args;
use crate::error::{ErrorKind, RuntimeError};
use crate::interp::{Interp, Unwind, R};
use crate::syntax::Span;
use crate::value::{Object, Value};
use crossbeam_channel::{Receiver, Sender};
use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One submitted call.
struct Work {
    func: Value,
    args: Vec<Value>,
    /// The submitter's globals: the call sees the world as it was when it was submitted.
    globals: Vec<Value>,
    task: Arc<Task>,
}

pub struct PoolObject {
    queue: Mutex<Option<Sender<Work>>>,
    workers: Mutex<Vec<std::thread::JoinHandle<()>>>,
    processes: bool,
    size: usize,
    shut: AtomicBool,
    /// Set by `shutdown(true)`: work not yet started is cancelled instead of run.
    stop: Arc<AtomicBool>,
    /// Wakes the dispatcher of a process pool when work arrives.
    wake: Option<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)>,
}

impl std::fmt::Debug for PoolObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.describe())
    }
}

impl Object for PoolObject {
    fn type_name(&self) -> &'static str {
        "pool"
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn describe(&self) -> String {
        let kind = if self.processes { "processes" } else { "threads" };
        let state = if self.shut.load(Ordering::Relaxed) { ", shut down" } else { "" };
        format!("<pool of {} {kind}{state}>", self.size)
    }
}

/// `pool` or `pool with {workers: n, backend: "threads" | "processes"}`.
pub fn new_pool(interp: &mut Interp, options: Value, span: Span) -> R<Value> {
    let opts = Options::parse(&options, span)?;
    if opts.processes {
        interp.shared.settings.require_fork(span)?;
    }
    let (tx, rx) = crossbeam_channel::unbounded::<Work>();
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    let wake = if opts.processes {
        Some(
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
                .map_err(|e| RuntimeError::new(ErrorKind::Io, format!("cannot make a pipe: {e}"), span))?,
        )
    } else {
        None
    };
    if let Some((rd, _)) = &wake {
        let rd = rd.try_clone().map_err(|e| RuntimeError::new(ErrorKind::Io, e.to_string(), span))?;
        let server = procs::server(span)?;
        let mut interp_copy =
            interp.fork_world(interp.shared.root_cancel.child(), interp.shared.settings.limits.max_call_depth);
        interp_copy.task_name = "pool dispatcher".into();
        let size = opts.workers;
        let stop = stop.clone();
        let h = std::thread::Builder::new()
            .name("conc:pool".into())
            .spawn(move || Dispatcher::new(server, size, span, stop).run(&mut interp_copy, rx, rd))
            .map_err(|e| RuntimeError::new(ErrorKind::Limit, format!("could not start the pool: {e}"), span))?;
        handles.push(h);
    } else {
        for w in 0..opts.workers {
            interp.shared.admit_thread(span)?;
            let mut child =
                interp.fork_world(interp.shared.root_cancel.child(), interp.shared.settings.limits.max_call_depth);
            child.task_name = format!("pool worker {w}").into();
            let (rx, stop) = (rx.clone(), stop.clone());
            let shared = interp.shared.clone();
            let h = std::thread::Builder::new()
                .name(format!("conc:pool{w}"))
                .stack_size(super::spawn::THREAD_STACK)
                .spawn(move || {
                    thread_worker(&mut child, rx, &stop, span);
                    drop(child);
                    shared.release_thread();
                });
            match h {
                Ok(h) => handles.push(h),
                Err(e) => {
                    interp.shared.release_thread();
                    return Err(RuntimeError::new(
                        ErrorKind::Limit,
                        format!("could not start a pool worker: {e}"),
                        span,
                    )
                    .into());
                }
            }
        }
    }
    Ok(Value::object(PoolObject {
        queue: Mutex::new(Some(tx)),
        workers: Mutex::new(handles),
        processes: opts.processes,
        size: opts.workers,
        shut: AtomicBool::new(false),
        stop,
        wake,
    }))
}

fn thread_worker(interp: &mut Interp, rx: Receiver<Work>, stop: &AtomicBool, span: Span) {
    for work in rx {
        if work.task.cancel.is_cancelled() || stop.load(Ordering::SeqCst) {
            work.task.finish(Err(Arc::new(super::cancel::cancelled_error(work.task.span))));
            interp.shared.tasks.leave();
            continue;
        }
        interp.globals = work.globals;
        interp.cancel = work.task.cancel.clone();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let r = interp.call_value(&work.func, work.args, work.task.span);
            super::scope::finish_root(interp, r, span)
        }));
        let result = match r {
            Ok(Ok(v)) | Ok(Err(Unwind::Return(v))) => Ok(v),
            Ok(Err(Unwind::Error(e))) => Err(Arc::new(*e)),
            Ok(Err(_)) => Ok(Value::Nil),
            Err(panic) => Err(Arc::new(super::spawn::panic_error(panic, work.task.span))),
        };
        work.task.finish(result);
        interp.shared.tasks.leave();
    }
}

pub fn method(interp: &mut Interp, v: &Value, name: &str, name_span: Span, a: &Args) -> Option<R<Value>> {
    let p = v.downcast::<PoolObject>()?;
    Some(match name {
        "submit" => submit(interp, p, a),
        "map" => a.expect("map", 2, 2).and_then(|_| {
            let items = crate::builtins::to_list(&a.vals[1]).ok_or_else(|| -> Unwind {
                RuntimeError::new(
                    ErrorKind::Type,
                    format!("`map` runs over a list, range or map, not {}", crate::builtins::a_type(&a.vals[1])),
                    a.span(1),
                )
                .into()
            })?;
            let tasks = items
                .iter()
                .map(|x| submit_one(interp, p, a.vals[0].clone(), vec![x.clone()], a.call))
                .collect::<R<Vec<_>>>()?;
            let mut out = Vec::with_capacity(tasks.len());
            for (i, t) in tasks.iter().enumerate() {
                match super::wait::join(interp, t, None, a.call) {
                    Ok(v) => out.push(v),
                    Err(e) => {
                        // Fail fast, as `pool map` does: the rest of this map is not wanted.
                        tasks[i + 1..].iter().for_each(|t| t.cancel.cancel());
                        return Err(match e {
                            Unwind::Error(e) => super::pool::item_failure(*e, i, a.call).into(),
                            other => other,
                        });
                    }
                }
            }
            Ok(Value::list(out))
        }),
        "shutdown" => a.expect("shutdown", 0, 1).map(|_| {
            let cancel = a.vals.first().is_some_and(|v| v.truthy());
            shutdown(p, cancel);
            Value::Nil
        }),
        "size" => Ok(Value::Int(p.size as i64)),
        _ => Err(RuntimeError::new(ErrorKind::Type, format!("a pool has no method `{name}`"), name_span)
            .with_help("pools have `submit(f, args…)`, `map(f, items)`, `shutdown(cancel)` and `size()`")
            .into()),
    })
}

fn submit(interp: &mut Interp, p: &PoolObject, a: &Args) -> R<Value> {
    if a.is_empty() {
        return Err(RuntimeError::new(ErrorKind::Type, "`submit` needs a function to run", a.call)
            .with_help("write `p.submit(f, arg1, arg2)`")
            .into());
    }
    let task = submit_one(interp, p, a.vals[0].clone(), a.vals[1..].to_vec(), a.call)?;
    super::scope::adopt(interp, task.clone());
    Ok(Value::Object(task))
}

fn submit_one(interp: &mut Interp, p: &PoolObject, func: Value, args: Vec<Value>, span: Span) -> R<Arc<Task>> {
    if !matches!(func, Value::Func(_) | Value::Builtin(_) | Value::Native(_)) {
        return Err(RuntimeError::new(
            ErrorKind::Type,
            format!("`submit` runs a function, not {}", crate::builtins::a_type(&func)),
            span,
        )
        .into());
    }
    let queue = p.queue.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let Some(queue) = queue else {
        return Err(RuntimeError::new(ErrorKind::Value, "this pool has been shut down", span)
            .with_label("no more work can be submitted")
            .into());
    };
    let name = super::spawn::task_name(interp, "submit", span);
    let kind = if p.processes { TaskKind::Process { pid: 0 } } else { TaskKind::Thread };
    let task = Arc::new(Task::new(name, span, interp.cancel.child(), kind));
    interp.shared.tasks.enter();
    let work = Work { func, args, globals: interp.globals.clone(), task: task.clone() };
    if queue.send(work).is_err() {
        interp.shared.tasks.leave();
        return Err(RuntimeError::new(ErrorKind::Value, "this pool has been shut down", span).into());
    }
    if let Some((_, w)) = &p.wake {
        let _ = nix::unistd::write(w, &[1]);
    }
    Ok(task)
}

/// No more submissions; wait for the work submitted (or, with `cancel`, for what is already
/// running, the rest being cancelled), and for the workers to exit.
fn shutdown(p: &PoolObject, cancel: bool) {
    p.shut.store(true, Ordering::SeqCst);
    if cancel {
        p.stop.store(true, Ordering::SeqCst);
    }
    p.queue.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some((_, w)) = &p.wake {
        let _ = nix::unistd::write(w, &[1]);
    }
    let handles: Vec<_> = p.workers.lock().unwrap_or_else(|e| e.into_inner()).drain(..).collect();
    for h in handles {
        let _ = h.join();
    }
}

impl Drop for PoolObject {
    fn drop(&mut self) {
        // Dropping the queue lets the workers finish what was submitted and exit.
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((_, w)) = &self.wake {
            let _ = nix::unistd::write(w, &[1]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Worker processes

struct ProcWorker {
    pid: i32,
    sock: UnixStream,
    frames: Reassembler,
    running: Option<(u64, Arc<Task>)>,
}

struct Dispatcher {
    server: Arc<Server>,
    size: usize,
    span: Span,
    workers: Vec<ProcWorker>,
    queue: VecDeque<Work>,
    next_id: u64,
    stop: Arc<AtomicBool>,
}

impl Dispatcher {
    fn new(server: Arc<Server>, size: usize, span: Span, stop: Arc<AtomicBool>) -> Dispatcher {
        Dispatcher { server, size, span, workers: Vec::new(), queue: VecDeque::new(), next_id: 0, stop }
    }

    fn run(mut self, interp: &mut Interp, rx: Receiver<Work>, wake: std::os::fd::OwnedFd) {
        let mut open = true;
        loop {
            while let Ok(w) = rx.try_recv() {
                self.queue.push_back(w);
            }
            if open && rx.is_empty() && matches!(rx.try_recv(), Err(crossbeam_channel::TryRecvError::Disconnected)) {
                open = false;
            }
            self.assign(interp);
            let idle = self.workers.iter().all(|w| w.running.is_none());
            if !open && self.queue.is_empty() && idle {
                break;
            }
            self.wait_for_news(&wake);
            self.collect(interp);
        }
        for w in self.workers.drain(..) {
            drop(w.sock);
            if self.server.wait_status(w.pid, Duration::from_secs(5)).is_none() {
                procs::signal(w.pid, nix::sys::signal::Signal::SIGKILL);
            }
            interp.shared.release_process();
        }
    }

    /// Give queued work to idle workers, starting workers up to the pool's size.
    fn assign(&mut self, interp: &mut Interp) {
        while let Some(work) = self.queue.pop_front() {
            if work.task.cancel.is_cancelled() || self.stop.load(Ordering::SeqCst) {
                finish(interp, &work.task, Err(Arc::new(super::cancel::cancelled_error(work.task.span))));
                continue;
            }
            let idle = self.workers.iter().position(|w| w.running.is_none());
            let k = match idle {
                Some(k) => k,
                None if self.workers.len() < self.size => match self.start_worker(interp) {
                    Ok(()) => self.workers.len() - 1,
                    Err(e) => {
                        finish(interp, &work.task, Err(Arc::new(e)));
                        continue;
                    }
                },
                None => {
                    self.queue.push_front(work);
                    return;
                }
            };
            self.next_id += 1;
            let id = self.next_id;
            match encode_call(interp, &work, id) {
                Ok(bytes) => {
                    let w = &mut self.workers[k];
                    let _ = w.sock.set_nonblocking(false);
                    let sent = ipc::send(&w.sock, &bytes, &[]);
                    let _ = w.sock.set_nonblocking(true);
                    // A failed send shows as the worker's death when its socket is read.
                    let _ = sent;
                    w.running = Some((id, work.task.clone()));
                }
                Err(e) => finish(interp, &work.task, Err(Arc::new(e))),
            }
        }
    }

    fn start_worker(&mut self, interp: &mut Interp) -> Result<(), RuntimeError> {
        let unwind = |u: Unwind| match u {
            Unwind::Error(e) => *e,
            _ => RuntimeError::new(ErrorKind::Task, "the pool could not start a worker", self.span),
        };
        interp.shared.admit_process(self.span).map_err(unwind)?;
        let job = Job::Worker { func: Wire::Nil, globals: Vec::new() };
        match self.server.start(interp, "pool worker", self.span, job) {
            Ok((pid, mine)) => {
                let _ = mine.set_nonblocking(true);
                self.workers.push(ProcWorker { pid, sock: mine, frames: Reassembler::default(), running: None });
                Ok(())
            }
            Err(e) => {
                interp.shared.release_process();
                Err(unwind(e))
            }
        }
    }

    fn wait_for_news(&self, wake: &std::os::fd::OwnedFd) {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut fds = vec![PollFd::new(wake.as_fd(), PollFlags::POLLIN)];
        fds.extend(self.workers.iter().map(|w| PollFd::new(w.sock.as_fd(), PollFlags::POLLIN)));
        let _ = poll(&mut fds, PollTimeout::from(50u16));
        let mut b = [0u8; 64];
        while matches!(nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(wake), &mut b), Ok(n) if n > 0) {}
    }

    /// Complete the tasks whose results have come, and replace workers that died.
    fn collect(&mut self, interp: &mut Interp) {
        let shared = interp.shared.clone();
        let im = Importer { shared: &shared };
        let mut dead = Vec::new();
        for (k, w) in self.workers.iter_mut().enumerate() {
            let mut gone = false;
            loop {
                match w.frames.fill(&w.sock) {
                    Ok(true) => {}
                    Ok(false) => {
                        gone = true;
                        break;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        gone = true;
                        break;
                    }
                }
            }
            while let Some(frame) = w.frames.next_frame() {
                if let Ok(FromWorker::Called { id, result }) = decode::<FromWorker>(frame) {
                    if let Some((rid, task)) = w.running.take() {
                        debug_assert_eq!(rid, id);
                        let span = task.span;
                        let r = match result {
                            Ok(v) => im.value(v).map_err(|e| Arc::new(RuntimeError::new(ErrorKind::Task, e, span))),
                            Err(e) => Err(Arc::new(
                                im.error(e).unwrap_or_else(|m| RuntimeError::new(ErrorKind::Task, m, span)),
                            )),
                        };
                        finish(interp, &task, r);
                    }
                }
            }
            if gone {
                dead.push(k);
            } else if let Some((_, task)) = &w.running {
                if task.cancel.is_cancelled() {
                    procs::signal(w.pid, nix::sys::signal::Signal::SIGKILL);
                }
            }
        }
        for k in dead.into_iter().rev() {
            let w = self.workers.remove(k);
            let status = self.server.wait_status(w.pid, Duration::from_secs(1)).unwrap_or(ExitStatus::Signal(9));
            interp.shared.release_process();
            if let Some((_, task)) = w.running {
                let e = if task.cancel.is_cancelled() {
                    super::cancel::cancelled_error(task.span)
                } else {
                    RuntimeError::new(
                        ErrorKind::Task,
                        format!("worker pid {} {} while running this task", w.pid, status.describe()),
                        task.span,
                    )
                    .with_label("submitted here")
                };
                finish(interp, &task, Err(Arc::new(e)));
            }
        }
    }
}

fn finish(interp: &Interp, task: &Arc<Task>, r: super::task::TaskResult) {
    task.finish(r);
    interp.shared.tasks.leave();
}

fn encode_call(interp: &Interp, work: &Work, id: u64) -> Result<Vec<u8>, RuntimeError> {
    let span = work.task.span;
    let unwind = |u: Unwind| match u {
        Unwind::Error(e) => *e,
        _ => RuntimeError::new(ErrorKind::Task, "this task cannot be sent to a worker", span),
    };
    let ex = Exporter { shared: &interp.shared };
    let func = match &work.func {
        Value::Func(c) => export_closure(interp, c, span).map_err(unwind)?,
        Value::Builtin(b) => Wire::Builtin(*b),
        _ => return Err(RuntimeError::new(ErrorKind::Type, "a native function cannot run in a worker process", span)),
    };
    // The globals as the submitter saw them.
    let mut view = interp.fork_world(interp.cancel.clone(), 0);
    view.globals = work.globals.clone();
    let mut roots = vec![work.func.clone()];
    roots.extend(work.args.iter().cloned());
    let globals = reachable_globals(&view, &roots).map_err(unwind)?;
    let args = work
        .args
        .iter()
        .enumerate()
        .map(|(i, a)| {
            ex.value(a).map_err(|u| super::portable::unportable_error(&format!("argument {}", i + 1), u, span))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(encode(&ToWorker::Call { id, func, args, globals }))
}
