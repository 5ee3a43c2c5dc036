//! The `conc` command: run scripts, check them, evaluate code, or explore in the REPL.

mod repl;

use clap::{Parser, Subcommand};
use conc::error::render;
use conc::{Engine, Error, ErrorKind};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Exit status for I/O problems outside the script: a missing file, say (sysexits EX_IOERR).
const EXIT_IO: u8 = 74;
/// Exit status after Ctrl-C, as shells report SIGINT.
const EXIT_INTERRUPTED: u8 = 130;

#[derive(Parser)]
#[command(
    name = "conc",
    version,
    about = "conc: a scripting language for concurrent workflows",
    long_about = "Run a script with `conc FILE [ARGS..]`, evaluate code with `conc -e CODE`, or start the REPL with `conc`.",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Evaluate CODE and exit.
    #[arg(short = 'e', long = "eval", value_name = "CODE")]
    eval: Option<String>,
    /// The script to run.
    file: Option<PathBuf>,
    /// Arguments passed to the script as `args`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a script.
    Run {
        file: PathBuf,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Parse and resolve scripts without running them.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Start the interactive REPL.
    Repl,
    /// Run the `test_*` functions of `*_test.conc` files.
    Test(conc::testing::TestArgs),
}

fn main() -> ExitCode {
    // This binary also serves processes for `fork` (see runtime/zygote.rs); that mode is
    // chosen before anything else, while the process has one thread. So is the guardian
    // that stops its commands should it be SIGKILLed (see runtime/guardian.rs).
    conc::runtime::guardian::serve_if_asked();
    if std::env::var_os(conc::runtime::zygote::SERVER_ENV).is_some() {
        conc::runtime::zygote::serve();
    }
    conc::runtime::signal::keep_child_statuses();
    let cli = Cli::parse();
    quiet_panics();
    // Signals are taken by their own thread (see `install_interrupt`), and the interpreter
    // grows its stack on demand, so the script runs right here: no thread to start.
    let code = std::panic::catch_unwind(move || dispatch(cli)).unwrap_or(70);
    conc::runtime::procs::shutdown();
    ExitCode::from(code)
}

fn dispatch(cli: Cli) -> u8 {
    match (cli.command, cli.eval, cli.file) {
        (Some(Command::Run { file, args }), _, _) => run_file(&file, args),
        (Some(Command::Check { files }), _, _) => check_files(&files),
        (Some(Command::Repl), _, _) => repl::run(),
        (Some(Command::Test(args)), _, _) => conc::testing::run(&args),
        (None, Some(code), file) => {
            // With -e, every positional argument belongs to the code as `args`.
            let mut args: Vec<String> = file.map(|f| f.display().to_string()).into_iter().collect();
            args.extend(cli.args);
            run_source("<eval>", &code, args, None)
        }
        (None, None, Some(file)) => run_file(&file, cli.args),
        (None, None, None) => repl::run(),
    }
}

/// Panics are turned into conc errors where they happen; the default hook would print a
/// Rust backtrace banner on top of the diagnostic.
fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        if std::env::var_os("CONC_DEBUG").is_some() {
            eprintln!("{info}");
        }
    }));
}

pub fn use_color() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
}

pub fn report(err: &Error) {
    eprint!("{}", render(err, use_color()));
}

fn io_failure(path: &Path, what: &str) -> u8 {
    let err = Error::plain(ErrorKind::Io, format!("cannot read {}: {what}", path.display()));
    let err = match what {
        "no such file or directory" => {
            err_with_help(err, "check the path, or run `conc` with no arguments for the REPL")
        }
        _ => err,
    };
    report(&err);
    EXIT_IO
}

fn err_with_help(err: Error, help: &str) -> Error {
    let mut details = err.details().clone();
    details.help = Some(help.into());
    Error::new(std::sync::Arc::new(details), std::sync::Arc::new(Default::default()))
}

/// Read a script, turning every way it can fail into a clear message.
fn read_script(path: &Path) -> Result<String, u8> {
    if path.is_dir() {
        return Err(io_failure(path, "it is a directory, not a script"));
    }
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes).map_err(|e| {
            let at = e.utf8_error().valid_up_to();
            io_failure(path, &format!("not valid UTF-8 text (bad byte at offset {at})"))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(io_failure(path, "no such file or directory")),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(io_failure(path, "permission denied")),
        Err(e) => Err(io_failure(path, &e.to_string())),
    }
}

fn run_file(path: &Path, args: Vec<String>) -> u8 {
    let text = match read_script(path) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let base = path.parent().map(Path::to_path_buf);
    run_source(&path.display().to_string(), &text, args, base)
}

fn run_source(name: &str, text: &str, args: Vec<String>, base: Option<PathBuf>) -> u8 {
    let mut engine = Engine::new();
    engine.set_args(args);
    if let Some(b) = base {
        engine.set_base_dir(b);
    }
    let _signals = install_interrupt(&engine);
    let program = match engine.compile(name, text) {
        Ok(p) => p,
        Err(e) => {
            report(&e);
            return 65;
        }
    };
    match engine.run(&program) {
        Ok(_) => 0,
        Err(e) => exit_for(&engine, &e),
    }
}

fn exit_for(engine: &Engine, e: &Error) -> u8 {
    if let ErrorKind::Exit(code) = e.kind() {
        return code.clamp(0, 255) as u8;
    }
    if engine.is_interrupted() && e.kind() == ErrorKind::Cancelled {
        return EXIT_INTERRUPTED;
    }
    report(e);
    e.exit_code().clamp(0, 255) as u8
}

fn check_files(files: &[PathBuf]) -> u8 {
    let mut worst = 0;
    for path in files {
        let text = match read_script(path) {
            Ok(t) => t,
            Err(code) => {
                worst = worst.max(code);
                continue;
            }
        };
        let mut engine = Engine::new();
        if let Some(b) = path.parent() {
            engine.set_base_dir(b);
        }
        if let Err(e) = engine.compile(&path.display().to_string(), &text) {
            report(&e);
            worst = worst.max(65);
        }
    }
    worst
}

/// First Ctrl-C cancels everything the script started; a second one exits at once.
pub fn install_interrupt(engine: &Engine) -> Option<signal_hook::iterator::Handle> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).ok()?;
    let handle = signals.handle();
    let interrupt = engine.interrupt_handle();
    conc::runtime::signal::cli_owns_interrupts();
    std::thread::Builder::new()
        .name("conc-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                // A script's `on_signal` handler takes the signal instead.
                if conc::runtime::signal::dispatch(sig) {
                    continue;
                }
                if interrupt.is_interrupted() {
                    conc::runtime::signal::exit_process(EXIT_INTERRUPTED as i32);
                }
                interrupt.interrupt();
                // Cancelled tasks stop at once and processes get TERM, then KILL after a
                // grace period; should anything still hold on, the exit is forced.
                std::thread::spawn(|| {
                    std::thread::sleep(std::time::Duration::from_secs(3));
                    conc::runtime::signal::exit_process(EXIT_INTERRUPTED as i32);
                });
            }
        })
        .ok()?;
    Some(handle)
}
