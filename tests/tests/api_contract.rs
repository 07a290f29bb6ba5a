//! The HTTP API as documented, and the CLI as a script would use it: every
//! operation in `/api/v1/openapi.json` is routed by the real server (the
//! other direction, every route documented, is the daemon's
//! `http::openapi` test); the CLI
//! talks to the daemon over real HTTP with reliable exit codes.

use std::process::{Command, Output};
use std::time::Duration;

use coldchain_tests::*;
use serde_json::{Value, json};

fn start(dir: &std::path::Path) -> (Mosquitto, Daemon) {
    let broker = Mosquitto::start(&dir.join("broker"));
    let opts = DaemonOpts {
        http: format!("token = \"{TEST_TOKEN}\""),
        ..DaemonOpts::default()
    };
    let daemon = Daemon::start_with(
        &dir.join("daemon"),
        broker.port,
        &[DeviceCfg::new("dev-1")],
        &opts,
    );
    (broker, daemon)
}

fn raw(port: u16, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("http://127.0.0.1:{port}{path}");
    let r = match method {
        "get" => {
            let mut q = agent.get(&url);
            if let Some(t) = token {
                q = q.header("Authorization", &format!("Bearer {t}"));
            }
            q.call()
        }
        _ => {
            let mut q = agent.post(&url);
            if let Some(t) = token {
                q = q.header("Authorization", &format!("Bearer {t}"));
            }
            q.send_json(json!({}))
        }
    };
    let mut r = r.unwrap();
    let status = r.status().as_u16();
    (status, r.body_mut().read_to_string().unwrap_or_default())
}

/// An unrouted path answers 404 with an empty body; a routed one answers
/// anything else (a resource that does not exist is a 404 *with* a JSON error).
fn routed(status: u16, body: &str) -> bool {
    status != 405 && !(status == 404 && body.is_empty())
}

#[test]
fn every_documented_operation_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, daemon) = start(dir.path());
    let doc = daemon.get("/api/v1/openapi.json");
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 20, "{} paths", paths.len());
    let (s, b) = raw(daemon.http_port, "get", "/api/v1/no-such-thing", None);
    assert!(!routed(s, &b), "the routing check must be able to fail");
    let mut checked = 0;
    for (path, ops) in paths {
        // Every path parameter ({id}, {name}) as a value.
        let concrete: String = path
            .split('{')
            .enumerate()
            .map(|(i, part)| match (i, part.split_once('}')) {
                (0, _) | (_, None) => part.to_string(),
                (_, Some((_, rest))) => format!("1{rest}"),
            })
            .collect();
        for (method, op) in ops.as_object().unwrap() {
            let (s, b) = raw(daemon.http_port, method, &concrete, Some(TEST_TOKEN));
            assert!(
                routed(s, &b),
                "{method} {path} is documented but not served: {s} {b:?}"
            );
            // Documented changes need the token.
            if op.get("security").is_some() {
                let (s, _) = raw(daemon.http_port, method, &concrete, None);
                assert_eq!(s, 401, "{method} {path} without a token");
                let (s, _) = raw(
                    daemon.http_port,
                    method,
                    &concrete,
                    Some("wrong-token-wrong-token"),
                );
                assert_eq!(s, 401, "{method} {path} with a wrong token");
            }
            checked += 1;
        }
    }
    assert!(checked >= 40, "{checked} operations checked");
    // Bad requests get a JSON error that says what was wrong.
    let (s, v) = http_post(
        daemon.http_port,
        "/api/v1/shipments",
        Some(TEST_TOKEN),
        &json!({"by": "x", "id": "a/b"}),
    );
    assert_eq!(s, 400);
    assert!(v["error"].as_str().is_some(), "{v}");
    let (s, v) = http_post(
        daemon.http_port,
        "/api/v1/shipments",
        Some(TEST_TOKEN),
        &json!({
        "by": "x", "id": "S1", "product": "p", "profile": "no-such-profile",
        "watch": [{"device": "dev-1", "channel": 0}], "origin": "a", "destination": "b"}),
    );
    assert_eq!(s, 400);
    assert!(v["error"].as_str().unwrap().contains("profile"), "{v}");
    let metrics = daemon.get("/metrics");
    let m = metrics.as_str().unwrap();
    for name in [
        "coldchain_readings_stored_total",
        "coldchain_rejected_total{reason=\"bad_tag\"}",
        "coldchain_store_bytes",
        "coldchain_outbox_depth",
        "coldchain_open_alerts{severity=\"critical\"}",
        "coldchain_ingest_commit_seconds_count",
        "coldchain_ingest_receive_to_durable_seconds_bucket",
        "coldchain_ingest_publish_to_durable_seconds_bucket",
        "coldchain_evaluate_shipment_seconds_count",
    ] {
        assert!(m.contains(name), "metrics lack {name}:\n{m}");
    }
}

