// Pending (bugs-ptest.md 12, 13). Append to tests/processes_embed.rs (it uses that file's
// helpers) once fixed.

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
