//! Retention on a real sled database: what is older than the period goes,
//! what a shipment may still need and what is not yet forwarded stays; then
//! the same through the real `coldchain` binary, as an operator runs it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use coldchain_daemon::retention::{self, Purged};
use coldchain_daemon::shipment::{Decision, Disposition, NewShipment, Shipment, Shipments, Watch};
use coldchain_daemon::store::{
    EventBody, EventRecord, FrameRecord, GapRecord, KvStore, ReadingRecord, SecurityKind,
    SecurityRecord, Store, TimeSource, Via, WriteSet,
};
use coldchain_proto::{ChannelKind, DeviceId, FrameRef, Measurement, Status};

const H: i64 = 3_600_000;
const DAY: i64 = 24 * H;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A frame of 3 readings received at `received`, sampled at `time`.
fn frame(w: &mut WriteSet, dev: &str, seq: u32, time: i64, received: i64) {
    let d = DeviceId::new(dev).unwrap();
    let r = FrameRef { boot: 1, seq };
    for i in 0..3u16 {
        w.reading(
            &d,
            r,
            i,
            &ReadingRecord {
                channel: 0,
                kind: ChannelKind::Rtd,
                value: Measurement::Valid(5_000),
                time_ms: time + i64::from(i) * 60_000,
                time_source: TimeSource::Device,
            },
        );
    }
    w.frame(
        &d,
        r,
        &FrameRecord {
            received_ms: received,
            time_ms: time,
            time_source: TimeSource::Device,
            via: Via::Mqtt,
            signed: true,
        },
        &[seq as u8; 16],
    );
}

fn shipment(id: &str, dev: &str, departure: i64, now: i64) -> Shipment {
    let mut s = Shipment::create(
        NewShipment {
            id: id.into(),
            product: "test".into(),
            din: None,
            product_code: None,
            profile: "fridge".into(),
            watch: vec![Watch {
                device: dev.into(),
                channel: 0,
            }],
            origin: "A".into(),
            destination: "B".into(),
            eta_ms: None,
            collection_ms: None,
            window_h: None,
            departure_ms: None,
        },
        departure - H,
    )
    .unwrap();
    s.depart(departure).unwrap();
    let _ = now;
    s
}

/// The world of both tests, as of `now`, with a 3-day retention in mind:
/// - dev-a: frame 0 received and sampled 10 days ago (goes), frame 1 received
///   10 days ago but sampled during S-OPEN, still in transit (stays), frame 2
///   received an hour ago (stays); a status event and a gap of frame 0's time
///   (go).
/// - dev-b: frame 0 of 10 days ago, watched by S-OLD closed 8 days ago (goes),
///   frame 1 fresh (stays); a security record of 10 days ago (goes).
/// - one item waiting in the forward outbox (stays).
fn populate(db_dir: &Path, now: i64) -> KvStore {
    let store = KvStore::open(db_dir).unwrap();
    let mut w = WriteSet::default();
    frame(&mut w, "dev-a", 0, now - 10 * DAY, now - 10 * DAY);
    frame(&mut w, "dev-a", 1, now - 5 * DAY, now - 10 * DAY);
    frame(&mut w, "dev-a", 2, now - H, now - H);
    frame(&mut w, "dev-b", 0, now - 10 * DAY, now - 10 * DAY);
    frame(&mut w, "dev-b", 1, now - H, now - H);
    let a = DeviceId::new("dev-a").unwrap();
    let b = DeviceId::new("dev-b").unwrap();
    w.event(
        &a,
        FrameRef { boot: 1, seq: 0 },
        3,
        &EventRecord {
            time_ms: now - 10 * DAY,
            time_source: TimeSource::Device,
            body: EventBody::Status(Status {
                battery_mv: 3600,
                signal_dbm: Some(-70),
                queued: 0,
                dropped: 0,
            }),
        },
    );
    w.gap(
        &a,
        1,
        7,
        Some(&GapRecord {
            last: 9,
            detected_ms: now - 10 * DAY,
        }),
    );
    w.security(
        &b,
        (now - 10 * DAY) / 60_000,
        &SecurityRecord {
            kind: SecurityKind::BadTag,
            count: 2,
            source: "coldchain/v1/dev/dev-b/up".into(),
            first_ms: now - 10 * DAY,
            last_ms: now - 10 * DAY + 1_000,
        },
    );
    for d in [&a, &b] {
        w.device(d, &Default::default());
    }
    store.apply(w).unwrap();
    let ships = Shipments::open(store.db()).unwrap();
    ships
        .put(&shipment("S-OPEN", "dev-a", now - 5 * DAY - H, now))
        .unwrap();
    let mut old = shipment("S-OLD", "dev-b", now - 10 * DAY - H, now);
    old.arrive(now - 9 * DAY).unwrap();
    old.close(Disposition {
        decision: Decision::Accepted,
        comment: "fine".into(),
        by: "lab".into(),
        at_ms: now - 8 * DAY,
        signature: None,
    })
    .unwrap();
    ships.put(&old).unwrap();
    let fwd = coldchain_daemon::forward::Forward::open(store.db(), Some("centre".into())).unwrap();
    fwd.push("dev/dev-a/up", vec![1, 2, 3], false).unwrap();
    assert_eq!(fwd.depth().unwrap(), 1);
    store.sync().unwrap();
    store
}

