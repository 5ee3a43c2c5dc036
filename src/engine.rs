//! The embedding API: an [`Engine`] compiles and runs conc code with a given set of
//! [`Settings`]: limits, capabilities, output sinks and native functions.

use crate::error::{Error, ErrorKind, RuntimeError};
use crate::interp::{Interp, Module, Shared, Unwind};
use crate::resolve::{resolve_program, GlobalScope, ModuleLoader};
use crate::runtime::cancel::CancelToken;
use crate::syntax::ast::Stmt;
use crate::syntax::{parse_program, SourceMap, Span};
use crate::value::Value;
use std::collections::HashMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// What a script may touch. The CLI trusts scripts fully; an embedder starts from
/// [`Capabilities::none`] and grants what it wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Capabilities {
    pub threads: bool,
    pub fork: bool,
    pub exec: bool,
    pub subprocess: bool,
    pub fs: bool,
    pub env: bool,
}

impl Capabilities {
    pub fn all() -> Capabilities {
        Capabilities { threads: true, fork: true, exec: true, subprocess: true, fs: true, env: true }
    }

    /// Pure computation plus threads: no processes, files or environment.
    pub fn none() -> Capabilities {
        Capabilities { threads: true, fork: false, exec: false, subprocess: false, fs: false, env: false }
    }
}

/// Resource limits. `None` means unlimited.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    pub max_ops: Option<u64>,
    pub max_call_depth: u32,
    pub max_duration: Option<Duration>,
    pub max_threads: Option<usize>,
    pub max_processes: Option<usize>,
    pub max_subprocesses: Option<usize>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_ops: None,
            max_call_depth: MAIN_MAX_DEPTH,
            max_duration: None,
            max_threads: None,
            max_processes: None,
            max_subprocesses: None,
        }
    }
}

/// Call depth allowed on the main interpreter thread (which runs on [`MAIN_STACK`]).
pub const MAIN_MAX_DEPTH: u32 = 10_000;
/// Stack for the thread that runs the main interpreter.
pub const MAIN_STACK: usize = 1 << 30;

/// Where `print` and `eprint` go.
#[derive(Clone)]
pub enum Sink {
    Stdout,
    Stderr,
    /// Appended to a string the host reads later.
    Buffer(Arc<Mutex<String>>),
    /// Handed to a host callback, one `print` at a time.
    Callback(Arc<dyn Fn(&str) + Send + Sync>),
}

impl Sink {
    fn write(&self, text: &str) {
        use std::io::Write;
        match self {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(text.as_bytes());
                let _ = out.flush();
            }
            Sink::Stderr => {
                let _ = std::io::stderr().lock().write_all(text.as_bytes());
            }
            Sink::Buffer(b) => b.lock().unwrap_or_else(|e| e.into_inner()).push_str(text),
            Sink::Callback(f) => f(text),
        }
    }
}

/// Standard streams as a script sees them.
pub struct Output {
    pub stdout: Sink,
    pub stderr: Sink,
    stdin: Mutex<Option<Box<dyn BufRead + Send>>>,
}

impl Output {
    pub fn write(&self, text: &str, to_stderr: bool) {
        if to_stderr {
            self.stderr.write(text)
        } else {
            self.stdout.write(text)
        }
    }

    pub fn read_line(&self, buf: &mut String) -> std::io::Result<usize> {
        let mut input = self.stdin.lock().unwrap_or_else(|e| e.into_inner());
        match input.as_mut() {
            Some(r) => r.read_line(buf),
            None => std::io::stdin().read_line(buf),
        }
    }

    pub fn read_to_string(&self, buf: &mut String) -> std::io::Result<usize> {
        use std::io::Read;
        let mut input = self.stdin.lock().unwrap_or_else(|e| e.into_inner());
        match input.as_mut() {
            Some(r) => r.read_to_string(buf),
            None => std::io::stdin().read_to_string(buf),
        }
    }
}

