//! Cooperative cancellation: a token per task, each descending from its parent's, so
//! cancelling a scope (or pressing Ctrl-C) reaches every task below it.

use crate::error::{ErrorKind, RuntimeError};
use crate::interp::{Interp, R};
use crate::syntax::Span;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    cancelled: AtomicBool,
    parent: Option<CancelToken>,
}

impl CancelToken {
    pub fn new() -> CancelToken {
        CancelToken::default()
    }

    /// A token that is cancelled when this one is, and can also be cancelled on its own.
    pub fn child(&self) -> CancelToken {
        CancelToken(Arc::new(Inner { cancelled: AtomicBool::new(false), parent: Some(self.clone()) }))
    }

    pub fn cancel(&self) {
        self.0.cancelled.store(true, Ordering::SeqCst);
    }

    /// Clear this token's own flag (the REPL after an interrupted entry).
    pub fn reset(&self) {
        self.0.cancelled.store(false, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        let mut t = self;
        loop {
            if t.0.cancelled.load(Ordering::Relaxed) {
                return true;
            }
            match &t.0.parent {
                Some(p) => t = p,
                None => return false,
            }
        }
    }
}

pub fn cancelled_error(span: Span) -> RuntimeError {
    RuntimeError::new(ErrorKind::Cancelled, "task was cancelled", span).with_label("cancelled while running here")
}

/// How long a blocking call waits between checks for cancellation and deadlock.
pub const SLICE: Duration = Duration::from_millis(20);

/// Sleep, waking early if the task is cancelled.
pub fn sleep(interp: &Interp, d: Duration, span: Span) -> R<()> {
    let deadline = Instant::now() + d;
    loop {
        interp.check_cancel(span)?;
        interp.check_time_limit(span)?;
        let now = Instant::now();
        if now >= deadline {
            return Ok(());
        }
        std::thread::sleep((deadline - now).min(SLICE));
    }
}
