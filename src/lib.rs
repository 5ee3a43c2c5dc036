//! # conc
//!
//! A small scripting language for concurrent workflows: threads (`spawn`), processes
//! (`fork`), worker pools (`pool map`), channels (`pipe`), locks (`lock`) and joins (`wait`),
//! each one line in a script.
//!
//! Embedding it takes an [`Engine`]:
//!
//! ```
//! use conc::{Engine, Value};
//!
//! let mut engine = Engine::new();
//! engine.register_fn("double", |args| match args {
//!     [Value::Int(n)] => Ok(Value::Int(n * 2)),
//!     _ => Err("expected one int".into()),
//! });
//! let v = engine.eval("fn sq(x) { x * x }\nsq(double(3))").unwrap();
//! assert_eq!(v, Value::Int(36));
//! assert_eq!(engine.call_fn("sq", vec![Value::Int(5)]).unwrap(), Value::Int(25));
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
pub mod value;

pub use engine::{Capabilities, Engine, InterruptHandle, Limits, Program, Settings, Sink};
pub use error::{Error, ErrorKind};
pub use value::Value;