/// Engine configuration.
#[derive(Clone)]
pub struct Settings {
    pub capabilities: Capabilities,
    pub limits: Limits,
    pub stdout: Sink,
    pub stderr: Sink,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            capabilities: Capabilities::all(),
            limits: Limits::default(),
            stdout: Sink::Stdout,
            stderr: Sink::Stderr,
        }
    }
}

impl Settings {
    /// A sandbox: no processes, subprocesses, files or environment until granted.
    pub fn sandboxed() -> Settings {
        Settings { capabilities: Capabilities::none(), ..Settings::default() }
    }

    fn deny(&self, what: &str, cap: &str, span: Span) -> Unwind {
        RuntimeError::new(ErrorKind::Permission, format!("{what} is not allowed in this engine"), span)
            .with_label("denied by the host")
            .with_help(format!("the host must grant the `{cap}` capability"))
            .into()
    }

    pub fn require_fs(&self, span: Span) -> Result<(), Unwind> {
        if self.capabilities.fs {
            Ok(())
        } else {
            Err(self.deny("file system access", "fs", span))
        }
    }

    pub fn require_env(&self, span: Span) -> Result<(), Unwind> {
        if self.capabilities.env {
            Ok(())
        } else {
            Err(self.deny("environment access", "env", span))
        }
    }

    pub fn require_fork(&self, span: Span) -> Result<(), Unwind> {
        if self.capabilities.fork {
            Ok(())
        } else {
            Err(self.deny("starting processes", "fork", span))
        }
    }

    pub fn require_subprocess(&self, span: Span) -> Result<(), Unwind> {
        if self.capabilities.subprocess {
            Ok(())
        } else {
            Err(self.deny("running commands", "subprocess", span))
        }
    }

    pub fn require_exec(&self, span: Span) -> Result<(), Unwind> {
        if self.capabilities.exec {
            Ok(())
        } else {
            Err(self.deny("`exec`", "exec", span))
        }
    }

    pub fn require_threads(&self, span: Span) -> Result<(), Unwind> {
        if self.capabilities.threads {
            Ok(())
        } else {
            Err(self.deny("starting threads", "threads", span))
        }
    }

    pub fn check_limits(&self, ops: u64, started: Instant, span: Span) -> Result<(), Unwind> {
        if let Some(max) = self.limits.max_ops {
            if ops > max {
                return Err(RuntimeError::new(ErrorKind::Limit, format!("operation limit of {max} exceeded"), span)
                    .with_label("stopped here")
                    .into());
            }
        }
        if let Some(max) = self.limits.max_duration {
            if started.elapsed() > max {
                return Err(RuntimeError::new(ErrorKind::Limit, format!("time limit of {max:?} exceeded"), span)
                    .with_label("stopped here")
                    .into());
            }
        }
        Ok(())
    }
}

impl Shared {
    /// Count a new thread against the limit.
    pub fn admit_thread(&self, span: Span) -> Result<(), Unwind> {
        self.settings.require_threads(span)?;
        let n = self.threads.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(max) = self.settings.limits.max_threads {
            if n > max {
                self.threads.fetch_sub(1, Ordering::SeqCst);
                return Err(RuntimeError::new(ErrorKind::Limit, format!("thread limit of {max} reached"), span).into());
            }
        }
        Ok(())
    }

    pub fn release_thread(&self) {
        self.threads.fetch_sub(1, Ordering::SeqCst);
    }

    /// Count a forked process against the limit (after checking `fork` is allowed).
    pub fn admit_process(&self, span: Span) -> Result<(), Unwind> {
        self.settings.require_fork(span)?;
        let n = self.processes.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(max) = self.settings.limits.max_processes {
            if n > max {
                self.processes.fetch_sub(1, Ordering::SeqCst);
                return Err(RuntimeError::new(ErrorKind::Limit, format!("process limit of {max} reached"), span)
                    .with_label("this process would be one too many")
                    .into());
            }
        }
        Ok(())
    }

