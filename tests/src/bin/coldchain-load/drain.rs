//! `coldchain-load drain`: draining a queued backlog (issue 15, Benchmark).
//!
//! After an outage the broker holds a backlog for every persistent session.
//! For each frame shape, one bounded run on loopback:
//!
//! 1. a fresh `mosquitto` (the production settings of `deploy/mosquitto/prod.conf`
//!    that matter: persistence, `max_inflight_messages 1000`, unlimited queue;
//!    but `autosave_interval 3600`, so no periodic save stalls one drain and
//!    not another);
//! 2. three persistent sessions subscribed, then disconnected: the daemon's own
//!    (the release daemon is started once, comes online, and is stopped),
//!    `drain-raw` and `drain-py` (`mosquitto_sub -c -E`);
//! 3. the backlog published by `--devices` rumqttc connections (QoS 1), every
//!    message signed, every frame stamped with its publish time; the broker
//!    queues one copy per session;
//! 4. the three consumers drain their copy one after the other, each timed
//!    from the moment it is started to the moment it has acknowledged the last
//!    message:
//!    * raw: `mosquitto_sub -c -q 1 -C N` (ends after the N-th message);
//!    * daemon: the release `coldchain run` on the database that holds the
//!      sessions' first start; done when its `acked` counter (a PUBACK after
//!      the group commit, flush + fsync) reaches N (polled every 5 ms on
//!      `/api/v1/stats`); its start-up (about 30 ms) is included;
//!    * python: `tests/bench/drain_consumer.py` (paho-mqtt + sqlite3, HMAC
//!      checked, commit per 100 messages, PUBACK after the commit).
//!
//! Checks, not timed: `mosquitto_sub` printed N messages; the daemon stored
//! every reading exactly once (readings_stored, the per-device counts after a
//! `kill -9` and restart, no duplicates, no rejections); the Python consumer's
//! table holds N × K distinct readings and no tag failed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use coldchain_proto::codec::{MAX_SIGNED_LEN, encode_signed};
use coldchain_proto::{DeviceId, DeviceKey, topic};
use coldchain_tests::{Daemon, DeviceCfg, Mosquitto, TEST_KEY, which};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

use crate::{broker_config, frame, unix_ms};
use coldchain_tests::{cpu_seconds as cpu_s, status_kib};

const USAGE: &str = "\
coldchain-load drain: drain a queued backlog with mosquitto_sub, the daemon and a Python consumer

usage: coldchain-load drain [options]
  --shape FMT:NxK        a backlog of N messages of K readings, FMT json or postcard;
                         repeatable (default: json:50000x1 json:10000x32 postcard:10000x32)
  --devices N            publisher connections, one registered device each (default 8)
  --python EXE           Python with paho-mqtt (tests/bench.sh drain makes a venv);
                         without it the Python drain is skipped
  --consumer FILE        the Python consumer (default tests/bench/drain_consumer.py)
  --perf DIR             record `perf record --call-graph dwarf -a` during the daemon's drain into DIR/<shape>.data
  --timeout-s N          bound on each drain (default 120)
  --keep DIR             keep broker and daemon dirs (logs) in DIR instead of a temp dir
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Postcard,
}

#[derive(Debug, Clone, Copy)]
struct Shape {
    format: Format,
    messages: u32,
    readings: usize,
}

impl Shape {
    fn parse(s: &str) -> anyhow::Result<Shape> {
        let err = || format!("--shape {s:?}: expected json:NxK or postcard:NxK, e.g. json:50000x1");
        let (f, rest) = s.split_once(':').with_context(err)?;
        let (n, k) = rest.split_once('x').with_context(err)?;
        let format = match f {
            "json" => Format::Json,
            "postcard" => Format::Postcard,
            _ => bail!("{}", err()),
        };
        let shape = Shape {
            format,
            messages: n.parse().with_context(err)?,
            readings: k.parse().with_context(err)?,
        };
        if !(1..=32).contains(&shape.readings) || shape.messages == 0 {
            bail!("--shape {s:?}: 1..=32 readings and at least one message");
        }
        Ok(shape)
    }

    fn name(&self) -> String {
        let f = match self.format {
            Format::Json => "json",
            Format::Postcard => "postcard",
        };
        format!("{f}:{}x{}", self.messages, self.readings)
    }

    fn filter(&self) -> &'static str {
        match self.format {
            Format::Json => topic::ALL_DEVICES_UP_JSON,
            Format::Postcard => topic::ALL_DEVICES_UP,
        }
    }
}

#[derive(Debug, Clone)]
struct Args {
    shapes: Vec<Shape>,
    devices: usize,
    python: Option<PathBuf>,
    consumer: PathBuf,
    perf: Option<PathBuf>,
    timeout: Duration,
    keep: Option<PathBuf>,
}

