//! `coldchain-fleet`: evaluation at fleet scale (issue 11, benchmark).
//!
//! What it builds, on loopback, bounded in time and count:
//!
//! * **A populated database** (cached): `--shipments` fridge shipments in
//!   transit, each watched by its own device (`fleet-00001`, channel 0), with
//!   `--days` of history sampled once a minute and uploaded every
//!   `--per-frame` minutes (one signed frame of that many readings per upload).
//!   The shipments are created through the real daemon's HTTP API (so the
//!   shipment records and the audit trail are the daemon's own); the history
//!   is written by the daemon's own ingest path in-process: every frame is
//!   signed with the device key, encoded as on the wire and handed to
//!   `coldchain_daemon::ingest::Ingestor::process` over `KvStore`, exactly
//!   as the MQTT task does, then group-committed. The populated directory is
//!   kept under `--cache` and reused while the parameters, the daemon's and
//!   the protocol's sources and the toolchain are the same and it is younger
//!   than `--max-cache-age-h`. Each run works on a copy, topped up to the
//!   current minute with the same ingest path (so the last upload is recent
//!   and no silence alarm is due), and deletes it afterwards.
//! * **A real system** on that copy: `mosquitto` and the release daemon (the
//!   harness of `tests/src/lib.rs`).
//!
//! What it measures, in this order:
//!
//! 1. `GET /` (the dashboard list): wall latency of `--gets` sequential
//!    requests (median, p90) and the daemon's CPU per request (median of the
//!    per-request difference of utime + stime, so the periodic full pass does
//!    not count).
//! 2. Idle: the daemon's CPU over `--idle-s` with no data and no requests (the
//!    periodic re-evaluation), in cores.
//! 3. Live: one signed frame (one reading, real time stamp) per second per
//!    device over MQTT for `--live-s`: daemon cores; how stale each
//!    shipment's retained status is (its `last.t_ms` is the publish time of
//!    the newest reading it reflects: status arrival − that, the interval
//!    between two statuses of a shipment and the oldest a status got before
//!    the next); and, for `--faults` shipments, one open-circuit reading in
//!    the middle of the window: the probe-fault alert's `raised_ms` − that
//!    frame's publish time.
//! 4. Pure ingest: every shipment is then marked arrived and closed through
//!    the API (nothing is evaluated any more, periodically or on data) and the
//!    same load is sent again to the same devices: daemon cores. Evaluation
//!    cost = 3 − 4.
//! 5. Daemon RSS (`VmRSS` after each phase, `VmHWM` at the end) and the size
//!    of the store.
//!
//! CPU windows leave out the first `--warm-s` seconds of a load.
//!
//! **On PostgreSQL** (`--postgres`, issue 12): the same database, built the
//! same way, in a throwaway PostgreSQL cluster (`tests/src/postgres.rs`,
//! Debian's binaries, default server settings): the shipments through the
//! API of a daemon with `[store] postgres_url`, the history through
//! `Ingestor::process` over `KvStore::open_postgres` (the fill's own
//! connections set `synchronous_commit = off`: the daemon commits each
//! frame as a transaction, and the stored rows are the same). The cluster is
//! stopped cleanly (a checkpoint) and its directory cached as the sled one
//! is; each run copies it and starts a server on the copy. `--instances N`
//! starts N daemons on that database at the same moment, each with its own
//! data directory, config and MQTT client id and `[centre] group = "fleet"`:
//! they split the devices' stream through the shared subscription, and each
//! shipment is evaluated by the instance that took its lease first
//! (daemon/src/lease.rs). What changes in the figures: CPU is that of every
//! daemon (summed, and each) and of PostgreSQL's server (the postmaster and
//! its backends, reaped ones included); `GET /` is measured on each
//! instance (on one that does not hold a shipment's lease, the list reads
//! that shipment's summary from the shared database); the output adds the
//! leases by holder, the shipments each instance evaluated in each window
//! (`coldchain_evaluate_shipment_seconds_count`), how many probe-fault
//! alerts each faulted shipment got (one is right), and how many shipments
//! each instance's list still shows as not closed after all were closed
//! through the first instance.
//!
//! Measured 2026-11-30 on the shared 2-core machine (load average 3–5, 8 at
//! times), one run each, release builds, `MALLOC_ARENA_MAX=2`, with
//! `tests/bench.sh fleet --postgres --days 2 --period-s 10 --jobs 4
//! [--instances 2]` and the same without `--postgres` for sled (README.md,
//! "A centre on PostgreSQL (issue 12)", has the full table). 2 days and one
//! frame per device every 10 s because the daemon commits each frame as its
//! own transaction on PostgreSQL: the fill runs at about 1 950 frames/s
//! (7 days would take 9 minutes to populate) and one daemon acknowledged
//! only about 210 frames/s of the 1000 frames/s of `--period-s 1`.
//! Evaluation above pure ingest: sled 0.014 core; PostgreSQL, one
//! instance, 0.211 core in the daemon and 0.510 with PostgreSQL's share;
//! two instances 0.285 and 0.632 (the leases split 514 / 486, no alert
//! raised twice); one evaluation takes 1.2 ms (idle passes) to 3.1 ms
//! (live) of wall time on PostgreSQL. Probe-fault alert raised 0.25 s after
//! its frame on sled, 5 s and 15 s in two runs on PostgreSQL (not
//! explained). `GET /` 0.041 s on sled, 0.39 s (one instance) and
//! 0.76–0.81 s (two). Daemon RSS after the live window: sled 167 MiB,
//! PostgreSQL 65 MiB, 54 + 59 MiB. With two instances, 514 and 999
//! shipments were still listed as not closed on the two instances after
//! all were closed through the first (a defect; README.md has the causes).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use coldchain_daemon::config::Device;
use coldchain_daemon::ingest::{Inbound, Ingestor, Outcome, Stats};
use coldchain_daemon::registry::Registry;
use coldchain_daemon::store::{KvStore, Store, Via};
use coldchain_proto::codec::{MAX_SIGNED_LEN, encode_signed};
use coldchain_proto::{
    Body, ChannelKind, DeviceId, DeviceKey, FaultKind, Frame, Measurement, Reading, Settings,
    Timestamp, topic,
};
use coldchain_tests::{
    Daemon, DaemonOpts, Mosquitto, Postgres, TEST_KEY, TEST_TOKEN, alert_kind, cpu_seconds,
    http_get, http_post, percentile, status_kib,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};

const USAGE: &str = "\
coldchain-fleet: evaluation cost at fleet scale (GET /, idle, live vs pure ingest, staleness, RSS)

