//! `conc test`: the script-level test runner.
//!
//! A test is a top-level function whose name starts with `test_` and that takes no arguments,
//! in a file whose name ends in `_test.conc`. No new syntax is needed, and a test file is an
//! ordinary script that `conc check` and the REPL understand. For each file the runner runs the
//! top level once (imports, helpers, fixtures), then each test in source order. A test passes
//! when it returns and every task it started has finished without an error.
//!
//! What a test prints is captured and shown only if it fails, after the failure's diagnostic.

use crate::engine::{Engine, Program, Settings, Sink};
use crate::error::{render, Error, ErrorKind, RuntimeError};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The arguments of `conc test`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TestArgs {
    /// Test files, or directories to search for `*_test.conc` files (default: the current directory).
    pub paths: Vec<PathBuf>,
    /// Run only the tests whose name contains this text.
    #[arg(long, value_name = "TEXT")]
    pub filter: Option<String>,
    /// List the tests without running them.
    #[arg(long)]
    pub list: bool,
    /// Let tests print straight to the terminal instead of capturing their output.
    #[arg(long)]
    pub nocapture: bool,
    /// Show how long each test took.
    #[arg(long)]
    pub time: bool,
    /// Fail a test that runs longer than this many seconds (it is cancelled).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<f64>,
}

/// The suffix that marks a test file.
pub const TEST_FILE_SUFFIX: &str = "_test.conc";
/// The prefix that marks a test function.
pub const TEST_FN_PREFIX: &str = "test_";

/// Totals over every file.
#[derive(Default, Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    pub filtered_out: usize,
    /// Files that could not be read, compiled or set up; their tests did not run.
    pub broken_files: usize,
}

impl Summary {
    pub fn ok(&self) -> bool {
        self.failed == 0 && self.broken_files == 0
    }
}

/// Run `conc test` and return the process exit status: 0 when every test passed, 1 otherwise.
pub fn run(args: &TestArgs) -> u8 {
    let color = std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal();
    let mut out = std::io::stdout().lock();
    let code = if run_to(args, color, &mut out).ok() { 0 } else { 1 };
    let _ = out.flush();
    code
}

/// Run the tests, writing the report to `out` (with ANSI colours if `color`). A path with no
/// test file counts as a file that could not run.
pub fn run_to(args: &TestArgs, color: bool, out: &mut dyn Write) -> Summary {
    let style = Style { color };
    let started = Instant::now();
    let roots = if args.paths.is_empty() { vec![PathBuf::from(".")] } else { args.paths.clone() };
    let mut files = Vec::new();
    let mut summary = Summary::default();
    for root in &roots {
        match find_test_files(root) {
            Ok(found) if found.is_empty() => {
                let _ = writeln!(
                    out,
                    "{}: no test files under {} (test files are named `*{TEST_FILE_SUFFIX}`)",
                    style.error("error"),
                    root.display()
                );
                summary.broken_files += 1;
            }
            Ok(found) => files.extend(found),
            Err(message) => {
                let _ = writeln!(out, "{}: {message}", style.error("error"));
                summary.broken_files += 1;
            }
        }
    }
    if files.is_empty() {
        return summary;
    }
    let mut failed_names = Vec::new();
    for file in &files {
        let report = run_file(file, args, &style, out);
        summary.passed += report.passed;
        summary.failed += report.failed.len();
        summary.filtered_out += report.filtered_out;
        summary.broken_files += usize::from(report.broken);
        failed_names.extend(report.failed.into_iter().map(|name| format!("{} ({})", name, file.display())));
    }
    if args.list {
        return summary;
    }
    if !failed_names.is_empty() {
        let _ = writeln!(out, "failures:");
        for name in &failed_names {
            let _ = writeln!(out, "    {name}");
        }
        let _ = writeln!(out);
    }
    let verdict = if summary.ok() { style.ok("ok") } else { style.error("FAILED") };
    let mut line = format!(
        "test result: {verdict}. {} passed; {} failed; {} filtered out; {} file{}",
        summary.passed,
        summary.failed,
        summary.filtered_out,
        files.len(),
        if files.len() == 1 { "" } else { "s" }
    );
    if summary.broken_files > 0 {
        line.push_str(&format!(" ({} could not run)", summary.broken_files));
    }
    if args.time {
        line.push_str(&format!("; finished in {:.2}s", started.elapsed().as_secs_f64()));
    }
    let _ = writeln!(out, "{line}");
    summary
}