fn parse_args(args: impl Iterator<Item = String>) -> anyhow::Result<Args> {
    let mut a = Args {
        shapes: Vec::new(),
        devices: 8,
        python: None,
        consumer: Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/drain_consumer.py"),
        perf: None,
        timeout: Duration::from_secs(120),
        keep: None,
    };
    let mut it = args;
    while let Some(flag) = it.next() {
        let mut val = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--shape" => a.shapes.push(Shape::parse(&val()?)?),
            "--devices" => a.devices = val()?.parse()?,
            "--python" => a.python = Some(val()?.into()),
            "--consumer" => a.consumer = val()?.into(),
            "--perf" => a.perf = Some(val()?.into()),
            "--timeout-s" => a.timeout = Duration::from_secs(val()?.parse()?),
            "--keep" => a.keep = Some(val()?.into()),
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            o => bail!("unknown option {o:?}\n{USAGE}"),
        }
    }
    if a.shapes.is_empty() {
        a.shapes = ["json:50000x1", "json:10000x32", "postcard:10000x32"]
            .iter()
            .map(|s| Shape::parse(s))
            .collect::<anyhow::Result<_>>()?;
    }
    if a.devices == 0 {
        bail!("--devices must be at least 1");
    }
    Ok(a)
}

/// One shape's figures.
#[derive(Debug, Default, Clone)]
struct Drain {
    raw_s: f64,
    daemon_s: f64,
    python_s: Option<f64>,
    rss_kib: u64,
    daemon_cpu_s: f64,
    commits: u64,
}

/// Runs the drains of `args` (the words after `drain`) and prints the figures.
pub fn main(args: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let a = parse_args(args)?;
    let mut all = Vec::new();
    for s in &a.shapes {
        println!("== drain {}", s.name());
        let d = drain_one(&a, s)?;
        all.push((*s, d));
    }
    println!();
    println!(
        "{:<18} {:>9} {:>9} {:>9} {:>12} {:>13} {:>14} {:>9}",
        "backlog",
        "raw s",
        "daemon s",
        "python s",
        "daemon/raw",
        "daemon/python",
        "daemon msgs/s",
        "RSS MiB"
    );
    for (s, d) in &all {
        let py = d.python_s.map_or("-".into(), |p| format!("{p:.3}"));
        let vs_py = d
            .python_s
            .map_or("-".into(), |p| format!("{:.2}x", p / d.daemon_s));
        println!(
            "{:<18} {:>9.3} {:>9.3} {:>9} {:>12.3} {:>13} {:>14.0} {:>9.1}",
            s.name(),
            d.raw_s,
            d.daemon_s,
            py,
            d.raw_s / d.daemon_s,
            vs_py,
            f64::from(s.messages) / d.daemon_s,
            d.rss_kib as f64 / 1024.0,
        );
    }
    for (s, d) in &all {
        println!(
            "{}",
            serde_json::json!({
                "shape": s.name(), "messages": s.messages, "readings_per_message": s.readings,
                "raw_s": d.raw_s, "daemon_s": d.daemon_s, "python_s": d.python_s,
                "daemon_over_raw": d.raw_s / d.daemon_s,
                "daemon_over_python": d.python_s.map(|p| p / d.daemon_s),
                "daemon_peak_rss_kib": d.rss_kib, "daemon_cpu_s": d.daemon_cpu_s,
                "commits": d.commits,
            })
        );
    }
    Ok(())
}

/// Subscribes a persistent session (`-c`) for `id` on `filter` and leaves (`-E`).
fn make_session(port: u16, id: &str, filter: &str) -> anyhow::Result<()> {
    let exe = which("mosquitto_sub").context("mosquitto_sub not installed")?;
    let st = Command::new(exe)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-c", "-i", id, "-q", "1", "-t", filter, "-E"])
        .stdin(Stdio::null())
        .status()?;
    if !st.success() {
        bail!("mosquitto_sub -E for session {id}: {st}");
    }
    Ok(())
}

