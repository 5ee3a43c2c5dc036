//! Channels, cells and locks shared between processes. The process that made an object owns
//! it; when the object crosses into another process it travels as a [`SharedRef`], and the
//! other side gets a [`Remote`] that forwards each operation to the owner's broker over a
//! unix socket (one connection per thread, so a lock taken by a thread is released by it).
//!
//! Sends on a channel do not wait for a reply: they are queued and a writer thread sends
//! whatever has piled up in one write, so a fast producer pays for a syscall only when the
//! receiver keeps up, and batches when it lags. A process that dies holding a lock poisons
//! it ("lock owner died"), and a channel it was sending on fails with the cause of death.

use super::ipc::{self, Frames, Reassembler};
use super::portable::{decode, encode, Exporter, Importer, SharedKind, SharedRef, Wire, WireError};
use crate::builtins::Args;
use crate::error::{ErrorKind, RuntimeError};
use crate::interp::{Interp, Shared, Unwind, R};
use crate::syntax::Span;
use crate::value::{Object, Value};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::Duration;

#[derive(Serialize, Deserialize, Debug)]
enum Request {
    Hello {
        pid: i32,
    },
    Call {
        seq: u64,
        id: u64,
        method: String,
        args: Vec<Wire>,
        /// The globals that functions among the arguments reach (an `update` function, say),
        /// with the caller's values, as `fork` sends them.
        globals: Vec<(u32, Wire)>,
        span: Span,
    },
    Field {
        seq: u64,
        id: u64,
        name: String,
        span: Span,
    },
    Next {
        seq: u64,
        id: u64,
        span: Span,
    },
    Hold {
        seq: u64,
        id: u64,
        span: Span,
    },
    Unhold {
        seq: u64,
        id: u64,
        span: Span,
    },
    /// A channel send: no reply unless it fails.
    Send {
        id: u64,
        value: Wire,
        span: Span,
    },
    /// Answered once everything sent before it is done, so failed sends come to light.
    Sync {
        seq: u64,
    },
    /// Stop the call in progress (its task was cancelled).
    Cancel,
    /// A clean goodbye: this connection's process is not dying.
    Bye,
}

#[derive(Serialize, Deserialize, Debug)]
enum Reply {
    Value {
        seq: u64,
        value: Wire,
    },
    Done {
        seq: u64,
    },
    Error {
        seq: u64,
        error: WireError,
    },
    /// An earlier send failed; raised by the next operation.
    SendFailed {
        error: WireError,
    },
}

// ---------------------------------------------------------------------------------------------
// The owner's side

struct Entry {
    value: Value,
    shared: Arc<Shared>,
}

struct Broker {
    name: String,
    pid: i32,
    objects: Mutex<Objects>,
}

#[derive(Default)]
struct Objects {
    by_id: HashMap<u64, Entry>,
    by_ptr: HashMap<usize, u64>,
    next: u64,
}

static BROKER: OnceLock<Result<Broker, String>> = OnceLock::new();

fn broker() -> Option<&'static Broker> {
    BROKER.get_or_init(Broker::start).as_ref().ok().filter(|b| b.pid == std::process::id() as i32)
}

