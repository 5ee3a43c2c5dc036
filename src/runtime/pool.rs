//! `pool map F over XS [with {…}]`: run F on every item in a pool of workers and return the
//! results in input order (or completion order). Workers are threads, each with its own
//! interpreter and a copy of the world; a failing item names its index and both spans.

use super::cancel::CancelToken;
use super::wait::block_on;
use crate::builtins::to_list;
use crate::error::{ErrorKind, RuntimeError};
use crate::interp::{Interp, Unwind, R};
use crate::syntax::Span;
use crate::value::{Key, Value};
use std::io::IsTerminal;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

/// What `with {…}` may say.
pub(super) struct Options {
    pub workers: usize,
    pub ordered: bool,
    pub chunk: Option<usize>,
    pub collect_errors: bool,
    pub progress: bool,
    /// Run the items in worker processes instead of threads.
    pub processes: bool,
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

impl Options {
    pub(super) fn parse(v: &Value, span: Span) -> R<Options> {
        let mut o = Options {
            workers: cpus(),
            ordered: true,
            chunk: None,
            collect_errors: false,
            progress: true,
            processes: false,
        };
        let m =
            match v {
                Value::Nil => return Ok(o),
                Value::Map(m) => m,
                Value::Int(n) => {
                    o.workers = positive(*n, "workers", span)?;
                    return Ok(o);
                }
                other => return Err(RuntimeError::new(
                    ErrorKind::Type,
                    format!("`pool map … with` takes a map of options, not {}", crate::builtins::a_type(other)),
                    span,
                )
                .with_help(
                    "for example `with {workers: 4, ordered: false, chunk: 100, errors: \"collect\", progress: false}`",
                )
                .into()),
            };
        for (k, val) in m.iter() {
            let Key::Str(name) = k else { continue };
            match (&**name, val) {
                ("workers", Value::Int(n)) => o.workers = positive(*n, "workers", span)?,
                ("chunk", Value::Int(n)) => o.chunk = Some(positive(*n, "chunk", span)?),
                ("ordered", Value::Bool(b)) => o.ordered = *b,
                ("progress", Value::Bool(b)) => o.progress = *b,
                ("errors", Value::Str(s)) if &**s == "collect" => o.collect_errors = true,
                ("errors", Value::Str(s)) if &**s == "fail" => o.collect_errors = false,
                ("backend", Value::Str(s)) if &**s == "threads" => {}
                ("backend", Value::Str(s)) if &**s == "processes" => o.processes = true,
                (other, v) => {
                    return Err(RuntimeError::new(ErrorKind::Value, format!("unknown or invalid pool option `{other}: {}`", v.repr()), span)
                        .with_help("options: workers (int), chunk (int), ordered (bool), errors (\"fail\" or \"collect\"), progress (bool), backend (\"threads\" or \"processes\")")
                        .into())
                }
            }
        }
        Ok(o)
    }
}

fn positive(n: i64, what: &str, span: Span) -> R<usize> {
    if n < 1 {
        return Err(
            RuntimeError::new(ErrorKind::Value, format!("pool `{what}` must be at least 1, not {n}"), span).into()
        );
    }
    Ok(n as usize)
}

pub(super) type ItemResult = (usize, Result<Value, Box<RuntimeError>>);

pub fn pool_map(interp: &mut Interp, f: Value, xs: Value, opts: Value, span: Span, fspan: Span) -> R<Value> {
    if !matches!(f, Value::Func(_) | Value::Builtin(_) | Value::Native(_)) {
        return Err(RuntimeError::new(
            ErrorKind::Type,
            format!("`pool map` needs a function, not {}", crate::builtins::a_type(&f)),
            fspan,
        )
        .with_label("not a function")
        .into());
    }
    let items = to_list(&xs).ok_or_else(|| -> Unwind {
        RuntimeError::new(
            ErrorKind::Type,
            format!("`pool map` runs over a list, range or map, not {}", crate::builtins::a_type(&xs)),
            span,
        )
        .into()
    })?;
    let opts = Options::parse(&opts, span)?;
    let n = items.len();
    if n == 0 {
        return Ok(Value::list(vec![]));
    }
    if opts.processes {
        let bar = progress_bar(n, opts.progress);
        let done = super::procpool::map(interp, &f, &items, &opts, span, bar.as_ref());
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        return finish(done?, &opts, span);
    }
    let workers = opts.workers.min(n);
    // Tiny tasks in chunks, so the queue is not the bottleneck; big items one at a time.
    let chunk = opts.chunk.unwrap_or_else(|| (n / (workers * 8)).clamp(1, 256));
    let (job_tx, job_rx) = crossbeam_channel::unbounded::<(usize, usize)>();
    for start in (0..n).step_by(chunk) {
        let _ = job_tx.send((start, (start + chunk).min(n)));
    }
    drop(job_tx);
    let (res_tx, res_rx) = crossbeam_channel::unbounded::<ItemResult>();
    let cancel = interp.cancel.child();
    let bar = progress_bar(n, opts.progress);
    let outcome = std::thread::scope(|s| -> R<Vec<ItemResult>> {
        for w in 0..workers {
            interp.shared.admit_thread(span)?;
            let mut child = interp.fork_world(cancel.clone(), interp.shared.settings.limits.max_call_depth);
            child.task_name = format!("pool worker {w}").into();
            let (f, items, jobs, results, token) =
                (f.clone(), items.clone(), job_rx.clone(), res_tx.clone(), cancel.clone());
            let shared = interp.shared.clone();
            shared.tasks.enter();
            let spawned = std::thread::Builder::new()
                .name(format!("conc:pool{w}"))
                .stack_size(super::spawn::THREAD_STACK)
                .spawn_scoped(s, move || {
                    work(&mut child, &f, &items, &jobs, &results, &token, span);
                    drop(child);
                    shared.tasks.leave();
                    shared.release_thread();
                });
            if let Err(e) = spawned {
                interp.shared.tasks.leave();
                interp.shared.release_thread();
                cancel.cancel();
                return Err(
                    RuntimeError::new(ErrorKind::Limit, format!("could not start a pool worker: {e}"), span).into()
                );
            }
        }
        drop(res_tx);
        collect(interp, &res_rx, n, &cancel, &opts, span, bar.as_ref())
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    finish(outcome?, &opts, span)
}

/// Results in input order (or as they came), with the failures raised or collected.
fn finish(mut done: Vec<ItemResult>, opts: &Options, span: Span) -> R<Value> {
    if opts.ordered {
        done.sort_by_key(|(i, _)| *i);
    }
    let mut out = Vec::with_capacity(done.len());
    for (i, r) in done {
        match r {
            Ok(v) => out.push(v),
            Err(e) if opts.collect_errors => out.push(Value::Error(Arc::new(item_failure(*e, i, span)))),
            Err(e) => return Err(item_failure(*e, i, span).into()),
        }
    }
    Ok(Value::list(out))
}

/// A worker: take chunks of items until the queue is empty or the map is cancelled.
fn work(
    child: &mut Interp,
    f: &Value,
    items: &Arc<Vec<Value>>,
    jobs: &crossbeam_channel::Receiver<(usize, usize)>,
    results: &crossbeam_channel::Sender<ItemResult>,
    cancel: &CancelToken,
    span: Span,
) {
    while let Ok((start, end)) = jobs.recv() {
        for i in start..end {
            if cancel.is_cancelled() {
                return;
            }
            let r = catch_unwind(AssertUnwindSafe(|| child.call_value(f, vec![items[i].clone()], span)));
            let r = match r {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(Unwind::Error(e))) => Err(e),
                Ok(Err(_)) => Ok(Value::Nil),
                Err(panic) => Err(Box::new(super::spawn::panic_error(panic, span))),
            };
            if results.send((i, r)).is_err() {
                return;
            }
        }
    }
}

/// Gather results; on the first failure (unless collecting errors) cancel the rest.
fn collect(
    interp: &Interp,
    rx: &crossbeam_channel::Receiver<ItemResult>,
    n: usize,
    cancel: &CancelToken,
    opts: &Options,
    span: Span,
    bar: Option<&indicatif::ProgressBar>,
) -> R<Vec<ItemResult>> {
    let mut done: Vec<ItemResult> = Vec::with_capacity(n);
    let mut failed: Option<ItemResult> = None;
    while done.len() < n {
        let next = block_on(interp, span, "`pool map` results", None, |slice| match rx.recv_timeout(slice) {
            Ok(r) => Some(Some(r)),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Some(None),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
        });
        let item = match next {
            Ok(Some(item)) => item,
            Ok(None) => break,
            Err(e) => {
                cancel.cancel();
                while rx.recv().is_ok() {}
                return Err(e);
            }
        };
        if let Some(b) = bar {
            b.inc(1);
        }
        if item.1.is_err() && !opts.collect_errors {
            cancel.cancel();
            failed.get_or_insert(item);
            continue;
        }
        done.push(item);
    }
    if let Some((i, Err(e))) = failed {
        while rx.recv().is_ok() {}
        return Err(item_failure(*e, i, span).into());
    }
    // Workers stop early only when the map is cancelled: never return part of the results.
    if done.len() < n {
        interp.check_cancel(span)?;
        return Err(super::cancel::cancelled_error(span).into());
    }
    Ok(done)
}

/// The error for a failed item: the pool's span first, where it failed as related.
pub(super) fn item_failure(e: RuntimeError, index: usize, span: Span) -> RuntimeError {
    if e.kind == ErrorKind::Cancelled || matches!(e.kind, ErrorKind::Exit(_)) {
        return e;
    }
    let mut out = RuntimeError::new(e.kind, format!("item {index} failed: {}", e.message), span)
        .with_label(format!("item {index} of this `pool map` failed"))
        .with_data(e.data.clone());
    out.help = e.help.clone();
    out.with_related(Arc::new(e))
}

/// A progress bar on stderr for maps of more than a few items, only when stderr is a terminal.
fn progress_bar(n: usize, wanted: bool) -> Option<indicatif::ProgressBar> {
    if !wanted
        || n <= 8
        || !std::io::stderr().is_terminal()
        || std::env::var_os("NO_COLOR").is_some() && std::env::var_os("CONC_PROGRESS").is_none()
    {
        return None;
    }
    let bar = indicatif::ProgressBar::new(n as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {elapsed} eta {eta}") {
        bar.set_style(style);
    }
    Some(bar)
}
