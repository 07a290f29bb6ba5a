//! Across sites: real Mosquitto brokers for gateway A, gateway B and the
//! centre, a real daemon on each. Gateways forward to the centre's broker
//! (`[upstream]`); the centre (`[centre]`) takes what they forward through
//! shared subscriptions, verifies every frame with its device's own key,
//! stores it once by (device, boot, seq) and records which way it came.
//! Shipments created or changed at a site reach the centre, and the centre's
//! records reach the gateways.
//!
//! The centre of the journey, three-paths and outage tests is what a company
//! with many sites runs: two daemon instances sharing one real PostgreSQL
//! database, splitting the gateways' stream through the shared
//! subscription (either instance may store any frame; the one holding a
//! shipment's lease evaluates it). The refusal and dashboard tests use one
//! centre daemon on sled, a small fleet's centre.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use coldchain_proto::codec::{MAX_SIGNED_LEN, encode_signed};
use coldchain_proto::{
    Body, ChannelKind, DeviceId, DeviceKey, Frame, Measurement, Reading, Timestamp,
};
use coldchain_tests::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const MIN: i64 = 60_000;
const H: i64 = 3_600_000;
const DEV: &str = "carrier-1";
/// A second container, for the fleet view.
const DEV2: &str = "carrier-2";
const LONG: Duration = Duration::from_secs(90);

/// One reading a minute from `t0`, 12 to a frame; 9.5 °C from minute 90 to
/// 130 (an H1 excursion on the fridge lane), 5 °C otherwise.
fn readings(t0: i64, n: i64) -> Vec<(i64, i32)> {
    (0..n)
        .map(|i| {
            (
                t0 + i * MIN,
                if (90..130).contains(&i) { 9_500 } else { 5_000 },
            )
        })
        .collect()
}

/// Signed binary frames (the device's own bytes), 12 readings each.
fn frames(t0: i64, n: i64) -> Vec<Vec<u8>> {
    frames_of(DEV, t0, n)
}

/// [`frames`] of device `dev`.
fn frames_of(dev: &str, t0: i64, n: i64) -> Vec<Vec<u8>> {
    let key = DeviceKey::from_hex(TEST_KEY).unwrap();
    readings(t0, n)
        .chunks(12)
        .enumerate()
        .map(|(seq, c)| {
            let rs: Vec<Reading> = c
                .iter()
                .map(|&(t, v)| Reading {
                    channel: 0,
                    kind: ChannelKind::Rtd,
                    dt_ms: (t - c[0].0) as u32,
                    value: Measurement::Valid(v),
                })
                .collect();
            let f = Frame {
                device: DeviceId::new(dev).unwrap(),
                boot: 1,
                seq: seq as u32,
                time: Timestamp::Wall(c[0].0 as u64),
                body: Body::Readings(heapless::Vec::from_slice(&rs).unwrap()),
            };
            let mut buf = [0u8; MAX_SIGNED_LEN];
            encode_signed(&f, &key, &mut buf).unwrap().to_vec()
        })
        .collect()
}

fn publish(port: u16, topic: &str, frames: &[Vec<u8>]) {
    for f in frames {
        mosquitto_pub(port, topic, f).unwrap();
    }
}

/// Where the centre keeps its record.
#[derive(Clone, Copy, PartialEq)]
enum CentreStore {
    /// One daemon on sled (a small fleet's centre).
    Sled,
    /// Two daemon instances sharing one PostgreSQL database; the gateways'
    /// stream is split between them through the shared subscription.
    Postgres,
}

/// The centre's broker and daemon(s), and gateways forwarding to it.
/// Fields drop in order: the daemons stop before the broker and the
/// database they use.
struct Fleet {
    /// The first instance: the one the tests ask (any instance answers for
    /// the whole centre).
    centre: Daemon,
    /// The other instances (on PostgreSQL).
    others: Vec<Daemon>,
    centre_broker: Mosquitto,
    _pg: Option<Postgres>,
}

impl Fleet {
    /// A counter summed over the centre's instances.
    fn stat(&self, path: &str) -> u64 {
        std::iter::once(&self.centre)
            .chain(&self.others)
            .map(|d| d.stat(path))
            .sum()
    }

