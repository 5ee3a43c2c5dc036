//! Commands through the embedding API: output sinks, capabilities, limits and interrupts.

use conc::{Capabilities, Engine, ErrorKind, Limits, Settings, Sink};
use std::sync::{Arc, Mutex};

fn buffers() -> (Arc<Mutex<String>>, Arc<Mutex<String>>, Settings) {
    let (out, err) = (Arc::new(Mutex::new(String::new())), Arc::new(Mutex::new(String::new())));
    let settings =
        Settings { stdout: Sink::Buffer(out.clone()), stderr: Sink::Buffer(err.clone()), ..Settings::default() };
    (out, err, settings)
}

#[test]
fn inherited_output_reaches_a_buffer_sink_in_order() {
    let (out, err, settings) = buffers();
    let mut engine = Engine::with_settings(settings);
    engine
        .eval(
            r#"print("before")
run("sh", "-c", "echo out; echo err >&2", {stdout: "inherit", stderr: "inherit"})
run("printf", "no newline", {stdout: "inherit"})
print("")
print("after")"#,
        )
        .unwrap();
    assert_eq!(*out.lock().unwrap(), "before\nout\nno newline\nafter\n");
    assert_eq!(*err.lock().unwrap(), "err\n");
}

#[test]
fn a_sandbox_denies_commands_at_their_span() {
    let mut engine = Engine::with_settings(Settings::sandboxed());
    let cases = [("run(\"true\")", (1, 1)), ("let c = cmd(\"true\")\n c.lines()", (2, 2)), ("start(\"true\")", (1, 1))];
    for (src, at) in cases {
        let err = engine.eval(src).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permission, "{src}");
        assert!(err.message().contains("running commands is not allowed"), "{}", err.message());
        assert_eq!(err.location().map(|(_, l, c)| (l, c)), Some(at), "{src}");
    }
    let err = engine.eval("\n exec(\"true\")").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permission);
    assert_eq!(err.location().map(|(_, l, c)| (l, c)), Some((2, 2)));
}

#[test]
fn subprocess_capability_alone_runs_commands() {
    let caps = Capabilities { subprocess: true, ..Capabilities::none() };
    let mut engine = Engine::with_settings(Settings { capabilities: caps, ..Settings::sandboxed() });
    assert_eq!(engine.eval("run(\"echo\", \"ok\").stdout").unwrap(), conc::Value::str("ok\n"));
    let err = engine.eval("run(\"echo\", {stdout: {file: \"/tmp/x\"}})").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permission, "a file redirection needs the fs capability");
}

#[test]
fn the_subprocess_limit_counts_every_stage() {
    let limits = Limits { max_subprocesses: Some(2), ..Limits::default() };
    let mut engine = Engine::with_settings(Settings { limits, ..Settings::default() });
    engine.eval("run(\"true\") | run(\"true\")").unwrap();
    let err = engine.eval("run(\"true\") | run(\"true\")\nrun(\"true\") | run(\"true\") | run(\"true\")").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Limit);
    assert!(err.message().contains("subprocess limit of 2"), "{}", err.message());
    assert_eq!(err.location().map(|(_, l, c)| (l, c)), Some((2, 1)));
    // Finished commands give their places back.
    let n = engine.eval("let n = 0\nfor i in range(50) { run(\"true\"); n += 1 }\nn").unwrap();
    assert_eq!(n, conc::Value::Int(50));
}

#[test]
fn an_interrupt_stops_a_running_command_and_reaps_it() {
    let (tx, rx) = std::sync::mpsc::channel::<i64>();
    let mut engine = Engine::new();
    let tx = Mutex::new(tx);
    engine.register_fn("started", move |pid: i64| {
        let _ = tx.lock().unwrap().send(pid);
    });
    let interrupt = engine.interrupt_handle();
    let host = std::thread::spawn(move || {
        let pid = rx.recv().unwrap();
        interrupt.interrupt();
        pid
    });
    let err = engine.eval("let h = start(\"sleep\", \"60\")\nstarted(h.pid)\nwait h").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled);
    let pid = host.join().unwrap();
    // Reaped: the pid is no longer our child.
    let gone =
        nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), Some(nix::sys::wait::WaitPidFlag::WNOHANG));
    assert_eq!(gone, Err(nix::errno::Errno::ECHILD));
}