    /// Count the `n` processes of a new pipeline against the subprocess limit.
    pub fn admit_subprocesses(&self, n: usize, span: Span) -> Result<(), Unwind> {
        self.settings.require_subprocess(span)?;
        let total = self.subprocesses.fetch_add(n, Ordering::SeqCst) + n;
        if let Some(max) = self.settings.limits.max_subprocesses {
            if total > max {
                self.subprocesses.fetch_sub(n, Ordering::SeqCst);
                return Err(RuntimeError::new(ErrorKind::Limit, format!("subprocess limit of {max} reached"), span)
                    .with_label("starting this command would pass it")
                    .into());
            }
        }
        Ok(())
    }

    pub fn release_process(&self) {
        self.processes.fetch_sub(1, Ordering::SeqCst);
    }

    pub fn release_subprocesses(&self, n: usize) {
        self.subprocesses.fetch_sub(n, Ordering::SeqCst);
    }

    /// `file:line:col` for a span, for messages that cannot carry a snippet.
    pub fn describe_span(&self, span: Span) -> String {
        let sources = self.sources.read().unwrap_or_else(|e| e.into_inner());
        match sources.get(span.file) {
            Some(f) => {
                let (l, c) = f.line_col(span.start);
                format!("{}:{l}:{c}", f.name)
            }
            None => "<unknown>".into(),
        }
    }
}

/// A native function registered by the host.
pub struct NativeFn {
    pub name: String,
    #[allow(clippy::type_complexity)]
    pub func: Box<dyn Fn(&[Value]) -> Result<Value, NativeError> + Send + Sync>,
}

impl std::fmt::Debug for NativeFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<native fn {}>", self.name)
    }
}

/// Why a native function call failed, so the diagnostic can point at the right place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NativeError {
    /// The script passed the wrong number of arguments.
    Arity(String),
    /// Argument `index` (from 0) could not be converted to the Rust type.
    Argument { index: usize, message: String },
    /// The function itself returned an error.
    Failed(String),
}

/// Call a host function; a panic inside it becomes a script error, never an abort.
/// `arg_spans` (empty when unknown) lets a bad argument be pointed at.
pub fn call_native(n: &NativeFn, args: Vec<Value>, arg_spans: &[Span], span: Span) -> Result<Value, Unwind> {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (n.func)(&args)));
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(NativeError::Arity(msg))) => {
            Err(RuntimeError::new(ErrorKind::Type, msg, span).with_label("in this call").into())
        }
        Ok(Err(NativeError::Argument { index, message })) => {
            let at = arg_spans.get(index).copied().unwrap_or(span);
            Err(RuntimeError::new(ErrorKind::Type, format!("`{}` argument {}: {message}", n.name, index + 1), at)
                .with_label(message.split(", got").next().unwrap_or(&message).to_string())
                .into())
        }
        Ok(Err(NativeError::Failed(msg))) => {
            Err(RuntimeError::new(ErrorKind::User, format!("{}: {msg}", n.name), span)
                .with_label("this call failed")
                .into())
        }
        Err(panic) => {
            let mut e = crate::runtime::spawn::panic_error(panic, span);
            e.message = format!(
                "native function `{}` panicked: {}",
                n.name,
                e.message.trim_start_matches("internal error (panic): ")
            );
            Err(e.into())
        }
    }
}

/// Conversion from a script value to a Rust argument type.
pub trait FromValue: Sized {
    fn from_value(v: &Value) -> Result<Self, String>;
}

/// Conversion from a Rust result to a script value.
pub trait IntoValue {
    fn into_value(self) -> Result<Value, String>;
}

fn expected(what: &str, v: &Value) -> String {
    format!("expected {what}, got {}", crate::builtins::a_type(v))
}

