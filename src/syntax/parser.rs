//! pest pairs to AST. This is the only file that knows about pest.

use super::ast::*;
use super::span::Span;
use pest::iterators::{Pair, Pairs};
use pest::pratt_parser::{Assoc, Op, PrattParser};
use pest::Parser;
use std::sync::{Arc, OnceLock};

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/conc.pest"]
struct ConcParser;

/// Brackets and prefix operators nest no deeper than this; deeper source is rejected
/// before pest sees it, because every parsing phase recurses on nesting.
pub const MAX_NESTING: usize = 200;

/// A syntax error: where, what was expected, and a hint when one is obvious.
#[derive(Debug, Clone)]
pub struct ParseError {
    pub span: Span,
    pub message: String,
    pub label: String,
    pub help: Option<String>,
}

type PResult<T> = Result<T, ParseError>;

fn pratt() -> &'static PrattParser<Rule> {
    static PRATT: OnceLock<PrattParser<Rule>> = OnceLock::new();
    PRATT.get_or_init(|| {
        PrattParser::new()
            .op(Op::infix(Rule::or_op, Assoc::Left))
            .op(Op::infix(Rule::and_op, Assoc::Left))
            .op(Op::prefix(Rule::not_op))
            .op(Op::infix(Rule::eq, Assoc::Left)
                | Op::infix(Rule::ne, Assoc::Left)
                | Op::infix(Rule::lt, Assoc::Left)
                | Op::infix(Rule::le, Assoc::Left)
                | Op::infix(Rule::gt, Assoc::Left)
                | Op::infix(Rule::ge, Assoc::Left))
            .op(Op::infix(Rule::pipe_op, Assoc::Left))
            .op(Op::infix(Rule::add, Assoc::Left) | Op::infix(Rule::sub, Assoc::Left))
            .op(Op::infix(Rule::mul, Assoc::Left)
                | Op::infix(Rule::div, Assoc::Left)
                | Op::infix(Rule::floordiv, Assoc::Left)
                | Op::infix(Rule::rem, Assoc::Left))
            .op(Op::prefix(Rule::neg))
            .op(Op::postfix(Rule::call_args)
                | Op::postfix(Rule::index_suffix)
                | Op::postfix(Rule::method_suffix)
                | Op::postfix(Rule::field_suffix))
    })
}

/// Parse a whole program from `text`, which is file number `file` in the source map.
pub fn parse_program(text: &str, file: u32) -> PResult<Vec<Stmt>> {
    check_nesting(text, file)?;
    let mut pairs = ConcParser::parse(Rule::program, text).map_err(|e| convert_error(e, text, file))?;
    let program = pairs.next().expect("program rule always yields one pair");
    let b = Builder { file };
    let mut stmts = Vec::new();
    for pair in program.into_inner() {
        if pair.as_rule() != Rule::EOI {
            stmts.push(b.stmt(pair)?);
        }
    }
    Ok(stmts)
}

/// Reject source nested deeper than [`MAX_NESTING`] with a clear error instead of a stack overflow.
fn check_nesting(text: &str, file: u32) -> PResult<()> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut prefix_run = 0usize;
    let mut i = 0;
    let mut in_string: Option<u8> = None;
    while i < bytes.len() {
        let c = bytes[i];
        if let Some(q) = in_string {
            if c == b'\\' {
                i += 1;
            } else if c == q {
                in_string = None;
            }
            i += 1;
            continue;
        }
        match c {
            b'"' | b'\'' => in_string = Some(c),
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        let at_not = bytes[i..].starts_with(b"not")
            && bytes.get(i + 3).is_none_or(|b| !(b.is_ascii_alphanumeric() || *b == b'_'));
        let word_start = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if c == b'-' || (at_not && word_start) {
            prefix_run += 1;
            if at_not && word_start {
                i += 2;
            }
        } else if !c.is_ascii_whitespace() && c != b'(' {
            prefix_run = 0;
        }
        if depth > MAX_NESTING || prefix_run > MAX_NESTING {
            return Err(ParseError {
                span: Span::new(file, i, i + 1),
                message: format!("source is nested more than {MAX_NESTING} levels deep"),
                label: "nesting limit reached here".into(),
                help: Some("split the expression into smaller parts with `let`".into()),
            });
        }
        i += 1;
    }
    Ok(())
}

