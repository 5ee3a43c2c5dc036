//! Feed arbitrary UTF-8 to the parser: it must return Ok or Err, never panic,
//! overflow the stack or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = conc::syntax::parse_program(text, 0);
    }
});
