//! The embedding examples run as tests, so the documented host code keeps working.

#[path = "../examples/embed_call_script.rs"]
mod call_script;
#[path = "../examples/embed_cancel_pool.rs"]
mod cancel_pool;
#[path = "../examples/embed_native_fns.rs"]
mod native_fns;
#[path = "../examples/embed_sandbox.rs"]
mod sandbox;

#[test]
fn host_calls_script_functions() {
    call_script::main();
}

#[test]
fn host_registers_native_functions() {
    native_fns::main();
}

#[test]
fn sandboxed_engine_denies_until_granted() {
    sandbox::main();
}

#[test]
fn host_cancels_a_script_running_a_pool() {
    // This test binary cannot serve processes itself (re-executed, it would run the test
    // harness), so the example's forks are served by the conc binary.
    std::env::set_var("CONC_EXE", env!("CARGO_BIN_EXE_conc"));
    cancel_pool::main();
}

#[test]
fn one_program_runs_on_several_threads() {
    let mut engine = conc::Engine::new();
    let program = engine
        .compile("shared.conc", "fn fib(n) { if n < 2 { n } else { fib(n - 1) + fib(n - 2) } }\nfib(20)")
        .unwrap();
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let mut e = engine.clone_world();
            let p = program.clone();
            std::thread::spawn(move || e.run(&p).unwrap())
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), conc::Value::Int(6765));
    }
}

#[test]
fn a_bad_native_argument_is_pointed_at() {
    let mut engine = conc::Engine::new();
    engine.register_fn("celsius", |f: f64| (f - 32.0) * 5.0 / 9.0);
    let err = engine.eval("let x = 1\ncelsius(\"hot\")").unwrap_err();
    assert_eq!(err.kind(), conc::ErrorKind::Type);
    assert_eq!(err.message(), "`celsius` argument 1: expected a number, got a string");
    assert_eq!(err.location().map(|(_, l, c)| (l, c)), Some((2, 9)));
    assert_eq!(err.details().label.as_deref(), Some("expected a number"));
    // The wrong number of arguments points at the call.
    let err = engine.eval("celsius(1, 2)").unwrap_err();
    assert_eq!(err.message(), "`celsius` takes 1 argument but 2 were given");
    assert_eq!(err.location().map(|(_, l, c)| (l, c)), Some((1, 1)));
}

