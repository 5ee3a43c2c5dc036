//! Subprocesses and `|` pipelines.
//!
//! - `run(prog, args…, {options})` runs a program (no shell) and waits: it returns a result
//!   map, or raises if the program failed. `sh(script, …)` is the explicit shell form.
//! - `cmd(…)` builds the same command as a value without running it; `c.with({…})` adds
//!   options, `c.lines()` starts it and yields its stdout line by line.
//! - `start(…)` starts a command in the background and returns a task handle.
//! - `a | b` joins commands into a pipeline. The operands of `|` are read as commands, so
//!   `run(a) | run(b)` runs the whole pipeline once, with `a`'s stdout wired to `b`'s stdin,
//!   and `start(a) | start(b)` starts it; a pipe of `cmd(…)` values is a command value.
//! - `exec(prog, args…)` replaces conc with the program.

mod background;
mod lines;
mod path;
mod running;
mod spawn;
mod spec;

use crate::builtins::{a_type, Args};
use crate::error::{ErrorKind, RuntimeError};
use crate::interp::{Interp, Unwind, R};
use crate::syntax::ast::{Expr, Slot};
use crate::syntax::Span;
use crate::value::Value;
use lines::LineStream;
use running::Running;
use spec::{node_from_args, parse_opts, Command, Form, Node, Plan};
use std::time::Instant;

type Builtin = fn(&mut Interp, Args) -> R<Value>;

/// Global functions for running commands.
pub static BUILTINS: &[(&str, Builtin)] = &[
    ("run", |it, a| {
        let node = node_from_args(it, &a, Form::Argv, "run")?;
        run_node(it, &node, a.call)
    }),
    ("sh", |it, a| {
        let node = node_from_args(it, &a, Form::Shell, "sh")?;
        run_node(it, &node, a.call)
    }),
    ("start", |it, a| {
        let node = node_from_args(it, &a, Form::Argv, "start")?;
        background::start(it, &node, a.call)
    }),
    ("cmd", |it, a| Ok(Value::object(Command(node_from_args(it, &a, Form::Argv, "cmd")?)))),
    ("exec", b_exec),
];

/// How a `|` operand written as a call runs the pipeline it belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Verb {
    Run,
    Start,
}

/// One operand of a chain of `|`, as the compiler or the tree walker found it: a call of
/// `run`, `sh` or `start`, whose arguments are evaluated without running anything, or any
/// other expression, whose value must be a command.
pub enum PipeLeaf<E> {
    Call { verb: Verb, form: Form, args: Vec<(E, Span)>, call: Span },
    Value { expr: E, span: Span },
}

impl<E> PipeLeaf<E> {
    pub fn map<F>(self, mut f: impl FnMut(E) -> F) -> PipeLeaf<F> {
        match self {
            PipeLeaf::Call { verb, form, args, call } => {
                PipeLeaf::Call { verb, form, args: args.into_iter().map(|(e, s)| (f(e), s)).collect(), call }
            }
            PipeLeaf::Value { expr, span } => PipeLeaf::Value { expr: f(expr), span },
        }
    }
}

/// The operands of `lhs | rhs`, nested pipes flattened, left to right.
pub fn pipe_leaves<'a>(lhs: &'a Expr, rhs: &'a Expr) -> Vec<PipeLeaf<&'a Expr>> {
    let mut out = Vec::new();
    collect_leaves(lhs, &mut out);
    collect_leaves(rhs, &mut out);
    out
}

fn collect_leaves<'a>(e: &'a Expr, out: &mut Vec<PipeLeaf<&'a Expr>>) {
    match e {
        Expr::Binary { op: crate::syntax::ast::BinOp::Pipe, lhs, rhs, .. } => {
            collect_leaves(lhs, out);
            collect_leaves(rhs, out);
        }
        Expr::Call { callee, args, span } => {
            let verb = match &**callee {
                Expr::Var(v) => match v.slot {
                    Slot::Builtin(b) => match crate::builtins::name_of(b) {
                        "run" => Some((Verb::Run, Form::Argv)),
                        "sh" => Some((Verb::Run, Form::Shell)),
                        "start" => Some((Verb::Start, Form::Argv)),
                        _ => None,
                    },
                    _ => None,
                },
                _ => None,
            };
            match verb {
                Some((verb, form)) => out.push(PipeLeaf::Call {
                    verb,
                    form,
                    args: args.iter().map(|a| (a, a.span())).collect(),
                    call: *span,
                }),
                None => out.push(PipeLeaf::Value { expr: e, span: e.span() }),
            }
        }
        _ => out.push(PipeLeaf::Value { expr: e, span: e.span() }),
    }
}