    /// Stops every instance of the centre.
    fn stop_centre(&mut self) {
        for d in std::iter::once(&mut self.centre).chain(&mut self.others) {
            d.stop();
        }
    }

    /// Starts every instance of the centre again.
    fn restart_centre(&mut self) {
        for d in std::iter::once(&mut self.centre).chain(&mut self.others) {
            d.restart();
        }
    }
}

fn start_centre(dir: &Path, store: CentreStore) -> Fleet {
    let centre_broker = Mosquitto::start(&dir.join("centre-broker"));
    let (pg, extra) = match store {
        CentreStore::Sled => (None, String::new()),
        CentreStore::Postgres => {
            let pg = Postgres::start(&dir.join("centre-pg"));
            let url = pg.create_db("centre");
            (Some(pg), format!("[store]\npostgres_url = \"{url}\"\n\n"))
        }
    };
    let instance = |name: &str| {
        Daemon::start_with(
            &dir.join(name),
            centre_broker.port,
            &[DeviceCfg::new(DEV), DeviceCfg::new(DEV2)],
            &DaemonOpts {
                mqtt: format!("client_id = \"{name}\""),
                http: format!("token = \"{TEST_TOKEN}\""),
                extra: format!("{extra}[centre]\ngroup = \"centre\"\n"),
                ..DaemonOpts::default()
            },
        )
    };
    let centre = instance("centre");
    let others = match store {
        CentreStore::Sled => Vec::new(),
        CentreStore::Postgres => vec![instance("centre-2")],
    };
    Fleet {
        centre,
        others,
        centre_broker,
        _pg: pg,
    }
}

/// A gateway `id` with its own broker, forwarding to the centre's broker.
fn start_gateway(dir: &Path, id: &str, centre_port: u16, extra: &str) -> (Mosquitto, Daemon) {
    let broker = Mosquitto::start(&dir.join(format!("{id}-broker")));
    let d = Daemon::start_with(
        &dir.join(id),
        broker.port,
        &[DeviceCfg::new(DEV), DeviceCfg::new(DEV2)],
        &DaemonOpts {
            // Each gateway its own client ids on the centre's broker.
            mqtt: format!("client_id = \"{id}\""),
            http: format!("token = \"{TEST_TOKEN}\""),
            extra: format!(
                "[upstream]\nhost = \"127.0.0.1\"\nport = {centre_port}\nprefix = \"coldchain/v1/edge/{id}\"\ncentre_group = \"centre\"\n\n{extra}"
            ),
            ..DaemonOpts::default()
        },
    );
    wait_daemon_online(broker.port, &[]);
    (broker, d)
}

fn post(d: &Daemon, path: &str, body: Value) -> Value {
    let (status, v) = http_post(d.http_port, path, Some(TEST_TOKEN), &body);
    assert!((200..300).contains(&status), "POST {path} -> {status}: {v}");
    v
}

fn shipment(d: &Daemon, id: &str) -> Option<Value> {
    let v = http_get(d.http_port, &format!("/api/v1/shipments/{id}")).ok()?;
    v.get("evaluation").is_some().then_some(v)
}

fn new_shipment(id: &str, t0: i64) -> Value {
    new_shipment_of(id, DEV, t0)
}

fn new_shipment_of(id: &str, dev: &str, t0: i64) -> Value {
    json!({
        "id": id, "product": "CAR-T, 1 bag", "profile": "fridge",
        "watch": [{"device": dev, "channel": 0}],
        "origin": "Site A", "destination": "Site B",
        "departure_ms": t0, "window_h": 48.0, "eta_ms": t0 + 3 * H,
    })
}

/// A pty whose slave is at `link`: the docking port of a site's gateway.
struct Dock {
    master: File,
    _slave: OwnedFd,
}

impl Dock {
    fn open(link: &Path) -> Dock {
        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        let p = nix::pty::openpty(None, None).unwrap();
        let name = nix::unistd::ttyname(&p.slave).unwrap();
        std::os::unix::fs::symlink(&name, link).unwrap();
        let flags = fcntl(&p.master, FcntlArg::F_GETFL).unwrap();
        fcntl(
            &p.master,
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
        )
        .unwrap();
        Dock {
            master: File::from(p.master),
            _slave: p.slave,
        }
    }