impl FromValue for Value {
    fn from_value(v: &Value) -> Result<Self, String> {
        Ok(v.clone())
    }
}
impl FromValue for i64 {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Int(i) => Ok(*i),
            other => Err(expected("an int", other)),
        }
    }
}
impl FromValue for f64 {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Int(i) => Ok(*i as f64),
            Value::Float(f) => Ok(*f),
            other => Err(expected("a number", other)),
        }
    }
}
impl FromValue for bool {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Bool(b) => Ok(*b),
            other => Err(expected("a bool", other)),
        }
    }
}
impl FromValue for String {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Str(s) => Ok(s.to_string()),
            other => Err(expected("a string", other)),
        }
    }
}
impl<T: FromValue> FromValue for Vec<T> {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::List(items) => items.iter().map(T::from_value).collect(),
            other => Err(expected("a list", other)),
        }
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Nil => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

impl<T: Into<Value>> IntoValue for T {
    fn into_value(self) -> Result<Value, String> {
        Ok(self.into())
    }
}
impl<T: IntoValue, E: std::fmt::Display> IntoValue for Result<T, E> {
    fn into_value(self) -> Result<Value, String> {
        self.map_err(|e| e.to_string())?.into_value()
    }
}

/// A Rust function or closure of up to five typed arguments that scripts can call.
/// `M` is the argument tuple, inferred from the closure.
pub trait NativeFunction<M>: Send + Sync + 'static {
    fn arity(&self) -> usize;
    fn call(&self, args: &[Value]) -> Result<Value, NativeError>;
}

macro_rules! native_function {
    ($n:expr; $($a:ident $i:tt),*) => {
        impl<F, R, $($a,)*> NativeFunction<($($a,)*)> for F
        where
            F: Fn($($a),*) -> R + Send + Sync + 'static,
            R: IntoValue,
            $($a: FromValue,)*
        {
            fn arity(&self) -> usize {
                $n
            }
            #[allow(unused_variables)]
            fn call(&self, args: &[Value]) -> Result<Value, NativeError> {
                (self)($($a::from_value(&args[$i]).map_err(|message| NativeError::Argument { index: $i, message })?),*)
                    .into_value()
                    .map_err(NativeError::Failed)
            }
        }
    };
}
native_function!(0;);
native_function!(1; A 0);
native_function!(2; A 0, B 1);
native_function!(3; A 0, B 1, C 2);
native_function!(4; A 0, B 1, C 2, D 3);
native_function!(5; A 0, B 1, C 2, D 3, E 4);

/// Cancels a running script from another thread, including its threads, processes and commands.
#[derive(Clone)]
pub struct InterruptHandle(CancelToken);

impl InterruptHandle {
    pub fn interrupt(&self) {
        self.0.cancel();
    }

    pub fn is_interrupted(&self) -> bool {
        self.0.is_cancelled()
    }
}

/// A compiled program: share it across threads and run it many times.
#[derive(Clone)]
pub struct Program(Arc<ProgramInner>);

struct ProgramInner {
    stmts: Vec<Stmt>,
    frame_size: u32,
    file: u32,
}

impl Program {
    /// The functions declared at the top level, in source order.
    pub(crate) fn top_level_functions(&self) -> impl Iterator<Item = &Arc<crate::syntax::ast::FnDef>> {
        self.0.stmts.iter().filter_map(|s| match s {
            Stmt::Fn(def, _) => Some(def),
            _ => None,
        })
    }

    /// The number of the source file the program was compiled from.
    pub(crate) fn file(&self) -> u32 {
        self.0.file
    }
}

impl Program {
    pub(crate) fn stmts(&self) -> &[Stmt] {
        &self.0.stmts
    }
}

/// One change to an engine of a world, recorded so the process server can make the same
/// world: the same files, the same global slots, the same function definitions.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum Replay {
    Compile { engine: u32, name: String, text: String },
    Global { engine: u32, name: String, value: Option<crate::runtime::portable::Wire> },
    BaseDir { engine: u32, dir: PathBuf },
    Clone { from: u32, to: u32 },
}

/// Worlds are numbered per process tree: the root process hands out the numbers.
static NEXT_WORLD: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Compiles and runs conc code.
pub struct Engine {
    shared: Arc<Shared>,
    globals: GlobalScope,
    next_global: u32,
    module_paths: HashMap<String, Option<u32>>,
    interp: Interp,
    base_dir: Option<PathBuf>,
    root: CancelToken,
    id: u32,
}

