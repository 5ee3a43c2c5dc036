//! Commands as values: an immutable tree of programs joined by pipes, each node carrying the
//! options written on it (as in the `duct` crate). Running a tree first flattens it into a
//! [`Plan`]: one [`Stage`] per program, with every option resolved.

use crate::builtins::{a_type, Args};
use crate::error::{ErrorKind, RuntimeError};
use crate::interp::{Interp, Unwind, R};
use crate::runtime::channel::Channel;
use crate::syntax::Span;
use crate::value::{Key, Map, Object, Value};
use std::sync::Arc;
use std::time::Duration;

/// Where a stage's standard input comes from.
#[derive(Clone)]
pub enum Input {
    /// `/dev/null`: the default, so a command waiting for input never hangs a script.
    Null,
    Inherit,
    File(String),
    Data(Arc<[u8]>),
    /// Each value received becomes a line; the input ends when the channel is closed.
    Channel(Arc<Channel>),
    /// The previous stage's stdout.
    Pipe,
}

/// Where a stage's stdout or stderr goes.
#[derive(Clone, PartialEq, Eq)]
pub enum Output {
    Capture,
    Inherit,
    Null,
    File {
        path: String,
        append: bool,
    },
    /// The next stage's stdin.
    Pipe,
    /// For stderr: wherever the same stage's stdout goes.
    Stdout,
}

/// Options written on one node; `None` leaves the choice to the enclosing node or the default.
#[derive(Clone, Default)]
pub struct Opts {
    pub stdin: Option<Input>,
    pub stdout: Option<Output>,
    pub stderr: Option<Output>,
    /// Applied in order: `None` removes a variable.
    pub env: Vec<(String, Option<String>)>,
    pub clear_env: Option<bool>,
    pub cwd: Option<String>,
    pub timeout: Option<Duration>,
    pub unchecked: Option<bool>,
    pub binary: Option<bool>,
    /// Where the options were written, for errors about them.
    pub span: Option<Span>,
}

impl Opts {
    /// These options, with `outer`'s filling the gaps: the ones written closer to a program win.
    fn over(&self, outer: &Opts) -> Opts {
        Opts {
            stdin: self.stdin.clone().or_else(|| outer.stdin.clone()),
            stdout: self.stdout.clone().or_else(|| outer.stdout.clone()),
            stderr: self.stderr.clone().or_else(|| outer.stderr.clone()),
            env: outer.env.iter().chain(&self.env).cloned().collect(),
            clear_env: self.clear_env.or(outer.clear_env),
            cwd: self.cwd.clone().or_else(|| outer.cwd.clone()),
            timeout: self.timeout.or(outer.timeout),
            unchecked: self.unchecked.or(outer.unchecked),
            binary: self.binary.or(outer.binary),
            span: self.span.or(outer.span),
        }
    }
}

/// One program and its arguments.
pub struct Leaf {
    pub argv: Vec<String>,
    /// Written with `sh(...)`: shown as the script rather than as `sh -c` plus `$0`.
    pub shell: bool,
    pub call: Span,
    pub name_span: Span,
    pub opts: Opts,
}

pub struct PipeNode {
    pub left: Node,
    pub right: Node,
    pub span: Span,
    pub opts: Opts,
}

#[derive(Clone)]
pub enum Node {
    Leaf(Arc<Leaf>),
    Pipe(Arc<PipeNode>),
}

impl Node {
    pub fn pipe(left: Node, right: Node, span: Span) -> Node {
        Node::Pipe(Arc::new(PipeNode { left, right, span, opts: Opts::default() }))
    }

    /// The same command with more options; the new ones replace those written on this node.
    pub fn with(&self, opts: &Opts) -> Node {
        match self {
            Node::Leaf(l) => Node::Leaf(Arc::new(Leaf {
                argv: l.argv.clone(),
                shell: l.shell,
                call: l.call,
                name_span: l.name_span,
                opts: opts.over(&l.opts),
            })),
            Node::Pipe(p) => Node::Pipe(Arc::new(PipeNode {
                left: p.left.clone(),
                right: p.right.clone(),
                span: p.span,
                opts: opts.over(&p.opts),
            })),
        }
    }

    /// The command line as a shell would write it.
    pub fn line(&self) -> String {
        match self {
            Node::Leaf(l) => leaf_line(l),
            Node::Pipe(p) => format!("{} | {}", p.left.line(), p.right.line()),
        }
    }
}

