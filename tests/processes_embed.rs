//! Processes in an embedded engine: the `fork` capability, the process limit, and limits on
//! scripts that wait for children.

use conc::{Capabilities, Engine, ErrorKind, Limits, Settings, Value};
use std::time::{Duration, Instant};

/// Forked children are served by the conc binary; this test binary is not it.
fn engine(settings: Settings) -> Engine {
    std::env::set_var("CONC_EXE", env!("CARGO_BIN_EXE_conc"));
    Engine::with_settings(settings)
}

fn limited(limits: Limits) -> Engine {
    engine(Settings { limits, ..Settings::default() })
}

fn check(e: &mut Engine, src: &str, kind: ErrorKind, message: &str, line: usize, col: usize) {
    let err = e.eval(src).expect_err(src);
    assert_eq!(err.kind(), kind, "{src:?}: {err:?}");
    assert!(err.message().contains(message), "{src:?}: message {:?} lacks {message:?}", err.message());
    let (_, l, c) = err.location().unwrap_or_else(|| panic!("{src:?}: no span"));
    assert_eq!((l, c), (line, col), "{src:?}: span at {l}:{c}, expected {line}:{col}");
}

#[test]
fn a_sandbox_denies_processes_at_their_span() {
    let mut sandbox = engine(Settings::sandboxed());
    let denied = "starting processes is not allowed in this engine";
    check(&mut sandbox, "let x = 1\nlet h = fork { 1 }", ErrorKind::Permission, denied, 2, 9);
    check(&mut sandbox, "fn f(a) { a }\nfork f(2)", ErrorKind::Permission, denied, 2, 1);
    check(
        &mut sandbox,
        "let ys = pool map fn(x) { x } over [1] with {backend: \"processes\"}",
        ErrorKind::Permission,
        denied,
        1,
        10,
    );
    check(&mut sandbox, "kill(1, \"TERM\")", ErrorKind::Permission, "not allowed", 1, 1);
    let err = sandbox.eval("fork { 1 }").unwrap_err();
    assert_eq!(err.details().help.as_deref(), Some("the host must grant the `fork` capability"));
    // Threads, and thread pools, are still there.
    assert_eq!(sandbox.eval("pool map fn(x) { x * 2 } over [1, 2]").unwrap().repr(), "[2, 4]");
    assert_eq!(sandbox.eval("wait spawn { 3 }").unwrap(), Value::Int(3));
}

#[test]
fn granting_fork_lets_a_sandboxed_script_fork() {
    let mut e =
        engine(Settings { capabilities: Capabilities { fork: true, ..Capabilities::none() }, ..Settings::sandboxed() });
    assert_eq!(e.eval("wait fork { [6 * 7, \"from a child\"] }").unwrap().repr(), "[42, \"from a child\"]");
    let ys = e.eval("pool map fn(x) { x + 1 } over range(5) with {backend: \"processes\", workers: 2}").unwrap();
    assert_eq!(ys.repr(), "[1, 2, 3, 4, 5]");
    // The child runs under the same sandbox: what the parent may not do, it may not either.
    let err = e.eval("wait fork { read_file(\"/etc/hostname\") }").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permission, "{err:?}");
}

