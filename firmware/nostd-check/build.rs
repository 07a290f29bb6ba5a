//! Link the check binary without the C runtime's start files: it has its own
//! `_start`, like a firmware image has its own reset handler.
fn main() {
    println!("cargo:rustc-link-arg-bins=-nostartfiles");
    println!("cargo:rustc-link-arg-bins=-static");
    // memcpy/memset come from the C library here, as from compiler-builtins'
    // `mem` feature on a bare-metal target.
    println!("cargo:rustc-link-arg-bins=-lc");
}
