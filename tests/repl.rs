//! The REPL, driven through piped stdin: no prompts, values echoed, errors reported,
//! and the session carries on.

use std::io::Write;
use std::process::{Command, Stdio};

fn repl(input: &str) -> (String, String, i32) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_conc"))
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("conc starts");
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("conc finishes");
    (
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
        out.status.code().unwrap_or(-1),
    )
}

#[test]
fn bindings_and_functions_persist_between_entries() {
    let (out, err, code) = repl("let x = 40\nfn add(a, b) { a + b }\nadd(x, 2)\n");
    assert_eq!(out, "42\n", "stderr: {err}");
    assert_eq!(code, 0);
}

#[test]
fn multi_line_entries_continue_while_a_block_is_open() {
    let (out, err, _) = repl("fn sq(n) {\n  n * n\n}\nsq(9)\nlet m = {\n  a: 1,\n  b: [1,\n  2]\n}\nm\n");
    assert_eq!(out, "81\n{a: 1, b: [1, 2]}\n", "stderr: {err}");
}

#[test]
fn values_print_their_representation_and_nil_prints_nothing() {
    let (out, _, _) = repl("\"text\"\n[1, \"a\"]\nnil\nprint(\"plain\")\n");
    assert_eq!(out, "\"text\"\n[1, \"a\"]\nplain\n");
}

#[test]
fn an_error_is_reported_and_the_session_carries_on() {
    let (out, err, code) = repl("let y = 1\nundefined_name\ny + 1\n1 // 0\ny\n");
    assert_eq!(out, "2\n1\n");
    assert!(err.contains("undefined name `undefined_name`"), "{err}");
    assert!(err.contains("division by zero"), "{err}");
    assert_eq!(code, 0);
}

#[test]
fn commands_help_load_and_quit() {
    let dir = std::env::temp_dir().join(format!("conc-repl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let lib = dir.join("lib.conc");
    std::fs::write(&lib, "fn triple(n) { n * 3 }\n").unwrap();
    let (out, err, code) = repl(&format!(":help\n:load {}\ntriple(5)\n:quit\nprint(\"not reached\")\n", lib.display()));
    assert!(out.contains(":load FILE"), "{out}");
    assert!(out.contains("15\n"), "{out} {err}");
    assert!(!out.contains("not reached"));
    assert_eq!(code, 0);
}

#[test]
fn tasks_started_in_one_entry_can_be_waited_in_the_next() {
    let (out, err, _) = repl("let t = spawn { 6 * 7 }\nwait t\n");
    assert_eq!(out, "42\n", "{err}");
}
