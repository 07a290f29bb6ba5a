//! The daemon on PostgreSQL (`[store] postgres_url`), through real
//! processes: a real PostgreSQL cluster, real Mosquitto, the real binary.
//! The same frames give the same report as on sled; what was acknowledged
//! survives a restart and a kill -9; the CLI works on the shared database
//! while the daemon runs.

use coldchain_tests::*;
use serde_json::{Value, json};
use std::time::Duration;

const MIN: i64 = 60_000;
const H: i64 = 3_600_000;

fn post(d: &Daemon, path: &str, body: Value) -> Value {
    let (status, v) = http_post(d.http_port, path, Some(TEST_TOKEN), &body);
    assert!((200..300).contains(&status), "POST {path} -> {status}: {v}");
    v
}

fn daemon(dir: &std::path::Path, broker: u16, client: &str, store: &str) -> Daemon {
    let opts = DaemonOpts {
        mqtt: format!("client_id = \"{client}\""),
        http: format!("token = \"{TEST_TOKEN}\""),
        extra: format!("[alerts]\nescalate_after_s = 3600\n\n{store}"),
        ..DaemonOpts::default()
    };
    let d = Daemon::start_with(dir, broker, &[DeviceCfg::new("fridge-pg")], &opts);
    wait_daemon_subscribed(broker, client);
    d
}

/// The daemon's session exists on the broker once it published its
/// retained online status (it subscribes first).
fn wait_daemon_subscribed(broker: u16, _client: &str) {
    wait_daemon_online(broker, &[]);
}

/// What the report states about the data, without what depends on when and
/// where it was computed (alert ids and raise times, reception times).
fn facts(d: &Daemon, id: &str) -> Value {
    let doc = d.get(&format!("/api/v1/shipments/{id}/report?format=json"));
    let data = &doc["data"];
    let alerts: Vec<Value> = data["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let mut a = a.clone();
            if let Some(o) = a.as_object_mut() {
                o.retain(|k, _| !k.ends_with("_ms") && k != "id" && k != "events");
            }
            a
        })
        .collect();
    json!({
        "temperature": data["temperature"],
        "viability": data["viability"],
        "readings": data["data_health"]["readings"],
        "frames": data["data_health"]["devices"][0]["frames_verified"],
        "alerts": alerts,
    })
}

