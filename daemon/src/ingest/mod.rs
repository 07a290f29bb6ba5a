//! Ingest: every message a device sends becomes a verified, deduplicated,
//! durably stored frame — or a counted rejection. Nothing else.
//!
//! Transports ([`mqtt`], later serial) hand [`Inbound`] messages to one
//! [`Ingestor`], owned by one task. It verifies, decodes, maps device time to
//! wall time and writes each frame to the store at once (sled keeps it in its
//! log); [`Ingestor::commit`] then makes the whole group durable with one
//! flush + fsync, and only after that are the messages acknowledged to their
//! transport. A crash before the commit loses nothing that was acknowledged:
//! the broker (or the device's flash queue) still holds those messages and
//! sends them again, and the store's keys make the retry idempotent.

pub mod json;
pub mod mqtt;
pub mod serial;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use coldchain_proto::codec::{self, CodecError};
use coldchain_proto::topic::MAX_UPLINK_PAYLOAD;
use coldchain_proto::{Body, DeviceId, EventKind, Frame, FrameRef, Timestamp};
use serde::Serialize;

use crate::registry::Registry;
use crate::store::{
    BootClock, DeviceState, EventBody, EventRecord, FrameDigest, FrameRecord, GapRecord,
    ReadingRecord, SecurityKind, SecurityRecord, Store, StoreError, TimeSource, Via, WriteSet,
};

/// A wall-clock stamp more than this far ahead of our clock is a clock jump.
const FUTURE_TOLERANCE_MS: i64 = 5 * 60_000;
/// A wall-clock stamp this far behind the previous one of the same boot is a jump.
const BACKWARDS_TOLERANCE_MS: i64 = 60_000;
/// Unknown devices are logged at most once per this interval each.
const UNKNOWN_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Bound on the unknown-device log limiter's memory.
const UNKNOWN_TRACKED_MAX: usize = 4096;

/// A message as it arrived.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// How it came.
    pub via: Via,
    /// Topic or serial port, for logs and security records.
    pub source: String,
    /// The device the transport says sent it (from the MQTT topic), if any.
    pub claimed: Option<DeviceId>,
    /// The raw payload (empty when `oversize` is set).
    pub payload: Vec<u8>,
    /// Set by a transport that dropped the payload on arrival because it was
    /// over [`MAX_UPLINK_PAYLOAD`]: its length in bytes. Such a message is
    /// refused as `too_large` and acknowledged, never held in memory.
    pub oversize: Option<usize>,
    /// When we received it, ms since the Unix epoch.
    pub received_ms: i64,
}

/// How to acknowledge a message once it is durable.
#[derive(Debug)]
pub enum Ack {
    /// PUBACK this publish.
    Mqtt(rumqttc::Publish),
    /// Write a signed ack/nack frame back on this serial port.
    Serial(std::sync::mpsc::Sender<Vec<u8>>),
}

/// A message waiting to be stored, and how to acknowledge it afterwards.
#[derive(Debug)]
pub struct Job {
    /// The message.
    pub inbound: Inbound,
    /// How to acknowledge it.
    pub ack: Ack,
}

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
    /// A payload over [`MAX_UPLINK_PAYLOAD`] bytes (its length), not parsed.
    TooLarge(usize),
    /// Not a decodable message.
    Malformed(String),
    /// The device is not registered.
    UnknownDevice(DeviceId),
    /// The tag did not verify.
    BadTag(DeviceId),
    /// The frame's device differs from the topic's.
    DeviceMismatch {
        /// Device in the topic.
        topic: DeviceId,
        /// Device in the frame.
        frame: DeviceId,
    },
    /// Unsigned JSON from a device that must sign.
    Unsigned(DeviceId),
    /// A frame whose `(device, boot, seq)` is already stored with different
    /// content (sequence tampering); the stored frame stands.
    SequenceReuse(DeviceId, FrameRef),
    /// A frame stored under an earlier enrollment of the device, sent again
    /// after its re-enrollment (a replay); the device's own numbers.
    Replay(DeviceId, FrameRef),
}

impl Reject {
    /// A short, stable name for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Reject::TooLarge(_) => "too_large",
            Reject::Malformed(_) => "malformed",
            Reject::UnknownDevice(_) => "unknown_device",
            Reject::BadTag(_) => "bad_tag",
            Reject::DeviceMismatch { .. } => "device_mismatch",
            Reject::Unsigned(_) => "unsigned",
            Reject::SequenceReuse(..) => "sequence_reuse",
            Reject::Replay(..) => "replay",
        }
    }

    /// The device whose security record this rejection adds to, if it does.
    pub fn security_device(&self) -> Option<&DeviceId> {
        match self {
            Reject::BadTag(d)
            | Reject::Unsigned(d)
            | Reject::SequenceReuse(d, _)
            | Reject::Replay(d, _) => Some(d),
            Reject::DeviceMismatch { topic, .. } => Some(topic),
            Reject::TooLarge(_) | Reject::Malformed(_) | Reject::UnknownDevice(_) => None,
        }
    }
}

/// What happened to a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Newly stored.
    Stored {
        /// Device.
        device: DeviceId,
        /// Frame identity, as the device numbers it (what it is acknowledged by).
        frame: FrameRef,
        /// Where it is stored: the boot shifted by the device's enrollment
        /// offset (equal to `frame` for a device never re-enrolled).
        stored: FrameRef,
        /// Readings stored.
        readings: usize,
    },
    /// Already stored earlier: dropped, nothing changed.
    Duplicate {
        /// Device.
        device: DeviceId,
        /// Frame identity.
        frame: FrameRef,
        /// Where it is stored (see [`Outcome::Stored`]).
        stored: FrameRef,
    },
    /// Refused.
    Rejected(Reject),
}

