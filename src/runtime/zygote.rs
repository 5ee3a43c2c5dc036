//! The process server. A forked child of a multithreaded program may only make
//! async-signal-safe calls, and an interpreter allocates, so conc never forks itself once
//! threads run. Instead it starts this server with a fresh exec of its own binary: a
//! single-threaded process that replays the parent's compiles to hold the same program, and
//! forks a child for each `fork` (and each process-pool worker). The child runs a portable
//! closure (see `portable.rs`) and sends its outcome straight to the requester over a socket
//! the requester passed along.
//!
//! The server reaps every child and reports each exit to whoever asked for the child. When a
//! client goes away, the children it asked for are killed; when the root client (the conc
//! process that started the server) goes away, the server kills everything and exits, so a
//! SIGKILLed conc leaves nothing running. Each child also dies with the server (PDEATHSIG).

use super::ipc;
use super::portable::{decode, encode, Exporter, Importer, Wire, WireError};
use crate::engine::{Capabilities, Engine, Limits, Replay, Settings};
use crate::error::{ErrorKind, RuntimeError};
use crate::interp::{Interp, Unwind};
use crate::syntax::Span;
use crate::value::Value;
use nix::sys::signal::{signal, SigHandler, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;

/// Set in the environment of the exec'd server; the binary's `main` checks it first.
pub const SERVER_ENV: &str = "CONC_PROCESS_SERVER";

static HOST_SERVES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// For a program that embeds conc: call this first thing in `main`, while the program has
/// one thread. When this process was started to serve `fork`, it serves and never returns;
/// otherwise it notes that this program's own binary can serve its scripts' processes.
pub fn serve_if_asked() {
    if std::env::var_os(SERVER_ENV).is_some() {
        serve();
    }
    HOST_SERVES.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Whether [`serve_if_asked`] has run in this process.
pub fn host_serves() -> bool {
    HOST_SERVES.load(std::sync::atomic::Ordering::SeqCst)
}

#[derive(Serialize, Deserialize, Debug)]
pub enum ToServer {
    /// A world the server has not seen: how to make its engines.
    World {
        world: u64,
        capabilities: Capabilities,
        limits: Limits,
    },
    Replay {
        world: u64,
        entries: Vec<Replay>,
    },
    /// Fork a child for `job`. Carries four fds: the result socket, stdin, stdout, stderr.
    Start {
        req: u64,
        world: u64,
        engine: u32,
        name: String,
        span: Span,
        job: Job,
    },
    /// Fork a spare child and hand it to this client (see [`FromServer::Spare`]). `epoch`
    /// counts the world messages the client had sent; the reply echoes it, so the client
    /// can tell a spare that predates its latest compiles.
    WantSpare {
        epoch: u64,
    },
}

#[derive(Serialize, Deserialize, Debug)]
pub enum Job {
    /// Call `func` once and send its [`Outcome`].
    Call { func: Wire, globals: Vec<(u32, Wire)> },
    /// Serve [`ToWorker`] requests until the socket closes; batches run `func`.
    Worker { func: Wire, globals: Vec<(u32, Wire)> },
}

#[derive(Serialize, Deserialize, Debug)]
pub enum FromServer {
    Started {
        req: u64,
        pid: i32,
    },
    Refused {
        req: u64,
        reason: String,
    },
    Exited {
        pid: i32,
        status: ExitStatus,
    },
    /// A spare child for the client's own use, with one fd: the socket the child waits on
    /// for its [`SpareJob`]. A job sent there skips the server, which only reaps the child
    /// and reports its exit as for any other.
    Spare {
        pid: i32,
        epoch: u64,
    },
}

/// How a process ended.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    pub fn describe(self) -> String {
        match self {
            ExitStatus::Code(c) => format!("exited with status {c}"),
            ExitStatus::Signal(s) => format!("killed by {}", signal_name(s)),
        }
    }
}

pub fn signal_name(sig: i32) -> String {
    Signal::try_from(sig).map(|s| s.as_str().to_string()).unwrap_or_else(|_| format!("signal {sig}"))
}

/// What a child sends back for a [`Job::Call`].
#[derive(Serialize, Deserialize, Debug)]
pub enum Outcome {
    Value(Wire),
    Error(WireError),
    /// The body called `exit(n)`.
    Exit(i32),
}