impl Default for Engine {
    fn default() -> Engine {
        Engine::new()
    }
}

impl Engine {
    /// A fully trusted engine, as the CLI uses.
    pub fn new() -> Engine {
        Engine::with_settings(Settings::default())
    }

    pub fn with_settings(settings: Settings) -> Engine {
        Engine::with_settings_and_stdin(settings, None)
    }

    pub fn with_settings_and_stdin(settings: Settings, stdin: Option<Box<dyn BufRead + Send>>) -> Engine {
        let world = NEXT_WORLD.fetch_add(1, Ordering::Relaxed) | (u64::from(std::process::id()) << 32);
        Engine::in_world(settings, stdin, world)
    }

    /// A fresh engine whose world has the given id (the process server's copy of a world).
    pub(crate) fn in_world(settings: Settings, stdin: Option<Box<dyn BufRead + Send>>, world_id: u64) -> Engine {
        let root = CancelToken::new();
        let output =
            Output { stdout: settings.stdout.clone(), stderr: settings.stderr.clone(), stdin: Mutex::new(stdin) };
        let max_depth = settings.limits.max_call_depth;
        let shared = Arc::new(Shared {
            modules: RwLock::new(Vec::new()),
            settings,
            output,
            root_cancel: root.clone(),
            tasks: Default::default(),
            sources: RwLock::new(SourceMap::default()),
            threads: AtomicUsize::new(0),
            processes: AtomicUsize::new(0),
            subprocesses: AtomicUsize::new(0),
            started: Instant::now(),
            world_id,
            replay: Mutex::new(Vec::new()),
            next_engine: std::sync::atomic::AtomicU32::new(1),
            programs: RwLock::new(Vec::new()),
            defs: Mutex::new(Default::default()),
        });
        shared.tasks.enter();
        let interp = Interp::new(shared.clone(), Vec::new(), root.clone(), max_depth);
        let mut engine = Engine {
            shared,
            globals: GlobalScope::default(),
            next_global: 0,
            module_paths: HashMap::new(),
            interp,
            base_dir: None,
            root,
            id: 0,
        };
        engine.set_args(Vec::new());
        engine
    }

    /// Directory that relative `import "path"` statements resolve against.
    pub fn set_base_dir(&mut self, dir: impl Into<PathBuf>) {
        let dir = dir.into();
        self.record(Replay::BaseDir { engine: self.id, dir: dir.clone() });
        self.base_dir = Some(dir);
    }

