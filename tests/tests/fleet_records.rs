//! Shipment records merged by two centre instances sharing one PostgreSQL
//! database (real PostgreSQL, real Mosquitto): each instance has its own
//! connection pool, its own `Sites` and its own outbox delivery task, as two
//! `coldchain` processes would. For each of 40 shipments, a record from
//! gateway A (a hand-off to the courier) and one from gateway B (a hand-off
//! to the lab, and the arrival) are merged at the same moment, one on each
//! instance: every stored record must hold both, and the record each
//! shipment has retained on the broker (what gateways learn) must be the
//! stored one.

use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use coldchain_daemon::audit::Audit;
use coldchain_daemon::config::Config;
use coldchain_daemon::forward::Forward;
use coldchain_daemon::kv::{Db, PgDb};
use coldchain_daemon::outbox::{self, Outbox};
use coldchain_daemon::shipment::{
    Decision, Disposition, Handoff, NewShipment, Shipment, Shipments, State, Watch,
};
use coldchain_daemon::sites::{Incoming, Sites};
use coldchain_tests::*;

const N: usize = 40;
const H: i64 = 3_600_000;

struct Instance {
    cfg: Config,
    sites: Sites,
    shipments: Shipments,
    outbox: Outbox,
}

fn instance(url: &str, name: &str, broker_port: u16, data: &std::path::Path) -> Instance {
    let db = Db::Pg(PgDb::connect(url, 2).unwrap());
    let cfg = Config::parse(&format!(
        "[daemon]\nid = \"{name}\"\ndata_dir = \"{}\"\n\n[mqtt]\nport = {broker_port}\nclient_id = \"{name}\"\n\n[centre]\ngroup = \"centre\"\n",
        data.join(name).display()
    ))
    .unwrap();
    let outbox = Outbox::open(&db).unwrap();
    let sites = Sites::new(
        cfg.clone(),
        Arc::new(Audit::open(&db).unwrap()),
        Forward::open(&db, None).unwrap(),
        outbox.clone(),
    );
    Instance {
        cfg,
        sites,
        shipments: Shipments::open(&db).unwrap(),
        outbox,
    }
}

fn base(i: usize, t0: i64) -> Shipment {
    Shipment::create(
        NewShipment {
            id: format!("S{i:02}"),
            product: "CAR-T, 1 bag".into(),
            din: None,
            product_code: None,
            profile: "fridge".into(),
            watch: vec![Watch {
                device: "carrier-1".into(),
                channel: 0,
            }],
            origin: "Site A".into(),
            destination: "Site B".into(),
            eta_ms: None,
            collection_ms: None,
            window_h: None,
            departure_ms: Some(t0),
        },
        t0 - H,
    )
    .unwrap()
}

fn handoff(to: &str, at_ms: i64) -> Handoff {
    Handoff {
        to: to.into(),
        location: format!("{to} desk"),
        at_ms,
        by: "someone".into(),
    }
}

fn record(from: &str, s: &Shipment) -> Incoming {
    Incoming {
        from: from.into(),
        payload: serde_json::to_vec(s).unwrap(),
        ack: None,
    }
}

