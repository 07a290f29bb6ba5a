//! MQTT ingest end to end: real Mosquitto, the real daemon binary, frames
//! published by the simulator or by `mosquitto_pub` (a client we did not write).

use std::collections::BTreeSet;
use std::time::Duration;

use coldchain_proto::codec::{MAX_SIGNED_LEN, encode_signed};
use coldchain_proto::{
    Body, ChannelKind, DeviceId, DeviceKey, Frame, Measurement, Reading, Timestamp,
};
use coldchain_tests::*;

const T: Duration = Duration::from_secs(60);

fn key() -> DeviceKey {
    DeviceKey::from_hex(TEST_KEY).unwrap()
}

fn frame(dev: &str, boot: u32, seq: u32, time: Timestamp, milli: i32) -> Frame {
    let r = Reading {
        channel: 0,
        kind: ChannelKind::Rtd,
        dt_ms: 0,
        value: Measurement::Valid(milli),
    };
    Frame {
        device: DeviceId::new(dev).unwrap(),
        boot,
        seq,
        time,
        body: Body::Readings(heapless::Vec::from_slice(&[r]).unwrap()),
    }
}

fn signed(f: &Frame, k: &DeviceKey) -> Vec<u8> {
    let mut buf = [0u8; MAX_SIGNED_LEN];
    encode_signed(f, k, &mut buf).unwrap().to_vec()
}

/// The thin path of issue 2: simulator -> real broker -> daemon -> sled, every
/// reading stored exactly once, and the broker really carried every frame.
#[test]
fn simulator_frames_reach_sled_through_the_broker_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("broker"));
    let daemon = Daemon::start(
        &dir.path().join("daemon"),
        broker.port,
        &[DeviceCfg::new("sim-0001")],
        "",
    );
    // An independent witness on the broker: mosquitto_sub counts the frames it relays.
    let (mut witness, mut out) = mosquitto_sub(
        broker.port,
        &["-t", "coldchain/v1/dev/sim-0001/up", "-C", "50", "-F", "%t"],
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // The daemon's retained sync is on the broker before the simulator starts.
    retained_sync_present(broker.port, "sim-0001");

    let port = broker.port.to_string();
    let summary = run_sim(&[
        "--broker",
        &format!("127.0.0.1:{port}"),
        "--device",
        "sim-0001",
        "--key",
        TEST_KEY,
        "--profile",
        "cryo-ln2",
        "--frames",
        "50",
        "--readings-per-frame",
        "4",
        "--interval-ms",
        "0",
    ]);
    assert_eq!(summary["frames"], 50);
    let total = summary["readings"].as_u64().unwrap();
    assert_eq!(total, 200);

    wait_for(T, "all readings stored", || {
        (daemon.stat("readings_stored") >= total).then_some(())
    });
    let rows = daemon.all_readings("sim-0001");
    assert_eq!(rows.len() as u64, total, "stored readings: {rows:?}");
    let ids = reading_ids(&rows);
    let boot = rows[0]["boot"].as_u64().unwrap();
    let want: BTreeSet<_> = (0..50)
        .flat_map(|s| (0..4).map(move |i| (boot, s, i)))
        .collect();
    assert_eq!(ids, want);
    // The simulator applied the retained sync at its first connect, before
    // its first sample: every reading carries the device's own wall clock.
    for r in &rows {
        assert_eq!(r["time_source"], "device", "{r}");
    }
    // The cryogenic probe reads cryogenic temperatures, with a time that is not 1970.
    let rtd: Vec<_> = rows.iter().filter(|r| r["kind"] == "rtd").collect();
    assert!(!rtd.is_empty());
    for r in &rtd {
        let v = r["value"]["valid"].as_i64().expect("valid rtd value");
        assert!(v < -100_000, "LN2 shipper probe at {v} m°C");
        assert!(r["time_ms"].as_i64().unwrap() > 1_577_836_800_000);
    }
    assert_eq!(daemon.stat("duplicates"), 0);
    assert_eq!(daemon.stat("rejected.bad_tag"), 0);

    let mut relayed = 0;
    while read_until(&mut out, |l| l == "coldchain/v1/dev/sim-0001/up").is_some() {
        relayed += 1;
    }
    let _ = witness.wait();
    assert_eq!(relayed, 50, "the broker relayed every frame");
    // The firmware said "online" when it connected and "offline" when it
    // left: the daemon saw both (it shows the last).
    wait_for(T, "the daemon to see sim-0001 go offline", || {
        let d = daemon.get("/api/v1/devices");
        let x = d
            .as_array()?
            .iter()
            .find(|x| x["id"] == "sim-0001")?
            .clone();
        (x["online"] == false).then_some(())
    });
    assert!(
        daemon.logs().contains("device connected to the broker"),
        "the daemon never saw sim-0001 online"
    );
}

