//! `lock` and the other synchronisation primitives: mutex, re-entrant lock, semaphore,
//! condition, event, barrier, and shared cells, the only shared mutable state in conc.
//! Every blocking call goes through `block_on`, so each takes a timeout, stops promptly
//! when its task is cancelled, and takes part in deadlock detection.

use super::portable::SharedKind;
use super::wait::block_on;
use crate::builtins::Args;
use crate::error::{ErrorKind, RuntimeError};
use crate::interp::{Interp, Unwind, R};
use crate::syntax::ast::Block;
use crate::syntax::Span;
use crate::value::{Object, Value};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn me() -> ThreadId {
    std::thread::current().id()
}

/// An owned lock with an optional re-entrancy count.
#[derive(Debug)]
pub struct LockCore {
    state: Mutex<(Option<ThreadId>, usize)>,
    cv: Condvar,
    reentrant: bool,
    /// Set when a process died holding the lock: every later acquire fails with this.
    poisoned: Mutex<Option<String>>,
}

impl LockCore {
    fn new(reentrant: bool) -> LockCore {
        LockCore { state: Mutex::new((None, 0)), cv: Condvar::new(), reentrant, poisoned: Mutex::new(None) }
    }

    fn poison_error(&self, span: Span) -> Option<Unwind> {
        let why = guard(&self.poisoned).clone()?;
        Some(
            RuntimeError::new(ErrorKind::Task, why, span)
                .with_label("this lock can no longer be taken")
                .with_help("the process holding it died mid-update, so what it guards may be half-changed")
                .into(),
        )
    }

    /// The holder died: mark the lock and wake the waiters, each to fail. The lock stays
    /// held by the dead owner, so no acquire can slip in between the mark and its check.
    pub fn poison(&self, why: String) {
        guard(&self.poisoned).get_or_insert(why);
        self.cv.notify_all();
    }

    fn try_take(&self) -> bool {
        let mut st = guard(&self.state);
        if st.0.is_none() {
            *st = (Some(me()), 1);
            true
        } else {
            false
        }
    }