/// Work for a pool worker process.
#[derive(Serialize, Deserialize, Debug)]
pub enum ToWorker {
    /// Run the worker's own function on each item (`pool map`).
    Batch { first: u64, items: Vec<Wire> },
    /// Run any function (`p.submit(f, args…)`), after setting the globals it reaches.
    Call { id: u64, func: Wire, args: Vec<Wire>, globals: Vec<(u32, Wire)> },
}

#[derive(Serialize, Deserialize, Debug)]
pub enum FromWorker {
    Batch { first: u64, results: Vec<Result<Wire, WireError>> },
    Called { id: u64, result: Result<Wire, WireError> },
}

/// In a process the server forked: the address to reach the server at for nested forks.
static SERVER_ADDRESS: std::sync::OnceLock<(String, i32)> = std::sync::OnceLock::new();

pub fn server_address() -> Option<&'static (String, i32)> {
    SERVER_ADDRESS.get()
}

fn abstract_addr(name: &str) -> std::io::Result<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
}

pub fn connect(name: &str) -> std::io::Result<UnixStream> {
    UnixStream::connect_addr(&abstract_addr(name)?)
}

struct World {
    engines: HashMap<u32, Engine>,
    /// How many of the world's programs and modules have had their functions compiled.
    compiled: (usize, usize),
}

impl World {
    fn new(world: u64, capabilities: Capabilities, limits: Limits) -> World {
        let settings = Settings { capabilities, limits, ..Settings::default() };
        let mut engines = HashMap::new();
        engines.insert(0, Engine::in_world(settings, None, world));
        World { engines, compiled: (0, 0) }
    }

    /// Compile every function body now, once, so each child inherits the code instead of
    /// compiling (and faulting in the compiler) itself.
    fn precompile(&mut self) {
        let Some(shared) = self.engines.get(&0).map(|e| e.shared().clone()) else { return };
        let programs = shared.programs.read().unwrap_or_else(|e| e.into_inner()).clone();
        let modules = shared.modules.read().unwrap_or_else(|e| e.into_inner()).clone();
        let compile = |stmts: &[crate::syntax::ast::Stmt]| {
            super::portable::each_def_in(stmts, &mut |def| crate::compile::ensure_compiled(def));
        };
        programs[self.compiled.0.min(programs.len())..].iter().for_each(|p| compile(p.stmts()));
        modules[self.compiled.1.min(modules.len())..].iter().for_each(|m| compile(&m.stmts));
        self.compiled = (programs.len(), modules.len());
    }

    fn apply(&mut self, entry: Replay) {
        match entry {
            Replay::Compile { engine, name, text } => {
                if let Some(e) = self.engines.get_mut(&engine) {
                    // A failed compile has side effects too (files loaded), so it is replayed
                    // as it happened; its error was reported in the parent.
                    let _ = e.compile(&name, &text);
                }
            }
            Replay::Global { engine, name, value } => {
                if let Some(e) = self.engines.get_mut(&engine) {
                    let v = value.and_then(|w| Importer { shared: e.shared() }.value(w).ok()).unwrap_or_default();
                    e.set_global(&name, v);
                }
            }
            Replay::BaseDir { engine, dir } => {
                if let Some(e) = self.engines.get_mut(&engine) {
                    e.set_base_dir(dir);
                }
            }
            Replay::Clone { from, to } => {
                if let Some(e) = self.engines.get(&from) {
                    let clone = e.clone_world();
                    self.engines.insert(to, clone);
                }
            }
        }
    }
}

struct Client {
    sock: UnixStream,
    /// Children this client asked for and that have not been reaped yet.
    children: Vec<i32>,
}

struct Server {
    clients: Vec<Option<Client>>,
    worlds: HashMap<u64, World>,
    /// Child pid -> the client to tell when it exits.
    owners: HashMap<i32, usize>,
    /// Taken (closed) in a forked child, so a child never holds the server's doors open.
    listener: Option<UnixListener>,
    address: String,
    /// SIGCHLD, blocked and read as a descriptor: no handler runs, so a child's exit costs
    /// the server no signal frame (nor the copy-on-write of the stack page it is written to).
    sigchld: Option<SignalFd>,
    buf: Vec<u8>,
    spare: Option<Spare>,
    /// The generation of the last start request. Clients hand most jobs to spares they
    /// hold, so a request reaches the server mostly right after a world changed, when its
    /// own spare is stale anyway; it keeps one only while requests repeat in one generation.
    last_start: Option<u64>,
    /// Bumped whenever a world changes, so a spare made before knows it is stale.
    generation: u64,
    /// Children forked so far, until the server's code moves to anonymous memory (see
    /// `code_pages.rs`); `None` once it has.
    forks_before_move: Option<u32>,
}

