//! One simulated container: its thermal model, its sensors, and the firmware's
//! frame building and signing, feeding its MQTT uplink.

use std::time::Duration;

use anyhow::{Context, bail};
use coldchain_firmware::batch::{EventBatch, ReadingBatch};
use coldchain_firmware::{FrameBuilder, TimeBase};
use coldchain_proto::{Body, DeviceId, DeviceKey, Downlink, EventKind, Frame};
use rumqttc::{AsyncClient, EventLoop};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::board::{self, SensorFaults};
use crate::mqtt::{self, Acked, Command, Outbound, Received};
use crate::thermal::{Container, Profile};

/// Faults injected into a run.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Model hour at which the RTD opens.
    pub probe_open_h: Option<f64>,
    /// Model hour at which the RTD comes loose.
    pub probe_loose_h: Option<f64>,
    /// Model hour at which the container is tipped on its side.
    pub tip_h: Option<f64>,
    /// Lid openings: (model hour, minutes open).
    pub lids: Vec<(f64, f64)>,
    /// Uplink outages: (real time after start, duration).
    pub outages: Vec<(Duration, Duration)>,
    /// Power cuts: real time after start.
    pub power_cuts: Vec<Duration>,
}

fn num(s: &str, what: &str) -> anyhow::Result<f64> {
    let v: f64 = s
        .parse()
        .with_context(|| format!("{what}: {s:?} is not a number"))?;
    if !(v.is_finite() && v >= 0.0) {
        bail!("{what}: {s:?} must be a non-negative number");
    }
    Ok(v)
}

impl Faults {
    /// Parses `--fault` values (see `coldchain-sim --help`).
    pub fn parse(specs: &[String]) -> anyhow::Result<Self> {
        let mut f = Faults::default();
        for spec in specs {
            let (kind, at) = spec.split_once('@').with_context(|| {
                format!("--fault {spec:?}: expected KIND@WHEN, e.g. probe-open@12 or outage@10+5")
            })?;
            match kind {
                "probe-open" => f.probe_open_h = Some(num(at, "probe-open hour")?),
                "probe-loose" => f.probe_loose_h = Some(num(at, "probe-loose hour")?),
                "tip" => f.tip_h = Some(num(at, "tip hour")?),
                "lid" => {
                    let (h, m) = at.split_once('+').unwrap_or((at, "5"));
                    f.lids.push((num(h, "lid hour")?, num(m, "lid minutes")?));
                }
                "outage" => {
                    let (s, d) = at
                        .split_once('+')
                        .with_context(|| format!("--fault {spec:?}: expected outage@S+D"))?;
                    f.outages.push((
                        Duration::from_secs_f64(num(s, "outage start s")?),
                        Duration::from_secs_f64(num(d, "outage duration s")?),
                    ));
                }
                "power-cut" => f
                    .power_cuts
                    .push(Duration::from_secs_f64(num(at, "power-cut s")?)),
                other => bail!(
                    "--fault {spec:?}: unknown fault {other:?} (probe-open, probe-loose, tip, lid, outage, power-cut)"
                ),
            }
        }
        Ok(f)
    }
}

/// What one container does.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Device id.
    pub device: DeviceId,
    /// Device key.
    pub key: DeviceKey,
    /// Container.
    pub profile: Profile,
    /// Reading frames to send, or run until stopped.
    pub frames: Option<u64>,
    /// Readings per frame.
    pub readings_per_frame: usize,
    /// Real-time gap between frames.
    pub interval: Duration,
    /// Boot counter at start.
    pub boot: u32,
    /// Seed.
    pub seed: u64,
    /// Model hours per real hour.
    pub speed: f64,
    /// Model hours at start.
    pub start_h: f64,
    /// Start this many model hours before the coolant runs out, if set.
    pub dry_in_h: Option<f64>,
    /// Send event frames too.
    pub events: bool,
    /// Injected faults.
    pub faults: Faults,
    /// Set the clock from live sync messages only.
    pub live_sync_only: bool,
}

/// The device's volatile state: lost at a power cut.
struct Volatile {
    builder: FrameBuilder,
    tb: TimeBase,
    booted: Instant,
    events: EventBatch,
}

