//! Channels between tasks (`pipe()`), built on crossbeam-channel, and `select`.
//!
//! A channel is closed explicitly with `close()`: the sending half is dropped, so receivers
//! drain what is left and then see the end, and `for v in ch { }` finishes.

use super::wait::block_on;
use crate::builtins::Args;
use crate::error::{ErrorKind, RuntimeError};
use crate::interp::{Interp, Unwind, R};
use crate::syntax::ast::SelectArm;
use crate::syntax::Span;
use crate::value::{Object, Value};
use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender, TryRecvError};
use crossbeam_utils::CachePadded;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// The sending half's lock and the receiving half sit on cache lines of their own: a
/// sender writes its lock (and the `Arc`'s count before the struct) on every send, and a
/// receiver that shared a line with those would miss its cache on every receive.
pub struct Channel {
    tx: CachePadded<RwLock<Option<Sender<Value>>>>,
    rx: CachePadded<Receiver<Value>>,
    capacity: Option<usize>,
    /// Why the channel closed, when a process that used it died: raised once it is drained.
    failure: RwLock<Option<String>>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.describe())
    }
}

impl Object for Channel {
    fn type_name(&self) -> &'static str {
        "channel"
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn describe(&self) -> String {
        let cap = self.capacity.map_or("unbounded".to_string(), |c| format!("capacity {c}"));
        let state = if self.is_closed() { ", closed" } else { "" };
        format!("<channel {cap}, {} queued{state}>", self.rx.len())
    }
}

impl Channel {
    pub fn new(capacity: Option<usize>) -> Channel {
        let (tx, rx) = match capacity {
            Some(n) => crossbeam_channel::bounded(n),
            None => crossbeam_channel::unbounded(),
        };
        Channel {
            tx: CachePadded::new(RwLock::new(Some(tx))),
            rx: CachePadded::new(rx),
            capacity,
            failure: RwLock::new(None),
        }
    }

    /// The receiving side, for runtime code that drains a channel without an interpreter
    /// (a command's stdin fed from a channel).
    pub fn receiver(&self) -> Receiver<Value> {
        (*self.rx).clone()
    }

    pub fn is_closed(&self) -> bool {
        self.tx.read().unwrap_or_else(|e| e.into_inner()).is_none()
    }