/// The server's main loop; never returns. Called by `main` when [`SERVER_ENV`] is set, with
/// the root client's socket as stdin.
pub fn serve() -> ! {
    std::env::remove_var(SERVER_ENV);
    // Ctrl-C at a terminal signals the whole foreground group; the conc process decides what
    // happens to its children, so the server itself stays up to reap them.
    set_disposition(Signal::SIGINT, SigHandler::SigIgn);
    // Reaping is this server's job: a SIGCHLD ignored since exec would let the kernel do it
    // and lose every status (and would never reach the signalfd).
    super::signal::keep_child_statuses();
    let code = match Server::start() {
        Ok(mut s) => s.run(),
        Err(e) => {
            eprintln!("conc: the process server could not start: {e}");
            1
        }
    };
    std::process::exit(code)
}

#[allow(unsafe_code)]
fn set_disposition(sig: Signal, handler: SigHandler) {
    // SAFETY: the dispositions set here are SIG_IGN or SIG_DFL, never a Rust handler.
    let _ = unsafe { signal(sig, handler) };
}

impl Server {
    fn start() -> std::io::Result<Server> {
        // SAFETY-free: fd 0 was set up by the parent as our end of a socketpair.
        let root = stdin_socket()?;
        let address = format!("conc-server-{}-{:x}", std::process::id(), nonce());
        let listener = UnixListener::bind_addr(&abstract_addr(&address)?)?;
        listener.set_nonblocking(true)?;
        let sigchld = sigchld_set();
        sigchld.thread_block()?;
        let fd = SignalFd::with_flags(&sigchld, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        Ok(Server {
            clients: vec![Some(Client { sock: root, children: Vec::new() })],
            worlds: HashMap::new(),
            owners: HashMap::new(),
            listener: Some(listener),
            address,
            sigchld: Some(fd),
            buf: Vec::new(),
            spare: None,
            last_start: None,
            generation: 0,
            forks_before_move: Some(0),
        })
    }

    fn run(&mut self) -> i32 {
        // The stack bounds are found once here, by reading /proc/self/maps; every child
        // inherits them instead of paying for that read itself.
        let _ = stacker::remaining_stack();
        super::broker::prepare_for_fork();
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        loop {
            if self.clients[0].is_none() {
                return self.shut_down();
            }
            self.move_code_when_forking_often();
            let live: Vec<usize> = (0..self.clients.len()).filter(|i| self.clients[*i].is_some()).collect();
            let (ready_sigchld, ready_listener, ready): (bool, bool, Vec<usize>) = {
                let (Some(sigchld), Some(listener)) = (&self.sigchld, &self.listener) else { return 1 };
                let mut fds = vec![
                    PollFd::new(sigchld.as_fd(), PollFlags::POLLIN),
                    PollFd::new(listener.as_fd(), PollFlags::POLLIN),
                ];
                for i in &live {
                    let c = self.clients[*i].as_ref().expect("live client");
                    fds.push(PollFd::new(c.sock.as_fd(), PollFlags::POLLIN));
                }
                match poll(&mut fds, PollTimeout::from(1000u16)) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => return 1,
                    Ok(_) => {}
                }
                let is_ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
                let ready = live.iter().zip(&fds[2..]).filter(|(_, f)| is_ready(f)).map(|(i, _)| *i).collect();
                (is_ready(&fds[0]), is_ready(&fds[1]), ready)
            };
            if let (true, Some(fd)) = (ready_sigchld, &self.sigchld) {
                while let Ok(Some(_)) = fd.read_signal() {}
            }
            // Reap on every wake: a signal may be coalesced or land between polls.
            self.reap();
            if let (true, Some(listener)) = (ready_listener, &self.listener) {
                while let Ok((sock, _)) = listener.accept() {
                    let _ = sock.set_nonblocking(false);
                    self.clients.push(Some(Client { sock, children: Vec::new() }));
                }
            }
            for i in ready {
                if !self.serve_client(i) {
                    if i == 0 {
                        return self.shut_down();
                    }
                    self.drop_client(i);
                }
            }
        }
    }