/// Test files under `root` (or `root` itself when it is a file), sorted, skipping hidden
/// directories and `target/`.
pub fn find_test_files(root: &Path) -> Result<Vec<PathBuf>, String> {
    let meta = std::fs::metadata(root).map_err(|e| format!("cannot read {}: {}", root.display(), io_reason(&e)))?;
    if meta.is_file() {
        return Ok(vec![root.to_path_buf()]);
    }
    let mut found = Vec::new();
    collect_test_files(root, &mut found);
    found.sort();
    Ok(found.into_iter().map(|p| p.strip_prefix(".").map(Path::to_path_buf).unwrap_or(p)).collect())
}

fn collect_test_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if !name.starts_with('.') && name != "target" {
                collect_test_files(&path, found);
            }
        } else if name.ends_with(TEST_FILE_SUFFIX) {
            found.push(path);
        }
    }
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

#[derive(Default)]
struct FileReport {
    passed: usize,
    failed: Vec<String>,
    filtered_out: usize,
    broken: bool,
}

/// Output the tests of one file print, captured unless `--nocapture`.
struct Capture(Option<Arc<Mutex<String>>>);

impl Capture {
    fn take(&self) -> String {
        match &self.0 {
            Some(buf) => std::mem::take(&mut *buf.lock().unwrap_or_else(|e| e.into_inner())),
            None => String::new(),
        }
    }
}

fn run_file(path: &Path, args: &TestArgs, style: &Style, out: &mut dyn Write) -> FileReport {
    let mut report = FileReport::default();
    let name = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            let _ = writeln!(out, "{}: cannot read {name}: {}\n", style.error("error"), io_reason(&e));
            report.broken = true;
            return report;
        }
    };
    let (mut engine, capture) = engine_for(path, args);
    let program = match engine.compile(&name, &text) {
        Ok(p) => p,
        Err(e) => {
            let _ = writeln!(out, "{}: {name} does not compile\n\n{}", style.error("error"), render(&e, style.color));
            report.broken = true;
            return report;
        }
    };
    let all = test_functions(&program);
    let (tests, skipped): (Vec<_>, Vec<_>) =
        all.into_iter().partition(|t| args.filter.as_deref().is_none_or(|f| t.name.contains(f)));
    report.filtered_out = skipped.len();
    if args.list {
        for t in &tests {
            let _ = writeln!(out, "{name}: {}", t.name);
        }
        return report;
    }
    let count = tests.len();
    let _ = writeln!(out, "running {count} test{} from {name}", if count == 1 { "" } else { "s" });
    if count == 0 {
        let _ = writeln!(out);
        return report;
    }
    // The top level defines the helpers and fixtures every test uses; if it fails, no test can run.
    if let Err(e) = engine.run(&program) {
        let _ = writeln!(out, "{}: the top level of {name} failed, so its tests did not run\n", style.error("error"));
        write_failure(out, &capture.take(), &e, style);
        report.broken = true;
        return report;
    }
    capture.take();
    let mut failures = Vec::new();
    for test in &tests {
        let t0 = Instant::now();
        let outcome = run_test(&mut engine, test, args.timeout);
        let took = if args.time { format!(" ({:.3}s)", t0.elapsed().as_secs_f64()) } else { String::new() };
        let printed = capture.take();
        match outcome {
            Ok(()) => {
                let _ = writeln!(out, "test {} ... {}{took}", test.name, style.ok("ok"));
                report.passed += 1;
            }
            Err(e) => {
                let _ = writeln!(out, "test {} ... {}{took}", test.name, style.error("FAILED"));
                failures.push((test.name.clone(), printed, e));
            }
        }
    }
    let _ = writeln!(out);
    for (test, printed, e) in &failures {
        let _ = writeln!(out, "---- {test} ({name}) ----");
        write_failure(out, printed, e, style);
    }
    report.failed = failures.into_iter().map(|(n, ..)| n).collect();
    report
}