usage: coldchain-fleet [options]
  --shipments N        fridge shipments in transit, one device each (default 1000)
  --days D             days of 1/min history per shipment (default 7)
  --per-frame K        readings per history frame = upload interval in minutes, 1..=32 (default 10)
  --gets N             GET / requests, one after the other (default 30; stops after 300 s)
  --idle-s S           idle window, no data (default 90)
  --live-s S           each live window, one frame/s per device (default 60)
  --period-s P         one live frame every P s per device instead (default 1; 1000 devices at
                       1/s is more than the PostgreSQL store takes on this machine)
  --warm-s S           seconds of each live window left out of its CPU figure (default 5)
  --faults N           shipments given one open-circuit reading mid-window (default 5)
  --publishers N       MQTT connections the live frames are spread over (default 8)
  --jobs N             threads filling the database (default 2)
  --cache DIR          where populated databases are kept (default target/bench-fleet)
  --max-cache-age-h H  repopulate when the cached history ends longer ago (default 12)
  --fresh              repopulate even if a cached database matches
  --keep DIR           run in DIR and keep it (logs, database) instead of a temporary copy
  --timeout-s S        bound on the whole run (default 3600)
  --postgres           the store on PostgreSQL ([store] postgres_url): a throwaway cluster from
                       Debian's binaries, populated through the same ingest path, cached stopped
  --instances N        with --postgres: N daemons on the one database ([centre] group: they
                       split the devices' stream; each shipment is evaluated by its lease holder)
";

const MIN: i64 = 60_000;
const DAY: i64 = 1440 * MIN;
/// Bump when the generated data changes.
const LAYOUT: u32 = 1;

#[derive(Debug, Clone)]
struct Args {
    shipments: usize,
    days: u32,
    per_frame: usize,
    gets: usize,
    idle_s: u64,
    live_s: u32,
    period_s: u32,
    warm_s: u32,
    faults: usize,
    publishers: usize,
    jobs: usize,
    cache: PathBuf,
    max_age_h: f64,
    fresh: bool,
    keep: Option<PathBuf>,
    timeout: Duration,
    postgres: bool,
    instances: usize,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> anyhow::Result<Args> {
    let mut a = Args {
        shipments: 1000,
        days: 7,
        per_frame: 10,
        gets: 30,
        idle_s: 90,
        live_s: 60,
        period_s: 1,
        warm_s: 5,
        faults: 5,
        publishers: 8,
        jobs: 2,
        cache: Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-fleet"),
        max_age_h: 12.0,
        fresh: false,
        keep: None,
        timeout: Duration::from_secs(3600),
        postgres: false,
        instances: 1,
    };
    while let Some(flag) = it.next() {
        let mut val = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--shipments" => a.shipments = val()?.parse()?,
            "--days" => a.days = val()?.parse()?,
            "--per-frame" => a.per_frame = val()?.parse()?,
            "--gets" => a.gets = val()?.parse()?,
            "--idle-s" => a.idle_s = val()?.parse()?,
            "--live-s" => a.live_s = val()?.parse()?,
            "--period-s" => a.period_s = val()?.parse()?,
            "--warm-s" => a.warm_s = val()?.parse()?,
            "--faults" => a.faults = val()?.parse()?,
            "--publishers" => a.publishers = val()?.parse()?,
            "--jobs" => a.jobs = val()?.parse()?,
            "--cache" => a.cache = val()?.into(),
            "--max-cache-age-h" => a.max_age_h = val()?.parse()?,
            "--fresh" => a.fresh = true,
            "--keep" => a.keep = Some(val()?.into()),
            "--timeout-s" => a.timeout = Duration::from_secs(val()?.parse()?),
            "--postgres" => a.postgres = true,
            "--instances" => a.instances = val()?.parse()?,
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            o => bail!("unknown option {o:?}\n{USAGE}"),
        }
    }
    ensure!(
        (1..=99_999).contains(&a.shipments),
        "--shipments must be 1..=99999"
    );
    ensure!(a.days >= 1, "--days must be at least 1");
    ensure!(
        (1..=32).contains(&a.per_frame),
        "--per-frame must be 1..=32"
    );
    ensure!(a.live_s > a.warm_s + 1, "--live-s must exceed --warm-s + 1");
    ensure!(
        a.period_s >= 1 && a.live_s / a.period_s >= 2,
        "--period-s must be at least 1 and at most half of --live-s"
    );
    ensure!(
        a.publishers >= 1 && a.jobs >= 1,
        "--publishers and --jobs must be at least 1"
    );
    ensure!(a.instances >= 1, "--instances must be at least 1");
    ensure!(
        a.instances == 1 || a.postgres,
        "--instances needs --postgres (one shared database)"
    );
    a.faults = a.faults.min(a.shipments);
    Ok(a)
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn key() -> anyhow::Result<DeviceKey> {
    DeviceKey::from_hex(TEST_KEY).map_err(|e| anyhow::anyhow!("test key: {e:?}"))
}

/// The watched device of shipment `i` (0-based).
fn watched(i: usize) -> String {
    format!("fleet-{:05}", i + 1)
}

fn shipment(i: usize) -> String {
    format!("FLEET-{:05}", i + 1)
}

/// The settings every fleet device gets: it uploads every `k` minutes.
fn settings(k: usize) -> Settings {
    Settings {
        version: 1,
        upload_interval_s: (k * 60) as u32,
        status_interval_s: 300,
        tilt_limit_deg: 45,
        channels: heapless::Vec::new(),
    }
}

/// A product temperature around 5 °C: a daily swing of ±0.8 °C and a little
/// noise, never near a fridge limit.
fn history_milli_c(i: usize, minute: i64) -> i32 {
    let day = (minute.rem_euclid(1440)) as f64 / 1440.0;
    let swing = (800.0 * (std::f64::consts::TAU * day).sin()) as i32;
    let noise = ((i as i64 * 7919 + minute * 104_729) % 301) as i32 - 150;
    5000 + swing + noise
}

/// History frame `j` of device `i`: `k` readings one minute apart from
/// `start_ms + j·k min` (plus the device's own second within the minute),
/// received a moment after its last sample. Its sequence number is `j`.
fn history_frame(i: usize, j: u32, k: usize, start_ms: i64) -> (Frame, i64) {
    let phase = (i as i64 * 7) % 60 * 1000;
    let t0 = start_ms + i64::from(j) * k as i64 * MIN + phase;
    let mut rs = heapless::Vec::new();
    for r in 0..k {
        let minute = (t0 - start_ms) / MIN + r as i64;
        let _ = rs.push(Reading {
            channel: 0,
            kind: ChannelKind::Rtd,
            dt_ms: (r as i64 * MIN) as u32,
            value: Measurement::Valid(history_milli_c(i, minute)),
        });
    }
    let received = t0 + (k as i64 - 1) * MIN + 1500 + (i as i64 % 1000);
    let f = Frame {
        device: DeviceId::new(&watched(i)).expect("fleet device ids are valid"),
        boot: 1,
        seq: j,
        time: Timestamp::Wall(t0 as u64),
        body: Body::Readings(rs),
    };
    (f, received)
}

/// The database of the benchmark's daemon(s): its name in the cluster.
const PG_DB: &str = "fleet";

/// Where a fill writes: the sled database of a daemon data directory (its
/// `db`), or a PostgreSQL database (its URL).
#[derive(Debug, Clone, Copy)]
enum Target<'a> {
    Sled(&'a Path),
    Pg(&'a str),
}

impl Target<'_> {
    fn arg(&self) -> std::ffi::OsString {
        match self {
            Target::Sled(p) => p.as_os_str().to_owned(),
            Target::Pg(url) => url.into(),
        }
    }
}

/// `__fill DATA N K START_MS J_FROM J_TO JOBS`: writes history frames
/// `J_FROM..J_TO` of every watched device into the database of the daemon
/// data directory DATA (its `db`), or the PostgreSQL database when DATA is a
/// `postgres://` URL, through
/// the daemon's ingest path, then makes it durable. Runs as a child process,
/// so sled's file lock is gone when it exits and the daemon can open it.
///
/// On PostgreSQL the daemon's ingest commits each frame as its own
/// transaction; the fill's connections set `synchronous_commit = off` (what
/// is stored is the same; only the wait for the WAL flush of each
/// transaction goes, and the cluster is stopped cleanly before it is used).
fn fill(args: &[String]) -> anyhow::Result<()> {
    let [data, n, k, start_ms, j_from, j_to, jobs] = args else {
        bail!("__fill DATA N K START_MS J_FROM J_TO JOBS");
    };
    let (n, k, jobs): (usize, usize, usize) = (n.parse()?, k.parse()?, jobs.parse()?);
    let (start_ms, j_from, j_to): (i64, u32, u32) =
        (start_ms.parse()?, j_from.parse()?, j_to.parse()?);
    let t = Instant::now();
    let store = Arc::new(if data.starts_with("postgres://") {
        let sep = if data.contains('?') { '&' } else { '?' };
        KvStore::open_postgres(
            &format!("{data}{sep}options=-c%20synchronous_commit%3Doff"),
            jobs + 2,
        )?
    } else {
        KvStore::open(&Path::new(data).join("db"))?
    });
    let key = key()?;
    let registry = Registry::new((0..n).map(|i| Device {
        id: DeviceId::new(&watched(i)).expect("valid id"),
        key: key.clone(),
        allow_unsigned_json: false,
        settings: Some(settings(k)),
    }));
    let stats = Arc::new(Stats::default());
    std::thread::scope(|sc| -> anyhow::Result<()> {
        let mut handles = Vec::new();
        for job in 0..jobs {
            let mut ing = Ingestor::new(store.clone(), registry.clone(), stats.clone());
            let key = key.clone();
            handles.push(sc.spawn(move || -> anyhow::Result<()> {
                let mut buf = [0u8; MAX_SIGNED_LEN];
                let mut since_commit = 0;
                // Interleaved in time across devices, as a fleet uploads.
                for j in j_from..j_to {
                    for i in (job..n).step_by(jobs) {
                        let (f, received_ms) = history_frame(i, j, k, start_ms);
                        let payload = encode_signed(&f, &key, &mut buf)
                            .map_err(|e| anyhow::anyhow!("encode: {e}"))?
                            .to_vec();
                        let msg = Inbound {
                            via: Via::Mqtt,
                            source: topic::device_up(&f.device).to_string(),
                            claimed: Some(f.device.clone()),
                            payload,
                            oversize: None,
                            received_ms,
                        };
                        match ing.process(&msg)? {
                            Outcome::Stored { .. } => {}
                            o => bail!("{} frame {j}: expected Stored, got {o:?}", f.device),
                        }
                        since_commit += 1;
                        if since_commit == 20_000 {
                            ing.commit()?;
                            since_commit = 0;
                        }
                    }
                }
                ing.commit()?;
                Ok(())
            }));
        }
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("fill thread panicked"))??;
        }
        Ok(())
    })?;
    store.sync()?;
    eprintln!(
        "filled {} frames ({} readings) into {data} in {:.1} s",
        stats.frames_stored.load(Ordering::Relaxed),
        stats.readings_stored.load(Ordering::Relaxed),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn run_fill(
    data: Target,
    n: usize,
    k: usize,
    start_ms: i64,
    j: (u32, u32),
    jobs: usize,
) -> anyhow::Result<()> {
    if j.0 >= j.1 {
        return Ok(());
    }
    let st = Command::new(std::env::current_exe()?)
        .arg("__fill")
        .arg(data.arg())
        .args([
            n.to_string(),
            k.to_string(),
            start_ms.to_string(),
            j.0.to_string(),
            j.1.to_string(),
            jobs.to_string(),
        ])
        .status()
        .context("start the fill process")?;
    ensure!(st.success(), "filling {data:?} failed: {st}");
    Ok(())
}

/// The daemon config added to the harness's: every fleet device with the
/// fleet's settings.
fn daemon_extra(n: usize, k: usize) -> String {
    let mut s = String::new();
    for id in (0..n).map(watched) {
        s.push_str(&format!(
            "[[devices]]\nid = \"{id}\"\nkey = \"{TEST_KEY}\"\n\
             [devices.settings]\nversion = 1\nupload_interval_s = {}\nstatus_interval_s = 300\n\
             tilt_limit_deg = 45\nchannels = []\n\n",
            k * 60
        ));
    }
    s
}

/// The daemon's options: on sled (`pg` = `None`) or on the PostgreSQL
/// database at `pg`; `instance` = `Some(i)` for instance `i` of several
/// sharing it (its own MQTT client id, the centre's shared subscriptions).
fn daemon_opts(n: usize, k: usize, pg: Option<&str>, instance: Option<usize>) -> DaemonOpts {
    let mut extra = String::new();
    if let Some(url) = pg {
        extra.push_str(&format!("[store]\npostgres_url = \"{url}\"\n\n"));
    }
    let mut mqtt = String::new();
    if let Some(i) = instance {
        extra.push_str("[centre]\ngroup = \"fleet\"\n\n");
        mqtt = format!("client_id = \"coldchain-fleet-{i}\"");
    }
    extra.push_str(&daemon_extra(n, k));
    DaemonOpts {
        http: format!("token = \"{TEST_TOKEN}\""),
        mqtt,
        extra,
        ..DaemonOpts::default()
    }
}

/// A broker as deploy/mosquitto/prod.conf has it where it matters here.
fn broker(dir: &Path) -> Mosquitto {
    Mosquitto::start_with_config(dir, |port| {
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
             persistence_location {d}/\nautosave_interval 5\nmax_inflight_messages 1000\n\
             max_queued_messages 0\nmax_queued_bytes 0\nlog_dest stderr\nlog_type error\n\
             log_type warning\n{user}",
            d = dir.display(),
            user = if nix::unistd::Uid::effective().is_root() {
                "user root\n"
            } else {
                ""
            }
        )
    })
}

/// A hash of what decides the database's content: the daemon's and the
/// protocol's sources, the generator's layout and the toolchain (std's hasher).
fn sources_hash() -> anyhow::Result<u64> {
    use std::hash::{Hash, Hasher};
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    let mut dirs = vec![root.join("daemon/src"), root.join("proto/src")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).with_context(|| d.display().to_string())? {
            let p = e?.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    LAYOUT.hash(&mut h);
    for f in files {
        f.strip_prefix(&root).unwrap_or(&f).hash(&mut h);
        std::fs::read(&f)?.hash(&mut h);
    }
    Ok(h.finish())
}

fn dir_bytes(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                dir_bytes(&p)
            } else {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            }
        })
        .sum()
}