impl Outcome {
    /// The serial-link answer to this outcome, signed with the device's key:
    /// an ack once the frame is durable (stored now or before), a nack for a
    /// bad tag. Nothing for messages that name no registered device or frame.
    pub fn serial_reply(&self, registry: &Registry, frame: Option<FrameRef>) -> Option<Vec<u8>> {
        use coldchain_proto::{Downlink, NackReason};
        let (device, msg) = match self {
            Outcome::Stored { device, frame, .. } | Outcome::Duplicate { device, frame, .. } => {
                (device, Downlink::Ack(*frame))
            }
            Outcome::Rejected(Reject::BadTag(device)) => (
                device,
                Downlink::Nack {
                    frame: frame?,
                    reason: NackReason::BadTag,
                },
            ),
            Outcome::Rejected(_) => return None,
        };
        serial_line(registry, device, &msg)
    }
}

/// `msg` signed with `device`'s key and COBS-framed for the serial link.
pub fn serial_line(
    registry: &Registry,
    device: &DeviceId,
    msg: &coldchain_proto::Downlink,
) -> Option<Vec<u8>> {
    let dev = registry.get(device)?;
    let mut buf = [0u8; codec::MAX_SIGNED_LEN];
    let signed = codec::encode_signed(msg, &dev.key, &mut buf).ok()?;
    let mut line = [0u8; coldchain_proto::serial::MAX_FRAME_LEN];
    let n = coldchain_proto::serial::encode(signed, &mut line).ok()?;
    Some(line[..n].to_vec())
}

/// The time and settings for a device (`Downlink::Sync`), as sent on its MQTT
/// down topic and over the serial link.
pub fn sync_message(dev: &crate::config::Device, unix_ms: u64) -> coldchain_proto::Downlink {
    coldchain_proto::Downlink::Sync {
        unix_ms,
        settings: dev
            .settings
            .clone()
            .unwrap_or_else(|| coldchain_proto::Settings {
                version: 0,
                upload_interval_s: DEFAULT_UPLOAD_INTERVAL_S,
                status_interval_s: 300,
                tilt_limit_deg: 45,
                channels: heapless::Vec::new(),
            }),
    }
}

/// Upload interval sent to a device that has no `[devices.settings]`, seconds.
pub const DEFAULT_UPLOAD_INTERVAL_S: u32 = 60;

/// Ingest counters, shared with the API.
#[derive(Debug, Default, Serialize)]
pub struct Stats {
    /// Frames stored.
    pub frames_stored: AtomicU64,
    /// Readings stored.
    pub readings_stored: AtomicU64,
    /// Duplicate frames dropped.
    pub duplicates: AtomicU64,
    /// Gaps detected.
    pub gaps_detected: AtomicU64,
    /// Clock jumps detected.
    pub clock_jumps: AtomicU64,
    /// Readings outside their channel kind's physical range, stored as
    /// `out_of_range` faults.
    pub implausible_readings: AtomicU64,
    /// Rejected: payload over [`MAX_UPLINK_PAYLOAD`] bytes.
    pub rejected_too_large: AtomicU64,
    /// Rejected: malformed.
    pub rejected_malformed: AtomicU64,
    /// Rejected: unknown device.
    pub rejected_unknown_device: AtomicU64,
    /// Rejected: bad tag.
    pub rejected_bad_tag: AtomicU64,
    /// Rejected: device mismatch.
    pub rejected_device_mismatch: AtomicU64,
    /// Rejected: unsigned.
    pub rejected_unsigned: AtomicU64,
    /// Rejected: a stored frame's identity reused with different content.
    pub rejected_sequence_reuse: AtomicU64,
    /// Rejected: a frame of an earlier enrollment sent again after a re-enrollment.
    pub rejected_replay: AtomicU64,
    /// Group commits done.
    pub commits: AtomicU64,
    /// Messages acknowledged after a commit.
    pub acked: AtomicU64,
    /// Serial frames that failed COBS or CRC (line damage).
    pub serial_damaged: AtomicU64,
    /// Times a serial port was (re)opened.
    pub serial_opens: AtomicU64,
    /// 1 while the database is over its disk budget and intake is paused.
    pub storage_full: AtomicU64,
    /// Frames purged by retention since start.
    pub retention_purged_frames: AtomicU64,
    /// 1 while connected to the MQTT broker (from its CONNACK to the next
    /// error), else 0.
    pub mqtt_connected: AtomicU64,
    /// Connections to the broker lost, or attempts that failed, since start;
    /// each is followed by a reconnect after the backoff.
    pub mqtt_reconnects: AtomicU64,
    /// The broker connection's recent history, for `/readyz`.
    #[serde(skip)]
    pub mqtt: std::sync::Mutex<MqttHealth>,
    /// Each device's connection as its retained online topic last said.
    #[serde(skip)]
    pub presence: std::sync::Mutex<std::collections::BTreeMap<String, Presence>>,
}

/// A device's connection to the broker, from its retained
/// `coldchain/v1/dev/{device}/online` topic (`online` after it connects, its
/// last will `offline` when the broker loses it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Presence {
    /// Connected.
    pub online: bool,
    /// When the daemon learned it (its clock), ms since the Unix epoch.
    pub since_ms: i64,
}

/// Most devices whose presence is tracked (the ACL keeps strangers out; this
/// bounds memory on a broker without one).
pub const PRESENCE_MAX: usize = 4096;