/// Waits until the broker holds the daemon's retained sync for `device`.
fn retained_sync_present(port: u16, device: &str) {
    let topic = format!("coldchain/v1/dev/{device}/down");
    wait_for(T, "the daemon's retained sync on the broker", || {
        let out = std::process::Command::new(which("mosquitto_sub")?)
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", &topic])
            .args(["--retained-only", "-C", "1", "-W", "1", "-F", "%t"])
            .output()
            .ok()?;
        (String::from_utf8_lossy(&out.stdout).trim() == topic).then_some(())
    });
}

/// The broker goes away in the middle of a stream and comes back (stopped
/// with SIGTERM, restarted on its persistence): the simulator's flash queue
/// keeps what the broker did not acknowledge, the firmware's uplink
/// reconnects and republishes it, and every frame reaches the daemon exactly
/// once.
#[test]
fn broker_outage_mid_stream_every_frame_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::start(&dir.path().join("broker"));
    let daemon = Daemon::start(
        &dir.path().join("daemon"),
        broker.port,
        &[DeviceCfg::new("out-1")],
        "",
    );
    let frames: u64 = 300;
    let sim = std::process::Command::new(bin("coldchain-sim"))
        .args(["--broker", &format!("127.0.0.1:{}", broker.port)])
        .args([
            "--device",
            "out-1",
            "--key",
            TEST_KEY,
            "--profile",
            "fridge",
        ])
        .args(["--frames", &frames.to_string(), "--readings-per-frame", "4"])
        .args(["--interval-ms", "10"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(T, "part of the stream stored", || {
        (daemon.stat("frames_stored") >= 30).then_some(())
    });
    broker.stop();
    let before = daemon.stat("frames_stored");
    assert!(before < frames, "the stream ended before the outage");
    // The logger keeps sampling into its flash while the broker is away.
    std::thread::sleep(Duration::from_millis(1500));
    broker.restart();

    let out = sim.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "sim failed: {stderr}");
    assert!(
        stderr.contains("broker connection lost"),
        "the simulator did not see the outage:\n{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap();
    assert_eq!(summary["frames"], frames, "{summary}");
    assert_eq!(summary["readings"], frames * 4, "{summary}");
    assert_eq!(summary["dropped"], 0, "{summary}");
    assert_eq!(summary["queued"], 0, "{summary}");

    wait_for(T, "every reading stored", || {
        (daemon.all_readings("out-1").len() as u64 >= frames * 4).then_some(())
    });
    let rows = daemon.all_readings("out-1");
    let set = reading_ids(&rows);
    let want: BTreeSet<_> = (0..frames)
        .flat_map(|s| (0..4).map(move |i| (1, s, i)))
        .collect();
    assert_eq!(set, want);
}

/// Frames published by mosquitto_pub: the README's signed JSON example, a
/// tampered copy, an unsigned one, an unknown device, a duplicate, a gap, a
/// device publishing on another device's topic, and garbage.
#[test]
fn verification_rules_hold_for_frames_from_a_foreign_client() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("broker"));
    let mut third_party = DeviceCfg::new("probe-x9");
    third_party.allow_unsigned_json = false;
    let mut unsigned_ok = DeviceCfg::new("legacy-1");
    unsigned_ok.allow_unsigned_json = true;
    let daemon = Daemon::start(
        &dir.path().join("daemon"),
        broker.port,
        &[
            third_party,
            unsigned_ok,
            DeviceCfg::new("dev-a"),
            DeviceCfg::new("dev-b"),
        ],
        "",
    );
    let p = broker.port;
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../proto/README.md"))
            .unwrap();
    let example = readme
        .lines()
        .find(|l| l.starts_with("{\"frame\":"))
        .unwrap();

    // Signed JSON from the README: stored.
    mosquitto_pub(p, "coldchain/v1/dev/probe-x9/up/json", example.as_bytes()).unwrap();
    // The same message again: a duplicate, dropped.
    mosquitto_pub(p, "coldchain/v1/dev/probe-x9/up/json", example.as_bytes()).unwrap();
    // One digit changed: bad tag.
    let tampered = example.replace("\"seq\":7", "\"seq\":8");
    mosquitto_pub(p, "coldchain/v1/dev/probe-x9/up/json", tampered.as_bytes()).unwrap();
    // Unsigned from a device that must sign: refused.
    let unsigned = example.split(",\"tag\"").next().unwrap().to_string() + "}";
    mosquitto_pub(
        p,
        "coldchain/v1/dev/probe-x9/up/json",
        unsigned.replace("\"seq\":7", "\"seq\":9").as_bytes(),
    )
    .unwrap();
    // Unsigned from a device allowed to: stored.
    mosquitto_pub(
        p,
        "coldchain/v1/dev/legacy-1/up/json",
        unsigned.replace("probe-x9", "legacy-1").as_bytes(),
    )
    .unwrap();
    // Unknown device.
    let stranger = frame("stranger", 1, 0, Timestamp::Wall(1_763_769_600_000), 4000);
    mosquitto_pub(
        p,
        "coldchain/v1/dev/stranger/up",
        &signed(&stranger, &key()),
    )
    .unwrap();
    // dev-a publishes a frame claiming to be dev-b on its own topic, and dev-b's frame on dev-a's topic.
    let as_b = frame("dev-b", 1, 0, Timestamp::Wall(1_763_769_600_000), 4000);
    mosquitto_pub(p, "coldchain/v1/dev/dev-a/up", &signed(&as_b, &key())).unwrap();
    // dev-a: seq 0, 1, then 5 (gap 2..=4), then 3 arrives late (splits the gap).
    for seq in [0, 1, 5, 3] {
        let f = frame(
            "dev-a",
            2,
            seq,
            Timestamp::Uptime(10_000 + 1000 * u64::from(seq)),
            5000,
        );
        mosquitto_pub(p, "coldchain/v1/dev/dev-a/up", &signed(&f, &key())).unwrap();
    }
    // Garbage on a valid topic.
    mosquitto_pub(p, "coldchain/v1/dev/dev-a/up", b"not a frame at all").unwrap();

    wait_for(T, "all 12 messages acknowledged", || {
        (daemon.stat("acked") >= 12).then_some(())
    });

    let x9 = daemon.all_readings("probe-x9");
    assert_eq!(x9.len(), 1);
    assert_eq!(x9[0]["value"]["valid"], 5125);
    assert_eq!(x9[0]["seq"], 7);
    assert_eq!(x9[0]["time_source"], "device");
    assert_eq!(daemon.all_readings("legacy-1").len(), 1);
    assert_eq!(daemon.stat("duplicates"), 1);
    assert_eq!(daemon.stat("rejected.bad_tag"), 1);
    assert_eq!(daemon.stat("rejected.unsigned"), 1);
    assert_eq!(daemon.stat("rejected.unknown_device"), 1);
    assert_eq!(daemon.stat("rejected.device_mismatch"), 1);
    assert_eq!(daemon.stat("rejected.malformed"), 1);
    assert!(
        daemon.all_readings("dev-b").is_empty(),
        "impersonated frame was stored"
    );
    assert!(daemon.all_readings("stranger").is_empty());

    let a = daemon.all_readings("dev-a");
    let seqs: Vec<u64> = a.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, vec![0, 1, 3, 5]);
    // Uptime stamps become estimated wall times, never 1970, marked as
    // placed from uptime, and keep the device's own spacing (1 s per seq
    // here), however fast they arrived.
    for r in &a {
        assert_eq!(r["time_source"], "uptime");
        assert!(r["time_ms"].as_i64().unwrap() > 1_577_836_800_000);
    }
    let t = |i: usize| a[i]["time_ms"].as_i64().unwrap();
    assert_eq!(
        (t(1) - t(0), t(2) - t(0), t(3) - t(0)),
        (1000, 3000, 5000),
        "uptime differences kept: {a:?}"
    );
    let gaps = daemon.get("/api/v1/devices/dev-a/gaps");
    assert_eq!(
        gaps,
        serde_json::json!([{"boot": 2, "first": 2, "last": 2}, {"boot": 2, "first": 4, "last": 4}])
    );
}