/// The size of the benchmark's PostgreSQL database, bytes.
fn pg_bytes(pg: &Postgres) -> anyhow::Result<u64> {
    pg.psql(PG_DB, &format!("SELECT pg_database_size('{PG_DB}')"))
        .map_err(|e| anyhow::anyhow!("pg_database_size: {e}"))?
        .parse()
        .context("pg_database_size")
}

/// The cached populated database for these parameters: `(dir, meta)`,
/// populating it first when there is none that fits. On sled it is the
/// daemon data directory `dir/daemon/data`; on PostgreSQL the stopped
/// cluster `dir/pg` (database `fleet`).
fn populated(a: &Args) -> anyhow::Result<(PathBuf, Value)> {
    let hash = sources_hash()?;
    let store = if a.postgres { "pg-" } else { "" };
    let name = format!(
        "{store}n{}-d{}-k{}-{hash:016x}",
        a.shipments, a.days, a.per_frame
    );
    let dir = a.cache.join(&name);
    let meta_path = dir.join("meta.json");
    if !a.fresh
        && let Ok(text) = std::fs::read_to_string(&meta_path)
        && let Ok(meta) = serde_json::from_str::<Value>(&text)
    {
        let end = meta["end_ms"].as_i64().unwrap_or(0);
        let age_h = (unix_ms() - end) as f64 / 3.6e6;
        if age_h <= a.max_age_h {
            eprintln!("reusing {} (history ends {age_h:.1} h ago)", dir.display());
            return Ok((dir, meta));
        }
        eprintln!(
            "cached {} ends {age_h:.1} h ago (> --max-cache-age-h): repopulating",
            dir.display()
        );
    }
    // Older databases of the same parameters (other sources) go.
    if let Ok(rd) = std::fs::read_dir(&a.cache) {
        let prefix = format!("{store}n{}-d{}-k{}-", a.shipments, a.days, a.per_frame);
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let tmp = a.cache.join(format!("{name}.partial"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let t = Instant::now();
    let (n, k) = (a.shipments, a.per_frame);
    let frame_ms = k as i64 * MIN;
    let end_ms = unix_ms().div_euclid(frame_ms) * frame_ms;
    let start_ms = end_ms - i64::from(a.days) * DAY;
    let frames = u32::try_from((end_ms - start_ms) / frame_ms)?;

    // Shipments, through the daemon's API.
    eprintln!("populating {}: creating {n} shipments", tmp.display());
    let mut pg = a.postgres.then(|| Postgres::start(&tmp.join("pg")));
    let url = pg.as_ref().map(|pg| pg.create_db(PG_DB));
    {
        let mut b = broker(&tmp.join("broker"));
        let mut d = Daemon::start_with(
            &tmp.join("daemon"),
            b.port,
            &[],
            &daemon_opts(n, k, url.as_deref(), None),
        );
        for i in 0..n {
            let body = json!({
                "by": "fleet benchmark",
                "id": shipment(i),
                "product": "CAR-T, 1 bag",
                "profile": "fridge",
                "watch": [{"device": watched(i), "channel": 0}],
                "origin": "Apheresis centre",
                "destination": "Manufacturing",
                "departure_ms": start_ms,
                "eta_ms": end_ms + 2 * DAY,
                "collection_ms": start_ms - 2 * 3_600_000,
                "window_h": f64::from(a.days) * 24.0 + 14.0 * 24.0,
            });
            let (st, v) = http_post(d.http_port, "/api/v1/shipments", Some(TEST_TOKEN), &body);
            ensure!(
                (200..300).contains(&st),
                "POST /api/v1/shipments {} -> {st}: {v}",
                shipment(i)
            );
        }
        let st = d.stop();
        ensure!(st.success(), "daemon exited with {st}");
        b.stop();
    }
    let t_ship = t.elapsed().as_secs_f64();
    eprintln!(
        "populating: {frames} frames x {n} devices of {k} readings ({} readings) with {} threads",
        u64::from(frames) * n as u64 * k as u64,
        a.jobs
    );
    let t_fill = Instant::now();
    let data = tmp.join("daemon/data");
    let target = match &url {
        Some(url) => Target::Pg(url),
        None => Target::Sled(&data),
    };
    run_fill(target, n, k, start_ms, (0, frames), a.jobs)?;
    let fill_s = t_fill.elapsed().as_secs_f64();
    let store_bytes = match &mut pg {
        Some(pg) => {
            let bytes = pg_bytes(pg)?;
            ensure!(
                pg.stop(Duration::from_secs(900)),
                "PostgreSQL did not stop within 900 s"
            );
            // Only the cluster is kept.
            let _ = std::fs::remove_dir_all(tmp.join("daemon"));
            bytes
        }
        None => dir_bytes(&data),
    };
    let meta = json!({
        "shipments": n, "days": a.days, "per_frame": k, "sources": format!("{hash:016x}"),
        "start_ms": start_ms, "end_ms": end_ms, "frames": frames,
        "shipments_s": t_ship, "fill_s": fill_s,
        "populate_s": t.elapsed().as_secs_f64(),
        "store_bytes": store_bytes, "store": if a.postgres { "postgres" } else { "sled" },
    });
    // Only the database is kept.
    let _ = std::fs::remove_dir_all(tmp.join("broker"));
    std::fs::write(tmp.join("meta.json"), serde_json::to_string_pretty(&meta)?)?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir)?;
    eprintln!(
        "populated {} in {:.1} s (shipments {t_ship:.1} s)",
        dir.display(),
        t.elapsed().as_secs_f64()
    );
    Ok((dir, meta))
}

/// What a sampler reads the CPU time of.
#[derive(Debug, Clone, Copy)]
enum Watch {
    /// One process (all its threads).
    One(u32),
    /// A process and its children: PostgreSQL's postmaster and its
    /// backends (the children it reaped are in its own `cutime`/`cstime`).
    Tree(u32),
}

impl Watch {
    fn cpu_seconds(self) -> f64 {
        match self {
            Watch::One(pid) => cpu_seconds(pid),
            Watch::Tree(pid) => {
                let reaped = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|s| {
                        let rest = s.rsplit_once(')')?.1.to_string();
                        let f: Vec<f64> = rest
                            .split_whitespace()
                            .skip(13)
                            .take(2)
                            .filter_map(|v| v.parse().ok())
                            .collect();
                        Some(f.iter().sum::<f64>() / 100.0)
                    })
                    .unwrap_or(0.0);
                let children: f64 =
                    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                        .unwrap_or_default()
                        .split_whitespace()
                        .filter_map(|c| c.parse().ok())
                        .map(cpu_seconds)
                        .sum();
                cpu_seconds(pid) + reaped + children
            }
        }
    }
}

/// CPU samples of some processes, taken by a thread every `period`.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Vec<(Instant, Vec<f64>)>>,
}