impl Broker {
    fn start() -> Result<Broker, String> {
        let pid = std::process::id() as i32;
        let name = format!("conc-broker-{pid}-{:x}", std::ptr::addr_of!(BROKER) as usize ^ now_nanos());
        let listener = bind(&name).map_err(|e| format!("cannot share objects with other processes: {e}"))?;
        std::thread::Builder::new()
            .name("conc-broker".into())
            .spawn(move || {
                for conn in listener.incoming().flatten() {
                    let _ = std::thread::Builder::new().name("conc-peer".into()).spawn(move || serve(conn));
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(Broker { name, pid, objects: Mutex::new(Objects::default()) })
    }

    fn lookup(&self, id: u64) -> Option<(Value, Arc<Shared>)> {
        let objects = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        objects.by_id.get(&id).map(|e| (e.value.clone(), e.shared.clone()))
    }
}

fn now_nanos() -> usize {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as usize)
}

fn bind(name: &str) -> std::io::Result<UnixListener> {
    use std::os::linux::net::SocketAddrExt;
    UnixListener::bind_addr(&std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?)
}

/// The reference another process uses for `v`, registering it here the first time; `None`
/// when `v` cannot be shared.
pub fn share(v: &Value, shared: &Arc<Shared>) -> Option<SharedRef> {
    if let Some(r) = v.downcast::<Remote>() {
        return Some(r.r.clone());
    }
    let kind =
        if v.downcast::<super::channel::Channel>().is_some() { SharedKind::Channel } else { super::sync::kind_of(v)? };
    let b = broker()?;
    let Value::Object(o) = v else { return None };
    let ptr = Arc::as_ptr(o) as *const () as usize;
    let mut objects = b.objects.lock().unwrap_or_else(|e| e.into_inner());
    let id = match objects.by_ptr.get(&ptr) {
        Some(id) => *id,
        None => {
            objects.next += 1;
            let id = objects.next;
            objects.by_ptr.insert(ptr, id);
            objects.by_id.insert(id, Entry { value: v.clone(), shared: shared.clone() });
            id
        }
    };
    Some(SharedRef { broker: b.name.clone(), owner_pid: b.pid, id, kind })
}

/// The value a reference stands for here: the object itself if this process owns it.
pub fn proxy(r: SharedRef) -> Value {
    if let Some(b) = BROKER.get().and_then(|b| b.as_ref().ok()) {
        if b.name == r.broker && b.pid == std::process::id() as i32 {
            if let Some((v, _)) = b.lookup(r.id) {
                return v;
            }
        }
    }
    Value::object(Remote { r })
}

/// What one connection's process holds and has used, to clean up if it dies.
#[derive(Default)]
struct PeerState {
    pid: i32,
    held: Vec<(u64, Value)>,
    sent_on: Vec<(u64, Value)>,
    /// Worlds whose objects this peer uses: it counts as a live task in each until it is
    /// gone and cleaned up after, so nobody waiting on it is taken for a deadlock.
    worlds: Vec<Arc<Shared>>,
}

impl Drop for PeerState {
    fn drop(&mut self) {
        self.worlds.iter().for_each(|w| w.tasks.leave());
    }
}

/// Serve one connection: a reader thread takes requests off the socket (and notices a
/// cancel or a death at once), this thread carries them out one by one.
fn serve(conn: UnixStream) {
    let Some(b) = broker() else { return };
    let Ok(reader) = conn.try_clone() else { return };
    let cancel = super::cancel::CancelToken::new();
    // Set before the reader cancels for a death: the reset after each call must not undo
    // that cancel, or a call read before the end of the stream blocks for good.
    let gone = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader_gone = gone.clone();
    let (tx, rx) = crossbeam_channel::unbounded::<Option<Request>>();
    let reader_cancel = cancel.clone();
    let read = std::thread::Builder::new().name("conc-peer-rd".into()).spawn(move || {
        let mut frames = Reassembler::default();
        loop {
            while let Some(f) = frames.next_frame() {
                match decode::<Request>(f) {
                    Ok(Request::Cancel) => reader_cancel.cancel(),
                    Ok(r) => {
                        let bye = matches!(r, Request::Bye);
                        if tx.send(Some(r)).is_err() || bye {
                            return;
                        }
                    }
                    Err(_) => {
                        let _ = tx.send(None);
                        return;
                    }
                }
            }
            match frames.fill(&reader) {
                Ok(true) => {}
                _ => {
                    // End of stream without a goodbye: the peer died.
                    reader_gone.store(true, std::sync::atomic::Ordering::SeqCst);
                    reader_cancel.cancel();
                    let _ = tx.send(None);
                    return;
                }
            }
        }
    });
    if read.is_err() {
        return;
    }
    let mut peer = PeerState::default();
    let mut interps: HashMap<u64, Interp> = HashMap::new();
    let out = conn;
    while let Ok(msg) = rx.recv() {
        let Some(req) = msg else {
            peer_died(&peer);
            return;
        };
        if let Request::Bye = req {
            return;
        }
        if let Request::Hello { pid } = req {
            peer.pid = pid;
            continue;
        }
        if let Request::Sync { seq } = req {
            if ipc::send(&out, &encode(&Reply::Done { seq }), &[]).is_err() {
                peer_died(&peer);
                return;
            }
            continue;
        }
        if let Some(reply) = carry_out(b, req, &mut peer, &mut interps, &cancel) {
            if ipc::send(&out, &encode(&reply), &[]).is_err() {
                peer_died(&peer);
                return;
            }
        }
        // A cancel applies to the call in progress only; a death, to every call after it.
        cancel.reset();
        if gone.load(std::sync::atomic::Ordering::SeqCst) {
            cancel.cancel();
        }
    }
}

fn carry_out(
    b: &Broker,
    req: Request,
    peer: &mut PeerState,
    interps: &mut HashMap<u64, Interp>,
    cancel: &super::cancel::CancelToken,
) -> Option<Reply> {
    let (seq, id, span) = match &req {
        Request::Call { seq, id, span, .. }
        | Request::Field { seq, id, span, .. }
        | Request::Next { seq, id, span }
        | Request::Hold { seq, id, span }
        | Request::Unhold { seq, id, span } => (*seq, *id, *span),
        Request::Send { id, span, .. } => (0, *id, *span),
        _ => return None,
    };
    let Some((obj, shared)) = b.lookup(id) else {
        let e = RuntimeError::new(ErrorKind::Value, "this object no longer exists in its owner process", span);
        return Some(Reply::Error { seq, error: Exporter { shared: &dummy_world() }.error(&e).ok()? });
    };
    if !peer.worlds.iter().any(|w| Arc::ptr_eq(w, &shared)) {
        shared.tasks.enter();
        peer.worlds.push(shared.clone());
    }
    let interp = interps.entry(shared.world_id).or_insert_with(|| {
        let mut i = Interp::new(shared.clone(), Vec::new(), cancel.clone(), shared.settings.limits.max_call_depth);
        i.task_name = format!("a process using {}", obj.type_name()).into();
        i.external_waits = true;
        i
    });
    let im = Importer { shared: &shared };
    let ex = Exporter { shared: &shared };
    let is_send = matches!(req, Request::Send { .. });
    let result: R<Option<Value>> = match req {
        Request::Send { value, .. } => match im.value(value) {
            Ok(v) => {
                if !peer.sent_on.iter().any(|(i, _)| *i == id) {
                    peer.sent_on.push((id, obj.clone()));
                }
                match obj.downcast::<super::channel::Channel>() {
                    Some(ch) => ch.send(interp, v, None, span).map(|_| None),
                    None => Err(RuntimeError::new(ErrorKind::Type, "only channels take `send`", span).into()),
                }
            }
            Err(e) => Err(RuntimeError::new(ErrorKind::Task, e, span).into()),
        },
        Request::Call { method, args, globals, .. } => {
            let mut a = Args::new(span, args.len());
            let mut bad = None;
            for (slot, w) in globals {
                match im.value(w) {
                    Ok(v) => {
                        interp.ensure_globals(slot as usize + 1);
                        interp.globals[slot as usize] = v;
                    }
                    Err(e) => bad = Some(e),
                }
            }
            for w in args {
                match im.value(w) {
                    Ok(v) => a.push(v, span),
                    Err(e) => bad = Some(e),
                }
            }
            match bad {
                Some(e) => Err(RuntimeError::new(ErrorKind::Task, e, span).into()),
                None => {
                    let r = super::object_method(interp, &obj, &method, span, a);
                    track_holding(peer, id, &obj, &method, &r);
                    r.map(Some)
                }
            }
        }
        Request::Field { name, .. } => super::object_field(interp, &obj, &name, span).map(Some),
        Request::Next { .. } => super::iterate_next(interp, &obj, span),
        Request::Hold { .. } => super::sync::hold(interp, &obj, span).map(|_| {
            peer.held.push((id, obj.clone()));
            Some(Value::Nil)
        }),
        Request::Unhold { .. } => super::sync::unhold(interp, &obj, span).map(|_| {
            if let Some(k) = peer.held.iter().position(|(i, _)| *i == id) {
                peer.held.remove(k);
            }
            Some(Value::Nil)
        }),
        _ => return None,
    };
    let wire_err = |e: &RuntimeError| ex.error(e).unwrap_or_else(|_| ex.error(&strip(e)).expect("plain errors cross"));
    match result {
        Ok(_) if is_send => None,
        Ok(Some(v)) => Some(match ex.value(&v) {
            Ok(value) => Reply::Value { seq, value },
            Err(u) => Reply::Error {
                seq,
                error: wire_err(&super::portable::unportable_error("the result of this call", u, span)),
            },
        }),
        Ok(None) => Some(Reply::Done { seq }),
        Err(Unwind::Error(e)) if is_send => Some(Reply::SendFailed { error: wire_err(&e) }),
        Err(Unwind::Error(e)) => Some(Reply::Error { seq, error: wire_err(&e) }),
        Err(_) => Some(Reply::Done { seq }),
    }
}

fn strip(e: &RuntimeError) -> RuntimeError {
    let mut e = e.clone();
    e.data = Value::Nil;
    e.related.clear();
    e
}

/// A world for errors about objects that are gone (they carry no values that need one).
fn dummy_world() -> Arc<Shared> {
    static W: OnceLock<Arc<Shared>> = OnceLock::new();
    W.get_or_init(|| crate::engine::Engine::new().shared().clone()).clone()
}

/// Lock methods a peer calls directly (`m.acquire()`, `s.release()`) change what it holds.
fn track_holding(peer: &mut PeerState, id: u64, obj: &Value, method: &str, r: &R<Value>) {
    if super::sync::kind_of(obj).is_none_or(|k| k == SharedKind::Cell) {
        return;
    }
    match (method, r) {
        ("acquire", Ok(Value::Bool(true))) => peer.held.push((id, obj.clone())),
        ("release", Ok(_)) => {
            if let Some(k) = peer.held.iter().position(|(i, _)| *i == id) {
                peer.held.remove(k);
            }
        }
        _ => {}
    }
}

/// A peer vanished without saying goodbye: what it held is poisoned, what it was feeding fails.
fn peer_died(peer: &PeerState) {
    let why = death_of(peer.pid);
    for (_, obj) in &peer.held {
        super::sync::abandon(obj, &format!("lock owner died: {why}"));
    }
    for (_, obj) in &peer.sent_on {
        if let Some(ch) = obj.downcast::<super::channel::Channel>() {
            ch.fail(format!("channel closed: {why}"));
        }
    }
}

/// "pid N killed by SIGKILL", as well as this process can tell.
fn death_of(pid: i32) -> String {
    let status = super::procs::running().and_then(|s| s.wait_status(pid, Duration::from_secs(1)));
    match status {
        Some(s) => format!("pid {pid} {}", s.describe()),
        None => format!("pid {pid} died"),
    }
}

// ---------------------------------------------------------------------------------------------
// The other side

/// An object owned by another process.
pub struct Remote {
    pub r: SharedRef,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.describe())
    }
}

