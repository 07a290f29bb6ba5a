//! `coldchain-load`: the ingest load harness (issue 4, Benchmark).
//!
//! One bounded run on loopback:
//!
//! * a real `mosquitto` (the test harness's config: persistence on),
//! * the release-built `coldchain` daemon (the test harness's config plus
//!   `--daemon-toml`), one registered device per publisher connection,
//! * publishers: `--devices` rumqttc connections (QoS 1, `--inflight` window
//!   each) sending signed reading frames, each signed at the moment it is
//!   handed to the client with the publish wall time as its timestamp; or,
//!   with `--publisher sim`, `coldchain-sim --containers N --interval-ms 0`,
//! * `mosquitto_sub -q 1` on the same topic filter as the daemon, at the same
//!   time, counting what the broker delivers to a plain C client.
//!
//! What it reports (and how it gets it):
//!
//! * **durable readings/s**: readings in the run / (time the daemon's `acked`
//!   counter reached the number of frames − first publish). The daemon counts
//!   `acked` only after a group commit (sled flush + fsync) and the PUBACK,
//!   so this is the rate of *durable, acknowledged* readings.
//! * **raw subscribe readings/s**: the same readings / (time `mosquitto_sub`
//!   printed the last message − first publish), in the same run.
//! * **publish → durable latency p50/p99/max**: the harness polls
//!   `/api/v1/stats` every `--poll-ms` and records `(time, acked)`. With every
//!   publish time recorded, the k-th publish (in time order, over all
//!   connections) is matched to the first poll at which `acked >= k`: the broker
//!   delivers to the daemon's single session in arrival order and the daemon
//!   acks in order, so this is the k-th message's time to durability, with an
//!   error of at most one poll interval (upward) plus cross-connection
//!   reordering of at most one in-flight window. "Publish" is the moment the
//!   publisher hands the signed frame to its MQTT client; at saturation that
//!   includes waiting for a free slot in its own in-flight window, so use
//!   `--rate` to measure latency below saturation.
//! * **peak RSS**: `VmHWM` from `/proc/<daemon pid>/status` at the end.
//! * CPU seconds used by the daemon, the broker, `mosquitto_sub` and the
//!   harness itself during the run (from `/proc/<pid>/stat`), to show the
//!   bottleneck.
//!
//! Then it proves durability of what was acknowledged: SIGKILL the daemon,
//! start it again on the same database and count every device's readings.
//!
//! Bounded: `--devices × --frames` messages, and `--timeout-s` for the whole run.
//!
//! `coldchain-load drain ...` drains a queued backlog instead (see [`drain`]).

