//! Errors: one record for every fault (syntax, resolution, run time), and the public
//! [`Error`] that pairs it with the sources it points into, for miette to render.

use crate::syntax::{SourceFile, SourceMap, Span};
use crate::value::Value;
use miette::{Diagnostic, LabeledSpan, MietteError, MietteSpanContents, SourceCode, SpanContents};
use std::fmt;
use std::sync::Arc;

/// What went wrong, for programs that inspect errors rather than print them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum ErrorKind {
    Syntax,
    Name,
    Type,
    Value,
    Arithmetic,
    Index,
    Key,
    Io,
    Timeout,
    Cancelled,
    Deadlock,
    Limit,
    Permission,
    Command,
    Task,
    Assertion,
    /// Raised by the script with `error(...)`.
    User,
    /// `exit(n)`: unwinds like an error but `try` does not catch it.
    Exit(i32),
}

impl ErrorKind {
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::Syntax => "conc::syntax",
            ErrorKind::Name => "conc::name",
            ErrorKind::Type => "conc::type",
            ErrorKind::Value => "conc::value",
            ErrorKind::Arithmetic => "conc::arithmetic",
            ErrorKind::Index => "conc::index",
            ErrorKind::Key => "conc::key",
            ErrorKind::Io => "conc::io",
            ErrorKind::Timeout => "conc::timeout",
            ErrorKind::Cancelled => "conc::cancelled",
            ErrorKind::Deadlock => "conc::deadlock",
            ErrorKind::Limit => "conc::limit",
            ErrorKind::Permission => "conc::permission",
            ErrorKind::Command => "conc::command",
            ErrorKind::Task => "conc::task",
            ErrorKind::Assertion => "conc::assert",
            ErrorKind::User => "conc::error",
            ErrorKind::Exit(_) => "conc::exit",
        }
    }

    /// The name scripts see as `e.kind`.
    pub fn name(self) -> &'static str {
        self.code().trim_start_matches("conc::")
    }

    /// Whether the fault was found before the program ran.
    pub fn is_compile_time(self) -> bool {
        matches!(self, ErrorKind::Syntax | ErrorKind::Name)
    }
}

/// One call in the conc call stack: the function that was running and the call site.
#[derive(Clone, Debug)]
pub struct Frame {
    pub function: Arc<str>,
    pub call_span: Span,
}

/// A fault with everything needed to explain it.
#[derive(Clone, Debug)]
pub struct RuntimeError {
    pub kind: ErrorKind,
    pub message: String,
    pub span: Option<Span>,
    pub label: Option<String>,
    pub help: Option<String>,
    /// Optional data given to `error(message, data)`.
    pub data: Value,
    /// Innermost call first.
    pub stack: Vec<Frame>,
    /// Other faults that explain this one: where a failed task failed, or errors of sibling tasks.
    pub related: Vec<Arc<RuntimeError>>,
}

impl RuntimeError {
    pub fn new(kind: ErrorKind, message: impl Into<String>, span: Span) -> RuntimeError {
        RuntimeError {
            kind,
            message: message.into(),
            span: Some(span),
            label: None,
            help: None,
            data: Value::Nil,
            stack: Vec::new(),
            related: Vec::new(),
        }
    }

    pub fn without_span(kind: ErrorKind, message: impl Into<String>) -> RuntimeError {
        RuntimeError { span: None, ..RuntimeError::new(kind, message, Span::default()) }
    }

    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn with_data(mut self, data: Value) -> Self {
        self.data = data;
        self
    }