impl Object for Remote {
    fn type_name(&self) -> &'static str {
        self.r.kind.type_name()
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn describe(&self) -> String {
        format!("<{} shared by pid {}>", self.r.kind.type_name(), self.r.owner_pid)
    }
}

/// One thread's connection to one broker.
struct Conn {
    sock: UnixStream,
    out: Mutex<Outbox>,
    wrote: Condvar,
    wake: Condvar,
    frames: Mutex<Reassembler>,
    next_seq: Mutex<u64>,
    /// A failed send, waiting to be raised by the next operation.
    failed: Mutex<Option<WireError>>,
}

#[derive(Default)]
struct Outbox {
    frames: Frames,
    writing: bool,
    closed: bool,
    broken: bool,
}

/// A thread's connections, closed cleanly (with a goodbye) when the thread ends.
#[derive(Default)]
struct ConnMap(HashMap<String, Arc<Conn>>);

impl Drop for ConnMap {
    fn drop(&mut self) {
        self.0.drain().for_each(|(_, c)| c.close());
    }
}

thread_local! {
    static CONNS: std::cell::RefCell<ConnMap> = std::cell::RefCell::new(ConnMap::default());
}

/// Every open connection, so a process can flush them all before it exits.
static ALL: Mutex<Vec<Weak<Conn>>> = Mutex::new(Vec::new());