    pub fn close(&self) {
        self.tx.write().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Close the channel because a process using it died: `why` is raised to whoever
    /// receives once the values already sent are drained, and to every later sender.
    pub fn fail(&self, why: String) {
        self.failure.write().unwrap_or_else(|e| e.into_inner()).get_or_insert(why);
        self.close();
    }

    fn failure_error(&self, span: Span) -> Option<Unwind> {
        let why = self.failure.read().unwrap_or_else(|e| e.into_inner()).clone()?;
        Some(
            RuntimeError::new(ErrorKind::Task, why, span)
                .with_label("the channel closed under this call")
                .with_help("a process that used this channel died before closing it")
                .into(),
        )
    }

    fn closed_error(span: Span, what: &str) -> Unwind {
        RuntimeError::new(ErrorKind::Value, format!("{what} on a closed channel"), span)
            .with_label("the channel was closed")
            .with_help("check `ch.closed` first, or iterate with `for v in ch { }` which stops at the close")
            .into()
    }

    pub fn send(&self, interp: &Interp, v: Value, timeout: Option<Duration>, span: Span) -> R<()> {
        if self.capacity.is_none() {
            // An unbounded send never blocks, so it runs under the read lock rather than on a
            // clone of the sender (whose count the receiving side's thread shares).
            let tx = self.tx.read().unwrap_or_else(|e| e.into_inner());
            return match tx.as_ref() {
                Some(tx) => tx.send(v).map_err(|_| Channel::closed_error(span, "send")),
                None => Err(self.send_refused(span)),
            };
        }
        let tx = self.tx.read().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(tx) = tx else {
            return Err(self.send_refused(span));
        };
        let mut pending = Some(v);
        let mut disconnected = false;
        block_on(interp, span, "sending on a full channel", timeout, |slice| {
            let item = pending.take()?;
            let r = if slice.is_zero() {
                tx.try_send(item).map_err(|e| e.into_inner())
            } else {
                match tx.send_timeout(item, slice) {
                    Ok(()) => Ok(()),
                    Err(SendTimeoutError::Timeout(v)) => Err(v),
                    Err(SendTimeoutError::Disconnected(v)) => {
                        disconnected = true;
                        Err(v)
                    }
                }
            };
            match r {
                Ok(()) => Some(()),
                Err(_) if disconnected => Some(()),
                Err(v) => {
                    pending = Some(v);
                    None
                }
            }
        })?;
        if disconnected {
            return Err(Channel::closed_error(span, "send"));
        }
        Ok(())
    }

    /// Why a send cannot go through: the channel closed, or a process using it died.
    fn send_refused(&self, span: Span) -> Unwind {
        self.failure_error(span).unwrap_or_else(|| Channel::closed_error(span, "send"))
    }

    /// `ch.recv()`: the next value, or an error once the channel is closed and drained.
    pub fn recv_value(&self, interp: &Interp, timeout: Option<Duration>, span: Span) -> R<Value> {
        self.recv(interp, timeout, span)?.ok_or_else(|| Channel::closed_error(span, "recv"))
    }

    /// The next value, or `None` once the channel is closed and drained.
    pub fn recv(&self, interp: &Interp, timeout: Option<Duration>, span: Span) -> R<Option<Value>> {
        let got =
            match self.rx.try_recv() {
                Ok(v) => return Ok(Some(v)),
                Err(TryRecvError::Disconnected) => None,
                Err(TryRecvError::Empty) => block_on(interp, span, "receiving from a channel", timeout, |slice| {
                    match self.rx.recv_timeout(slice) {
                        Ok(v) => Some(Some(v)),
                        Err(RecvTimeoutError::Disconnected) => Some(None),
                        Err(RecvTimeoutError::Timeout) => None,
                    }
                })?,
            };
        match got {
            Some(v) => Ok(Some(v)),
            None => self.failure_error(span).map_or(Ok(None), Err),
        }
    }
}

fn channel_of(v: &Value) -> Option<&Channel> {
    v.downcast::<Channel>()
}

/// `pipe()` makes an unbounded channel; `pipe(n)` one that holds at most `n` values.
pub fn make_pipe(_: &mut Interp, a: Args) -> R<Value> {
    a.expect("pipe", 0, 1)?;
    let capacity = match a.vals.first() {
        None | Some(Value::Nil) => None,
        Some(_) => {
            let n = a.int(0, "pipe")?;
            if n < 0 {
                return Err(
                    RuntimeError::new(ErrorKind::Value, "a channel's capacity cannot be negative", a.span(0)).into()
                );
            }
            Some(n as usize)
        }
    };
    Ok(Value::object(Channel::new(capacity)))
}

pub fn field(v: &Value, name: &str) -> Option<Value> {
    let ch = channel_of(v)?;
    Some(match name {
        "closed" => Value::Bool(ch.is_closed()),
        "capacity" => ch.capacity.map_or(Value::Nil, |c| Value::Int(c as i64)),
        _ => return None,
    })
}

pub fn method(interp: &mut Interp, v: &Value, name: &str, _span: Span, a: &Args) -> Option<R<Value>> {
    let ch = channel_of(v)?;
    Some((|| {
        match name {
        "send" => {
            a.expect("send", 1, 2)?;
            ch.send(interp, a.vals[0].clone(), a.timeout(1, "send")?, a.call)?;
            Ok(Value::Nil)
        }
        "recv" => {
            a.expect("recv", 0, 1)?;
            ch.recv_value(interp, a.timeout(0, "recv")?, a.call)
        }
        "try_recv" => {
            a.expect("try_recv", 0, 0)?;
            Ok(ch.rx.try_recv().unwrap_or(Value::Nil))
        }
        "close" => {
            ch.close();
            interp.shared.tasks.bump();
            Ok(Value::Nil)
        }
        "len" => Ok(Value::Int(ch.rx.len() as i64)),
        "is_empty" => Ok(Value::Bool(ch.rx.is_empty())),
        _ => Err(RuntimeError::new(ErrorKind::Type, format!("a channel has no method `{name}`"), a.call)
            .with_help("channels have `send(v, timeout)`, `recv(timeout)`, `try_recv()`, `close()`, `len()` and the fields `closed` and `capacity`")
            .into()),
    }
    })())
}

pub fn iterate_next(interp: &mut Interp, v: &Value, span: Span) -> Option<R<Option<Value>>> {
    let ch = channel_of(v)?;
    Some(ch.recv(interp, None, span))
}

/// `select { recv ch as v => { } timeout 1.5 => { } default => { } }`: run the arm of the
/// first channel with a value, or the timeout or default arm.
pub fn select(interp: &mut Interp, arms: &[SelectArm], span: Span) -> R<Value> {
    let mut chans: Vec<(usize, Value)> = Vec::new();
    let mut timeout: Option<(Duration, usize)> = None;
    let mut default: Option<usize> = None;
    for (i, arm) in arms.iter().enumerate() {
        match arm {
            SelectArm::Recv { chan, .. } => {
                let c = interp.eval(chan)?;
                if c.downcast::<super::broker::Remote>().is_some() {
                    return Err(RuntimeError::new(
                        ErrorKind::Type,
                        "`select` cannot wait on a channel that belongs to another process",
                        chan.span(),
                    )
                    .with_label("this channel was made in another process")
                    .with_help("receive from it with `ch.recv(timeout)`, or forward it into a channel of this process from a `spawn`ed task")
                    .into());
                }
                if channel_of(&c).is_none() {
                    return Err(RuntimeError::new(
                        ErrorKind::Type,
                        format!("`select` receives from channels, not {}", crate::builtins::a_type(&c)),
                        chan.span(),
                    )
                    .with_label(format!("this is {}", crate::builtins::a_type(&c)))
                    .into());
                }
                chans.push((i, c));
            }
            SelectArm::Timeout { secs, .. } => {
                let s = interp.eval(secs)?;
                let secs_f = match s {
                    Value::Int(n) => n as f64,
                    Value::Float(f) => f,
                    other => {
                        return Err(crate::interp::type_error(
                            format!("a timeout is a number of seconds, not {}", crate::builtins::a_type(&other)),
                            secs.span(),
                            &other,
                        ))
                    }
                };
                timeout = Some((Duration::from_secs_f64(secs_f.max(0.0)), i));
            }
            SelectArm::Default { .. } => default = Some(i),
        }
    }
    let mut open: Vec<bool> = vec![true; chans.len()];
    let deadline = timeout.map(|(d, _)| Instant::now() + d);
    let picked = loop {
        let live: Vec<usize> = (0..chans.len()).filter(|&k| open[k]).collect();
        if live.is_empty() && default.is_none() && timeout.is_none() {
            return Err(RuntimeError::new(ErrorKind::Value, "`select`: every channel is closed", span)
                .with_label("nothing left to receive")
                .into());
        }
        let try_all = |open: &mut Vec<bool>| -> Option<(usize, Value)> {
            for &k in &live {
                match channel_of(&chans[k].1).expect("checked").rx.try_recv() {
                    Ok(v) => return Some((k, v)),
                    Err(TryRecvError::Disconnected) => open[k] = false,
                    Err(TryRecvError::Empty) => {}
                }
            }
            None
        };
        if let Some(hit) = try_all(&mut open) {
            break Some(hit);
        }
        if default.is_some() {
            break None;
        }
        if open.iter().all(|o| !o) && timeout.is_none() {
            continue;
        }
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left.is_some_and(|l| l.is_zero()) {
            break None;
        }
        let receivers: Vec<&Receiver<Value>> =
            live.iter().filter(|&&k| open[k]).map(|&k| &*channel_of(&chans[k].1).expect("checked").rx).collect();
        let ready = block_on(interp, span, "`select`", left, |slice| {
            if receivers.is_empty() {
                std::thread::sleep(slice.min(Duration::from_millis(5)));
                return None;
            }
            let mut sel = crossbeam_channel::Select::new();
            for r in &receivers {
                sel.recv(r);
            }
            let got = if slice.is_zero() { sel.try_ready().ok() } else { sel.ready_timeout(slice).ok() };
            got.map(|_| ())
        });
        match ready {
            Ok(()) => continue,
            Err(Unwind::Error(e)) if e.kind == ErrorKind::Timeout && timeout.is_some() => break None,
            Err(e) => return Err(e),
        }
    };
    match picked {
        Some((k, v)) => {
            let arm_index = chans[k].0;
            let SelectArm::Recv { var, body, .. } = &arms[arm_index] else {
                unreachable!("channel arms are recv arms")
            };
            interp.bind_var(var, v)?;
            interp.exec_block(body)
        }
        None => {
            let idx = default.or(timeout.map(|(_, i)| i)).expect("a default or timeout arm ended the wait");
            match &arms[idx] {
                SelectArm::Default { body, .. } | SelectArm::Timeout { body, .. } => interp.exec_block(body),
                SelectArm::Recv { .. } => unreachable!("not a recv arm"),
            }
        }
    }
}

/// Keep `Arc<Channel>` usable by other runtime modules (process pipes reuse it).
pub type SharedChannel = Arc<Channel>;
