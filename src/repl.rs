//! The interactive REPL. Bindings persist between entries; input continues over several
//! lines while a bracket or block is open. Piped (non-terminal) input is evaluated line by
//! line with no prompts or colours, so the REPL can be driven by tests.

use conc::error::render;
use conc::{Engine, Value};
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Context, Editor, Helper};
use std::borrow::Cow;
use std::io::{BufRead, IsTerminal};
use std::sync::{Arc, Mutex};

const KEYWORDS: &[&str] = &[
    "let", "fn", "return", "if", "else", "while", "for", "in", "break", "continue", "true", "false", "nil", "and",
    "or", "not", "try", "catch", "import", "as", "spawn", "fork", "pool", "map", "over", "lock", "wait", "any",
    "scope", "select",
];

const HELP: &str = "\
conc REPL
  Type an expression or statement; a value on its own prints its representation.
  Input continues on the next line while a bracket or block is open.
  :help         show this help
  :load FILE    run a script in this session (its definitions stay)
  :quit         leave (Ctrl-D does too)
  Ctrl-C clears the line, or interrupts a running evaluation.";

pub fn run() -> u8 {
    if std::io::stdin().is_terminal() {
        interactive()
    } else {
        piped()
    }
}

/// Whether `text` is an unfinished entry: an open bracket, block or string.
fn incomplete(text: &str) -> bool {
    let mut depth = 0i32;
    let mut in_str: Option<char> = None;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if let Some(q) = in_str {
            match c {
                '\\' => {
                    chars.next();
                }
                c if c == q => in_str = None,
                _ => {}
            }
            continue;
        }
        match c {
            '"' | '\'' => in_str = Some(c),
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            _ => {}
        }
    }
    depth > 0 || in_str.is_some() || text.trim_end().ends_with('\\')
}

/// Evaluate one entry and show its result. Returns false when the session should end.
fn eval_entry(engine: &mut Engine, text: &str, color: bool, echo_errors_to: &mut dyn FnMut(&str)) -> bool {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return true;
    }
    if let Some(cmd) = trimmed.strip_prefix(':') {
        let (name, arg) = cmd.split_once(char::is_whitespace).unwrap_or((cmd, ""));
        match name {
            "q" | "quit" | "exit" => return false,
            "h" | "help" => println!("{HELP}"),
            "load" | "l" => {
                let path = arg.trim();
                match std::fs::read_to_string(path) {
                    Ok(src) => show(
                        engine.compile(path, &src).and_then(|p| engine.run_keeping_tasks(&p)),
                        color,
                        echo_errors_to,
                        false,
                    ),
                    Err(e) => echo_errors_to(&format!("error: cannot load {path}: {e}\n")),
                }
            }
            other => echo_errors_to(&format!("unknown command `:{other}`; try :help\n")),
        }
        return true;
    }
    let r = engine.compile("<repl>", text).and_then(|p| engine.run_keeping_tasks(&p));
    if let Err(e) = &r {
        if let conc::ErrorKind::Exit(_) = e.kind() {
            return false;
        }
    }
    show(r, color, echo_errors_to, true);
    if engine.is_interrupted() {
        engine.reset_interrupt();
    }
    true
}

fn show(r: Result<Value, conc::Error>, color: bool, err_out: &mut dyn FnMut(&str), echo: bool) {
    match r {
        Ok(Value::Nil) => {}
        Ok(v) if echo => println!("{}", v.repr()),
        Ok(_) => {}
        Err(e) => err_out(&render(&e, color)),
    }
}

fn piped() -> u8 {
    let mut engine = Engine::new();
    let _signals = crate::install_interrupt(&engine);
    let stdin = std::io::stdin();
    let mut pending = String::new();
    let mut err = |s: &str| eprint!("{s}");
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        pending.push_str(&line);
        pending.push('\n');
        if incomplete(&pending) {
            continue;
        }
        let entry = std::mem::take(&mut pending);
        if !eval_entry(&mut engine, &entry, false, &mut err) {
            return finish(&mut engine);
        }
    }
    if !pending.trim().is_empty() {
        eval_entry(&mut engine, &pending, false, &mut err);
    }
    finish(&mut engine)
}

