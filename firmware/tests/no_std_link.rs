//! The firmware stays `no_std`: build `nostd-check/`, a `#![no_std]
//! #![no_main]` binary with its own panic handler that links this crate. Any
//! dependency that pulls in `std` makes that build fail (duplicate `panic_impl`
//! lang item), and so this test. It stands in for a cross build, since only
//! the x86_64 target is installed. See DESIGN.md.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn firmware_links_into_a_no_std_no_main_binary() {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let check = manifest_dir.join("nostd-check/Cargo.toml");
    // Its own target directory: it builds with panic=abort and other link
    // arguments, which must not invalidate the workspace's artefacts.
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d).join("nostd-check"),
        None => manifest_dir.join("../target/nostd-check"),
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--quiet", "--manifest-path"])
        .arg(&check)
        .arg("--target-dir")
        .arg(&target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .expect("running cargo");
    assert!(
        out.status.success(),
        "the no_std link check failed to build: something in coldchain-firmware's \
         dependency tree needs std.\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = target.join("debug/nostd-check");
    assert!(bin.exists(), "no binary at {}", bin.display());
}