/// Before a process exits: push out every queued send and say goodbye.
pub fn flush_all() {
    open_conns().iter().for_each(|c| c.close());
}

/// Every connection of this process still in use, whichever thread opened it.
fn open_conns() -> Vec<Arc<Conn>> {
    ALL.lock().unwrap_or_else(|e| e.into_inner()).iter().filter_map(Weak::upgrade).collect()
}

/// Between the items a pool worker runs: push out every queued send, keeping the
/// connections open for the next item.
pub fn flush_sends() {
    open_conns().iter().for_each(|c| c.flush());
}

/// In the process server, before it forks: create this thread's connection table, so a
/// forked child inherits it made (its first use registers a thread-exit hook, which costs
/// a symbol lookup and page copies in every child otherwise).
pub fn prepare_for_fork() {
    CONNS.with(|_| ());
}

/// At the end of a task: wait until this thread's sends are carried out, and raise the
/// first one that failed (a send on a channel closed meanwhile, say).
pub fn settle(interp: &Interp) -> R<()> {
    let conns: Vec<Arc<Conn>> = CONNS.with(|m| m.borrow().0.values().cloned().collect());
    for c in conns {
        let r = SharedRef { broker: String::new(), owner_pid: 0, id: 0, kind: SharedKind::Channel };
        c.call(interp, &r, |seq| Request::Sync { seq }, Span::default())?;
        c.raise_failed_send(&interp.shared)?;
    }
    Ok(())
}