mod drain;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use coldchain_proto::codec::{MAX_SIGNED_LEN, encode_signed};
use coldchain_proto::{
    Body, ChannelKind, DeviceId, DeviceKey, Frame, Measurement, Reading, Timestamp, topic,
};
use coldchain_tests::{
    Daemon, DeviceCfg, Mosquitto, TEST_KEY, bin, cpu_seconds, http_get, percentile, status_kib,
    which,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

const USAGE: &str = "\
coldchain-load: readings/s through mosquitto -> coldchain -> sled (durable), vs mosquitto_sub

usage: coldchain-load [options]
  --devices N            publisher connections, one registered device each (default 8)
  --frames N             frames per device (default 2000)
  --readings K           readings per frame, 1..=32 (default 32)
  --inflight N           QoS 1 window per publisher connection (default 100)
  --rate R               offered load, readings/s over all devices (default 0: as fast as possible)
  --publisher own|sim    rumqttc publishers of frames signed at publish time (default),
                         or coldchain-sim --containers N --interval-ms 0
  --broker-autosave S    mosquitto autosave_interval, seconds (default 5, as deploy/mosquitto/prod.conf;
                         the test harness's broker uses 1)
  --daemon-toml TOML     extra daemon config, e.g. '[store]\\nmax_batch = 8192'
  --repeat N             run N times (fresh broker and daemon each), then print best and median (default 1)
  --no-sub               do not run mosquitto_sub alongside
  --postgres             the daemon on PostgreSQL ([store] postgres_url) instead of sled: a
                         throwaway cluster of Debian's PostgreSQL is started for each run
  --instances N          with --postgres: N daemons on the one database, splitting the stream
                         through a shared subscription ([centre]); rates are their sum (default 1)
  --no-crash-check       skip the kill -9 / restart / recount at the end
  --poll-ms N            /api/v1/stats poll interval for the latency estimate (default 2)
  --timeout-s N          bound on the whole run (default 300)
  --keep DIR             keep broker and daemon dirs (logs) in DIR instead of a temp dir

coldchain-load drain --help: draining a queued backlog (issue 15)
";

#[derive(Debug, Clone)]
struct Args {
    devices: usize,
    frames: u32,
    readings: usize,
    inflight: u16,
    rate: f64,
    sim: bool,
    daemon_toml: String,
    autosave: u32,
    repeat: usize,
    sub: bool,
    crash_check: bool,
    poll: Duration,
    timeout: Duration,
    keep: Option<std::path::PathBuf>,
    postgres: bool,
    instances: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        devices: 8,
        frames: 2000,
        readings: 32,
        inflight: 100,
        rate: 0.0,
        sim: false,
        daemon_toml: String::new(),
        autosave: 5,
        repeat: 1,
        sub: true,
        crash_check: true,
        poll: Duration::from_millis(2),
        timeout: Duration::from_secs(300),
        keep: None,
        postgres: false,
        instances: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--devices" => a.devices = val()?.parse()?,
            "--frames" => a.frames = val()?.parse()?,
            "--readings" => a.readings = val()?.parse()?,
            "--inflight" => a.inflight = val()?.parse()?,
            "--rate" => a.rate = val()?.parse()?,
            "--publisher" => {
                a.sim = match val()?.as_str() {
                    "own" => false,
                    "sim" => true,
                    o => bail!("--publisher {o:?}: expected own or sim"),
                }
            }
            "--broker-autosave" => a.autosave = val()?.parse()?,
            "--daemon-toml" => a.daemon_toml = val()?.replace("\\n", "\n"),
            "--repeat" => a.repeat = val()?.parse()?,
            "--no-sub" => a.sub = false,
            "--postgres" => a.postgres = true,
            "--instances" => a.instances = val()?.parse::<usize>()?.max(1),
            "--no-crash-check" => a.crash_check = false,
            "--poll-ms" => a.poll = Duration::from_millis(val()?.parse()?),
            "--timeout-s" => a.timeout = Duration::from_secs(val()?.parse()?),
            "--keep" => a.keep = Some(val()?.into()),
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            o => bail!("unknown option {o:?}\n{USAGE}"),
        }
    }
    if !(1..=32).contains(&a.readings) {
        bail!("--readings must be 1..=32");
    }
    if a.devices == 0 || a.frames == 0 {
        bail!("--devices and --frames must be at least 1");
    }
    if a.sim && a.rate > 0.0 {
        bail!("--rate is only supported with --publisher own");
    }
    Ok(a)
}

/// The production broker settings (deploy/mosquitto/prod.conf) that matter
/// here: persistence, autosave, max_inflight_messages 1000, unlimited queue.
fn broker_config(port: u16, dir: &std::path::Path, autosave: u32) -> String {
    format!(
        "listener {port} 127.0.0.1\n\
         allow_anonymous true\n\
         persistence true\n\
         persistence_location {dir}/\n\
         autosave_interval {autosave}\n\
         max_inflight_messages 1000\n\
         max_queued_messages 0\n\
         max_queued_bytes 0\n\
         log_dest stderr\n\
         log_type error\n\
         log_type warning\n\
         {user}",
        dir = dir.display(),
        user = if nix::unistd::Uid::effective().is_root() {
            "user root\n"
        } else {
            ""
        },
    )
}

