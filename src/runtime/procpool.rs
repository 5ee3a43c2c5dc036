//! `pool map … with {backend: "processes"}`: the items run in worker processes forked by the
//! process server. The function (with the globals it reaches) goes to each worker once;
//! items go in chunks, one chunk per idle worker, and results come back per chunk.
//!
//! A worker that dies mid-map is noticed at once (its socket closes), named with the item it
//! was running, and the others are stopped and reaped: unlike `multiprocessing.Pool`, a
//! killed worker never hangs the map.

use super::fork::{export_closure, reachable_globals};
use super::ipc::{self, Reassembler};
use super::pool::{ItemResult, Options};
use super::portable::{decode, encode, Exporter, Importer, Wire};
use super::procs::{self, Server, GRACE};
use super::zygote::{ExitStatus, FromWorker, Job};
use crate::error::{ErrorKind, RuntimeError};
use crate::interp::{Interp, R};
use crate::syntax::Span;
use crate::value::Value;
use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use serde::Serialize;
use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The same encoding as `zygote::ToWorker::Batch` (its first variant), borrowing the items
/// instead of copying them.
#[derive(Serialize)]
enum BatchRef<'a> {
    Batch { first: u64, items: &'a [Wire] },
}

struct Worker {
    pid: i32,
    sock: UnixStream,
    frames: Reassembler,
    /// The chunks sent to it, oldest (the one it is running) first: first item and count.
    /// A second chunk waits in its socket so the worker never idles for a round trip.
    queued: VecDeque<(usize, usize)>,
}

/// Chunks a worker holds at most. A second one is sent only while there is plenty left, so
/// the last items still go to whichever worker frees up first.
const DEPTH: usize = 2;

/// What every worker is started with.
struct Plan {
    job_func: Wire,
    globals: Vec<(u32, Wire)>,
}

pub(super) fn map(
    interp: &mut Interp,
    f: &Value,
    items: &[Value],
    opts: &Options,
    span: Span,
    bar: Option<&indicatif::ProgressBar>,
) -> R<Vec<ItemResult>> {
    let plan = plan(interp, f, span)?;
    let ex = Exporter { shared: &interp.shared };
    let wires = items
        .iter()
        .enumerate()
        .map(|(i, v)| ex.value(v).map_err(|u| super::portable::unportable_error(&format!("item {i}"), u, span).into()))
        .collect::<R<Vec<Wire>>>()?;
    let n = items.len();
    let workers = opts.workers.min(n);
    let chunk = opts.chunk.unwrap_or_else(|| n.div_ceil(workers * 4).clamp(1, 2048));
    let server = procs::server(span)?;
    let mut pool = Pool { server, workers: Vec::new(), span };
    let outcome = (|| {
        pool.add_workers(interp, &plan, workers)?;
        run(interp, &mut pool, &plan, &wires, chunk, opts, bar)
    })();
    pool.stop(interp, outcome.is_err());
    outcome
}

fn plan(interp: &Interp, f: &Value, span: Span) -> R<Plan> {
    let job_func = match f {
        Value::Func(c) => export_closure(interp, c, span)?,
        Value::Builtin(b) => Wire::Builtin(*b),
        _ => {
            return Err(RuntimeError::new(
                ErrorKind::Type,
                "a native function of the host cannot run in a process pool",
                span,
            )
            .with_help("use the thread backend, or wrap the work in a conc function")
            .into())
        }
    };
    let globals = reachable_globals(interp, std::slice::from_ref(f))?;
    Ok(Plan { job_func, globals })
}

struct Pool {
    server: Arc<Server>,
    workers: Vec<Worker>,
    span: Span,
}

