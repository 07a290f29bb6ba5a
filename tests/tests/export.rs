//! `coldchain export --readings` (issue 10, case 5): every stored reading as
//! one JSON line a person can read and count, streamed by the daemon and
//! written by the CLI as it arrives; the full backup stays, streamed too,
//! and restores with `coldchain import`.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::Command;
use std::time::Duration;

use coldchain_tests::*;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);

fn cli(d: &Daemon, args: &[&str]) -> std::process::Output {
    let o = Command::new(bin("coldchain"))
        .args(args)
        .args([
            "--api",
            &format!("http://127.0.0.1:{}", d.http_port),
            "--token",
            TEST_TOKEN,
        ])
        .output()
        .expect("run coldchain");
    assert!(
        o.status.success(),
        "coldchain {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// The response headers of a raw GET (to see how the body is framed).
fn raw_headers(port: u16, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TEST_TOKEN}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let mut head = String::new();
    let mut line = String::new();
    while r.read_line(&mut line).unwrap() > 2 {
        head.push_str(&line.to_ascii_lowercase());
        line.clear();
    }
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest);
    head
}

#[test]
fn readings_export_is_one_readable_line_per_stored_reading() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("broker"));
    let opts = DaemonOpts {
        http: format!("token = \"{TEST_TOKEN}\""),
        ..DaemonOpts::default()
    };
    let daemon = Daemon::start_with(
        &dir.path().join("daemon"),
        broker.port,
        &[DeviceCfg::new("exp-1"), DeviceCfg::new("exp-2")],
        &opts,
    );
    let t0 = now_ms() - 3_600_000;
    // exp-1: 40 frames of 25 readings, every 7th an open-circuit fault.
    let f1: Vec<String> = (0..40u32)
        .map(|s| {
            let rs: Vec<(i64, Option<i32>)> = (0..25)
                .map(|i| {
                    let n = i64::from(s) * 25 + i;
                    (t0 + n * 1000, (n % 7 != 0).then_some(-190_000 + n as i32))
                })
                .collect();
            json_frame("exp-1", 1, s, &rs)
        })
        .collect();
    // exp-2: 3 frames of 2 readings.
    let f2: Vec<String> = (0..3u32)
        .map(|s| {
            let t = t0 + i64::from(s) * 60_000;
            json_frame("exp-2", 1, s, &[(t, Some(5_125)), (t + 500, Some(5_250))])
        })
        .collect();
    mosquitto_pub_lines(broker.port, "coldchain/v1/dev/exp-1/up/json", &f1).unwrap();
    mosquitto_pub_lines(broker.port, "coldchain/v1/dev/exp-2/up/json", &f2).unwrap();
    wait_for(T, "43 frames stored", || {
        (daemon.stat("frames_stored") == 43).then_some(())
    });
    let stored = daemon.stat("readings_stored");
    assert_eq!(stored, 1006);

    // To a file, and to standard output: the same lines.
    let out = dir.path().join("readings.jsonl");
    cli(
        &daemon,
        &["export", "--readings", "--out", out.to_str().unwrap()],
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let stdout = cli(&daemon, &["export", "--readings"]).stdout;
    assert_eq!(String::from_utf8(stdout).unwrap(), text);

    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert_eq!(lines.len() as u64, stored, "one line per stored reading");
    // Exactly the readings the API pages through, by identity.
    let mut want = std::collections::BTreeSet::new();
    for d in ["exp-1", "exp-2"] {
        for r in daemon.all_readings(d) {
            want.insert((
                d.to_string(),
                r["boot"].as_u64(),
                r["seq"].as_u64(),
                r["idx"].as_u64(),
            ));
        }
    }
    let got: std::collections::BTreeSet<_> = lines
        .iter()
        .map(|l| {
            (
                l["device"].as_str().unwrap().to_string(),
                l["boot"].as_u64(),
                l["seq"].as_u64(),
                l["index"].as_u64(),
            )
        })
        .collect();
    assert_eq!(got, want);
    // Each line: time in ms and ISO 8601, time source, channel, value in °C or fault.
    let faults = lines.iter().filter(|l| l.get("fault").is_some()).count();
    assert_eq!(faults, (0..1000).filter(|n| n % 7 == 0).count());
    for l in &lines {
        assert_eq!(l["enrollment"], 0, "{l}");
        assert_eq!(l["time_source"], "device", "{l}");
        assert_eq!(l["channel"], 0, "{l}");
        let ms = l["time_ms"].as_i64().unwrap();
        let iso = humantime::parse_rfc3339(l["time"].as_str().unwrap()).unwrap();
        assert_eq!(
            iso.duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64,
            ms,
            "{l}"
        );
        match l.get("fault") {
            Some(f) => {
                assert_eq!(f, "open_circuit");
                assert!(l.get("value").is_none(), "{l}");
            }
            None => assert_eq!(l["unit"], "°C", "{l}"),
        }
    }
    let first2 = lines.iter().find(|l| l["device"] == "exp-2").unwrap();
    assert_eq!(
        *first2,
        json!({"device": "exp-2", "enrollment": 0, "boot": 1, "seq": 0, "index": 0,
            "time_ms": t0, "time": first2["time"], "time_source": "device",
            "channel": 0, "kind": "rtd", "value": 5.125, "unit": "°C"})
    );
    let n = 13; // exp-1 reading 13: -190 °C + 13 m°C
    let l13 = lines
        .iter()
        .find(|l| l["device"] == "exp-1" && l["seq"] == 0 && l["index"] == n)
        .unwrap();
    assert_eq!(l13["value"], -189.987, "{l13}");

    // Streamed: the body is sent in chunks, not built and sized up front.
    for path in ["/api/v1/export?readings=true", "/api/v1/export"] {
        let head = raw_headers(daemon.http_port, path);
        assert!(head.starts_with("http/1.1 200"), "{path}: {head}");
        assert!(
            head.contains("transfer-encoding: chunked") && !head.contains("content-length"),
            "{path} is not streamed: {head}"
        );
    }

    // The backup (streamed too) restores every reading.
    let backup = dir.path().join("backup.jsonl");
    cli(&daemon, &["export", "--out", backup.to_str().unwrap()]);
    let restored_dir = dir.path().join("restored");
    let cfg = dir.path().join("restore.toml");
    std::fs::write(
        &cfg,
        format!(
            "[daemon]\ndata_dir = \"{}\"\n",
            restored_dir.join("data").display()
        ),
    )
    .unwrap();
    // A readings export is refused by import, with the reason.
    let o = Command::new(bin("coldchain"))
        .args(["import", "--config", cfg.to_str().unwrap(), "--from"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("readings export"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::remove_dir_all(restored_dir.join("data")).unwrap();
    let o = Command::new(bin("coldchain"))
        .args(["import", "--config", cfg.to_str().unwrap(), "--from"])
        .arg(&backup)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // On a broker of its own: both daemons have the same MQTT client id.
    let broker2 = Mosquitto::start(&dir.path().join("broker2"));
    let restored = Daemon::start_with(
        &restored_dir,
        broker2.port,
        &[DeviceCfg::new("exp-1"), DeviceCfg::new("exp-2")],
        &DaemonOpts {
            http: format!("token = \"{TEST_TOKEN}\""),
            ..DaemonOpts::default()
        },
    );
    let again = dir.path().join("again.jsonl");
    cli(
        &restored,
        &["export", "--readings", "--out", again.to_str().unwrap()],
    );
    assert_eq!(std::fs::read_to_string(&again).unwrap(), text);
}