/// Microseconds since `base`.
fn us(base: Instant) -> u64 {
    base.elapsed().as_micros() as u64
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn frame(dev: &DeviceId, seq: u32, k: usize, now_ms: u64) -> Frame {
    let mut rs = heapless::Vec::new();
    for i in 0..k {
        let _ = rs.push(Reading {
            channel: (i % 4) as u8,
            kind: ChannelKind::Rtd,
            dt_ms: (i as u32) * 1000,
            value: Measurement::Valid(-190_000 + (seq as i32 % 1000) + i as i32),
        });
    }
    Frame {
        device: dev.clone(),
        boot: 1,
        seq,
        time: Timestamp::Wall(now_ms),
        body: Body::Readings(rs),
    }
}

/// Publish times (µs since base) of every frame, and the time of the last broker PUBACK.
struct PubResult {
    publish_us: Vec<u64>,
    last_puback_us: u64,
}

async fn publish_device(
    a: Args,
    port: u16,
    dev: DeviceId,
    base: Instant,
    start_at: Instant,
    per_frame: Option<Duration>,
) -> anyhow::Result<PubResult> {
    let key = DeviceKey::from_hex(TEST_KEY).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut o = MqttOptions::new(format!("load-{}", dev.as_str()), "127.0.0.1", port);
    o.set_clean_session(true)
        .set_keep_alive(Duration::from_secs(30))
        .set_inflight(a.inflight)
        .set_max_packet_size(64 * 1024, 64 * 1024);
    // A small request channel: a publish call returns when the frame is about
    // to be written, so its recorded time is close to the socket write.
    let (client, mut el) = AsyncClient::new(o, 4);
    let t_up = topic::device_up(&dev).to_string();
    let n = a.frames;
    let k = a.readings;
    let producer = tokio::spawn(async move {
        let mut times = Vec::with_capacity(n as usize);
        let mut buf = [0u8; MAX_SIGNED_LEN];
        for seq in 0..n {
            if let Some(step) = per_frame {
                tokio::time::sleep_until((start_at + step * seq).into()).await;
            }
            let f = frame(&dev, seq, k, unix_ms());
            let bytes = encode_signed(&f, &key, &mut buf)
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .to_vec();
            let t = us(base);
            client
                .publish(t_up.clone(), QoS::AtLeastOnce, false, bytes)
                .await?;
            times.push(t);
        }
        anyhow::Ok((client, times))
    });
    let mut acked = 0u32;
    let mut last = 0;
    while acked < n {
        match el.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                acked += 1;
                last = us(base);
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => bail!("publisher disconnected"),
            Ok(_) => {}
            Err(e) => bail!("publisher connection: {e}"),
        }
    }
    let (client, publish_us) = producer.await??;
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_millis(200), el.poll()).await;
    Ok(PubResult {
        publish_us,
        last_puback_us: last,
    })
}

fn stat_u64(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("drain") {
        return drain::main(std::env::args().skip(2));
    }
    let a = parse_args()?;
    let mut runs = Vec::new();
    for i in 0..a.repeat.max(1) {
        if a.repeat > 1 {
            println!("== run {} of {}", i + 1, a.repeat);
        }
        runs.push(run_once(&a)?);
    }
    if runs.len() > 1 {
        let col = |k: &str| {
            let mut v: Vec<f64> = runs.iter().filter_map(|r| r[k].as_f64()).collect();
            v.sort_by(f64::total_cmp);
            v
        };
        let med = |v: &[f64]| v.get(v.len() / 2).copied().unwrap_or(f64::NAN);
        let (rate, ratio, p50, p99, rss) = (
            col("durable_rate"),
            col("ratio"),
            col("p50_ms"),
            col("p99_ms"),
            col("peak_rss_kib"),
        );
        println!("== {} runs: best / median", runs.len());
        println!(
            "  daemon durable readings/s  {:.0} / {:.0}",
            rate.last().copied().unwrap_or(f64::NAN),
            med(&rate)
        );
        if !ratio.is_empty() {
            println!(
                "  ratio durable / raw        {:.3} / {:.3}",
                ratio.last().copied().unwrap_or(f64::NAN),
                med(&ratio)
            );
        }
        println!(
            "  publish->durable p50 ms    {:.1} / {:.1}",
            p50.first().copied().unwrap_or(f64::NAN),
            med(&p50)
        );
        println!(
            "  publish->durable p99 ms    {:.1} / {:.1}",
            p99.first().copied().unwrap_or(f64::NAN),
            med(&p99)
        );
        println!(
            "  daemon peak RSS MiB        {:.1} / {:.1}",
            rss.first().copied().unwrap_or(f64::NAN) / 1024.0,
            med(&rss) / 1024.0
        );
    }
    Ok(())
}

