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