#[test]
fn a_host_error_is_a_catchable_script_error() {
    let mut engine = conc::Engine::new();
    engine.register_fn("port", |s: String| s.parse::<i64>().map_err(|e| format!("bad port {s:?}: {e}")));
    let v = engine.eval(r#"try { port("80a") } catch e { [e.kind, e.message] }"#).unwrap();
    assert_eq!(v.repr(), r#"["error", "port: bad port \"80a\": invalid digit found in string"]"#);
    engine.register_raw_fn("first", |args| args.first().cloned().ok_or_else(|| "needs an argument".to_string()));
    assert_eq!(engine.eval("first(7, 8)").unwrap(), conc::Value::Int(7));
    assert_eq!(engine.eval("first()").unwrap_err().message(), "first: needs an argument");
}

#[test]
fn call_fn_reports_host_mistakes_without_a_script_span() {
    let mut engine = conc::Engine::new();
    engine.eval("fn add(a, b) { a + b }\nlet answer = 42").unwrap();
    let missing = engine.call_fn("sub", vec![]).unwrap_err();
    assert_eq!((missing.kind(), missing.location()), (conc::ErrorKind::Name, None));
    let arity = engine.call_fn("add", vec![conc::Value::Int(1)]).unwrap_err();
    assert_eq!(arity.message(), "`add` takes 2 arguments but the host passed 1");
    assert_eq!(arity.location(), None);
    let not_fn = engine.call_fn("answer", vec![]).unwrap_err();
    assert_eq!(not_fn.message(), "`answer` is an int, not a function");
    // An error inside the function points into the script, with no frame for the host's call.
    let err = engine.call_fn("add", vec![conc::Value::Int(1), conc::Value::str("x")]).unwrap_err();
    assert_eq!(err.location().map(|(_, l, c)| (l, c)), Some((1, 16)));
    assert!(err.stack_trace().is_empty(), "{:?}", err.stack_trace());
}

#[test]
fn call_fn_waits_for_the_tasks_the_function_started() {
    let mut engine = conc::Engine::new();
    engine
        .eval("let done = cell(0)\nfn go() { spawn { done.set(1) }; spawn { error(\"late failure\") }; \"returned\" }")
        .unwrap();
    let err = engine.call_fn("go", vec![]).unwrap_err();
    assert_eq!(err.message(), "late failure");
    assert_eq!(engine.eval("done.get()").unwrap(), conc::Value::Int(1));
}

fn limited(limits: conc::Limits) -> conc::Engine {
    conc::Engine::with_settings(conc::Settings { limits, ..conc::Settings::default() })
}

#[test]
fn limits_count_per_run_not_per_engine() {
    let mut engine = limited(conc::Limits { max_ops: Some(100_000), ..conc::Limits::default() });
    let program = engine.compile("loop.conc", "let n = 0\nwhile n < 60000 { n += 1 }\nn").unwrap();
    for _ in 0..4 {
        assert_eq!(engine.run(&program).unwrap(), conc::Value::Int(60000));
    }
    let mut engine =
        limited(conc::Limits { max_duration: Some(std::time::Duration::from_millis(400)), ..conc::Limits::default() });
    let program = engine.compile("nap.conc", "sleep(0.15)").unwrap();
    for _ in 0..4 {
        engine.run(&program).unwrap();
    }
}

#[test]
fn the_operation_limit_covers_all_of_a_scripts_tasks() {
    let mut engine = limited(conc::Limits { max_ops: Some(100_000), ..conc::Limits::default() });
    let src = "wait range(4).map(fn(t) { spawn { let n = 0\nwhile n < 60000 { n += 1 }\nn } })";
    let err = engine.eval(src).unwrap_err();
    assert_eq!(err.kind(), conc::ErrorKind::Limit, "{err:?}");
    assert!(err.message().contains("operation limit of 100000 exceeded"), "{}", err.message());
}

#[test]
fn the_time_limit_stops_a_sleeping_or_blocked_script() {
    let limits = conc::Limits { max_duration: Some(std::time::Duration::from_millis(100)), ..conc::Limits::default() };
    for src in ["sleep(60)", "let never = event()\nnever.wait()", "let t = spawn { sleep(60) }\nwait t"] {
        let started = std::time::Instant::now();
        let err = limited(limits).eval(src).unwrap_err();
        assert_eq!(err.kind(), conc::ErrorKind::Limit, "{src}: {err:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "{src} ran on");
    }
}

#[test]
fn errors_are_ordinary_rust_errors() {
    fn check<E: std::error::Error + miette::Diagnostic + Send + Sync + 'static>() {}
    check::<conc::Error>();
    let err = conc::Engine::new().eval("1 // 0").unwrap_err();
    let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(err.clone());
    assert_eq!(boxed.to_string(), "division by zero");
    let diag: &dyn miette::Diagnostic = &err;
    assert_eq!(diag.code().map(|c| c.to_string()).as_deref(), Some("conc::arithmetic"));
    assert_eq!(diag.labels().map(|l| l.count()), Some(1));
}

#[test]
fn forks_see_code_compiled_after_earlier_forks() {
    // Forks hand their jobs to children forked ahead of time; code compiled since must
    // still be there in the child that runs the job.
    std::env::set_var("CONC_EXE", env!("CARGO_BIN_EXE_conc"));
    let mut engine = conc::Engine::new();
    assert_eq!(engine.eval("wait fork { 1 } + wait fork { 2 }").unwrap(), conc::Value::Int(3));
    engine.eval("fn double(x) { x * 2 }").unwrap();
    assert_eq!(engine.eval("wait fork { double(21) }").unwrap(), conc::Value::Int(42));
    engine.eval("fn triple(x) { x * 3 }").unwrap();
    let both = engine.eval("wait [fork { triple(2) }, fork { double(4) }]").unwrap();
    assert_eq!(both, conc::Value::list(vec![conc::Value::Int(6), conc::Value::Int(8)]));
}