/// Waits until no process or thread holds sled's lock on the database in
/// `db_dir` (sled releases it from a background thread some time after the
/// last handle is dropped).
fn wait_unlocked(db_dir: &Path) {
    use fs2::FileExt;
    let f = std::fs::File::open(db_dir.join("db")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while f.try_lock_exclusive().is_err() {
        assert!(Instant::now() < deadline, "sled kept its lock for 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    FileExt::unlock(&f).unwrap();
}

fn seqs(store: &KvStore, dev: &str) -> Vec<u32> {
    let mut v: Vec<u32> = store
        .readings(&DeviceId::new(dev).unwrap(), None, 1000)
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    v.dedup();
    v
}

#[test]
fn purge_removes_old_data_and_keeps_what_shipments_and_the_centre_need() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_ms();
    let store = populate(&dir.path().join("db"), now);
    let ships = Shipments::open(store.db()).unwrap().all().unwrap();
    let p = retention::purge(&store, &ships, now - 3 * DAY, now).unwrap();
    assert_eq!(
        p,
        Purged {
            frames: 2,
            readings: 6,
            events: 1,
            gaps: 1,
            security: 1,
            kept_for_shipments: 1,
            site_frames: 0,
            site_refused: 0,
        }
    );
    assert_eq!(seqs(&store, "dev-a"), vec![1, 2]);
    assert_eq!(seqs(&store, "dev-b"), vec![1]);
    let a = DeviceId::new("dev-a").unwrap();
    assert!(
        store
            .frame(&a, FrameRef { boot: 1, seq: 0 })
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .frame(&a, FrameRef { boot: 1, seq: 1 })
            .unwrap()
            .is_some()
    );
    assert!(store.gaps(&a).unwrap().is_empty());
    assert_eq!(store.db().open_tree("events").unwrap().len().unwrap(), 0);
    assert_eq!(store.db().open_tree("security").unwrap().len().unwrap(), 0);
    let fwd = coldchain_daemon::forward::Forward::open(store.db(), None).unwrap();
    assert_eq!(
        fwd.depth().unwrap(),
        1,
        "retention touched the forward outbox"
    );
    // Shipments are never purged.
    assert_eq!(Shipments::open(store.db()).unwrap().all().unwrap().len(), 2);
    // A second pass finds nothing more.
    let again = retention::purge(&store, &ships, now - 3 * DAY, now).unwrap();
    assert!(!again.any(), "{again:?}");
    // Without the shipment still in transit its old frame would go too.
    let closed_only: Vec<Shipment> = ships.into_iter().filter(|s| s.id == "S-OLD").collect();
    let p = retention::purge(&store, &closed_only, now - 3 * DAY, now).unwrap();
    assert_eq!(p.frames, 1);
    assert_eq!(seqs(&store, "dev-a"), vec![2]);
}

/// The paths frames came by (`sites`) go with the frames: a centre's
/// per-frame lists, the per-device summaries (their counts and spans become
/// those of the frames kept), and paths' refusal records older than the
/// cutoff. dev-a's frames are noted as a centre notes them (per frame:
/// frame 0 through gw-a and directly, frame 1 through gw-a, frame 2 through
/// gw-b); dev-b's as a gateway does (by transport only: `direct`).
#[test]
fn purge_takes_the_paths_of_the_frames_it_removes() {
    use coldchain_daemon::ingest::Inbound;
    use coldchain_daemon::sites::{PathBatch, Paths, Seen};
    let dir = tempfile::tempdir().unwrap();
    let now = now_ms();
    let store = populate(&dir.path().join("db"), now);
    let centre = Paths::open(store.db()).unwrap().per_frame(true);
    let gateway = Paths::open(store.db()).unwrap();
    let a = DeviceId::new("dev-a").unwrap();
    let b = DeviceId::new("dev-b").unwrap();
    let r = |seq| FrameRef { boot: 1, seq };
    let mut batch = PathBatch::default();
    for (seq, label, t) in [
        (0, "gw-a", now - 10 * DAY),
        (0, "direct", now - 10 * DAY),
        (1, "gw-a", now - 5 * DAY),
        (2, "gw-b", now - H),
    ] {
        centre.note(&mut batch, &a, r(seq), label, t, true).unwrap();
    }
    for (seq, t) in [(0, now - 10 * DAY), (1, now - H)] {
        gateway
            .note(&mut batch, &b, r(seq), "direct", t, true)
            .unwrap();
    }
    centre.flush(&mut batch).unwrap();
    for (label, at) in [("gw-x", now - 10 * DAY), ("gw-y", now - H)] {
        let msg = Inbound {
            via: Via::Mqtt,
            source: format!("coldchain/v1/edge/{label}/dev/dev-a/up"),
            claimed: Some(a.clone()),
            payload: Vec::new(),
            oversize: None,
            received_ms: at,
        };
        centre.refused(label, "bad_tag", Some(&a), &msg).unwrap();
    }
    store.sync().unwrap();

    let ships = Shipments::open(store.db()).unwrap().all().unwrap();
    let p = retention::purge(&store, &ships, now - 3 * DAY, now).unwrap();
    assert_eq!(p.frames, 2, "{p:?}");

    // Per frame: the purged frame's list went, the kept frames' stayed.
    assert!(centre.of_frame(&a, r(0)).unwrap().is_empty());
    assert_eq!(
        centre
            .of_frame(&a, r(1))
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        ["gw-a"]
    );
    assert_eq!(
        centre
            .of_frame(&a, r(2))
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        ["gw-b"]
    );
    // Per device and path: counts and spans of what is left; `direct`
    // brought only the purged frame of dev-a, so it is gone.
    let seen = |f, t| Seen {
        frames: f,
        first_ms: t,
        last_ms: t,
    };
    assert_eq!(
        centre.of_device("dev-a").unwrap(),
        vec![
            ("gw-a".to_string(), seen(1, now - 5 * DAY)),
            ("gw-b".to_string(), seen(1, now - H)),
        ]
    );
    assert_eq!(
        gateway.of_device("dev-b").unwrap(),
        vec![("direct".to_string(), seen(1, now - H))]
    );
    // Refusals: the path whose latest refusal is older than the cutoff goes.
    let o = serde_json::to_value(centre.overview().unwrap()).unwrap();
    assert!(o.get("gw-x").is_none(), "{o}");
    assert_eq!(o["gw-y"]["refused"]["by_reason"]["bad_tag"], 1, "{o}");
    assert_eq!((p.site_frames, p.site_refused), (1, 1), "{p:?}");
    // A second pass finds nothing more.
    let again = retention::purge(&store, &ships, now - 3 * DAY, now).unwrap();
    assert!(!again.any(), "{again:?}");
    assert_eq!(centre.of_device("dev-a").unwrap().len(), 2);
}

fn get(port: u16, path: &str) -> Option<String> {
    let mut r = ureq::get(&format!("http://127.0.0.1:{port}{path}"))
        .call()
        .ok()?;
    r.body_mut().read_to_string().ok()
}

/// The daemon with `retention_days = 3` purges at start, records it in the
/// audit trail and counts it on /metrics.
#[test]
fn the_daemon_purges_at_start_and_audits_it() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_ms();
    let data = dir.path().join("data");
    drop(populate(&data.join("db"), now));
    wait_unlocked(&data.join("db"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = dir.path().join("coldchain.toml");
    std::fs::write(
        &cfg,
        format!(
            "[daemon]\nid = \"ret\"\ndata_dir = \"{}\"\n[mqtt]\nport = 1\nreconnect_min_ms = 1000\n[http]\nbind = \"127.0.0.1:{port}\"\n[store]\nretention_days = 3\n",
            data.display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_coldchain"))
        .args(["run", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let audit = loop {
        if let Some(a) = get(port, "/api/v1/audit")
            && a.contains("retention.purge")
        {
            break a;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "no retention.purge in the audit trail within 60 s; log:\n{}",
                std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let v: serde_json::Value = serde_json::from_str(&audit).unwrap();
    let entry = v
        .as_array()
        .or_else(|| v["entries"].as_array())
        .and_then(|a| a.iter().find(|e| e["action"] == "retention.purge"))
        .cloned()
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(entry["details"]["purged"]["frames"], 2, "{entry}");
    assert_eq!(entry["details"]["retention_days"], 3, "{entry}");
    let metrics = get(port, "/metrics").unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "coldchain_retention_purged_frames_total 2"),
        "{metrics}"
    );
    let readings = get(port, "/api/v1/devices/dev-a/readings?limit=100").unwrap();
    let r: serde_json::Value = serde_json::from_str(&readings).unwrap();
    let rows = r
        .as_array()
        .or_else(|| r["readings"].as_array())
        .unwrap_or_else(|| panic!("{r}"));
    let mut s: Vec<u64> = rows.iter().map(|x| x["seq"].as_u64().unwrap()).collect();
    s.dedup();
    assert_eq!(s, vec![1, 2]);
    // SIGTERM, as systemd stops it: a clean exit.
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    assert!(child.wait().unwrap().success());
}
