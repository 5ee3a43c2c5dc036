//! # conc
//!
//! A small scripting language for concurrent workflows: threads (`spawn`), processes
//! (`fork`), worker pools (`pool map`), channels (`pipe`), locks (`lock`) and joins (`wait`),
//! each one line in a script.
//!
//! Embedding it takes an [`Engine`]:
//!
//! ```
//! use conc::{Engine, ErrorKind, Settings, Sink, Value};
//! use std::sync::{Arc, Mutex};
//!
//! // 1. An engine whose `print` output the host captures.
//! let out = Arc::new(Mutex::new(String::new()));
//! let settings = Settings { stdout: Sink::Buffer(out.clone()), ..Settings::default() };
//! let mut engine = Engine::with_settings(settings);
//!
//! // 2. Native functions with typed arguments and results.
//! engine.register_fn("double", |n: i64| n * 2);
//!
//! // 3. Compile once, run; script functions and globals are reachable from Rust.
//! let program = engine.compile("demo.conc", "fn sq(x) { x * x }\nlet answer = sq(double(3))\nprint(answer)").unwrap();
//! engine.run(&program).unwrap();
//! assert_eq!(out.lock().unwrap().as_str(), "36\n");
//! assert_eq!(engine.get_global("answer"), Some(Value::Int(36)));
//! assert_eq!(engine.call_fn("sq", vec![Value::Int(5)]).unwrap(), Value::Int(25));
//!
//! // 4. Scripts use threads like any other value.
//! assert_eq!(engine.eval("wait [spawn sq(2), spawn sq(3)]").unwrap().repr(), "[4, 9]");
//!
//! // 5. Errors are typed, with a kind, a message and a span.
//! let err = engine.eval("double(\"x\")").unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::Type);
//! assert!(err.message().contains("argument 1: expected an int, got a string"));
//! assert_eq!(err.location().map(|(_, line, col)| (line, col)), Some((1, 8)));
//!
//! // 6. A sandbox denies files, the environment and processes until granted.
//! let mut sandbox = Engine::with_settings(Settings::sandboxed());
//! let denied = sandbox.eval("read_file(\"/etc/passwd\")").unwrap_err();
//! assert_eq!(denied.kind(), ErrorKind::Permission);
//! ```

pub mod builtins;
pub mod compile;
pub mod engine;
pub mod error;
pub mod interp;
pub mod resolve;
pub mod runtime;
pub mod stdlib;
pub mod syntax;
pub mod testing;
pub mod value;

pub use engine::{
    Capabilities, Engine, FromValue, InterruptHandle, IntoValue, Limits, NativeError, NativeFunction, Program,
    Settings, Sink,
};
pub use error::{Error, ErrorKind};
/// Call first thing in a host's `main`, while it has one thread, so its scripts can `fork` and
/// their commands are stopped should the host be SIGKILLed (see `docs/embedding.md`). When
/// the process was started to serve conc, it serves and never returns.
pub fn serve_processes() {
    runtime::guardian::serve_if_asked();
    runtime::zygote::serve_if_asked();
}
pub use value::Value;