fn finish(engine: &mut Engine) -> u8 {
    match engine.finish() {
        Ok(()) => 0,
        Err(e) => {
            crate::report(&e);
            70
        }
    }
}

struct ConcHelper {
    names: Arc<Mutex<Vec<String>>>,
    color: bool,
}

impl Helper for ConcHelper {}

impl Completer for ConcHelper {
    type Candidate = Pair;

    fn complete(&self, line: &str, pos: usize, _ctx: &Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        let start = line[..pos].rfind(|c: char| !(c.is_alphanumeric() || c == '_')).map_or(0, |i| i + 1);
        let word = &line[start..pos];
        if word.is_empty() {
            return Ok((pos, vec![]));
        }
        let names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        let mut found: Vec<String> = KEYWORDS
            .iter()
            .map(|s| s.to_string())
            .chain(conc::builtins::names().map(str::to_string))
            .chain(names.iter().cloned())
            .filter(|c| c.starts_with(word))
            .collect();
        found.sort();
        found.dedup();
        Ok((start, found.into_iter().map(|c| Pair { display: c.clone(), replacement: c }).collect()))
    }
}

impl Hinter for ConcHelper {
    type Hint = String;
}

impl Validator for ConcHelper {
    fn validate(&self, ctx: &mut ValidationContext) -> rustyline::Result<ValidationResult> {
        Ok(if incomplete(ctx.input()) { ValidationResult::Incomplete } else { ValidationResult::Valid(None) })
    }
}

impl Highlighter for ConcHelper {
    fn highlight<'l>(&self, line: &'l str, _pos: usize) -> Cow<'l, str> {
        if !self.color {
            return Cow::Borrowed(line);
        }
        Cow::Owned(highlight(line))
    }

    fn highlight_char(&self, _line: &str, _pos: usize, _kind: rustyline::highlight::CmdKind) -> bool {
        self.color
    }
}

/// ANSI colours for keywords, strings, numbers and comments.
fn highlight(line: &str) -> String {
    let mut out = String::with_capacity(line.len() + 16);
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '#' {
            out.push_str("\x1b[2m");
            out.extend(&chars[i..]);
            out.push_str("\x1b[0m");
            break;
        }
        if c == '"' || c == '\'' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != c {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(chars.len());
            out.push_str("\x1b[32m");
            out.extend(&chars[i..end]);
            out.push_str("\x1b[0m");
            i = end;
            continue;
        }
        if c.is_ascii_digit() {
            let mut j = i;
            while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '.' || chars[j] == '_') {
                j += 1;
            }
            out.push_str("\x1b[33m");
            out.extend(&chars[i..j]);
            out.push_str("\x1b[0m");
            i = j;
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            let mut j = i;
            while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
                j += 1;
            }
            let word: String = chars[i..j].iter().collect();
            if KEYWORDS.contains(&word.as_str()) {
                out.push_str("\x1b[35m");
                out.push_str(&word);
                out.push_str("\x1b[0m");
            } else {
                out.push_str(&word);
            }
            i = j;
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

fn history_path() -> Option<std::path::PathBuf> {
    let dir = dirs::state_dir().or_else(dirs::data_local_dir)?.join("conc");
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir.join("history"))
}

fn interactive() -> u8 {
    let color = crate::use_color();
    let mut engine = Engine::new();
    let _signals = crate::install_interrupt(&engine);
    let names = Arc::new(Mutex::new(engine.global_names()));
    let mut editor: Editor<ConcHelper, rustyline::history::DefaultHistory> = match Editor::new() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: cannot start the line editor: {e}");
            return piped();
        }
    };
    editor.set_helper(Some(ConcHelper { names: names.clone(), color }));
    let history = history_path();
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    println!("conc {} — :help for help, Ctrl-D to exit", env!("CARGO_PKG_VERSION"));
    let mut err = |s: &str| eprint!("{s}");
    loop {
        match editor.readline("conc> ") {
            Ok(line) => {
                let _ = editor.add_history_entry(line.as_str());
                if !eval_entry(&mut engine, &line, color, &mut err) {
                    break;
                }
                *names.lock().unwrap_or_else(|e| e.into_inner()) = engine.global_names();
            }
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("error: {e}");
                break;
            }
        }
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    finish(&mut engine)
}
