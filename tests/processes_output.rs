//! A forked child's output goes where the host sends the parent's: into its buffers.
use conc::{Engine, Settings, Sink};
use std::sync::{Arc, Mutex};

fn capturing() -> (Engine, Arc<Mutex<String>>, Arc<Mutex<String>>) {
    let (out, err) = (Arc::new(Mutex::new(String::new())), Arc::new(Mutex::new(String::new())));
    let settings =
        Settings { stdout: Sink::Buffer(out.clone()), stderr: Sink::Buffer(err.clone()), ..Settings::default() };
    (Engine::with_settings(settings), out, err)
}

#[test]
fn a_childs_prints_reach_the_hosts_buffers_before_wait_returns() {
    std::env::set_var("CONC_EXE", env!("CARGO_BIN_EXE_conc"));
    let (mut engine, out, err) = capturing();
    let v = engine
        .eval(
            "let h = fork { for i in range(2000) { print(\"line {i} ñ\") }; eprint(\"to stderr\"); 7 }\n\
             let v = wait h\n\
             assert(h.pid != pid() and h.exit_code == 0)\n\
             print(\"parent after wait\")\n\
             v",
        )
        .unwrap();
    assert_eq!(v, conc::Value::Int(7));
    let out = out.lock().unwrap().clone();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2001, "every line of the child, then the parent's");
    assert_eq!(lines[0], "line 0 ñ");
    assert_eq!(lines[1999], "line 1999 ñ");
    assert_eq!(lines[2000], "parent after wait");
    assert_eq!(err.lock().unwrap().trim(), "to stderr");
}

#[test]
fn process_pool_workers_print_into_the_hosts_buffer() {
    std::env::set_var("CONC_EXE", env!("CARGO_BIN_EXE_conc"));
    let (mut engine, out, _) = capturing();
    engine
        .eval("pool map fn(i) { print(\"item {i}\") } over range(20) with {backend: \"processes\", workers: 2, progress: false}")
        .unwrap();
    // Worker output is passed on as it comes; the workers have exited once the map returns,
    // so give the pumps a generous moment to finish.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while out.lock().unwrap().lines().count() < 20 && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    let mut lines: Vec<String> = out.lock().unwrap().lines().map(String::from).collect();
    lines.sort();
    let mut want: Vec<String> = (0..20).map(|i| format!("item {i}")).collect();
    want.sort();
    assert_eq!(lines, want);
}