    /// An interpreter for a new task in this engine's world, with a copy of its globals.
    pub(crate) fn world_interp(&self) -> Interp {
        self.interp.fork_world(self.root.clone(), self.shared.settings.limits.max_call_depth)
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    fn record(&self, entry: Replay) {
        self.shared.replay.lock().unwrap_or_else(|e| e.into_inner()).push(entry);
    }

    /// The `args` list the script sees.
    pub fn set_args(&mut self, args: Vec<String>) {
        self.set_global("args", Value::list(args.into_iter().map(Value::str).collect()));
    }

    pub fn interrupt_handle(&self) -> InterruptHandle {
        InterruptHandle(self.root.clone())
    }

    /// Make a typed Rust function or closure callable from scripts under `name`.
    /// Arguments and the result convert through [`FromValue`] and [`IntoValue`]; a wrong
    /// argument type is a diagnostic at the script's call.
    ///
    /// ```
    /// let mut engine = conc::Engine::new();
    /// engine.register_fn("add", |a: i64, b: i64| a + b);
    /// engine.register_fn("shout", |s: String| s.to_uppercase());
    /// assert_eq!(engine.eval("shout(\"n\") + str(add(1, 2))").unwrap(), conc::Value::str("N3"));
    /// ```
    pub fn register_fn<M>(&mut self, name: &str, f: impl NativeFunction<M>) {
        let fname = name.to_string();
        let arity = f.arity();
        let func = move |args: &[Value]| -> Result<Value, NativeError> {
            if args.len() != arity {
                let s = if arity == 1 { "" } else { "s" };
                let n = args.len();
                let were = if n == 1 { "was" } else { "were" };
                return Err(NativeError::Arity(format!("`{fname}` takes {arity} argument{s} but {n} {were} given")));
            }
            f.call(args)
        };
        let native = NativeFn { name: name.to_string(), func: Box::new(func) };
        self.set_global(name, Value::Native(Arc::new(native)));
    }

    /// Register a function that takes the raw argument values, for variable arguments. An
    /// `Err` becomes a script error (of kind `error`) at the call.
    pub fn register_raw_fn(
        &mut self,
        name: &str,
        f: impl Fn(&[Value]) -> Result<Value, String> + Send + Sync + 'static,
    ) {
        let func = move |args: &[Value]| f(args).map_err(NativeError::Failed);
        let native = NativeFn { name: name.to_string(), func: Box::new(func) };
        self.set_global(name, Value::Native(Arc::new(native)));
    }

    /// A second engine with the same settings and a copy of this one's globals and modules,
    /// so one compiled [`Program`] can run on several threads at once, one engine each.
    pub fn clone_world(&self) -> Engine {
        let root = CancelToken::new();
        let mut interp = self.interp.fork_world(root.clone(), self.shared.settings.limits.max_call_depth);
        interp.task_name = "main".into();
        let id = self.shared.next_engine.fetch_add(1, Ordering::Relaxed);
        interp.engine_id = id;
        self.record(Replay::Clone { from: self.id, to: id });
        Engine {
            shared: self.shared.clone(),
            globals: self.globals.clone(),
            next_global: self.next_global,
            module_paths: self.module_paths.clone(),
            interp,
            base_dir: self.base_dir.clone(),
            root,
            id,
        }
    }

    pub fn set_global(&mut self, name: &str, value: Value) {
        let wire = crate::runtime::portable::Exporter { shared: &self.shared }.value(&value).ok();
        self.record(Replay::Global { engine: self.id, name: name.to_string(), value: wire });
        let slot = self.globals.declare(&name.into(), &mut self.next_global) as usize;
        self.interp.ensure_globals(slot + 1);
        self.interp.globals[slot] = value;
    }

    pub fn get_global(&self, name: &str) -> Option<Value> {
        let slot = *self.globals.names.get(name)?;
        self.interp.globals.get(slot as usize).cloned()
    }

    /// Every global name, for REPL completion.
    pub fn global_names(&self) -> Vec<String> {
        self.globals.names.keys().map(|n| n.to_string()).collect()
    }

    fn sources(&self) -> Arc<SourceMap> {
        Arc::new(self.shared.sources.read().unwrap_or_else(|e| e.into_inner()).clone())
    }

    fn error(&self, e: RuntimeError) -> Error {
        Error::new(Arc::new(e), self.sources())
    }

    /// A public [`Error`] for a fault whose spans point into this engine's sources.
    pub(crate) fn diagnostic(&self, e: RuntimeError) -> Error {
        self.error(e)
    }

    /// Parse and resolve `text`, reported under `name`, without running it.
    pub fn compile(&mut self, name: &str, text: &str) -> Result<Program, Error> {
        self.record(Replay::Compile { engine: self.id, name: name.to_string(), text: text.to_string() });
        let file = self.shared.sources.write().unwrap_or_else(|e| e.into_inner()).add(name, text);
        let mut stmts = parse_in_big_stack(text, file).map_err(|e| self.error(e))?;
        let mut loader = Loader {
            shared: &self.shared,
            next_global: &mut self.next_global,
            paths: &mut self.module_paths,
            base_dir: self.base_dir.clone(),
        };
        let mut scope = self.globals.clone();
        let frame_size = resolve_program(&mut stmts, &mut scope, &mut loader).map_err(|mut errs| {
            let first = errs.remove(0);
            self.error(first)
        })?;
        self.globals = scope;
        self.interp.ensure_globals(self.next_global as usize);
        let program = Program(Arc::new(ProgramInner { stmts, frame_size, file }));
        self.shared.programs.write().unwrap_or_else(|e| e.into_inner()).push(program.clone());
        Ok(program)
    }

    /// Run a compiled program, then wait for every task it started.
    pub fn run(&mut self, program: &Program) -> Result<Value, Error> {
        let r = self.run_keeping_tasks(program);
        let span = program.0.stmts.last().map(|s| s.span()).unwrap_or_default();
        let finished = crate::runtime::scope::finish_root(
            &mut self.interp,
            r.map_err(|e| Unwind::Error(Box::new(e.details().clone()))),
            span,
        );
        self.unwind_to_result(finished)
    }

    /// Run a compiled program; tasks it started keep running (the REPL waits for them later).
    pub fn run_keeping_tasks(&mut self, program: &Program) -> Result<Value, Error> {
        self.interp.ensure_globals(self.next_global as usize);
        // Limits count per run: a long-lived engine can run a program any number of times.
        self.interp.budget = crate::interp::RunBudget::new();
        let r = self.interp.run_unit(&program.0.stmts, program.0.frame_size);
        self.unwind_to_result(r)
    }

    fn unwind_to_result(&self, r: Result<Value, Unwind>) -> Result<Value, Error> {
        match r {
            Ok(v) => Ok(v),
            Err(Unwind::Error(e)) => Err(self.error(*e)),
            Err(Unwind::Return(v)) => Ok(v),
            Err(_) => Ok(Value::Nil),
        }
    }

    /// Compile and run a source string.
    pub fn eval(&mut self, text: &str) -> Result<Value, Error> {
        let p = self.compile("<eval>", text)?;
        self.run(&p)
    }

    /// Compile and run a named source (a file's contents, say).
    pub fn eval_named(&mut self, name: &str, text: &str) -> Result<Value, Error> {
        let p = self.compile(name, text)?;
        self.run(&p)
    }

    /// Call a script function by name, then wait for every task it started, as [`Engine::run`]
    /// does. A missing function or a wrong number of arguments is an error without a span,
    /// since the mistake is in the host's call, not in the script.
    pub fn call_fn(&mut self, name: &str, args: Vec<Value>) -> Result<Value, Error> {
        let f = self
            .get_global(name)
            .ok_or_else(|| Error::plain(ErrorKind::Name, format!("the script has no function named `{name}`")))?;
        let span = match &f {
            Value::Func(c) => {
                let want = c.def.params.len();
                if want != args.len() {
                    let s = if want == 1 { "" } else { "s" };
                    let message = format!("`{name}` takes {want} argument{s} but the host passed {}", args.len());
                    return Err(Error::plain(ErrorKind::Type, message));
                }
                c.def.span
            }
            Value::Builtin(_) | Value::Native(_) => Span::default(),
            other => {
                let message = format!("`{name}` is {}, not a function", crate::builtins::a_type(other));
                return Err(Error::plain(ErrorKind::Type, message));
            }
        };
        self.interp.budget = crate::interp::RunBudget::new();
        let r = self.interp.call_value(&f, args, span);
        let finished = crate::runtime::scope::finish_root(&mut self.interp, r, span);
        // The host's call is not part of the script's call stack.
        let finished = finished.map_err(|e| match e {
            Unwind::Error(mut err) => {
                err.stack.retain(|frame| frame.call_span != span);
                Unwind::Error(err)
            }
            other => other,
        });
        self.unwind_to_result(finished)
    }

    /// Wait for every task still running (the REPL's exit, for instance).
    pub fn finish(&mut self) -> Result<(), Error> {
        let r = crate::runtime::scope::finish_root(&mut self.interp, Ok(Value::Nil), Span::default());
        self.unwind_to_result(r).map(|_| ())
    }

    /// Clear an interrupt so the engine can run again (the REPL after Ctrl-C).
    pub fn reset_interrupt(&mut self) {
        self.root.reset();
    }

    pub fn is_interrupted(&self) -> bool {
        self.root.is_cancelled()
    }
}

/// Parsing recurses on nesting; give it room whatever thread the host calls from.
fn parse_in_big_stack(text: &str, file: u32) -> Result<Vec<Stmt>, RuntimeError> {
    // A fresh stack segment, not a thread: nesting is capped, so this bounds the depth.
    let result = std::panic::catch_unwind(|| stacker::grow(256 << 20, || parse_program(text, file)));
    match result {
        Ok(Ok(stmts)) => Ok(stmts),
        Ok(Err(e)) => {
            let mut err = RuntimeError::new(ErrorKind::Syntax, e.message, e.span).with_label(e.label);
            err.help = e.help;
            Err(err)
        }
        _ => Err(RuntimeError::new(ErrorKind::Syntax, "the parser failed on this input", Span::new(file, 0, 0))),
    }
}

struct Loader<'a> {
    shared: &'a Arc<Shared>,
    next_global: &'a mut u32,
    paths: &'a mut HashMap<String, Option<u32>>,
    base_dir: Option<PathBuf>,
}