/// The broker connection's recent history, for `/readyz`.
#[derive(Debug, Default)]
pub struct MqttHealth {
    /// The broker, `host:port`.
    pub broker: String,
    /// The last connection error, if any since start.
    pub last_error: Option<String>,
    /// When established connections were recently lost (at most
    /// [`RECONNECT_LOOP_LOSSES`] kept).
    pub losses: std::collections::VecDeque<Instant>,
}

/// This many established connections lost within [`RECONNECT_LOOP_WINDOW`]
/// is a reconnect loop (connect, fail, reconnect: e.g. a message the
/// connection cannot get past): `/readyz` answers 503 even while connected.
pub const RECONNECT_LOOP_LOSSES: usize = 3;
/// See [`RECONNECT_LOOP_LOSSES`].
pub const RECONNECT_LOOP_WINDOW: Duration = Duration::from_secs(60);

impl Stats {
    /// Why ingest from the broker is not ready (not connected, or connected
    /// but in a reconnect loop), if it is not.
    pub fn mqtt_not_ready(&self) -> Option<String> {
        let h = self.mqtt.lock().unwrap_or_else(|e| e.into_inner());
        let last = h
            .last_error
            .as_deref()
            .map(|e| format!("; last error: {e}"))
            .unwrap_or_default();
        if self.mqtt_connected.load(Ordering::Relaxed) == 0 {
            return Some(format!(
                "MQTT: not connected to the broker at {}{last}",
                h.broker
            ));
        }
        let recent = h
            .losses
            .iter()
            .filter(|t| t.elapsed() < RECONNECT_LOOP_WINDOW)
            .count();
        (recent >= RECONNECT_LOOP_LOSSES).then(|| {
            format!(
                "MQTT: reconnect loop: the connection to the broker at {} was lost {recent} times in the last {} s{last}",
                h.broker,
                RECONNECT_LOOP_WINDOW.as_secs()
            )
        })
    }

    /// Records a lost connection or a failed attempt. Only the loss of an
    /// established connection counts towards a reconnect loop: attempts that
    /// fail while the broker is away are "not connected".
    pub fn mqtt_lost(&self, error: String) {
        let was_connected = self.mqtt_connected.swap(0, Ordering::Relaxed) == 1;
        self.mqtt_reconnects.fetch_add(1, Ordering::Relaxed);
        let mut h = self.mqtt.lock().unwrap_or_else(|e| e.into_inner());
        h.last_error = Some(error);
        if was_connected {
            if h.losses.len() >= RECONNECT_LOOP_LOSSES {
                h.losses.pop_front();
            }
            h.losses.push_back(Instant::now());
        }
    }

    /// Every rejection counter with its reason name ([`Reject::reason`]), in
    /// one order: what `/api/v1/stats` and `/metrics` show.
    pub fn rejected(&self) -> [(&'static str, u64); 8] {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("too_large", l(&self.rejected_too_large)),
            ("malformed", l(&self.rejected_malformed)),
            ("unknown_device", l(&self.rejected_unknown_device)),
            ("bad_tag", l(&self.rejected_bad_tag)),
            ("device_mismatch", l(&self.rejected_device_mismatch)),
            ("unsigned", l(&self.rejected_unsigned)),
            ("sequence_reuse", l(&self.rejected_sequence_reuse)),
            ("replay", l(&self.rejected_replay)),
        ]
    }