    /// Between requests, once this server has forked enough children that copying its code
    /// pays: from then on the children it forks start with that code mapped.
    fn move_code_when_forking_often(&mut self) {
        if self.forks_before_move.is_some_and(|n| n >= super::code_pages::FORKS_BEFORE_MOVING) {
            self.forks_before_move = None;
            super::code_pages::move_to_anonymous_memory();
        }
    }

    /// Handle one message from client `i`; `false` when the client has gone.
    fn serve_client(&mut self, i: usize) -> bool {
        let Some(client) = self.clients[i].as_ref() else { return false };
        let fds = match ipc::recv(&client.sock, &mut self.buf) {
            Ok(Some(fds)) => fds,
            _ => return false,
        };
        let msg: ToServer = match decode(&self.buf) {
            Ok(m) => m,
            Err(_) => return false,
        };
        match msg {
            ToServer::World { world, capabilities, limits } => {
                self.worlds.entry(world).or_insert_with(|| World::new(world, capabilities, limits));
                self.generation += 1;
            }
            ToServer::Replay { world, entries } => {
                if let Some(w) = self.worlds.get_mut(&world) {
                    entries.into_iter().for_each(|e| w.apply(e));
                    w.precompile();
                }
                self.generation += 1;
            }
            ToServer::Start { req, world, engine, name, span, job } => {
                let repeated = self.last_start.replace(self.generation) == Some(self.generation);
                let reply = match self.start_child(world, engine, &name, span, job, fds) {
                    Ok(pid) => {
                        self.owners.insert(pid, i);
                        if let Some(c) = self.clients[i].as_mut() {
                            c.children.push(pid);
                        }
                        FromServer::Started { req, pid }
                    }
                    Err(reason) => FromServer::Refused { req, reason },
                };
                self.tell(i, &reply);
                if repeated && matches!(reply, FromServer::Started { .. }) {
                    self.refill_spare();
                }
            }
            ToServer::WantSpare { epoch } => self.hand_spare(i, epoch),
        }
        true
    }

    /// Fork a spare for client `i` and pass it over; the client owns it from then on.
    fn hand_spare(&mut self, i: usize, epoch: u64) {
        let Ok(spare) = self.fork_spare() else { return };
        self.owners.insert(spare.pid, i);
        let Some(c) = self.clients[i].as_mut() else { return };
        c.children.push(spare.pid);
        let msg = encode(&FromServer::Spare { pid: spare.pid, epoch });
        if ipc::send(&c.sock, &msg, &[spare.sock.as_raw_fd()]).is_err() {
            self.drop_client(i);
        }
    }

    fn tell(&mut self, i: usize, msg: &FromServer) {
        if let Some(c) = self.clients[i].as_ref() {
            if ipc::send(&c.sock, &encode(msg), &[]).is_err() {
                self.drop_client(i);
            }
        }
    }

    fn drop_client(&mut self, i: usize) {
        if let Some(c) = self.clients[i].take() {
            for pid in c.children {
                kill(pid, Signal::SIGKILL);
            }
        }
    }

    fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => self.exited(pid.as_raw(), ExitStatus::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => self.exited(pid.as_raw(), ExitStatus::Signal(sig as i32)),
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    }

    fn exited(&mut self, pid: i32, status: ExitStatus) {
        let Some(owner) = self.owners.remove(&pid) else { return };
        if let Some(c) = self.clients[owner].as_mut() {
            c.children.retain(|p| *p != pid);
        }
        self.tell(owner, &FromServer::Exited { pid, status });
    }

