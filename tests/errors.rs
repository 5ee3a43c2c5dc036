//! Failure tests through the library API: each asserts a message substring and the
//! line and column the diagnostic points at.

use conc::{Engine, ErrorKind};

fn fails(src: &str) -> conc::Error {
    let mut e = Engine::new();
    match e.eval(src) {
        Ok(v) => panic!("expected {src:?} to fail, got {v:?}"),
        Err(err) => err,
    }
}

fn check(src: &str, kind: ErrorKind, message: &str, line: usize, col: usize) {
    let err = fails(src);
    assert_eq!(err.kind(), kind, "{src:?}: {err:?}");
    assert!(err.message().contains(message), "{src:?}: message {:?} lacks {message:?}", err.message());
    let (_, l, c) = err.location().unwrap_or_else(|| panic!("{src:?}: no span"));
    assert_eq!((l, c), (line, col), "{src:?}: span at {l}:{c}, expected {line}:{col}");
}

#[test]
fn syntax_errors() {
    check("let = 3", ErrorKind::Syntax, "expected a name", 1, 5);
    check("let x = [1, 2", ErrorKind::Syntax, "this `[` is never closed", 1, 9);
    check("fn f() {\n  print(1)\n", ErrorKind::Syntax, "this `{` is never closed", 1, 8);
    check("print(\"a\" +)", ErrorKind::Syntax, "expected an expression", 1, 12);
    check("x = = 2", ErrorKind::Syntax, "expected an expression", 1, 5);
}

#[test]
fn name_errors() {
    check("fn fib(n) { fob(n) }", ErrorKind::Name, "undefined name `fob`", 1, 13);
    check("let total = 1\nprint(totl)", ErrorKind::Name, "undefined name `totl`", 2, 7);
    check("return 1", ErrorKind::Syntax, "`return` outside a function", 1, 1);
    check("break", ErrorKind::Syntax, "`break` outside a loop", 1, 1);
    check("fn f() { let c = 1\n fn() { c = 2 } }", ErrorKind::Name, "captured by value", 2, 9);
    check("let total = 0\nspawn { total += 1 }", ErrorKind::Name, "inside a task: the task has its own copy", 2, 9);
}

#[test]
fn did_you_mean() {
    let err = fails("let counter = 1\nprint(countr)");
    assert_eq!(err.details().help.as_deref(), Some("did you mean `counter`?"));
}

#[test]
fn arithmetic_faults() {
    check("let x = 9223372036854775807\nx + 1", ErrorKind::Arithmetic, "integer overflow", 2, 1);
    check("1 // 0", ErrorKind::Arithmetic, "division by zero", 1, 6);
    check("7 % 0", ErrorKind::Arithmetic, "division by zero", 1, 5);
    check("1.5 / 0", ErrorKind::Arithmetic, "division by zero", 1, 7);
    check("-(-9223372036854775807 - 1)", ErrorKind::Arithmetic, "overflow", 1, 1);
}

#[test]
fn type_and_lookup_faults() {
    check("\"a\" + 1", ErrorKind::Type, "cannot apply `+` to a string and an int", 1, 1);
    check("len(5)", ErrorKind::Type, "an int has no length", 1, 5);
    check("[1, 2][5]", ErrorKind::Index, "index 5 is out of range", 1, 8);
    check("let m = {name: 1}\nm.nme", ErrorKind::Key, "key \"nme\" is not in the map", 2, 1);
    check("fn f(a) { a }\nf(1, 2)", ErrorKind::Type, "takes 1 argument but 2 were given", 2, 1);
}

#[test]
fn user_errors_carry_message_and_data() {
    let err = fails("error(\"boom\", {code: 7})");
    assert_eq!(err.kind(), ErrorKind::User);
    assert_eq!(err.message(), "boom");
    assert_eq!(err.details().data.repr(), "{code: 7}");
}

#[test]
fn depth_limits_are_diagnostics_not_crashes() {
    check("fn f(n) { f(n + 1) }\nf(0)", ErrorKind::Limit, "call depth exceeded", 1, 11);
    let deep = format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000));
    let err = fails(&deep);
    assert_eq!(err.kind(), ErrorKind::Syntax);
    assert!(err.message().contains("nested more than"), "{}", err.message());
    let deep_not = format!("print({}true)", "not ".repeat(100_000));
    assert!(fails(&deep_not).message().contains("nested more than"));
}

