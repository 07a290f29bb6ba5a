//! Hold time at ETA on simulated dry shippers: the simulator's thermal model
//! (LN2 runs out, then the sample warms linearly; tipped on its side the
//! nitrogen runs out sooner) through a real Mosquitto and daemon. While the
//! sample is still well below -150 °C, the shipment's status predicts when it
//! will cross -150 °C with a band; the crossing the simulated data then shows
//! lies within that band.

use std::time::Duration;

use coldchain_tests::*;
use serde_json::{Value, json};

/// The valid points of the shipment's record, (t ms, m°C).
fn points(show: &Value) -> Vec<(i64, i64)> {
    show["evaluation"]["points"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|p| Some((p["t_ms"].as_i64()?, p["milli_c"].as_i64()?)))
        .collect()
}

fn agent_text(d: &Daemon, path: &str) -> String {
    ureq::get(&format!("http://127.0.0.1:{}{path}", d.http_port))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap()
}

#[test]
fn predicted_crossing_is_within_its_band_upright_and_tilted() {
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
        &[DeviceCfg::new("up-1"), DeviceCfg::new("tip-1")],
        &opts,
    );
    let depart = now_ms() - 1000;
    let eta = depart + 20 * 60_000;
    for (id, dev) in [("HOLD-UP", "up-1"), ("HOLD-TIP", "tip-1")] {
        let (s, v) = http_post(
            daemon.http_port,
            "/api/v1/shipments",
            Some(TEST_TOKEN),
            &json!({
                "by": "test", "id": id, "product": "cryopreserved cells", "profile": "cryo-ln2",
                "watch": [{"device": dev, "channel": 0}], "origin": "A", "destination": "B",
                "departure_ms": depart, "eta_ms": eta,
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
            "400",
            "--speed",
            "600",
            "--frames",
            "240",
        ];
        base.extend_from_slice(args);
        std::process::Command::new(bin("coldchain-sim"))
            .args(&base)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    // Model time 600 times real time: once dry the sample warms 3 °C per
    // model hour, 0.5 °C per real second; -190 to -150 °C in about 80 s.
    // Upright: dry 1 model hour (6 s) in. Tipped at 0.2 model hours with
    // 3 hours of nitrogen left: it boils off 2.5 times faster and runs dry
    // at 1.3 model hours instead of 3 (8 s instead of 18 s).
    let mut up = sim(&["--device", "up-1", "--dry-in-h", "1"]);
    let mut tip = sim(&[
        "--device",
        "tip-1",
        "--dry-in-h",
        "3",
        "--events",
        "--fault",
        "tip@0.2",
    ]);

    // While the sample is between -175 and -160 °C: the prediction.
    let mut predicted = Vec::new();
    for id in ["HOLD-UP", "HOLD-TIP"] {
        let (show, h) = wait_for(Duration::from_secs(120), "a hold-time prediction", || {
            let show = daemon.get(&format!("/api/v1/shipments/{id}"));
            let last = show["status"]["last"]["milli_c"].as_i64()?;
            let h = show["status"]["hold_time"].clone();
            ((-175_000..-160_000).contains(&last) && h.is_object()).then_some((show, h))
        });
        let last = points(&show).last().copied().unwrap();
        assert!(h["crossing_ms"].as_i64().unwrap() > last.0, "{h}");
        assert_eq!(h["limit_mc"], -150_000);
        assert_eq!(h["warning"], true, "crosses before the ETA: {h}");
        let sentence = h["sentence"].as_str().unwrap();
        assert!(
            sentence.starts_with("crosses -150 °C at ") && sentence.ends_with("before ETA"),
            "{sentence}"
        );
        if id == "HOLD-UP" {
            // The same prediction in the report, the dashboard and the CLI.
            let rep = daemon.get(&format!("/api/v1/shipments/{id}/report?format=json"));
            let r = &rep["data"]["viability"]["hold_time"];
            assert_eq!(r["limit_mc"], -150_000, "{rep}");
            let page = agent_text(&daemon, "/");
            assert!(page.contains("crosses -150 °C at "), "{page}");
            let o = std::process::Command::new(bin("coldchain"))
                .args([
                    "status",
                    "--api",
                    &format!("http://127.0.0.1:{}", daemon.http_port),
                ])
                .output()
                .unwrap();
            let out = String::from_utf8_lossy(&o.stdout);
            assert!(
                out.contains("HOLD-UP: WARNING: crosses -150 °C at "),
                "{out}"
            );
        }
        predicted.push((id, h));
    }
    assert!(up.wait().unwrap().success());
    assert!(tip.wait().unwrap().success());

    // The crossing the simulated data shows: the first reading above -150 °C.
    for (id, h) in predicted {
        let show = wait_for(
            Duration::from_secs(60),
            "the data to cross -150 °C",
            || {
                let show = daemon.get(&format!("/api/v1/shipments/{id}"));
                points(&show).iter().any(|p| p.1 > -150_000).then_some(show)
            },
        );
        let pts = points(&show);
        let actual = pts.iter().find(|p| p.1 > -150_000).unwrap().0;
        let crossing = h["crossing_ms"].as_i64().unwrap();
        let band = h["band_ms"].as_i64().unwrap();
        eprintln!(
            "{id}: predicted {crossing} ± {band} ms from {} points (rate {} m°C/h), simulated {actual}: off by {} ms",
            h["points"],
            h["rate_mc_per_h"],
            crossing - actual
        );
        assert!(
            (crossing - actual).abs() <= band,
            "{id}: predicted {crossing} ± {band}, simulated crossing {actual}: {h}"
        );
        assert!(band > 0 && band < 20_000, "a useful band: {h}");
        // The hold-time warning was raised, and cleared (not withdrawn) when
        // the readings crossed: the zone alarm takes over.
        let st = &show["status"]["hold_time"];
        assert_eq!(st["crossed_ms"], actual, "{st}");
        let alerts = daemon.get(&format!("/api/v1/alerts?shipment={id}"));
        let ht: Vec<&Value> = alerts
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| alert_kind(a) == "hold_time")
            .collect();
        assert_eq!(ht.len(), 1, "{alerts}");
        assert_eq!(ht[0]["severity"], "warning");
        assert_ne!(ht[0]["state"], "withdrawn", "{}", ht[0]);
        assert_eq!(ht[0]["cleared_ms"], actual, "{}", ht[0]);
    }

    // The PDF/A report of a dry shipper: the hold time and the cryogenic
    // lane's warming section, as text a reader can search (pdftotext, from
    // Debian's poppler-utils; tests/run.sh installs it).
    let pdf = ureq::get(&format!(
        "http://127.0.0.1:{}/api/v1/shipments/HOLD-TIP/report?format=pdf",
        daemon.http_port
    ))
    .call()
    .unwrap()
    .body_mut()
    .read_to_vec()
    .unwrap();
    let file = dir.path().join("HOLD-TIP.pdf");
    std::fs::write(&file, &pdf).unwrap();
    let o = std::process::Command::new("pdftotext")
        .arg(&file)
        .arg("-")
        .output()
        .expect("pdftotext (poppler-utils)");
    assert!(o.status.success(), "{o:?}");
    let text = String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for want in [
        "Hold time at ETA: crossed -150 °C at ",
        "A line through ",
        "Warming limit",
        "Warming events",
    ] {
        assert!(text.contains(want), "{want:?} not in the PDF: {text}");
    }
}