    /// The root client is gone: nothing may outlive it.
    fn shut_down(&mut self) -> i32 {
        if let Some(s) = self.spare.take() {
            kill(s.pid, Signal::SIGKILL);
            self.owners.insert(s.pid, 0);
        }
        for pid in self.owners.keys() {
            kill(*pid, Signal::SIGKILL);
        }
        while !self.owners.is_empty() {
            match waitpid(Pid::from_raw(-1), None) {
                Ok(WaitStatus::Exited(pid, _)) | Ok(WaitStatus::Signaled(pid, _, _)) => {
                    self.owners.remove(&pid.as_raw());
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        0
    }

    /// Hand `job` to a child: the spare forked in advance when it holds the current worlds,
    /// else a fresh one. A new spare may be forked after the reply, off the requester's path.
    fn start_child(
        &mut self,
        world: u64,
        engine: u32,
        name: &str,
        span: Span,
        job: Job,
        fds: Vec<OwnedFd>,
    ) -> Result<i32, String> {
        if fds.len() != 4 {
            return Err("a start request needs four file descriptors".into());
        }
        let known = self.worlds.get(&world).is_some_and(|w| w.engines.contains_key(&engine));
        if !known {
            return Err("the process server does not know this program".into());
        }
        let spare = match self.spare.take() {
            Some(s) if s.generation == self.generation => s,
            stale => {
                if let Some(s) = stale {
                    kill(s.pid, Signal::SIGKILL);
                }
                self.fork_spare()?
            }
        };
        let msg = SpareJob { world, engine, name: name.to_string(), span, job };
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        if let Err(e) = ipc::send(&spare.sock, &encode(&msg), &raw) {
            kill(spare.pid, Signal::SIGKILL);
            return Err(format!("the new process did not take its work: {e}"));
        }
        Ok(spare.pid)
    }

    /// Fork a child that waits for a job (see [`Server::spare_main`]).
    fn fork_spare(&mut self) -> Result<Spare, String> {
        let (mine, theirs) = ipc::pair().map_err(|e| format!("cannot make a socket: {e}"))?;
        let server_pid = std::process::id() as i32;
        match fork_now()? {
            ForkResult::Parent { child } => {
                drop(theirs);
                if let Some(n) = self.forks_before_move.as_mut() {
                    *n += 1;
                }
                Ok(Spare { pid: child.as_raw(), sock: mine, generation: self.generation })
            }
            ForkResult::Child => {
                drop(mine);
                self.spare_main(theirs, server_pid)
            }
        }
    }

    fn refill_spare(&mut self) {
        if self.spare.is_none() {
            self.spare = self.fork_spare().ok();
        }
    }

    /// A spare child: become an ordinary process, wait for one job, run it and exit. It must
    /// never return into the server loop.
    fn spare_main(&mut self, sock: UnixStream, server_pid: i32) -> ! {
        // A blocked signal stays blocked across exec: unblocked here, for the child and
        // every command it runs.
        let _ = sigchld_set().thread_unblock();
        set_disposition(Signal::SIGINT, SigHandler::SigDfl);
        let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
        if nix::unistd::getppid().as_raw() != server_pid {
            exit_now(1);
        }
        self.clients.iter_mut().for_each(|c| drop(c.take()));
        drop(self.listener.take());
        drop(self.sigchld.take());
        drop(self.spare.take());
        let _ = SERVER_ADDRESS.set((self.address.clone(), server_pid));
        self.warm_up();
        let mut buf = Vec::new();
        let fds = match ipc::recv(&sock, &mut buf) {
            Ok(Some(fds)) => fds,
            _ => exit_now(0),
        };
        let Ok(SpareJob { world, engine, name, span, job }) = decode::<SpareJob>(&buf) else { exit_now(1) };
        // From the server, a job comes with the client's socket to report on; from a client
        // that held this spare, the socket it came on is that one.
        let mut fds = fds.into_iter();
        let result = match fds.len() {
            4 => fds.next().map(UnixStream::from),
            3 => Some(sock),
            _ => None,
        };
        let (Some(result), Some(stdin), Some(stdout), Some(stderr)) = (result, fds.next(), fds.next(), fds.next())
        else {
            exit_now(1)
        };
        redirect(&stdin, 0);
        redirect(&stdout, 1);
        redirect(&stderr, 2);
        drop((stdin, stdout, stderr));
        let Some(engine) = self.worlds.get(&world).and_then(|w| w.engines.get(&engine)) else { exit_now(1) };
        let code = run_job(engine, &name, span, job, result);
        exit_now(code)
    }

    /// In a spare, before its job comes: do once the work every job starts with, so the
    /// page faults that come with first touching that code and memory (copy-on-write after
    /// the fork) are taken now, while the requester is not waiting.
    fn warm_up(&self) {
        // Signals are a job's business from here on: a TERM now cancels the job it gets.
        super::cancel::stop_on_signals();
        for engine in self.worlds.values().flat_map(|w| w.engines.values()) {
            drop(engine.world_interp());
        }
        let probe = SpareJob {
            world: 0,
            engine: 0,
            name: String::from("spare"),
            span: Span::default(),
            job: Job::Call { func: Wire::List(vec![Wire::Int(0); 16]), globals: vec![(0, Wire::Nil)] },
        };
        let _ = std::hint::black_box(decode::<SpareJob>(&encode(&probe)));
        let _ = std::hint::black_box(encode(&Outcome::Value(Wire::List(vec![Wire::Int(0); 16]))));
    }
}

/// A child forked before it is needed, waiting on `sock` for its job.
struct Spare {
    pid: i32,
    sock: UnixStream,
    /// The server's [`Server::generation`] when it was forked: it knows the worlds as then.
    generation: u64,
}

#[derive(Serialize, Deserialize, Debug)]
struct SpareJob {
    world: u64,
    engine: u32,
    name: String,
    span: Span,
    job: Job,
}

/// A [`SpareJob`] as a client writes it, borrowing the job so the client keeps it for the
/// server if the spare turns out to be gone. Same fields in the same order: same encoding.
#[derive(Serialize)]
pub struct SpareJobRef<'a> {
    pub world: u64,
    pub engine: u32,
    pub name: &'a str,
    pub span: Span,
    pub job: &'a Job,
}

fn stdin_socket() -> std::io::Result<UnixStream> {
    let fd = nix::unistd::dup(0)?;
    let devnull = std::fs::File::open("/dev/null")?;
    nix::unistd::dup2(devnull.as_raw_fd(), 0)?;
    let sock = owned(fd);
    nix::fcntl::fcntl(sock.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))?;
    Ok(UnixStream::from(sock))
}

#[allow(unsafe_code)]
fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by dup and is owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

#[allow(unsafe_code)]
fn fork_now() -> Result<ForkResult, String> {
    // SAFETY: the server is single-threaded (it never starts threads: parsing runs on a
    // scoped thread that has been joined), so the child may run ordinary code.
    unsafe { nix::unistd::fork() }.map_err(|e| format!("fork failed: {e}"))
}

fn redirect(fd: &OwnedFd, to: RawFd) {
    if fd.as_raw_fd() != to {
        let _ = nix::unistd::dup2(fd.as_raw_fd(), to);
    }
}

/// A TERM or INT has cancelled this process and its cleanup has run: end by that signal,
/// so the parent sees the same status whether the signal came before or after the child
/// started running conc code.
fn die_by(sig: i32) -> ! {
    super::broker::flush_all();
    if let Ok(s) = Signal::try_from(sig) {
        set_disposition(s, SigHandler::SigDfl);
        let _ = nix::sys::signal::raise(s);
    }
    exit_now(128 + sig)
}

#[allow(unsafe_code)]
fn exit_now(code: i32) -> ! {
    super::broker::flush_all();
    // SAFETY: _exit ends the process at once; nothing runs after it. Atexit handlers are
    // skipped on purpose: they belong to the server this process was forked from.
    unsafe { nix::libc::_exit(code) }
}

fn kill(pid: i32, sig: Signal) {
    let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
}

fn sigchld_set() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    set
}

