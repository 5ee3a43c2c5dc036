//! A host that cancels a script from another thread while the script runs a thread pool,
//! then while it runs forked children, a process pool and a subprocess: everything the
//! script started is stopped and reaped before `run` returns.
use conc::{Engine, ErrorKind};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// An engine whose scripts call `ready(note)` to tell the host they are under way.
fn engine_with_ready() -> (Engine, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel::<String>();
    let mut engine = Engine::new();
    engine.register_fn("ready", move |note: String| {
        let _ = tx.send(note);
    });
    (engine, rx)
}

/// Run `source`, interrupting it from another thread once it has called `ready`; returns
/// what it passed to `ready`.
fn run_and_cancel(source: &str) -> String {
    let (mut engine, ready) = engine_with_ready();
    let interrupt = engine.interrupt_handle();
    let program = engine.compile("forever.conc", source).unwrap();
    let canceller = std::thread::spawn(move || {
        let note = ready.recv_timeout(Duration::from_secs(30)).expect("the script reports it is ready");
        interrupt.interrupt();
        note
    });
    let started = Instant::now();
    let err = engine.run(&program).unwrap_err();
    let took = started.elapsed();
    let note = canceller.join().unwrap();
    println!("cancelled after {took:?}: {}", err.message());
    assert_eq!(err.kind(), ErrorKind::Cancelled);
    // Generous bound: threads stop at their next loop back-edge, processes get TERM and then
    // KILL after half a second.
    assert!(took < Duration::from_secs(10), "cancellation took {took:?}");
    note
}

pub fn main() {
    // Forked processes are served by this binary, re-executed: it must answer that call
    // before anything else (a program that never forks can leave this out).
    conc::serve_processes();
    run_and_cancel(
        r#"
        fn spin(i) { let n = 0; while true { n += 1 } }
        ready("")
        pool map spin over range(8) with {workers: 4, progress: false}
        "#,
    );

    let pids = run_and_cancel(
        r#"
        fn spin(i) { let n = 0; while true { n += 1 } }
        let kids = [fork spin(0), fork spin(1)]
        let sleeper = start("sleep", "1000")
        ready("{kids[0].pid} {kids[1].pid} {sleeper.pid}")
        pool map spin over range(8) with {workers: 2, backend: "processes", progress: false}
        "#,
    );
    for pid in pids.split_whitespace() {
        let gone = !std::path::Path::new(&format!("/proc/{pid}")).exists();
        assert!(gone, "process {pid} outlived the cancelled script");
    }
    println!("all {} processes the script started are gone", pids.split_whitespace().count());
}