impl Sampler {
    fn start(pids: Vec<Watch>, period: Duration) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut out = Vec::new();
            while !s.load(Ordering::Relaxed) {
                out.push((
                    Instant::now(),
                    pids.iter().map(|w| w.cpu_seconds()).collect(),
                ));
                std::thread::sleep(period);
            }
            out.push((
                Instant::now(),
                pids.iter().map(|w| w.cpu_seconds()).collect(),
            ));
            out
        });
        Sampler { stop, handle }
    }

    fn finish(self) -> Vec<(Instant, Vec<f64>)> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}

/// Cores used by process `p` of the samples between `from` and `to`.
fn cores(samples: &[(Instant, Vec<f64>)], p: usize, from: Instant, to: Instant) -> f64 {
    let first = samples.iter().find(|s| s.0 >= from);
    let last = samples.iter().rev().find(|s| s.0 <= to);
    match (first, last) {
        (Some(a), Some(b)) if b.0 > a.0 => (b.1[p] - a.1[p]) / (b.0 - a.0).as_secs_f64(),
        _ => f64::NAN,
    }
}

fn mib(kib: Option<u64>) -> f64 {
    kib.map_or(f64::NAN, |k| k as f64 / 1024.0)
}

/// Publishes `rounds` frames for each of `devices`, one every `period_s`
/// seconds (device `idx` at `idx/N` of each period), over `conns`
/// connections, each frame signed just before it is handed to the client
/// with the wall time as its timestamp; frame `s` of a device has seq
/// `seq0 + s`. The devices `0..faults` send an open-circuit fault instead of
/// a value in round `rounds / 2`. Returns `(device index, publish ms)` of
/// those faults.
#[allow(clippy::too_many_arguments)]
async fn publish_live(
    port: u16,
    devices: Arc<Vec<DeviceId>>,
    seq0: u32,
    rounds: u32,
    period_s: u32,
    conns: usize,
    faults: usize,
    start_at: tokio::time::Instant,
) -> anyhow::Result<Vec<(usize, i64)>> {
    let n = devices.len();
    let mut set = tokio::task::JoinSet::new();
    for c in 0..conns.min(n) {
        let devices = devices.clone();
        set.spawn(async move {
            let key = key()?;
            let mut o = MqttOptions::new(format!("fleet-pub-{c}-{}", unix_ms()), "127.0.0.1", port);
            o.set_clean_session(true)
                .set_keep_alive(Duration::from_secs(30))
                .set_inflight(100);
            let (client, mut el) = AsyncClient::new(o, 64);
            let mine: Vec<usize> = (c..n).step_by(conns).collect();
            let total = mine.len() as u64 * u64::from(rounds);
            let period_us = u64::from(period_s) * 1_000_000;
            let producer = tokio::spawn(async move {
                let mut buf = [0u8; MAX_SIGNED_LEN];
                let mut fault_times = Vec::new();
                for s in 0..rounds {
                    for &i in &mine {
                        let at = start_at
                            + Duration::from_micros(u64::from(s) * period_us)
                            + Duration::from_micros((i as u64 * period_us) / n as u64);
                        tokio::time::sleep_until(at).await;
                        let fault = s == rounds / 2 && i < faults;
                        let value = if fault {
                            Measurement::Fault(FaultKind::OpenCircuit)
                        } else {
                            Measurement::Valid(4800 + ((i * 13 + s as usize * 7) % 400) as i32)
                        };
                        let now = unix_ms();
                        let mut rs = heapless::Vec::new();
                        let _ = rs.push(Reading {
                            channel: 0,
                            kind: ChannelKind::Rtd,
                            dt_ms: 0,
                            value,
                        });
                        let f = Frame {
                            device: devices[i].clone(),
                            boot: 1,
                            seq: seq0 + s,
                            time: Timestamp::Wall(now as u64),
                            body: Body::Readings(rs),
                        };
                        let bytes = encode_signed(&f, &key, &mut buf)
                            .map_err(|e| anyhow::anyhow!("encode: {e}"))?
                            .to_vec();
                        client
                            .publish(
                                topic::device_up(&f.device).to_string(),
                                QoS::AtLeastOnce,
                                false,
                                bytes,
                            )
                            .await?;
                        if fault {
                            fault_times.push((i, now));
                        }
                    }
                }
                anyhow::Ok((client, fault_times))
            });
            let mut acked = 0;
            while acked < total {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                    Ok(_) => {}
                    Err(e) => bail!("publisher {c}: {e}"),
                }
            }
            let (client, fault_times) = producer.await??;
            let _ = client.disconnect().await;
            let _ = tokio::time::timeout(Duration::from_millis(200), el.poll()).await;
            anyhow::Ok(fault_times)
        });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.extend(r??);
    }
    Ok(out)
}