#[test]
fn postgres_gives_the_same_report_as_sled_and_keeps_it_across_restart_and_kill() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(&dir.path().join("pg"));
    let url = pg.create_db("centre");
    let broker = Mosquitto::start(&dir.path().join("broker"));
    let on_sled = daemon(&dir.path().join("sled"), broker.port, "cc-sled", "");
    let mut on_pg = daemon(
        &dir.path().join("pg-daemon"),
        broker.port,
        "cc-pg",
        &format!("[store]\npostgres_url = \"{url}\"\n"),
    );
    assert!(
        !on_pg.data_dir.join("db").exists(),
        "no sled database beside PostgreSQL"
    );
    let t0 = now_ms() - 4 * H;
    for d in [&on_sled, &on_pg] {
        create_shipment(d, "PG-1", t0);
    }
    // 150 minutes with a 40-minute excursion above 8 °C, 12 readings a frame;
    // half now, half after a kill -9 of the PostgreSQL daemon.
    let rs: Vec<(i64, Option<i32>)> = (0..150)
        .map(|i| {
            (
                t0 + i * MIN,
                Some(if (90..130).contains(&i) { 9_500 } else { 5_000 }),
            )
        })
        .collect();
    let frames: Vec<String> = rs
        .chunks(12)
        .enumerate()
        .map(|(i, c)| json_frame("fridge-pg", 1, i as u32, c))
        .collect();
    mosquitto_pub_lines(broker.port, TOPIC, &frames[..7]).unwrap();
    wait_for(
        std::time::Duration::from_secs(60),
        "first half stored",
        || (on_pg.stat("readings_stored") == 84).then_some(()),
    );
    on_pg.kill9();
    // Queued for its session while it is down.
    mosquitto_pub_lines(broker.port, TOPIC, &frames[7..]).unwrap();
    on_pg.restart();
    for d in [&on_sled, &on_pg] {
        wait_for(std::time::Duration::from_secs(60), "all readings", || {
            (d.all_readings("fridge-pg").len() == 150).then_some(())
        });
    }
    // The evaluation has seen everything: the H1 alert is there.
    for d in [&on_sled, &on_pg] {
        wait_for(std::time::Duration::from_secs(60), "the H1 alert", || {
            d.get("/api/v1/alerts?shipment=PG-1")
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .find(|x| x["condition"]["kind"]["zone"] == "H1")
                        .cloned()
                })
        });
    }
    // Arrived: the report is as of the arrival, not of now.
    for d in [&on_sled, &on_pg] {
        post(
            d,
            "/api/v1/shipments/PG-1/arrive",
            json!({"by": "lab", "at_ms": t0 + 150 * MIN}),
        );
    }
    let a = facts(&on_sled, "PG-1");
    let b = facts(&on_pg, "PG-1");
    assert_eq!(a["readings"], 150, "{a}");
    assert_eq!(
        a, b,
        "the same frames, the same report on sled and PostgreSQL"
    );
    // Stored once each, in the database itself.
    let rows = pg
        .psql("centre", "SELECT count(*) FROM kv WHERE tree = 'frames'")
        .unwrap();
    assert_eq!(rows, "13", "one row per frame");

    // Restart: the report is read back from PostgreSQL unchanged.
    on_pg.stop();
    on_pg.restart();
    assert_eq!(facts(&on_pg, "PG-1"), b);

    // The gateway's offline commands open the shared database while the
    // daemon runs (on sled the daemon holds the lock): the first admin is
    // added beside the running daemon, which sees the account at once.
    let mut add = std::process::Command::new(bin("coldchain"))
        .args([
            "user",
            "add",
            "ada",
            "--role",
            "admin",
            "--full-name",
            "Ada Admin",
            "--config",
        ])
        .arg(&on_pg.config)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        writeln!(add.stdin.take().unwrap(), "correct horse battery staple").unwrap();
    }
    let out = add.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "coldchain user add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let users: Value = ureq::get(&format!(
        "http://127.0.0.1:{}/api/v1/users",
        on_pg.http_port
    ))
    .header("Authorization", &format!("Bearer {TEST_TOKEN}"))
    .call()
    .unwrap()
    .body_mut()
    .read_json()
    .unwrap();
    assert!(
        users
            .as_array()
            .is_some_and(|u| u.iter().any(|u| u["name"] == "ada")),
        "{users}"
    );
}

const TOPIC: &str = "coldchain/v1/dev/fridge-pg/up/json";

/// Creates the fridge shipment `id` watching `fridge-pg`, departed at `t0`.
fn create_shipment(d: &Daemon, id: &str, t0: i64) {
    post(
        d,
        "/api/v1/shipments",
        json!({
            "by": "dispatcher", "id": id, "product": "PBSC", "profile": "fridge",
            "watch": [{"device": "fridge-pg", "channel": 0}],
            "origin": "A", "destination": "B", "departure_ms": t0, "window_h": 48.0,
        }),
    );
}

/// Two daemons sharing one PostgreSQL database, each behind its own broker.
/// Bound in this order, they drop in reverse: the daemons stop before
/// their brokers and the database.
struct Pair {
    pg: Postgres,
    broker_a: Mosquitto,
    broker_b: Mosquitto,
    a: Daemon,
    b: Daemon,
}

fn pair(dir: &std::path::Path, db: &str) -> Pair {
    let pg = Postgres::start(&dir.join("pg"));
    let url = pg.create_db(db);
    let store = format!("[store]\npostgres_url = \"{url}\"\n");
    let broker_a = Mosquitto::start(&dir.join("broker-a"));
    let broker_b = Mosquitto::start(&dir.join("broker-b"));
    let a = daemon(&dir.join("a"), broker_a.port, "cc-a", &store);
    let b = daemon(&dir.join("b"), broker_b.port, "cc-b", &store);
    Pair {
        pg,
        broker_a,
        broker_b,
        a,
        b,
    }
}