    /// The logger dumps its frames (COBS lines), as a docked container does.
    fn dump(&mut self, frames: &[Vec<u8>]) {
        for f in frames {
            let mut out = [0u8; coldchain_proto::serial::MAX_FRAME_LEN];
            let n = coldchain_proto::serial::encode(f, &mut out).unwrap();
            self.master.write_all(&out[..n]).unwrap();
        }
    }

    /// Reads (and drops) what the daemon sent back: acks and time syncs.
    fn drain(&mut self) {
        let mut buf = [0u8; 512];
        while matches!(self.master.read(&mut buf), Ok(n) if n > 0) {}
    }
}

/// What must be the same in two reports of the same data: everything but
/// the daemon's own bookkeeping (when it created the shipment record, its
/// alert ids and when it raised or revised them) and the alarms it raised
/// on the way and withdrew in the open when later data disproved them (a
/// centre whose instances store a gateway's frames in parallel may, for a
/// moment, see them with holes; the report keeps that history, but the
/// alarms that stand are those of the complete data).
fn comparable(report: &Value) -> Value {
    let d = &report["data"];
    let mut journey = d["journey"].clone();
    journey["created_ms"] = Value::Null;
    let alerts: Vec<Value> = d["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["state"] != "withdrawn")
        .map(|a| {
            json!({
                "kind": a["kind"], "severity": a["severity"], "message": a["message"],
                "state": a["state"], "fires_ms": a["fires_ms"], "cleared_ms": a["cleared_ms"],
            })
        })
        .collect();
    json!({
        "as_of_ms": d["as_of_ms"],
        "identity": d["identity"],
        "journey": journey,
        "temperature": d["temperature"],
        "data_health": d["data_health"],
        "viability": d["viability"],
        "alerts": alerts,
        "facts": d["facts"],
        "readings_sha256": hex::encode(Sha256::digest(d["readings"].to_string().as_bytes())),
    })
}

fn report(d: &Daemon, id: &str) -> Value {
    d.get(&format!("/api/v1/shipments/{id}/report?format=json"))
}

/// (a) A shipment leaves site A: A's gateway hears the first half live and
/// forwards it. The container is docked at site B, which is cut off from
/// the centre at the time: B already has the shipment (the centre published
/// it), matches the serial dump of the rest to it and evaluates it there;
/// the receiving lab records a hand-off and the arrival. Once B is back, the
/// centre's report is the report one daemon gives with all the data.
#[test]
fn a_shipment_heard_at_a_and_docked_at_b_gives_the_centre_the_whole_report() {
    let dir = tempfile::tempdir().unwrap();
    let mut fleet = start_centre(dir.path(), CentreStore::Postgres);
    let cport = fleet.centre_broker.port;
    let (a_broker, gw_a) = start_gateway(dir.path(), "gw-a", cport, "");
    let link = dir.path().join("dock-b");
    let mut dock = Dock::open(&link);
    let (_b_broker, gw_b) = start_gateway(
        dir.path(),
        "gw-b",
        cport,
        &format!("[[serial]]\npath = \"{}\"\nbaud = 115200\n", link.display()),
    );

    let t0 = now_ms() - 4 * H;
    let all = frames(t0, 150);
    assert_eq!(all.len(), 13);
    let (first, rest) = all.split_at(6);

    // Created and handed to the courier at the origin.
    post(&gw_a, "/api/v1/shipments", new_shipment("CART-1", t0));
    post(
        &gw_a,
        "/api/v1/shipments/CART-1/handoff",
        json!({"to": "courier", "location": "Site A dock", "at_ms": t0 + 30 * MIN}),
    );
    // Known at the centre, and through it at the destination.
    wait_for(LONG, "the centre to know the shipment", || {
        shipment(&fleet.centre, "CART-1").filter(|s| {
            s["evaluation"]["shipment"]["handoffs"]
                .as_array()
                .map(Vec::len)
                == Some(1)
        })
    });
    wait_for(LONG, "site B to know the shipment", || {
        shipment(&gw_b, "CART-1")
    });

    // The first half, live at A, forwarded to the centre.
    publish(a_broker.port, &format!("coldchain/v1/dev/{DEV}/up"), first);
    wait_for(LONG, "the first half at the centre", || {
        (fleet.stat("frames_stored") >= first.len() as u64).then_some(())
    });

    // Site B loses the centre; the container is docked there.
    fleet.centre_broker.stop();
    dock.dump(rest);
    let at_b = wait_for(LONG, "the dump evaluated at B", || {
        dock.drain();
        shipment(&gw_b, "CART-1")
            .filter(|s| s["evaluation"]["readings"].as_u64() == Some(150 - 6 * 12))
    });
    assert_eq!(at_b["evaluation"]["shipment"]["origin"], "Site A");
    post(
        &gw_b,
        "/api/v1/shipments/CART-1/handoff",
        json!({"to": "cell lab", "location": "Site B", "at_ms": t0 + 140 * MIN}),
    );
    post(
        &gw_b,
        "/api/v1/shipments/CART-1/arrive",
        json!({"at_ms": t0 + 150 * MIN}),
    );

    // B is back: the centre catches up from B's forward queue.
    fleet.centre_broker.restart();
    // (What the store holds, not the instances' counters: two instances
    // may both count a frame a gateway resent after the outage, and only
    // one of them stores it.)
    wait_for(LONG, "the centre to have everything", || {
        let s = shipment(&fleet.centre, "CART-1")?;
        (s["evaluation"]["readings"] == 150
            && s["evaluation"]["shipment"]["state"] == "arrived"
            && s["evaluation"]["shipment"]["handoffs"].as_array()?.len() == 2)
            .then_some(s)
    });
    assert_eq!(
        fleet.centre.all_readings(DEV).len(),
        150,
        "each reading once"
    );

    // One daemon with all the data and the same journey.
    let ref_broker = Mosquitto::start(&dir.path().join("ref-broker"));
    let reference = Daemon::start_with(
        &dir.path().join("ref"),
        ref_broker.port,
        &[DeviceCfg::new(DEV), DeviceCfg::new(DEV2)],
        &DaemonOpts {
            http: format!("token = \"{TEST_TOKEN}\""),
            ..DaemonOpts::default()
        },
    );
    post(&reference, "/api/v1/shipments", new_shipment("CART-1", t0));
    post(
        &reference,
        "/api/v1/shipments/CART-1/handoff",
        json!({"to": "courier", "location": "Site A dock", "at_ms": t0 + 30 * MIN}),
    );
    post(
        &reference,
        "/api/v1/shipments/CART-1/handoff",
        json!({"to": "cell lab", "location": "Site B", "at_ms": t0 + 140 * MIN}),
    );
    publish(ref_broker.port, &format!("coldchain/v1/dev/{DEV}/up"), &all);
    wait_for(LONG, "the reference to store everything", || {
        (reference.stat("frames_stored") == all.len() as u64).then_some(())
    });
    post(
        &reference,
        "/api/v1/shipments/CART-1/arrive",
        json!({"at_ms": t0 + 150 * MIN}),
    );

    // The same report (alerts are raised by each evaluation as data lands).
    let same = wait_for(LONG, "both reports to have the H1 alert", || {
        let (c, r) = (
            comparable(&report(&fleet.centre, "CART-1")),
            comparable(&report(&reference, "CART-1")),
        );
        let h1 = |v: &Value| {
            v["alerts"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x["kind"] == "H1"))
        };
        (h1(&c) && h1(&r)).then_some((c, r))
    });
    assert_eq!(same.0, same.1, "centre vs one daemon with all the data");
    let c = &same.0;
    assert_eq!(c["data_health"]["readings"], 150);
    assert_eq!(c["data_health"]["sequence_gaps"], json!([]));
    assert_eq!(c["data_health"]["devices"][0]["frames_verified"], 13);

    // The fleet view: the shipment was seen through both gateways, and the
    // list filters on it.
    // (An instance that does not evaluate the shipment lists it as the one
    // that does last wrote it: a few seconds behind at most.)
    wait_for(LONG, "the list to show both gateways", || {
        let list = fleet.centre.get("/api/v1/shipments");
        (list[0]["seen_through"] == json!(["gw-a", "gw-b"])).then_some(())
    });
    for (site, n) in [("gw-a", 1), ("gw-b", 1), ("direct", 0), ("gw-x", 0)] {
        let l = fleet.centre.get(&format!("/api/v1/shipments?site={site}"));
        assert_eq!(l.as_array().unwrap().len(), n, "site {site}: {l}");
    }
    let sites = fleet.centre.get("/api/v1/sites");
    assert_eq!(sites["gw-a"]["frames"], 6, "{sites}");
    assert_eq!(sites["gw-b"]["frames"], 7, "{sites}");
    // At B the docked frames came by serial.
    let b_sites = gw_b.get("/api/v1/sites");
    assert_eq!(b_sites["serial"]["frames"], 7, "{b_sites}");
    // The centre's record is back at the origin too.
    wait_for(LONG, "site A to learn the arrival at B", || {
        shipment(&gw_a, "CART-1").filter(|s| s["evaluation"]["shipment"]["state"] == "arrived")
    });
}