/// A pair's children without the keyword tokens, which carry no information once parsed.
fn kids(pair: Pair<Rule>) -> impl Iterator<Item = Pair<Rule>> {
    pair.into_inner().filter(|p| !is_keyword_token(p.as_rule()))
}

fn is_keyword_token(rule: Rule) -> bool {
    use Rule::*;
    matches!(
        rule,
        k_let
            | k_fn
            | k_return
            | k_break
            | k_continue
            | k_import
            | k_as
            | k_while
            | k_for
            | k_in
            | k_if
            | k_else
            | k_try
            | k_catch
            | k_spawn
            | k_fork
            | k_wait
            | k_lock
            | k_scope
            | k_pool
            | k_map
            | k_over
            | k_with
            | k_select
            | k_recv
            | k_timeout
            | k_default
    )
}

struct Builder {
    file: u32,
}

impl Builder {
    fn span(&self, pair: &Pair<Rule>) -> Span {
        let s = pair.as_span();
        Span::new(self.file, s.start(), s.end())
    }

    fn var(&self, pair: Pair<Rule>) -> Var {
        Var { name: pair.as_str().into(), span: self.span(&pair), slot: Slot::Unresolved }
    }

    fn stmt(&self, pair: Pair<Rule>) -> PResult<Stmt> {
        let span = self.span(&pair);
        let rule = pair.as_rule();
        let mut inner = kids(pair);
        Ok(match rule {
            Rule::let_stmt => {
                let var = self.var(inner.next().unwrap());
                let value = self.expr(inner.next().unwrap())?;
                Stmt::Let { var, value }
            }
            Rule::fn_decl => {
                let name = self.var(inner.next().unwrap());
                let params = self.params(inner.next().unwrap());
                let body = self.block(inner.next().unwrap())?;
                let def = FnDef {
                    name: name.name.clone(),
                    params,
                    body,
                    span,
                    frame_size: 0,
                    captures: vec![],
                    uses_self: false,
                    code: Default::default(),
                    global_refs: Default::default(),
                };
                Stmt::Fn(Arc::new(def), name)
            }
            Rule::return_stmt => Stmt::Return { value: inner.next().map(|p| self.expr(p)).transpose()?, span },
            Rule::break_stmt => Stmt::Break(span),
            Rule::continue_stmt => Stmt::Continue(span),
            Rule::import_stmt => {
                let path_pair = inner.next().unwrap();
                let path = unescape_plain(path_pair.clone(), self)?;
                let alias = match inner.next() {
                    Some(p) => self.var(p),
                    None => {
                        let base = path.rsplit('/').next().unwrap_or(&path).trim_end_matches(".conc");
                        Var { name: base.into(), span: self.span(&path_pair), slot: Slot::Unresolved }
                    }
                };
                Stmt::Import { path, alias, span, module: 0 }
            }
            Rule::while_stmt => {
                let cond = self.expr(inner.next().unwrap())?;
                let body = self.block(inner.next().unwrap())?;
                Stmt::While { cond, body, span }
            }
            Rule::for_stmt => {
                let mut parts: Vec<Pair<Rule>> = inner.collect();
                let body = self.block(parts.pop().unwrap())?;
                let iter = self.expr(parts.pop().unwrap())?;
                let key = self.var(parts.remove(0));
                let value = parts.pop().map(|p| self.var(p));
                Stmt::For { key, value, iter, body, span }
            }
            Rule::expr_stmt => {
                let target = self.expr(inner.next().unwrap())?;
                let Some(op_pair) = inner.next() else { return Ok(Stmt::Expr(target)) };
                let op = match op_pair.as_str() {
                    "+=" => AssignOp::Add,
                    "-=" => AssignOp::Sub,
                    "*=" => AssignOp::Mul,
                    "/=" => AssignOp::Div,
                    _ => AssignOp::Set,
                };
                let place = self.place(target)?;
                let value = self.expr(inner.next().unwrap())?;
                Stmt::Assign { place, op, value, span }
            }
            other => unreachable!("not a statement: {other:?}"),
        })
    }

