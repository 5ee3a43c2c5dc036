//! Syntax: source text to an AST with spans. The only module that uses pest.

pub mod ast;
mod parser;
pub mod span;
pub mod visit;

pub use parser::{parse_program, ParseError, MAX_NESTING};
pub use span::{SourceFile, SourceMap, Span};
