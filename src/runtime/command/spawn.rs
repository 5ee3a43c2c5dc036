//! Starting a plan's processes: the pipes between stages wired straight from child to child,
//! the pipeline in a process group of its own, every descriptor close-on-exec, so a child
//! sees only its 0, 1 and 2.

use super::path;
use super::running::{Dest, Feed, Feeder, Procs, Running, Stream};
use super::spec::{Input, Output, Plan, Stage};
use crate::builtins::io_error;
use crate::engine::Sink;
use crate::error::{ErrorKind, RuntimeError};
use crate::interp::{Shared, Unwind, R};
use crate::runtime::cancel::SLICE;
use crate::runtime::channel::Channel;
use crate::value::Value;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use std::ffi::OsString;
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Descriptors this process inherited without close-on-exec (a harness's or a build tool's)
/// would leak into every command; mark them once, before the first command starts. conc's
/// own descriptors are close-on-exec from the start.
fn close_inherited_on_exec() {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return };
    let fds: Vec<i32> = dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).filter(|fd| *fd > 2).collect();
    for fd in fds {
        if let Ok(flags) = fcntl(fd, FcntlArg::F_GETFD) {
            let flags = FdFlag::from_bits_truncate(flags);
            if !flags.contains(FdFlag::FD_CLOEXEC) {
                let _ = fcntl(fd, FcntlArg::F_SETFD(flags | FdFlag::FD_CLOEXEC));
            }
        }
    }
}

/// One end of a child's standard stream, before it is handed to the child.
enum End {
    Inherit,
    Null,
    Fd(OwnedFd),
}

impl End {
    fn stdio(self) -> Stdio {
        match self {
            End::Inherit => Stdio::inherit(),
            End::Null => dev_null().map_or_else(Stdio::null, Stdio::from),
            End::Fd(fd) => Stdio::from(fd),
        }
    }

    /// A second copy, for `stderr: "stdout"`. It is only asked of a stdout, so an
    /// inherited one is conc's fd 1.
    fn try_clone(&self) -> std::io::Result<End> {
        Ok(match self {
            End::Inherit => End::Fd(std::io::stdout().as_fd().try_clone_to_owned()?),
            End::Null => End::Null,
            End::Fd(fd) => End::Fd(fd.try_clone()?),
        })
    }
}

/// A copy of this process's own `/dev/null` descriptor, opened once: duplicating it costs a
/// fraction of opening `/dev/null` again for every command (the default stdin). The
/// descriptor is close-on-exec. A process forked from this one (the process server, a
/// `fork` child) inherits the number but opens its own: the inherited copy is not known to
/// be still open there, so it is left alone rather than used or closed.
fn dev_null() -> Option<OwnedFd> {
    static NULL: std::sync::Mutex<Option<(u32, OwnedFd)>> = std::sync::Mutex::new(None);
    let mut held = NULL.lock().unwrap_or_else(|e| e.into_inner());
    let me = std::process::id();
    if let Some((owner, fd)) = held.as_ref() {
        if *owner == me {
            return fd.try_clone().ok();
        }
    }
    if let Some((_, inherited)) = held.take() {
        std::mem::forget(inherited);
    }
    let fd: OwnedFd = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null").ok()?.into();
    let copy = fd.try_clone().ok();
    *held = Some((me, fd));
    copy
}

/// A pipe whose both ends close on exec; the child's end is dup'ed onto 0, 1 or 2, which
/// clears the flag for that copy only.
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(OFlag::O_CLOEXEC)?)
}

fn nonblocking(fd: OwnedFd) -> std::io::Result<File> {
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    Ok(File::from(fd))
}

