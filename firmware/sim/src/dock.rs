//! One simulated logger on a serial port (`--serial`): the firmware's flash
//! queue on the simulated flash, drained by the firmware's serial uplink.
//!
//! The loop is the device's main loop: when the firmware's `Sampler` has
//! channels due, read them from the simulated board through its checks
//! ([`crate::sampling`]); a batch of `--readings-per-frame` readings is
//! sealed and signed (`FrameBuilder`) and stored in the flash queue
//! (`Outbox`); otherwise poll the serial uplink, which sends the
//! oldest queued frame and removes it only on the daemon's verified ack. The
//! boot counter lives in the same flash. A `--fault power-cut@S` drops all RAM
//! state (batch, frame builder, uplink, clock) and boots again from the flash.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use coldchain_firmware::batch::ReadingBatch;
use coldchain_firmware::queue::{ENTRY_BUF_LEN, Outbox};
use coldchain_firmware::record::Recorder;
use coldchain_firmware::sampler::Sampler;
use coldchain_firmware::sync::{SettingsState, SyncPolicy, apply_sync};
use coldchain_firmware::uplink::serial::{Event, SerialConfig, SerialUplink};
use coldchain_firmware::{FrameBuilder, TimeBase, bootcount};
use coldchain_proto::{DeviceId, DeviceKey, FrameRef};
use sequential_storage::cache::Cache;

use crate::board::{self, Board, SensorFaults};
use crate::exec::block_on;
use crate::flash::{BOOT_RANGE, QUEUE_RANGE, Queue, SimFlash, readings_in};
use crate::sampling;
use crate::thermal::{Container, Profile};

/// What the logger does.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Device id.
    pub device: DeviceId,
    /// Device key.
    pub key: DeviceKey,
    /// Container.
    pub profile: Profile,
    /// Reading frames to make (then drain the queue and exit); `None`: run until stopped.
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
    /// The serial port.
    pub serial: PathBuf,
    /// The flash image file (`None`: in memory).
    pub flash: Option<PathBuf>,
    /// Serial ack timeout.
    pub ack_timeout_ms: u64,
    /// Model hour at which the RTD opens / comes loose.
    pub sensor_faults: (Option<f64>, Option<f64>),
    /// Power cuts, real time after start.
    pub power_cuts: Vec<Duration>,
}

/// What the run did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    /// The boot number of the last boot.
    pub boot: u32,
    /// Reading frames acknowledged (from this run or found in flash).
    pub frames: usize,
    /// Readings in them.
    pub readings: usize,
    /// Frames left in the flash queue at exit.
    pub queued: u32,
    /// Frames found in the flash queue at the first boot.
    pub found: usize,
    /// Serial transmissions (resends included).
    pub sent: u64,
}

/// RAM: everything a power cut loses.
struct Ram {
    builder: FrameBuilder,
    tb: TimeBase,
    settings: SettingsState,
    uplink: SerialUplink,
    booted: Instant,
    rec: Recorder,
    board: Board,
    sampler: Sampler,
    /// The settings version the sampler was built from (`None`: no settings).
    sampler_version: Option<u32>,
    batch: ReadingBatch,
}

/// Every channel's sampling interval without pushed settings, real ms.
fn period_ms(s: &Setup) -> u64 {
    sampling::default_period_ms(s.profile, s.readings_per_frame, s.interval)
}

fn boot(s: &Setup, flash: &mut SimFlash, force: Option<u32>) -> anyhow::Result<(u32, Ram)> {
    let n = block_on(bootcount::next(flash, BOOT_RANGE, force))
        .map_err(|e| anyhow::anyhow!("boot counter in flash: {e:?}"))?;
    let cfg = SerialConfig {
        ack_timeout_ms: s.ack_timeout_ms,
        ..SerialConfig::default()
    };
    Ok((
        n,
        Ram {
            builder: FrameBuilder::new(s.device.clone(), s.key.clone(), n),
            tb: TimeBase::unsynced(),
            settings: SettingsState::new(),
            uplink: SerialUplink::new(s.key.clone(), cfg),
            booted: Instant::now(),
            rec: Recorder::new(),
            board: Board::boot()?,
            sampler: sampling::sampler(
                &sampling::configs(board::channels(s.profile), None, period_ms(s), s.speed),
                0,
            )?,
            sampler_version: None,
            batch: ReadingBatch::new(),
        },
    ))
}

