//! The golden harness: runs every `examples/*.conc` and `tests/scripts/**/*.conc` with the
//! `conc` binary and compares stdout, stderr and exit status with sibling files:
//!
//! - `NAME.out`  expected stdout (missing = empty)
//! - `NAME.err`  expected stderr (missing = empty)
//! - `NAME.code` expected exit status (missing = 0)
//! - `NAME.stdin` optional input, `NAME.args` optional arguments (one per line)
//!
//! A script whose name ends in `_test.conc` is a test file: it runs as `conc test NAME_test.conc`,
//! so its expected output is the test runner's report.
//!
//! Set `CONC_BLESS=1` to rewrite the expected files from what the scripts do now.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn collect(dir: &Path, recursive: bool, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() && recursive {
            collect(&p, true, out);
        } else if p.extension().is_some_and(|x| x == "conc") {
            out.push(p);
        }
    }
}

fn read_or(path: &Path, default: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|_| default.to_string())
}

/// Longest a single script may run before it counts as hung.
const SCRIPT_TIMEOUT_SECS: u64 = 120;

struct Outcome {
    stdout: String,
    stderr: String,
    code: i32,
}

fn run(script: &Path) -> Outcome {
    let args: Vec<String> = read_or(&script.with_extension("args"), "").lines().map(str::to_string).collect();
    let is_test_file = script.to_string_lossy().ends_with("_test.conc");
    let mut child = Command::new(env!("CARGO_BIN_EXE_conc"))
        .args(is_test_file.then_some("test"))
        .arg(script)
        .args(&args)
        .env("NO_COLOR", "1")
        .env_remove("CONC_DEBUG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the conc binary starts");
    let input = std::fs::read(script.with_extension("stdin")).unwrap_or_default();
    let mut stdin = child.stdin.take().expect("piped stdin");
    let feeder = std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(&input);
    });
    // A hung script must fail the test, not hang the suite.
    let pid = child.id();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(std::time::Duration::from_secs(SCRIPT_TIMEOUT_SECS)).is_err() {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
    });
    let out = child.wait_with_output().expect("conc runs to completion");
    let _ = done_tx.send(());
    let _ = watchdog.join();
    let _ = feeder.join();
    Outcome {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code().unwrap_or(-1),
    }
}

#[test]
fn golden_scripts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::env::set_current_dir(root).expect("repository root");
    let mut scripts = Vec::new();
    collect(Path::new("examples"), false, &mut scripts);
    collect(Path::new("tests/scripts"), true, &mut scripts);
    scripts.sort();
    assert!(!scripts.is_empty(), "no scripts found");
    let bless = std::env::var_os("CONC_BLESS").is_some();
    let filter = std::env::var("CONC_FILTER").unwrap_or_default();
    let mut failures = Vec::new();
    let mut ran = 0;
    for script in &scripts {
        if !script.to_string_lossy().contains(&filter) {
            continue;
        }
        ran += 1;
        let got = run(script);
        let (out_p, err_p, code_p) =
            (script.with_extension("out"), script.with_extension("err"), script.with_extension("code"));
        if bless {
            write_or_remove(&out_p, &got.stdout);
            write_or_remove(&err_p, &got.stderr);
            write_or_remove(&code_p, &if got.code == 0 { String::new() } else { format!("{}\n", got.code) });
            continue;
        }
        let want_out = read_or(&out_p, "");
        let want_err = read_or(&err_p, "");
        let want_code: i32 = read_or(&code_p, "0").trim().parse().expect("a .code file holds an integer");
        let mut problems = Vec::new();
        if got.stdout != want_out {
            problems.push(format!("stdout differs\n--- expected\n{want_out}--- got\n{}", got.stdout));
        }
        if got.stderr != want_err {
            problems.push(format!("stderr differs\n--- expected\n{want_err}--- got\n{}", got.stderr));
        }
        if got.code != want_code {
            problems.push(format!("exit status: expected {want_code}, got {}", got.code));
        }
        if !problems.is_empty() {
            failures.push(format!("=== {}\n{}", script.display(), problems.join("\n")));
        }
    }
    eprintln!("golden: {ran} scripts");
    assert!(failures.is_empty(), "{} of {ran} scripts failed:\n{}", failures.len(), failures.join("\n"));
}

fn write_or_remove(path: &Path, text: &str) {
    if text.is_empty() {
        let _ = std::fs::remove_file(path);
    } else {
        std::fs::write(path, text).expect("write expected file");
    }
}