    fn count_reject(&self, r: &Reject) {
        let c = match r {
            Reject::TooLarge(_) => &self.rejected_too_large,
            Reject::Malformed(_) => &self.rejected_malformed,
            Reject::UnknownDevice(_) => &self.rejected_unknown_device,
            Reject::BadTag(_) => &self.rejected_bad_tag,
            Reject::DeviceMismatch { .. } => &self.rejected_device_mismatch,
            Reject::Unsigned(_) => &self.rejected_unsigned,
            Reject::SequenceReuse(..) => &self.rejected_sequence_reuse,
            Reject::Replay(..) => &self.rejected_replay,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// The content digest of a frame: SHA-256 of its postcard encoding (the
/// same for a frame that came as JSON and as binary), first 16 bytes.
pub fn frame_digest(f: &Frame) -> FrameDigest {
    use sha2::{Digest, Sha256};
    let mut buf = [0u8; codec::MAX_SIGNED_LEN];
    let h = match postcard::to_slice(f, &mut buf) {
        Ok(bytes) => Sha256::digest(&*bytes),
        // Cannot happen for a frame that decoded (it fits the same bound);
        // the Debug form is still a faithful, deterministic content key.
        Err(_) => Sha256::digest(format!("{f:?}").as_bytes()),
    };
    let mut d = [0u8; 16];
    d.copy_from_slice(&h[..16]);
    d
}

/// Verifies and stores frames. Owned by one task.
pub struct Ingestor<S: Store> {
    store: Arc<S>,
    registry: Registry,
    stats: Arc<Stats>,
    devices: HashMap<DeviceId, DeviceState>,
    /// Clock anchors of the boots that sent uptime stamps (see [`BootClock`]).
    boot_clocks: HashMap<(DeviceId, u32), BootClock>,
    unknown_logged: HashMap<DeviceId, Instant>,
    /// Frames stored since the last commit, for the latency histograms:
    /// (device time of the newest item if the device clock is synced, received).
    uncommitted: Vec<(Option<i64>, i64)>,
    /// Devices whose state changed since the last commit: written once per
    /// group, just before its flush (see [`Ingestor::commit`]).
    dirty: HashSet<DeviceId>,
}

impl<S: Store> std::fmt::Debug for Ingestor<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingestor")
            .field("devices", &self.devices.len())
            .finish_non_exhaustive()
    }
}

impl<S: Store> Ingestor<S> {
    /// A new ingestor over `store`.
    pub fn new(store: Arc<S>, registry: Registry, stats: Arc<Stats>) -> Self {
        Ingestor {
            store,
            registry,
            stats,
            devices: HashMap::new(),
            boot_clocks: HashMap::new(),
            unknown_logged: HashMap::new(),
            uncommitted: Vec::new(),
            dirty: HashSet::new(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// The store.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// Verifies, decodes and stores one message (written, not yet durable).
    ///
    /// Only a storage failure is an error; every property of the message
    /// itself ends in an [`Outcome`].
    pub fn process(&mut self, msg: &Inbound) -> Result<Outcome, StoreError> {
        let len = msg.oversize.unwrap_or(msg.payload.len());
        if len > MAX_UPLINK_PAYLOAD {
            let r = Reject::TooLarge(len);
            self.reject(msg, &r)?;
            return Ok(Outcome::Rejected(r));
        }
        if msg.claimed.is_none() && msg.via != Via::Serial {
            let r = Reject::Malformed(format!(
                "topic {:?} does not name a valid device id",
                msg.source
            ));
            self.reject(msg, &r)?;
            return Ok(Outcome::Rejected(r));
        }
        let opened = match msg.via {
            Via::MqttJson => self.open_json(msg),
            Via::Mqtt | Via::Serial => self.open_binary(msg),
        };
        let (frame, signed) = match opened {
            Ok(f) => f,
            Err(r) => {
                self.reject(msg, &r)?;
                return Ok(Outcome::Rejected(r));
            }
        };
        if let Some(topic) = &msg.claimed
            && *topic != frame.device
        {
            let r = Reject::DeviceMismatch {
                topic: topic.clone(),
                frame: frame.device.clone(),
            };
            self.reject(msg, &r)?;
            return Ok(Outcome::Rejected(r));
        }
        let fref = frame.frame_ref();
        let digest = frame_digest(&frame);
        // Enrollments: the device's own boot counter plus the offset of the
        // enrollment in force is the stored boot (daemon/DESIGN.md,
        // "Re-enrollment"). Acks and the outcome keep the device's own numbers.
        let offsets = self.registry.boot_offsets(&frame.device);
        let current = offsets.last().copied().unwrap_or(0);
        let Some(stored_boot) = frame.boot.checked_add(current) else {
            let r = Reject::Malformed(format!(
                "device {}: boot {} overflows the boot offset {current} of its enrollment",
                frame.device, frame.boot
            ));
            self.reject(msg, &r)?;
            return Ok(Outcome::Rejected(r));
        };
        let sref = FrameRef {
            boot: stored_boot,
            seq: frame.seq,
        };
        // A frame stored under an earlier enrollment, sent again: a replay
        // (the same key signed it), not a new frame of the new enrollment.
        for &o in &offsets[..offsets.len().saturating_sub(1)] {
            let Some(b) = frame.boot.checked_add(o) else {
                continue;
            };
            let old = FrameRef {
                boot: b,
                seq: frame.seq,
            };
            if let Some((_, Some(d))) = self.store.frame(&frame.device, old)?
                && d == digest
            {
                let r = Reject::Replay(frame.device, fref);
                self.reject(msg, &r)?;
                return Ok(Outcome::Rejected(r));
            }
        }
        // A frame past the device's highest stored sequence cannot be stored
        // yet: no lookup. (The device state is written after the frames of its
        // group, so it is never ahead of them; after a crash it may be behind,
        // and a frame the broker then redelivers is written again with the
        // same keys and content: idempotent.)
        let stored = if self.beyond_stored(&frame.device, sref)? {
            None
        } else {
            self.store.frame(&frame.device, sref)?
        };
        match stored.map(|(_, d)| d) {
            None => {}
            // Same content (or an entry too old to tell): a resend.
            Some(stored) if stored.is_none_or(|s| s == digest) => {
                self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                return Ok(Outcome::Duplicate {
                    device: frame.device,
                    frame: fref,
                    stored: sref,
                });
            }
            Some(_) => {
                let r = Reject::SequenceReuse(frame.device, fref);
                self.reject(msg, &r)?;
                return Ok(Outcome::Rejected(r));
            }
        }
        let mut stored = frame.clone();
        stored.boot = stored_boot;
        let readings = self.store_frame(&stored, msg, signed, &digest)?;
        self.stats.frames_stored.fetch_add(1, Ordering::Relaxed);
        self.stats
            .readings_stored
            .fetch_add(readings as u64, Ordering::Relaxed);
        Ok(Outcome::Stored {
            device: frame.device,
            frame: fref,
            stored: sref,
            readings,
        })
    }

    /// Makes everything processed so far durable. Acknowledge only after this.
    ///
    /// The state of every device touched since the last commit is written
    /// first, once, after its frames: a device's state is never ahead of its
    /// stored frames.
    pub fn commit(&mut self) -> Result<(), StoreError> {
        if !self.dirty.is_empty() {
            let mut w = WriteSet::default();
            for d in &self.dirty {
                if let Some(st) = self.devices.get(d) {
                    w.device(d, st);
                }
            }
            self.store.apply(w)?;
            self.dirty.clear();
        }
        let t = crate::metrics::timings();
        let started = Instant::now();
        self.store.sync()?;
        crate::metrics::observe(&t.commit, started.elapsed());
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        let durable = now_ms();
        for (device_ms, received_ms) in self.uncommitted.drain(..) {
            crate::metrics::observe_ms(&t.receive_to_durable, durable - received_ms);
            if let Some(d) = device_ms {
                crate::metrics::observe_ms(&t.publish_to_durable, durable - d);
            }
        }
        Ok(())
    }

    fn open_binary(&self, msg: &Inbound) -> Result<(Frame, bool), Reject> {
        let (frame, body, tag) = codec::decode_unverified::<Frame>(&msg.payload)
            .map_err(|e: CodecError| Reject::Malformed(e.to_string()))?;
        let dev = self
            .registry
            .get(&frame.device)
            .ok_or_else(|| Reject::UnknownDevice(frame.device.clone()))?;
        if !dev.key.verify(body, tag) {
            return Err(Reject::BadTag(frame.device));
        }
        Ok((frame, true))
    }

    fn open_json(&self, msg: &Inbound) -> Result<(Frame, bool), Reject> {
        let env = json::Envelope::parse(&msg.payload).map_err(Reject::Malformed)?;
        let frame = env.frame().map_err(Reject::Malformed)?;
        let dev = self
            .registry
            .get(&frame.device)
            .ok_or_else(|| Reject::UnknownDevice(frame.device.clone()))?;
        match env.tag() {
            Some(tag) => {
                if !dev.key.verify(env.frame_bytes(), &tag) {
                    return Err(Reject::BadTag(frame.device));
                }
                Ok((frame, true))
            }
            None if dev.allow_unsigned_json => Ok((frame, false)),
            None => Err(Reject::Unsigned(frame.device)),
        }
    }

    fn reject(&mut self, msg: &Inbound, r: &Reject) -> Result<(), StoreError> {
        self.stats.count_reject(r);
        match r {
            Reject::TooLarge(n) => {
                tracing::warn!(source = %msg.source, bytes = n,
                    "rejected message of {n} bytes: an uplink payload is at most {MAX_UPLINK_PAYLOAD} bytes (proto/README.md); not parsed, acknowledged");
            }
            Reject::Malformed(why) => {
                tracing::warn!(source = %msg.source, "rejected malformed message: {why}");
            }
            Reject::UnknownDevice(d) => {
                let now = Instant::now();
                let due = self
                    .unknown_logged
                    .get(d)
                    .is_none_or(|t| now.duration_since(*t) >= UNKNOWN_LOG_INTERVAL);
                if due {
                    if self.unknown_logged.len() >= UNKNOWN_TRACKED_MAX {
                        self.unknown_logged.clear();
                    }
                    self.unknown_logged.insert(d.clone(), now);
                    tracing::warn!(device = %d, source = %msg.source,
                        "rejected frame from unregistered device (register it with `coldchain device add`; logged once a minute per device)");
                }
            }
            Reject::BadTag(d) => self.security(msg, d, SecurityKind::BadTag)?,
            Reject::Unsigned(d) => self.security(msg, d, SecurityKind::Unsigned)?,
            Reject::SequenceReuse(d, r) => {
                self.security(msg, d, SecurityKind::SequenceReuse)?;
                tracing::warn!(device = %d, boot = r.boot, seq = r.seq, source = %msg.source,
                    "security: a frame reuses the boot and sequence number of a stored frame with different content; the stored frame is kept, this one refused");
            }
            Reject::Replay(d, r) => {
                self.security(msg, d, SecurityKind::SequenceReuse)?;
                tracing::warn!(device = %d, boot = r.boot, seq = r.seq, source = %msg.source,
                    "security: a frame stored before the device's re-enrollment was sent again (replay); refused");
            }
            Reject::DeviceMismatch { topic, frame } => {
                self.security(msg, topic, SecurityKind::DeviceMismatch)?;
                tracing::warn!(topic_device = %topic, frame_device = %frame, source = %msg.source,
                    "security: frame for one device published on another device's topic");
            }
        }
        Ok(())
    }

    /// Records a security event, aggregated per device and minute so a flood
    /// cannot fill the disk, and logs the first of each minute.
    fn security(
        &mut self,
        msg: &Inbound,
        d: &DeviceId,
        kind: SecurityKind,
    ) -> Result<(), StoreError> {
        let minute = msg.received_ms.div_euclid(60_000);
        let mut rec = match self.store.security(d, minute)? {
            Some(r) if r.kind == kind => r,
            _ => {
                tracing::warn!(device = %d, source = %msg.source, ?kind, "security event");
                SecurityRecord {
                    kind,
                    count: 0,
                    source: String::new(),
                    first_ms: msg.received_ms,
                    last_ms: msg.received_ms,
                }
            }
        };
        rec.count += 1;
        rec.last_ms = msg.received_ms;
        rec.source.clone_from(&msg.source);
        let mut w = WriteSet::default();
        w.security(d, minute, &rec);
        self.store.apply(w)
    }

    /// Whether `f` is past everything stored for its device: a newer boot, or
    /// a sequence number above the highest of its boot.
    fn beyond_stored(&mut self, d: &DeviceId, r: FrameRef) -> Result<bool, StoreError> {
        if self.store.shared() {
            // Another daemon may have stored it since this one last looked:
            // only the store can tell (a frame reusing a stored sequence
            // number with other content must be refused, not written over
            // the first).
            return Ok(false);
        }
        let st = self.state(d)?;
        Ok(r.boot > st.boot || (r.boot == st.boot && st.max_seq.is_none_or(|m| r.seq > m)))
    }

    fn state(&mut self, d: &DeviceId) -> Result<&mut DeviceState, StoreError> {
        if !self.devices.contains_key(d) {
            let st = self.store.device_state(d)?.unwrap_or_default();
            self.devices.insert(d.clone(), st);
        }
        Ok(self.devices.entry(d.clone()).or_default())
    }

    fn store_frame(
        &mut self,
        f: &Frame,
        msg: &Inbound,
        signed: bool,
        digest: &FrameDigest,
    ) -> Result<usize, StoreError> {
        let d = &f.device;
        let fref = f.frame_ref();
        let mut w = WriteSet::default();

        // Sequence tracking and gaps.
        let mut new_gap = None;
        let mut fill = false;
        {
            let st = self.state(d)?;
            st.last_seen_ms = st.last_seen_ms.max(msg.received_ms);
            if f.boot > st.boot || st.max_seq.is_none() {
                if f.boot > st.boot {
                    st.last_wall_ms = None;
                }
                st.boot = f.boot;
                if f.seq > 0 {
                    new_gap = Some((0, f.seq - 1));
                }
                st.max_seq = Some(f.seq);
            } else if f.boot == st.boot {
                let max = st.max_seq.unwrap_or(0);
                if f.seq > max {
                    if f.seq > max + 1 {
                        new_gap = Some((max + 1, f.seq - 1));
                    }
                    st.max_seq = Some(f.seq);
                } else {
                    fill = true;
                }
            } else {
                fill = true;
            }
        }
        if let Some((first, last)) = new_gap {
            self.stats.gaps_detected.fetch_add(1, Ordering::Relaxed);
            tracing::info!(device = %d, boot = f.boot, first, last, "sequence gap");
            w.gap(
                d,
                f.boot,
                first,
                Some(&GapRecord {
                    last,
                    detected_ms: msg.received_ms,
                }),
            );
        }
        if fill && let Some((first, rec)) = self.store.gap_containing(d, f.boot, f.seq)? {
            // A late frame (replayed from the device's queue) fills part of a gap.
            w.gap(d, f.boot, first, None);
            if first < f.seq {
                w.gap(
                    d,
                    f.boot,
                    first,
                    Some(&GapRecord {
                        last: f.seq - 1,
                        detected_ms: rec.detected_ms,
                    }),
                );
            }
            if f.seq < rec.last {
                w.gap(
                    d,
                    f.boot,
                    f.seq + 1,
                    Some(&GapRecord {
                        last: rec.last,
                        detected_ms: rec.detected_ms,
                    }),
                );
            }
        }

        // Time.
        if let Body::Events(evs) = &f.body {
            for e in evs {
                if let EventKind::ClockSynced { uptime_ms, unix_ms } = e.kind
                    && unix_ms >= coldchain_proto::MIN_WALL_UNIX_MS
                {
                    let mut c = self.boot_clock(d, f.boot)?;
                    c.synced_offset_ms = Some(unix_ms as i64 - uptime_ms as i64);
                    self.boot_clocks.insert((d.clone(), f.boot), c);
                    w.boot_clock(d, f.boot, &c);
                }
            }
        }
        let (time_ms, source) = self.map_time(d, f, msg.received_ms)?;
        if source == TimeSource::Uptime {
            let mut c = self.boot_clock(d, f.boot)?;
            c.saw(time_ms, msg.received_ms);
            self.boot_clocks.insert((d.clone(), f.boot), c);
            w.boot_clock(d, f.boot, &c);
        }
        let newest_dt = match &f.body {
            Body::Readings(rs) => rs.iter().map(|r| r.dt_ms).max(),
            Body::Events(es) => es.iter().map(|e| e.dt_ms).max(),
            Body::Status(_) => None,
        };
        self.uncommitted.push((
            (source == TimeSource::Device).then(|| time_ms + i64::from(newest_dt.unwrap_or(0))),
            msg.received_ms,
        ));

        let mut readings = 0;
        match &f.body {
            Body::Readings(rs) => {
                for (i, r) in rs.iter().enumerate() {
                    // Plausible or a fault, for every source: a value its
                    // sensor cannot measure is never a temperature.
                    let value = r.kind.checked(r.value);
                    if value != r.value {
                        self.stats
                            .implausible_readings
                            .fetch_add(1, Ordering::Relaxed);
                        let (lo, hi) = r.kind.plausible_range();
                        tracing::warn!(device = %d, boot = f.boot, seq = f.seq, channel = r.channel,
                            kind = ?r.kind, value = ?r.value, lo, hi,
                            "reading outside its channel kind's physical range: stored as an out_of_range fault");
                    }
                    w.reading(
                        d,
                        fref,
                        i as u16,
                        &ReadingRecord {
                            channel: r.channel,
                            kind: r.kind,
                            value,
                            time_ms: time_ms + i64::from(r.dt_ms),
                            time_source: source,
                        },
                    );
                    readings += 1;
                }
            }
            Body::Events(es) => {
                for (i, e) in es.iter().enumerate() {
                    w.event(
                        d,
                        fref,
                        i as u16,
                        &EventRecord {
                            time_ms: time_ms + i64::from(e.dt_ms),
                            time_source: source,
                            body: EventBody::Event(e.kind),
                        },
                    );
                }
            }
            Body::Status(s) => {
                w.event(
                    d,
                    fref,
                    0,
                    &EventRecord {
                        time_ms,
                        time_source: source,
                        body: EventBody::Status(*s),
                    },
                );
            }
        }
        w.frame(
            d,
            fref,
            &FrameRecord {
                received_ms: msg.received_ms,
                time_ms,
                time_source: source,
                via: msg.via,
                signed,
            },
            digest,
        );
        self.dirty.insert(d.clone());
        self.store.apply(w)?;
        Ok(readings)
    }

    /// The clock anchor of a boot, from memory or the store.
    fn boot_clock(&mut self, d: &DeviceId, boot: u32) -> Result<BootClock, StoreError> {
        if let Some(c) = self.boot_clocks.get(&(d.clone(), boot)) {
            return Ok(*c);
        }
        Ok(self.store.boot_clock(d, boot)?.unwrap_or_default())
    }

    /// Maps the frame's timestamp to wall time, never inventing a 1970 date.
    fn map_time(
        &mut self,
        d: &DeviceId,
        f: &Frame,
        received_ms: i64,
    ) -> Result<(i64, TimeSource), StoreError> {
        let stats = self.stats.clone();
        let st = self.state(d)?;
        Ok(match f.time {
            Timestamp::Wall(ms) if f.time.is_implausible_wall() => {
                st.clock_jumps += 1;
                stats.clock_jumps.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(device = %d, boot = f.boot, seq = f.seq, stamp_ms = ms,
                    "device sent a wall-clock time before 2020: broken clock, time estimated from receive time");
                (received_ms, TimeSource::BrokenClock)
            }
            Timestamp::Wall(ms) => {
                let ms = ms.min(i64::MAX as u64) as i64;
                let ahead = ms - received_ms > FUTURE_TOLERANCE_MS;
                let backwards = f.boot == st.boot
                    && st
                        .last_wall_ms
                        .is_some_and(|last| last - ms > BACKWARDS_TOLERANCE_MS)
                    && st.max_seq == Some(f.seq);
                if ahead || backwards {
                    st.clock_jumps += 1;
                    stats.clock_jumps.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(device = %d, boot = f.boot, seq = f.seq, stamp_ms = ms, received_ms,
                        ahead, backwards, "clock jump");
                }
                if f.boot == st.boot && st.max_seq == Some(f.seq) {
                    st.last_wall_ms = Some(ms);
                }
                (ms, TimeSource::Device)
            }
            // Stored as the device's uptime and placed on the wall clock
            // when read, by the boot's anchor (see `BootClock`): placing it
            // now, from this frame's arrival alone, would squeeze a queue
            // uploaded in a burst into a few milliseconds.
            Timestamp::Uptime(up) => (up.min(i64::MAX as u64) as i64, TimeSource::Uptime),
        })
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::KvStore;
    use coldchain_proto::{ChannelKind, DeviceKey, Measurement, Reading};

    fn frame(d: &DeviceId, boot: u32, seq: u32, v: i32) -> Frame {
        let r = Reading {
            channel: 0,
            kind: ChannelKind::Rtd,
            dt_ms: 0,
            value: Measurement::Valid(v),
        };
        Frame {
            device: d.clone(),
            boot,
            seq,
            time: Timestamp::Wall(1_767_225_600_000 + u64::from(seq) * 1000),
            body: Body::Readings(heapless::Vec::from_slice(&[r]).unwrap()),
        }
    }

    fn serial(f: &Frame, key: &DeviceKey) -> Inbound {
        let mut buf = [0u8; codec::MAX_SIGNED_LEN];
        Inbound {
            via: Via::Serial,
            source: "/dev/ttyUSB0".into(),
            claimed: None,
            payload: codec::encode_signed(f, key, &mut buf).unwrap().to_vec(),
            oversize: None,
            received_ms: 1_767_225_700_000,
        }
    }

    /// After a re-enrollment the device's frames are stored under the
    /// enrollment's boot offset, while the outcome and the serial ack carry
    /// the device's own (boot, seq): the device matches acks to its queue.
    #[test]
    fn acks_after_a_reenrollment_carry_the_devices_own_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(KvStore::open(dir.path()).unwrap());
        let d = DeviceId::new("logger-1").unwrap();
        let key = DeviceKey::from_bytes([7; 32]);
        let registry = Registry::new([crate::config::Device {
            id: d.clone(),
            key: key.clone(),
            allow_unsigned_json: false,
            settings: None,
        }]);
        let mut ing = Ingestor::new(store.clone(), registry.clone(), Arc::default());
        for seq in 0..2 {
            let o = ing.process(&serial(&frame(&d, 1, seq, 100), &key)).unwrap();
            assert!(matches!(o, Outcome::Stored { .. }), "{o:?}");
        }
        let highest = store.highest_boot(&d).unwrap().unwrap();
        assert_eq!(highest, 1);
        let e = registry
            .reenroll(&d, highest + 1, "tech", "flash wiped", 0)
            .unwrap();
        assert_eq!(e.boot_offset, 2);

        let o = ing.process(&serial(&frame(&d, 1, 0, 200), &key)).unwrap();
        let own = FrameRef { boot: 1, seq: 0 };
        assert_eq!(
            o,
            Outcome::Stored {
                device: d.clone(),
                frame: own,
                // Stored under the boot shifted by the enrollment's offset:
                // the evaluator reads it there.
                stored: FrameRef { boot: 3, seq: 0 },
                readings: 1
            }
        );
        let line = o.serial_reply(&registry, Some(own)).unwrap();
        let mut dec = coldchain_proto::serial::Decoder::new();
        let payload = line
            .iter()
            .find_map(|&b| dec.push(b).map(|r| r.unwrap().to_vec()))
            .unwrap();
        let ack: coldchain_proto::Downlink = codec::decode_signed(&payload, &key).unwrap();
        assert_eq!(ack, coldchain_proto::Downlink::Ack(own));
        // Stored at boot 2 + 1 = 3; the old (1, 0) stands.
        assert!(
            store
                .frame(&d, FrameRef { boot: 3, seq: 0 })
                .unwrap()
                .is_some()
        );
        let rows = store.readings(&d, None, 10).unwrap();
        let got: Vec<_> = rows.iter().map(|r| (r.boot, r.seq)).collect();
        assert_eq!(got, vec![(1, 0), (1, 1), (3, 0)]);
        // The old frame sent again is a replay.
        let o = ing.process(&serial(&frame(&d, 1, 1, 100), &key)).unwrap();
        assert_eq!(
            o,
            Outcome::Rejected(Reject::Replay(d.clone(), FrameRef { boot: 1, seq: 1 }))
        );
        assert_eq!(ing.stats().rejected_replay.load(Ordering::Relaxed), 1);
    }
}

impl Stats {
    /// The ingest counters as the metrics exposition shows them.
    pub fn metrics(&self) -> crate::metrics::Snapshot {
        let st = self;
        use std::sync::atomic::Ordering::Relaxed;
        crate::metrics::Snapshot {
            counters: vec![
                (
                    "coldchain_frames_stored",
                    "Frames stored by this instance since start (instances sharing PostgreSQL that take the same frame at the same moment may both count it; the store holds it once)",
                    st.frames_stored.load(Relaxed),
                ),
                (
                    "coldchain_readings_stored",
                    "Readings stored since start",
                    st.readings_stored.load(Relaxed),
                ),
                (
                    "coldchain_duplicates",
                    "Duplicate frames dropped since start",
                    st.duplicates.load(Relaxed),
                ),
                (
                    "coldchain_gaps_detected",
                    "Sequence gaps detected since start",
                    st.gaps_detected.load(Relaxed),
                ),
                (
                    "coldchain_implausible_readings",
                    "Readings outside their channel kind's physical range, stored as out_of_range faults",
                    st.implausible_readings.load(Relaxed),
                ),
                (
                    "coldchain_commits",
                    "Group commits (flush + fsync) since start",
                    st.commits.load(Relaxed),
                ),
                (
                    "coldchain_mqtt_reconnects",
                    "Broker connections lost or attempts failed since start (each followed by a reconnect)",
                    st.mqtt_reconnects.load(Relaxed),
                ),
                (
                    "coldchain_retention_purged_frames",
                    "Frames purged by retention (store.retention_days) since start",
                    st.retention_purged_frames.load(Relaxed),
                ),
            ],
            rejected: st.rejected().to_vec(),
            gauges: vec![
                (
                    "coldchain_storage_full",
                    "1 while the database is over its disk budget and intake is paused",
                    st.storage_full.load(Relaxed) as i64,
                ),
                (
                    "coldchain_mqtt_connected",
                    "1 while connected to the MQTT broker",
                    st.mqtt_connected.load(Relaxed) as i64,
                ),
            ],
            online: st
                .presence
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|(d, p)| (d.clone(), i64::from(p.online)))
                .collect(),
            ..crate::metrics::Snapshot::default()
        }
    }
}

#[cfg(test)]
mod metrics_tests {
    use super::Stats;
    use crate::metrics::{observe, observe_ms, render, timings};
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::Duration;

    /// The sample lines dashboards and tests rely on keep their names and
    /// form; the histograms are exposed with buckets, sum and count.
    #[test]
    fn exposition_keeps_names_and_adds_histograms() {
        let st = Stats::default();
        st.readings_stored.store(64, Relaxed);
        st.rejected_sequence_reuse.store(1, Relaxed);
        st.storage_full.store(1, Relaxed);
        st.presence.lock().unwrap().insert(
            "van-3".into(),
            crate::ingest::Presence {
                online: false,
                since_ms: 0,
            },
        );
        let mut snap = st.metrics();
        snap.gauges
            .push(("coldchain_store_bytes", "Database size on disk", 4096));
        snap.open_alerts.push(("critical".into(), 2));
        snap.last_seen.push(("van-3".into(), 1_763_769_600));
        observe(&timings().commit, Duration::from_micros(300));
        observe_ms(&timings().publish_to_durable, 7);
        let text = render(snap).unwrap();
        for line in [
            "coldchain_readings_stored_total 64",
            "coldchain_frames_stored_total 0",
            "coldchain_commits_total 0",
            "coldchain_rejected_total{reason=\"sequence_reuse\"} 1",
            "coldchain_rejected_total{reason=\"bad_tag\"} 0",
            "coldchain_storage_full 1",
            "coldchain_store_bytes 4096",
            "coldchain_open_alerts{severity=\"critical\"} 2",
            "coldchain_device_last_seen_seconds{device=\"van-3\"} 1763769600",
            "coldchain_device_online{device=\"van-3\"} 0",
            "coldchain_retention_purged_frames_total 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in\n{text}"
            );
        }
        for prefix in [
            "coldchain_ingest_commit_seconds_bucket{le=\"0.0004\"} ",
            "coldchain_ingest_commit_seconds_count ",
            "coldchain_ingest_publish_to_durable_seconds_bucket{le=\"0.0128\"} ",
            "coldchain_ingest_receive_to_durable_seconds_count ",
            "coldchain_evaluate_shipment_seconds_count ",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(prefix)),
                "no line starting {prefix:?} in\n{text}"
            );
        }
        // Observed values land in their buckets (other tests in this process
        // may observe too, so at least one).
        let count = |prefix: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(prefix))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        assert!(count("coldchain_ingest_commit_seconds_bucket{le=\"0.0004\"} ") >= 1);
        assert!(count("coldchain_ingest_publish_to_durable_seconds_bucket{le=\"0.0128\"} ") >= 1);
    }
}