fn conn_for(r: &SharedRef, span: Span) -> R<Arc<Conn>> {
    if let Some(c) = CONNS.with(|m| m.borrow().0.get(&r.broker).cloned()) {
        return Ok(c);
    }
    let sock = super::zygote::connect(&r.broker).map_err(|e| gone_error(r, &e.to_string(), span))?;
    let c = Arc::new(Conn {
        sock,
        out: Mutex::new(Outbox::default()),
        wrote: Condvar::new(),
        wake: Condvar::new(),
        frames: Mutex::new(Reassembler::default()),
        next_seq: Mutex::new(0),
        failed: Mutex::new(None),
    });
    let writer = c.clone();
    std::thread::Builder::new()
        .name("conc-send".into())
        .spawn(move || writer.write_loop())
        .map_err(|e| RuntimeError::new(ErrorKind::Limit, format!("cannot start a thread: {e}"), span))?;
    c.push(&Request::Hello { pid: std::process::id() as i32 });
    ALL.lock().unwrap_or_else(|e| e.into_inner()).push(Arc::downgrade(&c));
    CONNS.with(|m| m.borrow_mut().0.insert(r.broker.clone(), c.clone()));
    Ok(c)
}

fn gone_error(r: &SharedRef, why: &str, span: Span) -> Unwind {
    RuntimeError::new(
        ErrorKind::Task,
        format!("{} closed: the process that owns it (pid {}) is gone ({why})", r.kind.type_name(), r.owner_pid),
        span,
    )
    .with_label("this needed the other process")
    .into()
}

