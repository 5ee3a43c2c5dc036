//! Framed messages over unix sockets, optionally carrying file descriptors: the transport
//! between conc, its process server and the processes it forks.
//!
//! A frame is a 5-byte header (payload length, little-endian u32, then the number of fds)
//! followed by the payload. Descriptors ride with the header's `sendmsg`, so a reader that
//! takes exactly one header at a time always finds a frame's fds with that frame.

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType,
};
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

const HEADER: usize = 5;
/// The most descriptors one frame carries.
pub const MAX_FDS: usize = 8;
/// Frames larger than this are refused as corrupt rather than allocated.
const MAX_FRAME: usize = 1 << 31;

/// A connected pair of stream sockets, both close-on-exec.
pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
    let (a, b) = socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC)?;
    Ok((UnixStream::from(a), UnixStream::from(b)))
}

fn header(len: usize, nfds: usize) -> [u8; HEADER] {
    let l = (len as u32).to_le_bytes();
    [l[0], l[1], l[2], l[3], nfds as u8]
}

/// Send one frame. The fds are duplicated into the receiver; the caller keeps its own.
pub fn send(sock: &UnixStream, payload: &[u8], fds: &[RawFd]) -> io::Result<()> {
    debug_assert!(fds.len() <= MAX_FDS);
    let head = header(payload.len(), fds.len());
    let rights = [ControlMessage::ScmRights(fds)];
    let rights: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    // Header and payload in one call when the socket buffer takes them: one wake-up for
    // the reader, and half the system calls of two writes.
    let iov = [IoSlice::new(&head), IoSlice::new(payload)];
    let sent = loop {
        match sendmsg::<()>(sock.as_raw_fd(), &iov, rights, MsgFlags::MSG_NOSIGNAL, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => break r?,
        }
    };
    let mut w = sock;
    if sent < HEADER {
        w.write_all(&head[sent..])?;
        w.write_all(payload)
    } else {
        w.write_all(&payload[sent - HEADER..])
    }
}

/// Send a frame with no descriptors from a buffer that already holds its header (see [`Frames::push`]).
pub fn send_raw(sock: &UnixStream, bytes: &[u8]) -> io::Result<()> {
    let mut w = sock;
    w.write_all(bytes)
}

/// Receive one frame into `buf`; `None` at a clean end of stream.
pub fn recv(sock: &UnixStream, buf: &mut Vec<u8>) -> io::Result<Option<Vec<OwnedFd>>> {
    let mut head = [0u8; HEADER];
    let mut fds = Vec::new();
    let mut got = 0;
    while got < HEADER {
        let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
        let mut iov = [IoSliceMut::new(&mut head[got..])];
        let msg = match recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => r?,
        };
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                fds.extend(raw.into_iter().map(owned_received));
            }
        }
        let n = msg.bytes;
        if n == 0 {
            return if got == 0 { Ok(None) } else { Err(io::ErrorKind::UnexpectedEof.into()) };
        }
        got += n;
    }
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too large"));
    }
    buf.clear();
    buf.resize(len, 0);
    let mut r = sock;
    r.read_exact(buf)?;
    Ok(Some(fds))
}

#[allow(unsafe_code)]
fn owned_received(fd: RawFd) -> OwnedFd {
    // SAFETY: the kernel has just installed this descriptor in this process (SCM_RIGHTS);
    // nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Builds a batch of frames in one buffer, so many small messages cost one write.
#[derive(Default)]
pub struct Frames {
    pub bytes: Vec<u8>,
}

impl Frames {
    pub fn push(&mut self, payload: &[u8]) {
        self.bytes.extend_from_slice(&header(payload.len(), 0));
        self.bytes.extend_from_slice(payload);
    }
}

/// Splits a byte stream read in arbitrary pieces back into frames (no descriptors).
#[derive(Default)]
pub struct Reassembler {
    buf: Vec<u8>,
    start: usize,
}

impl Reassembler {
    /// Read what is available (one `read`); `false` at end of stream.
    pub fn fill(&mut self, mut src: impl Read) -> io::Result<bool> {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        let old = self.buf.len();
        let want = (4 * 1024).max(self.needed());
        self.buf.resize(old + want, 0);
        let n = loop {
            match src.read(&mut self.buf[old..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        };
        let n = match n {
            Ok(n) => n,
            Err(e) => {
                self.buf.truncate(old);
                return Err(e);
            }
        };
        self.buf.truncate(old + n);
        Ok(n > 0)
    }

    /// How many more bytes the frame in progress needs.
    fn needed(&self) -> usize {
        let have = &self.buf[self.start..];
        if have.len() < HEADER {
            return HEADER - have.len();
        }
        let len = u32::from_le_bytes([have[0], have[1], have[2], have[3]]) as usize;
        (HEADER + len).saturating_sub(have.len())
    }

    /// The next complete frame's payload, if one has arrived.
    pub fn next_frame(&mut self) -> Option<&[u8]> {
        if self.needed() > 0 || self.buf.len() == self.start {
            return None;
        }
        let have = &self.buf[self.start..];
        let len = u32::from_le_bytes([have[0], have[1], have[2], have[3]]) as usize;
        let from = self.start + HEADER;
        self.start = from + len;
        Some(&self.buf[from..from + len])
    }

    /// Bytes of an unfinished frame left over at the end of the stream.
    pub fn has_partial(&self) -> bool {
        self.buf.len() > self.start
    }
}