    /// The left side of an assignment: a name with index and field accesses after it.
    fn place(&self, target: Expr) -> PResult<Place> {
        let span = target.span();
        let mut path = Vec::new();
        let mut cur = target;
        loop {
            cur = match cur {
                Expr::Var(var) => {
                    path.reverse();
                    return Ok(Place { var, path, span });
                }
                Expr::Index { target, index, .. } => {
                    path.push(PathStep::Index(*index));
                    *target
                }
                Expr::Field { target, name, span: field_span } => {
                    let name_span = Span { start: field_span.end - name.len() as u32, ..field_span };
                    path.push(PathStep::Field(name, name_span));
                    *target
                }
                other => {
                    return Err(ParseError {
                        span: other.span(),
                        message: "cannot assign to this expression".into(),
                        label: "not a variable, index or field".into(),
                        help: Some(
                            "assign to a name (`x = 1`), an index (`xs[0] = 1`) or a field (`m.key = 1`)".into(),
                        ),
                    })
                }
            };
        }
    }

    fn params(&self, pair: Pair<Rule>) -> Vec<Var> {
        kids(pair).map(|p| self.var(p)).collect()
    }

    fn block(&self, pair: Pair<Rule>) -> PResult<Block> {
        let span = self.span(&pair);
        let stmts = kids(pair).map(|p| self.stmt(p)).collect::<PResult<Vec<_>>>()?;
        Ok(Block { stmts, span })
    }

    /// A block or a single expression, as the body of `spawn`/`fork`, wrapped as a function of no arguments.
    fn task_body(&self, pair: Pair<Rule>, kind: &str, span: Span) -> PResult<Arc<FnDef>> {
        let body = match self.expr(pair)? {
            Expr::Block(b) => *b,
            e => Block { span: e.span(), stmts: vec![Stmt::Expr(e)] },
        };
        Ok(Arc::new(FnDef {
            name: kind.into(),
            params: vec![],
            body,
            span,
            frame_size: 0,
            captures: vec![],
            uses_self: false,
            code: Default::default(),
            global_refs: Default::default(),
        }))
    }

    fn expr(&self, pair: Pair<Rule>) -> PResult<Expr> {
        debug_assert_eq!(pair.as_rule(), Rule::expr);
        self.pratt_expr(pair.into_inner())
    }

    fn pratt_expr(&self, pairs: Pairs<Rule>) -> PResult<Expr> {
        pratt()
            .map_primary(|p| self.primary(p))
            .map_prefix(|op, rhs| {
                let rhs = rhs?;
                let span = self.span(&op).to(rhs.span());
                let op = if op.as_rule() == Rule::neg { UnOp::Neg } else { UnOp::Not };
                Ok(Expr::Unary { op, expr: Box::new(rhs), span })
            })
            .map_postfix(|lhs, op| self.postfix(lhs?, op))
            .map_infix(|lhs, op, rhs| {
                let (lhs, rhs) = (lhs?, rhs?);
                let span = lhs.span().to(rhs.span());
                let op = match op.as_rule() {
                    Rule::or_op => BinOp::Or,
                    Rule::and_op => BinOp::And,
                    Rule::eq => BinOp::Eq,
                    Rule::ne => BinOp::Ne,
                    Rule::lt => BinOp::Lt,
                    Rule::le => BinOp::Le,
                    Rule::gt => BinOp::Gt,
                    Rule::ge => BinOp::Ge,
                    Rule::pipe_op => BinOp::Pipe,
                    Rule::add => BinOp::Add,
                    Rule::sub => BinOp::Sub,
                    Rule::mul => BinOp::Mul,
                    Rule::div => BinOp::Div,
                    Rule::floordiv => BinOp::FloorDiv,
                    Rule::rem => BinOp::Rem,
                    other => unreachable!("not an infix operator: {other:?}"),
                };
                Ok(Expr::Binary { op, lhs: Box::new(lhs), rhs: Box::new(rhs), span })
            })
            .parse(pairs)
    }

    fn args(&self, pair: Pair<Rule>) -> PResult<Vec<Expr>> {
        kids(pair).map(|p| self.expr(p)).collect()
    }

