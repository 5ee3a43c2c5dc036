//! Link the `conc` binary with its segments on 2 MiB boundaries, so that its process server
//! can back its code with whole huge pages (see `src/runtime/code_pages.rs`). That makes each
//! `fork` cheaper: a child inherits the code mapped instead of faulting it in page by page.
//! The file grows by the padding (about 2 MiB, mostly holes on disk); nothing else changes.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let elf64 = std::env::var("CARGO_CFG_TARGET_POINTER_WIDTH").is_ok_and(|w| w == "64");
    if linux && elf64 {
        // Both GNU ld and lld take these: separate-code starts the code segment on a
        // max-page-size boundary, in the file and in memory.
        println!("cargo:rustc-link-arg-bins=-Wl,-z,max-page-size=0x200000");
        println!("cargo:rustc-link-arg-bins=-Wl,-z,separate-code");
    }
}