impl ModuleLoader for Loader<'_> {
    fn next_global(&mut self) -> &mut u32 {
        self.next_global
    }

    fn load(&mut self, path: &str, span: Span) -> Result<u32, RuntimeError> {
        match self.paths.get(path) {
            Some(Some(id)) => return Ok(*id),
            Some(None) => {
                return Err(RuntimeError::new(ErrorKind::Name, format!("circular import of \"{path}\""), span)
                    .with_label("this module is already being imported")
                    .with_help("move the shared code into a third module"))
            }
            None => {}
        }
        let (name, text) = self.read_module(path, span)?;
        self.paths.insert(path.to_string(), None);
        let file = self.shared.sources.write().unwrap_or_else(|e| e.into_inner()).add(name.clone(), text.clone());
        let mut stmts = parse_in_big_stack(&text, file)?;
        let mut scope = GlobalScope::default();
        // A module's own relative imports resolve against the module's directory.
        let saved_base = self.base_dir.clone();
        if !path.starts_with("std/") {
            self.base_dir = std::path::Path::new(&name).parent().map(|p| p.to_path_buf());
        }
        let resolved = resolve_program(&mut stmts, &mut scope, self);
        self.base_dir = saved_base;
        let frame_size = resolved.map_err(|mut errs| errs.remove(0))?;
        let mut modules = self.shared.modules.write().unwrap_or_else(|e| e.into_inner());
        modules.push(Arc::new(Module { name, stmts, frame_size, scope }));
        let id = (modules.len() - 1) as u32;
        self.paths.insert(path.to_string(), Some(id));
        Ok(id)
    }
}