/// `(arrival ms, shipment, last.t_ms)` of every non-retained shipment status
/// published while it runs.
type StatusLog = Arc<Mutex<Vec<(i64, String, Option<i64>)>>>;

async fn watch_status(port: u16, log: StatusLog, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let mut o = MqttOptions::new(format!("fleet-status-{}", unix_ms()), "127.0.0.1", port);
    o.set_clean_session(true)
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut el) = AsyncClient::new(o, 16);
    client
        .subscribe("coldchain/v1/ship/+/status", QoS::AtMostOnce)
        .await?;
    while !stop.load(Ordering::Relaxed) {
        let ev = match tokio::time::timeout(Duration::from_millis(200), el.poll()).await {
            Err(_) => continue,
            Ok(ev) => ev?,
        };
        if let Event::Incoming(Packet::Publish(p)) = ev
            && !p.retain
            && let Ok(v) = serde_json::from_slice::<Value>(&p.payload)
        {
            let ship = v["shipment"].as_str().unwrap_or("").to_string();
            let last = v["last"]["t_ms"].as_i64();
            log.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((unix_ms(), ship, last));
        }
    }
    let _ = client.disconnect().await;
    Ok(())
}

/// The processes a run samples, in the samplers' order: the daemons, the
/// broker, this harness, then PostgreSQL's server when there is one.
struct Procs {
    daemons: usize,
    watch: Vec<Watch>,
}

impl Procs {
    fn broker(&self) -> usize {
        self.daemons
    }

    fn harness(&self) -> usize {
        self.daemons + 1
    }

    fn pg(&self) -> Option<usize> {
        (self.watch.len() > self.daemons + 2).then_some(self.daemons + 2)
    }

    /// Cores of every daemon between `from` and `to`.
    fn daemon_cores(
        &self,
        samples: &[(Instant, Vec<f64>)],
        from: Instant,
        to: Instant,
    ) -> Vec<f64> {
        (0..self.daemons)
            .map(|d| cores(samples, d, from, to))
            .collect()
    }

    /// Cores of PostgreSQL's server (NaN on sled).
    fn pg_cores(&self, samples: &[(Instant, Vec<f64>)], from: Instant, to: Instant) -> f64 {
        self.pg().map_or(f64::NAN, |p| cores(samples, p, from, to))
    }
}

/// Shipments each daemon has evaluated since it started, and the seconds
/// it spent on them (`coldchain_evaluate_shipment_seconds_count` and
/// `_sum`: counted only by the instance holding the shipment's lease).
fn evaluations(daemons: &[Daemon]) -> anyhow::Result<Vec<(u64, f64)>> {
    daemons
        .iter()
        .map(|d| {
            let text = http_get(d.http_port, "/metrics")?;
            let text = text.as_str().context("/metrics is not text")?;
            let field = |name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .with_context(|| format!("no {name} in /metrics"))
            };
            Ok((
                field("coldchain_evaluate_shipment_seconds_count")? as u64,
                field("coldchain_evaluate_shipment_seconds_sum")?,
            ))
        })
        .collect()
}

/// Evaluations per daemon between two readings of [`evaluations`], and the
/// mean wall time of one, ms (all daemons).
fn eval_delta(after: &[(u64, f64)], before: &[(u64, f64)]) -> (Vec<u64>, f64) {
    let n: Vec<u64> = after.iter().zip(before).map(|(a, b)| a.0 - b.0).collect();
    let secs: f64 = after.iter().zip(before).map(|(a, b)| a.1 - b.1).sum();
    let total: u64 = n.iter().sum();
    (n, secs * 1000.0 / total.max(1) as f64)
}

fn acked(daemons: &[Daemon]) -> u64 {
    daemons.iter().map(|d| d.stat("acked")).sum()
}

/// The live evaluation leases by holder (counts, largest first), read from
/// the shared database.
fn lease_holders(pg: &Postgres) -> anyhow::Result<Vec<u64>> {
    let out = pg
        .psql(
            PG_DB,
            "SELECT count(*) FROM kv WHERE tree = 'leases' \
             AND (convert_from(v, 'UTF8')::json->>'until_ms')::bigint \
                 > (extract(epoch FROM clock_timestamp()) * 1000)::bigint \
             GROUP BY convert_from(v, 'UTF8')::json->>'owner' ORDER BY 1 DESC",
        )
        .map_err(|e| anyhow::anyhow!("reading the leases: {e}"))?;
    out.lines()
        .map(|l| l.trim().parse().context("lease count"))
        .collect()
}

/// `x` for one daemon, `sum (a + b)` for several.
fn per_daemon(v: &[f64], prec: usize) -> String {
    let sum: f64 = v.iter().sum();
    if v.len() == 1 {
        return format!("{sum:.prec$}");
    }
    let parts: Vec<String> = v.iter().map(|x| format!("{x:.prec$}")).collect();
    format!("{sum:.prec$} ({})", parts.join(" + "))
}

/// What one live window measured.
struct Live {
    daemon_cores: Vec<f64>,
    pg_cores: f64,
    broker_cores: f64,
    harness_cores: f64,
    /// From the last publish to the daemons' `acked` covering every frame, s.
    drain_s: f64,
    faults: Vec<(usize, i64)>,
    rss_mib: Vec<f64>,
    /// Shipments each daemon evaluated during the window.
    evaluations: Vec<u64>,
    /// The mean wall time of one of those evaluations, ms.
    eval_ms: f64,
}

impl Live {
    fn daemons(&self) -> f64 {
        self.daemon_cores.iter().sum()
    }

    /// The daemons and PostgreSQL's server (the daemons alone on sled).
    fn with_pg(&self) -> f64 {
        self.daemons()
            + if self.pg_cores.is_nan() {
                0.0
            } else {
                self.pg_cores
            }
    }
}

