//! A host that gives scripts typed native functions, and captures what scripts print.
use conc::{Engine, ErrorKind, Settings, Sink, Value};
use std::sync::{Arc, Mutex};

pub fn main() {
    let printed = Arc::new(Mutex::new(String::new()));
    let settings = Settings { stdout: Sink::Buffer(printed.clone()), ..Settings::default() };
    let mut engine = Engine::with_settings(settings);

    engine.register_fn("celsius", |f: f64| (f - 32.0) * 5.0 / 9.0);
    engine.register_fn("greet", |name: String, times: i64| format!("hi {name}! ").repeat(times as usize));
    engine.register_fn("parse_port", |s: String| s.parse::<i64>().map_err(|e| format!("bad port {s:?}: {e}")));
    engine.register_fn("fragile", |n: i64| -> i64 {
        if n < 0 {
            panic!("negative input");
        }
        n
    });

    engine.eval(r#"print(round(celsius(212.0)), greet("ada", 2).trim())"#).unwrap();
    assert_eq!(printed.lock().unwrap().as_str(), "100 hi ada! hi ada!\n");

    // Native functions run on the script's threads too.
    let v = engine.eval("wait range(4).map(fn(i) { spawn { celsius(32.0 + 9.0 * i) } })").unwrap();
    assert_eq!(v.repr(), "[0.0, 5.0, 10.0, 15.0]");

    // A wrong argument type is a diagnostic at the script's call, not a host crash.
    let err = engine.eval("let x = 1\ncelsius(\"hot\")").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Type);
    assert_eq!(err.location().map(|(_, l, c)| (l, c)), Some((2, 9)));
    println!("{}", err.message());

    // A host error becomes a script error that try/catch can handle.
    let v = engine.eval(r#"try { parse_port("80a") } catch e { e.message }"#).unwrap();
    assert!(v.to_string().contains("bad port"), "{v}");

    // A panic inside a native function becomes a script error, never an abort of the host.
    let err = engine.eval("fragile(-1)").unwrap_err();
    assert!(err.message().contains("panicked: negative input"), "{}", err.message());
    assert_eq!(engine.eval("fragile(5)").unwrap(), Value::Int(5));
}
