//! Signals: `kill(target, signal)` sends one to a process or a task, and
//! `on_signal(name, handler)` runs conc code when this process receives one. The handler is
//! not run inside the signal handler: a watcher thread notices the signal and runs the
//! handler as an ordinary task, with a copy of the world as it was when it was registered.

use super::fork::signal_number;
use crate::builtins::Args;
use crate::error::{ErrorKind, RuntimeError};
use crate::interp::{Interp, Shared, Unwind, R};
use crate::syntax::Span;
use crate::value::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

type Builtin = fn(&mut Interp, Args) -> R<Value>;

pub static BUILTINS: &[(&str, Builtin)] = &[("kill", kill), ("on_signal", on_signal)];

struct Handler {
    func: Value,
    shared: Arc<Shared>,
    globals: Vec<Value>,
    engine_id: u32,
    span: Span,
}

#[derive(Default)]
struct Registry {
    handlers: HashMap<i32, Handler>,
    /// Signals the watcher thread has been told about.
    watched: Vec<i32>,
    watcher: Option<signal_hook::iterator::Handle>,
    /// Default actions to drop when a script takes a signal over (a forked process's
    /// stop-on-TERM, say).
    defaults: HashMap<i32, Vec<signal_hook::SigId>>,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

/// Set when the CLI's own watcher owns INT and TERM (it asks [`dispatch`] first).
static CLI_OWNS_INTERRUPTS: AtomicBool = AtomicBool::new(false);

pub fn cli_owns_interrupts() {
    CLI_OWNS_INTERRUPTS.store(true, Ordering::SeqCst);
}

/// Make the kernel keep children's exit statuses for conc to collect. A process started with
/// SIGCHLD ignored (a launcher's `signal(SIGCHLD, SIG_IGN)` survives exec) has its children
/// reaped by the kernel as they exit, so every command's and forked child's status would be
/// lost. The default disposition ignores the signal all the same but keeps the statuses. A
/// handler someone installed is left as it is.
#[allow(unsafe_code)]
pub fn keep_child_statuses() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    // SAFETY: SIG_DFL is not a Rust handler; any other old action is put back unchanged.
    let Ok(old) = (unsafe { sigaction(Signal::SIGCHLD, &default) }) else { return };
    let reaps_for_us = old.handler() == SigHandler::SigIgn || old.flags().contains(SaFlags::SA_NOCLDWAIT);
    if !reaps_for_us {
        // SAFETY: restores exactly the action that was there a moment ago.
        let _ = unsafe { sigaction(Signal::SIGCHLD, &old) };
    }
}

/// Remember actions installed for `sig` by default, to be removed if a script handles it.
pub fn default_action(sig: i32, id: signal_hook::SigId) {
    let mut reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    reg.get_or_insert_with(Registry::default).defaults.entry(sig).or_default().push(id);
}

fn parse_signal(v: &Value, span: Span) -> R<i32> {
    match v {
        Value::Str(s) => signal_number(&s.to_uppercase()).ok_or_else(|| {
            RuntimeError::new(ErrorKind::Value, format!("unknown signal `{s}`"), span)
                .with_label("not a signal name")
                .with_help("use a name such as \"TERM\", \"INT\", \"HUP\", \"USR1\" or \"KILL\", or a number")
                .into()
        }),
        Value::Int(n) if (1..=64).contains(n) => Ok(*n as i32),
        Value::Int(n) => Err(RuntimeError::new(ErrorKind::Value, format!("there is no signal {n}"), span)
            .with_label("not a signal number")
            .with_help("signal numbers run from 1 to 64; names such as \"TERM\" read better")
            .into()),
        other => Err(RuntimeError::new(
            ErrorKind::Type,
            format!("a signal is a name or a number from 1 to 64, not {}", crate::builtins::a_type(other)),
            span,
        )
        .into()),
    }
}

/// `kill(target, signal = "TERM")`: target is a pid or a process or command task.
fn kill(interp: &mut Interp, a: Args) -> R<Value> {
    a.expect("kill", 1, 2)?;
    let sig = match a.vals.get(1) {
        Some(v) => parse_signal(v, a.span(1))?,
        None => 15,
    };
    // What this process sent before the signal is on its way first, even if the signal
    // ends this process (`kill(pid(), "KILL")`) or the one that would read it.
    super::broker::flush_sends();
    if let Some(t) = super::task_of(&a.vals[0]) {
        let extra = t.extra.lock().unwrap_or_else(|e| e.into_inner());
        return match extra.as_ref() {
            Some(x) => x.kill(sig).map(|_| Value::Nil).map_err(|e| RuntimeError::new(ErrorKind::Io, e, a.call).into()),
            None => Err(RuntimeError::new(ErrorKind::Type, "a thread task cannot be sent a signal", a.span(0))
                .with_help("use `h.cancel()` to stop a thread task")
                .into()),
        };
    }
    let settings = &interp.shared.settings;
    if !settings.capabilities.fork && !settings.capabilities.subprocess {
        settings.require_fork(a.call)?;
    }
    let pid = a.int(0, "kill")?;
    if pid <= 0 || pid > i32::MAX as i64 {
        return Err(RuntimeError::new(ErrorKind::Value, format!("{pid} is not a process id"), a.span(0))
            .with_label("a pid is a positive number")
            .into());
    }
    let signal = nix::sys::signal::Signal::try_from(sig)
        .map_err(|_| RuntimeError::new(ErrorKind::Value, format!("signal {sig} is not supported here"), a.span(1)))?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).map_err(|e| -> Unwind {
        RuntimeError::new(ErrorKind::Io, format!("cannot signal process {pid}: {}", e.desc()), a.span(0))
            .with_label("this process")
            .into()
    })?;
    Ok(Value::Nil)
}