/// Each check on a fresh engine: a child's slot is given back only once it has been reaped,
/// which lags behind `wait` (tests/pending/processes_limit.rs, bugs-ptest.md 13).
#[test]
fn the_process_limit_counts_children_alive_at_once() {
    let two = || limited(Limits { max_processes: Some(2), ..Limits::default() });
    let src =
        "let gate = pipe()\nlet a = fork { gate.recv() }\nlet b = fork { gate.recv() }\nlet c = fork { gate.recv() }";
    check(&mut two(), src, ErrorKind::Limit, "process limit of 2 reached", 4, 9);
    let err = two()
        .eval("let gate = pipe()\nlet a = fork { gate.recv() }\nlet b = fork { gate.recv() }\nfork { 1 }")
        .unwrap_err();
    assert_eq!(err.details().label.as_deref(), Some("this process would be one too many"));
    assert_eq!(two().eval("wait [fork { 1 }, fork { 2 }]").unwrap().repr(), "[1, 2]");
    let pool = "pool map fn(x) { x } over range(8) with {backend: \"processes\", workers: 2}";
    assert_eq!(two().eval(pool).unwrap().repr(), "[0, 1, 2, 3, 4, 5, 6, 7]");
    let too_many = "let ys = pool map fn(x) { x } over range(8) with {backend: \"processes\", workers: 3}";
    check(&mut two(), too_many, ErrorKind::Limit, "process limit of 2 reached", 1, 10);
}

#[test]
fn the_time_limit_stops_a_script_waiting_for_a_child() {
    let mut e = limited(Limits { max_duration: Some(Duration::from_millis(200)), ..Limits::default() });
    for src in [
        "let gate = pipe()\nwait fork { gate.recv() }",
        "let gate = pipe()\nlet h = fork { gate.recv() }\ngate.recv()",
        "pool map fn(x) { while true { } } over [1, 2] with {backend: \"processes\", workers: 2}",
    ] {
        let started = Instant::now();
        let err = e.eval(src).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Limit, "{src}: {err:?}");
        assert!(started.elapsed() < Duration::from_secs(30), "{src} ran on");
    }
}

#[test]
fn values_and_errors_cross_back_to_the_host() {
    let mut e = engine(Settings::default());
    e.eval("fn square(x) { x * x }\nlet offset = 10").unwrap();
    let v = e.eval("wait fork { {squares: range(4).map(square), offset: offset, pi: 3.5, none: nil} }").unwrap();
    assert_eq!(v.repr(), "{squares: [0, 1, 4, 9], offset: 10, pi: 3.5, none: nil}");
    let err = e.eval("let h = fork {\n  error(\"inside\", {code: 7})\n}\nwait h").unwrap_err();
    assert_eq!((err.kind(), err.message()), (ErrorKind::User, "inside"));
    assert_eq!(err.details().data.repr(), "{code: 7}");
    assert_eq!(err.location().map(|(_, l, c)| (l, c)), Some((1, 9)), "the fork span");
    let related = &err.details().related;
    assert_eq!(related.len(), 1, "{related:?}");
    let failed_at = related[0].span.expect("the failure has a span").start as usize;
    assert_eq!(failed_at, "let h = fork {\n  ".len(), "the failure span, inside the child: {related:?}");
}

/// A child that `wait` has finished with no longer counts against `max_processes`, and a run
/// that failed has reaped its children before `eval` returns.
#[test]
fn the_process_limit_gives_slots_back_at_wait() {
    let mut e = limited(Limits { max_processes: Some(1), ..Limits::default() });
    for _ in 0..10 {
        assert_eq!(e.eval("let n = 0\nfor i in range(20) { n += wait fork { i } }\nn").unwrap(), Value::Int(190));
    }
    let mut e = limited(Limits { max_processes: Some(2), ..Limits::default() });
    let src =
        "let gate = pipe()\nlet a = fork { gate.recv() }\nlet b = fork { gate.recv() }\nlet c = fork { gate.recv() }";
    check(&mut e, src, ErrorKind::Limit, "process limit of 2 reached", 4, 9);
    assert_eq!(e.eval("wait [fork { 1 }, fork { 2 }]").unwrap().repr(), "[1, 2]");
}

/// A process pool object is refused where it is made, not at its first `submit`.
#[test]
fn a_sandbox_denies_a_process_pool_object_where_it_is_made() {
    let mut sandbox = engine(Settings::sandboxed());
    let src = "let p = 0\np = pool with {backend: \"processes\"}";
    check(&mut sandbox, src, ErrorKind::Permission, "starting processes is not allowed", 2, 5);
}