/// (b) The same frames forwarded by two gateways and published directly to
/// the centre's broker are stored once, with every way they came recorded.
#[test]
fn the_same_frames_through_two_gateways_and_directly_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = start_centre(dir.path(), CentreStore::Postgres);
    let cport = fleet.centre_broker.port;
    let (a_broker, gw_a) = start_gateway(dir.path(), "gw-a", cport, "");
    let (b_broker, gw_b) = start_gateway(dir.path(), "gw-b", cport, "");
    let t0 = now_ms() - 2 * H;
    // Created at the centre: known at the gateways too.
    post(
        &fleet.centre,
        "/api/v1/shipments",
        new_shipment("CART-2", t0),
    );
    for gw in [&gw_a, &gw_b] {
        wait_for(LONG, "a gateway to know the centre's shipment", || {
            shipment(gw, "CART-2")
        });
    }
    let fs = frames(t0, 120);
    let n = fs.len() as u64;
    let topic = format!("coldchain/v1/dev/{DEV}/up");
    publish(a_broker.port, &topic, &fs);
    publish(b_broker.port, &topic, &fs);
    publish(cport, &topic, &fs);

    let sites = wait_for(LONG, "every path to have brought every frame", || {
        let s = http_get(fleet.centre.http_port, "/api/v1/sites").ok()?;
        ["gw-a", "gw-b", "direct"]
            .iter()
            .all(|p| s[p]["frames"].as_u64() == Some(n))
            .then_some(s)
    });
    let rep = report(&fleet.centre, "CART-2");
    assert_eq!(
        rep["data"]["data_health"]["devices"][0]["frames_verified"], n,
        "stored once: {sites}"
    );
    // Every delivery was taken as stored or as a duplicate (two instances
    // that take the same frame at the same moment may both count it
    // stored; the store holds it once, as checked above).
    assert!(fleet.stat("frames_stored") + fleet.stat("duplicates") >= 3 * n);
    let rows = fleet.centre.all_readings(DEV);
    assert_eq!(rows.len(), 120);
    assert_eq!(reading_ids(&rows).len(), 120);
    wait_for(LONG, "the list to show every path", || {
        let list = fleet.centre.get("/api/v1/shipments?site=gw-b");
        (list[0]["seen_through"] == json!(["direct", "gw-a", "gw-b"])).then_some(())
    });
}