impl Volatile {
    fn boot(s: &Setup, boot: u32) -> Self {
        let mut v = Volatile {
            builder: FrameBuilder::new(s.device.clone(), s.key.clone(), boot),
            tb: TimeBase::unsynced(),
            booted: Instant::now(),
            events: EventBatch::new(),
        };
        if s.events {
            let _ = v.events.push_event(0, EventKind::Boot);
        }
        v
    }
    fn uptime_ms(&self) -> u64 {
        u64::try_from(self.booted.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

fn payload(frame: &Frame, builder: &FrameBuilder, json: bool) -> anyhow::Result<Vec<u8>> {
    if json {
        let text = serde_json::to_string(frame).context("frame to JSON")?;
        let tag = builder.key().sign(text.as_bytes());
        Ok(format!(r#"{{"frame":{text},"tag":"{}"}}"#, hex::encode(tag)).into_bytes())
    } else {
        let signed = builder
            .sign(frame)
            .map_err(|e| anyhow::anyhow!("signing frame: {e}"))?;
        Ok(signed.bytes.to_vec())
    }
}

/// Runs one container until its frames are sent and acknowledged, or `stop`.
pub async fn run(
    s: Setup,
    cfg: mqtt::Config,
    first: (AsyncClient, EventLoop),
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Acked> {
    let json = cfg.json;
    let (tx, rx) = mpsc::channel(64);
    let (down_tx, mut down_rx) = mpsc::channel::<Received>(8);
    let uplink = tokio::spawn(mqtt::run(cfg, first, rx, down_tx));

    let started = Instant::now();
    let mut container = Container::new(s.profile, s.seed);
    let start_h = match s.dry_in_h {
        Some(h) => (container.hold_h() - h).max(0.0),
        None => s.start_h,
    };
    container.advance(start_h);
    let mut model_h = start_h;
    let channels = board::channels(s.profile);
    let k = s.readings_per_frame;
    let rounds = k.div_ceil(channels.len()).max(1);
    let period = s.interval / u32::try_from(rounds).unwrap_or(u32::MAX);

    let mut boot = s.boot;
    let mut v = Volatile::boot(&s, boot);
    let mut outages = s.faults.outages.clone();
    let mut cuts = s.faults.power_cuts.clone();
    let mut lid_open = false;
    let mut tipped = false;
    let mut produced = 0u64;
    tracing::info!(device = %s.device, profile = ?s.profile, boot, hold_h = container.hold_h(), "container started");

    'frames: while s.frames.is_none_or(|n| produced < n) {
        let mut batch = ReadingBatch::new();
        for round in 0..rounds {
            // Injected faults due by now, in real time.
            let real = started.elapsed();
            if let Some(i) = outages.iter().position(|(at, _)| *at <= real) {
                let (_, d) = outages.remove(i);
                let _ = tx.send(Command::Outage(d)).await;
            }
            if let Some(i) = cuts.iter().position(|at| *at <= real) {
                cuts.remove(i);
                boot = boot.wrapping_add(1);
                tracing::warn!(device = %s.device, boot, "injected power cut: rebooting; the flash queue survives, RAM does not");
                // The samples not yet in a frame were in RAM.
                batch = ReadingBatch::new();
                v = Volatile::boot(&s, boot);
                let _ = tx.send(Command::Outage(Duration::from_millis(300))).await;
            }

            // The model catches up with real time.
            let target_h = start_h + started.elapsed().as_secs_f64() / 3600.0 * s.speed;
            container.advance(target_h - model_h);
            model_h = target_h;
            let f = &s.faults;
            let sensor_faults = SensorFaults {
                probe_open: f.probe_open_h.is_some_and(|h| model_h >= h),
                probe_loose: f.probe_loose_h.is_some_and(|h| model_h >= h),
            };
            let now_tipped = f.tip_h.is_some_and(|h| model_h >= h);
            let now_lid = f
                .lids
                .iter()
                .any(|(h, m)| model_h >= *h && model_h < h + m / 60.0);
            container.set_tilt(if now_tipped { 90.0 } else { 2.0 });
            container.set_lid(now_lid);
            let up = v.uptime_ms();
            if s.events && now_lid != lid_open {
                let kind = if now_lid {
                    EventKind::LidOpened
                } else {
                    EventKind::LidClosed
                };
                let _ = v.events.push_event(up, kind);
            }
            if s.events && now_tipped != tipped {
                let kind = if now_tipped {
                    EventKind::Tilt { angle_deg: 90 }
                } else {
                    EventKind::TiltCleared
                };
                let _ = v.events.push_event(up, kind);
            }
            lid_open = now_lid;
            tipped = now_tipped;

            let phys = container.physical();
            for ch in channels.iter().take(k - batch.len()) {
                let m = board::measure(ch, &phys, sensor_faults);
                batch
                    .push_reading(up, ch.number, ch.kind, m)
                    .map_err(|e| anyhow::anyhow!("batch: {e:?}"))?;
            }
            if round + 1 < rounds && wait(period, &mut stop, &mut down_rx, &mut v, &s).await {
                break 'frames;
            }
        }

        if let Some(frame) = v.builder.events(&mut v.events, &v.tb) {
            send(&tx, &frame, &v.builder, json, 0).await?;
        }
        let Some(frame) = v.builder.readings(&mut batch, &v.tb) else {
            continue;
        };
        let n = match &frame.body {
            Body::Readings(r) => r.len(),
            _ => 0,
        };
        send(&tx, &frame, &v.builder, json, n).await?;
        produced += 1;
        if s.frames.is_none_or(|n| produced < n)
            && wait(period, &mut stop, &mut down_rx, &mut v, &s).await
        {
            break;
        }
        if *stop.borrow() {
            break;
        }
    }
    drop(tx);
    tracing::info!(device = %s.device, frames = produced, "sampling done; waiting for the broker to acknowledge every frame");
    let mut uplink = uplink;
    tokio::select! {
        r = &mut uplink => r.context("uplink task")?,
        _ = async { stop.wait_for(|s| *s).await.is_ok() } => {
            // Stopped while frames were still unacknowledged: give the uplink a moment.
            match tokio::time::timeout(Duration::from_secs(3), &mut uplink).await {
                Ok(r) => r.context("uplink task")?,
                Err(_) => {
                    uplink.abort();
                    bail!("stopped with frames still unacknowledged by the broker");
                }
            }
        }
    }
}

async fn send(
    tx: &mpsc::Sender<Command>,
    frame: &Frame,
    builder: &FrameBuilder,
    json: bool,
    readings: usize,
) -> anyhow::Result<()> {
    let out = Outbound {
        frame_ref: frame.frame_ref(),
        readings,
        payload: payload(frame, builder, json)?,
    };
    tx.send(Command::Send(out))
        .await
        .map_err(|_| anyhow::anyhow!("the uplink task ended early"))
}

/// Sleeps `d` while handling downlinks; true if a stop was requested.
async fn wait(
    d: Duration,
    stop: &mut watch::Receiver<bool>,
    down: &mut mpsc::Receiver<Received>,
    v: &mut Volatile,
    s: &Setup,
) -> bool {
    let until = Instant::now() + d;
    loop {
        while let Ok(r) = down.try_recv() {
            apply(r, v, s);
        }
        if *stop.borrow() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(until) => return *stop.borrow(),
            r = down.recv() => if let Some(r) = r { apply(r, v, s) },
            _ = stop.changed() => {}
        }
    }
}

fn apply(r: Received, v: &mut Volatile, s: &Setup) {
    match r.msg {
        Downlink::Sync { unix_ms, settings } => {
            if r.retained && s.live_sync_only {
                tracing::info!(device = %s.device, "retained sync ignored (--live-sync-only)");
                return;
            }
            let up = v.uptime_ms();
            match v.tb.sync(up, unix_ms, r.retained) {
                Ok(ev) => {
                    tracing::info!(device = %s.device, unix_ms, retained = r.retained, settings = settings.version, "clock set: frames now carry wall-clock time");
                    if s.events {
                        let _ = v.events.push_event(up, ev);
                    }
                }
                Err(e) => tracing::info!(device = %s.device, unix_ms, "sync not applied: {e:?}"),
            }
        }
        Downlink::Ack(f) => {
            tracing::debug!(device = %s.device, ?f, "ack on MQTT ignored (PUBACK is the ack)")
        }
        Downlink::Nack { frame, reason } => {
            tracing::warn!(device = %s.device, ?frame, ?reason, "daemon refused a frame")
        }
    }
}