fn drain_one(a: &Args, s: &Shape) -> anyhow::Result<Drain> {
    let tmp = tempfile::tempdir()?;
    let root = match &a.keep {
        Some(k) => k.join(s.name().replace(':', "-")),
        None => tmp.path().to_path_buf(),
    };
    std::fs::create_dir_all(&root)?;
    let n = u64::from(s.messages);
    let total_readings = n * s.readings as u64;

    let bdir = root.join("broker");
    // No periodic save during the drains: with three copies of the backlog
    // queued, each save stalls the broker for as long as writing them takes,
    // and where that stall falls (in which consumer's drain) is chance.
    let broker = Mosquitto::start_with_config(&bdir, |port| broker_config(port, &bdir, 3600));
    let names: Vec<String> = (1..=a.devices).map(|i| format!("load-{i}")).collect();
    let devs: Vec<DeviceCfg> = names.iter().map(|n| DeviceCfg::new(n)).collect();

    // Sessions: the daemon's (started once: it subscribes and comes online),
    // then the raw subscriber's and the Python consumer's.
    let mut daemon = Daemon::start(&root.join("daemon"), broker.port, &devs, "");
    daemon.stop();
    make_session(broker.port, "drain-raw", s.filter())?;
    make_session(broker.port, "drain-py", s.filter())?;

    // The backlog.
    let t = Instant::now();
    publish_backlog(a, s, broker.port, &names)?;
    println!(
        "  backlog: {n} messages x {} readings published in {:.2}s ({} devices)",
        s.readings,
        t.elapsed().as_secs_f64(),
        a.devices
    );

    // 1. Raw subscriber.
    let raw_out = root.join("raw.out");
    let exe = which("mosquitto_sub").context("mosquitto_sub not installed")?;
    let t0 = Instant::now();
    let mut child = Command::new(exe)
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
        .args(["-c", "-i", "drain-raw", "-q", "1", "-t", s.filter()])
        .args(["-C", &n.to_string(), "-F", "x"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&raw_out)?)
        .spawn()?;
    let st = wait_child(&mut child, a.timeout, "mosquitto_sub")?;
    let raw_s = t0.elapsed().as_secs_f64();
    let lines = std::fs::read_to_string(&raw_out)?.lines().count() as u64;
    if !st.success() || lines != n {
        bail!("mosquitto_sub: {st}, {lines} messages, expected {n}");
    }
    println!(
        "  raw mosquitto_sub -c -q 1   {raw_s:>7.3}s  {:>8.0} msgs/s",
        n as f64 / raw_s
    );

    // 2. The daemon.
    let perf = a.perf.as_ref().map(|dir| {
        std::fs::create_dir_all(dir)?;
        let out = dir.join(format!("{}.data", s.name().replace(':', "-")));
        let p = Command::new("perf")
            .args([
                "record",
                "--call-graph",
                "dwarf,16384",
                "-F",
                "1000",
                "-a",
                "-o",
            ])
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("perf record (Debian: linux-perf)")?;
        std::thread::sleep(Duration::from_millis(500));
        println!("  perf record -g -a -> {}", out.display());
        anyhow::Ok(p)
    });
    let perf = perf.transpose()?;
    let done = Arc::new(Mutex::new(None::<Instant>));
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (done, stop, port) = (done.clone(), stop.clone(), daemon.http_port);
        std::thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
            let url = format!("http://127.0.0.1:{port}/api/v1/stats");
            while !stop.load(Ordering::Relaxed) {
                if let Ok(mut r) = agent.get(&url).call()
                    && let Ok(v) = r.body_mut().read_json::<serde_json::Value>()
                    && v["acked"].as_u64().unwrap_or(0) >= n
                {
                    *done.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let t0 = Instant::now();
    daemon.restart();
    let dpid = daemon.pid().context("daemon pid")?;
    let deadline = t0 + a.timeout;
    while !poller.is_finished() {
        if Instant::now() > deadline {
            stop.store(true, Ordering::Relaxed);
            bail!(
                "the daemon did not acknowledge {n} messages within {:?}",
                a.timeout
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = poller.join();
    let t1 = done
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .context("poller ended without a result")?;
    let daemon_s = t1.duration_since(t0).as_secs_f64();
    if let Some(p) = perf {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let mut p = p;
        let _ = p.wait();
    }
    let rss_kib = status_kib(dpid, "VmHWM:").unwrap_or(0);
    let daemon_cpu_s = cpu_s(dpid);
    let stats = daemon.get("/api/v1/stats");
    let stored = stats["readings_stored"].as_u64().unwrap_or(0);
    let dups = stats["duplicates"].as_u64().unwrap_or(0);
    let commits = stats["commits"].as_u64().unwrap_or(0);
    let rejected: u64 = stats["rejected"]
        .as_object()
        .map(|o| o.values().filter_map(|v| v.as_u64()).sum())
        .unwrap_or(0);
    println!(
        "  daemon (durable, acked)     {daemon_s:>7.3}s  {:>8.0} msgs/s  daemon/raw {:.3}  peak RSS {:.1} MiB  cpu {daemon_cpu_s:.2}s  {commits} commits  pid {dpid}",
        n as f64 / daemon_s,
        raw_s / daemon_s,
        rss_kib as f64 / 1024.0
    );
    // Every reading stored once, and durable: crash, restart, count per device.
    daemon.kill9();
    daemon.restart();
    let recount: u64 = daemon
        .get("/api/v1/devices")
        .as_array()
        .map(|v| v.iter().map(|d| d["readings"].as_u64().unwrap_or(0)).sum())
        .unwrap_or(0);
    let _ = daemon.stop();
    if stored != total_readings || recount != total_readings || dups != 0 || rejected != 0 {
        bail!(
            "daemon: stored {stored}, {recount} after kill -9 and restart, expected {total_readings}; \
             {dups} duplicates, {rejected} rejected (expected none)"
        );
    }

    // 3. The Python consumer.
    let mut python_s = None;
    if let Some(py) = &a.python {
        let db = root.join("python.sqlite3");
        let _ = std::fs::remove_file(&db);
        let t0 = Instant::now();
        let mut child = Command::new(py)
            .arg(&a.consumer)
            .args(["--port", &broker.port.to_string()])
            .args(["--client-id", "drain-py", "--topic", s.filter()])
            .args(["--messages", &n.to_string(), "--key", TEST_KEY])
            .arg("--db")
            .arg(&db)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("start {}", py.display()))?;
        let st = wait_child(&mut child, a.timeout, "python consumer")?;
        let secs = t0.elapsed().as_secs_f64();
        let mut out = String::new();
        if let Some(mut o) = child.stdout.take() {
            use std::io::Read;
            let _ = o.read_to_string(&mut out);
        }
        let v: serde_json::Value = serde_json::from_str(out.trim())
            .with_context(|| format!("python consumer output {out:?}"))?;
        let rows = v["readings"].as_u64().unwrap_or(0);
        let bad = v["bad_tag"].as_u64().unwrap_or(u64::MAX);
        if !st.success() || rows != total_readings || bad != 0 {
            bail!(
                "python consumer: {st}, {rows} readings (expected {total_readings}), {bad} bad tags"
            );
        }
        println!(
            "  python paho + sqlite3       {secs:>7.3}s  {:>8.0} msgs/s  daemon is {:.2}x it",
            n as f64 / secs,
            secs / daemon_s
        );
        python_s = Some(secs);
    }
    Ok(Drain {
        raw_s,
        daemon_s,
        python_s,
        rss_kib,
        daemon_cpu_s,
        commits,
    })
}

fn wait_child(
    child: &mut std::process::Child,
    timeout: Duration,
    what: &str,
) -> anyhow::Result<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Publishes the backlog: `--devices` connections, each `messages / devices`
/// (the first ones one more) frames, QoS 1, until the broker has acknowledged all.
fn publish_backlog(a: &Args, s: &Shape, port: u16, names: &[String]) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let per = s.messages / a.devices as u32;
    let extra = s.messages % a.devices as u32;
    rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for (i, name) in names.iter().enumerate() {
            let count = per + u32::from((i as u32) < extra);
            let dev = DeviceId::new(name).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            set.spawn(publish_device(port, dev, count, *s));
        }
        while let Some(r) = set.join_next().await {
            r??;
        }
        anyhow::Ok(())
    })
}

/// One message: a signed postcard frame, or a signed JSON envelope (the
/// frame's JSON text, its tag over those exact bytes; proto/README.md).
fn message(s: &Shape, dev: &DeviceId, seq: u32, key: &DeviceKey) -> anyhow::Result<Vec<u8>> {
    let f = frame(dev, seq, s.readings, unix_ms());
    Ok(match s.format {
        Format::Postcard => {
            let mut buf = [0u8; MAX_SIGNED_LEN];
            encode_signed(&f, key, &mut buf)
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .to_vec()
        }
        Format::Json => {
            let text = serde_json::to_string(&f)?;
            let tag = hex::encode(key.sign(text.as_bytes()));
            format!("{{\"frame\":{text},\"tag\":\"{tag}\"}}").into_bytes()
        }
    })
}

async fn publish_device(port: u16, dev: DeviceId, count: u32, s: Shape) -> anyhow::Result<()> {
    let key = DeviceKey::from_hex(TEST_KEY).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut o = MqttOptions::new(format!("backlog-{}", dev.as_str()), "127.0.0.1", port);
    o.set_clean_session(true)
        .set_keep_alive(Duration::from_secs(30))
        .set_inflight(100)
        .set_max_packet_size(64 * 1024, 64 * 1024);
    let (client, mut el) = AsyncClient::new(o, 64);
    let t = match s.format {
        Format::Json => topic::device_up_json(&dev),
        Format::Postcard => topic::device_up(&dev),
    }
    .to_string();
    let producer = tokio::spawn(async move {
        for seq in 0..count {
            let bytes = message(&s, &dev, seq, &key)?;
            client
                .publish(t.clone(), QoS::AtLeastOnce, false, bytes)
                .await?;
        }
        anyhow::Ok(client)
    });
    let mut acked = 0u32;
    while acked < count {
        match el.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
            Ok(Event::Outgoing(Outgoing::Disconnect)) => bail!("publisher disconnected"),
            Ok(_) => {}
            Err(e) => bail!("publisher connection: {e}"),
        }
    }
    let client = producer.await??;
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_millis(200), el.poll()).await;
    Ok(())
}