    pub fn with_related(mut self, related: Arc<RuntimeError>) -> Self {
        self.related.push(related);
        self
    }
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RuntimeError {}

/// A conc error ready to render: the fault plus the source files its spans point into.
/// It implements [`std::error::Error`] and [`miette::Diagnostic`].
#[derive(Clone)]
pub struct Error {
    inner: Arc<RuntimeError>,
    sources: Arc<SourceMap>,
    source: Option<FileSource>,
    /// The related errors, each distinct failure once (see [`Error::new`]).
    related: Vec<Error>,
    /// How many related errors repeated one already in `related`.
    repeats: usize,
}

/// How many call-stack frames a diagnostic shows before summarising the rest.
const SHOWN_FRAMES: usize = 8;

impl Error {
    pub fn new(inner: Arc<RuntimeError>, sources: Arc<SourceMap>) -> Error {
        let source = inner.span.and_then(|s| sources.get(s.file)).cloned().map(FileSource);
        // Twenty tasks that fail alike (a pool of the same function, one bad input each) are
        // one failure to read about, shown once and counted.
        let mut related: Vec<Error> = Vec::new();
        let mut repeats = 0;
        for r in &inner.related {
            if related.iter().any(|e| same_failure(&e.inner, r)) {
                repeats += 1;
            } else {
                related.push(Error::new(r.clone(), sources.clone()));
            }
        }
        Error { inner, sources, source, related, repeats }
    }

    /// An error with a message only, for faults outside any script (a missing file, say).
    pub fn plain(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error::new(Arc::new(RuntimeError::without_span(kind, message)), Arc::new(SourceMap::default()))
    }

    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    pub fn message(&self) -> &str {
        &self.inner.message
    }

    pub fn span(&self) -> Option<Span> {
        self.inner.span
    }

    /// The file name, line and column where the error points, if it points anywhere.
    pub fn location(&self) -> Option<(String, usize, usize)> {
        let span = self.inner.span?;
        let file = self.sources.get(span.file)?;
        let (line, col) = file.line_col(span.start);
        Some((file.name.clone(), line, col))
    }

    pub fn details(&self) -> &RuntimeError {
        &self.inner
    }

    /// The same error without the call-stack frames whose call sites are in `file`: code a host
    /// generated to call into the script, which the script's author never wrote.
    pub fn without_frames_in(&self, file: u32) -> Error {
        let mut inner = (*self.inner).clone();
        inner.stack.retain(|f| f.call_span.file != file);
        Error::new(Arc::new(inner), self.sources.clone())
    }

    /// The process exit status the CLI uses for this error.
    pub fn exit_code(&self) -> i32 {
        match self.inner.kind {
            ErrorKind::Exit(code) => code,
            k if k.is_compile_time() => 65,
            _ => 70,
        }
    }
}

impl Error {
    /// The conc call stack, innermost call first: each function and where it was called.
    pub fn stack_trace(&self) -> Vec<(String, String)> {
        self.inner
            .stack
            .iter()
            .map(|f| {
                let place = match self.sources.get(f.call_span.file) {
                    Some(file) => {
                        let (l, c) = file.line_col(f.call_span.start);
                        format!("{}:{l}:{c}", file.name)
                    }
                    None => "<unknown>".into(),
                };
                (f.function.to_string(), place)
            })
            .collect()
    }