fn nonce() -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    t.as_nanos() as u64 ^ (u64::from(std::process::id()) << 20)
}

// ---------------------------------------------------------------------------------------------
// In the child

/// Run a job in a freshly forked child and return its exit status.
fn run_job(engine: &Engine, name: &str, span: Span, job: Job, result: UnixStream) -> i32 {
    let mut interp = engine.world_interp();
    interp.task_name = name.into();
    let shared = interp.shared.clone();
    let (func, globals, worker) = match job {
        Job::Call { func, globals } => (func, globals, false),
        Job::Worker { func, globals } => (func, globals, true),
    };
    let setup = (|| -> Result<Value, String> {
        let im = Importer { shared: &shared };
        for (slot, w) in globals {
            interp.ensure_globals(slot as usize + 1);
            interp.globals[slot as usize] = im.value(w)?;
        }
        im.value(func)
    })();
    let func = match setup {
        Ok(f) => f,
        Err(e) => {
            let err = RuntimeError::new(ErrorKind::Task, e, span);
            let out = Outcome::Error(Exporter { shared: &shared }.error(&err).unwrap_or_else(|_| plain(&shared, &err)));
            let _ = send_frame(&result, &encode(&out));
            return 1;
        }
    };
    if worker {
        return work_loop(&mut interp, &func, span, result);
    }
    let outcome = call_once(&mut interp, &func, vec![], span);
    if let (Err(e), Some(sig)) = (&outcome, super::cancel::stop_signal()) {
        if e.kind == ErrorKind::Cancelled {
            die_by(sig);
        }
    }
    let (out, code) = match outcome {
        Ok(v) => match (Exporter { shared: &shared }).value(&v) {
            Ok(w) => (Outcome::Value(w), 0),
            Err(u) => {
                let e = super::portable::unportable_error("the value this process returned", u, span);
                (Outcome::Error(plain(&shared, &e)), 1)
            }
        },
        Err(e) if matches!(e.kind, ErrorKind::Exit(_)) => {
            let ErrorKind::Exit(n) = e.kind else { unreachable!() };
            (Outcome::Exit(n), n)
        }
        Err(e) => (Outcome::Error(Exporter { shared: &shared }.error(&e).unwrap_or_else(|_| plain(&shared, &e))), 1),
    };
    super::broker::flush_all();
    let _ = send_frame(&result, &encode(&out));
    code
}