/// (c) The centre's broker is down for a while in the middle of a stream and
/// while the origin records a hand-off; the centre's daemon is restarted
/// too, and comes back after its broker (which, restarted, has forgotten the
/// centre's shared subscriptions until the daemon subscribes again): once
/// both are back, the centre has every reading the gateway has, and the
/// hand-off.
#[test]
fn the_centres_broker_down_for_a_while_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut fleet = start_centre(dir.path(), CentreStore::Postgres);
    let cport = fleet.centre_broker.port;
    let (a_broker, gw_a) = start_gateway(dir.path(), "gw-a", cport, "");
    let t0 = now_ms() - 3 * H;
    post(&gw_a, "/api/v1/shipments", new_shipment("CART-3", t0));
    let fs = frames(t0, 180);
    let topic = format!("coldchain/v1/dev/{DEV}/up");
    let (before, rest) = fs.split_at(5);
    let (during, after) = rest.split_at(5);
    publish(a_broker.port, &topic, before);
    wait_for(LONG, "the first frames at the centre", || {
        (fleet.stat("frames_stored") >= before.len() as u64).then_some(())
    });

    fleet.centre_broker.stop();
    publish(a_broker.port, &topic, during);
    post(
        &gw_a,
        "/api/v1/shipments/CART-3/handoff",
        json!({"to": "courier", "location": "hub", "at_ms": t0 + H}),
    );
    wait_for(LONG, "the gateway to store during the outage", || {
        (gw_a.stat("frames_stored") >= (before.len() + during.len()) as u64).then_some(())
    });
    fleet.stop_centre();
    fleet.centre_broker.restart();
    publish(a_broker.port, &topic, after);
    wait_for(LONG, "the gateway to store everything", || {
        (gw_a.stat("frames_stored") == fs.len() as u64).then_some(())
    });
    // The gateway is connected to the centre's broker again before the
    // centre's daemon is; give it time to (wrongly) send its backlog.
    wait_for(LONG, "the gateway to reconnect upstream", || {
        gw_a.logs()
            .matches("forwarding: connected")
            .nth(1)
            .map(|_| ())
    });
    std::thread::sleep(Duration::from_secs(3));
    fleet.restart_centre();

    let want = reading_ids(&gw_a.all_readings(DEV));
    assert_eq!(want.len(), 180);
    wait_for(LONG, "the centre to have every reading", || {
        (reading_ids(&fleet.centre.all_readings(DEV)) == want).then_some(())
    });
    assert_eq!(
        fleet.centre.all_readings(DEV).len(),
        180,
        "each reading once"
    );
    let s = wait_for(LONG, "the hand-off at the centre", || {
        shipment(&fleet.centre, "CART-3").filter(|s| {
            s["evaluation"]["shipment"]["handoffs"]
                .as_array()
                .map(Vec::len)
                == Some(1)
        })
    });
    assert_eq!(s["evaluation"]["shipment"]["handoffs"][0]["to"], "courier");
    assert_eq!(s["evaluation"]["readings"], 180);
}

