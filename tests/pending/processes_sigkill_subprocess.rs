// Pending (bugs-ptest.md 11). Append to tests/processes.rs (it uses that file's helpers) once
// a command started by conc dies with a SIGKILLed conc.

#[test]
fn a_sigkilled_conc_leaves_no_subprocess() {
    let src = r#"
let gate = pipe()
let s = start("sleep", "100")
let kid = fork { gate.recv() }
print("ready", s.pid, kid.pid)
gate.recv()
"#;
    let mut conc = Running::start("sigkill_subprocess.conc", src, false);
    let children = ready_processes(&mut conc);
    signal(conc.pid(), nix::sys::signal::Signal::SIGKILL);
    let (code, _) = conc.wait_exit(Duration::from_secs(5));
    assert_eq!(code, None, "killed by a signal");
    let gone = eventually(Duration::from_secs(5), || children.iter().all(|&p| !is_running(p)));
    let survivors: Vec<i32> = children.iter().copied().filter(|&p| is_running(p)).collect();
    for &p in &survivors {
        signal(p, nix::sys::signal::Signal::SIGKILL);
    }
    assert!(gone, "children ran on after conc was SIGKILLed: {survivors:?}");
}
