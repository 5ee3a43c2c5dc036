//! The conc side of the process server (see `zygote.rs`): starting it, asking it for
//! children, and one reactor thread that collects every forked child's outcome and exit
//! status and completes its task. Process-pool workers use the same requests but talk to
//! their workers themselves.

use super::ipc::{self, Reassembler};
use super::portable::{decode, encode, Importer};
use super::task::{Drive, Task, TaskExtra, TaskResult};
use super::zygote::{ExitStatus, FromServer, Job, Outcome, SpareJobRef, ToServer, SERVER_ENV};
use crate::error::{ErrorKind, RuntimeError};
use crate::interp::{Interp, Shared, R};
use crate::syntax::Span;
use crate::value::Value;
use crossbeam_channel::{bounded, Sender};
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a cancelled process has after SIGTERM before it gets SIGKILL.
pub const GRACE: Duration = Duration::from_millis(500);

pub struct Server {
    ctl: UnixStream,
    /// Held while a request is written, so frames never interleave; remembers how much of
    /// each world's replay log the server has.
    sent: Mutex<HashMap<u64, usize>>,
    waiting: Mutex<HashMap<u64, Sender<Result<i32, String>>>>,
    /// Recent exits by pid, kept for a while after their task is done (a broker asks why a
    /// peer died), oldest first.
    statuses: Mutex<indexmap::IndexMap<i32, ExitStatus>>,
    status_changed: Condvar,
    watches: Mutex<Vec<Watch>>,
    wake: (OwnedFd, OwnedFd),
    next_req: AtomicU64,
    /// The server process, when this process started it (the root of a process tree).
    process: Mutex<Option<std::process::Child>>,
    spares: Mutex<Spares>,
    spare_came: Condvar,
}

/// Children the server forked in advance and handed over, so a `fork` gives its job
/// straight to one of them: one wake-up on the way instead of two, and the pid is known at once.
#[derive(Default)]
struct Spares {
    held: Vec<HeldSpare>,
    /// Asked for and not yet here.
    asked: usize,
    /// World messages sent so far: a spare forked before the latest one lacks its compiles.
    epoch: u64,
}

struct HeldSpare {
    pid: i32,
    sock: UnixStream,
    epoch: u64,
}

/// Spares held or on their way. Two keep one at hand in a `fork` loop while the server
/// forks the next; more would only sit idle.
const SPARES: usize = 2;
/// How long a `fork` waits for a spare already on its way before it asks the server
/// instead (which is slower: the server has to fork or hand over its own).
const SPARE_WAIT: Duration = Duration::from_millis(50);

/// A forked child whose outcome the reactor is collecting, then whose exit it waits for.
/// A child asked for and not yet confirmed: see [`Server::begin_start`].
pub struct PendingStart {
    req: u64,
    reply: crossbeam_channel::Receiver<Result<i32, String>>,
    /// Set when a held spare took the job: no reply is coming.
    taken: Option<i32>,
    sock: UnixStream,
}

/// A job on its way to a child: the child's pid when a held spare took it, and this side
/// of the socket the child reports on.
struct Handed {
    pid: Option<i32>,
    sock: UnixStream,
}

struct Watch {
    /// The child's output on its way to a host's sink; the task completes once it is all there.
    output: super::pump::ChildOutput,
    req: u64,
    pid: Option<i32>,
    sock: Arc<UnixStream>,
    frames: Reassembler,
    outcome: Option<Result<Outcome, String>>,
    eof: bool,
    /// Until the task is completed.
    task: Option<Arc<Task>>,
    info: Arc<ProcessInfo>,
    shared: Arc<Shared>,
    term_sent: Option<Instant>,
    /// Threads in `wait` reading the socket themselves; the reactor leaves it to them.
    waiters: Arc<AtomicUsize>,
}

impl Watch {
    fn reading(&self) -> bool {
        self.outcome.is_none() && !self.eof
    }
}

/// `wait` on a forked task reads its result socket itself (see [`Drive`]).
pub struct ProcessDriver {
    server: Arc<Server>,
    req: u64,
    /// Weak: the socket closes when the reactor is done with the child, however long the
    /// script keeps the task.
    sock: std::sync::Weak<UnixStream>,
    waiters: Arc<AtomicUsize>,
}