/// (d) A frame a gateway altered (a reading changed, the device's tag kept)
/// is refused by the centre, counted against that gateway and recorded as a
/// security event of the device; the genuine frame, forwarded by another
/// gateway, is stored.
#[test]
fn a_frame_altered_by_a_gateway_is_refused_by_the_centre() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = start_centre(dir.path(), CentreStore::Sled);
    let cport = fleet.centre_broker.port;
    let t0 = now_ms() - H;
    let genuine = frames(t0, 12).remove(0);
    // The last reading's value is the last varint before the 32-byte tag:
    // change it, keep the tag.
    let mut altered = genuine.clone();
    let i = altered.len() - 33;
    altered[i] ^= 0x02;
    assert_ne!(altered, genuine);

    mosquitto_pub(
        cport,
        &format!("coldchain/v1/edge/gw-evil/dev/{DEV}/up"),
        &altered,
    )
    .unwrap();
    wait_for(LONG, "the altered frame refused", || {
        (fleet.stat("rejected.bad_tag") == 1).then_some(())
    });
    mosquitto_pub(
        cport,
        &format!("coldchain/v1/edge/gw-good/dev/{DEV}/up"),
        &genuine,
    )
    .unwrap();
    wait_for(LONG, "the genuine frame stored", || {
        (fleet.stat("frames_stored") == 1).then_some(())
    });
    let rows = fleet.centre.all_readings(DEV);
    assert_eq!(rows.len(), 12);
    assert!(
        rows.iter().all(|r| r["value"] == json!({"valid": 5_000})),
        "the stored values are the device's: {rows:?}"
    );
    let sites = fleet.centre.get("/api/v1/sites");
    assert_eq!(
        sites["gw-evil"]["refused"]["by_reason"]["bad_tag"], 1,
        "{sites}"
    );
    assert_eq!(sites["gw-evil"]["refused"]["last_device"], DEV, "{sites}");
    assert_eq!(sites["gw-evil"]["frames"], 0, "{sites}");
    assert_eq!(sites["gw-good"]["frames"], 1, "{sites}");
    assert!(sites["gw-good"].get("refused").is_none(), "{sites}");
    let logs = fleet.centre.logs();
    assert!(
        logs.contains("forwarded by gateway gw-evil was refused (bad_tag)"),
        "{logs}"
    );
}