    fn postfix(&self, lhs: Expr, op: Pair<Rule>) -> PResult<Expr> {
        let span = lhs.span().to(self.span(&op));
        let rule = op.as_rule();
        let mut inner = kids(op);
        Ok(match rule {
            Rule::call_args => {
                let args = inner.map(|p| self.expr(p)).collect::<PResult<Vec<_>>>()?;
                Expr::Call { callee: Box::new(lhs), args, span }
            }
            Rule::index_suffix => {
                let index = self.expr(inner.next().unwrap())?;
                Expr::Index { target: Box::new(lhs), index: Box::new(index), span }
            }
            Rule::field_suffix => {
                let name = inner.next().unwrap();
                Expr::Field { target: Box::new(lhs), name: name.as_str().into(), span }
            }
            Rule::method_suffix => {
                let name = inner.next().unwrap();
                let name_span = self.span(&name);
                let args = self.args(inner.next().unwrap())?;
                Expr::Method { recv: Box::new(lhs), name: name.as_str().into(), name_span, args, span }
            }
            other => unreachable!("not a postfix operator: {other:?}"),
        })
    }

    fn primary(&self, pair: Pair<Rule>) -> PResult<Expr> {
        let span = self.span(&pair);
        let rule = pair.as_rule();
        Ok(match rule {
            Rule::int => {
                let digits = pair.as_str().replace('_', "");
                let n = digits.parse::<i64>().map_err(|_| ParseError {
                    span,
                    message: "integer literal is too large".into(),
                    label: "does not fit in 64 bits".into(),
                    help: Some(format!(
                        "integers range from {} to {}; write a float for larger numbers",
                        i64::MIN,
                        i64::MAX
                    )),
                })?;
                Expr::Int(n, span)
            }
            Rule::float => Expr::Float(pair.as_str().replace('_', "").parse().unwrap_or(f64::NAN), span),
            Rule::true_lit => Expr::Bool(true, span),
            Rule::false_lit => Expr::Bool(false, span),
            Rule::nil_lit => Expr::Nil(span),
            Rule::string => self.string(pair)?,
            Rule::raw_string | Rule::plain_string => Expr::Str(unescape_plain(pair, self)?.into(), span),
            Rule::ident => Expr::Var(self.var(pair)),
            Rule::paren => self.expr(kids(pair).next().unwrap())?,
            Rule::list => Expr::List(self.args(pair)?, span),
            Rule::map => {
                let mut entries = Vec::new();
                for entry in kids(pair) {
                    let mut kv = kids(entry);
                    let key = kv.next().unwrap();
                    let key: Name = match key.as_rule() {
                        Rule::plain_string => unescape_plain(key, self)?.into(),
                        _ => key.as_str().into(),
                    };
                    entries.push((key, self.expr(kv.next().unwrap())?));
                }
                Expr::Map(entries, span)
            }
            Rule::block => Expr::Block(Box::new(self.block(pair)?)),
            Rule::if_expr => self.if_expr(pair)?,
            Rule::try_expr => {
                let mut inner = kids(pair);
                let body = self.block(inner.next().unwrap())?;
                let var = self.var(inner.next().unwrap());
                let handler = self.block(inner.next().unwrap())?;
                Expr::Try { body: Box::new(body), var, handler: Box::new(handler), span }
            }
            Rule::fn_expr => {
                let mut inner = kids(pair);
                let params = self.params(inner.next().unwrap());
                let body = self.block(inner.next().unwrap())?;
                Expr::Fn(Arc::new(FnDef {
                    name: "<closure>".into(),
                    params,
                    body,
                    span,
                    frame_size: 0,
                    captures: vec![],
                    uses_self: false,
                    code: Default::default(),
                    global_refs: Default::default(),
                }))
            }
            Rule::spawn_expr => Expr::Spawn { body: self.task_body(kids(pair).next().unwrap(), "spawn", span)?, span },
            Rule::fork_expr => Expr::Fork { body: self.task_body(kids(pair).next().unwrap(), "fork", span)?, span },
            Rule::wait_expr => {
                let mut inner = kids(pair).peekable();
                let any = inner.peek().is_some_and(|p| p.as_rule() == Rule::wait_any);
                if any {
                    inner.next();
                }
                Expr::Wait { any, target: Box::new(self.expr(inner.next().unwrap())?), span }
            }
            Rule::lock_expr => {
                let mut inner = kids(pair);
                let target = self.expr(inner.next().unwrap())?;
                let body = self.block(inner.next().unwrap())?;
                Expr::Lock { target: Box::new(target), body: Box::new(body), span }
            }
            Rule::scope_expr => Expr::Scope { body: Box::new(self.block(kids(pair).next().unwrap())?), span },
            Rule::pool_expr => {
                let mut inner = kids(pair);
                let func = self.expr(inner.next().unwrap())?;
                let items = self.expr(inner.next().unwrap())?;
                let options = inner.next().map(|p| self.expr(p)).transpose()?.map(Box::new);
                Expr::PoolMap { func: Box::new(func), items: Box::new(items), options, span }
            }
            Rule::pool_new => {
                let options = kids(pair).next().map(|p| self.expr(p)).transpose()?.map(Box::new);
                Expr::PoolNew { options, span }
            }
            Rule::select_expr => {
                let arms = kids(pair).map(|arm| self.select_arm(arm)).collect::<PResult<Vec<_>>>()?;
                Expr::Select { arms, span }
            }
            other => unreachable!("not a primary expression: {other:?}"),
        })
    }

