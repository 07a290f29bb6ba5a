//! Re-provisioning a device (issue 10, case 2), end to end through a real
//! broker and daemon: a logger whose flash was wiped starts again at boot 1,
//! seq 0 with new content. Before anyone re-enrolls it that is a sequence
//! anomaly (refused, tamper alarm); after `coldchain device reenroll` its new
//! frames are stored beside the old ones without a tamper alarm, while a
//! replay of an old frame or a forgery is still refused and still raises it.

use std::process::{Command, Output};
use std::time::Duration;

use coldchain_tests::*;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);
const MIN: i64 = 60_000;
const TOPIC: &str = "coldchain/v1/dev/wiped-1/up/json";
const TOPIC_2: &str = "coldchain/v1/dev/wiped-2/up/json";

fn start(dir: &std::path::Path, devices: &[&str]) -> (Mosquitto, Daemon) {
    let broker = Mosquitto::start(&dir.join("broker"));
    let devs: Vec<DeviceCfg> = devices.iter().map(|d| DeviceCfg::new(d)).collect();
    let opts = DaemonOpts {
        http: format!("token = \"{TEST_TOKEN}\""),
        extra: "[alerts]\nescalate_after_s = 3600\n".into(),
        ..DaemonOpts::default()
    };
    let daemon = Daemon::start_with(&dir.join("daemon"), broker.port, &devs, &opts);
    (broker, daemon)
}

fn create(d: &Daemon, id: &str, device: &str, departure_ms: i64) {
    let body = json!({
        "by": "dispatcher anna", "id": id, "product": "test product", "profile": "fridge",
        "watch": [{"device": device, "channel": 0}], "origin": "Site A", "destination": "Lab B",
        "departure_ms": departure_ms,
    });
    let (status, v) = http_post(d.http_port, "/api/v1/shipments", Some(TEST_TOKEN), &body);
    assert!((200..300).contains(&status), "create {id} -> {status}: {v}");
}

fn alert_kinds(d: &Daemon, shipment: &str) -> Vec<String> {
    d.get(&format!("/api/v1/alerts?shipment={shipment}"))
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(alert_kind)
        .collect()
}

/// Waits until the shipment's status shows the reading taken at `t_ms`: the
/// evaluator has run over the data up to it (alerts included).
fn evaluated_up_to(d: &Daemon, shipment: &str, t_ms: i64) {
    wait_for(T, &format!("{shipment} evaluated up to {t_ms}"), || {
        let v = d.get(&format!("/api/v1/shipments/{shipment}"));
        (v["status"]["last"]["t_ms"].as_i64() == Some(t_ms)).then_some(())
    });
}

fn cli(d: &Daemon, args: &[&str]) -> Output {
    Command::new(bin("coldchain"))
        .args(args)
        .args([
            "--api",
            &format!("http://127.0.0.1:{}", d.http_port),
            "--token",
            TEST_TOKEN,
        ])
        .output()
        .expect("run coldchain")
}

/// Two-reading frames of `wiped-1`'s channel 0 at `t` and `t + 1 min`, value `v` m°C.
fn frame(key: &str, boot: u32, seq: u32, t: i64, v: i32) -> String {
    frame_of("wiped-1", key, boot, seq, t, v)
}

fn frame_of(device: &str, key: &str, boot: u32, seq: u32, t: i64, v: i32) -> String {
    json_frame_with_key(
        key,
        device,
        boot,
        seq,
        &[(t, Some(v)), (t + MIN, Some(v + 10))],
    )
}

fn values(rows: &[Value]) -> Vec<i64> {
    rows.iter()
        .map(|r| r["value"]["valid"].as_i64().expect("a valid reading"))
        .collect()
}

