//! A sandboxed engine: pure computation and threads only, until the host grants more.
use conc::{Capabilities, Engine, ErrorKind, Limits, Settings};

pub fn main() {
    let limits = Limits { max_ops: Some(2_000_000), max_call_depth: 200, max_threads: Some(8), ..Limits::default() };
    let mut sandbox = Engine::with_settings(Settings { limits, ..Settings::sandboxed() });

    // Computation and threads are allowed.
    assert_eq!(sandbox.eval("wait [spawn { 1 + 1 }, spawn { 2 * 2 }]").unwrap().repr(), "[2, 4]");

    // Files, the environment and imports of files are denied, each at its span.
    for (src, what) in [
        (r#"read_file("/etc/passwd")"#, "file system access"),
        (r#"env("HOME")"#, "environment access"),
        (r#"import "./local""#, "importing files"),
    ] {
        let err = sandbox.eval(src).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permission, "{src}");
        assert!(err.message().contains(what), "{src}: {}", err.message());
        println!("denied: {}", err.message());
    }

    // Runaway scripts hit limits instead of running forever.
    let err = sandbox.eval("let i = 0\nwhile true { i += 1 }").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Limit);
    let err = sandbox.eval("fn f(n) { f(n + 1) }\nf(0)").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Limit);
    // All twenty tasks wait on the event, so they are alive together: the ninth is refused.
    let err = sandbox.eval("let go = event()\nwait range(20).map(fn(i) { spawn { go.wait(); i } })").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Limit, "{}", err.message());

    // Granting a capability opens it up.
    let mut trusted = Engine::with_settings(Settings {
        capabilities: Capabilities { env: true, ..Capabilities::none() },
        ..Settings::sandboxed()
    });
    trusted.eval(r#"print(type(env("PATH", "")))"#).unwrap();
}