/// Start every stage of `plan`. A stage that cannot start is an error at its span, and the
/// stages already started are killed and reaped.
pub fn launch(shared: &Arc<Shared>, plan: Plan, lines: bool) -> R<Running> {
    let n = plan.stages.len();
    shared.admit_subprocesses(n, plan.span)?;
    static INHERITED: std::sync::Once = std::sync::Once::new();
    INHERITED.call_once(|| {
        close_inherited_on_exec();
        crate::runtime::guardian::start();
    });
    let mut run = Running::new(plan, Arc::new(Procs::default()), shared.clone());
    match start_all(&mut run, lines) {
        Ok(()) => Ok(run),
        Err(e) => {
            let started = run.procs.lock().pids.len();
            shared.release_subprocesses(n - started);
            run.plan.stages.truncate(started);
            run.abort();
            Err(e)
        }
    }
}

fn start_all(run: &mut Running, lines: bool) -> R<()> {
    let n = run.plan.stages.len();
    for st in &run.plan.stages {
        if let Some(dir) = &st.cwd {
            if !std::path::Path::new(dir).is_dir() {
                return Err(RuntimeError::new(ErrorKind::Io, format!("no such directory: {dir}"), st.opts_span)
                    .with_label("the `cwd` of this command")
                    .into());
            }
        }
    }
    // A command reading the terminal must stay in conc's (foreground) process group, or the
    // terminal would stop it the moment it reads.
    let own_group =
        !(run.plan.stages.iter().any(|s| matches!(s.stdin, Input::Inherit)) && std::io::stdin().is_terminal());
    let mut links: Vec<(Option<OwnedFd>, Option<OwnedFd>)> = (0..n).map(|_| (None, None)).collect();
    for i in 1..n {
        if run.plan.stages[i - 1].stdout == Output::Pipe && matches!(run.plan.stages[i].stdin, Input::Pipe) {
            let (r, w) = pipe().map_err(|e| io_fail(&e, &run.plan.stages[i]))?;
            links[i - 1].1 = Some(w);
            links[i].0 = Some(r);
        }
    }
    let mut channels: Vec<(OwnedFd, Arc<Channel>)> = Vec::new();
    for (i, (link_in, link_out)) in links.into_iter().enumerate() {
        let st = &run.plan.stages[i];
        let stdin = stdin_end(st, link_in, &mut run.feeds, &mut channels)?;
        let last_stdout = lines && i + 1 == n;
        let stdout = out_end(&run.shared, st, &st.stdout, i, false, link_out, last_stdout, &mut run.streams)?;
        let stderr = match st.stderr {
            Output::Stdout => stdout.try_clone().map_err(|e| io_fail(&e, st))?,
            ref out => out_end(&run.shared, st, out, i, true, None, false, &mut run.streams)?,
        };
        let (mut c, searched) = program(st);
        c.args(&st.argv[1..]).stdin(stdin.stdio()).stdout(stdout.stdio()).stderr(stderr.stdio());
        configure(&mut c, st);
        let pgid = run.procs.lock().pgid;
        if own_group {
            c.process_group(pgid.unwrap_or(0));
        }
        let child = c.spawn().map_err(|e| {
            if let Some(path) = searched {
                path::forget(&st.argv[0], &path);
            }
            spawn_error(&e, st)
        })?;
        // Dropping the builder closes conc's copies of the child's ends, so end of file
        // reaches each reader when its writer exits.
        drop(c);
        let pid = child.id() as i32;
        crate::runtime::track_child(pid);
        if !own_group || i == 0 {
            crate::runtime::guardian::watch(pid, own_group);
        }
        {
            let mut p = run.procs.lock();
            p.pids.push(pid);
            p.status.push(None);
            if own_group && i == 0 {
                p.pgid = Some(pid);
            }
        }
        let pidfd = rustix::process::Pid::from_raw(pid)
            .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok());
        if pidfd.is_none() {
            run.release_held(i);
        }
        run.pidfds.push(pidfd);
    }
    for (w, ch) in channels {
        let feeder = start_feeder(&run.shared, w, ch).map_err(|e| io_fail(&e, &run.plan.stages[0]))?;
        run.feeders.push(feeder);
    }
    Ok(())
}