/// `on_signal(name, handler)`: run `handler(name)` whenever the signal arrives; `nil` as the
/// handler goes back to the default.
fn on_signal(interp: &mut Interp, a: Args) -> R<Value> {
    a.expect("on_signal", 2, 2)?;
    let sig = parse_signal(&a.vals[0], a.span(0))?;
    if matches!(sig, 9 | 19) {
        return Err(RuntimeError::new(ErrorKind::Value, "SIGKILL and SIGSTOP cannot be caught", a.span(0))
            .with_label("no process can handle this signal")
            .into());
    }
    let func = a.vals[1].clone();
    if !matches!(func, Value::Func(_) | Value::Builtin(_) | Value::Native(_) | Value::Nil) {
        return Err(RuntimeError::new(
            ErrorKind::Type,
            format!("a signal handler is a function, not {}", crate::builtins::a_type(&func)),
            a.span(1),
        )
        .into());
    }
    let mut guard = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    let reg = guard.get_or_insert_with(Registry::default);
    if matches!(func, Value::Nil) {
        reg.handlers.remove(&sig);
        return Ok(Value::Nil);
    }
    for id in reg.defaults.remove(&sig).unwrap_or_default() {
        signal_hook::low_level::unregister(id);
    }
    let handler = Handler {
        func,
        shared: interp.shared.clone(),
        globals: interp.globals.clone(),
        engine_id: interp.engine_id,
        span: a.call,
    };
    reg.handlers.insert(sig, handler);
    let cli_has_it = CLI_OWNS_INTERRUPTS.load(Ordering::SeqCst) && matches!(sig, 2 | 15);
    if !cli_has_it && !reg.watched.contains(&sig) {
        watch(reg, sig, a.call)?;
    }
    Ok(Value::Nil)
}

fn watch(reg: &mut Registry, sig: i32, span: Span) -> R<()> {
    let failed = |e: std::io::Error| -> Unwind {
        RuntimeError::new(ErrorKind::Io, format!("cannot handle signal {sig}: {e}"), span).into()
    };
    match &reg.watcher {
        Some(h) => h.add_signal(sig).map_err(failed)?,
        None => {
            let mut signals = signal_hook::iterator::Signals::new([sig]).map_err(failed)?;
            reg.watcher = Some(signals.handle());
            std::thread::Builder::new()
                .name("conc-signal".into())
                .spawn(move || {
                    for s in signals.forever() {
                        dispatch(s);
                    }
                })
                .map_err(failed)?;
        }
    }
    reg.watched.push(sig);
    Ok(())
}

/// Run the script's handler for `sig`, if it has one; `false` if it has none.
pub fn dispatch(sig: i32) -> bool {
    let guard = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    let Some(h) = guard.as_ref().and_then(|r| r.handlers.get(&sig)) else { return false };
    let (func, shared, globals, engine_id, span) =
        (h.func.clone(), h.shared.clone(), h.globals.clone(), h.engine_id, h.span);
    drop(guard);
    let name = crate::runtime::zygote::signal_name(sig);
    let spawned = std::thread::Builder::new().name("conc-on-signal".into()).spawn(move || {
        let cancel = shared.root_cancel.child();
        let mut interp = Interp::new(shared.clone(), globals, cancel, shared.settings.limits.max_call_depth);
        interp.engine_id = engine_id;
        interp.task_name = format!("the {name} handler").into();
        let r = interp.call_value(&func, vec![Value::str(&name)], span);
        let r = super::scope::finish_root(&mut interp, r, span);
        if let Err(Unwind::Error(e)) = r {
            if let ErrorKind::Exit(code) = e.kind {
                exit_process(code);
            }
            let sources = Arc::new(shared.sources.read().unwrap_or_else(|e| e.into_inner()).clone());
            let err = crate::error::Error::new(Arc::new(*e), sources);
            shared.output.write(&crate::error::render(&err, false), true);
        }
    });
    spawned.is_ok()
}

/// End the whole process from a task other than the main one (`exit(n)` in a signal
/// handler): nothing it started may outlive it.
pub fn exit_process(code: i32) -> ! {
    super::broker::flush_all();
    super::procs::kill_all();
    super::kill_all_children();
    super::procs::shutdown();
    std::process::exit(code)
}
