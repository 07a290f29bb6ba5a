//! A dry shipper's history of warming rates through the real daemon: four
//! past cryo-ln2 shipments watched by the same device, the last warming
//! twice as fast as the first three; GET /api/v1/devices/{id}/warming lists
//! them in time order and flags the last (factor 1.5 by default), and the
//! dashboard's device page shows it.

use coldchain_tests::*;
use serde_json::json;

const MIN: i64 = 60_000;
const H: i64 = 3_600_000;

#[test]
fn a_shipper_warming_faster_than_its_first_shipments_is_flagged() {
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
        &[DeviceCfg::new("dry-h")],
        &opts,
    );
    let base = now_ms() - 50 * H;
    let mut frames = Vec::new();
    let mut seq = 0;
    for (k, rate) in [3.0, 3.2, 2.8, 6.0].into_iter().enumerate() {
        let t0 = base + k as i64 * 10 * H;
        let id = format!("HIST-{}", k + 1);
        // 2 h flat at -190 °C, then `rate` °C/h for 6 h, every 5 min.
        let rs: Vec<(i64, Option<i32>)> = (0..=96)
            .map(|i| {
                let h = i as f64 / 12.0;
                let c = -190.0 + (h - 2.0).max(0.0) * rate;
                (t0 + i * 5 * MIN, Some((c * 1000.0).round() as i32))
            })
            .collect();
        for c in rs.chunks(12) {
            frames.push(json_frame("dry-h", 1, seq, c));
            seq += 1;
        }
        let (s, v) = http_post(
            daemon.http_port,
            "/api/v1/shipments",
            Some(TEST_TOKEN),
            &json!({
                "by": "test", "id": id, "product": "cells", "profile": "cryo-ln2",
                "watch": [{"device": "dry-h", "channel": 0}], "origin": "A", "destination": "B",
                "departure_ms": t0,
            }),
        );
        assert_eq!(s, 201, "{v}");
        let (s, v) = http_post(
            daemon.http_port,
            &format!("/api/v1/shipments/{id}/arrive"),
            Some(TEST_TOKEN),
            &json!({"by": "lab", "at_ms": t0 + 8 * H}),
        );
        assert_eq!(s, 200, "{v}");
    }
    mosquitto_pub_lines(broker.port, "coldchain/v1/dev/dry-h/up/json", &frames).unwrap();
    wait_for(
        std::time::Duration::from_secs(60),
        "every frame stored",
        || (daemon.stat("readings_stored") >= 4 * 97).then_some(()),
    );

    let h = daemon.get("/api/v1/devices/dry-h/warming");
    assert_eq!(h["factor"], 1.5);
    let rows = h["shipments"].as_array().unwrap();
    let ids: Vec<&str> = rows
        .iter()
        .map(|r| r["shipment"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["HIST-1", "HIST-2", "HIST-3", "HIST-4"], "{h}");
    for (r, want) in rows.iter().zip([3_000, 3_200, 2_800, 6_000]) {
        let rate = r["rate_mc_per_h"].as_i64().unwrap();
        assert!((rate - want).abs() < 100, "{r}");
    }
    let flags: Vec<bool> = rows.iter().map(|r| r["flagged"] == true).collect();
    assert_eq!(flags, [false, false, false, true], "{h}");

    // The device page of the dashboard shows the same history.
    let page = ureq::get(&format!(
        "http://127.0.0.1:{}/devices/dry-h",
        daemon.http_port
    ))
    .call()
    .unwrap()
    .body_mut()
    .read_to_string()
    .unwrap();
    for id in ["HIST-1", "HIST-2", "HIST-3", "HIST-4"] {
        assert!(page.contains(id), "{page}");
    }
    assert_eq!(
        page.matches("faster than its first shipments").count(),
        1,
        "{page}"
    );
    assert!(page.contains("6.00 °C/h"), "{page}");
}