/// How many alerts of `zone` the shipment has, withdrawn ones included.
fn zone_alerts(d: &Daemon, id: &str, zone: &str) -> usize {
    d.get(&format!("/api/v1/alerts?shipment={id}"))
        .as_array()
        .map_or(0, |a| {
            a.iter()
                .filter(|x| x["condition"]["kind"]["zone"] == zone)
                .count()
        })
}

/// Alerts that stand, as `(zone, condition start)`.
type Standing = Vec<(String, i64)>;
/// Withdrawn alerts, as `(zone, reason)`.
type Withdrawn = Vec<(String, String)>;

/// The alerts that stand (not withdrawn) and the withdrawn ones with their
/// reasons.
fn standing_and_withdrawn(d: &Daemon, id: &str) -> (Standing, Withdrawn) {
    let all = d.get(&format!("/api/v1/alerts?shipment={id}"));
    let (mut standing, mut withdrawn) = (Vec::new(), Vec::new());
    for a in all.as_array().unwrap() {
        let zone = a["condition"]["kind"]["zone"]
            .as_str()
            .unwrap_or("?")
            .to_string();
        if a["state"] == "withdrawn" {
            withdrawn.push((
                zone,
                a["withdrawn"]["reason"].as_str().unwrap_or("").to_string(),
            ));
        } else {
            standing.push((zone, a["condition"]["start_ms"].as_i64().unwrap()));
        }
    }
    standing.sort();
    (standing, withdrawn)
}

/// Two daemons share one PostgreSQL database, each behind its own broker.
/// Frames reach only B; A holds the shipment's evaluation lease, learns of
/// B's frames from the database's notifications and raises the alarm, once.
/// A is killed: B takes the lease over and raises the next alarm; nothing is
/// raised twice, every frame is stored once.
#[test]
fn two_instances_share_a_database_and_one_evaluates_each_shipment() {
    let dir = tempfile::tempdir().unwrap();
    let Pair {
        pg,
        broker_a: _broker_a,
        broker_b,
        mut a,
        b,
    } = pair(dir.path(), "shared");
    let t0 = now_ms() - 6 * H;
    // Created on A: A evaluates it first and takes its lease.
    create_shipment(&a, "SHARED-1", t0);
    // B knows the shipment from the shared database.
    assert_eq!(
        b.get("/api/v1/shipments/SHARED-1")["evaluation"]["shipment"]["id"],
        "SHARED-1"
    );
    // Only B's broker hears them.
    let frames = two_excursions("fridge-pg", t0);
    mosquitto_pub_lines(broker_b.port, TOPIC, &frames[..15]).unwrap();
    wait_for(
        std::time::Duration::from_secs(60),
        "A raises H1 from B's frames",
        || (zone_alerts(&a, "SHARED-1", "H1") == 1).then_some(()),
    );
    assert_eq!(a.stat("readings_stored"), 0, "A received nothing itself");
    assert_eq!(
        zone_alerts(&b, "SHARED-1", "H1"),
        1,
        "B sees the same alert"
    );
    // B's shipment list shows A's evaluation of the shipment (its newest
    // reading and its open alert), not an evaluation of its own.
    wait_for(
        std::time::Duration::from_secs(30),
        "B's list shows A's summary",
        || {
            let list = b.get("/api/v1/shipments");
            let row = list
                .as_array()?
                .iter()
                .find(|r| r["shipment"]["id"] == "SHARED-1")?
                .clone();
            (row["last"]["t_ms"] == t0 + 149 * MIN && row["open_alerts"] == 1).then_some(())
        },
    );

    // A dies holding the lease; B takes it over when it runs out.
    a.kill9();
    mosquitto_pub_lines(broker_b.port, TOPIC, &frames[15..]).unwrap();
    wait_for(
        std::time::Duration::from_secs(120),
        "B raises H3 after taking the lease over",
        || (zone_alerts(&b, "SHARED-1", "H3") == 1).then_some(()),
    );
    assert_eq!(zone_alerts(&b, "SHARED-1", "H1"), 1, "H1 not raised again");
    assert_eq!(
        pg.psql("shared", "SELECT count(*) FROM kv WHERE tree = 'frames'")
            .unwrap(),
        "25",
        "every frame stored once"
    );
    // A comes back: it does not raise what B already raised.
    a.restart();
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(zone_alerts(&a, "SHARED-1", "H1"), 1);
    assert_eq!(zone_alerts(&a, "SHARED-1", "H3"), 1);
}