fn write_failure(out: &mut dyn Write, printed: &str, e: &Error, style: &Style) {
    if !printed.is_empty() {
        let _ = write!(out, "{printed}");
        if !printed.ends_with('\n') {
            let _ = writeln!(out);
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out, "{}", render(e, style.color));
}

fn engine_for(path: &Path, args: &TestArgs) -> (Engine, Capture) {
    let mut settings = Settings::default();
    let capture = if args.nocapture {
        Capture(None)
    } else {
        let buf = Arc::new(Mutex::new(String::new()));
        settings.stdout = Sink::Buffer(buf.clone());
        settings.stderr = Sink::Buffer(buf.clone());
        Capture(Some(buf))
    };
    let mut engine = Engine::with_settings(settings);
    if let Some(dir) = path.parent() {
        engine.set_base_dir(dir);
    }
    (engine, capture)
}

/// A test function found in a program.
struct TestFn {
    name: String,
    params: usize,
    span: crate::syntax::Span,
}

fn test_functions(program: &Program) -> Vec<TestFn> {
    program
        .top_level_functions()
        .filter(|def| def.name.starts_with(TEST_FN_PREFIX))
        .map(|def| TestFn { name: def.name.to_string(), params: def.params.len(), span: def.span })
        .collect()
}

/// Call one test function, then wait for the tasks it started, as the end of a script does.
fn run_test(engine: &mut Engine, test: &TestFn, timeout: Option<f64>) -> Result<(), Error> {
    if test.params > 0 {
        let e = RuntimeError::new(
            ErrorKind::Type,
            format!("`{}` takes arguments, but tests take none", test.name),
            test.span,
        )
        .with_label("this test function has parameters")
        .with_help("a test is a function `fn test_NAME() { ... }`; call helpers with arguments from inside it");
        return Err(engine.diagnostic(e));
    }
    let call = engine.compile("<test>", &format!("{}()", test.name))?;
    let watchdog = timeout.map(|secs| Watchdog::start(engine, Duration::from_secs_f64(secs.max(0.0))));
    let result = engine.run(&call);
    let timed_out = watchdog.is_some_and(Watchdog::stop);
    if timed_out {
        engine.reset_interrupt();
        let secs = timeout.unwrap_or_default();
        let e = RuntimeError::without_span(ErrorKind::Timeout, format!("`{}` took longer than {secs}s", test.name))
            .with_help("the test was cancelled; raise `--timeout` if it is just slow");
        return Err(engine.diagnostic(e));
    }
    result.map(|_| ()).map_err(|e| e.without_frames_in(call.file()))
}

/// Cancels a test that runs too long, from a thread of its own.
struct Watchdog {
    done: crossbeam_channel::Sender<()>,
    thread: std::thread::JoinHandle<bool>,
}

impl Watchdog {
    fn start(engine: &Engine, limit: Duration) -> Watchdog {
        let interrupt = engine.interrupt_handle();
        let (done, finished) = crossbeam_channel::bounded::<()>(1);
        let thread = std::thread::spawn(move || {
            let expired = finished.recv_timeout(limit).is_err();
            if expired {
                interrupt.interrupt();
            }
            expired
        });
        Watchdog { done, thread }
    }

    /// Whether the limit expired before the test finished.
    fn stop(self) -> bool {
        let _ = self.done.send(());
        self.thread.join().unwrap_or(false)
    }
}

struct Style {
    color: bool,
}

impl Style {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    fn ok(&self, text: &str) -> String {
        self.paint("32", text)
    }

    fn error(&self, text: &str) -> String {
        self.paint("31;1", text)
    }
}
