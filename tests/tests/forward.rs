//! Forwarding to the centre: two real Mosquitto instances. The upstream one
//! is stopped for a while in the middle of a stream and started again;
//! afterwards the centre has every (device, boot, seq) — possibly more than
//! once on the wire, exactly once after deduplication by that key — and the
//! device's original signed bytes, which still verify.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coldchain_proto::codec::decode_signed;
use coldchain_proto::{DeviceKey, Frame};
use coldchain_tests::*;

#[test]
fn upstream_outage_mid_stream_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let local = Mosquitto::start(&dir.path().join("local"));
    let mut centre = Mosquitto::start(&dir.path().join("centre"));
    let opts = DaemonOpts {
        extra: format!(
            "[upstream]\nhost = \"127.0.0.1\"\nport = {}\nprefix = \"central/edge-1\"\n",
            centre.port
        ),
        ..DaemonOpts::default()
    };
    let daemon = Daemon::start_with(
        &dir.path().join("daemon"),
        local.port,
        &[DeviceCfg::new("fw-1")],
        &opts,
    );

    // The centre's consumer: a persistent session (same client id, QoS 1), so
    // it misses nothing while its own broker restarts. Lines are collected by
    // a reader thread per connection.
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let witness = |port: u16| {
        let (child, out) = mosquitto_sub(
            port,
            &[
                "-t",
                "central/edge-1/dev/+/up",
                "-q",
                "1",
                "-c",
                "-i",
                "centre-witness",
                "-F",
                "%x",
            ],
        )
        .unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                sink.lock().unwrap().push(l);
            }
        });
        child
    };
    let mut w = witness(centre.port);
    std::thread::sleep(Duration::from_millis(300));

    let frames = 400u64;
    let mut sim = std::process::Command::new(bin("coldchain-sim"))
        .args([
            "--broker",
            &format!("127.0.0.1:{}", local.port),
            "--device",
            "fw-1",
            "--key",
            TEST_KEY,
            "--profile",
            "fridge",
            "--frames",
            &frames.to_string(),
            "--readings-per-frame",
            "4",
            "--interval-ms",
            "10",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(60), "part of the stream stored", || {
        (daemon.stat("frames_stored") >= 100).then_some(())
    });
    // The centre goes away for a while; the edge keeps storing.
    centre.stop();
    let _ = w.kill();
    let _ = w.wait();
    std::thread::sleep(Duration::from_secs(2));
    centre.restart();
    let mut w = witness(centre.port);
    assert!(sim.wait().unwrap().success());
    wait_for(
        Duration::from_secs(60),
        "every frame stored at the edge",
        || (daemon.stat("frames_stored") >= frames).then_some(()),
    );

    // Dedupe what the centre received by (boot, seq); every payload must
    // still verify with the device's key.
    let key = DeviceKey::from_hex(TEST_KEY).unwrap();
    let seen = wait_for(
        Duration::from_secs(90),
        "the centre to have every frame",
        || {
            let mut seen: BTreeMap<(u32, u32), u32> = BTreeMap::new();
            for line in lines.lock().unwrap().iter() {
                let bytes = hex::decode(line.trim()).expect("hex payload");
                let f: Frame = decode_signed(&bytes, &key)
                    .expect("forwarded bytes still verify with the device key");
                *seen.entry((f.boot, f.seq)).or_default() += 1;
            }
            (seen.len() >= frames as usize).then_some(seen)
        },
    );
    let _ = w.kill();
    let _ = w.wait();
    let missing: Vec<u32> = (0..frames as u32)
        .filter(|s| !seen.contains_key(&(1, *s)))
        .take(10)
        .collect();
    assert!(
        missing.is_empty(),
        "the centre never received seq {missing:?}"
    );
    assert_eq!(
        seen.len(),
        frames as usize,
        "exactly the published frames, after dedupe"
    );
    let logs = daemon.logs();
    assert!(
        logs.contains("forwarding: connection lost"),
        "the outage was not noticed:\n{logs}"
    );
}