/// A builder for the stage's program: a bare name that conc's PATH resolves starts from its
/// full path (argv[0] stays the name), and the PATH it was found on is returned so a failed
/// start can forget it.
fn program(st: &Stage) -> (std::process::Command, Option<OsString>) {
    let name = &st.argv[0];
    let inherits_path = !st.clear_env && st.env.iter().all(|(k, _)| k != "PATH");
    let search_path = if inherits_path { std::env::var_os("PATH") } else { None };
    if let Some(search_path) = search_path {
        if let Some(full) = path::resolve(name, &search_path) {
            let mut c = std::process::Command::new(full);
            c.arg0(name);
            return (c, Some(search_path));
        }
    }
    (std::process::Command::new(name), None)
}

/// The environment and directory options, shared with `exec`.
pub fn configure(c: &mut std::process::Command, st: &Stage) {
    if st.clear_env {
        c.env_clear();
    }
    for (k, v) in &st.env {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    if let Some(dir) = &st.cwd {
        c.current_dir(dir);
    }
}

fn stdin_end(
    st: &Stage,
    link: Option<OwnedFd>,
    feeds: &mut Vec<Feed>,
    channels: &mut Vec<(OwnedFd, Arc<Channel>)>,
) -> R<End> {
    Ok(match &st.stdin {
        Input::Null => End::Null,
        Input::Inherit => End::Inherit,
        Input::Pipe => link.map_or(End::Null, End::Fd),
        Input::File(path) => End::Fd(File::open(path).map_err(|e| io_error(&e, path, st.opts_span))?.into()),
        Input::Data(data) => {
            let (r, w) = pipe().map_err(|e| io_fail(&e, st))?;
            let file = nonblocking(w).map_err(|e| io_fail(&e, st))?;
            feeds.push(Feed { file, data: data.clone(), at: 0, finished: false });
            End::Fd(r)
        }
        Input::Channel(ch) => {
            let (r, w) = pipe().map_err(|e| io_fail(&e, st))?;
            channels.push((w, ch.clone()));
            End::Fd(r)
        }
    })
}

#[allow(clippy::too_many_arguments)]
fn out_end(
    shared: &Shared,
    st: &Stage,
    out: &Output,
    stage: usize,
    is_stderr: bool,
    link: Option<OwnedFd>,
    as_lines: bool,
    streams: &mut Vec<Stream>,
) -> R<End> {
    let mut read_end = |dest: Dest| -> R<End> {
        let (r, w) = pipe().map_err(|e| io_fail(&e, st))?;
        let file = nonblocking(r).map_err(|e| io_fail(&e, st))?;
        // conc keeps a copy of the write end until the stage is reaped, so the pipe never
        // reports end of file: the child's exit then wakes the poll loop once, on its pidfd,
        // instead of once for the pipes closing and again for the exit a moment later.
        let child_end = w.try_clone().map_err(|e| io_fail(&e, st))?;
        streams.push(Stream { file, stage, is_stderr, dest, open: true, held: Some(w) });
        Ok(End::Fd(child_end))
    };
    Ok(match out {
        Output::Capture if as_lines => read_end(Dest::Lines)?,
        Output::Capture => read_end(Dest::Capture(Vec::new()))?,
        Output::Null => End::Null,
        Output::Pipe => link.map_or(End::Null, End::Fd),
        Output::Stdout => End::Null,
        Output::File { path, append } => {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .append(*append)
                .truncate(!*append)
                .open(path)
                .map_err(|e| io_error(&e, path, st.opts_span))?;
            End::Fd(f.into())
        }
        Output::Inherit => {
            let sink = if is_stderr { &shared.output.stderr } else { &shared.output.stdout };
            match (sink, is_stderr) {
                (Sink::Stdout, false) | (Sink::Stderr, true) => End::Inherit,
                (Sink::Stdout, true) => {
                    End::Fd(std::io::stdout().as_fd().try_clone_to_owned().map_err(|e| io_fail(&e, st))?)
                }
                (Sink::Stderr, false) => {
                    End::Fd(std::io::stderr().as_fd().try_clone_to_owned().map_err(|e| io_fail(&e, st))?)
                }
                // An embedder's buffer or callback has no descriptor: conc pumps into it.
                _ => read_end(Dest::Sink { to_stderr: is_stderr, pending: Vec::new() })?,
            }
        }
    })
}

/// Copy a channel into a stdin pipe: each value is a line (bytes are written as they are),
/// and closing the channel ends the input.
fn start_feeder(shared: &Arc<Shared>, w: OwnedFd, ch: Arc<Channel>) -> std::io::Result<Feeder> {
    let file = nonblocking(w)?;
    let stop = Arc::new(AtomicBool::new(false));
    let (flag, rx, sh) = (stop.clone(), ch.receiver(), shared.clone());
    // The feeder can unblock a task sending on a full channel, so it counts as a live task
    // for deadlock detection.
    shared.tasks.enter();
    let spawned = std::thread::Builder::new().name("conc:input".into()).spawn(move || {
        let mut file = file;
        while !flag.load(Ordering::SeqCst) {
            match rx.recv_timeout(SLICE) {
                Ok(v) => {
                    sh.tasks.bump();
                    if !write_all_until(&mut file, &line_bytes(&v), &flag) {
                        break;
                    }
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            }
        }
        drop(file);
        sh.tasks.leave();
    });
    match spawned {
        Ok(handle) => Ok(Feeder { stop, handle }),
        Err(e) => {
            shared.tasks.leave();
            Err(e)
        }
    }
}

fn line_bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::Bytes(b) => b.to_vec(),
        other => {
            let mut s = other.to_string().into_bytes();
            s.push(b'\n');
            s
        }
    }
}

