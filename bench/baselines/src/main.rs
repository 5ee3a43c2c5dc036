//! Raw-Rust baselines for conc's concurrency primitives.
//!
//! `baselines SUBCOMMAND [N]` runs one operation N times and prints one line:
//! `NAME n=N total=SECONDSs per_op=MICROSECONDSus`, which bench/run.py parses.

use std::io::Read;
use std::os::fd::AsFd;
use std::process::{exit, Command};
use std::time::{Duration, Instant};

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, pipe, write, ForkResult};

const USAGE: &str = "usage: baselines <thread-spawn|channel|fork|command|pipe-ints|parallel-fib> [N] (fork N [HEAP_MIB], parallel-fib ITEMS [FIB_N])";

fn report(name: &str, n: u64, dt: Duration, extra: &str) {
    let secs = dt.as_secs_f64();
    println!("{name} n={n} total={secs:.3}s per_op={:.3}us{extra}", secs / n as f64 * 1e6);
}

/// Ends a forked child at once, without atexit handlers, destructors or stdio flushes.
fn child_exit(code: i32) -> ! {
    // SAFETY: `_exit` is async-signal-safe and has no preconditions; it is the
    // only way to leave a forked child without touching state inherited from the
    // parent (atexit handlers, buffered stdio, destructors).
    unsafe { nix::libc::_exit(code) }
}

/// N x (std::thread::spawn + join), one at a time.
fn thread_spawn(n: u64) {
    let t0 = Instant::now();
    for i in 0..n {
        let h = std::thread::spawn(move || std::hint::black_box(i));
        h.join().expect("thread panicked");
    }
    report("thread-spawn", n, t0.elapsed(), "");
}

/// N i64 from a producer thread to the main thread over an unbounded channel.
fn channel(n: u64) {
    let t0 = Instant::now();
    let (tx, rx) = crossbeam_channel::unbounded::<i64>();
    let producer = std::thread::spawn(move || {
        for i in 0..n as i64 {
            tx.send(i).expect("receiver gone");
        }
    });
    let mut sum: i64 = 0;
    for v in rx.iter() {
        sum = sum.wrapping_add(v);
    }
    producer.join().expect("producer panicked");
    let dt = t0.elapsed();
    let n_i = n as i64;
    assert_eq!(sum, n_i * (n_i - 1) / 2);
    let ns = dt.as_secs_f64() / n as f64 * 1e9;
    report("channel", n, dt, &format!(" ({ns:.1}ns/msg)"));
}

/// N x (fork + waitpid); the child exits at once. With `heap_mib` > 0 the parent first
/// fills that much heap, to show how the cost grows with the memory a fork must map
/// (conc forks from its process server, which is larger than this program).
fn fork_wait(n: u64, heap_mib: usize) {
    let heap = vec![1u8; heap_mib << 20];
    std::hint::black_box(&heap);
    let t0 = Instant::now();
    for _ in 0..n {
        // SAFETY: this process is single-threaded here, and the child calls only
        // `_exit`, which is async-signal-safe; it touches no locks, allocator or
        // stdio state inherited from the parent and runs no destructors.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => child_exit(0),
            ForkResult::Parent { child } => match waitpid(child, None).expect("waitpid") {
                WaitStatus::Exited(_, 0) => {}
                other => panic!("child ended badly: {other:?}"),
            },
        }
    }
    let extra = if heap_mib > 0 { format!(" heap={heap_mib}MiB") } else { String::new() };
    report("fork", n, t0.elapsed(), &extra);
}

/// N x Command::new("true").status().
fn command(n: u64) {
    let t0 = Instant::now();
    for _ in 0..n {
        let st = Command::new("true").status().expect("spawn true");
        assert!(st.success());
    }
    report("command", n, t0.elapsed(), "");
}