impl Pool {
    /// Start `n` workers at once: every request goes out before any reply is awaited, so the
    /// server forks them back to back instead of one round trip each.
    fn add_workers(&mut self, interp: &Interp, plan: &Plan, n: usize) -> R<()> {
        let span = self.span;
        let mut pending = Vec::with_capacity(n);
        let mut failure = None;
        for _ in 0..n {
            if let Err(e) = interp.shared.admit_process(span) {
                failure = Some(e);
                break;
            }
            let job = Job::Worker { func: plan.job_func.clone(), globals: plan.globals.clone() };
            // The spares used are replaced when the map is over, so the forks that make new
            // ones do not take CPU from the workers.
            match self.server.begin_start(interp, "pool worker", span, job, false) {
                Ok(p) => pending.push(p),
                Err(e) => {
                    interp.shared.release_process();
                    failure = Some(e);
                    break;
                }
            }
        }
        for p in pending {
            match self.server.finish_start(interp, span, p) {
                Ok((pid, sock)) => {
                    let _ = sock.set_nonblocking(true);
                    self.workers.push(Worker { pid, sock, frames: Reassembler::default(), queued: VecDeque::new() });
                }
                Err(e) => {
                    interp.shared.release_process();
                    failure.get_or_insert(e);
                }
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// Close every worker's socket (a worker exits when it sees that) and reap them all; after
    /// a failure they are told to stop first, and killed if they do not.
    fn stop(&mut self, interp: &Interp, failed: bool) {
        if failed {
            self.workers.iter().for_each(|w| procs::signal(w.pid, nix::sys::signal::Signal::SIGTERM));
        }
        let pids: Vec<i32> = self.workers.drain(..).map(|w| w.pid).collect();
        let deadline = Instant::now() + if failed { GRACE } else { Duration::from_secs(5) };
        for pid in &pids {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.server.wait_status(*pid, left).is_none() {
                procs::signal(*pid, nix::sys::signal::Signal::SIGKILL);
                self.server.wait_status(*pid, Duration::from_secs(5));
            }
            interp.shared.release_process();
        }
        self.server.refill_spares();
    }
}

fn run(
    interp: &mut Interp,
    pool: &mut Pool,
    plan: &Plan,
    wires: &[Wire],
    chunk: usize,
    opts: &Options,
    bar: Option<&indicatif::ProgressBar>,
) -> R<Vec<ItemResult>> {
    let n = wires.len();
    let span = pool.span;
    let mut todo: VecDeque<(usize, usize)> = (0..n).step_by(chunk).map(|s| (s, chunk.min(n - s))).collect();
    let mut done: Vec<ItemResult> = Vec::with_capacity(n);
    let im = Importer { shared: &interp.shared.clone() };
    let held = place_on_cpus(&pool.workers);
    hand_out(&mut pool.workers, &mut todo, wires);
    drop(held);
    while done.len() < n {
        interp.check_cancel(span)?;
        hand_out(&mut pool.workers, &mut todo, wires);
        let ready = poll_workers(&pool.workers);
        let mut dead: Vec<usize> = Vec::new();
        for k in ready {
            let w = &mut pool.workers[k];
            match read_results(w) {
                Ok(batches) => {
                    for b in batches {
                        let FromWorker::Batch { first: b_first, results } = b else { continue };
                        w.queued.pop_front();
                        for (j, r) in results.into_iter().enumerate() {
                            let r = match r {
                                Ok(v) => im.value(v).map_err(|e| Box::new(RuntimeError::new(ErrorKind::Task, e, span))),
                                Err(e) => Err(Box::new(
                                    im.error(e).unwrap_or_else(|m| RuntimeError::new(ErrorKind::Task, m, span)),
                                )),
                            };
                            if let Some(bar) = bar {
                                bar.inc(1);
                            }
                            let index = b_first as usize + j;
                            match r {
                                Err(e) if !opts.collect_errors => {
                                    return Err(super::pool::item_failure(*e, index, span).into())
                                }
                                r => done.push((index, r)),
                            }
                        }
                    }
                }
                Err(()) => dead.push(k),
            }
        }
        for k in dead.into_iter().rev() {
            let w = pool.workers.remove(k);
            let status = pool.server.wait_status(w.pid, Duration::from_secs(1)).unwrap_or(ExitStatus::Signal(9));
            interp.shared.release_process();
            let mut queued = w.queued;
            let (first, len) = queued.pop_front().unwrap_or((0, 0));
            // Chunks it had not begun go back to the queue for the others.
            while let Some(c) = queued.pop_back() {
                todo.push_front(c);
            }
            let error = worker_died(w.pid, status, first, span);
            if !opts.collect_errors {
                return Err(error.into());
            }
            // Carrying on: the chunk's items fail, and a new worker takes the dead one's place.
            for i in first..first + len {
                done.push((i, Err(Box::new(error.clone()))));
            }
            pool.add_workers(interp, plan, 1)?;
        }
    }
    Ok(done)
}

/// Workers held to one CPU each until their first chunk has woken them there.
///
/// A worker waits for work asleep; when the first chunk wakes it, the scheduler tends to
/// place it by the waker's CPU, so two workers woken by one parent can start on one CPU and
/// share it for milliseconds while the other sits idle, until load balancing moves one.
/// Threads avoid this: a new thread goes to the idlest CPU. So each worker is allowed one CPU
/// (round robin over those it may use) while its first chunk wakes it, and all of them
/// again at once after: it starts where it was put, and the scheduler may move it later.
struct Placement(Vec<(nix::unistd::Pid, CpuSet)>);

fn place_on_cpus(workers: &[Worker]) -> Placement {
    let mut held = Vec::new();
    for (k, w) in workers.iter().enumerate() {
        let pid = nix::unistd::Pid::from_raw(w.pid);
        let Ok(allowed) = sched_getaffinity(pid) else { continue };
        let cpus: Vec<usize> = (0..CpuSet::count()).filter(|c| allowed.is_set(*c).unwrap_or(false)).collect();
        if cpus.len() < 2 {
            continue;
        }
        let mut one = CpuSet::new();
        if one.set(cpus[k % cpus.len()]).is_ok() && sched_setaffinity(pid, &one).is_ok() {
            held.push((pid, allowed));
        }
    }
    Placement(held)
}

impl Drop for Placement {
    fn drop(&mut self) {
        for (pid, allowed) in &self.0 {
            let _ = sched_setaffinity(*pid, allowed);
        }
    }
}

/// Give every idle worker a chunk, then, while more chunks are left than there are
/// workers, a second one to each.
fn hand_out(workers: &mut [Worker], todo: &mut VecDeque<(usize, usize)>, wires: &[Wire]) {
    let count = workers.len();
    for depth in 1..=DEPTH {
        for w in workers.iter_mut().filter(|w| w.queued.len() < depth) {
            if depth > 1 && todo.len() <= count {
                return;
            }
            let Some((first, len)) = todo.pop_front() else { return };
            w.queued.push_back((first, len));
            let batch = encode(&BatchRef::Batch { first: first as u64, items: &wires[first..first + len] });
            // A worker that died is found by the read in `run`; its chunks are then accounted for.
            let _ = send_blocking(&w.sock, &batch);
        }
    }
}

fn worker_died(pid: i32, status: ExitStatus, item: usize, span: Span) -> RuntimeError {
    RuntimeError::new(
        ErrorKind::Task,
        format!("worker pid {pid} {} while running item {item}", status.describe()),
        span,
    )
    .with_label("in this pool")
    .with_help("the other workers were stopped; pass `errors: \"collect\"` to carry on with a new worker")
}

/// Write a whole frame to a non-blocking socket, waiting while its buffer is full.
fn send_blocking(sock: &UnixStream, payload: &[u8]) -> std::io::Result<()> {
    sock.set_nonblocking(false)?;
    let r = ipc::send(sock, payload, &[]);
    sock.set_nonblocking(true)?;
    r
}

/// Which workers have something to read (or have gone), waiting a slice at most.
fn poll_workers(workers: &[Worker]) -> Vec<usize> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds: Vec<PollFd> = workers.iter().map(|w| PollFd::new(w.sock.as_fd(), PollFlags::POLLIN)).collect();
    if poll(&mut fds, PollTimeout::from(20u16)).is_err() {
        return Vec::new();
    }
    fds.iter().enumerate().filter(|(_, f)| f.revents().is_some_and(|r| !r.is_empty())).map(|(i, _)| i).collect()
}

/// The result batches that have arrived; `Err` when the worker is gone.
fn read_results(w: &mut Worker) -> Result<Vec<FromWorker>, ()> {
    let mut out = Vec::new();
    loop {
        match w.frames.fill(&w.sock) {
            Ok(true) => {
                while let Some(frame) = w.frames.next_frame() {
                    out.push(decode::<FromWorker>(frame).map_err(|_| ())?);
                }
            }
            Ok(false) => return if out.is_empty() { Err(()) } else { Ok(out) },
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(out),
            Err(_) => return Err(()),
        }
    }
}
