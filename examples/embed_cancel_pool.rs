//! A host that cancels a script while it runs a worker pool, from another thread.
use conc::{Engine, ErrorKind};
use std::time::{Duration, Instant};

pub fn main() {
    let mut engine = Engine::new();
    let interrupt = engine.interrupt_handle();
    let program = engine
        .compile(
            "forever.conc",
            r#"
            fn spin(i) {
                let n = 0
                while true { n += 1 }
            }
            pool map spin over range(8) with {workers: 4, progress: false}
            "#,
        )
        .unwrap();

    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        interrupt.interrupt();
    });
    let started = Instant::now();
    let err = engine.run(&program).unwrap_err();
    canceller.join().unwrap();
    let took = started.elapsed();
    println!("cancelled after {took:?}: {}", err.message());
    assert_eq!(err.kind(), ErrorKind::Cancelled);
    // Generous bound: the workers stop at their next loop back-edge.
    assert!(took < Duration::from_secs(5), "cancellation took {took:?}");
}