    fn select_arm(&self, pair: Pair<Rule>) -> PResult<SelectArm> {
        let arm = kids(pair).next().unwrap();
        let span = self.span(&arm);
        let rule = arm.as_rule();
        let mut inner = kids(arm);
        Ok(match rule {
            Rule::select_recv => {
                let chan = self.expr(inner.next().unwrap())?;
                let var = self.var(inner.next().unwrap());
                let body = self.block(inner.next().unwrap())?;
                SelectArm::Recv { chan, var, body, span }
            }
            Rule::select_timeout => {
                let secs = self.expr(inner.next().unwrap())?;
                SelectArm::Timeout { secs, body: self.block(inner.next().unwrap())?, span }
            }
            _ => SelectArm::Default { body: self.block(inner.next().unwrap())?, span },
        })
    }

    fn if_expr(&self, pair: Pair<Rule>) -> PResult<Expr> {
        let span = self.span(&pair);
        let mut inner = kids(pair);
        let cond = self.expr(inner.next().unwrap())?;
        let then = self.block(inner.next().unwrap())?;
        let otherwise = match inner.next() {
            None => None,
            Some(p) if p.as_rule() == Rule::if_expr => Some(Box::new(self.if_expr(p)?)),
            Some(p) => Some(Box::new(Expr::Block(Box::new(self.block(p)?)))),
        };
        Ok(Expr::If { cond: Box::new(cond), then: Box::new(then), otherwise, span })
    }

    fn string(&self, pair: Pair<Rule>) -> PResult<Expr> {
        let span = self.span(&pair);
        let mut parts: Vec<StrPart> = Vec::new();
        let mut text = String::new();
        for part in kids(pair) {
            match part.as_rule() {
                Rule::str_text => text.push_str(part.as_str()),
                Rule::lbrace => text.push('{'),
                Rule::rbrace => text.push('}'),
                Rule::escape => text.push(unescape_char(&part, self)?),
                Rule::fmt_hole => text.push_str(part.as_str()),
                Rule::interp => {
                    if !text.is_empty() {
                        parts.push(StrPart::Lit(std::mem::take(&mut text)));
                    }
                    let mut inner = kids(part);
                    let e = self.expr(inner.next().unwrap())?;
                    let spec = inner.next().map(|s| Arc::from(&s.as_str()[1..]));
                    parts.push(StrPart::Expr(e, spec));
                }
                other => unreachable!("not a string part: {other:?}"),
            }
        }
        if parts.is_empty() {
            return Ok(Expr::Str(text.into(), span));
        }
        if !text.is_empty() {
            parts.push(StrPart::Lit(text));
        }
        Ok(Expr::Interp(parts, span))
    }
}

