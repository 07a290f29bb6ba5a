//! The disk budget: over it, the daemon takes nothing new and acknowledges
//! nothing new (the broker keeps it), says so on /readyz and /metrics, and
//! loses nothing: with room again, every frame is stored.

use std::time::Duration;

use coldchain_tests::*;

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