fn leaf_line(l: &Leaf) -> String {
    if l.shell {
        // argv is `sh -c SCRIPT sh ARGS…`; `$0` is noise to a reader.
        let shown = l.argv.iter().take(3).chain(l.argv.iter().skip(4));
        return quote_all(shown);
    }
    quote_all(l.argv.iter())
}

fn quote_all<'a>(args: impl Iterator<Item = &'a String>) -> String {
    args.map(|a| shlex::try_quote(a).map_or_else(|_| format!("{a:?}"), |q| q.into_owned()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A command value: what `cmd(...)` returns and what `|` joins.
pub struct Command(pub Node);

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.describe())
    }
}

impl Object for Command {
    fn type_name(&self) -> &'static str {
        "command"
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn describe(&self) -> String {
        format!("<command {}>", self.0.line())
    }
}

/// One program of a flattened pipeline, with every option resolved.
pub struct Stage {
    pub argv: Vec<String>,
    pub line: String,
    pub call: Span,
    pub name_span: Span,
    pub opts_span: Span,
    pub stdin: Input,
    pub stdout: Output,
    pub stderr: Output,
    pub env: Vec<(String, Option<String>)>,
    pub clear_env: bool,
    pub cwd: Option<String>,
    pub unchecked: bool,
}

/// A whole command ready to start.
pub struct Plan {
    pub stages: Vec<Stage>,
    pub line: String,
    pub span: Span,
    /// The shortest timeout written anywhere in the tree.
    pub timeout: Option<Duration>,
    /// Output as bytes rather than text.
    pub binary: bool,
}

impl Plan {
    pub fn new(node: &Node, span: Span) -> Plan {
        let mut plan = Plan { stages: Vec::new(), line: String::new(), span, timeout: None, binary: false };
        plan.flatten(node, &Opts::default());
        plan.line = plan.stages.iter().map(|s| s.line.as_str()).collect::<Vec<_>>().join(" | ");
        plan
    }

    /// A pipe's left side writes into the pipe and its right side reads from it, unless an
    /// option written on the side itself says otherwise.
    fn flatten(&mut self, node: &Node, outer: &Opts) {
        match node {
            Node::Pipe(p) => {
                let here = p.opts.over(outer);
                self.note(&here);
                let left = Opts { stdout: Some(Output::Pipe), ..here.clone() };
                let right = Opts { stdin: Some(Input::Pipe), ..here };
                self.flatten(&p.left, &left);
                self.flatten(&p.right, &right);
            }
            Node::Leaf(l) => {
                let o = l.opts.over(outer);
                self.note(&o);
                self.stages.push(Stage {
                    argv: l.argv.clone(),
                    line: leaf_line(l),
                    call: l.call,
                    name_span: l.name_span,
                    opts_span: o.span.unwrap_or(l.call),
                    stdin: o.stdin.unwrap_or(Input::Null),
                    stdout: o.stdout.unwrap_or(Output::Capture),
                    stderr: o.stderr.unwrap_or(Output::Capture),
                    env: o.env,
                    clear_env: o.clear_env.unwrap_or(false),
                    cwd: o.cwd,
                    unchecked: o.unchecked.unwrap_or(false),
                });
            }
        }
    }

    fn note(&mut self, o: &Opts) {
        if let Some(t) = o.timeout {
            self.timeout = Some(self.timeout.map_or(t, |old| old.min(t)));
        }
        self.binary |= o.binary.unwrap_or(false);
    }
}

/// How a builtin reads its arguments.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `run("prog", "arg", …)`, or a command value.
    Argv,
    /// `sh("script", "$1", …)`.
    Shell,
}