/// Evaluate a chain of `|` operands and join them; then run or start the pipeline if an
/// operand was written as `run(…)`, `sh(…)` or `start(…)`, or give it back as a value.
pub fn eval_pipe<E>(
    it: &mut Interp,
    leaves: &[PipeLeaf<E>],
    span: Span,
    eval: impl Fn(&mut Interp, &E) -> R<Value>,
) -> R<Value> {
    let mut verb: Option<(Verb, Span)> = None;
    let mut tree: Option<Node> = None;
    for leaf in leaves {
        let node = match leaf {
            PipeLeaf::Call { verb: v, form, args, call } => {
                let mut a = Args::new(*call, args.len());
                for (e, s) in args {
                    a.push(eval(it, e)?, *s);
                }
                match verb {
                    Some((first, _)) if first != *v => return Err(mixed_verbs(*call)),
                    _ => verb = Some((*v, *call)),
                }
                let what = if *form == Form::Shell {
                    "sh"
                } else if *v == Verb::Start {
                    "start"
                } else {
                    "run"
                };
                node_from_args(it, &a, *form, what)?
            }
            PipeLeaf::Value { expr, span } => {
                let v = eval(it, expr)?;
                command_of(&v, *span)?
            }
        };
        tree = Some(match tree {
            None => node,
            Some(left) => Node::pipe(left, node, span),
        });
    }
    let tree = tree.expect("a pipe has two sides");
    match verb {
        None => Ok(Value::object(Command(tree))),
        Some((Verb::Run, _)) => run_node(it, &tree, span),
        Some((Verb::Start, _)) => background::start(it, &tree, span),
    }
}

fn mixed_verbs(span: Span) -> Unwind {
    RuntimeError::new(ErrorKind::Value, "a pipeline either runs or starts; this one does both", span)
        .with_label("this stage does not match the first")
        .with_help("write `run(…) | run(…)` to wait for it, or `start(…) | start(…)` to run it in the background")
        .into()
}

fn command_of(v: &Value, span: Span) -> R<Node> {
    match v.downcast::<Command>() {
        Some(c) => Ok(c.0.clone()),
        None => Err(RuntimeError::new(ErrorKind::Type, format!("`|` connects commands, not {}", a_type(v)), span)
            .with_label(format!("this is {}", a_type(v)))
            .with_help(
                "`|` connects commands: `run(\"ls\") | run(\"wc\", \"-l\")`, or command values made with `cmd(…)`",
            )
            .into()),
    }
}

/// `a | b` on two evaluated values: both must be commands, and the pipe is a command too.
pub fn pipe(_interp: &mut Interp, l: Value, r: Value, span: Span, ls: Span, rs: Span) -> R<Value> {
    let (left, right) = (command_of(&l, ls)?, command_of(&r, rs)?);
    Ok(Value::object(Command(Node::pipe(left, right, span))))
}

/// Run a command and wait for it: its result, or its failure as an error.
fn run_node(it: &mut Interp, node: &Node, span: Span) -> R<Value> {
    let plan = Plan::new(node, span);
    let mut running = spawn::launch(&it.shared, plan, false)?;
    wait_for(it, &mut running)?;
    match running.outcome() {
        (_, Some(e)) => Err(e.into()),
        (v, None) => Ok(v),
    }
}