/// Runs the logger until its frames are made and the queue is empty, or `stop`.
pub fn run(s: Setup, stop: Arc<AtomicBool>) -> anyhow::Result<Summary> {
    let mut flash = match &s.flash {
        Some(p) => SimFlash::file(p)?,
        None => SimFlash::memory(),
    };
    let (mut boot_no, mut ram) = boot(&s, &mut flash, s.boot)?;
    let mut q: Queue = Outbox::new(flash, QUEUE_RANGE, Cache::new_uncached());
    let mut buf = [0u8; ENTRY_BUF_LEN];

    // Readings per queued frame, for the summary (frames left by an earlier run included).
    let mut readings_of: HashMap<FrameRef, usize> = HashMap::new();
    block_on(q.for_each(&mut buf, |r, bytes| {
        readings_of.insert(r, readings_in(bytes, &s.key));
    }))
    .map_err(|e| anyhow::anyhow!("reading the flash queue: {e:?}"))?;
    let mut sum = Summary {
        found: readings_of.len(),
        ..Summary::default()
    };
    let mut port = crate::tty::Tty::open(&s.serial)?;
    tracing::info!(device = %s.device, boot = boot_no, queued = sum.found, port = %s.serial.display(), "logger started on the serial port");

    let started = Instant::now();
    let mut container = Container::new(s.profile, s.seed);
    container.advance(s.start_h);
    let mut model_h = s.start_h;
    let channels = board::channels(s.profile);
    let k = s.readings_per_frame;
    let mut cuts = s.power_cuts.clone();
    let mut produced = 0u64;
    let mut announced = false;

    loop {
        let uptime = u64::try_from(ram.booted.elapsed().as_millis()).unwrap_or(u64::MAX);

        if let Some(i) = cuts.iter().position(|at| *at <= started.elapsed()) {
            cuts.remove(i);
            let flash = q.into_flash();
            let mut flash = flash;
            (boot_no, ram) = boot(&s, &mut flash, None)?;
            q = Outbox::new(flash, QUEUE_RANGE, Cache::new_uncached());
            tracing::warn!(device = %s.device, boot = boot_no, "injected power cut: rebooted; the flash queue survives, RAM does not");
            continue;
        }

        // New settings from the daemon: the sampler follows them.
        let version = ram.settings.current().map(|x| x.version);
        if version != ram.sampler_version {
            let cfgs = sampling::configs(channels, ram.settings.current(), period_ms(&s), s.speed);
            ram.sampler = sampling::sampler(&cfgs, uptime)?;
            ram.sampler_version = version;
        }

        let due = ram.sampler.next_due_ms().is_some_and(|t| t <= uptime);
        if s.frames.is_none_or(|n| produced < n) && due {
            let target_h = s.start_h + started.elapsed().as_secs_f64() / 3600.0 * s.speed;
            container.advance(target_h - model_h);
            model_h = target_h;
            let faults = SensorFaults {
                probe_open: s.sensor_faults.0.is_some_and(|h| model_h >= h),
                probe_loose: s.sensor_faults.1.is_some_and(|h| model_h >= h),
            };
            let phys = container.physical();
            sampling::sample(
                &mut ram.sampler,
                &mut ram.board,
                channels,
                &phys,
                faults,
                uptime,
                &mut ram.batch,
                k,
            )?;
            if ram.batch.len() < k {
                continue;
            }
            let frame = ram
                .builder
                .readings(&mut ram.batch, &ram.tb)
                .context("a batch with readings")?;
            let st = block_on(ram.rec.store(
                &mut ram.builder,
                &ram.tb,
                uptime,
                &mut q,
                &frame,
                &mut buf,
            ))
            .map_err(|e| anyhow::anyhow!("storing a frame in flash: {e:?}"))?;
            readings_of.insert(st.frame_ref, k);
            if st.removed > 0 {
                tracing::warn!(device = %s.device, dropped = st.removed, "flash queue full: oldest frames dropped; a QueueOverflow event reports them");
            }
            produced += 1;
            continue;
        }
        if !announced && s.frames.is_some_and(|n| produced >= n) {
            announced = true;
            tracing::info!(device = %s.device, frames = produced, "sampling done: every frame is in flash; dumping");
        }

        let ev = block_on(ram.uplink.poll(&mut port, &mut q, uptime, &mut buf))
            .map_err(|e| anyhow::anyhow!("serial uplink: {e:?}"))?;
        match ev {
            Some(Event::Sent(_)) => sum.sent += 1,
            Some(Event::Acked(r)) => {
                let n = readings_of.remove(&r).unwrap_or(0);
                if n > 0 {
                    sum.frames += 1;
                    sum.readings += n;
                }
                tracing::debug!(device = %s.device, boot = r.boot, seq = r.seq, "ack: frame removed from flash");
            }
            Some(Event::Sync { unix_ms, settings }) => {
                let o = apply_sync(
                    &mut ram.tb,
                    &mut ram.settings,
                    &SyncPolicy::default(),
                    uptime,
                    unix_ms,
                    settings,
                    false,
                );
                tracing::info!(device = %s.device, unix_ms, clock = ?o.clock, settings_changed = o.settings_changed, "sync over serial");
            }
            Some(other) => tracing::debug!(device = %s.device, ?other, "serial"),
            None => {
                let making = s.frames.is_none_or(|n| produced < n);
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if !making
                    && ram.uplink.in_flight().is_none()
                    && block_on(q.oldest(&mut buf))
                        .map_err(|e| anyhow::anyhow!("flash queue: {e:?}"))?
                        .is_none()
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    sum.boot = boot_no;
    sum.queued = block_on(q.len(&mut buf)).map_err(|e| anyhow::anyhow!("flash queue: {e:?}"))?;
    tracing::info!(device = %s.device, frames = sum.frames, queued = sum.queued, sent = sum.sent, "serial dump finished");
    Ok(sum)
}