    /// The call stack as the footer of a rendered diagnostic.
    fn stack_footer(&self) -> Option<String> {
        let frames = self.stack_trace();
        if frames.is_empty() {
            return None;
        }
        // Recursion repeats one frame many times; show each run of repeats once, with a count.
        let mut runs: Vec<(&(String, String), usize)> = Vec::new();
        for f in &frames {
            match runs.last_mut() {
                Some((last, n)) if *last == f => *n += 1,
                _ => runs.push((f, 1)),
            }
        }
        let mut out = String::from("call stack (innermost first):");
        for ((name, place), n) in runs.iter().take(SHOWN_FRAMES) {
            let times = if *n > 1 { format!(" ({n} times)") } else { String::new() };
            out.push_str(&format!("\n  in `{name}`, called at {place}{times}"));
        }
        if runs.len() > SHOWN_FRAMES {
            let hidden: usize = runs[SHOWN_FRAMES..].iter().map(|(_, n)| n).sum();
            out.push_str(&format!("\n  … and {hidden} more calls"));
        }
        Some(out)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location() {
            Some((file, line, col)) => {
                write!(f, "{}: {} at {file}:{line}:{col}", self.inner.kind.code(), self.inner.message)
            }
            None => write!(f, "{}: {}", self.inner.kind.code(), self.inner.message),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.message)
    }
}

impl std::error::Error for Error {}

impl Diagnostic for Error {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        match self.inner.kind {
            ErrorKind::User if self.inner.span.is_none() => None,
            k => Some(Box::new(k.code())),
        }
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.inner.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.source.as_ref().map(|s| s as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let span = self.inner.span?;
        self.source.as_ref()?;
        let label = self.inner.label.clone().unwrap_or_else(|| "here".into());
        Some(Box::new(std::iter::once(LabeledSpan::new_with_span(Some(label), span))))
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        if self.related.is_empty() {
            return None;
        }
        Some(Box::new(self.related.iter().map(|e| e as &dyn Diagnostic)))
    }
}

/// The same error, raised at the same place, reached along the same calls.
fn same_failure(a: &RuntimeError, b: &RuntimeError) -> bool {
    let calls = |e: &RuntimeError| e.stack.iter().map(|f| f.call_span).collect::<Vec<_>>();
    a.kind == b.kind && a.message == b.message && a.span == b.span && a.label == b.label && calls(a) == calls(b)
}

/// A source file as miette reads it, reported under its own name.
#[derive(Clone, Debug)]
struct FileSource(Arc<SourceFile>);

impl SourceCode for FileSource {
    fn read_span<'a>(
        &'a self,
        span: &miette::SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        let inner = self.0.text.read_span(span, context_lines_before, context_lines_after)?;
        Ok(Box::new(MietteSpanContents::new_named(
            self.0.name.clone(),
            inner.data(),
            *inner.span(),
            inner.line(),
            inner.column(),
            inner.line_count(),
        )))
    }
}

/// Lines longer than this are not quoted in a diagnostic; the location is given instead.
const MAX_QUOTED_LINE: usize = 400;

impl Error {
    /// The same error without its source snippet, when the offending line is too long to show.
    fn without_huge_snippet(&self) -> Option<Error> {
        self.source.as_ref()?;
        let span = self.inner.span?;
        let file = self.sources.get(span.file)?;
        let start = file.text[..span.start as usize].rfind('\n').map_or(0, |i| i + 1);
        let end = file.text[span.start as usize..].find('\n').map_or(file.text.len(), |i| i + span.start as usize);
        if end - start <= MAX_QUOTED_LINE {
            return None;
        }
        let (_, line, col) = self.location()?;
        let mut plain = self.clone();
        plain.source = None;
        let mut inner = (*self.inner).clone();
        inner.message = format!("{} (at {}:{line}:{col}; the line is too long to quote)", inner.message, file.name);
        plain.inner = Arc::new(inner);
        Some(plain)
    }
}

/// Render an error the way the CLI prints it: colour only when `color` is set.
pub fn render(err: &Error, color: bool) -> String {
    if let Some(plain) = err.without_huge_snippet() {
        return render(&plain, color);
    }
    use miette::{GraphicalReportHandler, GraphicalTheme};
    let theme = if color { GraphicalTheme::unicode() } else { GraphicalTheme::unicode_nocolor() };
    let mut handler = GraphicalReportHandler::new_themed(theme).with_width(100).with_context_lines(1);
    if let Some(footer) = err.stack_footer() {
        handler = handler.with_footer(footer);
    }
    let mut out = String::new();
    if handler.render_report(&mut out, err).is_err() {
        out = format!("error: {}\n", err.message());
    }
    for related in &err.related {
        if let Some(footer) = related.stack_footer() {
            out.push_str(&format!("  (in the task) {}\n", footer.replace('\n', "\n  ")));
        }
    }
    match err.repeats {
        0 => {}
        1 => out.push_str("  (one more task failed the same way)\n"),
        n => out.push_str(&format!("  ({n} more tasks failed the same way)\n")),
    }
    out
}
