//! A started pipeline: its processes and the pipe ends conc holds. One `poll` loop drains
//! every output, feeds input and notices each exit (through a pidfd per child), so no full
//! pipe can deadlock a command and no thread is needed per child.

use super::spec::Plan;
use crate::error::{ErrorKind, RuntimeError};
use crate::interp::Shared;
use crate::value::Value;
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a command gets to exit after SIGTERM before it is killed.
pub const GRACE: Duration = Duration::from_millis(500);
/// Without pidfds (an old kernel), exits are noticed by polling this often.
const FALLBACK_TICK: Duration = Duration::from_millis(2);
/// Read at most this much from one pipe per step, so one chatty stream cannot starve the others.
const READ_BUDGET: usize = 1 << 20;
/// Lines of a failed command's stderr quoted in its error.
const TAIL_LINES: usize = 5;

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Code(i32),
    Signal(i32),
}

impl Status {
    fn describe(self) -> String {
        match self {
            Status::Code(c) => format!("exited with status {c}"),
            Status::Signal(s) => format!("was killed by {}", signal_name(s)),
        }
    }
}

pub fn signal_name(sig: i32) -> String {
    Signal::try_from(sig).map_or_else(|_| format!("signal {sig}"), |s| s.as_str().to_string())
}

/// The processes of one pipeline. Shared with a background task's handle, so `kill` and
/// reaping take the same lock and a signal never reaches a reused pid.
#[derive(Default)]
pub struct Procs(Mutex<ProcState>);

#[derive(Default)]
pub struct ProcState {
    pub pids: Vec<i32>,
    pub status: Vec<Option<Status>>,
    /// The pipeline's own process group, when it has one.
    pub pgid: Option<i32>,
}

impl Procs {
    pub fn lock(&self) -> MutexGuard<'_, ProcState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Signal every process still running: the whole process group, grandchildren too, when
    /// the pipeline has one.
    pub fn signal(&self, sig: Signal) -> Result<(), String> {
        let st = self.lock();
        if st.status.iter().all(Option::is_some) {
            return Ok(());
        }
        if let Some(g) = st.pgid {
            return killpg(Pid::from_raw(g), sig).map_err(|e| format!("cannot signal the command: {e}"));
        }
        for (pid, s) in st.pids.iter().zip(&st.status) {
            if s.is_none() {
                let _ = kill(Pid::from_raw(*pid), sig);
            }
        }
        Ok(())
    }

    /// Collect stage `i`'s exit status if it has one; with `block`, wait for it.
    pub fn reap(&self, i: usize, block: bool) -> bool {
        let mut st = self.lock();
        if st.status[i].is_some() {
            return true;
        }
        let pid = st.pids[i];
        if st.pgid.is_none() && !crate::runtime::guardian::forget_exited(pid, block) {
            return false;
        }
        let flags = if block { None } else { Some(WaitPidFlag::WNOHANG) };
        let status = loop {
            match waitpid(Pid::from_raw(pid), flags) {
                Ok(WaitStatus::Exited(_, code)) => break Status::Code(code),
                Ok(WaitStatus::Signaled(_, sig, _)) => break Status::Signal(sig as i32),
                Err(nix::errno::Errno::EINTR) => continue,
                // Reaped by someone else (a host calling waitpid(-1)): its status is lost.
                Err(nix::errno::Errno::ECHILD) => break Status::Code(-1),
                _ => return false,
            }
        };
        st.status[i] = Some(status);
        crate::runtime::untrack_child(pid);
        true
    }

    pub fn all_exited(&self) -> bool {
        self.lock().status.iter().all(Option::is_some)
    }
}

/// Where bytes read from a child go.
pub enum Dest {
    Capture(Vec<u8>),
    /// conc's own stdout or stderr when it is not a file descriptor (an embedder's buffer):
    /// written as text, a split UTF-8 sequence kept back for the next read.
    Sink {
        to_stderr: bool,
        pending: Vec<u8>,
    },
    /// The stdout a script reads line by line, into [`Running::lines`].
    Lines,
}