/// N i64 from a forked child to the parent through an OS pipe, 8 bytes each,
/// written in batches of BATCH values.
fn pipe_ints(n: u64) {
    const BATCH: usize = 1024;
    let t0 = Instant::now();
    let (rd, wr) = pipe().expect("pipe");
    // SAFETY: this process is single-threaded here. The child uses only a stack
    // buffer and the async-signal-safe `write` and `_exit` syscalls: no allocation,
    // no locks, no stdio, no destructors of state inherited from the parent.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            drop(rd);
            let mut buf = [0u8; 8 * BATCH];
            let mut i: u64 = 0;
            while i < n {
                let k = BATCH.min((n - i) as usize);
                for j in 0..k {
                    let v = (i + j as u64) as i64;
                    buf[j * 8..j * 8 + 8].copy_from_slice(&v.to_le_bytes());
                }
                let mut off = 0;
                while off < k * 8 {
                    match write(wr.as_fd(), &buf[off..k * 8]) {
                        Ok(w) => off += w,
                        Err(nix::errno::Errno::EINTR) => {}
                        Err(_) => child_exit(1),
                    }
                }
                i += k as u64;
            }
            child_exit(0)
        }
        ForkResult::Parent { child } => {
            drop(wr);
            let mut file = std::fs::File::from(rd);
            let mut buf = vec![0u8; 8 * BATCH];
            let mut sum: i64 = 0;
            let mut got: u64 = 0;
            while got < n {
                let k = BATCH.min((n - got) as usize);
                file.read_exact(&mut buf[..k * 8]).expect("read from pipe");
                for c in buf[..k * 8].chunks_exact(8) {
                    sum = sum.wrapping_add(i64::from_le_bytes(c.try_into().unwrap()));
                }
                got += k as u64;
            }
            let st = waitpid(child, None).expect("waitpid");
            let dt = t0.elapsed();
            assert!(matches!(st, WaitStatus::Exited(_, 0)), "child: {st:?}");
            let n_i = n as i64;
            assert_eq!(sum, n_i * (n_i - 1) / 2);
            report("pipe-ints", n, dt, "");
        }
    }
}

fn fib(n: u32) -> u64 {
    if n < 2 {
        n as u64
    } else {
        fib(n - 1) + fib(n - 2)
    }
}

/// ITEMS x fib(N) one after the other, then on 2 threads taking items from a shared
/// counter; best of 3 rounds each. The speedup this machine gives right now, to read the
/// conc speedup rows against (other work on a 2-core machine takes it away from both).
fn parallel_fib(items: u64, n: u32) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let (mut best_serial, mut best_parallel) = (f64::MAX, f64::MAX);
    for _ in 0..3 {
        let t0 = Instant::now();
        let serial: u64 = (0..items).map(|_| fib(std::hint::black_box(n))).sum();
        best_serial = best_serial.min(t0.elapsed().as_secs_f64());
        let t1 = Instant::now();
        let next = AtomicU64::new(0);
        let parallel: u64 = std::thread::scope(|s| {
            let worker = || {
                let mut sum = 0;
                while next.fetch_add(1, Ordering::Relaxed) < items {
                    sum += fib(std::hint::black_box(n));
                }
                sum
            };
            let a = s.spawn(worker);
            let b = s.spawn(worker);
            a.join().expect("worker panicked") + b.join().expect("worker panicked")
        });
        best_parallel = best_parallel.min(t1.elapsed().as_secs_f64());
        assert_eq!(serial, parallel);
    }
    println!(
        "parallel-fib items={items} n={n} serial={best_serial:.4}s parallel={best_parallel:.4}s speedup={:.2}x",
        best_serial / best_parallel
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        eprintln!("{USAGE}");
        exit(2);
    };
    let n = |default: u64| -> u64 {
        match args.get(1) {
            None => default,
            Some(s) => s.parse().unwrap_or_else(|_| {
                eprintln!("N must be a positive integer, got {s:?}");
                exit(2)
            }),
        }
    };
    let heap_mib = || -> usize {
        match args.get(2) {
            None => 0,
            Some(s) => s.parse().unwrap_or_else(|_| {
                eprintln!("MiB must be a non-negative integer, got {s:?}");
                exit(2)
            }),
        }
    };
    match cmd.as_str() {
        "thread-spawn" => thread_spawn(n(10_000)),
        "channel" => channel(n(1_000_000)),
        "fork" => fork_wait(n(1_000), heap_mib()),
        "command" => command(n(1_000)),
        "pipe-ints" => pipe_ints(n(100_000)),
        "parallel-fib" => {
            let fib_n = match args.get(2).map(|s| s.parse::<u32>()) {
                None => 30,
                Some(Ok(k)) if k <= 45 => k,
                Some(_) => {
                    eprintln!("fib N must be an integer up to 45");
                    exit(2)
                }
            };
            parallel_fib(n(8), fib_n)
        }
        _ => {
            eprintln!("{USAGE}");
            exit(2);
        }
    }
}