/// `coldchain ARGS --api … --token …` (the connection flags belong to the
/// subcommand: `coldchain run --help` does not list them).
fn cli(daemon: &Daemon, args: &[&str]) -> Output {
    Command::new(bin("coldchain"))
        .args(args)
        .args([
            "--api",
            &format!("http://127.0.0.1:{}", daemon.http_port),
            "--token",
            TEST_TOKEN,
        ])
        .env("COLDCHAIN_USER", "cli tester")
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}: {}{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn cli_drives_the_daemon_with_reliable_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, mut daemon) = start(dir.path());
    ok(&cli(
        &daemon,
        &[
            "shipment",
            "create",
            "--id",
            "W1234 25 000042",
            "--product",
            "PBSC",
            "--profile",
            "fridge",
            "--device",
            "dev-1:0",
            "--origin",
            "Clinic",
            "--destination",
            "Lab",
            "--window-h",
            "48",
            "--eta",
            "+6h",
            "--depart",
            "-10m",
        ]
        .iter()
        .map(|s| if *s == "-10m" { "now" } else { s })
        .collect::<Vec<_>>(),
    ));
    // Readings that go above 8 °C for an hour.
    let t0 = now_ms() - 2 * 3_600_000;
    let rs: Vec<(i64, Option<i32>)> = (0..96)
        .map(|i| (t0 + i * 60_000, Some(if i > 20 { 11_000 } else { 5_000 })))
        .collect();
    let lines: Vec<String> = rs
        .chunks(12)
        .enumerate()
        .map(|(i, c)| json_frame("dev-1", 1, i as u32, c))
        .collect();
    // The shipment departed "now": move departure back so the data counts.
    let o = cli(&daemon, &["shipment", "depart", "W1234 25 000042"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "departing twice is refused: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot depart"));
    mosquitto_pub_lines(broker.port, "coldchain/v1/dev/dev-1/up/json", &lines).unwrap();

    let status = ok(&cli(&daemon, &["status"]));
    assert!(
        status.contains("W1234 25 000042") && status.contains("in_transit"),
        "{status}"
    );
    let list: Value = serde_json::from_str(&ok(&cli(&daemon, &["status", "--json"]))).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);

    ok(&cli(
        &daemon,
        &[
            "shipment",
            "handoff",
            "W1234 25 000042",
            "--to",
            "courier 7",
            "--location",
            "airport",
        ],
    ));
    ok(&cli(
        &daemon,
        &["shipment", "eta", "W1234 25 000042", "+8h"],
    ));
    let show = ok(&cli(&daemon, &["shipment", "show", "W1234 25 000042"]));
    assert!(show.contains("courier 7"), "{show}");

    let dev = ok(&cli(&daemon, &["device", "add", "new-dev"]));
    assert!(dev.contains("key (shown once"), "{dev}");
    let devs = ok(&cli(&daemon, &["device", "list"]));
    assert!(devs.contains("new-dev"), "{devs}");

    let verify = ok(&cli(&daemon, &["audit", "verify"]));
    assert!(verify.contains("intact"), "{verify}");
    let audit = ok(&cli(&daemon, &["audit", "list", "--json"]));
    // The authenticated identity (the legacy shared token the CLI took from
    // --config), not the typed --by name.
    assert!(audit.contains("\"who\": \"legacy-token\""), "{audit}");
    assert!(!audit.contains("cli tester"), "{audit}");

    // Wrong token: refused (1). Daemon unreachable: 3.
    let o = Command::new(bin("coldchain"))
        .args([
            "ack",
            "1",
            "--comment",
            "x",
            "--by",
            "me",
            "--api",
            &format!("http://127.0.0.1:{}", daemon.http_port),
            "--token",
            "nope-nope-nope-nope",
        ])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("wrong bearer token"));

    // Backup through the API, restore offline into a new data directory.
    let backup = dir.path().join("backup.ndjson");
    ok(&cli(
        &daemon,
        &["export", "--out", backup.to_str().unwrap()],
    ));
    daemon.stop();
    let o = Command::new(bin("coldchain"))
        .args([
            "status",
            "--api",
            &format!("http://127.0.0.1:{}", daemon.http_port),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    let cfg2 = dir.path().join("restore.toml");
    std::fs::write(
        &cfg2,
        format!(
            "[daemon]\ndata_dir = \"{}\"\n",
            dir.path().join("restored").display()
        ),
    )
    .unwrap();
    let o = Command::new(bin("coldchain"))
        .args([
            "import",
            "--config",
            cfg2.to_str().unwrap(),
            "--from",
            backup.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = Command::new(bin("coldchain"))
        .args([
            "import",
            "--config",
            cfg2.to_str().unwrap(),
            "--from",
            backup.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "restoring over data is refused");
    // The restored database holds the same shipment and readings.
    let db = sled::open(dir.path().join("restored/db")).unwrap();
    assert!(
        db.open_tree("shipments")
            .unwrap()
            .get("W1234 25 000042")
            .unwrap()
            .is_some()
    );
    assert_eq!(
        db.open_tree("frames").unwrap().len(),
        8,
        "the 8 frames of 12 readings"
    );
    std::thread::sleep(Duration::from_millis(10));
}
