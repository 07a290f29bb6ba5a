//! The simulator keeps its devices' flash (boot counter, frame queue) in a
//! state directory, so a second run of the demo goes on as real loggers
//! would after a restart: the next boot, no sequence number reused, no
//! tamper alarm. Issue 10, case 2 (running `deploy/demo.sh` twice).

use std::process::{Command, Stdio};
use std::time::Duration;

use coldchain_tests::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

/// Runs the simulator to completion; one summary line per container.
fn run(port: u16, state: &std::path::Path) -> Vec<Value> {
    let out = Command::new(bin("coldchain-sim"))
        .args(["--broker", &format!("127.0.0.1:{port}")])
        .args(["--device", "demo", "--containers", "2", "--key", TEST_KEY])
        .args(["--frames", "3", "--interval-ms", "0"])
        .arg("--state-dir")
        .arg(state)
        .stdin(Stdio::null())
        .output()
        .expect("run coldchain-sim");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "coldchain-sim: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    v.sort_by_key(|s| s["device"].as_str().unwrap_or("").to_string());
    v
}

#[test]
fn a_second_run_with_a_state_dir_goes_on_at_the_next_boot() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("broker"));
    let daemon = Daemon::start(
        &dir.path().join("daemon"),
        broker.port,
        &[DeviceCfg::new("demo-1"), DeviceCfg::new("demo-2")],
        "",
    );
    let state = dir.path().join("demo-state");

    let first = run(broker.port, &state);
    assert_eq!(first.len(), 2, "{first:?}");
    for s in &first {
        assert_eq!(s["boot"], 1, "a blank flash boots as 1: {s}");
    }
    for d in ["demo-1", "demo-2"] {
        assert!(
            state.join(format!("{d}.flash")).exists(),
            "no flash file for {d}"
        );
    }
    wait_for(T, "the first run's frames stored", || {
        (daemon.stat("frames_stored") == 6).then_some(())
    });

    let second = run(broker.port, &state);
    for (a, b) in first.iter().zip(&second) {
        assert_eq!(a["device"], b["device"]);
        assert_eq!(
            b["boot"].as_u64(),
            a["boot"].as_u64().map(|x| x + 1),
            "the boot counter went on: {a} then {b}"
        );
    }
    wait_for(T, "the second run's frames stored", || {
        (daemon.stat("frames_stored") == 12).then_some(())
    });
    assert_eq!(daemon.stat("rejected.sequence_reuse"), 0);
    assert_eq!(daemon.stat("rejected.bad_tag"), 0);
    for d in ["demo-1", "demo-2"] {
        let ids = reading_ids(&daemon.all_readings(d));
        let boots: std::collections::BTreeSet<u64> = ids.iter().map(|i| i.0).collect();
        assert_eq!(boots, [1, 2].into(), "{d}: {ids:?}");
    }
}