/// Build a command from a builtin's arguments: a program and its arguments (lists are spliced
/// in), or an existing command value, then an optional map of options.
pub fn node_from_args(it: &Interp, a: &Args, form: Form, what: &str) -> R<Node> {
    let n_opts = usize::from(matches!(a.vals.last(), Some(Value::Map(_))));
    let words = &a.vals[..a.len() - n_opts];
    if words.is_empty() {
        let example = if form == Form::Shell { "sh(\"ls | wc -l\")" } else { "run(\"ls\", \"-l\")" };
        return Err(RuntimeError::new(ErrorKind::Type, format!("`{what}` needs a program to run"), a.call)
            .with_label("no program given")
            .with_help(format!("for example `{example}`"))
            .into());
    }
    let opts = match n_opts {
        1 => parse_opts(it, &a.vals[a.len() - 1], a.span(a.len() - 1))?,
        _ => Opts::default(),
    };
    let command = if form == Form::Argv { words[0].downcast::<Command>() } else { None };
    if let Some(c) = command {
        if words.len() == 1 {
            return Ok(if n_opts == 1 { c.0.with(&opts) } else { c.0.clone() });
        }
        return Err(RuntimeError::new(
            ErrorKind::Type,
            format!("`{what}` takes a command value alone, or with a map of options"),
            a.span(1),
        )
        .with_label("unexpected argument")
        .with_help("to add arguments, build the command again: `cmd(\"prog\", \"a\", \"b\")`")
        .into());
    }
    let mut argv = Vec::with_capacity(words.len() + 4);
    if form == Form::Shell {
        let Value::Str(script) = &words[0] else {
            return Err(arg_type_error("`sh` takes a shell script (a string) first", &words[0], a.span(0)));
        };
        argv.extend(["sh".to_string(), "-c".to_string(), script.to_string(), "sh".to_string()]);
    }
    let skip = usize::from(form == Form::Shell);
    for (i, v) in words.iter().enumerate().skip(skip) {
        push_words(&mut argv, v, a.span(i))?;
    }
    if form == Form::Argv && argv.first().is_none_or(|p| p.is_empty()) {
        return Err(RuntimeError::new(ErrorKind::Value, "the program name is empty", a.span(0))
            .with_label("no program here")
            .into());
    }
    let leaf = Leaf { argv, shell: form == Form::Shell, call: a.call, name_span: a.span(0), opts };
    Ok(Node::Leaf(Arc::new(leaf)))
}

fn push_words(argv: &mut Vec<String>, v: &Value, span: Span) -> R<()> {
    match v {
        Value::List(items) => {
            for item in items.iter() {
                if let Value::List(_) = item {
                    return Err(arg_type_error("command arguments are strings or numbers", item, span));
                }
                push_words(argv, item, span)?;
            }
            Ok(())
        }
        Value::Str(s) if s.contains('\0') => {
            Err(RuntimeError::new(ErrorKind::Value, "a command argument cannot contain a NUL byte", span)
                .with_label("this argument has a \\0 in it")
                .into())
        }
        Value::Str(s) => {
            argv.push(s.to_string());
            Ok(())
        }
        Value::Int(_) | Value::Float(_) => {
            argv.push(v.to_string());
            Ok(())
        }
        Value::Map(_) => Err(RuntimeError::new(ErrorKind::Type, "options go last, after the arguments", span)
            .with_label("a map of options in the middle")
            .into()),
        other => Err(arg_type_error("command arguments are strings or numbers", other, span)),
    }
}

fn arg_type_error(what: &str, v: &Value, span: Span) -> Unwind {
    RuntimeError::new(ErrorKind::Type, format!("{what}, not {}", a_type(v)), span)
        .with_label(format!("this is {}", a_type(v)))
        .with_help("convert with `str(x)`")
        .into()
}

const OPTIONS: &[&str] =
    &["input", "stdin", "stdout", "stderr", "env", "clear_env", "cwd", "timeout", "unchecked", "binary"];

