//! Which tasks are alive and which are blocked, for deadlock detection: when every live
//! thread is blocked on a conc primitive with no timeout, and nothing has moved for a while,
//! the program can never continue, so the blocked calls fail with a deadlock error.

use super::cancel::CancelToken;
use crate::syntax::Span;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct Registry {
    state: Mutex<State>,
    /// Bumped by every operation that might unblock someone.
    progress: AtomicU64,
    next_id: AtomicU64,
}

#[derive(Default)]
struct State {
    live: usize,
    blocked: Vec<Blocked>,
    /// Set once a deadlock has been declared: everyone blocked then fails with this report.
    /// The report, and whether the main task was among the blocked (then only it raises).
    deadlock: Option<(String, bool)>,
    stable_since: Option<(u64, Instant)>,
}

struct Blocked {
    id: u64,
    root: bool,
    /// A cancelled task will wake up soon, so it does not count as stuck.
    token: CancelToken,
    who: String,
    what: String,
    span: Span,
}

/// A task blocked without timeout stays registered until this guard drops.
pub struct BlockGuard<'a> {
    reg: &'a Registry,
    id: u64,
}

impl Drop for BlockGuard<'_> {
    fn drop(&mut self) {
        let mut st = self.reg.state.lock().unwrap_or_else(|e| e.into_inner());
        st.blocked.retain(|b| b.id != self.id);
        st.stable_since = None;
        if st.blocked.is_empty() {
            st.deadlock = None;
        }
    }
}

/// How long everything must sit still before a deadlock is declared.
/// Generous, so a loaded machine that is slow to schedule a waking thread is not mistaken
/// for a deadlock.
const QUIET: Duration = Duration::from_millis(300);

impl Registry {
    pub fn enter(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).live += 1;
        self.bump();
    }

    pub fn leave(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.live = st.live.saturating_sub(1);
        st.stable_since = None;
        drop(st);
        self.bump();
    }

    pub fn bump(&self) {
        self.progress.fetch_add(1, Ordering::Relaxed);
    }

    /// Register a blocked call. `root` marks the main task: it is the one that reports a
    /// deadlock, so the report does not depend on which thread notices first.
    pub fn block(&self, who: &str, what: &str, span: Span, root: bool, token: &CancelToken) -> BlockGuard<'_> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.blocked.push(Blocked { id, root, token: token.clone(), who: who.to_string(), what: what.to_string(), span });
        st.stable_since = None;
        BlockGuard { reg: self, id }
    }

    /// Called by blocked tasks between waits. Returns the report if the program is deadlocked
    /// and the caller is the one to raise it: the main task, or anyone when main is not blocked.
    pub fn check_deadlock(&self, root: bool, sources: &dyn Fn(Span) -> String) -> Option<String> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let progress = self.progress.load(Ordering::Relaxed);
        let root_blocked = st.blocked.iter().any(|b| b.root);
        if let Some((report, root_reports)) = &st.deadlock {
            return (root || !root_reports).then(|| report.clone());
        }
        let stuck = st.blocked.iter().filter(|b| !b.token.is_cancelled()).count();
        if st.live == 0 || stuck < st.live {
            st.stable_since = None;
            return None;
        }
        match st.stable_since {
            Some((p, since)) if p == progress => {
                if since.elapsed() < QUIET {
                    return None;
                }
            }
            _ => {
                st.stable_since = Some((progress, Instant::now()));
                return None;
            }
        }
        let mut lines: Vec<String> =
            st.blocked.iter().map(|b| format!("  {} is blocked in {} at {}", b.who, b.what, sources(b.span))).collect();
        lines.sort();
        let report = lines.join("\n");
        st.deadlock = Some((report.clone(), root_blocked));
        (root || !root_blocked).then_some(report)
    }
}
