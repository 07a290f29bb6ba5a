//! Durability end to end: the daemon is killed with SIGKILL at random moments
//! while thousands of frames stream through a real broker, and the broker
//! itself is restarted mid-stream. Afterwards every published reading is
//! stored exactly once.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use coldchain_tests::*;
use rand::{Rng, SeedableRng};

const FRAMES: u64 = 2500;
const PER_FRAME: u64 = 4;

fn readings_count(d: &Daemon, device: &str) -> u64 {
    d.get("/api/v1/devices")
        .as_array()
        .and_then(|a| a.iter().find(|x| x["id"] == device).cloned())
        .and_then(|x| x["readings"].as_u64())
        .unwrap_or(0)
}

fn assert_exactly_once(d: &Daemon, device: &str, frames: u64, per_frame: u64) {
    let rows = d.all_readings(device);
    let set = reading_ids(&rows);
    let want: BTreeSet<_> = (0..frames)
        .flat_map(|s| (0..per_frame).map(move |i| (1, s, i)))
        .collect();
    let missing: Vec<_> = want.difference(&set).take(10).collect();
    let extra: Vec<_> = set.difference(&want).take(10).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, unexpected {extra:?}"
    );
}

fn sim_command(port: u16, device: &str, frames: u64, interval_ms: u64) -> Command {
    let mut c = Command::new(bin("coldchain-sim"));
    c.args([
        "--broker",
        &format!("127.0.0.1:{port}"),
        "--device",
        device,
        "--key",
        TEST_KEY,
        "--profile",
        "fridge",
        "--frames",
        &frames.to_string(),
        "--readings-per-frame",
        &PER_FRAME.to_string(),
        "--interval-ms",
        &interval_ms.to_string(),
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    c
}

fn kill9_during_stream(seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("broker"));
    let device = format!("crash-{seed}");
    let mut daemon = Daemon::start(
        &dir.path().join("daemon"),
        broker.port,
        &[DeviceCfg::new(&device)],
        "",
    );
    let sim = sim_command(broker.port, &device, FRAMES, 0)
        .spawn()
        .unwrap();

    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut kills = 0;
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(rng.gen_range(150..1200)));
        daemon.kill9();
        kills += 1;
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..300)));
        daemon.restart();
    }
    let out = sim.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "sim: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = FRAMES * PER_FRAME;
    wait_for(
        Duration::from_secs(120),
        "every reading stored after the kills",
        || (readings_count(&daemon, &device) >= expected).then_some(()),
    );
    assert_exactly_once(&daemon, &device, FRAMES, PER_FRAME);
    assert_eq!(kills, 4);
}

#[test]
fn kill9_at_random_moments_seed_1() {
    kill9_during_stream(1);
}

#[test]
fn kill9_at_random_moments_seed_2() {
    kill9_during_stream(2);
}

#[test]
fn kill9_at_random_moments_seed_3() {
    kill9_during_stream(3);
}

/// The broker is stopped and started again in the middle of a stream; the
/// simulator and the daemon both reconnect, and nothing is lost or doubled.
#[test]
fn broker_restart_mid_stream() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::start(&dir.path().join("broker"));
    let device = "restart-1";
    let daemon = Daemon::start(
        &dir.path().join("daemon"),
        broker.port,
        &[DeviceCfg::new(device)],
        "",
    );
    let frames = 600;
    let sim = sim_command(broker.port, device, frames, 5).spawn().unwrap();
    wait_for(
        Duration::from_secs(60),
        "a first part of the stream stored",
        || (readings_count(&daemon, device) >= 200).then_some(()),
    );
    broker.stop();
    std::thread::sleep(Duration::from_millis(700));
    broker.restart();
    let out = sim.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "sim: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(
        Duration::from_secs(120),
        "every reading stored after the broker restart",
        || (readings_count(&daemon, device) >= frames * PER_FRAME).then_some(()),
    );
    assert_exactly_once(&daemon, device, frames, PER_FRAME);
    let logs = daemon.logs();
    assert!(
        logs.contains("broker connection lost"),
        "the daemon never saw the broker go away:\n{logs}"
    );
}