    /// Acquire, or time out with `false` when a timeout is given.
    pub fn acquire(&self, interp: &Interp, timeout: Option<Duration>, span: Span, what: &str) -> R<bool> {
        if let Some(e) = self.poison_error(span) {
            return Err(e);
        }
        {
            let mut st = guard(&self.state);
            match st.0 {
                None => {
                    *st = (Some(me()), 1);
                    return Ok(true);
                }
                Some(owner) if owner == me() => {
                    if self.reentrant {
                        st.1 += 1;
                        return Ok(true);
                    }
                    return Err(RuntimeError::new(
                        ErrorKind::Deadlock,
                        format!("this task already holds the {what}"),
                        span,
                    )
                    .with_label("acquiring it again would wait forever")
                    .with_help("use `rlock()` for a lock the same task may take again")
                    .into());
                }
                Some(_) => {}
            }
        }
        let r = block_on(interp, span, &format!("acquiring a {what}"), timeout, |slice| {
            if guard(&self.poisoned).is_some() {
                return Some(false);
            }
            if slice.is_zero() {
                return self.try_take().then_some(true);
            }
            let st = guard(&self.state);
            let (mut st, _) =
                self.cv.wait_timeout_while(st, slice, |s| s.0.is_some()).unwrap_or_else(|e| e.into_inner());
            if st.0.is_none() {
                *st = (Some(me()), 1);
                Some(true)
            } else {
                None
            }
        });
        match r {
            Ok(true) => Ok(true),
            Ok(false) => Err(self.poison_error(span).expect("poisoned above")),
            Err(Unwind::Error(e)) if e.kind == ErrorKind::Timeout => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub fn release(&self, span: Span, what: &str) -> R<()> {
        let mut st = guard(&self.state);
        if st.0 != Some(me()) {
            return Err(RuntimeError::new(
                ErrorKind::Value,
                format!("release of a {what} this task does not hold"),
                span,
            )
            .with_label("not held here")
            .into());
        }
        st.1 -= 1;
        if st.1 == 0 {
            st.0 = None;
            drop(st);
            self.cv.notify_one();
        }
        Ok(())
    }

    fn held_by_me(&self) -> bool {
        guard(&self.state).0 == Some(me())
    }

    /// Give the lock up entirely (for a condition wait), returning the count to restore.
    fn release_all(&self) -> usize {
        let mut st = guard(&self.state);
        let count = st.1;
        *st = (None, 0);
        drop(st);
        self.cv.notify_one();
        count
    }

    fn restore(&self, interp: &Interp, count: usize, span: Span) -> R<()> {
        self.acquire(interp, None, span, "lock")?;
        guard(&self.state).1 = count;
        Ok(())
    }

    fn is_locked(&self) -> bool {
        guard(&self.state).0.is_some()
    }
}

macro_rules! object {
    ($t:ty, $name:literal) => {
        impl Object for $t {
            fn type_name(&self) -> &'static str {
                $name
            }
            fn as_any(&self) -> &dyn std::any::Any {
                self
            }
        }
    };
}

#[derive(Debug)]
pub struct Lock(LockCore);
object!(Lock, "lock");

#[derive(Debug)]
pub struct Semaphore {
    permits: Mutex<i64>,
    cv: Condvar,
}
object!(Semaphore, "semaphore");

impl Semaphore {
    fn acquire(&self, interp: &Interp, timeout: Option<Duration>, span: Span) -> R<bool> {
        let r = block_on(interp, span, "acquiring a semaphore", timeout, |slice| {
            let p = guard(&self.permits);
            let (mut p, _) = self.cv.wait_timeout_while(p, slice, |p| *p <= 0).unwrap_or_else(|e| e.into_inner());
            if *p > 0 {
                *p -= 1;
                Some(())
            } else {
                None
            }
        });
        match r {
            Ok(()) => Ok(true),
            Err(Unwind::Error(e)) if e.kind == ErrorKind::Timeout => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn release(&self) {
        *guard(&self.permits) += 1;
        self.cv.notify_one();
    }
}

#[derive(Debug)]
pub struct Condition {
    lock: LockCore,
    generation: Mutex<u64>,
    cv: Condvar,
}
object!(Condition, "condition");

impl Condition {
    /// Wait for a notification (or for `pred()` to hold), releasing the lock meanwhile.
    fn wait(&self, interp: &mut Interp, pred: Option<&Value>, timeout: Option<Duration>, span: Span) -> R<bool> {
        if !self.lock.held_by_me() {
            return Err(RuntimeError::new(ErrorKind::Value, "`wait` on a condition needs its lock", span)
                .with_label("the condition's lock is not held here")
                .with_help("write `lock c { c.wait(fn() { ready.get() }) }`")
                .into());
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(p) = pred {
                if interp.call_value(p, vec![], span)?.truthy() {
                    return Ok(true);
                }
            }
            let seen = *guard(&self.generation);
            let count = self.lock.release_all();
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let woke = block_on(interp, span, "waiting on a condition", left, |slice| {
                let g = guard(&self.generation);
                let (g, _) = self.cv.wait_timeout_while(g, slice, |g| *g == seen).unwrap_or_else(|e| e.into_inner());
                (*g != seen).then_some(())
            });
            self.lock.restore(interp, count, span)?;
            match woke {
                Ok(()) if pred.is_none() => return Ok(true),
                Ok(()) => continue,
                Err(Unwind::Error(e)) if e.kind == ErrorKind::Timeout => {
                    return match pred {
                        Some(p) => Ok(interp.call_value(p, vec![], span)?.truthy()),
                        None => Ok(false),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn notify(&self, all: bool) {
        *guard(&self.generation) += 1;
        if all {
            self.cv.notify_all();
        } else {
            self.cv.notify_one();
        }
    }
}

#[derive(Debug)]
pub struct Event {
    flag: Mutex<bool>,
    cv: Condvar,
}
object!(Event, "event");

impl Event {
    fn wait(&self, interp: &Interp, timeout: Option<Duration>, span: Span) -> R<bool> {
        let r = block_on(interp, span, "waiting for an event", timeout, |slice| {
            let f = guard(&self.flag);
            let (f, _) = self.cv.wait_timeout_while(f, slice, |f| !*f).unwrap_or_else(|e| e.into_inner());
            f.then_some(())
        });
        match r {
            Ok(()) => Ok(true),
            Err(Unwind::Error(e)) if e.kind == ErrorKind::Timeout => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[derive(Debug)]
pub struct Barrier {
    parties: usize,
    /// Arrived count and generation.
    state: Mutex<(usize, u64)>,
    cv: Condvar,
}
object!(Barrier, "barrier");

impl Barrier {
    /// Wait until all parties arrive; returns this task's arrival index.
    fn wait(&self, interp: &Interp, timeout: Option<Duration>, span: Span) -> R<Value> {
        let (index, generation) = {
            let mut st = guard(&self.state);
            let index = st.0;
            st.0 += 1;
            if st.0 == self.parties {
                st.0 = 0;
                st.1 += 1;
                drop(st);
                self.cv.notify_all();
                return Ok(Value::Int(index as i64));
            }
            (index, st.1)
        };
        let r = block_on(interp, span, "waiting at a barrier", timeout, |slice| {
            let st = guard(&self.state);
            let (st, _) =
                self.cv.wait_timeout_while(st, slice, |s| s.1 == generation).unwrap_or_else(|e| e.into_inner());
            (st.1 != generation).then_some(())
        });
        if let Err(e) = r {
            let mut st = guard(&self.state);
            if st.1 == generation {
                st.0 = st.0.saturating_sub(1);
            }
            return Err(e);
        }
        Ok(Value::Int(index as i64))
    }
}

/// A shared mutable value. `update(fn)` is atomic: no update is ever lost.
#[derive(Debug)]
pub struct Cell {
    core: LockCore,
    value: Mutex<Value>,
}
object!(Cell, "cell");

impl Cell {
    fn set(&self, interp: &Interp, v: Value, span: Span) -> R<()> {
        self.core.acquire(interp, None, span, "cell")?;
        *guard(&self.value) = v;
        self.core.release(span, "cell")
    }

    fn update(&self, interp: &mut Interp, f: &Value, span: Span) -> R<Value> {
        self.core.acquire(interp, None, span, "cell").map_err(|e| match e {
            Unwind::Error(mut err) if err.kind == ErrorKind::Deadlock => {
                err.message = "a cell's update function cannot change the same cell".into();
                err.help = Some("return the new value from the function instead".into());
                Unwind::Error(err)
            }
            e => e,
        })?;
        let old = guard(&self.value).clone();
        let r = interp.call_value(f, vec![old], span);
        if let Ok(new) = &r {
            *guard(&self.value) = new.clone();
        }
        self.core.release(span, "cell")?;
        r
    }
}

type Builtin = fn(&mut Interp, Args) -> R<Value>;

pub static BUILTINS: &[(&str, Builtin)] = &[
    ("mutex", |_, a| {
        a.expect("mutex", 0, 0)?;
        Ok(Value::object(Lock(LockCore::new(false))))
    }),
    ("rlock", |_, a| {
        a.expect("rlock", 0, 0)?;
        Ok(Value::object(Lock(LockCore::new(true))))
    }),
    ("semaphore", |_, a| {
        a.expect("semaphore", 0, 1)?;
        let n = if a.is_empty() { 1 } else { a.int(0, "semaphore")? };
        if n < 0 {
            return Err(RuntimeError::new(ErrorKind::Value, "a semaphore needs zero or more permits", a.span(0)).into());
        }
        Ok(Value::object(Semaphore { permits: Mutex::new(n), cv: Condvar::new() }))
    }),
    ("condition", |_, a| {
        a.expect("condition", 0, 0)?;
        Ok(Value::object(Condition { lock: LockCore::new(true), generation: Mutex::new(0), cv: Condvar::new() }))
    }),
    ("event", |_, a| {
        a.expect("event", 0, 0)?;
        Ok(Value::object(Event { flag: Mutex::new(false), cv: Condvar::new() }))
    }),
    ("barrier", |_, a| {
        a.expect("barrier", 1, 1)?;
        let n = a.int(0, "barrier")?;
        if n < 1 {
            return Err(RuntimeError::new(ErrorKind::Value, "a barrier needs at least one party", a.span(0)).into());
        }
        Ok(Value::object(Barrier { parties: n as usize, state: Mutex::new((0, 0)), cv: Condvar::new() }))
    }),
    ("cell", |_, a| {
        a.expect("cell", 0, 1)?;
        Ok(Value::object(Cell {
            core: LockCore::new(false),
            value: Mutex::new(a.vals.first().cloned().unwrap_or_default()),
        }))
    }),
];

/// `lock x { body }`: hold a mutex, re-entrant lock, semaphore or condition for the block,
/// and release it on every way out.
pub fn with_lock(interp: &mut Interp, l: &Value, body: &Block, span: Span, target: Span) -> R<Value> {
    hold(interp, l, target)?;
    let r = interp.exec_block(body);
    unhold(interp, l, span)?;
    r
}

/// Take what `lock x { }` takes: a mutex, re-entrant lock, semaphore or condition's lock.
pub fn hold(interp: &mut Interp, l: &Value, target: Span) -> R<()> {
    if let Some(r) = l.downcast::<super::broker::Remote>() {
        return r.hold(interp, target);
    }
    if let Some(s) = l.downcast::<Semaphore>() {
        s.acquire(interp, None, target)?;
        return Ok(());
    }
    lock_core(l, target)?.acquire(interp, None, target, "lock")?;
    Ok(())
}

/// Give back what [`hold`] took.
pub fn unhold(interp: &mut Interp, l: &Value, span: Span) -> R<()> {
    if let Some(r) = l.downcast::<super::broker::Remote>() {
        return r.unhold(interp, span);
    }
    if let Some(s) = l.downcast::<Semaphore>() {
        s.release();
    } else {
        lock_core(l, span)?.release(span, "lock")?;
    }
    interp.shared.tasks.bump();
    Ok(())
}

fn lock_core(l: &Value, target: Span) -> R<&LockCore> {
    match (l.downcast::<Lock>(), l.downcast::<Condition>()) {
        (Some(lock), _) => Ok(&lock.0),
        (_, Some(c)) => Ok(&c.lock),
        _ => Err(RuntimeError::new(
            ErrorKind::Type,
            format!("`lock` needs a mutex, rlock, semaphore or condition, not {}", crate::builtins::a_type(l)),
            target,
        )
        .with_label(format!("this is {}", crate::builtins::a_type(l)))
        .with_help("make one with `mutex()`, `rlock()`, `semaphore(n)` or `condition()`")
        .into()),
    }
}

/// What a process holding `l` must give back if it dies: its lock, or a semaphore permit.
pub fn abandon(l: &Value, why: &str) {
    if let Some(s) = l.downcast::<Semaphore>() {
        s.release();
    } else if let Some(core) = l.downcast::<Lock>().map(|x| &x.0).or_else(|| l.downcast::<Condition>().map(|c| &c.lock))
    {
        core.poison(why.to_string());
    } else if let Some(c) = l.downcast::<Cell>() {
        c.core.poison(why.to_string());
    }
}

/// Which kind of shareable object `v` is, if it is one of these.
pub fn kind_of(v: &Value) -> Option<SharedKind> {
    Some(if let Some(l) = v.downcast::<Lock>() {
        if l.0.reentrant {
            SharedKind::RLock
        } else {
            SharedKind::Mutex
        }
    } else if v.downcast::<Semaphore>().is_some() {
        SharedKind::Semaphore
    } else if v.downcast::<Condition>().is_some() {
        SharedKind::Condition
    } else if v.downcast::<Event>().is_some() {
        SharedKind::Event
    } else if v.downcast::<Barrier>().is_some() {
        SharedKind::Barrier
    } else if v.downcast::<Cell>().is_some() {
        SharedKind::Cell
    } else {
        return None;
    })
}

pub fn method(interp: &mut Interp, v: &Value, name: &str, name_span: Span, a: &Args) -> Option<R<Value>> {
    if let Some(l) = v.downcast::<Lock>() {
        return Some(match name {
            "acquire" => a.expect("acquire", 0, 1).and_then(|_| {
                let t = a.timeout(0, "acquire")?;
                Ok(Value::Bool(l.0.acquire(interp, t, a.call, "lock")?))
            }),
            "release" => l.0.release(a.call, "lock").map(|_| {
                interp.shared.tasks.bump();
                Value::Nil
            }),
            "locked" => Ok(Value::Bool(l.0.is_locked())),
            _ => unknown(v, name, name_span, "`acquire(timeout)`, `release()` and `locked()`"),
        });
    }
    if let Some(s) = v.downcast::<Semaphore>() {
        return Some(match name {
            "acquire" => a
                .expect("acquire", 0, 1)
                .and_then(|_| Ok(Value::Bool(s.acquire(interp, a.timeout(0, "acquire")?, a.call)?))),
            "release" => {
                s.release();
                interp.shared.tasks.bump();
                Ok(Value::Nil)
            }
            "available" => Ok(Value::Int(*guard(&s.permits))),
            _ => unknown(v, name, name_span, "`acquire(timeout)`, `release()` and `available()`"),
        });
    }
    if let Some(c) = v.downcast::<Condition>() {
        return Some(match name {
            "wait" => a.expect("wait", 0, 2).and_then(|_| {
                let pred = a.vals.first().filter(|p| !matches!(p, Value::Nil)).cloned();
                let t = a.timeout(1, "wait")?;
                Ok(Value::Bool(c.wait(interp, pred.as_ref(), t, a.call)?))
            }),
            "notify" => {
                c.notify(false);
                Ok(Value::Nil)
            }
            "notify_all" => {
                c.notify(true);
                Ok(Value::Nil)
            }
            _ => unknown(v, name, name_span, "`wait(predicate, timeout)`, `notify()` and `notify_all()`"),
        });
    }
    if let Some(e) = v.downcast::<Event>() {
        return Some(match name {
            "set" => {
                *guard(&e.flag) = true;
                e.cv.notify_all();
                interp.shared.tasks.bump();
                Ok(Value::Nil)
            }
            "clear" => {
                *guard(&e.flag) = false;
                Ok(Value::Nil)
            }
            "is_set" => Ok(Value::Bool(*guard(&e.flag))),
            "wait" => a.expect("wait", 0, 1).and_then(|_| {
                let t = a.timeout(0, "wait")?;
                Ok(Value::Bool(e.wait(interp, t, a.call)?))
            }),
            _ => unknown(v, name, name_span, "`set()`, `clear()`, `is_set()` and `wait(timeout)`"),
        });
    }
    if let Some(b) = v.downcast::<Barrier>() {
        return Some(match name {
            "wait" => a.expect("wait", 0, 1).and_then(|_| b.wait(interp, a.timeout(0, "wait")?, a.call)),
            "parties" => Ok(Value::Int(b.parties as i64)),
            _ => unknown(v, name, name_span, "`wait(timeout)` and `parties()`"),
        });
    }
    if let Some(c) = v.downcast::<Cell>() {
        return Some(match name {
            "get" => Ok(guard(&c.value).clone()),
            "set" => a.expect("set", 1, 1).and_then(|_| c.set(interp, a.vals[0].clone(), a.call).map(|_| Value::Nil)),
            "update" => a.expect("update", 1, 1).and_then(|_| c.update(interp, &a.vals[0], a.call)),
            _ => unknown(v, name, name_span, "`get()`, `set(value)` and `update(fn)`"),
        });
    }
    None
}

fn unknown(v: &Value, name: &str, span: Span, has: &str) -> R<Value> {
    Err(RuntimeError::new(ErrorKind::Type, format!("{} has no method `{name}`", crate::builtins::a_type(v)), span)
        .with_label("unknown method")
        .with_help(format!("{} has {has}", crate::builtins::a_type(v)))
        .into())
}