/// Read a map of options such as `{cwd: "build", timeout: 5, stdout: "inherit"}`.
pub fn parse_opts(it: &Interp, v: &Value, span: Span) -> R<Opts> {
    let Value::Map(m) = v else {
        return Err(arg_type_error("command options are a map", v, span));
    };
    let mut o = Opts { span: Some(span), ..Opts::default() };
    let mut input_given = false;
    for (k, val) in m.iter() {
        let Key::Str(name) = k else {
            return Err(unknown_option(&k.to_value().repr(), span));
        };
        let bad = |want: &str| option_error(name, want, val, span);
        match &**name {
            "input" => {
                input_given = true;
                o.stdin = Some(match val {
                    Value::Str(s) => Input::Data(Arc::from(s.as_bytes())),
                    Value::Bytes(b) => Input::Data(Arc::from(b.as_slice())),
                    Value::Object(obj) => {
                        let any: Arc<dyn std::any::Any + Send + Sync> = obj.clone();
                        Input::Channel(any.downcast::<Channel>().map_err(|_| bad("a string, bytes or a channel"))?)
                    }
                    _ => return Err(bad("a string, bytes or a channel")),
                });
            }
            "stdin" => {
                if input_given || o.stdin.is_some() {
                    return Err(RuntimeError::new(ErrorKind::Value, "give `input` or `stdin`, not both", span)
                        .with_help("`input` is data to feed; `stdin` is \"inherit\", \"null\" or {file: path}")
                        .into());
                }
                o.stdin = Some(match val {
                    Value::Str(s) if &**s == "inherit" => Input::Inherit,
                    Value::Str(s) if &**s == "null" => Input::Null,
                    Value::Map(f) => match file_target(f) {
                        Some((path, false)) => {
                            it.shared.settings.require_fs(span)?;
                            Input::File(path)
                        }
                        _ => return Err(bad("\"inherit\", \"null\" or {file: path}")),
                    },
                    _ => return Err(bad("\"inherit\", \"null\" or {file: path}")),
                });
            }
            "stdout" | "stderr" => {
                let out = match val {
                    Value::Str(s) => match &**s {
                        "capture" => Output::Capture,
                        "inherit" => Output::Inherit,
                        "null" => Output::Null,
                        "stdout" if &**name == "stderr" => Output::Stdout,
                        _ => return Err(bad(stream_choices(name))),
                    },
                    Value::Map(f) => match file_target(f) {
                        Some((path, append)) => {
                            it.shared.settings.require_fs(span)?;
                            Output::File { path, append }
                        }
                        None => return Err(bad(stream_choices(name))),
                    },
                    _ => return Err(bad(stream_choices(name))),
                };
                if &**name == "stdout" {
                    o.stdout = Some(out);
                } else {
                    o.stderr = Some(out);
                }
            }
            "env" => {
                let Value::Map(vars) = val else { return Err(bad("a map of names to values")) };
                for (k, v) in vars.iter() {
                    let Key::Str(var) = k else { return Err(bad("a map of names to values")) };
                    let value = match v {
                        Value::Nil => None,
                        Value::Str(s) => Some(s.to_string()),
                        Value::Int(_) | Value::Float(_) | Value::Bool(_) => Some(v.to_string()),
                        _ => return Err(bad("a map of names to strings (or nil to remove one)")),
                    };
                    o.env.push((var.to_string(), value));
                }
            }
            "cwd" => match val {
                Value::Str(s) => o.cwd = Some(s.to_string()),
                _ => return Err(bad("a directory path")),
            },
            "timeout" => {
                let secs = match val {
                    Value::Int(n) => *n as f64,
                    Value::Float(f) => *f,
                    _ => return Err(bad("a number of seconds")),
                };
                if !(secs >= 0.0 && secs.is_finite()) {
                    return Err(bad("zero or more seconds"));
                }
                o.timeout = Some(Duration::from_secs_f64(secs));
            }
            "clear_env" | "unchecked" | "binary" => {
                let Value::Bool(b) = val else { return Err(bad("true or false")) };
                match &**name {
                    "clear_env" => o.clear_env = Some(*b),
                    "unchecked" => o.unchecked = Some(*b),
                    _ => o.binary = Some(*b),
                }
            }
            other => return Err(unknown_option(other, span)),
        }
    }
    Ok(o)
}

fn stream_choices(name: &str) -> &'static str {
    if name == "stderr" {
        "\"capture\", \"inherit\", \"null\", \"stdout\", {file: path} or {append: path}"
    } else {
        "\"capture\", \"inherit\", \"null\", {file: path} or {append: path}"
    }
}

/// `{file: path}` or `{append: path}`.
fn file_target(m: &Map) -> Option<(String, bool)> {
    if m.len() != 1 {
        return None;
    }
    let (k, v) = m.iter().next()?;
    let (Key::Str(k), Value::Str(path)) = (k, v) else { return None };
    match &**k {
        "file" => Some((path.to_string(), false)),
        "append" => Some((path.to_string(), true)),
        _ => None,
    }
}

fn option_error(name: &str, want: &str, got: &Value, span: Span) -> Unwind {
    RuntimeError::new(ErrorKind::Value, format!("option `{name}` must be {want}, not {}", got.repr()), span)
        .with_label("in these options")
        .into()
}

fn unknown_option(name: &str, span: Span) -> Unwind {
    let best = OPTIONS
        .iter()
        .map(|o| (strsim::jaro_winkler(name, o), o))
        .filter(|(s, _)| *s > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let help = match best {
        Some((_, o)) => format!("did you mean `{o}`?"),
        None => format!("command options: {}", OPTIONS.join(", ")),
    };
    RuntimeError::new(ErrorKind::Value, format!("unknown command option `{name}`"), span)
        .with_label("in these options")
        .with_help(help)
        .into()
}