/// Write everything unless the reader goes away or `stop` is set. False if it did not finish.
fn write_all_until(file: &mut File, mut data: &[u8], stop: &AtomicBool) -> bool {
    while !data.is_empty() {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        match file.write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let mut fds = [PollFd::new(&*file, PollFlags::OUT)];
                let ts = Timespec { tv_sec: 0, tv_nsec: SLICE.as_nanos() as i64 };
                let _ = poll(&mut fds, Some(&ts));
            }
            Err(_) => return false,
        }
    }
    true
}

pub fn spawn_error(e: &std::io::Error, st: &Stage) -> RuntimeError {
    let prog = &st.argv[0];
    match e.kind() {
        std::io::ErrorKind::NotFound => {
            let (label, help) = if prog.contains('/') {
                ("no such file", "check the path".to_string())
            } else {
                ("not found on PATH", format!("check the spelling, or install `{prog}`, or give its full path"))
            };
            RuntimeError::new(ErrorKind::Command, format!("command not found: {prog}"), st.name_span)
                .with_label(label)
                .with_help(help)
        }
        std::io::ErrorKind::PermissionDenied => {
            RuntimeError::new(ErrorKind::Command, format!("permission denied: {prog}"), st.name_span)
                .with_label("not executable")
                .with_help("is it a directory, or missing its execute permission?")
        }
        _ => RuntimeError::new(ErrorKind::Command, format!("cannot run {prog}: {e}"), st.name_span)
            .with_label("this program could not start"),
    }
}

fn io_fail(e: &std::io::Error, st: &Stage) -> Unwind {
    RuntimeError::new(ErrorKind::Io, format!("cannot set up `{}`: {e}", st.line), st.call)
        .with_label("while starting this command")
        .into()
}

/// `exec(...)`: replace conc with the program. Returns only if it cannot start.
pub fn exec(st: &Stage) -> RuntimeError {
    let mut c = std::process::Command::new(&st.argv[0]);
    c.args(&st.argv[1..]);
    configure(&mut c, st);
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    crate::runtime::guardian::before_exec();
    let e = c.exec();
    crate::runtime::guardian::after_failed_exec();
    spawn_error(&e, st)
}