/// Two central instances on one database and one broker split the devices'
/// stream through a shared subscription. One is killed with -9 mid-stream
/// and comes back (as systemd restarts it): every frame is stored once,
/// nothing is lost, and each alarm is raised once.
#[test]
fn a_central_instance_killed_mid_stream_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(&dir.path().join("pg"));
    let url = pg.create_db("centre2");
    let cfg = format!("[store]\npostgres_url = \"{url}\"\n\n[centre]\ngroup = \"centre\"\n");
    let broker = Mosquitto::start(&dir.path().join("broker"));
    let mut a = daemon(&dir.path().join("a"), broker.port, "cc-centre-a", &cfg);
    let b = daemon(&dir.path().join("b"), broker.port, "cc-centre-b", &cfg);
    let t0 = now_ms() - 6 * H;
    create_shipment(&b, "SPLIT-1", t0);
    let frames = two_excursions("fridge-pg", t0);
    for (i, f) in frames.iter().enumerate() {
        if i == 9 {
            a.kill9();
        }
        mosquitto_pub_lines(broker.port, TOPIC, std::slice::from_ref(f)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // B took its share; A's share waits in its session on the broker.
    let b_share = b.stat("readings_stored");
    assert!(b_share > 0, "the stream was split: B stored {b_share}");
    a.restart();
    wait_for(
        std::time::Duration::from_secs(60),
        "every frame stored",
        || {
            (pg.psql("centre2", "SELECT count(*) FROM kv WHERE tree = 'frames'")
                .ok()?
                == "25")
                .then_some(())
        },
    );
    wait_for(
        std::time::Duration::from_secs(120),
        "H1 and H3 raised",
        || {
            (zone_alerts(&b, "SPLIT-1", "H1") >= 1 && zone_alerts(&b, "SPLIT-1", "H3") >= 1)
                .then_some(())
        },
    );
    assert_eq!(b.all_readings("fridge-pg").len(), 250, "nothing lost");
    // A pass of both instances later: exactly the alarms of the complete
    // data stand, each once. While A's share waited on the broker, B saw the
    // stream with holes and may have raised an alarm the complete data
    // disproves (a hot frame followed by a hole looks like a long
    // excursion); such an alarm is withdrawn in the open, with its reason,
    // never deleted and never left standing beside the true one.
    std::thread::sleep(std::time::Duration::from_secs(3));
    for d in [&a, &b] {
        let (standing, withdrawn) = standing_and_withdrawn(d, "SPLIT-1");
        assert_eq!(
            standing,
            vec![
                ("H1".to_string(), t0 + 90 * MIN),
                ("H3".to_string(), t0 + 200 * MIN)
            ],
            "the alarms of the complete data, each once; withdrawn: {withdrawn:?}"
        );
        for (zone, reason) in &withdrawn {
            assert!(
                reason.contains("later data"),
                "a withdrawn {zone} alarm says why: {reason:?}"
            );
        }
    }
    assert!(
        a.stat("readings_stored") > 0,
        "A stored its share after its restart"
    );
}

/// A container's flash was reset without its boot counter moving on: it
/// sends a sequence number already stored with other readings. The first
/// frame was stored by instance A; B, which last saw the device before that,
/// receives the reuse. It is refused as a reuse and the readings first
/// stored stay (B asks the shared store, not its own memory of the device).
#[test]
fn a_sequence_reused_at_another_instance_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let Pair {
        pg: _pg,
        broker_a,
        broker_b,
        a,
        b,
    } = pair(dir.path(), "reuse");
    let t0 = now_ms() - H;
    let reading = |i: i64, v: i32| vec![(t0 + i * MIN, Some(v))];
    // B sees the device's first frame; A stores the next ones.
    mosquitto_pub_lines(
        broker_b.port,
        TOPIC,
        &[json_frame("fridge-pg", 1, 0, &reading(0, 5_000))],
    )
    .unwrap();
    wait_for(Duration::from_secs(30), "B stores seq 0", || {
        (b.stat("frames_stored") == 1).then_some(())
    });
    let first: Vec<String> = (1..4)
        .map(|i| json_frame("fridge-pg", 1, i as u32, &reading(i, 5_000)))
        .collect();
    mosquitto_pub_lines(broker_a.port, TOPIC, &first).unwrap();
    wait_for(Duration::from_secs(30), "A stores seq 1-3", || {
        (a.stat("frames_stored") == 3).then_some(())
    });
    // Seq 3 again, with other readings, at B.
    mosquitto_pub_lines(
        broker_b.port,
        TOPIC,
        &[json_frame("fridge-pg", 1, 3, &reading(30, 12_000))],
    )
    .unwrap();
    wait_for(Duration::from_secs(30), "B refuses the reuse", || {
        (b.stat("rejected.sequence_reuse") == 1).then_some(())
    });
    assert_eq!(b.stat("frames_stored"), 1, "B stored only seq 0");
    let rows = a.all_readings("fridge-pg");
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert!(
        rows.iter().all(|r| r["value"] == json!({"valid": 5_000})),
        "the readings first stored stay: {rows:?}"
    );
}