/// An error with its data dropped, for when the data itself cannot cross.
fn plain(shared: &Arc<crate::interp::Shared>, e: &RuntimeError) -> WireError {
    let mut e = e.clone();
    e.data = Value::Nil;
    e.related.clear();
    Exporter { shared }.error(&e).expect("an error without data always crosses")
}

fn send_frame(sock: &UnixStream, payload: &[u8]) -> std::io::Result<()> {
    ipc::send(sock, payload, &[])
}

/// Call `func` with `args` as a task of its own: wait for what it started, turn a panic into
/// an error.
fn call_once(interp: &mut Interp, func: &Value, args: Vec<Value>, span: Span) -> Result<Value, Arc<RuntimeError>> {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let r = interp.call_value(func, args, span);
        let r = super::scope::finish_root(interp, r, span);
        let settled = super::broker::settle(interp);
        r.and_then(|v| settled.map(|_| v))
    }));
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(Unwind::Error(e))) => Err(Arc::new(*e)),
        Ok(Err(Unwind::Return(v))) => Ok(v),
        Ok(Err(_)) => Ok(Value::Nil),
        Err(panic) => Err(Arc::new(super::spawn::panic_error(panic, span))),
    }
}

/// A process-pool worker: run batches of items until the pool closes the socket.
fn work_loop(interp: &mut Interp, func: &Value, span: Span, sock: UnixStream) -> i32 {
    let shared = interp.shared.clone();
    let mut buf = Vec::new();
    loop {
        match ipc::recv(&sock, &mut buf) {
            Ok(Some(_)) => {}
            _ => return 0,
        }
        let Ok(work) = decode::<ToWorker>(&buf) else { return 1 };
        let im = Importer { shared: &shared };
        let ex = Exporter { shared: &shared };
        let wire = |r: Result<Value, Arc<RuntimeError>>| match r {
            Ok(v) => ex.value(&v).map_err(|u| {
                plain(&shared, &super::portable::unportable_error("the value this task returned", u, span))
            }),
            Err(e) => Err(ex.error(&e).unwrap_or_else(|_| plain(&shared, &e))),
        };
        let import_err = |e: String| Arc::new(RuntimeError::new(ErrorKind::Task, e, span));
        let reply = match work {
            ToWorker::Batch { first, items } => {
                let results = items
                    .into_iter()
                    .map(|item| match im.value(item) {
                        Ok(v) => wire(call_once(interp, func, vec![v], span)),
                        Err(e) => wire(Err(import_err(e))),
                    })
                    .collect();
                FromWorker::Batch { first, results }
            }
            ToWorker::Call { id, func, args, globals } => {
                let setup = (|| -> Result<(Value, Vec<Value>), String> {
                    for (slot, w) in globals {
                        interp.ensure_globals(slot as usize + 1);
                        interp.globals[slot as usize] = im.value(w)?;
                    }
                    let args = args.into_iter().map(|a| im.value(a)).collect::<Result<_, _>>()?;
                    Ok((im.value(func)?, args))
                })();
                let result = match setup {
                    Ok((f, args)) => wire(call_once(interp, &f, args, span)),
                    Err(e) => wire(Err(import_err(e))),
                };
                FromWorker::Called { id, result }
            }
        };
        super::broker::flush_sends();
        if send_frame(&sock, &encode(&reply)).is_err() {
            return 0;
        }
    }
}