impl Loader<'_> {
    fn read_module(&self, path: &str, span: Span) -> Result<(String, String), RuntimeError> {
        if let Some(name) = path.strip_prefix("std/") {
            return crate::stdlib::source(name)
                .map(|text| (crate::stdlib::file_name(name), text.to_string()))
                .ok_or_else(|| {
                    let known = crate::stdlib::names().collect::<Vec<_>>().join(", ");
                    RuntimeError::new(ErrorKind::Name, format!("no standard module \"{path}\""), span)
                        .with_label("unknown module")
                        .with_help(format!("standard modules: {known}"))
                });
        }
        if !self.shared.settings.capabilities.fs {
            return Err(RuntimeError::new(
                ErrorKind::Permission,
                "importing files is not allowed in this engine",
                span,
            )
            .with_help("the host must grant the `fs` capability"));
        }
        let mut file = PathBuf::from(path);
        if file.extension().is_none() {
            file.set_extension("conc");
        }
        if file.is_relative() {
            if let Some(base) = &self.base_dir {
                file = base.join(file);
            }
        }
        let text = std::fs::read_to_string(&file).map_err(|e| {
            RuntimeError::new(ErrorKind::Io, format!("cannot import \"{path}\": {e}"), span).with_label("imported here")
        })?;
        Ok((file.display().to_string(), text))
    }
}
