//! `fork`: run a closure in another OS process. The closure travels as a portable closure
//! (its definition's place in the program, its captured values, and the globals it can
//! reach) to the process server, which forks a child to run it (see `zygote.rs`).

use super::portable::{unportable_error, Exporter, Wire};
use super::procs::{self, ProcessHandle, ProcessInfo};
use super::task::{Task, TaskKind};
use super::zygote::Job;
use crate::interp::{Interp, R};
use crate::syntax::ast::FnDef;
use crate::syntax::visit::{capture_use, global_refs};
use crate::syntax::Span;
use crate::value::{Closure, Value};
use std::sync::Arc;

pub fn fork(interp: &mut Interp, body: &Arc<FnDef>, span: Span) -> R<Value> {
    let closure = interp.make_closure(body);
    let name = super::spawn::task_name(interp, "fork", span);
    let Value::Func(c) = &closure else { unreachable!("make_closure makes a closure") };
    let func = export_closure(interp, c, span)?;
    let globals = reachable_globals(interp, std::slice::from_ref(&closure))?;
    let task = start(interp, &name, span, Job::Call { func, globals })?;
    super::scope::adopt(interp, task.clone());
    Ok(Value::Object(task))
}

/// Start a child for `job` and return its task; the reactor completes the task.
fn start(interp: &mut Interp, name: &str, span: Span, job: Job) -> R<Arc<Task>> {
    interp.shared.admit_process(span)?;
    let server = match procs::server(span) {
        Ok(s) => s,
        Err(e) => {
            interp.shared.release_process();
            return Err(e);
        }
    };
    let task = Arc::new(Task::new(name, span, interp.cancel.child(), TaskKind::Process { pid: 0 }));
    let info = Arc::new(ProcessInfo::default());
    // A running process is a task that is never blocked on this process's primitives, so
    // nothing waiting for it is ever taken for a deadlock.
    interp.shared.tasks.enter();
    match server.spawn_task(interp, task.clone(), info.clone(), job) {
        Ok(driver) => {
            let handle = ProcessHandle { info, task: Arc::downgrade(&task), driver };
            *task.extra.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(handle));
            Ok(task)
        }
        Err(e) => {
            interp.shared.tasks.leave();
            interp.shared.release_process();
            Err(e)
        }
    }
}

/// A closure as it travels: a capture that cannot cross is an error where the body uses it.
pub fn export_closure(interp: &Interp, c: &Closure, span: Span) -> R<Wire> {
    let ex = Exporter { shared: &interp.shared };
    for (i, v) in c.captures.iter().enumerate() {
        if let Err(u) = ex.value(v) {
            let at = capture_use(&c.def, i as u32).unwrap_or(span);
            let name = source_text(interp, at);
            let what = if name.is_empty() { "a captured value".to_string() } else { format!("`{name}`") };
            return Err(unportable_error(&what, u, at).into());
        }
    }
    ex.value(&Value::Func(Arc::new(Closure { def: c.def.clone(), captures: c.captures.clone() })))
        .map_err(|u| unportable_error("this function", u, span).into())
}

/// The globals `roots` can reach, directly or through the functions they call, with their
/// current values: what the child must see to behave as if it had forked from here.
pub fn reachable_globals(interp: &Interp, roots: &[Value]) -> R<Vec<(u32, Wire)>> {
    let mut defs: Vec<Arc<FnDef>> = Vec::new();
    let mut seen_defs: Vec<*const FnDef> = Vec::new();
    let mut out: Vec<(u32, Wire)> = Vec::new();
    let mut seen_slots: Vec<u32> = Vec::new();
    for r in roots {
        functions_in(r, &mut defs);
    }
    let ex = Exporter { shared: &interp.shared };
    while let Some(def) = defs.pop() {
        if seen_defs.contains(&Arc::as_ptr(&def)) {
            continue;
        }
        seen_defs.push(Arc::as_ptr(&def));
        for &(slot, at) in global_refs(&def) {
            if seen_slots.contains(&slot) {
                continue;
            }
            seen_slots.push(slot);
            let v = interp.globals.get(slot as usize).cloned().unwrap_or_default();
            functions_in(&v, &mut defs);
            match ex.value(&v) {
                Ok(w) => out.push((slot, w)),
                Err(u) => return Err(unportable_error(&format!("`{}`", source_text(interp, at)), u, at).into()),
            }
        }
    }
    Ok(out)
}

/// Every function definition a value holds, inside lists, maps and closures' captures.
fn functions_in(v: &Value, out: &mut Vec<Arc<FnDef>>) {
    match v {
        Value::Func(c) => {
            out.push(c.def.clone());
            c.captures.iter().for_each(|x| functions_in(x, out));
        }
        Value::List(items) => items.iter().for_each(|x| functions_in(x, out)),
        Value::Map(m) => m.values().for_each(|x| functions_in(x, out)),
        _ => {}
    }
}

fn source_text(interp: &Interp, span: Span) -> String {
    let sources = interp.shared.sources.read().unwrap_or_else(|e| e.into_inner());
    sources
        .get(span.file)
        .and_then(|f| f.text.get(span.start as usize..span.end as usize))
        .map(str::to_string)
        .unwrap_or_default()
}

/// A signal by name (`"TERM"`, `"SIGKILL"`, …).
pub fn signal_number(name: &str) -> Option<i32> {
    let upper = name.to_ascii_uppercase();
    let n = upper.trim_start_matches("SIG");
    Some(match n {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "KILL" => 9,
        "USR1" => 10,
        "USR2" => 12,
        "PIPE" => 13,
        "ALRM" => 14,
        "TERM" => 15,
        "CHLD" => 17,
        "CONT" => 18,
        "STOP" => 19,
        "TSTP" => 20,
        "WINCH" => 28,
        _ => return None,
    })
}