/// Drive a running command from the script's own thread until it is done. A timeout or a
/// cancellation stops it, and it is reaped either way.
fn wait_for(it: &Interp, r: &mut Running) -> R<()> {
    let (span, what) = (r.plan.span, format!("`{}`", r.plan.line));
    let deadline = r.plan.timeout.map(|t| r.started + t);
    let waited = crate::runtime::wait::block_on_external(it, span, &what, None, |slice| {
        // A command started a moment ago has not finished: spare the first, zero-length poll.
        if slice.is_zero() {
            return None;
        }
        let slice = deadline.map_or(slice, |d| slice.min(d.saturating_duration_since(Instant::now())));
        if r.step(slice) {
            return Some(true);
        }
        deadline.is_some_and(|d| Instant::now() >= d).then_some(false)
    });
    match waited {
        Ok(true) => Ok(()),
        Ok(false) => {
            r.terminate();
            Err(timeout_error(r).into())
        }
        Err(e) => {
            r.terminate();
            Err(e)
        }
    }
}

/// The error for a command stopped by its `timeout` option.
fn timeout_error(r: &Running) -> RuntimeError {
    let after = crate::runtime::wait::fmt_duration(r.plan.timeout.unwrap_or_default());
    RuntimeError::new(ErrorKind::Timeout, format!("`{}` timed out after {after}", r.plan.line), r.plan.span)
        .with_label("stopped when its timeout ran out")
        .with_help("it was sent SIGTERM, then SIGKILL; give it a longer `timeout` if it needs one")
        .with_data(r.outcome().0)
}

fn b_exec(it: &mut Interp, a: Args) -> R<Value> {
    it.shared.settings.require_exec(a.call)?;
    let node = node_from_args(it, &a, Form::Argv, "exec")?;
    let Node::Leaf(leaf) = &node else {
        return Err(RuntimeError::new(
            ErrorKind::Value,
            "`exec` replaces conc with one program, not a pipeline",
            a.call,
        )
        .with_label("a pipeline")
        .into());
    };
    let o = &leaf.opts;
    if o.stdin.is_some() || o.stdout.is_some() || o.stderr.is_some() || o.timeout.is_some() {
        return Err(RuntimeError::new(
            ErrorKind::Value,
            "`exec` keeps conc's standard streams; only `env`, `clear_env` and `cwd` apply",
            o.span.unwrap_or(a.call),
        )
        .with_label("options `exec` cannot use")
        .into());
    }
    let plan = Plan::new(&node, a.call);
    Err(spawn::exec(&plan.stages[0]).into())
}

pub fn field(v: &Value, name: &str) -> Option<Value> {
    let c = v.downcast::<Command>()?;
    Some(match name {
        "cmd" => Value::str(c.0.line()),
        "argv" => match &c.0 {
            Node::Leaf(l) => Value::list(l.argv.iter().map(Value::str).collect()),
            Node::Pipe(_) => Value::Nil,
        },
        _ => return None,
    })
}

pub fn method(interp: &mut Interp, v: &Value, name: &str, span: Span, a: &Args) -> Option<R<Value>> {
    let c = v.downcast::<Command>()?;
    Some(match name {
        "with" => a.expect("with", 1, 1).and_then(|_| {
            let opts = parse_opts(interp, &a.vals[0], a.span(0))?;
            Ok(Value::object(Command(c.0.with(&opts))))
        }),
        "lines" => a.expect("lines", 0, 0).and_then(|_| LineStream::start(interp, &c.0, a.call)),
        _ => Err(RuntimeError::new(ErrorKind::Type, format!("a command has no method `{name}`"), span)
            .with_label("unknown method")
            .with_help("commands have `with(options)`, `lines()` and the fields `cmd` and `argv`; run one with `run(c)` or `start(c)`")
            .into()),
    })
}

pub fn iterate_next(interp: &mut Interp, v: &Value, span: Span) -> Option<R<Option<Value>>> {
    if let Some(s) = v.downcast::<LineStream>() {
        return Some(s.next(interp, span));
    }
    v.downcast::<Command>()?;
    Some(Err(RuntimeError::new(ErrorKind::Type, "cannot iterate over a command", span)
        .with_label("a command, not its output")
        .with_help("iterate over its output lines with `for line in c.lines() { … }`")
        .into()))
}