/// The fleet view in a real browser (Debian's chromium driven by
/// playwright-core, tests/web/sites.mjs): the centre's dashboard lists
/// every site's shipments with the gateways their data came through, and
/// the filter by site narrows the list, keeps the choice in the address and
/// across the page's polling. Screenshots in target/screenshots/.
#[test]
fn the_centres_dashboard_shows_and_filters_by_site_in_chromium() {
    let chromium = which("chromium").unwrap_or_else(|| {
        panic!("chromium not installed: run tests/run.sh, or apt-get install chromium")
    });
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    assert!(
        web.join("node_modules/playwright-core").is_dir(),
        "playwright-core missing: run tests/run.sh, or (cd tests/web && npm ci)"
    );
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let fleet = start_centre(dir.path(), CentreStore::Sled);
    let cport = fleet.centre_broker.port;
    let (a_broker, _gw_a) = start_gateway(dir.path(), "gw-a", cport, "");
    let (b_broker, _gw_b) = start_gateway(dir.path(), "gw-b", cport, "");
    let t0 = now_ms() - 2 * H;
    post(
        &fleet.centre,
        "/api/v1/shipments",
        new_shipment_of("CART-A", DEV, t0),
    );
    post(
        &fleet.centre,
        "/api/v1/shipments",
        new_shipment_of("CART-B", DEV2, t0),
    );
    // CART-A's container is heard at site A, CART-B's at site B.
    publish(
        a_broker.port,
        &format!("coldchain/v1/dev/{DEV}/up"),
        &frames_of(DEV, t0, 60),
    );
    publish(
        b_broker.port,
        &format!("coldchain/v1/dev/{DEV2}/up"),
        &frames_of(DEV2, t0, 60),
    );
    let api = wait_for(LONG, "both shipments' paths at the centre", || {
        let l = http_get(fleet.centre.http_port, "/api/v1/shipments").ok()?;
        let sites = |id: &str| {
            l.as_array()?
                .iter()
                .find(|r| r["shipment"]["id"] == id)
                .map(|r| r["seen_through"].clone())
        };
        (sites("CART-A") == Some(json!(["gw-a"])) && sites("CART-B") == Some(json!(["gw-b"])))
            .then_some(l)
    });

    let out = std::process::Command::new("node")
        .arg(web.join("sites.mjs"))
        .current_dir(&web)
        .env(
            "BASE",
            format!("http://127.0.0.1:{}", fleet.centre.http_port),
        )
        .env("OUT", shots.canonicalize().unwrap())
        .env("CHROMIUM", &chromium)
        .output()
        .expect("run node tests/web/sites.mjs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "browser run failed: {}\nstdout: {stdout}\nstderr: {}\napi: {api}\ncentre log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        fleet.centre.logs()
    );
    let r: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("driver output {stdout:?}: {e}"));
    // The column: each row names the gateway its data came through.
    assert_eq!(r["all"], json!({"CART-A": "gw-a", "CART-B": "gw-b"}), "{r}");
    assert_eq!(
        r["header"],
        json!([
            "Shipment",
            "Lane",
            "Sites",
            "State",
            "Last",
            "Min / max",
            "Window left",
            "Alerts"
        ]),
        "{r}"
    );
    // The filter offers every site seen and narrows the list.
    assert_eq!(r["options"], json!(["", "gw-a", "gw-b"]), "{r}");
    assert!(
        r["filtered_url"].as_str().unwrap().ends_with("/?site=gw-b"),
        "{r}"
    );
    assert_eq!(r["filtered"], json!({"CART-B": "gw-b"}), "{r}");
    assert_eq!(r["selected"], "gw-b", "{r}");
    // Still filtered after the page polled its fragment.
    assert!(r["polled"].as_str().unwrap().starts_with("updated"), "{r}");
    assert_eq!(r["after_poll"], json!({"CART-B": "gw-b"}), "{r}");
    assert_eq!(r["poll_src"], "/ui/list?site=gw-b", "{r}");
    // And back to every site.
    assert_eq!(r["back"], r["all"], "{r}");
    assert_eq!(r["page_errors"], json!([]), "{r}");
    assert_eq!(r["bad_responses"], json!([]), "{r}");
}