/// A shipment is closed through the instance that does not evaluate it
/// (the other holds its lease): both instances' lists show it closed, and
/// the holder hears of the new record at once rather than at its next full
/// pass (a closed shipment is not evaluated any more, so without that the
/// holder's summary, and the shared one, said "arrived" for ever).
#[test]
fn a_shipment_closed_through_either_instance_is_listed_closed_by_both() {
    let dir = tempfile::tempdir().unwrap();
    let Pair {
        pg: _pg,
        broker_a: _broker_a,
        broker_b,
        a,
        b,
    } = pair(dir.path(), "close");
    let t0 = now_ms() - H;
    // Created on B: B takes its lease and evaluates it.
    create_shipment(&b, "CLOSE-1", t0);
    let frames: Vec<String> = (0..3)
        .map(|i| json_frame("fridge-pg", 1, i, &[(t0 + i64::from(i) * MIN, Some(5_000))]))
        .collect();
    mosquitto_pub_lines(broker_b.port, TOPIC, &frames).unwrap();
    let state = |d: &Daemon| -> Option<String> {
        d.get("/api/v1/shipments")
            .as_array()?
            .iter()
            .find(|r| r["shipment"]["id"] == "CLOSE-1")
            .and_then(|r| r["shipment"]["state"].as_str().map(String::from))
    };
    wait_for(Duration::from_secs(30), "A lists B's shipment", || {
        (state(&a).as_deref() == Some("in_transit")).then_some(())
    });
    // Arrived and closed through A, by a QA person's signature.
    post(&a, "/api/v1/shipments/CLOSE-1/arrive", json!({"by": "lab"}));
    post(
        &a,
        "/api/v1/users",
        json!({"name": "qa", "full_name": "Quality Lead", "role": "qa", "password": "qa lead password"}),
    );
    let qa = post(&a, "/api/v1/tokens", json!({"label": "t", "user": "qa"}))["token"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, closed) = http_post(
        a.http_port,
        "/api/v1/shipments/CLOSE-1/close",
        Some(&qa),
        &json!({"decision": "quarantined", "comment": "held for review", "password": "qa lead password"}),
    );
    assert_eq!(s, 200, "{closed}");
    for (name, d) in [("A", &a), ("B", &b)] {
        wait_for(
            Duration::from_secs(60),
            &format!("{name} lists it closed"),
            || (state(d).as_deref() == Some("closed")).then_some(()),
        );
    }
    // And it stays so (nothing rewrites an older record over it).
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(state(&a).as_deref(), Some("closed"));
    assert_eq!(state(&b).as_deref(), Some("closed"));
}