fn unescape_plain(pair: Pair<Rule>, b: &Builder) -> PResult<String> {
    let mut out = String::new();
    for part in kids(pair) {
        match part.as_rule() {
            Rule::escape => out.push(unescape_char(&part, b)?),
            _ => out.push_str(part.as_str()),
        }
    }
    Ok(out)
}

fn unescape_char(pair: &Pair<Rule>, b: &Builder) -> PResult<char> {
    let c = pair.as_str()[1..].chars().next().unwrap_or('\\');
    Ok(match c {
        'n' => '\n',
        't' => '\t',
        'r' => '\r',
        '0' => '\0',
        'e' => '\x1b',
        '\\' | '"' | '\'' | '{' | '}' => c,
        _ => {
            return Err(ParseError {
                span: b.span(pair),
                message: format!("unknown escape `\\{c}`"),
                label: "not a valid escape".into(),
                help: Some("valid escapes are \\n \\t \\r \\0 \\e \\\\ \\\" \\' \\{ \\}".into()),
            })
        }
    })
}

/// What a user calls each rule when pest says it expected one.
fn describe(rule: Rule) -> Option<&'static str> {
    use Rule::*;
    Some(match rule {
        k_let => "`let`",
        k_fn => "`fn`",
        k_return => "`return`",
        k_break => "`break`",
        k_continue => "`continue`",
        k_import => "`import`",
        k_as => "`as`",
        k_while => "`while`",
        k_for => "`for`",
        k_in => "`in`",
        k_if => "`if`",
        k_else => "`else`",
        k_try => "`try`",
        k_catch => "`catch`",
        k_spawn | k_fork | k_wait | k_lock | k_scope | k_pool | k_select => "an expression",
        k_map => "`map`",
        k_over => "`over`",
        k_with => "`with`",
        k_recv => "`recv`",
        k_timeout => "`timeout`",
        k_default => "`default`",
        expr | primary | prefix | int | float | string | raw_string | true_lit | false_lit | nil_lit | list | map
        | paren | if_expr | try_expr | fn_expr | spawn_expr | fork_expr | wait_expr | lock_expr | scope_expr
        | pool_expr | pool_new | select_expr | not_op | neg => "an expression",
        ident => "a name",
        member | field_name => "a field or method name",
        block => "a block `{ … }`",
        params => "a parameter list `( … )`",
        call_args => "arguments `( … )`",
        EOI => "the end of the input",
        let_stmt | fn_decl | return_stmt | break_stmt | continue_stmt | import_stmt | while_stmt | for_stmt
        | expr_stmt | stmt => "a statement",
        assign_op => "`=`",
        plain_string => "a string",
        map_entry => "a `key: value` entry",
        or_op | and_op | eq | ne | lt | le | gt | ge | pipe_op | add | sub | mul | div | floordiv | rem | infix => {
            "an operator"
        }
        index_suffix => "`[`",
        field_suffix | method_suffix => "`.`",
        select_arm | select_recv | select_timeout | select_default => "a `recv`, `timeout` or `default` arm",
        _ => return None,
    })
}

fn convert_error(e: pest::error::Error<Rule>, text: &str, file: u32) -> ParseError {
    use pest::error::{ErrorVariant, InputLocation};
    let pos = match e.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    let mut expected: Vec<&str> = match &e.variant {
        ErrorVariant::ParsingError { positives, .. } => positives.iter().filter_map(|r| describe(*r)).collect(),
        ErrorVariant::CustomError { .. } => vec![],
    };
    if expected.contains(&"an expression") {
        // Names, blocks and `fn`/`if`/`try` all start expressions; saying so once is clearer.
        expected.retain(|e| !matches!(*e, "a name" | "a block `{ … }`" | "`fn`" | "`if`" | "`try`"));
    }
    expected.sort();
    expected.dedup();
    let rest = &text[pos.min(text.len())..];
    let found_len = rest.chars().next().map_or(0, |c| {
        if c.is_alphanumeric() || c == '_' {
            rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len())
        } else {
            c.len_utf8()
        }
    });
    let found = if rest.is_empty() {
        "the end of the input".to_string()
    } else if rest.starts_with('\n') {
        "the end of the line".to_string()
    } else {
        format!("`{}`", &rest[..found_len])
    };
    let what = match expected.len() {
        0 => "unexpected input".to_string(),
        1 => format!("expected {}", expected[0]),
        _ => {
            let (last, init) = expected.split_last().unwrap();
            format!("expected {} or {}", init.join(", "), last)
        }
    };
    if let Some(err) = unclosed_bracket(text, pos, file) {
        return err;
    }
    let doubled = rest.starts_with('=') && !rest.starts_with("==") && rest[1..].trim_start().starts_with('=');
    if doubled || (rest.starts_with('=') && text[..pos].trim_end().ends_with('=')) {
        let at = if doubled { pos + 1 + (rest[1..].len() - rest[1..].trim_start().len()) } else { pos };
        return ParseError {
            span: Span::new(file, at, at + 1),
            message: "syntax error: expected an expression, found `=`".into(),
            label: "expected an expression".into(),
            help: Some("`=` assigns a value; to compare two values use `==`".into()),
        };
    }
    let help = hint(rest, &expected, text, pos);
    ParseError {
        span: Span::new(file, pos, pos + found_len.max(if rest.is_empty() { 0 } else { 1 })),
        message: format!("syntax error: {what}, found {found}"),
        label: what,
        help,
    }
}

