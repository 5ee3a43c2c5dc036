//! A forked child's stdout and stderr when the host captures output into a buffer or a
//! callback: the child writes into a pipe, and a thread here hands what it reads to the
//! sink, so a child's `print` lands where the parent's does.

use crate::engine::Sink;
use crate::interp::Shared;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::mpsc;
use std::sync::Arc;

/// The descriptors a child gets as its stdout and stderr, and the pumps behind them.
pub struct ChildOutput {
    /// Kept open until the request carrying them has gone out.
    write_ends: Vec<OwnedFd>,
    raw: [RawFd; 2],
    /// One message per pump when it has passed on everything (the child closed its end).
    done: Option<mpsc::Receiver<()>>,
    pumps: usize,
}

impl ChildOutput {
    /// Pipes for whichever of the two streams goes to a buffer or callback; the process's
    /// own descriptors otherwise.
    pub fn new(shared: &Arc<Shared>, on_done: impl Fn() + Send + Sync + Clone + 'static) -> std::io::Result<Self> {
        let mut out = ChildOutput { write_ends: Vec::new(), raw: [1, 2], done: None, pumps: 0 };
        let (tx, rx) = mpsc::channel();
        for (i, to_stderr) in [(0, false), (1, true)] {
            let sink = if to_stderr { &shared.output.stderr } else { &shared.output.stdout };
            match sink {
                Sink::Stdout => out.raw[i] = 1,
                Sink::Stderr => out.raw[i] = 2,
                Sink::Buffer(_) | Sink::Callback(_) => {
                    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
                    out.raw[i] = w.as_raw_fd();
                    out.write_ends.push(w);
                    start_pump(shared.clone(), r, to_stderr, tx.clone(), on_done.clone())?;
                    out.pumps += 1;
                }
            }
        }
        if out.pumps > 0 {
            out.done = Some(rx);
        }
        Ok(out)
    }

    pub fn fds(&self) -> [RawFd; 2] {
        self.raw
    }

    /// The request is out: the child holds its own copies of the write ends.
    pub fn sent(&mut self) {
        self.write_ends.clear();
    }

    /// Whether every pump has passed on all of the child's output.
    pub fn drained(&mut self) -> bool {
        let Some(rx) = &self.done else { return true };
        while self.pumps > 0 && rx.try_recv().is_ok() {
            self.pumps -= 1;
        }
        self.pumps == 0
    }
}

fn start_pump(
    shared: Arc<Shared>,
    read_end: OwnedFd,
    to_stderr: bool,
    done: mpsc::Sender<()>,
    on_done: impl Fn() + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new().name("conc:output".into()).spawn(move || {
        let mut file = std::fs::File::from(read_end);
        let mut buf = vec![0u8; 64 * 1024];
        let mut pending: Vec<u8> = Vec::new();
        loop {
            match file.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    pending.extend_from_slice(&buf[..n]);
                    let whole = complete_utf8_prefix(&pending);
                    if whole > 0 {
                        shared.output.write(&String::from_utf8_lossy(&pending[..whole]), to_stderr);
                        pending.drain(..whole);
                    }
                }
            }
        }
        if !pending.is_empty() {
            shared.output.write(&String::from_utf8_lossy(&pending), to_stderr);
        }
        let _ = done.send(());
        on_done();
    })?;
    Ok(())
}

/// The length of the longest prefix that does not end inside a UTF-8 character, so a
/// character split across two reads is passed on whole.
fn complete_utf8_prefix(bytes: &[u8]) -> usize {
    match std::str::from_utf8(bytes) {
        Ok(_) => bytes.len(),
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        Err(_) => bytes.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::complete_utf8_prefix;

    #[test]
    fn a_split_character_waits_for_its_rest() {
        let s = "añb".as_bytes();
        assert_eq!(complete_utf8_prefix(&s[..2]), 1);
        assert_eq!(complete_utf8_prefix(s), s.len());
        assert_eq!(complete_utf8_prefix(&[0xff, b'a']), 2);
    }
}
