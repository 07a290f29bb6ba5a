//! One simulated container on MQTT: the device's main loop on the firmware's
//! code. When the firmware's `Sampler` has channels due, they are read from
//! the simulated board (the thermal model) through its checks (plausibility,
//! stuck detection; see [`crate::sampling`]) into a `ReadingBatch`; a batch
//! of `--readings-per-frame` readings is sealed and signed by
//! `FrameBuilder` and stored in the flash queue (`Outbox` on the simulated NOR
//! flash, boot counter in the same flash). Otherwise the firmware's MQTT
//! uplink (`MqttUplink`, over [`crate::net::Net`]) is polled: it publishes the
//! oldest queued frame and removes it only on its PUBACK, reconnects with
//! back-off, and hands verified syncs to [`apply_sync`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use coldchain_firmware::batch::{EventBatch, ReadingBatch};
use coldchain_firmware::queue::{ENTRY_BUF_LEN, Outbox};
use coldchain_firmware::record::Recorder;
use coldchain_firmware::sampler::Sampler;
use coldchain_firmware::sync::{SettingsState, SyncPolicy, apply_sync};
use coldchain_firmware::uplink::mqtt::{Event, MqttConfig, MqttUplink};
use coldchain_firmware::{FrameBuilder, TimeBase, bootcount};
use coldchain_proto::{DeviceId, DeviceKey, EventKind, Frame, FrameRef};
use sequential_storage::cache::Cache;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::board::{self, Board, SensorFaults};
use crate::flash::{BOOT_RANGE, QUEUE_RANGE, Queue, SimFlash, readings_in};
use crate::net::{Net, NetConfig};
use crate::sampling;
use crate::thermal::{Container, Profile};

/// With `--interval-ms 0` the logger makes frames as fast as the uplink takes
/// them: a new frame only while fewer than this many wait in flash (a
/// simulator pacing rule; a real logger samples on its clock).
const PACE: usize = 32;
/// After the SUBACK, how long the start waits for the retained sync (the
/// broker sends it right after the SUBACK; no retained sync: no daemon yet).
const RETAINED_WAIT: Duration = Duration::from_millis(150);
/// The start-up check: the broker must answer within this.
const CONNECT_WAIT: Duration = Duration::from_secs(5);
/// At a stop signal: how long the queue may still drain.
const DRAIN_ON_STOP: Duration = Duration::from_secs(3);
/// Status heartbeat interval before the daemon's settings say otherwise,
/// device seconds (the daemon's own default).
const STATUS_INTERVAL_S: u32 = 300;

/// The simulated battery, a lithium thionyl chloride primary cell (3.6 V
/// nominal, a flat discharge): 3 600 mV new, 0.5 mV less per model hour,
/// never below 3 000 mV. `model_h` counts from the start of the shipment.
pub fn battery_mv(model_h: f64) -> u16 {
    (3_600.0 - 0.5 * model_h.max(0.0)).clamp(3_000.0, 3_600.0) as u16
}

/// Longest idle sleep: the uplink's timers (back-off, keep-alive, ack
/// timeouts) are checked at least this often.
const TICK: Duration = Duration::from_millis(50);

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
    /// Boot counter override (else the flash counter counts on).
    pub boot: Option<u32>,
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
    /// The flash image file (`None`: in memory).
    pub flash: Option<PathBuf>,
    /// The broker.
    pub net: NetConfig,
    /// Publish JSON envelopes on `…/up/json` (see [`crate::net`]).
    pub json: bool,
    /// The MQTT uplink's timing and login (its Debug hides the password).
    pub mqtt: MqttConfig,
}

/// What the run did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    /// The boot number of the last boot.
    pub boot: u32,
    /// Reading frames acknowledged by the broker (this run's, and those found in flash).
    pub frames: usize,
    /// Readings in them.
    pub readings: usize,
    /// Frames left in the flash queue at exit.
    pub queued: u32,
    /// Frames found in the flash queue at the first boot.
    pub found: usize,
    /// PUBLISHes sent (resends after a lost connection included).
    pub sent: u64,
    /// Frames dropped from a full flash queue.
    pub dropped: u64,
}