/// Two loggers, both wiped after a first life (boot 1, seq 0..3). `wiped-2`
/// sends again before anyone re-enrolls it: a sequence anomaly, as always.
/// `wiped-1` is re-enrolled first: its new life (boot 1 from seq 0 again) is
/// stored beside the old one, and its shipment, which spans both lives, gets
/// no tamper alarm; a replay of an old frame and a forgery then raise it.
#[test]
fn a_wiped_device_is_reenrolled_and_its_new_boots_stored_beside_the_old() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, daemon) = start(dir.path(), &["wiped-1", "wiped-2"]);
    let t0 = now_ms() - 60 * MIN;
    create(&daemon, "S-1", "wiped-1", t0);
    create(&daemon, "S-2", "wiped-2", t0);

    // Their lives before the wipe: boot 1, seq 0..3.
    let old: Vec<String> = (0..4)
        .map(|s| frame(TEST_KEY, 1, s, t0 + i64::from(s) * 2 * MIN, 5_000))
        .collect();
    let old2: Vec<String> = (0..4)
        .map(|s| {
            frame_of(
                "wiped-2",
                TEST_KEY,
                1,
                s,
                t0 + i64::from(s) * 2 * MIN,
                5_000,
            )
        })
        .collect();
    mosquitto_pub_lines(broker.port, TOPIC, &old).unwrap();
    mosquitto_pub_lines(broker.port, TOPIC_2, &old2).unwrap();
    wait_for(T, "8 frames stored", || {
        (daemon.stat("frames_stored") == 8).then_some(())
    });
    let before = daemon.all_readings("wiped-1");
    assert_eq!(values(&before), [5_000, 5_010].repeat(4));

    // wiped-2, not re-enrolled, sends boot 1, seq 0 again with new content:
    // a sequence anomaly, and nothing overwritten.
    let t1 = t0 + 20 * MIN;
    let before2 = daemon.all_readings("wiped-2");
    mosquitto_pub_lines(
        broker.port,
        TOPIC_2,
        &[frame_of("wiped-2", TEST_KEY, 1, 0, t1, 6_000)],
    )
    .unwrap();
    wait_for(T, "the wiped device's frame refused", || {
        (daemon.stat("rejected.sequence_reuse") == 1).then_some(())
    });
    assert_eq!(daemon.all_readings("wiped-2"), before2);
    wait_for(T, "the tamper alarm on S-2", || {
        alert_kinds(&daemon, "S-2")
            .contains(&"tamper".to_string())
            .then_some(())
    });

    // A person re-enrolls wiped-1, saying why.
    let o = cli(
        &daemon,
        &[
            "device",
            "reenroll",
            "wiped-1",
            "--reason",
            "flash wiped at the depot",
            "--by",
            "tech tom",
        ],
    );
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(said.contains("re-enrolled (enrollment 1"), "{said}");
    let audit = daemon.get("/api/v1/audit?limit=1000");
    let entry = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "device.reenroll")
        .unwrap_or_else(|| panic!("no device.reenroll in the audit trail: {audit}"))
        .clone();
    // The authenticated identity (here the legacy shared token), not the
    // name typed with --by.
    assert_eq!(entry["who"], "legacy-token", "{entry}");
    assert_eq!(entry["user"]["id"], "legacy-token", "{entry}");
    assert_eq!(entry["subject"], "wiped-1", "{entry}");
    assert!(
        entry.to_string().contains("flash wiped at the depot"),
        "{entry}"
    );
    let devs = daemon.get("/api/v1/devices");
    let dev = devs
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == "wiped-1")
        .unwrap()
        .clone();
    assert_eq!(dev["enrollment"], 1, "{dev}");

    // Its new life: boot 1 from seq 0, new content.
    let t2 = now_ms() - 10 * MIN;
    let new: Vec<String> = (0..3)
        .map(|s| frame(TEST_KEY, 1, s, t2 + i64::from(s) * 2 * MIN, 4_000))
        .collect();
    mosquitto_pub_lines(broker.port, TOPIC, &new).unwrap();
    wait_for(T, "the new frames stored", || {
        (daemon.stat("frames_stored") == 11).then_some(())
    });
    evaluated_up_to(&daemon, "S-1", t2 + 5 * MIN);
    assert_eq!(daemon.stat("rejected.sequence_reuse"), 1);
    assert!(
        !alert_kinds(&daemon, "S-1").contains(&"tamper".to_string()),
        "a tamper alarm after the re-enrollment: {:?}",
        alert_kinds(&daemon, "S-1")
    );
    // Old and new side by side, nothing lost or overwritten, old first.
    let all = daemon.all_readings("wiped-1");
    let mut want = [5_000, 5_010].repeat(4);
    want.extend([4_000, 4_010].repeat(3));
    assert_eq!(values(&all), want);
    assert_eq!(reading_ids(&all).len(), 14);
    let devs = daemon.get("/api/v1/devices");
    let dev = devs
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == "wiped-1")
        .unwrap()
        .clone();
    assert_eq!(dev["boot"], 1, "the device's own boot counter: {dev}");
    // The readings export tells the two lives apart, with the device's own numbers.
    let export = cli(&daemon, &["export", "--readings"]);
    assert!(export.status.success(), "{export:?}");
    let lines: Vec<Value> = String::from_utf8_lossy(&export.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|l: &Value| l["device"] == "wiped-1")
        .collect();
    let lives: Vec<(u64, u64, u64)> = lines
        .iter()
        .map(|l| {
            (
                l["enrollment"].as_u64().unwrap(),
                l["boot"].as_u64().unwrap(),
                l["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut want_lives: Vec<(u64, u64, u64)> =
        (0..4).flat_map(|s| [(0, 1, s), (0, 1, s)]).collect();
    want_lives.extend((0..3).flat_map(|s| [(1, 1, s), (1, 1, s)]));
    assert_eq!(lives, want_lives);
    // The same new frame again is a harmless duplicate.
    let dups = daemon.stat("duplicates");
    mosquitto_pub_lines(broker.port, TOPIC, &new[2..]).unwrap();
    wait_for(T, "a duplicate", || {
        (daemon.stat("duplicates") == dups + 1).then_some(())
    });

    // A replay of a frame from before the re-enrollment (captured, same
    // key): refused, and the tamper alarm is raised.
    mosquitto_pub_lines(broker.port, TOPIC, &old[3..]).unwrap();
    wait_for(T, "the replay refused", || {
        (daemon.stat("rejected.replay") == 1).then_some(())
    });
    // A forgery (not signed with the device's key): refused as a bad tag.
    let forged = frame(&"ab".repeat(32), 1, 5, t2 + 6 * MIN, 4_000);
    mosquitto_pub_lines(broker.port, TOPIC, &[forged]).unwrap();
    wait_for(T, "the forgery refused", || {
        (daemon.stat("rejected.bad_tag") == 1).then_some(())
    });
    assert_eq!(
        daemon.all_readings("wiped-1"),
        all,
        "a refused frame was stored"
    );
    wait_for(T, "the tamper alarm on S-1", || {
        alert_kinds(&daemon, "S-1")
            .contains(&"tamper".to_string())
            .then_some(())
    });
    let m = daemon.get("/metrics");
    assert!(
        m.as_str()
            .unwrap_or("")
            .lines()
            .any(|l| l == "coldchain_rejected_total{reason=\"replay\"} 1"),
        "{m}"
    );
}

/// Re-enrolled with a new key (a replaced unit): frames signed with the old
/// key, old or new, are refused; the new key's frames are stored.
#[test]
fn a_reenrollment_with_a_new_key_refuses_the_old_key() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, daemon) = start(dir.path(), &[]);
    let o = cli(
        &daemon,
        &[
            "device", "add", "wiped-1", "--key", TEST_KEY, "--by", "tech tom",
        ],
    );
    assert!(o.status.success(), "{o:?}");
    let t0 = now_ms() - 30 * MIN;
    let old: Vec<String> = (0..2)
        .map(|s| frame(TEST_KEY, 1, s, t0 + i64::from(s) * 2 * MIN, 5_000))
        .collect();
    mosquitto_pub_lines(broker.port, TOPIC, &old).unwrap();
    wait_for(T, "2 frames stored", || {
        (daemon.stat("frames_stored") == 2).then_some(())
    });

    // Re-enrolled with a freshly minted key (a device added through the API;
    // a device of the config file keeps its key there).
    let o = cli(
        &daemon,
        &[
            "device",
            "reenroll",
            "wiped-1",
            "--reason",
            "unit replaced",
            "--new-key",
            "--by",
            "tech tom",
            "--json",
        ],
    );
    assert!(o.status.success(), "{o:?}");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let key = v["key"]
        .as_str()
        .expect("the minted key, shown once")
        .to_string();
    assert_eq!(key.len(), 64);

    mosquitto_pub_lines(
        broker.port,
        TOPIC,
        &[old[1].clone(), frame(TEST_KEY, 1, 0, t0 + 10 * MIN, 3_000)],
    )
    .unwrap();
    wait_for(T, "the old key's frames refused", || {
        (daemon.stat("rejected.bad_tag") == 2).then_some(())
    });
    mosquitto_pub_lines(
        broker.port,
        TOPIC,
        &[frame(&key, 1, 0, t0 + 12 * MIN, 3_000)],
    )
    .unwrap();
    wait_for(T, "the new key's frame stored", || {
        (daemon.stat("frames_stored") == 3).then_some(())
    });
    assert_eq!(
        values(&daemon.all_readings("wiped-1")),
        vec![5_000, 5_010, 5_000, 5_010, 3_000, 3_010]
    );
}