#[test]
fn task_errors_name_both_spans() {
    let err = fails("let t = spawn {\n  error(\"inside\")\n}\nwait t");
    assert_eq!(err.message(), "inside");
    let (_, line, col) = err.location().expect("span");
    assert_eq!((line, col), (1, 9), "the primary span is where the task was spawned");
    let related = &err.details().related;
    assert_eq!(related.len(), 1);
    let failed_at = related[0].span.expect("the related error has a span");
    assert!(failed_at.start > 10, "the related span is where it failed");
}

#[test]
fn deadlock_is_reported_not_hung() {
    let src = "let a = mutex()\nlet b = mutex()\nlet both = barrier(2)\n\
               let t1 = spawn { lock a { both.wait(); lock b { 1 } } }\n\
               let t2 = spawn { lock b { both.wait(); lock a { 2 } } }\n\
               wait [t1, t2]";
    let err = fails(src);
    assert_eq!(err.kind(), ErrorKind::Deadlock);
    let help = err.details().help.clone().unwrap_or_default();
    assert!(help.contains("spawn@4 is blocked in acquiring a lock"), "{help}");
    assert!(help.contains("spawn@5 is blocked in acquiring a lock"), "{help}");
}

/// Regression (found by the fuzzer): unclosed nesting made the parser backtrack
/// exponentially, doubling the time per level. Each of these must fail fast.
#[test]
fn unclosed_nesting_parses_in_linear_time() {
    for unit in ["a.b(", "spawn {", "a[{", "x(m.g({c.m", "fork {"] {
        let src = unit.repeat(40);
        let started = std::time::Instant::now();
        let err = Engine::new().compile("<fuzz>", &src).err().expect("unclosed input is a syntax error");
        let took = started.elapsed();
        assert_eq!(err.kind(), ErrorKind::Syntax);
        assert!(took < std::time::Duration::from_secs(5), "{unit:?} x 40 took {took:?}");
    }
}

#[test]
fn command_failures() {
    check("run(\"conc-no-such-tool\", \"x\")", ErrorKind::Command, "command not found: conc-no-such-tool", 1, 5);
    check("let x = 1\nrun(\"false\")", ErrorKind::Command, "`false` exited with status 1", 2, 1);
    check(
        "run(\"true\") | run(\"sh\", \"-c\", \"exit 3\")",
        ErrorKind::Command,
        "(stage 2 of 2) exited with status 3",
        1,
        15,
    );
    check("run(\"sleep\", \"5\", {timeout: 0.05})", ErrorKind::Timeout, "`sleep 5` timed out after 50ms", 1, 1);
    check("run(\"echo\", {bogus: 1})", ErrorKind::Value, "unknown command option `bogus`", 1, 13);
    check("run(\"echo\", {stdout: 3})", ErrorKind::Value, "option `stdout` must be", 1, 13);
    check("run(\"echo\") | 5", ErrorKind::Type, "`|` connects commands, not an int", 1, 15);
    check("run(\"echo\") | start(\"echo\")", ErrorKind::Value, "either runs or starts", 1, 15);
    check("run(\"echo\", nil)", ErrorKind::Type, "command arguments are strings or numbers, not a nil", 1, 13);
    check("sh(1)", ErrorKind::Type, "`sh` takes a shell script (a string) first", 1, 4);
    check("run()", ErrorKind::Type, "`run` needs a program to run", 1, 1);
    check("cmd(\"echo\").bad()", ErrorKind::Type, "a command has no method `bad`", 1, 13);
    check("exec(\"conc-no-such-tool\")", ErrorKind::Command, "command not found: conc-no-such-tool", 1, 6);
    check("run(\"echo\", {cwd: \"/no/such/dir\"})", ErrorKind::Io, "no such directory: /no/such/dir", 1, 13);
    check("let h = start(\"sh\", \"-c\", \"exit 2\")\nwait h", ErrorKind::Command, "exited with status 2", 1, 9);
    check("for l in cmd(\"sh\", \"-c\", \"exit 5\").lines() { }", ErrorKind::Command, "exited with status 5", 1, 10);
}

/// An error raised inside a standard module points at the script's call of the module
/// function, like Rust's `#[track_caller]`, not at the module's internals.
#[test]
fn std_module_errors_point_at_the_scripts_call() {
    check(
        "import \"std/json\"\nlet v = json.decode(\"[1,\")",
        ErrorKind::User,
        "invalid JSON at line 1, column 4",
        2,
        9,
    );
    let err = fails("import \"std/json\"\njson.decode(\"[1,\")");
    assert_eq!(err.details().label.as_deref(), Some("in this call to `decode`"));
    assert!(err.stack_trace().is_empty(), "the module's own frames are dropped: {:?}", err.stack_trace());
    check("import \"std/strings\"\n\nstrings.table(5)", ErrorKind::User, "expects a list of rows, got int", 3, 1);
}