#[allow(clippy::too_many_arguments)]
fn live_window(
    a: &Args,
    rt: &tokio::runtime::Runtime,
    daemons: &[Daemon],
    procs: &Procs,
    port: u16,
    devices: Vec<DeviceId>,
    seq0: u32,
    faults: usize,
) -> anyhow::Result<Live> {
    let rounds = a.live_s / a.period_s;
    let total = devices.len() as u64 * u64::from(rounds);
    let acked0 = acked(daemons);
    let evals0 = evaluations(daemons)?;
    let sampler = Sampler::start(procs.watch.clone(), Duration::from_millis(250));
    let start = Instant::now() + Duration::from_millis(200);
    let start_tokio = tokio::time::Instant::from_std(start);
    let fault_times = rt.block_on(publish_live(
        port,
        Arc::new(devices),
        seq0,
        rounds,
        a.period_s,
        a.publishers,
        faults,
        start_tokio,
    ))?;
    let end = start + Duration::from_secs(u64::from(a.live_s));
    let published = Instant::now().max(end);
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked(daemons) < acked0 + total {
        ensure!(
            Instant::now() < deadline,
            "the daemon(s) did not acknowledge {total} frames within 120 s of the last publish \
             ({} acknowledged)",
            acked(daemons) - acked0
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let drain_s = published.elapsed().as_secs_f64();
    let samples = sampler.finish();
    let (evaluations, eval_ms) = eval_delta(&evaluations(daemons)?, &evals0);
    let from = start + Duration::from_secs(u64::from(a.warm_s));
    Ok(Live {
        daemon_cores: procs.daemon_cores(&samples, from, end),
        pg_cores: procs.pg_cores(&samples, from, end),
        broker_cores: cores(&samples, procs.broker(), from, end),
        harness_cores: cores(&samples, procs.harness(), from, end),
        drain_s,
        faults: fault_times,
        rss_mib: rss(daemons, "VmRSS:"),
        evaluations,
        eval_ms,
    })
}

fn rss(daemons: &[Daemon], field: &str) -> Vec<f64> {
    daemons
        .iter()
        .map(|d| mib(d.pid().and_then(|p| status_kib(p, field))))
        .collect()
}

/// `GET /` on one daemon: `(wall latencies, daemon CPU per request)`, sorted.
fn get_list(a: &Args, d: &Daemon, n: usize) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let dpid = d.pid().context("daemon pid")?;
    let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
    let url = format!("http://127.0.0.1:{}/", d.http_port);
    let (mut lat, mut cpu) = (Vec::new(), Vec::new());
    let get_until = Instant::now() + Duration::from_secs(300);
    for _ in 0..a.gets {
        let c0 = cpu_seconds(dpid);
        let t0 = Instant::now();
        let mut r = agent.get(&url).call().context("GET /")?;
        let body = r
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_string()?;
        lat.push(t0.elapsed().as_secs_f64());
        cpu.push(cpu_seconds(dpid) - c0);
        ensure!(
            body.contains(&shipment(n - 1)),
            "GET / on port {} does not list {}",
            d.http_port,
            shipment(n - 1)
        );
        if Instant::now() > get_until {
            break;
        }
    }
    lat.sort_by(f64::total_cmp);
    cpu.sort_by(f64::total_cmp);
    Ok((lat, cpu))
}

fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().is_some_and(|a| a == "__fill") {
        return fill(&argv[1..]);
    }
    let a = parse_args(argv.into_iter())?;
    let t_begin = Instant::now();
    let deadline = t_begin + a.timeout;
    let check = |what: &str| -> anyhow::Result<()> {
        ensure!(
            Instant::now() < deadline,
            "--timeout-s {} reached before {what}",
            a.timeout.as_secs()
        );
        Ok(())
    };
    let loadavg = load_avg();
    let (cached, meta) = populated(&a)?;
    let (n, k) = (a.shipments, a.per_frame);
    let start_ms = meta["start_ms"].as_i64().context("meta start_ms")?;
    let frames = meta["frames"].as_u64().context("meta frames")? as u32;

    // A fresh copy of the database, topped up to the current upload.
    let tmp = tempfile::tempdir_in(&a.cache)?;
    let root = a.keep.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    for old in ["daemon", "pg", "broker"] {
        let _ = std::fs::remove_dir_all(root.join(old));
    }
    for i in 0..a.instances {
        let _ = std::fs::remove_dir_all(root.join(format!("daemon-{i}")));
    }
    std::fs::create_dir_all(&root)?;
    let t_copy = Instant::now();
    let (from, to) = if a.postgres {
        (cached.join("pg"), root.join("pg"))
    } else {
        std::fs::create_dir_all(root.join("daemon"))?;
        (cached.join("daemon/data"), root.join("daemon/data"))
    };
    let st = Command::new("cp")
        .args(["-a", "--reflink=auto"])
        .arg(&from)
        .arg(&to)
        .status()?;
    ensure!(st.success(), "cp of the cached database failed: {st}");
    let copy_s = t_copy.elapsed().as_secs_f64();
    let pg = a
        .postgres
        .then(|| Postgres::start_existing(&root.join("pg")));
    let url = pg.as_ref().map(|pg| pg.url(PG_DB));
    let frame_ms = k as i64 * MIN;
    let now_frames =
        u32::try_from((unix_ms().div_euclid(frame_ms) * frame_ms - start_ms) / frame_ms)?;
    let t_top = Instant::now();
    let sled_data = root.join("daemon/data");
    let target = match &url {
        Some(url) => Target::Pg(url),
        None => Target::Sled(&sled_data),
    };
    run_fill(target, n, k, start_ms, (frames, now_frames), a.jobs)?;
    let topup_s = t_top.elapsed().as_secs_f64();
    let history_d = f64::from(now_frames) * k as f64 / 1440.0;
    let store_mib = match &pg {
        Some(pg) => pg_bytes(pg)?,
        None => dir_bytes(&sled_data),
    } as f64
        / (1 << 20) as f64;
    check("starting the daemon")?;

    // The system.
    let b = broker(&root.join("broker"));
    let t_start = Instant::now();
    let daemons: Vec<Daemon> = if a.instances == 1 {
        vec![Daemon::start_with(
            &root.join("daemon"),
            b.port,
            &[],
            &daemon_opts(n, k, url.as_deref(), None),
        )]
    } else {
        // Started together, as a centre's instances are after a restart:
        // each shipment's lease goes to the first that evaluates it.
        std::thread::scope(|sc| {
            let handles: Vec<_> = (0..a.instances)
                .map(|i| {
                    let dir = root.join(format!("daemon-{i}"));
                    let opts = daemon_opts(n, k, url.as_deref(), Some(i));
                    let port = b.port;
                    sc.spawn(move || Daemon::start_with(&dir, port, &[], &opts))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .map_err(|_| anyhow::anyhow!("starting a daemon failed"))
                })
                .collect::<anyhow::Result<Vec<_>>>()
        })?
    };
    // Each connected and subscribed: a shared subscription queues nothing
    // for a member before it subscribes.
    for d in &daemons {
        coldchain_tests::wait_for(Duration::from_secs(60), "daemon ready", || {
            ureq::get(&format!("http://127.0.0.1:{}/readyz", d.http_port))
                .call()
                .ok()
        });
    }
    let start_s = t_start.elapsed().as_secs_f64();
    let dpids: Vec<u32> = daemons
        .iter()
        .map(|d| d.pid().context("daemon pid"))
        .collect::<anyhow::Result<_>>()?;
    let bpid = b.pid().context("broker pid")?;
    let mut watch: Vec<Watch> = dpids.iter().map(|&p| Watch::One(p)).collect();
    watch.push(Watch::One(bpid));
    watch.push(Watch::One(std::process::id()));
    if let Some(pg) = &pg {
        watch.push(Watch::Tree(pg.pid().context("postgres pid")?));
    }
    let procs = Procs {
        daemons: daemons.len(),
        watch,
    };
    // Let the first full pass after start finish: 2 s under 0.2 core (the
    // daemons and PostgreSQL together), at most 120 s (300 s on PostgreSQL).
    let settle_until = Instant::now() + Duration::from_secs(if a.postgres { 300 } else { 120 });
    let busy = || -> f64 {
        let mut c = dpids.iter().map(|&p| cpu_seconds(p)).sum::<f64>();
        if let Some(p) = procs.pg() {
            c += procs.watch[p].cpu_seconds();
        }
        c
    };
    loop {
        let c0 = busy();
        std::thread::sleep(Duration::from_secs(2));
        if (busy() - c0) / 2.0 < 0.2 || Instant::now() > settle_until {
            break;
        }
    }
    let settle_s = t_start.elapsed().as_secs_f64() - start_s;
    let leases_start = match &pg {
        Some(pg) => lease_holders(pg)?,
        None => Vec::new(),
    };
    let rss_start = rss(&daemons, "VmRSS:");
    check("GET /")?;

    // 1. GET /, on each daemon.
    let mut gets = Vec::new();
    for d in &daemons {
        gets.push(get_list(&a, d, n)?);
    }
    let rss_get = rss(&daemons, "VmRSS:");
    check("the idle window")?;

    // 2. Idle.
    let sampler = Sampler::start(procs.watch.clone(), Duration::from_millis(250));
    let evals0 = evaluations(&daemons)?;
    let i0 = Instant::now();
    std::thread::sleep(Duration::from_secs(a.idle_s));
    let i1 = Instant::now();
    let samples = sampler.finish();
    let (idle_evals, idle_eval_ms) = eval_delta(&evaluations(&daemons)?, &evals0);
    let idle_cores = procs.daemon_cores(&samples, i0, i1);
    let idle_pg = procs.pg_cores(&samples, i0, i1);
    let rss_idle = rss(&daemons, "VmRSS:");
    check("the live windows")?;

    // 3. Live, every shipment watching.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let ids: Vec<DeviceId> = (0..n)
        .map(|i| DeviceId::new(&watched(i)).expect("valid id"))
        .collect();
    let log: StatusLog = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (log, stop, port) = (log.clone(), stop.clone(), b.port);
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(watch_status(port, log, stop)))
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let t_live = unix_ms();
    let live = live_window(
        &a,
        &rt,
        &daemons,
        &procs,
        b.port,
        ids.clone(),
        now_frames,
        a.faults,
    )?;
    // Statuses still on their way.
    std::thread::sleep(Duration::from_secs(5));
    stop.store(true, Ordering::Relaxed);
    watcher
        .join()
        .map_err(|_| anyhow::anyhow!("status watcher panicked"))??;
    let alerts = daemons[0].get("/api/v1/alerts");
    let leases_live = match &pg {
        Some(pg) => lease_holders(pg)?,
        None => Vec::new(),
    };
    check("closing the shipments")?;

    // 4. Pure ingest: the same load once no shipment is evaluated. Closing
    // is an electronic signature: a QA person (added by the admin token)
    // signs each one as quarantined (a release would need every alert
    // assessed first). All through the first daemon.
    let api = daemons[0].http_port;
    let t_close = Instant::now();
    const QA_PASSWORD: &str = "fleet-benchmark-qa-password";
    let (st, v) = http_post(
        api,
        "/api/v1/users",
        Some(TEST_TOKEN),
        &json!({"name": "fleet-qa", "full_name": "Fleet Benchmark QA", "role": "qa",
                "password": QA_PASSWORD}),
    );
    ensure!(
        (200..300).contains(&st),
        "adding the QA person -> {st}: {v}"
    );
    let (st, v) = http_post(
        api,
        "/api/v1/tokens",
        Some(TEST_TOKEN),
        &json!({"label": "fleet benchmark", "user": "fleet-qa"}),
    );
    ensure!(
        (200..300).contains(&st),
        "a token for the QA person -> {st}: {v}"
    );
    let qa_token = v["token"]
        .as_str()
        .context("the token response has no token")?
        .to_string();
    for i in 0..n {
        for (action, body, token) in [
            ("arrive", json!({}), TEST_TOKEN),
            (
                "close",
                json!({"decision": "quarantined", "password": QA_PASSWORD,
                       "comment": "benchmark: closed for the pure-ingest baseline"}),
                qa_token.as_str(),
            ),
        ] {
            let path = format!("/api/v1/shipments/{}/{action}", shipment(i));
            let (st, v) = http_post(api, &path, Some(token), &body);
            ensure!((200..300).contains(&st), "POST {path} -> {st}: {v}");
        }
    }
    let close_s = t_close.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(2));
    check("the pure-ingest window")?;
    let base = live_window(
        &a,
        &rt,
        &daemons,
        &procs,
        b.port,
        ids,
        now_frames + a.live_s / a.period_s,
        0,
    )?;
    let hwm = rss(&daemons, "VmHWM:");
    // Every shipment was closed through the first daemon: how many each
    // daemon's list (`GET /api/v1/shipments`, the summaries the lists read)
    // still shows as not closed, a pure-ingest window later.
    let listed_open: Vec<usize> = daemons
        .iter()
        .map(|d| -> anyhow::Result<usize> {
            let v = http_get(d.http_port, "/api/v1/shipments")?;
            Ok(v.as_array().map_or(0, |rows| {
                rows.iter()
                    .filter(|r| r["shipment"]["state"] != "closed")
                    .count()
            }))
        })
        .collect::<anyhow::Result<_>>()?;

    // Staleness, from the statuses of the live window.
    let log = std::mem::take(&mut *log.lock().unwrap_or_else(|e| e.into_inner()));
    let mut lag = Vec::new();
    let mut gap = Vec::new();
    let mut age = Vec::new();
    let mut by_ship: std::collections::HashMap<&str, (i64, i64)> = Default::default();
    for (recv, ship, last) in &log {
        let Some(last) = *last else { continue };
        if last < t_live {
            continue;
        }
        lag.push((recv - last) as f64 / 1000.0);
        if let Some((prev_recv, prev_last)) = by_ship.get(ship.as_str()) {
            gap.push((recv - prev_recv) as f64 / 1000.0);
            age.push((recv - prev_last) as f64 / 1000.0);
        }
        by_ship.insert(ship, (*recv, last));
    }
    for v in [&mut lag, &mut gap, &mut age] {
        v.sort_by(f64::total_cmp);
    }

    // Alert raise time vs the publish of the fault that proves it; and how
    // many probe-fault alerts each faulted shipment got (one is right).
    let alerts = alerts
        .as_array()
        .or_else(|| alerts["alerts"].as_array())
        .cloned()
        .unwrap_or_default();
    let mut raise = Vec::new();
    let mut per_fault = Vec::new();
    for (i, published) in &live.faults {
        let found: Vec<&Value> = alerts
            .iter()
            .filter(|al| {
                al["shipment"] == shipment(*i)
                    && alert_kind(al) == "probe_fault"
                    && al["raised_ms"]
                        .as_i64()
                        .is_some_and(|r| r >= t_live - 60_000)
            })
            .collect();
        per_fault.push(found.len());
        if let Some(r) = found.first().and_then(|al| al["raised_ms"].as_i64()) {
            raise.push((r - published) as f64 / 1000.0);
        }
    }
    raise.sort_by(f64::total_cmp);
    let stats: Vec<Value> = daemons
        .iter()
        .map(|d| http_get(d.http_port, "/api/v1/stats"))
        .collect::<anyhow::Result<_>>()?;
    let load_end = load_avg();
    drop(daemons);
    drop(b);
    drop(pg);

    // The table.
    let p = percentile;
    let store = if a.postgres {
        format!(
            "PostgreSQL, {} daemon instance{}",
            a.instances,
            if a.instances == 1 { "" } else { "s" }
        )
    } else {
        "sled".into()
    };
    println!(
        "coldchain-fleet: {n} fridge shipments in transit, {history_d:.2} d of 1/min history each \
         ({k} readings/frame, {} readings/shipment), store {store_mib:.0} MiB ({store})",
        u64::from(now_frames) * k as u64
    );
    println!(
        "  database: {} (populated in {:.0} s; copy {copy_s:.1} s, top-up {topup_s:.1} s), \
         daemon start {start_s:.1} s (+ {settle_s:.0} s first pass), load avg at start {loadavg}, at end {load_end}",
        cached.display(),
        meta["populate_s"].as_f64().unwrap_or(f64::NAN),
    );
    if a.postgres {
        println!(
            "  evaluation leases by holder: after start {leases_start:?}, after live {leases_live:?}"
        );
    }
    for (i, (lat, cpu)) in gets.iter().enumerate() {
        let who = if a.instances == 1 {
            String::new()
        } else {
            format!(" on instance {i}")
        };
        println!(
            "  GET /  (dashboard list){who}         median {:.3} s   p90 {:.3} s   daemon CPU/request median {:.3} s   ({} requests)",
            p(lat, 0.5),
            p(lat, 0.9),
            p(cpu, 0.5),
            lat.len()
        );
    }
    let pg_part = |c: f64| {
        if a.postgres {
            format!("   postgres {c:.3}")
        } else {
            String::new()
        }
    };
    let evals = |e: &[u64], ms: f64| {
        let each = if e.iter().sum::<u64>() > 0 {
            format!(" ({ms:.2} ms each)")
        } else {
            String::new()
        };
        format!(
            "   evaluations {}{each}",
            e.iter().map(u64::to_string).collect::<Vec<_>>().join(" + ")
        )
    };
    println!(
        "  idle, no data ({} s)             daemon {} core{}{}",
        a.idle_s,
        per_daemon(&idle_cores, 3),
        pg_part(idle_pg),
        evals(&idle_evals, idle_eval_ms)
    );
    println!(
        "  live, 1 frame/{}s x {n} watched   daemon {} core{}   broker {:.3}   publishers {:.3}   (drain {:.1} s){}",
        if a.period_s == 1 {
            String::new()
        } else {
            a.period_s.to_string()
        },
        per_daemon(&live.daemon_cores, 3),
        pg_part(live.pg_cores),
        live.broker_cores,
        live.harness_cores,
        live.drain_s,
        evals(&live.evaluations, live.eval_ms)
    );
    println!(
        "  pure ingest, same load, closed  daemon {} core{}   broker {:.3}   publishers {:.3}   (drain {:.1} s; closing took {close_s:.0} s){}",
        per_daemon(&base.daemon_cores, 3),
        pg_part(base.pg_cores),
        base.broker_cores,
        base.harness_cores,
        base.drain_s,
        evals(&base.evaluations, base.eval_ms)
    );
    if a.postgres {
        println!(
            "  evaluation above pure ingest    {:.3} core (daemons)   {:.3} core (daemons + postgres)",
            live.daemons() - base.daemons(),
            live.with_pg() - base.with_pg()
        );
        println!(
            "  after closing every shipment through instance 0, listed as not closed: {listed_open:?} (per instance)"
        );
    } else {
        println!(
            "  evaluation above pure ingest    {:.3} core",
            live.daemons() - base.daemons()
        );
    }
    println!(
        "  status: publish -> retained status  p50 {:.2} s  p90 {:.2} s  max {:.2} s   ({} statuses)",
        p(&lag, 0.5),
        p(&lag, 0.9),
        lag.last().copied().unwrap_or(f64::NAN),
        lag.len()
    );
    println!(
        "  status: interval per shipment       p50 {:.2} s  p90 {:.2} s  max {:.2} s;  age before the next p90 {:.2} s  max {:.2} s",
        p(&gap, 0.5),
        p(&gap, 0.9),
        gap.last().copied().unwrap_or(f64::NAN),
        p(&age, 0.9),
        age.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "  alert raised_ms - fault publish     min {:.2} s  median {:.2} s  max {:.2} s   ({} of {} probe faults raised; alerts per faulted shipment {:?})",
        raise.first().copied().unwrap_or(f64::NAN),
        p(&raise, 0.5),
        raise.last().copied().unwrap_or(f64::NAN),
        raise.len(),
        live.faults.len(),
        per_fault
    );
    println!(
        "  daemon RSS MiB: after start {}, after GET / {}, after idle {}, \
         after live {}, after pure ingest {};  peak (VmHWM) {}",
        per_daemon(&rss_start, 0),
        per_daemon(&rss_get, 0),
        per_daemon(&rss_idle, 0),
        per_daemon(&live.rss_mib, 0),
        per_daemon(&base.rss_mib, 0),
        per_daemon(&hwm, 0)
    );
    let sum = |v: &[f64]| v.iter().sum::<f64>();
    let mut summary = json!({
        "store": if a.postgres { "postgres" } else { "sled" }, "instances": a.instances,
        "period_s": a.period_s,
        "shipments": n, "history_days": history_d, "per_frame": k, "store_mib": store_mib,
        "populate_s": meta["populate_s"],
        "get_median_s": gets.iter().map(|g| p(&g.0, 0.5)).collect::<Vec<_>>(),
        "get_p90_s": gets.iter().map(|g| p(&g.0, 0.9)).collect::<Vec<_>>(),
        "get_cpu_median_s": gets.iter().map(|g| p(&g.1, 0.5)).collect::<Vec<_>>(),
        "gets": gets.iter().map(|g| g.0.len()).collect::<Vec<_>>(),
        "idle_cores": sum(&idle_cores), "idle_pg_cores": idle_pg,
        "ingest_cores": base.daemons(), "watched_cores": live.daemons(),
        "ingest_pg_cores": base.pg_cores, "watched_pg_cores": live.pg_cores,
        "evaluation_cores": live.daemons() - base.daemons(),
        "evaluation_with_pg_cores": live.with_pg() - base.with_pg(),
        "evaluations_live": live.evaluations, "evaluations_pure": base.evaluations,
        "leases_start": leases_start, "leases_live": leases_live,
        "listed_not_closed_after_close": listed_open,
        "status_lag_p50_s": p(&lag, 0.5), "status_lag_p90_s": p(&lag, 0.9),
        "status_interval_p50_s": p(&gap, 0.5), "status_interval_p90_s": p(&gap, 0.9),
        "status_age_max_s": age.last(), "raise_minus_publish_s": raise,
        "probe_fault_alerts_per_faulted_shipment": per_fault,
        "rss_mib": live.rss_mib, "peak_rss_mib": hwm,
        "rejected": stats.iter().map(|s| s["rejected"].clone()).collect::<Vec<_>>(),
        "duplicates": stats.iter().map(|s| s["duplicates"].clone()).collect::<Vec<_>>(),
        "load_start": loadavg, "load_end": load_end,
        "wall_s": t_begin.elapsed().as_secs_f64(),
    });
    // (A second object: one json! of everything exceeds its recursion limit.)
    if let (Some(m), Value::Object(more)) = (
        summary.as_object_mut(),
        json!({
            "evaluations_idle": idle_evals, "evaluation_idle_ms": idle_eval_ms,
            "evaluation_live_ms": live.eval_ms, "evaluation_pure_ms": base.eval_ms,
        }),
    ) {
        m.extend(more);
    }
    println!("{summary}");
    Ok(())
}