fn guard<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Conn {
    fn push(&self, req: &Request) {
        let mut out = guard(&self.out);
        out.frames.push(&encode(req));
        if !out.writing {
            self.wake.notify_one();
        }
    }

    fn write_loop(self: Arc<Self>) {
        loop {
            let batch = {
                let mut out = guard(&self.out);
                loop {
                    if !out.frames.bytes.is_empty() {
                        break;
                    }
                    if out.closed || out.broken {
                        return;
                    }
                    out.writing = false;
                    self.wrote.notify_all();
                    out = self.wake.wait(out).unwrap_or_else(|e| e.into_inner());
                }
                out.writing = true;
                std::mem::take(&mut out.frames.bytes)
            };
            if ipc::send_raw(&self.sock, &batch).is_err() {
                let mut out = guard(&self.out);
                out.broken = true;
                out.writing = false;
                self.wrote.notify_all();
                return;
            }
        }
    }

    /// Wait until everything queued is written.
    fn flush(&self) {
        let mut out = guard(&self.out);
        while (!out.frames.bytes.is_empty() || out.writing) && !out.broken {
            self.wake.notify_one();
            out = self.wrote.wait(out).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn close(&self) {
        // Once closed, the writer has gone: a second close must not wait for it.
        if guard(&self.out).closed {
            return;
        }
        self.push(&Request::Bye);
        self.flush();
        let mut out = guard(&self.out);
        out.closed = true;
        self.wake.notify_all();
    }

    fn raise_failed_send(&self, shared: &Shared) -> R<()> {
        match guard(&self.failed).take() {
            Some(e) => Err(Importer { shared }
                .error(e)
                .map_or_else(|m| RuntimeError::new(ErrorKind::Task, m, Span::default()).into(), |e| e.into())),
            None => Ok(()),
        }
    }

    /// Send a request and wait for its reply, stopping the call if the task is cancelled.
    fn call(&self, interp: &Interp, r: &SharedRef, make: impl FnOnce(u64) -> Request, span: Span) -> R<Option<Value>> {
        self.raise_failed_send(&interp.shared)?;
        let seq = {
            let mut n = guard(&self.next_seq);
            *n += 1;
            *n
        };
        self.push(&make(seq));
        let mut cancelled = false;
        let _ = self.sock.set_read_timeout(Some(super::cancel::SLICE));
        loop {
            if !cancelled && interp.cancel.is_cancelled() {
                cancelled = true;
                self.push(&Request::Cancel);
            }
            let reply = {
                let mut frames = guard(&self.frames);
                match frames.next_frame().map(decode::<Reply>) {
                    Some(Ok(reply)) => Some(reply),
                    Some(Err(e)) => return Err(gone_error(r, &e, span)),
                    None => match frames.fill(&self.sock) {
                        Ok(true) => None,
                        Ok(false) => return Err(gone_error(r, "its end of the connection closed", span)),
                        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                            None
                        }
                        Err(e) => return Err(gone_error(r, &e.to_string(), span)),
                    },
                }
            };
            let im = Importer { shared: &interp.shared };
            match reply {
                None => continue,
                Some(Reply::SendFailed { error }) => {
                    guard(&self.failed).get_or_insert(error);
                }
                Some(Reply::Value { seq: s, value }) if s == seq => {
                    return im.value(value).map(Some).map_err(|e| RuntimeError::new(ErrorKind::Task, e, span).into())
                }
                Some(Reply::Done { seq: s }) if s == seq => return Ok(None),
                Some(Reply::Error { seq: s, error }) if s == seq => {
                    let e = im.error(error).map_err(|e| RuntimeError::new(ErrorKind::Task, e, span))?;
                    return Err(e.into());
                }
                Some(_) => continue,
            }
        }
    }
}

impl Remote {
    fn conn(&self, span: Span) -> R<Arc<Conn>> {
        conn_for(&self.r, span)
    }

    fn value_of(reply: Option<Value>) -> Value {
        reply.unwrap_or_default()
    }

    pub fn method(&self, interp: &mut Interp, name: &str, a: Args) -> R<Value> {
        let c = self.conn(a.call)?;
        if self.r.kind == SharedKind::Channel && name == "send" && a.len() == 1 {
            c.raise_failed_send(&interp.shared)?;
            let value = Exporter { shared: &interp.shared }
                .value(&a.vals[0])
                .map_err(|u| super::portable::unportable_error("this value", u, a.span(0)))?;
            c.push(&Request::Send { id: self.r.id, value, span: a.call });
            return Ok(Value::Nil);
        }
        let ex = Exporter { shared: &interp.shared };
        let mut args = Vec::with_capacity(a.len());
        for (i, v) in a.vals.iter().enumerate() {
            args.push(
                ex.value(v)
                    .map_err(|u| super::portable::unportable_error(&format!("argument {}", i + 1), u, a.span(i)))?,
            );
        }
        let globals = super::fork::reachable_globals(interp, &a.vals)?;
        let id = self.r.id;
        let method = name.to_string();
        let span = a.call;
        c.call(interp, &self.r, |seq| Request::Call { seq, id, method, args, globals, span }, span)
            .map(Remote::value_of)
    }

    pub fn field(&self, interp: &Interp, name: &str, span: Span) -> R<Value> {
        let c = self.conn(span)?;
        let id = self.r.id;
        let name = name.to_string();
        c.call(interp, &self.r, |seq| Request::Field { seq, id, name, span }, span).map(Remote::value_of)
    }

    pub fn next(&self, interp: &Interp, span: Span) -> R<Option<Value>> {
        let c = self.conn(span)?;
        let id = self.r.id;
        c.call(interp, &self.r, |seq| Request::Next { seq, id, span }, span)
    }

    pub fn hold(&self, interp: &Interp, span: Span) -> R<()> {
        let c = self.conn(span)?;
        let id = self.r.id;
        c.call(interp, &self.r, |seq| Request::Hold { seq, id, span }, span).map(|_| ())
    }

    pub fn unhold(&self, interp: &Interp, span: Span) -> R<()> {
        let c = self.conn(span)?;
        let id = self.r.id;
        c.call(interp, &self.r, |seq| Request::Unhold { seq, id, span }, span).map(|_| ())
    }
}
