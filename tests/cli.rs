//! The `conc` command line: exit codes, arguments, stdin, and bad input.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn conc(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_conc"))
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("conc starts");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
    child.wait_with_output().expect("conc finishes")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn temp_file(name: &str, contents: &[u8]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("conc-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let p = dir.join(name);
    std::fs::write(&p, contents).expect("write temp file");
    p
}

#[test]
fn eval_prints_and_exits_zero() {
    let out = conc(&["-e", "print(6 * 7)"], "");
    assert_eq!(text(&out.stdout), "42\n");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn script_sees_its_arguments() {
    let p = temp_file("args.conc", b"print(args)\n");
    let out = conc(&[p.to_str().unwrap(), "one", "--two"], "");
    assert_eq!(text(&out.stdout), "[\"one\", \"--two\"]\n");
    let out = conc(&["run", p.to_str().unwrap(), "x"], "");
    assert_eq!(text(&out.stdout), "[\"x\"]\n");
    let out = conc(&["-e", "print(args)", "a", "b"], "");
    assert_eq!(text(&out.stdout), "[\"a\", \"b\"]\n");
}

#[test]
fn exit_codes_follow_the_convention() {
    assert_eq!(conc(&["-e", "let = 1"], "").status.code(), Some(65), "syntax error");
    assert_eq!(conc(&["-e", "print(nope)"], "").status.code(), Some(65), "undefined name");
    assert_eq!(conc(&["-e", "1 // 0"], "").status.code(), Some(70), "runtime error");
    assert_eq!(conc(&["-e", "exit(7)"], "").status.code(), Some(7), "exit(n)");
    assert_eq!(conc(&["-e", "exit()"], "").status.code(), Some(0), "exit()");
}

#[test]
fn missing_file_is_an_io_error() {
    let out = conc(&["/no/such/script.conc"], "");
    assert_eq!(out.status.code(), Some(74));
    let err = text(&out.stderr);
    assert!(err.contains("cannot read /no/such/script.conc: no such file or directory"), "{err}");
}

#[test]
fn directory_is_an_io_error() {
    let dir = std::env::temp_dir();
    let out = conc(&[dir.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(74));
    assert!(text(&out.stderr).contains("is a directory"), "{}", text(&out.stderr));
}

#[test]
fn non_utf8_file_is_an_io_error() {
    let p = temp_file("latin1.conc", b"print(\"caf\xe9\")\n");
    let out = conc(&[p.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(74));
    assert!(text(&out.stderr).contains("not valid UTF-8"), "{}", text(&out.stderr));
}

#[test]
fn check_reports_errors_without_running() {
    let good = temp_file("good.conc", b"print(\"should not run\")\n");
    let bad = temp_file("bad.conc", b"print(undefined_thing)\n");
    let out = conc(&["check", good.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), "", "check must not run the script");
    let out = conc(&["check", good.to_str().unwrap(), bad.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(65));
    assert!(text(&out.stderr).contains("undefined name `undefined_thing`"));
}

#[test]
fn stdin_is_readable_by_line_and_whole() {
    let out = conc(&["-e", "print(read_line()); print(read_line()); print(read_line())"], "first\nsecond\n");
    assert_eq!(text(&out.stdout), "first\nsecond\nnil\n");
    let out = conc(&["-e", "print(len(stdin_lines()))"], "a\nb\nc\n");
    assert_eq!(text(&out.stdout), "3\n");
}

#[test]
fn version_and_help() {
    let out = conc(&["--version"], "");
    assert!(text(&out.stdout).starts_with("conc "), "{}", text(&out.stdout));
    let out = conc(&["--help"], "");
    assert!(text(&out.stdout).contains("Usage"));
}

#[test]
fn no_colour_when_not_a_terminal() {
    let out = conc(&["-e", "1 // 0"], "");
    assert!(!text(&out.stderr).contains('\x1b'), "escape codes in piped stderr");
}

#[test]
fn diagnostics_never_leak_grammar_rule_names() {
    for src in ["let = 3", "x = = 2", "fn (", "[1, 2", "if x {", "print(\"a\" +)", "let spawn = 1", "1 +* 2"] {
        let err = text(&conc(&["-e", src], "").stderr);
        for leaked in ["expr", "primary", "stmt", "ident", "call_args", "EOI", "k_", "_suffix"] {
            let words: Vec<&str> = err.split(|c: char| !(c.is_alphanumeric() || c == '_')).collect();
            assert!(!words.contains(&leaked), "{src:?} leaked {leaked:?}:\n{err}");
        }
        assert!(err.contains("syntax error") || err.contains("reserved"), "{src:?}:\n{err}");
    }
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("conc-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn conc_test_finds_test_files_in_a_directory() {
    let dir = temp_dir("tests");
    std::fs::create_dir_all(dir.join("nested")).expect("nested dir");
    std::fs::write(dir.join("nested/math_test.conc"), "fn test_add() { assert_eq(1 + 1, 2) }\n").expect("write");
    std::fs::write(dir.join("helper.conc"), "fn test_not_collected() { error(\"not a test file\") }\n").expect("write");
    let out = conc(&["test", dir.to_str().unwrap()], "");
    let stdout = text(&out.stdout);
    assert!(stdout.contains("test test_add ... ok"), "{stdout}");
    assert!(stdout.contains("test result: ok. 1 passed; 0 failed; 0 filtered out; 1 file"), "{stdout}");
    assert_eq!(out.status.code(), Some(0));
    let listed = conc(&["test", "--list", dir.to_str().unwrap()], "");
    assert!(text(&listed.stdout).ends_with("math_test.conc: test_add\n"), "{}", text(&listed.stdout));
}

#[test]
fn conc_test_without_test_files_fails() {
    let dir = temp_dir("empty");
    let out = conc(&["test", dir.to_str().unwrap()], "");
    assert!(text(&out.stdout).contains("no test files under"), "{}", text(&out.stdout));
    assert_eq!(out.status.code(), Some(1));
    let missing = conc(&["test", "/no/such/dir"], "");
    assert!(text(&missing.stdout).contains("cannot read /no/such/dir: no such file or directory"));
    assert_eq!(missing.status.code(), Some(1));
}

#[test]
fn conc_test_timeout_cancels_a_hung_test() {
    let p = temp_file("hang_test.conc", b"fn test_spins() { while true { } }\nfn test_after() { assert(true) }\n");
    let out = conc(&["test", "--timeout", "0.2", p.to_str().unwrap()], "");
    let stdout = text(&out.stdout);
    assert!(stdout.contains("test test_spins ... FAILED"), "{stdout}");
    assert!(stdout.contains("`test_spins` took longer than 0.2s"), "{stdout}");
    // The engine is usable again after the cancelled test.
    assert!(stdout.contains("test test_after ... ok"), "{stdout}");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn conc_test_nocapture_prints_as_tests_run() {
    let p = temp_file("loud_test.conc", b"fn test_loud() { print(\"visible\") }\n");
    let captured = conc(&["test", p.to_str().unwrap()], "");
    assert!(!text(&captured.stdout).contains("visible"), "a passing test's output is captured");
    let shown = conc(&["test", "--nocapture", p.to_str().unwrap()], "");
    assert!(text(&shown.stdout).contains("visible\n"), "{}", text(&shown.stdout));
}