/// RAM: everything a power cut loses.
struct Ram {
    builder: FrameBuilder,
    tb: TimeBase,
    settings: SettingsState,
    uplink: MqttUplink,
    booted: Instant,
    events: EventBatch,
    batch: ReadingBatch,
    rec: Recorder,
    board: Board,
    sampler: Sampler,
    /// The settings version the sampler was built from (`None`: no settings).
    sampler_version: Option<u32>,
}

impl Ram {
    fn uptime_ms(&self) -> u64 {
        u64::try_from(self.booted.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

fn boot(s: &Setup, flash: &mut SimFlash, force: Option<u32>) -> anyhow::Result<(u32, Ram)> {
    let n = crate::exec::block_on(bootcount::next(flash, BOOT_RANGE, force))
        .map_err(|e| anyhow::anyhow!("boot counter in flash: {e:?}"))?;
    let mut events = EventBatch::new();
    if s.events {
        let _ = events.push_event(0, EventKind::Boot);
    }
    Ok((
        n,
        Ram {
            builder: FrameBuilder::new(s.device.clone(), s.key.clone(), n),
            tb: TimeBase::unsynced(),
            settings: SettingsState::new(),
            uplink: MqttUplink::new(s.device.clone(), s.key.clone(), s.mqtt.clone()),
            booted: Instant::now(),
            events,
            batch: ReadingBatch::new(),
            rec: Recorder::new(),
            board: Board::boot()?,
            sampler: sampling::sampler(
                &sampling::configs(board::channels(s.profile), None, period_ms(s), s.speed),
                0,
            )?,
            sampler_version: None,
        },
    ))
}

/// Every channel's sampling interval without pushed settings, real ms.
fn period_ms(s: &Setup) -> u64 {
    sampling::default_period_ms(s.profile, s.readings_per_frame, s.interval)
}

/// The device, its flash and its connection.
struct Dev {
    s: Setup,
    ram: Ram,
    boot_no: u32,
    q: Queue,
    buf: [u8; ENTRY_BUF_LEN],
    net: Net,
    /// Readings per frame in the flash queue, oldest first.
    queued: BTreeMap<FrameRef, usize>,
    sum: Summary,
}

impl Dev {
    async fn poll(&mut self) -> anyhow::Result<Option<Event>> {
        let now = self.ram.uptime_ms();
        let ev = self
            .ram
            .uplink
            .poll(&mut self.net, &mut self.q, now, &mut self.buf)
            .await
            .map_err(|e| anyhow::anyhow!("MQTT uplink (flash queue): {e:?}"))?;
        if let Some(ev) = &ev {
            self.handle(ev);
        }
        Ok(ev)
    }

    fn handle(&mut self, ev: &Event) {
        let dev = &self.s.device;
        match ev {
            Event::Connected => {
                tracing::info!(device = %dev, queued = self.queued.len(), "connected to the broker")
            }
            Event::Disconnected { retry_at_ms } => {
                let pause = retry_at_ms.saturating_sub(self.ram.uptime_ms());
                tracing::warn!(device = %dev, queued = self.queued.len(), "broker connection lost or refused ({}); the queue stays in flash; retrying in {pause} ms",
                    self.net.last_error.as_deref().unwrap_or("closed"));
            }
            Event::Published(_) => self.sum.sent += 1,
            Event::Acked(r) => {
                let n = self.queued.remove(r).unwrap_or(0);
                if n > 0 {
                    self.sum.frames += 1;
                    self.sum.readings += n;
                }
                tracing::debug!(device = %dev, boot = r.boot, seq = r.seq, "PUBACK: frame removed from flash");
            }
            Event::Sync {
                unix_ms,
                settings,
                retained,
            } => {
                if *retained && self.s.live_sync_only {
                    tracing::info!(device = %dev, "retained sync ignored (--live-sync-only)");
                    return;
                }
                let up = self.ram.uptime_ms();
                let o = apply_sync(
                    &mut self.ram.tb,
                    &mut self.ram.settings,
                    &SyncPolicy::default(),
                    up,
                    *unix_ms,
                    settings.clone(),
                    *retained,
                );
                match o.clock {
                    Ok(ev) => {
                        tracing::info!(device = %dev, unix_ms, retained, settings = settings.version, settings_changed = o.settings_changed, "clock set: frames now carry wall-clock time");
                        if self.s.events {
                            let _ = self.ram.events.push_event(up, ev);
                        }
                    }
                    Err(e) => {
                        tracing::info!(device = %dev, unix_ms, retained, settings_changed = o.settings_changed, "sync: clock not set: {e:?}")
                    }
                }
            }
            Event::Subscribed { granted } => {
                tracing::debug!(device = %dev, granted, "subscribed to the down topic")
            }
            Event::Refused(e) => {
                tracing::warn!(device = %dev, "ignoring a downlink that does not verify: {e}")
            }
            Event::Connecting | Event::Other => {}
        }
    }

    /// Signs and stores a frame; a full flash drops the oldest frames and
    /// the firmware's `Recorder` stores a `QueueOverflow` event with the count.
    async fn store(&mut self, frame: &Frame, readings: usize) -> anyhow::Result<()> {
        let up = self.ram.uptime_ms();
        let ram = &mut self.ram;
        let st = ram
            .rec
            .store(
                &mut ram.builder,
                &ram.tb,
                up,
                &mut self.q,
                frame,
                &mut self.buf,
            )
            .await
            .map_err(|e| anyhow::anyhow!("storing a frame in flash: {e:?}"))?;
        self.queued.insert(st.frame_ref, readings);
        let dropped = st.removed;
        if dropped > 0 {
            for _ in 0..dropped {
                self.queued.pop_first();
            }
            for (r, _) in &st.overflow {
                self.queued.insert(*r, 0);
            }
            self.sum.dropped += u64::from(dropped);
            tracing::warn!(device = %self.s.device, dropped, "flash queue full: oldest frames dropped; a QueueOverflow event reports them");
        }
        Ok(())
    }

    /// Nothing queued and nothing in flight.
    async fn drained(&mut self) -> anyhow::Result<bool> {
        Ok(self.ram.uplink.in_flight().is_none()
            && self
                .q
                .oldest(&mut self.buf)
                .await
                .map_err(|e| anyhow::anyhow!("flash queue: {e:?}"))?
                .is_none())
    }

    /// Sleeps until the broker sends something, `until`, or a stop.
    async fn idle(&mut self, until: Instant, stop: &mut watch::Receiver<bool>) {
        let until = until.min(Instant::now() + TICK);
        tokio::select! {
            _ = self.net.wait_input() => {}
            _ = tokio::time::sleep_until(until) => {}
            _ = stop.changed() => {}
        }
    }

    /// The start-up check: connected and subscribed, and the retained sync
    /// (if the daemon left one) applied before the first sample.
    async fn first_connect(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + CONNECT_WAIT;
        let mut subscribed: Option<Instant> = None;
        let (host, port, dev) = (
            self.s.net.host.clone(),
            self.s.net.port,
            self.s.device.clone(),
        );
        loop {
            match self.poll().await? {
                Some(Event::Disconnected { .. }) => bail!(
                    "cannot connect to the MQTT broker at {host}:{port} for device {dev}: {} (check --broker, and the broker's log for a refused login or ACL)",
                    self.net
                        .last_error
                        .clone()
                        .unwrap_or_else(|| "the broker closed or refused the connection".into())
                ),
                Some(Event::Subscribed { .. }) => subscribed = Some(Instant::now()),
                Some(Event::Sync { .. }) if subscribed.is_some() => return Ok(()),
                Some(_) => {}
                None => {
                    let now = Instant::now();
                    if subscribed.is_some_and(|t| now >= t + RETAINED_WAIT) {
                        return Ok(());
                    }
                    if subscribed.is_none() && now >= deadline {
                        bail!(
                            "no answer from the MQTT broker at {host}:{port} within {CONNECT_WAIT:?} (device {dev})"
                        );
                    }
                    let until = subscribed.map_or(deadline, |t| t + RETAINED_WAIT);
                    tokio::select! {
                        _ = self.net.wait_input() => {}
                        _ = tokio::time::sleep_until(until) => {}
                    }
                }
            }
        }
    }
}

/// Runs one container until its frames are made and acknowledged, or `stop`.
pub async fn run(s: Setup, mut stop: watch::Receiver<bool>) -> anyhow::Result<Summary> {
    let mut flash = match &s.flash {
        Some(p) => SimFlash::file(p)?,
        None => SimFlash::memory(),
    };
    let (boot_no, ram) = boot(&s, &mut flash, s.boot)?;
    let mut q: Queue = Outbox::new(flash, QUEUE_RANGE, Cache::new_uncached());
    let mut buf = [0u8; ENTRY_BUF_LEN];
    let mut queued = BTreeMap::new();
    q.for_each(&mut buf, |r, bytes| {
        queued.insert(r, readings_in(bytes, &s.key));
    })
    .await
    .map_err(|e| anyhow::anyhow!("reading the flash queue: {e:?}"))?;
    let net = Net::new(s.net.clone(), &s.device, &s.key, s.json);
    let mut d = Dev {
        sum: Summary {
            found: queued.len(),
            ..Summary::default()
        },
        s,
        ram,
        boot_no,
        q,
        buf,
        net,
        queued,
    };
    d.first_connect().await?;
    let s = d.s.clone();

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
    let mut outages = s.faults.outages.clone();
    let mut cuts = s.faults.power_cuts.clone();
    let mut lid_open = false;
    let mut tipped = false;
    let mut produced = 0u64;
    // Device seconds since the start at which the next status is due.
    let mut next_status_s = 0.0f64;
    let mut stopped_at: Option<Instant> = None;
    tracing::info!(device = %s.device, profile = ?s.profile, boot = d.boot_no, queued = d.sum.found, hold_h = container.hold_h(), "container started");

    loop {
        let now = Instant::now();
        let real = now - started;
        if stopped_at.is_none() && *stop.borrow() {
            tracing::info!(device = %s.device, queued = d.queued.len(), "stopping: sampling ends, the queue drains");
            stopped_at = Some(now);
        }

        // Injected faults due by now, in real time.
        if let Some(i) = outages.iter().position(|(at, _)| *at <= real) {
            let (_, dur) = outages.remove(i);
            tracing::warn!(device = %s.device, "injected outage: offline for {dur:?}");
            d.net.offline_for(dur);
        }
        if let Some(i) = cuts.iter().position(|at| *at <= real) {
            cuts.remove(i);
            // Power gone: no DISCONNECT (the broker publishes the last will).
            coldchain_firmware::uplink::mqtt::Transport::close(&mut d.net);
            let mut flash = std::mem::replace(
                &mut d.q,
                Outbox::new(SimFlash::memory(), QUEUE_RANGE, Cache::new_uncached()),
            )
            .into_flash();
            (d.boot_no, d.ram) = boot(&s, &mut flash, None)?;
            d.q = Outbox::new(flash, QUEUE_RANGE, Cache::new_uncached());
            tracing::warn!(device = %s.device, boot = d.boot_no, "injected power cut: rebooted; the flash queue survives, RAM does not");
            continue;
        }

        // New settings from the daemon: the sampler follows them.
        let version = d.ram.settings.current().map(|x| x.version);
        if version != d.ram.sampler_version {
            let cfgs =
                sampling::configs(channels, d.ram.settings.current(), period_ms(&s), s.speed);
            d.ram.sampler = sampling::sampler(&cfgs, d.ram.uptime_ms())?;
            d.ram.sampler_version = version;
            tracing::debug!(device = %s.device, ?version, ?cfgs, "sampling settings");
        }

        let making = stopped_at.is_none() && s.frames.is_none_or(|n| produced < n);

        // Status heartbeat (with --events): every status_interval_s of the
        // settings in force, in device time (--speed), with the battery, the
        // frames waiting in flash and those dropped since the last status.
        let device_s = real.as_secs_f64() * s.speed;
        if s.events && making && device_s >= next_status_s {
            let every = d
                .ram
                .settings
                .current()
                .map_or(STATUS_INTERVAL_S, |x| x.status_interval_s)
                .max(1);
            while next_status_s <= device_s {
                next_status_s += f64::from(every);
            }
            let queued =
                d.q.len(&mut d.buf)
                    .await
                    .map_err(|e| anyhow::anyhow!("flash queue: {e:?}"))?;
            let mv = battery_mv(start_h + device_s / 3600.0);
            let up = d.ram.uptime_ms();
            let ram = &mut d.ram;
            let frame = ram
                .rec
                .status(&mut ram.builder, &ram.tb, up, mv, None, queued);
            d.store(&frame, 0).await?;
            tracing::debug!(device = %s.device, battery_mv = mv, queued, "status stored");
            continue;
        }

        let next_due = d.ram.sampler.next_due_ms().unwrap_or(u64::MAX);
        let round_due = making
            && d.ram.uptime_ms() >= next_due
            && (!s.interval.is_zero() || d.queued.len() < PACE);
        if round_due {
            // The model catches up with real time.
            let target_h = start_h + real.as_secs_f64() / 3600.0 * s.speed;
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
            let up = d.ram.uptime_ms();
            if s.events && now_lid != lid_open {
                let kind = if now_lid {
                    EventKind::LidOpened
                } else {
                    EventKind::LidClosed
                };
                let _ = d.ram.events.push_event(up, kind);
            }
            if s.events && now_tipped != tipped {
                let kind = if now_tipped {
                    EventKind::Tilt { angle_deg: 90 }
                } else {
                    EventKind::TiltCleared
                };
                let _ = d.ram.events.push_event(up, kind);
            }
            lid_open = now_lid;
            tipped = now_tipped;

            let phys = container.physical();
            let ram = &mut d.ram;
            sampling::sample(
                &mut ram.sampler,
                &mut ram.board,
                channels,
                &phys,
                sensor_faults,
                up,
                &mut ram.batch,
                k,
            )?;
            if d.ram.batch.len() >= k {
                let ram = &mut d.ram;
                if let Some(frame) = ram.builder.events(&mut ram.events, &ram.tb) {
                    d.store(&frame, 0).await?;
                }
                let ram = &mut d.ram;
                let frame = ram
                    .builder
                    .readings(&mut ram.batch, &ram.tb)
                    .context("a batch with readings")?;
                d.store(&frame, k).await?;
                produced += 1;
                if s.frames.is_some_and(|n| produced >= n) {
                    tracing::info!(device = %s.device, frames = produced, "sampling done: every frame is in flash; waiting for the broker to acknowledge each");
                }
            }
            continue;
        }

        if d.poll().await?.is_some() {
            continue;
        }
        let finished = s.frames.is_some_and(|n| produced >= n) || stopped_at.is_some();
        if finished && d.drained().await? {
            break;
        }
        if let Some(t) = stopped_at
            && now >= t + DRAIN_ON_STOP
        {
            break;
        }
        let wake = if making && !(s.interval.is_zero() && d.queued.len() >= PACE) {
            let sample_at = d
                .ram
                .booted
                .checked_add(Duration::from_millis(next_due))
                .unwrap_or(now + TICK);
            if s.events {
                let status_at =
                    started + Duration::from_secs_f64((next_status_s / s.speed).min(1e9));
                sample_at.min(status_at)
            } else {
                sample_at
            }
        } else {
            now + TICK
        };
        d.idle(wake, &mut stop).await;
    }

    let now = d.ram.uptime_ms();
    d.ram.uplink.disconnect(&mut d.net, now, u64::MAX).await;
    d.sum.boot = d.boot_no;
    d.sum.queued =
        d.q.len(&mut d.buf)
            .await
            .map_err(|e| anyhow::anyhow!("flash queue: {e:?}"))?;
    if d.sum.queued > 0 {
        match &s.flash {
            Some(p) => {
                tracing::warn!(device = %s.device, queued = d.sum.queued, "stopped with frames unacknowledged: they stay in the flash file {} for the next run", p.display())
            }
            None => bail!(
                "stopped with {} frame(s) unacknowledged by the broker, in an in-memory flash (lost; use --flash FILE to keep them)",
                d.sum.queued
            ),
        }
    }
    Ok(d.sum)
}
