//! Alarm scenarios driven by the simulator's own thermal model and injected
//! faults, through a real Mosquitto: a dry shipper running out of nitrogen
//! (the predictive warning comes before the critical alarm) and a probe that
//! comes loose (a fault alarm, never a temperature excursion).

use std::time::Duration;

use coldchain_tests::*;
use serde_json::{Value, json};

fn alerts(d: &Daemon, shipment: &str) -> Vec<Value> {
    d.get(&format!("/api/v1/alerts?shipment={shipment}"))
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn simulated_dry_shipper_and_loose_probe() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("broker"));
    let opts = DaemonOpts {
        http: format!("token = \"{TEST_TOKEN}\""),
        extra: "[alerts]\nsettle_s = 0\n".into(),
        ..DaemonOpts::default()
    };
    let daemon = Daemon::start_with(
        &dir.path().join("daemon"),
        broker.port,
        &[DeviceCfg::new("dry-1"), DeviceCfg::new("loose-1")],
        &opts,
    );
    let depart = now_ms() - 1000;
    for (id, dev) in [("SIM-DRY", "dry-1"), ("SIM-LOOSE", "loose-1")] {
        let (s, v) = http_post(
            daemon.http_port,
            "/api/v1/shipments",
            Some(TEST_TOKEN),
            &json!({
                "by": "test", "id": id, "product": "cryopreserved cells", "profile": "cryo-ln2",
                "watch": [{"device": dev, "channel": 0}], "origin": "A", "destination": "B", "departure_ms": depart,
            }),
        );
        assert_eq!(s, 201, "{v}");
    }
    let broker_addr = format!("127.0.0.1:{}", broker.port);
    let sim = |args: &[&str]| {
        let mut base = vec![
            "--broker",
            broker_addr.as_str(),
            "--key",
            TEST_KEY,
            "--profile",
            "cryo-ln2",
            "--interval-ms",
            "500",
        ];
        base.extend_from_slice(args);
        std::process::Command::new(bin("coldchain-sim"))
            .args(&base)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    // Model time 1800 times real time: once dry, the sample warms ~1.5 °C per
    // real second; -135 °C is about 40 s after the nitrogen runs out.
    let mut dry = sim(&[
        "--device",
        "dry-1",
        "--dry-in-h",
        "0.002",
        "--speed",
        "1800",
        "--frames",
        "120",
    ]);
    // The probe comes loose 1 model hour in (2 s).
    let mut loose = sim(&[
        "--device",
        "loose-1",
        "--speed",
        "1800",
        "--fault",
        "probe-open@1",
        "--frames",
        "30",
    ]);
    assert!(loose.wait().unwrap().success());
    assert!(dry.wait().unwrap().success());

    let a = wait_for(
        Duration::from_secs(60),
        "the dry shipper's critical alarm",
        || {
            let a = alerts(&daemon, "SIM-DRY");
            a.iter().any(|x| alert_kind(x) == "H2").then_some(a)
        },
    );
    let trend = a
        .iter()
        .find(|x| alert_kind(x) == "trend")
        .expect("a predictive warning");
    let h2 = a.iter().find(|x| alert_kind(x) == "H2").unwrap();
    assert!(
        trend["fires_ms"].as_i64().unwrap() < h2["fires_ms"].as_i64().unwrap(),
        "the warning must come before the critical alarm: {trend} {h2}"
    );
    assert!(trend["peak"].as_i64().unwrap() < -135_000);

    let l = wait_for(Duration::from_secs(30), "the probe fault alarm", || {
        let l = alerts(&daemon, "SIM-LOOSE");
        l.iter()
            .any(|x| alert_kind(x) == "probe_fault")
            .then_some(l)
    });
    let kinds: Vec<String> = l.iter().map(alert_kind).collect();
    assert!(
        !kinds
            .iter()
            .any(|k| k.starts_with('H') || k.starts_with('L')),
        "a loose probe became an excursion: {kinds:?}"
    );
    let show = daemon.get("/api/v1/shipments/SIM-LOOSE");
    assert!(show["evaluation"]["faults"].as_u64().unwrap() > 0);
    assert!(
        show["evaluation"]["max_milli_c"].as_i64().unwrap() < -150_000,
        "no fault became a temperature"
    );
}