/// When the script's own callback fails inside a module, the error is raised at the call
/// and the failure inside the callback is kept, with its own span, as a related error.
#[test]
fn a_callback_failing_inside_a_module_keeps_its_span() {
    let src = "import \"std/parallel\"\nparallel.map([1, 0], 2, fn(x) {\n    10 // x\n})";
    let err = fails(src);
    assert_eq!(err.kind(), ErrorKind::Arithmetic);
    assert_eq!(err.location().map(|(_, l, c)| (l, c)), Some((2, 1)));
    let related = &err.details().related;
    assert_eq!(related.len(), 1, "only the script's failure, not the module's tasks: {related:?}");
    assert_eq!(related[0].span.map(|s| s.start), Some(src.find("x\n}").unwrap() as u32));
}

#[test]
fn sandbox_denies_file_reading_builtins() {
    let mut sandbox = Engine::with_settings(conc::Settings::sandboxed());
    for src in ["open(\"/etc/hostname\")", "stat(\"/\")", "import \"std/fs\"\nfs.walk(\"/\")"] {
        let err = sandbox.eval(src).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permission, "{src}");
        assert!(err.message().contains("file system access is not allowed"), "{src}: {}", err.message());
    }
}

#[test]
fn file_builtin_faults() {
    check("open(\"/no/such/file\")", ErrorKind::Io, "/no/such/file: no such file or directory", 1, 6);
    check("open(\"/\")", ErrorKind::Io, "/: is a directory", 1, 6);
    check("stat(\"/no/such\")", ErrorKind::Io, "/no/such: no such file or directory", 1, 6);
    check("let f = open(\"Cargo.toml\")\nf.seek(0)", ErrorKind::Type, "a file has no method `seek`", 2, 3);
}

/// Forked children are served by the conc binary; this test binary is not it.
fn processes() {
    std::env::set_var("CONC_EXE", env!("CARGO_BIN_EXE_conc"));
}

#[test]
fn errors_in_children_name_the_fork_and_the_failure() {
    processes();
    let src = "fn parse(t) {\n  int(t)\n}\nlet h = fork parse(\"80a\")\nwait h";
    check(src, ErrorKind::Value, "cannot convert \"80a\" to an int", 4, 9);
    let err = fails(src);
    assert_eq!(err.details().label.as_deref(), Some("task fork@4 started here failed"));
    let related = &err.details().related;
    assert_eq!(related.len(), 1, "{related:?}");
    assert_eq!(
        related[0].span.map(|s| s.start as usize),
        Some(src.find("int(t)").unwrap() + 4),
        "the argument that failed"
    );
    check("let x = fork {\n  1 // 0\n}\nwait x", ErrorKind::Arithmetic, "division by zero", 1, 9);
    check(
        "let gate = pipe()\nlet h = fork { gate.recv() }\nh.kill(\"KILL\")\nwait h",
        ErrorKind::Task,
        "killed by SIGKILL before it finished",
        2,
        9,
    );
}

#[test]
fn unportable_captures_are_errors_at_the_capture() {
    processes();
    let crossing = "cannot cross into another process: it is a task handle";
    check("let t = spawn { 1 }\nwait t\nfork {\n  wait t\n}", ErrorKind::Type, crossing, 4, 8);
    check("let t = spawn { 1 }\nwait t\nlet f = fn() { t }\nfork f()", ErrorKind::Type, crossing, 3, 16);
    check("let h = start(\"true\")\nwait h\nfork { h.pid }", ErrorKind::Type, crossing, 3, 8);
    let file = "`f` cannot cross into another process: it is a file";
    check("let f = open(\"Cargo.toml\")\nfork {\n    f.read_line()\n}", ErrorKind::Type, file, 3, 5);
    let err = fails("let f = open(\"Cargo.toml\")\nfork { f }");
    assert_eq!(err.details().label.as_deref(), Some("this value cannot be sent to another process"));
    let items = "item 1 cannot cross into another process";
    check(
        "let t = spawn { 1 }\nwait t\npool map fn(x) { x } over [1, t] with {backend: \"processes\"}",
        ErrorKind::Type,
        items,
        3,
        1,
    );
}

