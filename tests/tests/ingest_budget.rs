//! The disk budget: over it, the daemon takes nothing new and acknowledges
//! nothing new (the broker keeps it), says so on /readyz and /metrics, and
//! loses nothing: with room again, every frame is stored.

use std::time::Duration;

use coldchain_tests::*;

const T: Duration = Duration::from_secs(60);

#[test]
fn over_budget_intake_pauses_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("broker"));
    let ddir = dir.path().join("daemon");
    let opts = DaemonOpts {
        http: format!("token = \"{TEST_TOKEN}\""),
        extra: "[store]\nmax_disk_mb = 1\nmax_batch = 64\n".into(),
        ..DaemonOpts::default()
    };
    let mut daemon = Daemon::start_with(&ddir, broker.port, &[DeviceCfg::new("big-1")], &opts);
    // A shipment in transit that big-1 watches: it must hear about the pause.
    let (st, v) = http_post(
        daemon.http_port,
        "/api/v1/shipments",
        Some(TEST_TOKEN),
        &serde_json::json!({
            "by": "dispatcher", "id": "S-BIG", "product": "test", "profile": "ambient",
            "watch": [{"device": "big-1", "channel": 0}],
            "origin": "A", "destination": "B", "departure_ms": now_ms() - 60_000,
        }),
    );
    assert!((200..300).contains(&st), "{st}: {v}");
    let storage_alerts = |d: &Daemon| -> Vec<serde_json::Value> {
        d.get("/api/v1/alerts?shipment=S-BIG")
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|a| alert_kind(a) == "storage_full")
            .collect()
    };
    let frames = 3000u64;
    let summary = run_sim(&[
        "--broker",
        &format!("127.0.0.1:{}", broker.port),
        "--device",
        "big-1",
        "--key",
        TEST_KEY,
        "--profile",
        "ambient",
        "--frames",
        &frames.to_string(),
        "--readings-per-frame",
        "32",
        "--interval-ms",
        "0",
    ]);
    assert_eq!(summary["frames"], frames);
    wait_for(Duration::from_secs(60), "the budget to be hit", || {
        let m = daemon.get("/metrics");
        // The exact sample line (the HELP text also starts with "... 1").
        m.as_str()
            .unwrap_or("")
            .lines()
            .any(|l| l == "coldchain_storage_full 1")
            .then_some(())
    });
    let (status, body) = {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut r = agent
            .get(&format!("http://127.0.0.1:{}/readyz", daemon.http_port))
            .call()
            .unwrap();
        (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        )
    };
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("storage full"));
    let stored = daemon.stat("frames_stored");
    assert!(
        stored < frames,
        "the budget did not stop intake ({stored} stored)"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        daemon.stat("frames_stored") <= stored + 64,
        "intake went on while over budget"
    );
    // The shipment's on-call people are told: one critical alert, still active.
    let a = wait_for(Duration::from_secs(60), "the storage-full alert", || {
        let a = storage_alerts(&daemon);
        (!a.is_empty()).then_some(a)
    });
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0]["severity"], "critical");
    assert!(a[0]["cleared_ms"].is_null(), "{a:?}");

    // More room: a restart with a larger budget takes the rest from the broker.
    daemon.stop();
    let cfg = std::fs::read_to_string(&daemon.config)
        .unwrap()
        .replace("max_disk_mb = 1", "max_disk_mb = 0");
    std::fs::write(&daemon.config, cfg).unwrap();
    daemon.restart();
    wait_for(Duration::from_secs(120), "every frame stored", || {
        let d = daemon.get("/api/v1/devices");
        let n = d
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == "big-1")
            .and_then(|x| x["readings"].as_u64())
            .unwrap_or(0);
        (n >= frames * 32).then_some(n)
    });
    // The same alert (not a new one after the restart), now cleared.
    let a = wait_for(
        Duration::from_secs(60),
        "the storage-full alert cleared",
        || {
            let a = storage_alerts(&daemon);
            a.iter().all(|x| !x["cleared_ms"].is_null()).then_some(a)
        },
    );
    assert_eq!(a.len(), 1, "{a:?}");
    assert!(
        daemon
            .get("/api/v1/devices/big-1/gaps")
            .as_array()
            .unwrap()
            .is_empty()
    );
}

