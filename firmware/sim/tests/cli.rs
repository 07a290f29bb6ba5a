//! The simulator's command line refuses bad input with a message a person can
//! act on, before touching the network. (Also: this integration test makes
//! `cargo test --workspace` build the `coldchain-sim` binary, which the
//! end-to-end tests in tests/ run.)

use std::process::Command;

fn sim(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_coldchain-sim"))
        .args(args)
        .output()
        .expect("run coldchain-sim")
}

#[test]
fn a_bad_key_is_refused_with_the_reason() {
    let o = sim(&[
        "--broker",
        "127.0.0.1:1",
        "--device",
        "d1",
        "--key",
        "abcd",
        "--frames",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--key") && err.contains("64 hexadecimal"),
        "{err}"
    );
}

#[test]
fn an_unreachable_broker_is_an_error_not_a_hang() {
    let key = "00".repeat(32);
    let o = sim(&[
        "--broker",
        "127.0.0.1:1",
        "--device",
        "d1",
        "--key",
        &key,
        "--frames",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("127.0.0.1:1"), "{err}");
}

#[test]
fn a_bad_broker_address_is_refused() {
    let key = "00".repeat(32);
    let o = sim(&["--broker", "localhost", "--device", "d1", "--key", &key]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("host:port"));
}