pub struct Stream {
    pub file: File,
    pub stage: usize,
    pub is_stderr: bool,
    pub dest: Dest,
    pub open: bool,
    /// conc's copy of the child's end, kept while the stage runs (see `spawn::out_end`).
    pub held: Option<OwnedFd>,
}

/// Bytes to write to a stage's stdin.
pub struct Feed {
    pub file: File,
    pub data: Arc<[u8]>,
    pub at: usize,
    pub finished: bool,
}

/// A thread copying a channel into a stdin pipe.
pub struct Feeder {
    pub stop: Arc<AtomicBool>,
    pub handle: JoinHandle<()>,
}

/// Output waiting to be read a line at a time. Where the next `\n` is, is kept, so each
/// byte is searched once however the output is split into reads.
#[derive(Default)]
pub struct LineBuf {
    buf: Vec<u8>,
    pos: usize,
    newline: Option<usize>,
    /// No more will come.
    pub ended: bool,
}

impl LineBuf {
    fn push(&mut self, bytes: &[u8]) {
        if self.newline.is_none() {
            self.newline = bytes.iter().position(|b| *b == b'\n').map(|i| self.buf.len() + i);
        }
        self.buf.extend_from_slice(bytes);
    }

    fn has_line(&self) -> bool {
        self.newline.is_some()
    }

    /// The next whole line without its `\n`; once the output has ended, also a last line
    /// that has no `\n`.
    pub fn next_line(&mut self) -> Option<Vec<u8>> {
        let line = match self.newline {
            Some(nl) => {
                let line = self.buf[self.pos..nl].to_vec();
                self.pos = nl + 1;
                self.newline = self.buf[self.pos..].iter().position(|b| *b == b'\n').map(|i| self.pos + i);
                line
            }
            None if self.ended && self.pos < self.buf.len() => {
                let line = self.buf[self.pos..].to_vec();
                self.pos = self.buf.len();
                line
            }
            None => return None,
        };
        if self.pos > 64 * 1024 && self.pos * 2 > self.buf.len() {
            self.buf.drain(..self.pos);
            self.newline = self.newline.map(|nl| nl - self.pos);
            self.pos = 0;
        }
        Some(line)
    }
}

pub struct Running {
    pub plan: Plan,
    pub procs: Arc<Procs>,
    pub pidfds: Vec<Option<OwnedFd>>,
    pub streams: Vec<Stream>,
    pub feeds: Vec<Feed>,
    pub feeders: Vec<Feeder>,
    pub shared: Arc<Shared>,
    pub started: Instant,
    pub lines: LineBuf,
    finished: Option<Instant>,
    /// Captured output by stage, once the streams are closed.
    captured: Vec<Captured>,
}

/// One stage's captured stdout and stderr; `None` where a stream was not captured.
#[derive(Default)]
struct Captured {
    stdout: Option<Vec<u8>>,
    stderr: Option<Vec<u8>>,
}

enum Event {
    Stream(usize),
    Feed(usize),
    Exit(usize),
}

impl Running {
    pub fn new(plan: Plan, procs: Arc<Procs>, shared: Arc<Shared>) -> Running {
        let n = plan.stages.len();
        Running {
            plan,
            procs,
            pidfds: Vec::with_capacity(n),
            streams: Vec::with_capacity(2 * n),
            feeds: Vec::new(),
            feeders: Vec::new(),
            shared,
            started: Instant::now(),
            lines: LineBuf::default(),
            finished: None,
            captured: (0..n).map(|_| Captured::default()).collect(),
        }
    }

    /// Close conc's copies of stage `i`'s output pipes, so they end when the last writer
    /// (a grandchild, say) closes them.
    pub fn release_held(&mut self, i: usize) {
        for s in self.streams.iter_mut().filter(|s| s.stage == i) {
            s.held = None;
        }
    }

    /// Everything is reaped and closed.
    pub fn is_done(&self) -> bool {
        self.finished.is_some()
    }

    /// Wait up to `timeout` for something to happen and deal with it. True once every stage
    /// has exited and everything is cleaned up.
    pub fn step(&mut self, timeout: Duration) -> bool {
        if self.is_done() {
            return true;
        }
        if !self.procs.all_exited() {
            self.turn(timeout);
        }
        if self.procs.all_exited() {
            self.wind_up(false);
        }
        self.is_done()
    }

