//! Parse and resolve arbitrary UTF-8 without running it: `Engine::compile` must
//! return Ok or Err, never panic, overflow the stack or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = conc::Engine::new().compile("<fuzz>", text);
    }
});