fn run_once(a: &Args) -> anyhow::Result<serde_json::Value> {
    let a = a.clone();
    let total_frames = a.devices as u64 * u64::from(a.frames);
    let total_readings = total_frames * a.readings as u64;
    let tmp = tempfile::tempdir()?;
    let root = a.keep.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&root)?;
    let deadline = Instant::now() + a.timeout;

    // Build (no-op when up to date) before anything is timed.
    let coldchain = bin("coldchain");
    eprintln!("daemon binary: {}", coldchain.display());

    let bdir = root.join("broker");
    let autosave = a.autosave;
    let broker = Mosquitto::start_with_config(&bdir, |port| broker_config(port, &bdir, autosave));
    let names: Vec<String> = (1..=a.devices).map(|i| format!("load-{i}")).collect();
    let devs: Vec<DeviceCfg> = names.iter().map(|n| DeviceCfg::new(n)).collect();
    let pg = a
        .postgres
        .then(|| coldchain_tests::Postgres::start(&root.join("pg")));
    let mut daemon_toml = a.daemon_toml.clone();
    if let Some(pg) = &pg {
        let line = format!("postgres_url = \"{}\"\n", pg.create_db("load"));
        daemon_toml = match daemon_toml.find("[store]\n") {
            Some(i) => format!("{}{line}{}", &daemon_toml[..i + 8], &daemon_toml[i + 8..]),
            None => format!("{daemon_toml}\n[store]\n{line}"),
        };
    }
    if a.instances > 1 {
        anyhow::ensure!(
            a.postgres,
            "--instances needs --postgres (one shared database)"
        );
        daemon_toml.push_str("\n[centre]\ngroup = \"load\"\n");
    }
    let mut daemons: Vec<Daemon> = (0..a.instances)
        .map(|i| {
            let opts = coldchain_tests::DaemonOpts {
                mqtt: format!("client_id = \"coldchain-load-{i}\""),
                extra: daemon_toml.clone(),
                ..Default::default()
            };
            Daemon::start_with(&root.join(format!("daemon-{i}")), broker.port, &devs, &opts)
        })
        .collect();
    // Each connected (readyz: MQTT up) and subscribed: a shared
    // subscription queues nothing for a member before it subscribes.
    for d in &daemons {
        coldchain_tests::wait_for(Duration::from_secs(30), "daemon ready", || {
            ureq::get(&format!("http://127.0.0.1:{}/readyz", d.http_port))
                .call()
                .ok()
        });
    }
    std::thread::sleep(Duration::from_millis(500));
    let dpids: Vec<u32> = daemons
        .iter()
        .map(|d| d.pid().context("daemon pid"))
        .collect::<anyhow::Result<_>>()?;
    let ports: Vec<u16> = daemons.iter().map(|d| d.http_port).collect();
    let bpid = broker.pid().context("broker pid")?;
    let stat_sum = |key: &str| -> anyhow::Result<u64> {
        let mut n = 0;
        for p in &ports {
            n += stat_u64(&http_get(*p, "/api/v1/stats")?, key);
        }
        Ok(n)
    };
    let acked0 = stat_sum("acked")?;
    let daemons_cpu = |pids: &[u32]| pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>();

    let base = Instant::now();

    // mosquitto_sub on the daemon's filter, QoS 1, one line per message.
    let sub_done = Arc::new(Mutex::new(None::<(u64, u64, u64)>));
    let mut sub_child = None;
    if a.sub {
        let exe = which("mosquitto_sub").context("mosquitto_sub not installed")?;
        let mut child = Command::new(exe)
            .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
            .args(["-q", "1", "-t", topic::ALL_DEVICES_UP, "-F", "x"])
            .args(["-C", &total_frames.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let out = child.stdout.take().context("mosquitto_sub stdout")?;
        let done = sub_done.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::with_capacity(1 << 16, out);
            let mut line = Vec::new();
            let (mut n, mut first) = (0u64, 0u64);
            loop {
                line.clear();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        n += 1;
                        if n == 1 {
                            first = us(base);
                        }
                        if n == total_frames {
                            break;
                        }
                    }
                }
            }
            *done.lock().unwrap_or_else(|e| e.into_inner()) = Some((n, first, us(base)));
        });
        sub_child = Some(child);
        // Let it subscribe before the first publish.
        std::thread::sleep(Duration::from_millis(500));
    }

    // Poll the daemon's durable-ack counter.
    let stop_poll = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::<(u64, u64)>::with_capacity(1 << 16)));
    let poller = {
        let (stop, samples, ports, poll) =
            (stop_poll.clone(), samples.clone(), ports.clone(), a.poll);
        std::thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
            let urls: Vec<String> = ports
                .iter()
                .map(|p| format!("http://127.0.0.1:{p}/api/v1/stats"))
                .collect();
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let mut sum = Some(0u64);
                for url in &urls {
                    sum = match (sum, agent.get(url).call()) {
                        (Some(n), Ok(mut r)) => r
                            .body_mut()
                            .read_json::<serde_json::Value>()
                            .ok()
                            .map(|v| n + stat_u64(&v, "acked")),
                        _ => None,
                    };
                }
                if let Some(sum) = sum {
                    let t = us(base);
                    let n = sum.saturating_sub(acked0);
                    samples
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((t, n));
                    if n >= total_frames {
                        break;
                    }
                }
                if let Some(rest) = poll.checked_sub(t0.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
        })
    };

    let cpu0 = (
        daemons_cpu(&dpids),
        cpu_seconds(bpid),
        cpu_seconds(std::process::id()),
    );
    let sub_cpu0 = sub_child
        .as_ref()
        .map(|c| cpu_seconds(c.id()))
        .unwrap_or(0.0);

    // Publish.
    let t_first_pub;
    let mut publish_us: Vec<u64>;
    let t_pub_acked;
    let mut sim_summary = None;
    if a.sim {
        let t = us(base);
        let out = Command::new(bin("coldchain-sim"))
            .args(["--broker", &format!("127.0.0.1:{}", broker.port)])
            .args(["--device", "load", "--key", TEST_KEY])
            .args(["--frames", &a.frames.to_string()])
            .args(["--readings-per-frame", &a.readings.to_string()])
            .args(["--interval-ms", "0"])
            .args(["--containers", &a.devices.to_string()])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .context("run coldchain-sim")?;
        t_pub_acked = us(base);
        if !out.status.success() {
            bail!("coldchain-sim failed: {}", out.status);
        }
        sim_summary = Some(String::from_utf8_lossy(&out.stdout).lines().count());
        t_first_pub = t;
        publish_us = Vec::new();
    } else {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let per_frame = (a.rate > 0.0)
            .then(|| Duration::from_secs_f64(a.devices as f64 * a.readings as f64 / a.rate));
        let start_at = Instant::now() + Duration::from_millis(50);
        let results = rt.block_on(async {
            let mut set = tokio::task::JoinSet::new();
            for n in &names {
                let dev = DeviceId::new(n).map_err(|e| anyhow::anyhow!("{e:?}"))?;
                set.spawn(publish_device(
                    a.clone(),
                    broker.port,
                    dev,
                    base,
                    start_at,
                    per_frame,
                ));
            }
            let mut out = Vec::new();
            while let Some(r) = set.join_next().await {
                out.push(r??);
            }
            anyhow::Ok(out)
        })?;
        t_pub_acked = results.iter().map(|r| r.last_puback_us).max().unwrap_or(0);
        publish_us = results.into_iter().flat_map(|r| r.publish_us).collect();
        publish_us.sort_unstable();
        t_first_pub = publish_us.first().copied().unwrap_or(0);
    }

    // Wait until every frame is durable and acknowledged by the daemon.
    loop {
        if poller.is_finished() {
            break;
        }
        if Instant::now() > deadline {
            stop_poll.store(true, Ordering::Relaxed);
            bail!("timed out waiting for the daemon to acknowledge {total_frames} frames");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = poller.join();
    let cpu1 = (
        daemons_cpu(&dpids),
        cpu_seconds(bpid),
        cpu_seconds(std::process::id()),
    );
    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(|e| e.into_inner()));
    let t_durable = samples.last().map(|s| s.0).unwrap_or(0);

    // mosquitto_sub.
    let mut sub = None;
    if let Some(mut child) = sub_child {
        let sub_cpu = cpu_seconds(child.id()) - sub_cpu0;
        while sub_done.lock().unwrap_or_else(|e| e.into_inner()).is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("timed out waiting for mosquitto_sub");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        sub = sub_done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|s| (s, sub_cpu));
    }

    let peak_rss_kib = dpids
        .iter()
        .filter_map(|p| status_kib(*p, "VmHWM:"))
        .max()
        .unwrap_or(0);
    let broker_rss_kib = status_kib(bpid, "VmHWM:").unwrap_or(0);

    // Latency: k-th publish (time order) vs first poll with acked >= k.
    let mut lat_ms = Vec::new();
    if !publish_us.is_empty() {
        let mut j = 0;
        for (k, &tp) in publish_us.iter().enumerate() {
            while j < samples.len() && samples[j].1 < k as u64 + 1 {
                j += 1;
            }
            if j == samples.len() {
                break;
            }
            lat_ms.push((samples[j].0.saturating_sub(tp)) as f64 / 1000.0);
        }
        lat_ms.sort_by(f64::total_cmp);
    }

    let secs = |t: u64| t.saturating_sub(t_first_pub) as f64 / 1e6;
    let durable_s = secs(t_durable);
    let durable_rate = total_readings as f64 / durable_s;
    let pub_rate = total_readings as f64 / secs(t_pub_acked);
    let sub_rate = sub.map(|((n, _, last), _)| (n * a.readings as u64) as f64 / secs(last));
    let ratio = sub_rate.map(|s| durable_rate / s);

    let readings_stored = stat_sum("readings_stored")?;
    let acked = stat_sum("acked")?.saturating_sub(acked0);
    let commits = stat_sum("commits")?;

    // Every acknowledged reading is durable: crash the daemon and count again.
    let mut recount = None;
    if a.crash_check {
        // Every instance: on a shared database the first one's count is
        // the whole store's.
        for d in &mut daemons {
            d.kill9();
        }
        for d in &mut daemons {
            d.restart();
        }
        let devices = daemons[0].get("/api/v1/devices");
        let n: u64 = devices
            .as_array()
            .map(|v| v.iter().map(|d| d["readings"].as_u64().unwrap_or(0)).sum())
            .unwrap_or(0);
        recount = Some(n);
    }
    for d in &mut daemons {
        let _ = d.stop();
    }

    let p = |q| percentile(&lat_ms, q);
    println!(
        "coldchain-load: {} publisher(s) ({}), {} frames x {} readings = {} readings, inflight {}, rate {}",
        a.devices,
        if a.sim {
            "coldchain-sim"
        } else {
            "rumqttc, signed at publish"
        },
        total_frames,
        a.readings,
        total_readings,
        a.inflight,
        if a.rate > 0.0 {
            format!("{:.0}/s offered", a.rate)
        } else {
            "max".into()
        }
    );
    if let Some(n) = sim_summary {
        println!("  sim summary lines      {n}");
    }
    println!("  publisher (broker acks) {pub_rate:>10.0} readings/s");
    if let Some(((n, _, _), cpu)) = sub {
        println!(
            "  mosquitto_sub raw       {:>10.0} readings/s  ({n} msgs, cpu {cpu:.2}s)",
            sub_rate.unwrap_or(f64::NAN)
        );
    }
    println!("  daemon durable          {durable_rate:>10.0} readings/s  over {durable_s:.3}s");
    if let Some(r) = ratio {
        println!("  ratio durable / raw     {r:>10.3}");
    }
    println!(
        "  publish->durable ms     p50 {:.1}  p99 {:.1}  max {:.1}  (n={}, poll {:?})",
        p(0.5),
        p(0.99),
        lat_ms.last().copied().unwrap_or(f64::NAN),
        lat_ms.len(),
        a.poll
    );
    println!(
        "  daemon peak RSS         {:.1} MiB (VmHWM); broker {:.1} MiB",
        peak_rss_kib as f64 / 1024.0,
        broker_rss_kib as f64 / 1024.0
    );
    println!(
        "  cpu seconds in run      daemon {:.2}  broker {:.2}  harness {:.2}  (wall {:.2})",
        cpu1.0 - cpu0.0,
        cpu1.1 - cpu0.1,
        cpu1.2 - cpu0.2,
        durable_s
    );
    println!(
        "  daemon: readings_stored {readings_stored}, acked {acked}, commits {commits} ({:.0} msgs/commit)",
        acked as f64 / commits.max(1) as f64
    );
    if let Some(n) = recount {
        println!("  after kill -9 + restart: {n} readings stored (expected {total_readings})");
    }
    // What the readings take in PostgreSQL: the kv table with its index and
    // TOAST, after the run (not a per-reading exact cost: it includes the
    // other trees, which are small here).
    let pg_bytes = pg.as_ref().and_then(|pg| {
        pg.psql("load", "SELECT pg_total_relation_size('kv')")
            .ok()?
            .parse::<u64>()
            .ok()
    });
    if let Some(b) = pg_bytes {
        println!(
            "  PostgreSQL kv table     {:.1} MiB, {:.1} bytes/reading",
            b as f64 / 1048576.0,
            b as f64 / total_readings as f64
        );
    }
    let summary = serde_json::json!({
            "devices": a.devices, "frames": total_frames, "readings_per_frame": a.readings,
            "readings": total_readings, "publisher": if a.sim { "sim" } else { "own" },
            "offered_rate": a.rate, "inflight": a.inflight, "broker_autosave_s": a.autosave,
            "publisher_rate": pub_rate, "sub_rate": sub_rate, "durable_rate": durable_rate,
            "ratio": ratio, "p50_ms": p(0.5), "p99_ms": p(0.99),
            "max_ms": lat_ms.last(), "peak_rss_kib": peak_rss_kib,
            "cpu_daemon_s": cpu1.0 - cpu0.0, "cpu_broker_s": cpu1.1 - cpu0.1,
            "cpu_harness_s": cpu1.2 - cpu0.2, "wall_s": durable_s,
            "commits": commits, "recount": recount, "postgres_bytes": pg_bytes,
    });
    println!("{summary}");
    let mut bad = Vec::new();
    if readings_stored != total_readings {
        bad.push(format!(
            "daemon stored {readings_stored} readings, expected {total_readings}"
        ));
    }
    if acked != total_frames {
        bad.push(format!(
            "daemon acked {acked} frames, expected {total_frames}"
        ));
    }
    if recount.is_some_and(|n| n != total_readings) {
        bad.push(format!(
            "after kill -9: {recount:?} readings, expected {total_readings}"
        ));
    }
    if !bad.is_empty() {
        bail!("{}", bad.join("; "));
    }
    Ok(summary)
}