impl Drive for ProcessDriver {
    fn drive(&self, slice: Duration) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let reading = |me: &Self| {
            let watches = me.server.watches.lock().unwrap_or_else(|e| e.into_inner());
            watches.iter().find(|w| w.req == me.req).is_some_and(|w| w.task.is_some() && w.pid.is_some() && w.reading())
        };
        let Some(sock) = self.sock.upgrade() else { return false };
        if !reading(self) {
            return false;
        }
        // A zero slice only looks: the socket is non-blocking, and the reactor keeps it.
        let ready = slice.is_zero() || {
            self.waiters.fetch_add(1, Ordering::SeqCst);
            let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
            let ms = slice.as_millis().clamp(1, u128::from(u16::MAX)) as u16;
            let ready = matches!(poll(&mut fds, PollTimeout::from(ms)), Ok(n) if n > 0);
            if self.waiters.fetch_sub(1, Ordering::SeqCst) == 1 && !ready {
                // Giving up for now: the reactor takes the socket back.
                self.server.poke();
            }
            ready
        };
        if ready {
            let mut watches = self.server.watches.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(w) = watches.iter_mut().find(|w| w.req == self.req) {
                w.read();
                if w.outcome.is_some() {
                    w.advance(None);
                } else if !w.reading() {
                    // The child died without an outcome: its exit status comes to the reactor.
                    drop(watches);
                    self.server.poke();
                    return false;
                }
            }
        }
        true
    }
}

static SERVER: OnceLock<Result<Arc<Server>, String>> = OnceLock::new();

/// The process server, started on first use.
pub fn server(span: Span) -> R<Arc<Server>> {
    match SERVER.get_or_init(|| Server::connect().map(Arc::new)) {
        Ok(s) => Ok(s.clone()),
        Err(e) => Err(RuntimeError::new(ErrorKind::Io, format!("cannot start processes: {e}"), span)
            .with_label("this needs the process server")
            .into()),
    }
}

/// The server if it was ever started.
pub fn running() -> Option<Arc<Server>> {
    SERVER.get().and_then(|r| r.as_ref().ok()).cloned()
}

/// Before the process exits: let the server go (it kills anything left) and reap it.
pub fn shutdown() {
    if let Some(s) = running() {
        let _ = s.ctl.shutdown(std::net::Shutdown::Both);
        if let Some(mut child) = s.process.lock().unwrap_or_else(|e| e.into_inner()).take() {
            // It exits as soon as it sees the socket close; if it does not, it is killed.
            let deadline = Instant::now() + Duration::from_secs(2);
            await_exit(&child, deadline);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Sleep until `child` exits or `deadline` passes, woken by its pidfd rather than polling
/// (the exit of every run that forked would otherwise wait out a polling interval).
fn await_exit(child: &std::process::Child, deadline: Instant) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let Some(pidfd) = rustix::process::Pid::from_raw(child.id() as i32)
        .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok())
    else {
        return;
    };
    let ms = deadline.saturating_duration_since(Instant::now()).as_millis().min(u128::from(u16::MAX)) as u16;
    let _ = poll(&mut [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)], PollTimeout::from(ms));
}

/// SIGKILL every forked child still running: the last resort of a hard exit.
pub fn kill_all() {
    for pid in live_pids() {
        signal(pid, nix::sys::signal::Signal::SIGKILL);
    }
}

/// Every forked child still running, for Ctrl-C and for a hard exit.
pub fn live_pids() -> Vec<i32> {
    match running() {
        Some(s) => s.watches.lock().unwrap_or_else(|e| e.into_inner()).iter().filter_map(|w| w.pid).collect(),
        None => Vec::new(),
    }
}