/// Graceful shutdown: SIGTERM exits 0, and everything acknowledged is there after a restart.
#[test]
fn sigterm_exits_cleanly_and_data_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("broker"));
    let mut daemon = Daemon::start(
        &dir.path().join("daemon"),
        broker.port,
        &[DeviceCfg::new("dev-a")],
        "",
    );
    for seq in 0..20 {
        let f = frame(
            "dev-a",
            1,
            seq,
            Timestamp::Wall(1_763_769_600_000 + u64::from(seq) * 60_000),
            -150_000,
        );
        mosquitto_pub(
            broker.port,
            "coldchain/v1/dev/dev-a/up",
            &signed(&f, &key()),
        )
        .unwrap();
    }
    wait_for(T, "20 frames acknowledged", || {
        (daemon.stat("acked") >= 20).then_some(())
    });
    let st = daemon.stop();
    assert!(
        st.success(),
        "SIGTERM exit status {st}; logs:\n{}",
        daemon.logs()
    );
    daemon.restart();
    assert_eq!(daemon.all_readings("dev-a").len(), 20);
    // The broker does not redeliver acknowledged messages: nothing new, no duplicates.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(daemon.stat("duplicates"), 0);
}

/// A device's retained online topic: the daemon shows it connected, and when
/// the device vanishes without a goodbye the broker's last will turns it
/// offline. The "device" is a real `mosquitto_sub` carrying the same will the
/// firmware sets, killed with SIGKILL.
#[test]
fn a_device_last_will_shows_it_offline() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("broker"));
    let daemon = Daemon::start(
        &dir.path().join("daemon"),
        broker.port,
        &[DeviceCfg::new("van-3")],
        "",
    );
    let online_topic = "coldchain/v1/dev/van-3/online";
    let presence = |d: &Daemon| {
        let devs = d.get("/api/v1/devices");
        devs.as_array()
            .and_then(|a| a.iter().find(|x| x["id"] == "van-3").cloned())
            .map(|x| x["online"].clone())
            .unwrap_or(serde_json::Value::Null)
    };
    assert!(
        presence(&daemon).is_null(),
        "no status before the device says"
    );
    let (mut dev, _out) = mosquitto_sub(
        broker.port,
        &[
            "-i",
            "van-3",
            "-t",
            "coldchain/v1/dev/van-3/down",
            "--will-topic",
            online_topic,
            "--will-payload",
            "offline",
            "--will-retain",
            "--will-qos",
            "1",
        ],
    )
    .unwrap();
    let out = mosquitto_pub_with(broker.port, &["-r"], online_topic, b"online").unwrap();
    assert!(out.status.success(), "{out:?}");
    wait_for(T, "the daemon to show van-3 online", || {
        (presence(&daemon) == serde_json::Value::Bool(true)).then_some(())
    });
    dev.kill().unwrap();
    let _ = dev.wait();
    wait_for(T, "the last will to show van-3 offline", || {
        (presence(&daemon) == serde_json::Value::Bool(false)).then_some(())
    });
    let m = daemon.get("/metrics");
    assert!(
        m.as_str()
            .unwrap_or("")
            .lines()
            .any(|l| l == "coldchain_device_online{device=\"van-3\"} 0"),
        "{m}"
    );
    assert!(daemon.logs().contains("device offline"));
}