#[test]
fn process_pool_failures_name_the_item_and_both_spans() {
    processes();
    let src = "fn risky(x) { if x == 3 { 1 // (x - 3) } else { x } }\nlet ys = pool map risky over range(6) with {backend: \"processes\", workers: 2}";
    check(src, ErrorKind::Arithmetic, "item 3 failed: division by zero", 2, 10);
    let err = fails(src);
    assert_eq!(err.details().label.as_deref(), Some("item 3 of this `pool map` failed"));
    let related = &err.details().related;
    assert_eq!(related.len(), 1, "{related:?}");
    assert_eq!(related[0].span.map(|s| s.start as usize), Some(src.find("x - 3").unwrap()), "the zero divisor");
    let killed = "fn f(x) { if x == 1 { kill(pid(), \"KILL\") }; x }\nlet ys = pool map f over range(3) with {backend: \"processes\", workers: 1, chunk: 1}";
    check(killed, ErrorKind::Task, "killed by SIGKILL while running item 1", 2, 10);
    let err = fails(killed);
    assert!(err.message().starts_with("worker pid "), "{}", err.message());
    assert!(
        err.details().help.as_deref().is_some_and(|h| h.contains("errors: \"collect\"")),
        "{:?}",
        err.details().help
    );
}

#[test]
fn peer_deaths_are_errors_at_the_blocked_call() {
    processes();
    let lock = "let m = mutex()\nlet held = pipe()\nlet gate = pipe()\nlet o = fork { lock m { held.send(1); gate.recv() } }\nheld.recv()\no.kill(\"KILL\")\nlock m { 1 }";
    check(lock, ErrorKind::Task, "lock owner died: pid", 7, 6);
    assert!(fails(lock).message().ends_with("killed by SIGKILL"), "{}", fails(lock).message());
    let chan = "let ch = pipe()\nlet gate = pipe()\nlet f = fork { ch.send(1); gate.recv() }\nch.recv()\nf.kill(\"KILL\")\nlet v = ch.recv()";
    check(chan, ErrorKind::Task, "channel closed: pid", 6, 9);
    let err = fails(chan);
    assert!(err.message().ends_with("killed by SIGKILL"), "{}", err.message());
    assert_eq!(err.details().label.as_deref(), Some("the channel closed under this call"));
}

#[test]
fn signal_mistakes_are_pointed_at() {
    processes();
    check("kill(pid(), \"BOGUS\")", ErrorKind::Value, "unknown signal `BOGUS`", 1, 13);
    check("let x = 1\nkill(0)", ErrorKind::Value, "0 is not a process id", 2, 6);
    check("kill(pid(), [1])", ErrorKind::Type, "a signal is a name or a number from 1 to 64", 1, 13);
    check("let t = spawn { 1 }\nwait t\nkill(t)", ErrorKind::Type, "a thread task cannot be sent a signal", 3, 6);
    check("on_signal(\"KILL\", fn(s) { })", ErrorKind::Value, "SIGKILL and SIGSTOP cannot be caught", 1, 11);
    check("on_signal(\"TERM\", 5)", ErrorKind::Type, "a signal handler is a function, not an int", 1, 19);
    check(
        "let gate = pipe()\nlet h = fork { gate.recv() }\nh.kill(\"NOPE\")",
        ErrorKind::Value,
        "unknown signal `NOPE`",
        3,
        8,
    );
    check("let t = spawn { 1 }\nt.kill()", ErrorKind::Type, "only process and command tasks can be killed", 2, 3);
}

/// Failures that differ are each shown; those that repeat one already shown are counted.
#[test]
fn distinct_task_failures_are_each_shown_and_repeats_counted() {
    let src = "fn work(i) {\n  if i == 1 { error(\"bad input\") }\n  if i > 1 { error(\"no input\") }\n  i\n}\n\
               let ts = range(5).map(fn(i) { spawn { work(i) } })\n\
               while len(ts.filter(fn(t) { not t.done })) > 0 { }\n\
               wait ts";
    let err = fails(src);
    assert_eq!(err.message(), "bad input");
    let messages: Vec<String> =
        miette::Diagnostic::related(&err).expect("related failures").map(|d| d.to_string()).collect();
    assert_eq!(messages, ["bad input", "no input"], "each distinct failure once, in order");
    let shown = conc::error::render(&err, false);
    assert!(shown.contains("(2 more tasks failed the same way)"), "{shown}");
}