fn server_binary() -> Result<std::path::PathBuf, String> {
    if let Some(p) = std::env::var_os("CONC_EXE") {
        return Ok(p.into());
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the conc binary: {e}"))?;
    let is_conc = exe.file_name().and_then(|n| n.to_str()).is_some_and(|n| n == "conc" || n.starts_with("conc-"));
    if is_conc || super::zygote::host_serves() {
        Ok(exe)
    } else {
        Err(format!(
            "processes are served by the conc binary, and this program ({}) is not it: call `conc::serve_processes()` first thing in its `main`, or set CONC_EXE to the path of `conc`",
            exe.display()
        ))
    }
}

impl Server {
    fn connect() -> Result<Server, String> {
        let (ctl, process) = match super::zygote::server_address() {
            // A forked child asks the server that made it.
            Some((name, _)) => {
                (super::zygote::connect(name).map_err(|e| format!("cannot reach the process server: {e}"))?, None)
            }
            None => {
                let (mine, theirs) = ipc::pair().map_err(|e| e.to_string())?;
                let child = std::process::Command::new(server_binary()?)
                    .env(SERVER_ENV, "1")
                    .stdin(std::process::Stdio::from(OwnedFd::from(theirs)))
                    .spawn()
                    .map_err(|e| format!("cannot start the process server: {e}"))?;
                (mine, Some(child))
            }
        };
        let wake = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
            .map_err(|e| e.to_string())?;
        let server = Server {
            ctl,
            sent: Mutex::new(HashMap::new()),
            waiting: Mutex::new(HashMap::new()),
            statuses: Mutex::new(indexmap::IndexMap::new()),
            status_changed: Condvar::new(),
            watches: Mutex::new(Vec::new()),
            wake,
            next_req: AtomicU64::new(1),
            process: Mutex::new(process),
            spares: Mutex::new(Spares::default()),
            spare_came: Condvar::new(),
        };
        Ok(server)
    }

    fn ensure_reactor(self: &Arc<Self>) {
        static STARTED: OnceLock<()> = OnceLock::new();
        STARTED.get_or_init(|| {
            let me = self.clone();
            std::thread::Builder::new()
                .name("conc-reactor".into())
                .spawn(move || me.react())
                .expect("the process reactor thread starts");
        });
    }

    /// Start a child that runs `job`. A held spare takes it, and reports on the socket it
    /// was handed over with; otherwise the server is asked, with a new socket, and its reply
    /// comes to the reactor under request number `req`. With `refill`, the spare used is
    /// replaced at once.
    #[allow(clippy::too_many_arguments)]
    fn request(
        &self,
        req: u64,
        interp: &Interp,
        name: &str,
        span: Span,
        job: Job,
        output: [std::os::fd::RawFd; 2],
        refill: bool,
    ) -> R<Handed> {
        let shared = &interp.shared;
        let io = |e: std::io::Error| -> crate::interp::Unwind {
            RuntimeError::new(ErrorKind::Io, format!("the process server is gone: {e}"), span).into()
        };
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        self.sync_world(&mut sent, shared).map_err(io)?;
        let spare_job = SpareJobRef { world: shared.world_id, engine: interp.engine_id, name, span, job: &job };
        let taken = self.hand_to_spare(&encode(&spare_job), &[0, output[0], output[1]]);
        if refill {
            self.ask_for_spares();
        }
        if let Some((pid, sock)) = taken {
            return Ok(Handed { pid: Some(pid), sock });
        }
        let (mine, theirs) = ipc::pair()
            .map_err(|e| RuntimeError::new(ErrorKind::Io, format!("cannot make a socket for a process: {e}"), span))?;
        let fds = [theirs.as_raw_fd(), 0, output[0], output[1]];
        let msg = ToServer::Start {
            req,
            world: shared.world_id,
            engine: interp.engine_id,
            name: name.to_string(),
            span,
            job,
        };
        ipc::send(&self.ctl, &encode(&msg), &fds).map_err(io)?;
        Ok(Handed { pid: None, sock: mine })
    }

    /// Give an encoded [`SpareJobRef`] to a held spare that knows the current world, with
    /// its stdin, stdout and stderr; its pid, and the socket it will report on.
    fn hand_to_spare(&self, job: &[u8], stdio: &[std::os::fd::RawFd; 3]) -> Option<(i32, UnixStream)> {
        let mut spares = self.spares.lock().unwrap_or_else(|e| e.into_inner());
        let epoch = spares.epoch;
        while let Some(spare) = spares.held.pop() {
            // A spare that has died (killed from outside) refuses the job; the next is tried.
            if spare.epoch == epoch && ipc::send(&spare.sock, job, stdio).is_ok() {
                return Some((spare.pid, spare.sock));
            }
        }
        None
    }

    /// When no spare is at hand but one is on its way, wait a little for it. Called with no
    /// lock held: the reactor takes the `watches` lock before it can pass a spare on.
    fn await_spare(&self) {
        let spares = self.spares.lock().unwrap_or_else(|e| e.into_inner());
        if spares.held.is_empty() && spares.asked > 0 {
            let _ = self
                .spare_came
                .wait_timeout_while(spares, SPARE_WAIT, |s| s.held.is_empty() && s.asked > 0)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Top the spares up after starts that left that for later.
    pub fn refill_spares(&self) {
        let _sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        self.ask_for_spares();
    }

    /// Top the spares up. Called with `sent` held, which orders writes to the server.
    fn ask_for_spares(&self) {
        let mut spares = self.spares.lock().unwrap_or_else(|e| e.into_inner());
        while spares.held.len() + spares.asked < SPARES {
            let msg = ToServer::WantSpare { epoch: spares.epoch };
            if ipc::send(&self.ctl, &encode(&msg), &[]).is_err() {
                return;
            }
            spares.asked += 1;
        }
    }

    /// A spare from the server. One forked before the latest world message is let go (it
    /// exits when its socket closes).
    fn spare_arrived(&self, pid: i32, epoch: u64, fds: Vec<OwnedFd>) {
        // An exit recorded for an earlier process with this pid is not this one's.
        self.statuses.lock().unwrap_or_else(|e| e.into_inner()).shift_remove(&pid);
        let mut spares = self.spares.lock().unwrap_or_else(|e| e.into_inner());
        spares.asked = spares.asked.saturating_sub(1);
        if let (Some(fd), true) = (fds.into_iter().next(), epoch == spares.epoch) {
            spares.held.push(HeldSpare { pid, sock: UnixStream::from(fd), epoch });
        }
        self.spare_came.notify_all();
    }

    /// Start a child for `job` and wait until it runs; returns its pid and the socket it
    /// reports on.
    pub fn start(self: &Arc<Self>, interp: &Interp, name: &str, span: Span, job: Job) -> R<(i32, UnixStream)> {
        let pending = self.begin_start(interp, name, span, job, true)?;
        self.finish_start(interp, span, pending)
    }

    /// Ask for a child without waiting for it, so several can start at once; the reply is
    /// collected by [`Server::finish_start`].
    pub fn begin_start(
        self: &Arc<Self>,
        interp: &Interp,
        name: &str,
        span: Span,
        job: Job,
        refill: bool,
    ) -> R<PendingStart> {
        self.ensure_reactor();
        let (tx, rx) = bounded(1);
        // Registered before the request goes out, so the reply cannot arrive first.
        let req = self.next_req.fetch_add(1, Ordering::Relaxed);
        self.waiting.lock().unwrap_or_else(|e| e.into_inner()).insert(req, tx);
        // A pool worker's output is passed on as it comes; nothing waits for it to drain.
        let mut output = super::pump::ChildOutput::new(&interp.shared, || {}).map_err(|e| pipe_error(&e, span))?;
        // A held spare takes it if there is one; the server is not waited on for another,
        // so several workers still start at once.
        let sent = self.request(req, interp, name, span, job, output.fds(), refill);
        output.sent();
        match sent {
            Ok(Handed { pid: None, sock }) => Ok(PendingStart { req, reply: rx, taken: None, sock }),
            Ok(Handed { pid: Some(pid), sock }) => {
                self.waiting.lock().unwrap_or_else(|e| e.into_inner()).remove(&req);
                Ok(PendingStart { req, reply: rx, taken: Some(pid), sock })
            }
            Err(e) => {
                self.waiting.lock().unwrap_or_else(|e| e.into_inner()).remove(&req);
                Err(e)
            }
        }
    }

    /// Wait for the child asked for by [`Server::begin_start`]; returns its pid and the
    /// socket it reports on.
    pub fn finish_start(&self, interp: &Interp, span: Span, pending: PendingStart) -> R<(i32, UnixStream)> {
        let PendingStart { req, reply: rx, taken, sock } = pending;
        if let Some(pid) = taken {
            return Ok((pid, sock));
        }
        let reply = super::wait::block_on_external(interp, span, "the process server", None, |slice| {
            rx.recv_timeout(slice).ok()
        });
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                self.waiting.lock().unwrap_or_else(|e| e.into_inner()).remove(&req);
                return Err(e);
            }
        };
        reply.map(|pid| (pid, sock)).map_err(|reason| refused(&reason, span).into())
    }

    /// Start a child for `job` as a task: this returns at once, and the reactor completes
    /// the task with the child's outcome.
    pub fn spawn_task(
        self: &Arc<Self>,
        interp: &Interp,
        task: Arc<Task>,
        info: Arc<ProcessInfo>,
        job: Job,
    ) -> R<Arc<dyn Drive>> {
        self.ensure_reactor();
        let span = task.span;
        let req = self.next_req.fetch_add(1, Ordering::Relaxed);
        let me = self.clone();
        let mut output =
            super::pump::ChildOutput::new(&interp.shared, move || me.poke()).map_err(|e| pipe_error(&e, span))?;
        self.await_spare();
        // Held while the request goes out, so the reactor finds the watch for the reply.
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        let sent = self.request(req, interp, &task.name, span, job, output.fds(), true);
        output.sent();
        let Handed { pid, sock } = sent?;
        if let Some(pid) = pid {
            info.set_pid(pid);
        }
        let _ = sock.set_nonblocking(true);
        let sock = Arc::new(sock);
        let waiters = Arc::new(AtomicUsize::new(0));
        let driver: Arc<dyn Drive> = Arc::new(ProcessDriver {
            server: self.clone(),
            req,
            sock: Arc::downgrade(&sock),
            waiters: waiters.clone(),
        });
        watches.push(Watch {
            output,
            req,
            pid,
            sock,
            frames: Reassembler::default(),
            outcome: None,
            eof: false,
            task: Some(task),
            info,
            shared: interp.shared.clone(),
            term_sent: None,
            waiters,
        });
        drop(watches);
        // The reactor must poll the new socket in case nobody `wait`s on this task. After a
        // hand-over to a spare it wakes soon anyway, for the replacement spare the server sends.
        if pid.is_none() {
            self.poke();
        }
        Ok(driver)
    }

    /// Bring the server's copy of this world up to date.
    fn sync_world(&self, sent: &mut HashMap<u64, usize>, shared: &Shared) -> std::io::Result<()> {
        let log = shared.replay.lock().unwrap_or_else(|e| e.into_inner());
        let world = shared.world_id;
        let have = match sent.get(&world) {
            Some(n) => *n,
            None if super::zygote::server_address().is_some() => {
                // A forked child's world is the server's own copy, already complete.
                sent.insert(world, log.len());
                log.len()
            }
            None => {
                let msg = ToServer::World {
                    world,
                    capabilities: shared.settings.capabilities,
                    limits: shared.settings.limits,
                };
                self.new_epoch();
                ipc::send(&self.ctl, &encode(&msg), &[])?;
                0
            }
        };
        if have < log.len() {
            let msg = ToServer::Replay { world, entries: log[have..].to_vec() };
            self.new_epoch();
            ipc::send(&self.ctl, &encode(&msg), &[])?;
        }
        sent.insert(world, log.len());
        Ok(())
    }

    /// The server's worlds are about to change: spares forked until now are stale.
    fn new_epoch(&self) {
        let mut spares = self.spares.lock().unwrap_or_else(|e| e.into_inner());
        spares.epoch += 1;
        spares.held.clear();
    }

    fn poke(&self) {
        let _ = nix::unistd::write(self.wake.1.as_fd(), &[1]);
    }

    /// The exit status of a child, once the server has reaped it.
    pub fn status(&self, pid: i32) -> Option<ExitStatus> {
        self.statuses.lock().unwrap_or_else(|e| e.into_inner()).get(&pid).copied()
    }

    /// Wait up to `timeout` for a child's exit status.
    pub fn wait_status(&self, pid: i32, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let mut st = self.statuses.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(s) = st.get(&pid) {
                return Some(*s);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            st = self.status_changed.wait_timeout(st, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    fn react(self: Arc<Self>) {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut buf = Vec::new();
        loop {
            let ready: Vec<bool> = {
                let watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
                // Watches only grow while this thread sleeps (it alone removes them), so the
                // readiness list lines up with the first entries afterwards. A watch that
                // has its outcome only waits for the exit status, which comes on `ctl`.
                let socks: Vec<Option<Arc<UnixStream>>> = watches
                    .iter()
                    .map(|w| (w.reading() && w.waiters.load(Ordering::SeqCst) == 0).then(|| w.sock.clone()))
                    .collect();
                let stopping = watches.iter().any(|w| w.term_sent.is_some() || w.cancelled());
                drop(watches);
                let mut fds = vec![
                    PollFd::new(self.ctl.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.wake.0.as_fd(), PollFlags::POLLIN),
                ];
                let listening: Vec<usize> = (0..socks.len()).filter(|i| socks[*i].is_some()).collect();
                fds.extend(socks.iter().flatten().map(|s| PollFd::new(s.as_fd(), PollFlags::POLLIN)));
                let timeout = PollTimeout::from(if stopping { 20u16 } else { 100u16 });
                if let Err(e) = poll(&mut fds, timeout) {
                    if e != nix::errno::Errno::EINTR {
                        return;
                    }
                }
                let is_ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
                let mut ready = vec![is_ready(&fds[0]), is_ready(&fds[1])];
                ready.resize(2 + socks.len(), false);
                for (k, f) in listening.iter().zip(&fds[2..]) {
                    ready[2 + k] = is_ready(f);
                }
                ready
            };
            if ready[1] {
                let mut b = [0u8; 64];
                while matches!(nix::unistd::read(self.wake.0.as_raw_fd(), &mut b), Ok(n) if n > 0) {}
            }
            if ready[0] && !self.read_control(&mut buf) {
                self.server_gone();
                return;
            }
            let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
            for (w, r) in watches.iter_mut().zip(&ready[2..]) {
                if *r {
                    w.read();
                }
            }
            let statuses = self.statuses.lock().unwrap_or_else(|e| e.into_inner());
            watches.retain_mut(|w| {
                let status = w.pid.and_then(|p| statuses.get(&p).copied());
                if status.is_some() {
                    // Dead, but its socket may still hold the outcome: read until EOF.
                    w.read();
                }
                w.advance(status);
                if w.task.is_none() && status.is_some() {
                    return false;
                }
                w.enforce_cancel();
                true
            });
        }
    }

    /// One message from the server; `false` when it has gone.
    fn read_control(&self, buf: &mut Vec<u8>) -> bool {
        let fds = match ipc::recv(&self.ctl, buf) {
            Ok(Some(fds)) => fds,
            _ => return false,
        };
        match decode::<FromServer>(buf) {
            Ok(FromServer::Spare { pid, epoch }) => self.spare_arrived(pid, epoch, fds),
            Ok(FromServer::Started { req, pid }) => self.started(req, Ok(pid)),
            Ok(FromServer::Refused { req, reason }) => self.started(req, Err(reason)),
            Ok(FromServer::Exited { pid, status }) => {
                let mut statuses = self.statuses.lock().unwrap_or_else(|e| e.into_inner());
                // A pid is reused only after its entry is long gone from this window.
                if statuses.len() >= 4096 {
                    statuses.shift_remove_index(0);
                }
                statuses.shift_remove(&pid);
                statuses.insert(pid, status);
                drop(statuses);
                self.status_changed.notify_all();
            }
            Err(_) => return false,
        }
        true
    }

    fn started(&self, req: u64, r: Result<i32, String>) {
        if let Some(tx) = self.waiting.lock().unwrap_or_else(|e| e.into_inner()).remove(&req) {
            if let Ok(pid) = r {
                self.statuses.lock().unwrap_or_else(|e| e.into_inner()).shift_remove(&pid);
            }
            let _ = tx.send(r);
            return;
        }
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        let Some(k) = watches.iter().position(|w| w.req == req) else { return };
        match r {
            Ok(pid) => {
                // An exit recorded for an earlier process with this pid is not this one's.
                self.statuses.lock().unwrap_or_else(|e| e.into_inner()).shift_remove(&pid);
                watches[k].pid = Some(pid);
                watches[k].info.set_pid(pid);
            }
            Err(reason) => {
                let mut w = watches.remove(k);
                let span = w.task.as_ref().map(|t| t.span).unwrap_or_default();
                w.finish(Err(Arc::new(refused(&reason, span))));
                w.info.set_pid(0);
            }
        }
    }

    /// The server died: nothing it started can report any more.
    fn server_gone(&self) {
        for (_, tx) in self.waiting.lock().unwrap_or_else(|e| e.into_inner()).drain() {
            let _ = tx.send(Err("the process server exited".into()));
        }
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        for w in watches.iter_mut() {
            if w.pid.is_none() {
                let span = w.span();
                w.finish(Err(Arc::new(refused("the process server exited", span))));
                continue;
            }
            w.read();
            w.advance(Some(ExitStatus::Signal(9)));
        }
        watches.clear();
    }
}

fn pipe_error(e: &std::io::Error, span: Span) -> crate::interp::Unwind {
    RuntimeError::new(ErrorKind::Io, format!("cannot make a pipe for a process's output: {e}"), span).into()
}

fn refused(reason: &str, span: Span) -> RuntimeError {
    RuntimeError::new(ErrorKind::Io, format!("cannot start a process: {reason}"), span)
        .with_label("this process was not started")
}

impl Watch {
    fn read(&mut self) {
        if !self.reading() {
            return;
        }
        loop {
            match self.frames.fill(&*self.sock) {
                Ok(true) => {
                    if let Some(frame) = self.frames.next_frame() {
                        self.outcome = Some(decode::<Outcome>(frame));
                        return;
                    }
                }
                Ok(false) => {
                    self.eof = true;
                    return;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.eof = true;
                    return;
                }
            }
        }
    }

    /// A cancelled task's process gets SIGTERM, then SIGKILL after the grace period.
    fn enforce_cancel(&mut self) {
        let Some(pid) = self.pid else { return };
        if self.term_sent.is_none() && !self.cancelled() {
            return;
        }
        match self.term_sent {
            None => {
                signal(pid, nix::sys::signal::Signal::SIGTERM);
                self.term_sent = Some(Instant::now());
            }
            Some(t) if t.elapsed() >= GRACE => signal(pid, nix::sys::signal::Signal::SIGKILL),
            Some(_) => {}
        }
    }

    fn cancelled(&self) -> bool {
        self.task.as_ref().is_some_and(|t| t.cancel.is_cancelled())
    }

    /// Move on with what is known: complete the task once its outcome (or its death) is
    /// known, and record the exit status once the server reports it.
    fn advance(&mut self, status: Option<ExitStatus>) {
        // The outcome can overtake the server's report of the pid; errors name the pid, and
        // the handle's fields must be complete when `wait` returns, so completion waits for it.
        if self.task.is_some() && self.pid.is_some() && self.output.drained() {
            let result = match (self.outcome.take(), status) {
                (Some(outcome), _) => Some(self.result_of(outcome)),
                (None, Some(s)) if self.eof => Some(self.death(s)),
                _ => None,
            };
            if let Some(r) = result {
                self.finish(r);
            }
        }
        if let (None, Some(s)) = (&self.task, status) {
            self.info.exited(s);
        }
    }

    fn finish(&mut self, result: TaskResult) {
        if let Some(task) = self.task.take() {
            // The slot goes back once the task is done with its process (before `wait` can
            // return), not later when the server reaps it: `wait fork` in a loop stays
            // within a limit of 1.
            self.shared.release_process();
            task.finish(result);
            self.shared.tasks.leave();
        }
    }

    fn span(&self) -> Span {
        self.task.as_ref().map(|t| t.span).unwrap_or_default()
    }

    fn death(&self, status: ExitStatus) -> TaskResult {
        let span = self.span();
        // `exit(0)` from a signal handler ends the process without an outcome, cleanly.
        if status == ExitStatus::Code(0) {
            return Ok(Value::Nil);
        }
        if self.cancelled() && matches!(status, ExitStatus::Signal(9 | 15)) {
            return Err(Arc::new(super::cancel::cancelled_error(span)));
        }
        Err(Arc::new(died(self.pid.unwrap_or_default(), status, span)))
    }

    fn result_of(&self, outcome: Result<Outcome, String>) -> TaskResult {
        let span = self.span();
        let im = Importer { shared: &self.shared };
        let task_error = |e: String| Arc::new(RuntimeError::new(ErrorKind::Task, e, span));
        match outcome {
            Ok(Outcome::Value(w)) => im.value(w).map_err(task_error),
            Ok(Outcome::Error(e)) => Err(im.error(e).map(Arc::new).unwrap_or_else(task_error)),
            Ok(Outcome::Exit(0)) => Ok(Value::Nil),
            Ok(Outcome::Exit(n)) => Err(Arc::new(died(self.pid.unwrap_or_default(), ExitStatus::Code(n), span))),
            Err(e) => Err(task_error(e)),
        }
    }
}

/// The error for a process that ended without an outcome.
pub fn died(pid: i32, status: ExitStatus, span: Span) -> RuntimeError {
    RuntimeError::new(ErrorKind::Task, format!("process {pid} {} before it finished", status.describe()), span)
        .with_label("the process started here")
}

pub fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

/// What a process task's handle shows: its pid, whether it runs, how it ended.
#[derive(Default)]
pub struct ProcessInfo {
    /// The pid once the server reports it (0 if the process never started).
    pid: Mutex<Option<i32>>,
    status: Mutex<Option<ExitStatus>>,
    changed: Condvar,
}

/// How long a handle waits for the server to report a pid or an exit it is sure to report.
const REPORT_WAIT: Duration = Duration::from_secs(5);

impl ProcessInfo {
    fn set_pid(&self, pid: i32) {
        *self.pid.lock().unwrap_or_else(|e| e.into_inner()) = Some(pid);
        self.changed.notify_all();
    }

    pub fn pid(&self) -> i32 {
        let g = self.pid.lock().unwrap_or_else(|e| e.into_inner());
        let (g, _) =
            self.changed.wait_timeout_while(g, REPORT_WAIT, |p| p.is_none()).unwrap_or_else(|e| e.into_inner());
        g.unwrap_or(0)
    }

    fn status(&self) -> Option<ExitStatus> {
        *self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The exit status, waiting for it if the process is known to be ending.
    fn final_status(&self, ending: bool) -> Option<ExitStatus> {
        let g = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if !ending {
            return *g;
        }
        let (g, _) =
            self.changed.wait_timeout_while(g, REPORT_WAIT, |s| s.is_none()).unwrap_or_else(|e| e.into_inner());
        *g
    }

    fn exited(&self, status: ExitStatus) {
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
        self.changed.notify_all();
    }
}

/// A process task's handle fields, given whether the task has finished (then its process
/// is about to be reaped, and its exit status is worth waiting for).
pub fn process_field(info: &ProcessInfo, name: &str, done: bool) -> Option<Value> {
    Some(match name {
        "pid" => Value::Int(info.pid() as i64),
        // A finished task's process is ending: wait for its exit so `alive` agrees with `wait`.
        "alive" => Value::Bool(info.final_status(done).is_none()),
        "exit_code" => match info.final_status(done) {
            Some(ExitStatus::Code(c)) => Value::Int(c as i64),
            _ => Value::Nil,
        },
        "signal" => match info.final_status(done) {
            Some(ExitStatus::Signal(s)) => Value::str(super::zygote::signal_name(s)),
            _ => Value::Nil,
        },
        "status" => match info.final_status(done) {
            None => Value::Nil,
            Some(s) => Value::str(s.describe()),
        },
        _ => return None,
    })
}

/// The part of a process task's handle that lives with the task.
pub struct ProcessHandle {
    pub info: Arc<ProcessInfo>,
    pub task: std::sync::Weak<Task>,
    pub driver: Arc<dyn Drive>,
}

impl TaskExtra for ProcessHandle {
    fn field(&self, name: &str) -> Option<Value> {
        let done = self.task.upgrade().is_some_and(|t| t.is_done());
        process_field(&self.info, name, done)
    }

    fn method(&self, name: &str) -> Option<Value> {
        match name {
            "is_alive" => self.field("alive"),
            _ => None,
        }
    }

    fn driver(&self) -> Option<Arc<dyn Drive>> {
        Some(self.driver.clone())
    }

    fn kill(&self, sig: i32) -> Result<(), String> {
        if self.info.status().is_some() {
            return Ok(());
        }
        let pid = self.info.pid();
        if pid == 0 {
            return Ok(());
        }
        let sig = nix::sys::signal::Signal::try_from(sig).map_err(|e| e.to_string())?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)
            .map_err(|e| format!("cannot signal process {pid}: {e}"))
    }
}