/// With `--events` the simulator sends status heartbeats (the firmware's
/// `Recorder::status`) every `status_interval_s` of the daemon's settings
/// (300 s), in device time: at `--speed 600` one every 0.5 s. The daemon
/// stores them as Status events: the shipment report shows the battery.
#[test]
fn simulator_status_heartbeats_reach_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("broker"));
    let opts = DaemonOpts {
        http: format!("token = \"{TEST_TOKEN}\""),
        ..DaemonOpts::default()
    };
    let daemon = Daemon::start_with(
        &dir.path().join("daemon"),
        broker.port,
        &[DeviceCfg::new("hb-1")],
        &opts,
    );
    let (st, v) = http_post(
        daemon.http_port,
        "/api/v1/shipments",
        Some(TEST_TOKEN),
        &serde_json::json!({
            "by": "test", "id": "HB", "product": "cells", "profile": "cryo-ln2",
            "watch": [{"device": "hb-1", "channel": 0}], "origin": "A", "destination": "B",
            "departure_ms": now_ms() - 60_000,
        }),
    );
    assert!((200..300).contains(&st), "{st}: {v}");
    let health = || {
        daemon.get("/api/v1/shipments/HB/report?format=json")["data"]["data_health"]["devices"][0]
            .clone()
    };
    assert!(
        health()["battery_last_mv"].is_null(),
        "a battery before any status: {}",
        health()
    );
    let summary = run_sim(&[
        "--broker",
        &format!("127.0.0.1:{}", broker.port),
        "--device",
        "hb-1",
        "--key",
        TEST_KEY,
        "--events",
        "--speed",
        "600",
        "--frames",
        "10",
        "--interval-ms",
        "200",
    ]);
    assert_eq!(summary["frames"], 10, "{summary}");
    let h = wait_for(T, "the 40 readings and a battery in the report", || {
        let h = health();
        (daemon.all_readings("hb-1").len() >= 40 && !h["battery_last_mv"].is_null()).then_some(h)
    });
    let last = h["battery_last_mv"].as_u64().unwrap();
    let min = h["battery_min_mv"].as_u64().unwrap();
    // A new cell, 0.5 mV less per model hour: well above 3 000 mV after the
    // few model hours of this run, and falling (the last is the lowest).
    assert!((3_590..=3_600).contains(&last), "{h}");
    assert_eq!(min, last, "{h}");
    assert_eq!(h["battery_low_events"], 0, "{h}");
}