/// When the input ends (or a line ends) inside an open bracket, name the bracket.
fn unclosed_bracket(text: &str, pos: usize, file: u32) -> Option<ParseError> {
    let rest = &text[pos.min(text.len())..];
    if !(rest.trim().is_empty() || rest.starts_with('\n')) {
        return None;
    }
    let mut open: Vec<(char, usize)> = Vec::new();
    let mut chars = text[..pos.min(text.len())].char_indices().peekable();
    let mut in_str: Option<char> = None;
    while let Some((i, c)) = chars.next() {
        if let Some(q) = in_str {
            if c == '\\' {
                chars.next();
            } else if c == q {
                in_str = None;
            }
            continue;
        }
        match c {
            '"' | '\'' => in_str = Some(c),
            '#' => {
                while chars.peek().is_some_and(|(_, c)| *c != '\n') {
                    chars.next();
                }
            }
            '(' | '[' | '{' => open.push((c, i)),
            ')' | ']' | '}' => {
                open.pop();
            }
            _ => {}
        }
    }
    let (c, at) = open.pop()?;
    let close = match c {
        '(' => ')',
        '[' => ']',
        _ => '}',
    };
    let line = text[..at].matches('\n').count() + 1;
    Some(ParseError {
        span: Span::new(file, at, at + 1),
        message: format!("syntax error: this `{c}` is never closed"),
        label: format!("opened here, on line {line}"),
        help: Some(format!("add the missing `{close}`")),
    })
}

fn hint(rest: &str, expected: &[&str], text: &str, pos: usize) -> Option<String> {
    let word: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    let reserved = [
        "spawn", "fork", "pool", "lock", "wait", "scope", "select", "let", "fn", "if", "else", "while", "for", "in",
        "return", "break", "continue", "try", "catch", "import", "as", "and", "or", "not", "true", "false", "nil",
    ];
    if !word.is_empty() && reserved.contains(&word.as_str()) && expected.contains(&"a name") {
        return Some(format!("`{word}` is a reserved word; choose another name"));
    }
    if rest.starts_with('=') && !rest.starts_with("==") && expected.iter().any(|e| e.contains("operator")) {
        return Some("to declare a variable write `let name = value`; to compare use `==`".into());
    }
    if rest.starts_with('!') && !rest.starts_with("!=") {
        return Some("write `not x` for logical negation (`!` appears only in `!=`)".into());
    }
    if rest.starts_with("&&") || rest.starts_with("||") {
        return Some("conc writes `and` and `or` for `&&` and `||`".into());
    }
    let before = text[..pos].trim_end();
    if rest.is_empty() || rest.starts_with('}') {
        let opens = text.matches('{').count();
        let closes = text.matches('}').count();
        if opens > closes {
            return Some("a `{` is never closed".into());
        }
    }
    if before.ends_with("else if") || before.ends_with("if") || before.ends_with("while") {
        return Some("conditions need no parentheses, but the body needs braces: `if x > 1 { … }`".into());
    }
    None
}
