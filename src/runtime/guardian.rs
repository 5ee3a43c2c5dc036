//! The guardian: a small process that stops conc's commands when conc is SIGKILLed.
//!
//! A command runs in a process group of its own, so nothing kills it when conc dies without
//! cleaning up. The parent-death signal cannot help: it fires when the *thread* that started
//! the child exits, and a background command outlives the task that started it. So the first
//! command conc starts also starts a guardian: conc's binary again, re-executed (the same
//! opt-in as the process server, see [`serve_if_asked`]). conc writes one fixed-size record
//! into a pipe for every command group or pid it starts and another when it is done with it,
//! before reaping it, so the guardian never signals a pid that could have been reused. When
//! the pipe reaches end of file without a "bye" first, conc is gone: the guardian sends
//! SIGTERM to everything still registered, SIGKILL after a grace period, and exits.
//!
//! The guardian is never conc's child for long: the process conc starts forks the real
//! guardian and exits at once (conc reaps it), and the guardian leaves conc's session, so
//! Ctrl-C at the terminal never reaches it and a host's `waitpid(-1)` never sees it.

use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, signal, SigHandler, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Set in the environment of the exec'd guardian; `main` (or [`serve_if_asked`]) checks it first.
pub const GUARDIAN_ENV: &str = "CONC_GUARDIAN";

/// How long the commands of a dead conc get between SIGTERM and SIGKILL: as long as a
/// command that timed out gets.
const GRACE: Duration = Duration::from_millis(500);

/// After each read the guardian waits this long before the next. A write to a pipe whose
/// reader is blocked in `read` wakes the reader, and on a busy machine the woken guardian can
/// preempt conc: tens of microseconds per command. While the guardian pauses, conc's records
/// just pile up in the pipe (a burst of commands wakes it once), and a dead conc is noticed
/// this much later at most.
const PAUSE: Duration = Duration::from_millis(10);

/// The pipe's capacity, asked for so that even a conc starting thousands of commands a
/// second between two reads never waits for room.
const PIPE_SIZE: i32 = 1 << 20;

/// Whether this binary's `main` dispatches to [`serve`] when started as a guardian.
static SERVES: AtomicBool = AtomicBool::new(false);

/// Call first thing in `main`, while the process has one thread: when this process was
/// started as a guardian it guards and never returns; otherwise it notes that this binary
/// can be re-executed as one. `conc::serve_processes()` calls it.
pub fn serve_if_asked() {
    if std::env::var_os(GUARDIAN_ENV).is_some() {
        serve();
    }
    SERVES.store(true, Ordering::SeqCst);
}