#[test]
fn two_instances_merging_the_same_shipments_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(&dir.path().join("pg"));
    let url = pg.create_db("centre");
    let broker = Mosquitto::start(&dir.path().join("broker"));
    let a = instance(&url, "centre-1", broker.port, dir.path());
    let b = instance(&url, "centre-2", broker.port, dir.path());
    let t0 = now_ms() - 4 * H;

    let barrier = Barrier::new(2);
    std::thread::scope(|sc| {
        for (inst, from) in [(&a, "gw-a"), (&b, "gw-b")] {
            let barrier = &barrier;
            sc.spawn(move || {
                for i in 0..N {
                    let mut s = base(i, t0);
                    if from == "gw-a" {
                        s.handoff(handoff("courier", t0 + 10 * 60_000)).unwrap();
                    } else {
                        s.handoff(handoff("lab", t0 + 3 * H)).unwrap();
                        s.arrive(t0 + 3 * H).unwrap();
                    }
                    barrier.wait();
                    inst.sites
                        .absorb(&inst.shipments, &record(from, &s), now_ms())
                        .unwrap();
                }
            });
        }
    });

    // Every record holds what both gateways sent.
    let mut lost = Vec::new();
    for i in 0..N {
        let s = a.shipments.get(&format!("S{i:02}")).unwrap().unwrap();
        let to: Vec<&str> = s.handoffs.iter().map(|h| h.to.as_str()).collect();
        if to != ["courier", "lab"] || s.state != State::Arrived {
            lost.push(format!("{}: {to:?} {:?}", s.id, s.state));
        }
    }
    assert!(lost.is_empty(), "updates lost: {lost:?}");

    // Both instances deliver the shared outbox, as both daemons do.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    for inst in [&a, &b] {
        rt.spawn(outbox::run_mqtt(
            inst.cfg.clone(),
            inst.outbox.clone(),
            stop_rx.clone(),
        ));
    }
    wait_for(
        Duration::from_secs(90),
        "the outbox to be delivered",
        || (a.outbox.depth().ok() == Some(0)).then_some(()),
    );
    // What a gateway subscribing now is given: the retained records.
    let out = Command::new(which("mosquitto_sub").expect("mosquitto_sub"))
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
        .args(["-t", "coldchain/v1/fleet/ship/+", "-v", "--retained-only"])
        .args(["-C", &N.to_string(), "-W", "20"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut seen = 0;
    for line in text.lines() {
        let (topic, payload) = line.split_once(' ').unwrap();
        let id = topic.rsplit('/').next().unwrap();
        let retained: Shipment = serde_json::from_str(payload).unwrap();
        let stored = a.shipments.get(id).unwrap().unwrap();
        assert_eq!(
            retained, stored,
            "{id}: the retained record is not the stored one"
        );
        seen += 1;
    }
    assert_eq!(seen, N, "retained records: {text}");
    stop_tx.send(true).unwrap();
}

/// The retained topics a subscriber arriving now is given, as
/// `topic payload` lines.
fn retained(port: u16) -> Vec<String> {
    let out = Command::new(which("mosquitto_sub").expect("mosquitto_sub"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-t", "coldchain/v1/fleet/ship/+"])
        .args(["-t", "coldchain/v1/ship/+/status"])
        .args(["-v", "--retained-only", "-W", "2"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// A centre's retention clears what the broker keeps retained for a
/// shipment closed longer ago than the retention period (its fleet record,
/// which every gateway would otherwise be given forever, and its status),
/// with an empty retained publish; a shipment closed within the period
/// keeps them. Real sled, real Mosquitto, the real binary.
#[test]
fn retention_clears_the_retained_records_of_shipments_closed_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("broker"));
    let now = now_ms();
    let day = 24 * H;
    let data = dir.path().join("centre");
    {
        use coldchain_daemon::store::{KvStore, Store};
        let store = KvStore::open(&data.join("data").join("db")).unwrap();
        let ships = Shipments::open(store.db()).unwrap();
        for (i, closed) in [(0, now - 10 * day), (1, now - day)] {
            let mut s = base(i, closed - 2 * day);
            s.arrive(closed - day).unwrap();
            s.close(Disposition {
                decision: Decision::Accepted,
                comment: "fine".into(),
                by: "lab".into(),
                at_ms: closed,
                signature: None,
            })
            .unwrap();
            ships.put(&s).unwrap();
        }
        store.sync().unwrap();
    }
    // What the centre published for them while they travelled.
    for id in ["S00", "S01"] {
        for topic in [
            format!("coldchain/v1/fleet/ship/{id}"),
            format!("coldchain/v1/ship/{id}/status"),
        ] {
            let out = mosquitto_pub_with(broker.port, &["-r"], &topic, b"{\"id\":1}").unwrap();
            assert!(out.status.success(), "{out:?}");
        }
    }
    assert_eq!(retained(broker.port).len(), 4);
    let centre = Daemon::start(
        &data,
        broker.port,
        &[],
        "[store]\nretention_days = 3\n\n[centre]\ngroup = \"centre\"\n",
    );
    let left = wait_for(
        Duration::from_secs(60),
        "the retained messages of S00 cleared",
        || {
            let mut r = retained(broker.port);
            r.sort();
            (!r.iter().any(|l| l.contains("S00"))).then_some(r)
        },
    );
    assert_eq!(
        left,
        [
            "coldchain/v1/fleet/ship/S01 {\"id\":1}",
            "coldchain/v1/ship/S01/status {\"id\":1}"
        ],
        "closed within the period: kept"
    );
    let audit = centre.get("/api/v1/audit");
    assert!(
        audit.to_string().contains("retention.clear_retained"),
        "{audit}"
    );
}