    /// One turn of the loop: wait for output, room for input, or an exit, and handle them.
    fn turn(&mut self, timeout: Duration) {
        for ev in self.poll(timeout) {
            match ev {
                Event::Stream(k) => self.read(k, false),
                Event::Feed(k) => self.write_feed(k),
                Event::Exit(i) => {
                    if self.procs.reap(i, false) {
                        self.pidfds[i] = None;
                        self.release_held(i);
                    }
                }
            }
        }
        // Closing our end of a finished input is the command's end of file.
        self.feeds.retain(|f| !f.finished);
        if self.pidfds.iter().all(Option::is_none) {
            for i in 0..self.plan.stages.len() {
                self.procs.reap(i, false);
            }
        }
    }

    fn poll(&self, timeout: Duration) -> Vec<Event> {
        let mut fds = Vec::with_capacity(self.streams.len() + self.pidfds.len() + self.feeds.len());
        let mut what = Vec::with_capacity(fds.capacity());
        for (k, s) in self.streams.iter().enumerate() {
            if s.open && !self.paused(s) {
                fds.push(PollFd::new(&s.file, PollFlags::IN));
                what.push(Event::Stream(k));
            }
        }
        for (k, f) in self.feeds.iter().enumerate() {
            fds.push(PollFd::new(&f.file, PollFlags::OUT));
            what.push(Event::Feed(k));
        }
        let mut watching_exits = false;
        for (i, p) in self.pidfds.iter().enumerate() {
            if let Some(fd) = p {
                fds.push(PollFd::new(fd, PollFlags::IN));
                what.push(Event::Exit(i));
                watching_exits = true;
            }
        }
        let timeout = if watching_exits { timeout } else { timeout.min(FALLBACK_TICK) };
        let ts = Timespec { tv_sec: timeout.as_secs() as i64, tv_nsec: timeout.subsec_nanos() as i64 };
        match poll(&mut fds, Some(&ts)) {
            Ok(n) if n > 0 => fds.iter().zip(what).filter(|(f, _)| !f.revents().is_empty()).map(|(_, w)| w).collect(),
            _ => Vec::new(),
        }
    }

    /// A line reader that has not taken the last line yet leaves the pipe alone, so a fast
    /// writer waits for a slow reader instead of filling memory.
    fn paused(&self, s: &Stream) -> bool {
        matches!(s.dest, Dest::Lines) && self.lines.has_line()
    }