/// One record on the pipe: a tag and a pid. Eight bytes, far below `PIPE_BUF`, so records
/// written from several threads never interleave.
const RECORD: usize = 8;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Target {
    Group(i32),
    Pid(i32),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Record {
    Watch(Target),
    Forget(Target),
    /// The end of file that follows is a clean one (conc is about to `exec`): stop nothing.
    Bye,
    /// The `exec` failed: conc carries on, guard as before.
    Resume,
}

impl Record {
    fn encode(self) -> [u8; RECORD] {
        let (tag, pid) = match self {
            Record::Watch(Target::Group(g)) => (b'G', g),
            Record::Watch(Target::Pid(p)) => (b'P', p),
            Record::Forget(Target::Group(g)) => (b'g', g),
            Record::Forget(Target::Pid(p)) => (b'p', p),
            Record::Bye => (b'B', 0),
            Record::Resume => (b'R', 0),
        };
        let mut out = [0; RECORD];
        out[0] = tag;
        out[4..].copy_from_slice(&pid.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Record> {
        let pid = i32::from_le_bytes(bytes.get(4..RECORD)?.try_into().ok()?);
        Some(match bytes[0] {
            b'G' => Record::Watch(Target::Group(pid)),
            b'P' => Record::Watch(Target::Pid(pid)),
            b'g' => Record::Forget(Target::Group(pid)),
            b'p' => Record::Forget(Target::Pid(pid)),
            b'B' => Record::Bye,
            b'R' => Record::Resume,
            _ => return None,
        })
    }
}

// ---------------------------------------------------------------------------------------
// In conc: registering commands.

struct Guardian {
    /// conc's end of the pipe, close-on-exec, held for the life of the process.
    pipe: File,
    state: Arc<State>,
}

/// What the thread that starts the guardian process reports.
#[derive(Default)]
struct State {
    /// A write failed, or the process could not start: stop writing.
    gone: AtomicBool,
    /// The guardian process exists and holds the other end (or never will).
    up: AtomicBool,
    up_lock: Mutex<bool>,
    up_cv: Condvar,
}

impl State {
    fn set_up(&self, ok: bool) {
        if !ok {
            self.gone.store(true, Ordering::SeqCst);
        }
        *self.up_lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.up.store(true, Ordering::Release);
        self.up_cv.notify_all();
    }
}

static GUARDIAN: OnceLock<Option<Guardian>> = OnceLock::new();

/// Start the guardian, in the background, unless it has been started already or this
/// binary cannot serve as one (a host program that did not call `conc::serve_processes()`:
/// its commands are then unguarded). Called just before the first command starts.
pub fn start() {
    GUARDIAN.get_or_init(|| {
        let exe = guardian_binary()?;
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ok()?;
        let state = Arc::new(State::default());
        let st = state.clone();
        // The process starts while the first command does; records wait in the pipe meanwhile.
        let spawned =
            std::thread::Builder::new().name("conc:guardian".into()).spawn(move || spawn_guardian(&exe, read, &st));
        if spawned.is_err() {
            state.set_up(false);
        }
        Some(Guardian { pipe: File::from(write), state })
    });
}

/// The binary to re-execute: this one if its `main` dispatches to the guardian, else a conc
/// binary named by `CONC_EXE` (as for the process server).
fn guardian_binary() -> Option<std::path::PathBuf> {
    if SERVES.load(Ordering::SeqCst) {
        return std::env::current_exe().ok();
    }
    std::env::var_os("CONC_EXE").map(Into::into)
}

/// Start the guardian process with `read` as its stdin, then reap it: it forks the real
/// guardian and exits at once.
fn spawn_guardian(exe: &std::path::Path, read: OwnedFd, state: &State) {
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    // Dropping the builder at the end of the statement closes conc's copy of the read end,
    // so if this fails, conc's writes fail (and stop) instead of filling the pipe.
    let child = std::process::Command::new(exe)
        .arg0("conc-guardian")
        .env(GUARDIAN_ENV, "1")
        .stdin(Stdio::from(read))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .current_dir("/")
        // Out of the terminal's foreground group until it leaves the session.
        .process_group(0)
        .spawn();
    state.set_up(child.is_ok());
    if let Ok(mut child) = child {
        let _ = child.wait();
    }
}

fn active() -> Option<&'static Guardian> {
    GUARDIAN.get().and_then(Option::as_ref).filter(|g| !g.state.gone.load(Ordering::Relaxed))
}

impl Guardian {
    fn send(&self, r: Record) {
        // A few bytes into a pipe the guardian keeps draining: this does not block.
        if (&self.pipe).write_all(&r.encode()).is_err() {
            self.state.gone.store(true, Ordering::SeqCst);
        }
    }

    /// Wait until the guardian process exists, so a command that has started is guarded
    /// from then on. Only the first commands wait, while the guardian starts beside them.
    fn wait_up(&self) {
        if self.state.up.load(Ordering::Acquire) {
            return;
        }
        let mut up = self.state.up_lock.lock().unwrap_or_else(|e| e.into_inner());
        while !*up {
            up = self.state.up_cv.wait(up).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// A command process has started: its own process group (`group`), or a single pid that
/// shares conc's group.
pub fn watch(pid: i32, group: bool) {
    if let Some(g) = active() {
        g.send(Record::Watch(if group { Target::Group(pid) } else { Target::Pid(pid) }));
        g.wait_up();
    }
}

/// conc has stopped and reaped a command's process group: it is no longer the guardian's.
pub fn forget_group(pgid: Option<i32>) {
    if let (Some(g), Some(pgid)) = (active(), pgid) {
        g.send(Record::Forget(Target::Group(pgid)));
    }
}

/// Before reaping `pid` (a command in conc's own process group): unregister it once it has
/// exited, so the guardian drops it while the pid is still held by the zombie. False if it
/// is still running (only without `block`).
pub fn forget_exited(pid: i32, block: bool) -> bool {
    let Some(g) = active() else { return true };
    let mut flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
    if !block {
        flags |= WaitPidFlag::WNOHANG;
    }
    loop {
        match waitid(Id::Pid(Pid::from_raw(pid)), flags) {
            Ok(WaitStatus::StillAlive) => return false,
            Err(Errno::EINTR) => continue,
            // Exited, or not ours to wait for any more (the reaper says which).
            _ => break,
        }
    }
    g.send(Record::Forget(Target::Pid(pid)));
    true
}

/// conc is about to replace itself with `exec`: the end of file that the exec causes is not
/// conc dying, and what it started runs on as before.
pub fn before_exec() {
    if let Some(g) = active() {
        g.send(Record::Bye);
    }
}

/// The `exec` did not happen: guard as before.
pub fn after_failed_exec() {
    if let Some(g) = active() {
        g.send(Record::Resume);
    }
}

// ---------------------------------------------------------------------------------------
// In the guardian process.

/// The guardian's life; never returns. Its stdin is the pipe from conc.
pub fn serve() -> ! {
    std::env::remove_var(GUARDIAN_ENV);
    // Until it has its own session, terminal signals could still reach it; it must outlive
    // conc, so none of the usual ones may end it.
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT, Signal::SIGTSTP] {
        ignore(sig);
    }
    if !into_background() {
        std::process::exit(0);
    }
    close_other_fds();
    let stdin = std::io::stdin();
    let _ = nix::fcntl::fcntl(stdin.as_raw_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
    let watched = read_until_conc_is_gone(stdin.lock(), PAUSE);
    stop_all(&watched);
    std::process::exit(0)
}

#[allow(unsafe_code)]
fn ignore(sig: Signal) {
    // SAFETY: SIG_IGN is not a handler; no code runs on delivery.
    let _ = unsafe { signal(sig, SigHandler::SigIgn) };
}

/// Fork; the parent (conc's child) exits so conc can reap it, and the child, the guardian,
/// takes a session of its own. True in the guardian.
#[allow(unsafe_code)]
fn into_background() -> bool {
    // SAFETY: this process was exec'd a moment ago and has one thread (`serve` runs first
    // thing in `main`), so the child may do anything.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            let _ = nix::unistd::setsid();
            true
        }
        // The guardian is running, or could not be made: either way this process is done
        // (without a guardian, conc's writes fail and it stops sending).
        _ => false,
    }
}

/// conc's descriptors are close-on-exec, but whatever conc's own parent leaked into it is
/// not: the guardian keeps only its stdin, stdout and stderr.
fn close_other_fds() {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return };
    let fds: Vec<i32> = dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).filter(|fd| *fd > 2).collect();
    for fd in fds {
        let _ = nix::unistd::close(fd);
    }
}

/// Read records until end of file, `pause` after each read: what is still registered then,
/// or nothing if conc said the end was clean.
fn read_until_conc_is_gone(mut pipe: impl Read, pause: Duration) -> HashSet<Target> {
    let mut watched = HashSet::new();
    let mut clean = false;
    let mut buf = [0u8; 64 * RECORD];
    let mut have = 0;
    loop {
        match pipe.read(&mut buf[have..]) {
            Ok(0) => break,
            Ok(n) => have += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
        let whole = have - have % RECORD;
        for rec in buf[..whole].chunks_exact(RECORD).filter_map(Record::decode) {
            match rec {
                Record::Watch(t) => {
                    watched.insert(t);
                }
                Record::Forget(t) => {
                    watched.remove(&t);
                }
                Record::Bye => clean = true,
                Record::Resume => clean = false,
            }
        }
        buf.copy_within(whole..have, 0);
        have -= whole;
        std::thread::sleep(pause);
    }
    if clean {
        watched.clear();
    }
    watched
}

fn send(t: Target, sig: Option<Signal>) -> bool {
    match t {
        Target::Group(g) => killpg(Pid::from_raw(g), sig).is_ok(),
        Target::Pid(p) => kill(Pid::from_raw(p), sig).is_ok(),
    }
}

/// SIGTERM to everything conc left, SIGKILL to whatever is still there after the grace period.
fn stop_all(watched: &HashSet<Target>) {
    let mut left: Vec<Target> = watched.iter().copied().filter(|&t| send(t, Some(Signal::SIGTERM))).collect();
    let deadline = Instant::now() + GRACE;
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        left.retain(|&t| send(t, None));
    }
    for t in left {
        send(t, Some(Signal::SIGKILL));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(records: &[Record]) -> Vec<u8> {
        records.iter().flat_map(|r| r.encode()).collect()
    }

    #[test]
    fn records_round_trip() {
        for r in [
            Record::Watch(Target::Group(7)),
            Record::Watch(Target::Pid(i32::MAX)),
            Record::Forget(Target::Group(1)),
            Record::Forget(Target::Pid(42)),
            Record::Bye,
            Record::Resume,
        ] {
            assert_eq!(Record::decode(&r.encode()), Some(r));
        }
    }

    #[test]
    fn what_was_not_forgotten_is_left_at_end_of_file() {
        let bytes = stream(&[
            Record::Watch(Target::Group(10)),
            Record::Watch(Target::Pid(11)),
            Record::Watch(Target::Group(12)),
            Record::Forget(Target::Group(10)),
        ]);
        let left = read_until_conc_is_gone(&bytes[..], Duration::ZERO);
        assert_eq!(left, HashSet::from([Target::Pid(11), Target::Group(12)]));
    }

    #[test]
    fn records_split_across_reads_are_put_together() {
        let bytes = stream(&[Record::Watch(Target::Group(300)), Record::Watch(Target::Pid(301))]);
        // A reader that hands out three bytes at a time.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
                let n = self.0.len().min(3).min(out.len());
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let left = read_until_conc_is_gone(Trickle(&bytes), Duration::ZERO);
        assert_eq!(left, HashSet::from([Target::Group(300), Target::Pid(301)]));
    }

    #[test]
    fn a_bye_before_end_of_file_leaves_everything_alone_until_resumed() {
        let bye = stream(&[Record::Watch(Target::Group(5)), Record::Bye]);
        assert!(read_until_conc_is_gone(&bye[..], Duration::ZERO).is_empty());
        let resumed = stream(&[Record::Watch(Target::Group(5)), Record::Bye, Record::Resume]);
        assert_eq!(read_until_conc_is_gone(&resumed[..], Duration::ZERO), HashSet::from([Target::Group(5)]));
    }
}
