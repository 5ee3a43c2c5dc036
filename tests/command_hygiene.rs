//! A thousand commands leave no descriptor and no child behind. One test in its own binary,
//! so no other test's files or children change the counts.

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd").count()
}

#[test]
fn a_thousand_commands_leave_no_fds_and_no_zombies() {
    let mut engine = conc::Engine::new();
    engine.eval("run(\"true\")").unwrap();
    let before = open_fds();
    let script = r#"
for i in range(1000) { run("true") }
for i in range(50) { run("printf", "x") | run("cat") | run("wc", "-c") }
for i in range(50) { wait start("sh", "-c", "echo $1", "sh", i) }
for i in range(50) { for l in cmd("printf", "a\nb\n").lines() { } }
for i in range(20) { try { run("sleep", "5", {timeout: 0.01}) } catch e { } }
for i in range(20) { try { run("no-such-program-anywhere") } catch e { } }
let ch = pipe()
spawn { for i in range(100) { ch.send(i) }; ch.close() }
run("cat", {input: ch})
"#;
    engine.eval(script).unwrap();
    assert_eq!(open_fds(), before, "descriptors leaked");
    // No child left at all, running or zombie.
    let any = nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
    assert_eq!(any, Err(nix::errno::Errno::ECHILD), "a child was left behind");
}
