//! `coldchain-sim`: simulated Coldchain containers publishing to a real MQTT broker.
//!
//! Each container runs the firmware's own frame building and signing
//! (`coldchain-firmware`) against a thermal model and simulated sensors. See
//! `coldchain-sim --help` and `firmware/DESIGN.md`.

mod board;
mod chips;
mod device;
mod dock;
mod exec;
mod flash;
mod net;
mod rng;
mod sampling;
mod thermal;
mod tls;
mod tty;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use coldchain_firmware::uplink::mqtt::{CREDENTIAL_MAX, MqttConfig};
use coldchain_proto::{DeviceId, DeviceKey};

use crate::thermal::Profile;

/// Simulated Coldchain containers: a thermal model, simulated sensors and the
/// firmware's frame building, signing and store-and-forward, over a real MQTT broker.
#[derive(Debug, Parser)]
#[command(name = "coldchain-sim", version)]
struct Args {
    /// MQTT broker, host:port.
    #[arg(long, default_value = "127.0.0.1:1883")]
    broker: String,
    /// Device id (with --containers N > 1, devices are `{device}-1` .. `{device}-N`).
    #[arg(long)]
    device: String,
    /// The device's 32-byte key, 64 hexadecimal digits.
    #[arg(long, env = "COLDCHAIN_SIM_KEY", hide_env_values = true)]
    key: String,
    /// The container simulated.
    #[arg(long, value_enum, default_value = "cryo-ln2")]
    profile: Profile,
    /// Publish exactly this many reading frames, wait for every PUBACK, print a
    /// summary line on stdout and exit. Without it: run until SIGINT/SIGTERM.
    #[arg(long)]
    frames: Option<u64>,
    /// Readings per frame (channel 0, the RTD, first, then the other channels in turn).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=32))]
    readings_per_frame: u16,
    /// Real-time gap between frames, milliseconds (0: as fast as possible).
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Boot counter of this run (the first frame is (boot, seq 0)). Default:
    /// the counter kept in the simulated flash, incremented at every boot
    /// (1 on a blank flash).
    #[arg(long)]
    boot: Option<u32>,
    /// Talk to the daemon over this serial port (a tty, or the slave side of
    /// a pty) instead of MQTT: the firmware's serial uplink drains the flash
    /// queue with COBS frames and signed acks. `--broker` is then unused.
    #[arg(long, value_name = "PATH")]
    serial: Option<PathBuf>,
    /// Keep the simulated NOR flash (boot counter and frame queue) in this
    /// file, so a later run (after a kill, a power cut) finds what was not
    /// acknowledged. Default: in memory. One container only.
    #[arg(long, value_name = "FILE")]
    flash: Option<PathBuf>,
    /// Keep each container's simulated flash (boot counter and frame queue)
    /// in DIR/{device}.flash (created if missing), so the next run goes on
    /// with the next boot and what is still queued, as a real logger would
    /// after a restart. Any number of containers.
    #[arg(long, value_name = "DIR", conflicts_with = "flash")]
    state_dir: Option<PathBuf>,
    /// Serial uplink: resend a frame not acknowledged within this time.
    #[arg(long, default_value_t = 2000)]
    ack_timeout_ms: u64,
    /// Seed of the simulation (unit hold time, noise).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Publish JSON envelopes on `…/up/json` instead of signed postcard on
    /// `…/up` (simulator only: the firmware sends postcard; the simulator's
    /// transport rewrites each PUBLISH on its way out).
    #[arg(long)]
    json: bool,
    /// Number of containers, each its own device and MQTT connection.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1000))]
    containers: u16,
    /// Time acceleration of the thermal model: model hours per real hour.
    /// Device timestamps stay real time.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Model hours already elapsed at start (e.g. start near the end of the LN2 hold).
    #[arg(long, default_value_t = 0.0)]
    start_h: f64,
    /// Start this many model hours before the coolant runs out (overrides
    /// --start-h; the unit's hold time depends on the seed). For demos of a
    /// dry shipper warming up.
    #[arg(long)]
    dry_in_h: Option<f64>,
    /// Also send event frames (boot, clock synced, lid, tilt) and status
    /// heartbeats (every `status_interval_s` of the daemon's settings, 300 s
    /// before any, in device time: divided by --speed; battery, queued and
    /// dropped frames). Off by default so that frame numbering counts
    /// readings only. MQTT only.
    #[arg(long)]
    events: bool,
    /// Injected fault, repeatable: `probe-open@H`, `probe-loose@H`, `tip@H`,
    /// `lid@H+MIN` (model hours H, lid open MIN minutes), `outage@S+D` (real
    /// seconds S, offline D seconds), `power-cut@S` (real seconds S: the device
    /// reboots with boot+1; its flash queue survives).
    #[arg(long = "fault")]
    faults: Vec<String>,
    /// Use only live (non-retained) `sync` downlinks to set the clock.
    #[arg(long)]
    live_sync_only: bool,
    /// MQTT user name sent in CONNECT (with --containers N, the same for each).
    #[arg(long)]
    username: Option<String>,
    /// MQTT password sent in CONNECT.
    #[arg(long, env = "COLDCHAIN_SIM_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Connect with TLS, trusting the CA certificate(s) in this PEM file; the
    /// broker's certificate must name the --broker host.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COLDCHAIN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("coldchain-sim: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("coldchain-sim: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.serial.is_some() {
        return run_serial(args).await;
    }
    let (host, port) = args
        .broker
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .with_context(|| format!("--broker {:?} is not host:port", args.broker))?;
    let key = DeviceKey::from_hex(&args.key).map_err(|e| anyhow::anyhow!("--key: {e}"))?;
    if !(args.speed.is_finite() && args.speed > 0.0) {
        bail!("--speed must be a positive number, got {}", args.speed);
    }
    let faults = device::Faults::parse(&args.faults)?;
    let tls = match &args.ca_file {
        Some(ca) => Some(tls::Tls::new(ca, &host)?),
        None => None,
    };
    let username = match &args.username {
        Some(u) => Some(
            heapless::String::try_from(u.as_str())
                .map_err(|_| anyhow::anyhow!("--username: longer than {CREDENTIAL_MAX} bytes"))?,
        ),
        None => None,
    };
    let password = match &args.password {
        Some(p) => Some(
            heapless::Vec::from_slice(p.as_bytes())
                .map_err(|_| anyhow::anyhow!("--password: longer than {CREDENTIAL_MAX} bytes"))?,
        ),
        None => None,
    };
    if args.flash.is_some() && args.containers != 1 {
        bail!(
            "--flash keeps the flash of one container: use --state-dir DIR for several, or drop --containers"
        );
    }

    let n = args.containers;
    let mut ids = Vec::new();
    for i in 1..=n {
        let name = if n == 1 {
            args.device.clone()
        } else {
            format!("{}-{i}", args.device)
        };
        ids.push(DeviceId::new(&name).map_err(|e| anyhow::anyhow!("device id {name:?}: {e}"))?);
    }

    // Each container is its own task: it connects (an unreachable broker is
    // an error at start), applies the retained sync, then samples.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, id) in ids.into_iter().enumerate() {
        let dev = device::Setup {
            device: id.clone(),
            key: key.clone(),
            profile: args.profile,
            frames: args.frames,
            readings_per_frame: usize::from(args.readings_per_frame),
            interval: Duration::from_millis(args.interval_ms),
            boot: args.boot,
            seed: args.seed.wrapping_add(i as u64),
            speed: args.speed,
            start_h: args.start_h,
            dry_in_h: args.dry_in_h,
            events: args.events,
            faults: faults.clone(),
            live_sync_only: args.live_sync_only,
            flash: flash_file(&args, &id)?,
            net: net::NetConfig {
                host: host.clone(),
                port,
                tls: tls.clone(),
            },
            mqtt: MqttConfig {
                keep_alive_s: 10,
                backoff_max_ms: 8_000,
                username: username.clone(),
                password: password.clone(),
                ..MqttConfig::default()
            },
            json: args.json,
        };
        let stop = stop_rx.clone();
        tasks.spawn(async move { (id, device::run(dev, stop).await) });
    }

    let mut stop = Box::pin(shutdown_signal());
    let mut failed = None;
    loop {
        tokio::select! {
            next = tasks.join_next() => match next {
                None => break,
                Some(Ok((id, Ok(sum)))) => {
                    println!(
                        "{}",
                        serde_json::json!({
                            "device": id.as_str(),
                            "frames": sum.frames,
                            "readings": sum.readings,
                            "boot": sum.boot,
                            "queued": sum.queued,
                            "found": sum.found,
                            "sent": sum.sent,
                            "dropped": sum.dropped,
                        })
                    );
                }
                Some(Ok((id, Err(e)))) => {
                    failed = Some(e.context(format!("device {id}")));
                }
                Some(Err(e)) => failed = Some(anyhow::anyhow!("a device task failed: {e}")),
            },
            _ = &mut stop, if !*stop_tx.borrow() => {
                tracing::info!("signal received: stopping (a second signal exits at once)");
                let _ = stop_tx.send(true);
                tokio::spawn(async {
                    shutdown_signal().await;
                    std::process::exit(130);
                });
            }
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Where a container's flash is kept: `--flash FILE`, `--state-dir
/// DIR/{device}.flash` (DIR created if missing), or nowhere (in memory).
fn flash_file(args: &Args, device: &DeviceId) -> anyhow::Result<Option<PathBuf>> {
    if let Some(dir) = &args.state_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--state-dir: cannot create {}", dir.display()))?;
        return Ok(Some(dir.join(format!("{}.flash", device.as_str()))));
    }
    Ok(args.flash.clone())
}

/// `--serial`: one logger dumping its flash queue over a serial port.
async fn run_serial(args: Args) -> anyhow::Result<()> {
    let key = DeviceKey::from_hex(&args.key).map_err(|e| anyhow::anyhow!("--key: {e}"))?;
    if args.username.is_some() || args.password.is_some() || args.ca_file.is_some() {
        bail!("--username, --password and --ca-file are for MQTT: drop them with --serial");
    }
    if args.containers != 1 || args.json || args.events {
        bail!(
            "--serial simulates one logger sending signed postcard frames: drop --containers, --json and --events"
        );
    }
    if !(args.speed.is_finite() && args.speed > 0.0) {
        bail!("--speed must be a positive number, got {}", args.speed);
    }
    let faults = device::Faults::parse(&args.faults)?;
    if !faults.outages.is_empty() || !faults.lids.is_empty() || faults.tip_h.is_some() {
        bail!("--serial supports the faults probe-open, probe-loose and power-cut");
    }
    let device = DeviceId::new(&args.device)
        .map_err(|e| anyhow::anyhow!("device id {:?}: {e}", args.device))?;
    let setup = dock::Setup {
        device: device.clone(),
        key,
        profile: args.profile,
        frames: args.frames,
        readings_per_frame: usize::from(args.readings_per_frame),
        interval: Duration::from_millis(args.interval_ms),
        boot: args.boot,
        seed: args.seed,
        speed: args.speed,
        start_h: args.start_h,
        serial: args.serial.clone().context("--serial")?,
        flash: flash_file(&args, &device)?,
        ack_timeout_ms: args.ack_timeout_ms,
        sensor_faults: (faults.probe_open_h, faults.probe_loose_h),
        power_cuts: faults.power_cuts.clone(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let mut task = tokio::task::spawn_blocking(move || dock::run(setup, flag));
    let sum = tokio::select! {
        r = &mut task => r.context("logger task")??,
        _ = shutdown_signal() => {
            tracing::info!("signal received: stopping");
            stop.store(true, Ordering::Relaxed);
            task.await.context("logger task")??
        }
    };
    println!(
        "{}",
        serde_json::json!({
            "device": device.as_str(),
            "frames": sum.frames,
            "readings": sum.readings,
            "boot": sum.boot,
            "queued": sum.queued,
            "found": sum.found,
            "sent": sum.sent,
        })
    );
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
