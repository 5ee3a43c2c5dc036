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
                None => return stop_requested(),
            }
        }
    }
}

/// Set by SIGTERM or SIGINT in a forked conc process: every task of the process stops.
static STOP: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
static STOP_SIGNAL: std::sync::OnceLock<Arc<std::sync::atomic::AtomicUsize>> = std::sync::OnceLock::new();

/// The signal that stopped this forked process, if one did.
pub fn stop_signal() -> Option<i32> {
    STOP_SIGNAL.get().map(|s| s.load(Ordering::Relaxed) as i32).filter(|s| *s != 0)
}

fn stop_requested() -> bool {
    STOP.get().is_some_and(|f| f.load(Ordering::Relaxed))
}

/// In a forked process: the first TERM or INT cancels every task (so scopes clean up and the
/// process exits), a second one ends the process at once.
pub fn stop_on_signals() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = STOP.get_or_init(|| Arc::new(AtomicBool::new(false))).clone();
    let which = STOP_SIGNAL.get_or_init(|| Arc::new(std::sync::atomic::AtomicUsize::new(0))).clone();
    for sig in [SIGTERM, SIGINT] {
        let ids = [
            signal_hook::flag::register_conditional_shutdown(sig, 130, flag.clone()),
            signal_hook::flag::register_usize(sig, which.clone(), sig as usize),
            signal_hook::flag::register(sig, flag.clone()),
        ];
        // A script's own `on_signal` handler replaces these.
        ids.into_iter().flatten().for_each(|id| super::signal::default_action(sig, id));
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