    /// Read what pipe `k` has (up to the budget), without blocking; `everything` reads past
    /// a paused line reader.
    fn read(&mut self, k: usize, everything: bool) {
        // One buffer per thread, so a read does not clear 64 KiB of stack first.
        thread_local! {
            static CHUNK: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 64 * 1024]);
        }
        CHUNK.with(|c| self.read_into(k, everything, &mut c.borrow_mut()));
    }

    fn read_into(&mut self, k: usize, everything: bool, chunk: &mut [u8]) {
        let mut budget = READ_BUDGET;
        while budget > 0 && self.streams[k].open && (everything || !self.paused(&self.streams[k])) {
            let s = &mut self.streams[k];
            match s.file.read(chunk) {
                Ok(0) => {
                    s.open = false;
                    self.flush_sink(k);
                }
                Ok(n) => {
                    budget -= n.min(budget);
                    let bytes = &chunk[..n];
                    match &mut self.streams[k].dest {
                        Dest::Capture(buf) => buf.extend_from_slice(bytes),
                        Dest::Lines => self.lines.push(bytes),
                        Dest::Sink { to_stderr, pending } => {
                            pending.extend_from_slice(bytes);
                            write_text(&self.shared, pending, *to_stderr);
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => s.open = false,
            }
        }
    }

    fn flush_sink(&mut self, k: usize) {
        if let Dest::Sink { to_stderr, pending } = &mut self.streams[k].dest {
            if !pending.is_empty() {
                self.shared.output.write(&String::from_utf8_lossy(pending), *to_stderr);
                pending.clear();
            }
        }
    }

    fn write_feed(&mut self, k: usize) {
        let f = &mut self.feeds[k];
        f.finished = loop {
            if f.at >= f.data.len() {
                break true;
            }
            match f.file.write(&f.data[f.at..]) {
                Ok(n) => f.at += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
                // The command stopped reading (EPIPE): the rest of the input is not wanted.
                Err(_) => break true,
            }
        };
    }

    /// Every stage has exited: take what is left in the pipes and close them, stop the input,
    /// and clear out whatever the commands left running in their process group.
    fn wind_up(&mut self, killing: bool) {
        if self.is_done() {
            return;
        }
        // A pipe may still be held open by a grandchild, which may even keep writing: take
        // what the stages left in it, never wait for an end of file that may not come.
        for k in 0..self.streams.len() {
            self.read(k, true);
            self.flush_sink(k);
        }
        self.lines.ended = true;
        self.feeds.clear();
        self.clear_group(killing);
        crate::runtime::guardian::forget_group(self.procs.lock().pgid);
        for f in std::mem::take(&mut self.feeders) {
            f.stop.store(true, Ordering::SeqCst);
            let _ = f.handle.join();
        }
        for s in std::mem::take(&mut self.streams) {
            if let Dest::Capture(buf) = s.dest {
                let slot = &mut self.captured[s.stage];
                let target = if s.is_stderr { &mut slot.stderr } else { &mut slot.stdout };
                match target {
                    Some(earlier) => earlier.extend_from_slice(&buf),
                    None => *target = Some(buf),
                }
            }
        }
        self.pidfds.clear();
        self.shared.release_subprocesses(self.plan.stages.len());
        self.finished = Some(Instant::now());
    }

    /// Anything still in the pipeline's process group once its stages are gone was started
    /// by them and would be orphaned: ask it to stop, then kill it.
    fn clear_group(&self, killing: bool) {
        let Some(g) = self.procs.lock().pgid else { return };
        let group = Pid::from_raw(g);
        if killing {
            let _ = killpg(group, Signal::SIGKILL);
            return;
        }
        if killpg(group, Signal::SIGTERM).is_err() {
            return;
        }
        let deadline = Instant::now() + GRACE;
        while Instant::now() < deadline {
            if killpg(group, None).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = killpg(group, Signal::SIGKILL);
    }

    /// Kill at once what has started and reap it: the rest of a pipeline could not start,
    /// or the grace period is over.
    pub fn abort(&mut self) {
        let _ = self.procs.signal(Signal::SIGKILL);
        let started = self.procs.lock().pids.len();
        for i in 0..started {
            self.procs.reap(i, true);
        }
        self.wind_up(true);
    }

    /// Stop the pipeline (cancelled, or out of time): SIGTERM to its process group, SIGKILL
    /// after the grace period, and reap everything.
    pub fn terminate(&mut self) {
        if self.is_done() {
            return;
        }
        let _ = self.procs.signal(Signal::SIGTERM);
        let deadline = Instant::now() + GRACE;
        while !self.procs.all_exited() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            self.turn((deadline - now).min(Duration::from_millis(20)));
        }
        self.abort();
    }

    fn text(&self, bytes: Option<&Vec<u8>>) -> Value {
        match bytes {
            None => Value::Nil,
            Some(b) if self.plan.binary => Value::Bytes(Arc::new(b.clone())),
            Some(b) => Value::str(String::from_utf8_lossy(b)),
        }
    }

    /// A line of output as the script sees it.
    pub fn line_value(&self, line: Vec<u8>) -> Value {
        if self.plan.binary {
            Value::Bytes(Arc::new(line))
        } else {
            Value::str(String::from_utf8_lossy(&line))
        }
    }

    fn statuses(&self) -> Vec<Status> {
        self.procs.lock().status.iter().map(|s| s.unwrap_or(Status::Code(-1))).collect()
    }

    /// The stage whose status is the pipeline's, as with `pipefail`: the rightmost failing
    /// stage, checked stages first. A stage other than the last that died of SIGPIPE only
    /// saw its reader stop reading, which is not a failure.
    fn deciding_stage(&self, status: &[Status]) -> Option<usize> {
        let n = status.len();
        let failed = |i: usize| match status[i] {
            Status::Code(0) => false,
            Status::Signal(s) if s == Signal::SIGPIPE as i32 && i + 1 < n => false,
            _ => true,
        };
        let checked = |i: usize| !self.plan.stages[i].unchecked;
        (0..n).rev().find(|&i| failed(i) && checked(i)).or_else(|| (0..n).rev().find(|&i| failed(i)))
    }

    /// The result map, and the error to raise if a checked stage failed.
    pub fn outcome(&self) -> (Value, Option<RuntimeError>) {
        let status = self.statuses();
        let n = status.len();
        let decider = self.deciding_stage(&status);
        let shown = decider.map_or(status[n - 1], |i| status[i]);
        let stderr: Option<Vec<u8>> = self.captured.iter().filter_map(|c| c.stderr.clone()).reduce(|mut a, b| {
            a.extend_from_slice(&b);
            a
        });
        let duration = self.finished.unwrap_or_else(Instant::now) - self.started;
        let mut fields = vec![("cmd", Value::str(&self.plan.line))];
        fields.extend(status_fields(shown));
        fields.push(("stdout", self.text(self.captured[n - 1].stdout.as_ref())));
        fields.push(("stderr", self.text(stderr.as_ref())));
        fields.push(("duration", Value::Float(duration.as_secs_f64())));
        if n > 1 {
            let stages = (0..n).map(|i| {
                let mut f = vec![("cmd", Value::str(&self.plan.stages[i].line))];
                f.extend(status_fields(status[i]));
                f.push(("stderr", self.text(self.captured[i].stderr.as_ref())));
                Value::map(f)
            });
            fields.push(("stages", Value::list(stages.collect())));
        }
        let result = Value::map(fields);
        let error = decider.filter(|&i| !self.plan.stages[i].unchecked).map(|i| self.failure(i, status[i], &result));
        (result, error)
    }

    fn failure(&self, i: usize, status: Status, result: &Value) -> RuntimeError {
        let n = self.plan.stages.len();
        let stage = &self.plan.stages[i];
        let which = if n > 1 { format!(" (stage {} of {n})", i + 1) } else { String::new() };
        let mut help = String::new();
        if let Some(tail) = self.captured[i].stderr.as_deref().and_then(tail_of) {
            help.push_str(&format!("its stderr ended with:\n{tail}\n"));
        }
        help.push_str("pass `unchecked: true` in its options to get the result instead of an error");
        RuntimeError::new(ErrorKind::Command, format!("`{}`{which} {}", stage.line, status.describe()), stage.call)
            .with_label("this command failed")
            .with_help(help)
            .with_data(result.clone())
    }
}

fn status_fields(s: Status) -> [(&'static str, Value); 3] {
    match s {
        Status::Code(c) => [("code", Value::Int(c as i64)), ("signal", Value::Nil), ("ok", Value::Bool(c == 0))],
        Status::Signal(sig) => {
            [("code", Value::Nil), ("signal", Value::str(signal_name(sig))), ("ok", Value::Bool(false))]
        }
    }
}

/// The last few lines of a stderr, indented, each cut to a readable length.
fn tail_of(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return None;
    }
    let shown = lines[lines.len().saturating_sub(TAIL_LINES)..].iter().map(|l| {
        let cut: String = l.chars().take(200).collect();
        format!("    {cut}")
    });
    Some(shown.collect::<Vec<_>>().join("\n"))
}

/// Write the valid UTF-8 prefix of `pending` to a sink, keeping an incomplete sequence at the end.
fn write_text(shared: &Shared, pending: &mut Vec<u8>, to_stderr: bool) {
    let upto = match std::str::from_utf8(pending) {
        Ok(_) => pending.len(),
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        // Not UTF-8 at all: pass it on as well as text can carry it.
        Err(_) => pending.len(),
    };
    if upto > 0 {
        shared.output.write(&String::from_utf8_lossy(&pending[..upto]), to_stderr);
        pending.drain(..upto);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.terminate();
    }
}