/// Bytes the files below `dir` take (what `store.max_disk_mb` measures).
fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => dir_size(&e.path()),
                    _ => e.metadata().map(|m| m.len()).unwrap_or(0),
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Writes `frames` frames of 32 readings of `device`, received and sampled
/// 10 days ago, into the database in `db`.
fn fill_with_old_data(db: &std::path::Path, device: &str, frames: u32) {
    use coldchain_daemon::store::{
        FrameRecord, KvStore, ReadingRecord, Store, TimeSource, Via, WriteSet,
    };
    use coldchain_proto::{ChannelKind, DeviceId, FrameRef, Measurement};
    let old = now_ms() - 10 * 24 * 3_600_000;
    let store = KvStore::open(db).unwrap();
    let d = DeviceId::new(device).unwrap();
    for chunk in (0..frames).collect::<Vec<_>>().chunks(500) {
        let mut w = WriteSet::default();
        for &seq in chunk {
            let r = FrameRef { boot: 1, seq };
            for i in 0..32u16 {
                w.reading(
                    &d,
                    r,
                    i,
                    &ReadingRecord {
                        channel: 0,
                        kind: ChannelKind::Rtd,
                        value: Measurement::Valid(5_000 + i32::from(i)),
                        time_ms: old + i64::from(seq) * 1_000 + i64::from(i),
                        time_source: TimeSource::Device,
                    },
                );
            }
            let rec = FrameRecord {
                received_ms: old,
                time_ms: old + i64::from(seq) * 1_000,
                time_source: TimeSource::Device,
                via: Via::Mqtt,
                signed: true,
            };
            w.frame(&d, r, &rec, &[(seq % 251) as u8; 16]);
        }
        w.device(&d, &Default::default());
        store.apply(w).unwrap();
    }
    store.sync().unwrap();
}

/// Issue 10, case 8: a database past its budget with old data pauses intake;
/// with retention on, the old data is purged, the space really comes back on
/// disk (sled keeps its file's size after deletes: the daemon compacts it),
/// and intake resumes, with the budget unchanged.
#[test]
fn retention_makes_room_and_intake_resumes_without_raising_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("broker"));
    let ddir = dir.path().join("daemon");
    let db = ddir.join("data").join("db");
    fill_with_old_data(&db, "old-1", 20_000);
    let filled = dir_size(&db);
    let budget_mb = 8;
    let budget = budget_mb * 1024 * 1024;
    assert!(filled > budget, "filled only {filled} bytes");
    let mut daemon = Daemon::start(
        &ddir,
        broker.port,
        &[DeviceCfg::new("new-1")],
        &format!("[store]\nmax_disk_mb = {budget_mb}\nretention_days = 0\n"),
    );
    // New frames arrive: over budget, nothing is taken.
    let frames: Vec<String> = (0..50)
        .map(|seq| json_frame("new-1", 1, seq, &[(now_ms(), Some(4_000))]))
        .collect();
    mosquitto_pub_lines(broker.port, "coldchain/v1/dev/new-1/up/json", &frames).unwrap();
    wait_for(T, "storage full", || {
        let m = daemon.get("/metrics");
        m.as_str()?
            .lines()
            .any(|l| l == "coldchain_storage_full 1")
            .then_some(())
    });
    assert_eq!(daemon.stat("frames_stored"), 0);
    daemon.stop();
    let before = dir_size(&db);

    // Retention on (3 days); the budget stays as it was.
    let cfg = std::fs::read_to_string(&daemon.config)
        .unwrap()
        .replace("retention_days = 0", "retention_days = 3");
    std::fs::write(&daemon.config, cfg).unwrap();
    daemon.restart();
    wait_for(T, "every new frame stored", || {
        (daemon.stat("frames_stored") == 50).then_some(())
    });
    let metrics = daemon.get("/metrics");
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.lines().any(|l| l == "coldchain_storage_full 0"),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l == "coldchain_retention_purged_frames_total 20000"),
        "{metrics}"
    );
    let after = dir_size(&db);
    eprintln!(
        "database: {filled} bytes filled, {before} bytes while full, {after} bytes after retention and compaction (budget {budget})"
    );
    assert!(
        after <= budget / 10 * 9,
        "{after} bytes after the purge: space did not come back"
    );
    assert!(daemon.all_readings("old-1").is_empty());
    assert_eq!(daemon.all_readings("new-1").len(), 50);
    // The audit trail came through the compaction whole, with the purge in it.
    let v = daemon.get("/api/v1/audit/verify");
    assert_eq!(v["ok"], true, "{v}");
    assert!(
        daemon
            .get("/api/v1/audit")
            .to_string()
            .contains("retention.purge"),
        "no retention.purge in the audit trail"
    );
}
