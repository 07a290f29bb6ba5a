//! Durable storage: one sled database, a few trees, big-endian keys.
//!
//! | tree | key | value |
//! | --- | --- | --- |
//! | `frames` | device ‖ 0 ‖ boot ‖ seq | [`FrameRecord`] ‖ [`FrameDigest`] ‖ every `(idx, `[`ReadingRecord`]`)` of the frame: the frame, its dedupe entry and its readings |
//! | `frame_readings` | device ‖ 0 ‖ boot ‖ seq | the readings of frames stored by earlier versions (see below) |
//! | `events` | device ‖ 0 ‖ boot ‖ seq ‖ idx | [`EventRecord`] (device events, status) |
//! | `gaps` | device ‖ 0 ‖ boot ‖ first missing seq | [`GapRecord`] |
//! | `devices` | device | [`DeviceState`] |
//! | `security` | device ‖ 0 ‖ minute | [`SecurityRecord`]: bad tags, impersonation |
//! | `storage_full` | since (ms) | until (ms) or none: disk-budget episodes |
//! | `shipments`, `alerts`, `outbox`, `audit` | (see their modules) | |
//!
//! Device ids never contain a 0 byte, so `device ‖ 0` is an exact prefix and
//! keys sort by device, then boot, then sequence. Integers are big-endian so
//! range scans come out in order.
//!
//! A frame is **one sled value**: its record, its content digest and its
//! readings (postcard `Vec<(u16, ReadingRecord)>`, empty for an event or
//! status frame), so storing a frame is one sled insert. sled's cost is per
//! insert (each copies the leaf it changes, and every 8 or so appended keys
//! split a leaf and copy its parent), which is what limits ingest (see the
//! README's performance section). The API still pages by `(frame, idx)`.
//!
//! **Layouts of earlier versions**, read as they are (no conversion), told
//! apart by what follows the postcard [`FrameRecord`] in a `frames` value:
//!
//! | after the record | digest | readings |
//! | --- | --- | --- |
//! | nothing | none | in `frame_readings` (same key) |
//! | 16 bytes | [`FrameDigest`] | in `frame_readings` (same key) |
//! | 16 bytes ‖ postcard list (≥ 1 byte) | [`FrameDigest`] | inline (this version) |
//!
//! Databases older still kept one entry per reading in a `readings` tree;
//! [`KvStore::open`] converts them once into `frame_readings`.
//!
//! **Durability.** sled 0.34 makes writes durable with `flush`, which on Linux
//! uses `sync_file_range` and does not flush the drive's cache or the file's
//! metadata (sled issue 1452). [`KvStore::sync`] therefore follows every flush
//! with an `fsync` of each file in the database directory and of the directory
//! itself. Callers group many messages into one `sync` (group commit) and only
//! then acknowledge them.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use coldchain_proto::{ChannelKind, DeviceId, EventKind, FrameRef, Measurement, Status};
use serde::{Deserialize, Serialize};

use crate::kv::{Batch, Db, IVec, Tree};

/// How long after a shipment's window its device's refused frames still
/// count for it: a logger dumped at the receiving lab brings them then.
pub const LATE_DUMP_MS: i64 = 24 * 3_600_000;

/// A storage failure, with the path involved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database (sled or PostgreSQL) reported an error.
    #[error("database {path}: {source}")]
    Sled {
        /// Database directory, or the PostgreSQL URL without its password.
        path: PathBuf,
        /// The error.
        source: crate::kv::Error,
    },
    /// fsync or directory listing failed.
    #[error("fsync of {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A stored value did not decode (corruption or a newer format).
    #[error("database {path}: tree {tree}: undecodable value: {detail}")]
    Decode {
        /// Database directory.
        path: PathBuf,
        /// Tree name.
        tree: &'static str,
        /// What failed.
        detail: String,
    },
}

/// Where a reading's time came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TimeSource {
    /// The device's synced clock.
    Device,
    /// Estimated from the receive time: the device sent uptime.
    Estimated,
    /// The device claimed a wall time that cannot be real (before 2020);
    /// estimated from the receive time.
    BrokenClock,
    /// The device's clock was not set: `time_ms` holds its *uptime* (ms since
    /// the boot), placed on the wall clock when read, by the boot's
    /// [`BootClock`]. Appended: records of the other kinds encode as before.
    Uptime,
}

impl TimeSource {
    /// True when the time is the device's own synced clock.
    pub fn is_synced(self) -> bool {
        self == TimeSource::Device
    }
}

/// How one boot of an unsynced device is placed on the wall clock: readings
/// stamped with uptime keep their uptime differences (a 75-minute queue spans
/// 75 minutes), anchored on the boot's `clock_synced` event when there is one,
/// otherwise on the arrival of the boot's newest frame (it was sent when it
/// was received, near enough). Times placed so are estimates and stay marked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootClock {
    /// `unix - uptime` from a clock-synced event of this boot, exact.
    pub synced_offset_ms: Option<i64>,
    /// The highest uptime stamp received in this boot, ms.
    pub newest_uptime_ms: i64,
    /// When the frame with that stamp was received (receiver clock), ms.
    pub newest_received_ms: i64,
}

impl BootClock {
    /// `wall - uptime` for this boot.
    pub fn offset_ms(&self) -> i64 {
        self.synced_offset_ms
            .unwrap_or(self.newest_received_ms - self.newest_uptime_ms)
    }

    /// Notes a frame stamped with `uptime_ms`, received at `received_ms`.
    pub fn saw(&mut self, uptime_ms: i64, received_ms: i64) {
        if uptime_ms >= self.newest_uptime_ms {
            // The same uptime again (a resend): keep the first arrival.
            if uptime_ms > self.newest_uptime_ms || self.newest_received_ms == 0 {
                self.newest_received_ms = received_ms;
            }
            self.newest_uptime_ms = uptime_ms;
        }
    }
}

/// One stored reading (the key holds device, boot, seq and index).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadingRecord {
    /// Channel number.
    pub channel: u8,
    /// Channel kind.
    pub kind: ChannelKind,
    /// Value or fault.
    pub value: Measurement,
    /// Wall time of the sample, ms since the Unix epoch (see `time_source`).
    pub time_ms: i64,
    /// How `time_ms` was obtained.
    pub time_source: TimeSource,
}

/// How a frame reached us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// MQTT, binary.
    Mqtt,
    /// MQTT, JSON envelope.
    MqttJson,
    /// Serial link.
    Serial,
}

/// The first 16 bytes of SHA-256 over a frame's canonical (postcard)
/// encoding: what tells a resend of a frame (same content) from a different
/// frame reusing its `(device, boot, seq)` (sequence tampering). Stored after
/// the postcard [`FrameRecord`] in the `frames` tree; entries written before
/// it existed have none.
pub type FrameDigest = [u8; 16];

/// The dedupe index entry of a frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameRecord {
    /// When we received it, ms since the Unix epoch.
    pub received_ms: i64,
    /// Frame time mapped to wall clock.
    pub time_ms: i64,
    /// How `time_ms` was obtained.
    pub time_source: TimeSource,
    /// How it arrived.
    pub via: Via,
    /// Whether it carried a verified tag (false only for unsigned JSON by policy).
    pub signed: bool,
}

/// A `frames` value taken apart (see the module docs for its layouts).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredFrame<'a> {
    /// The frame's record.
    pub record: FrameRecord,
    /// Its content digest; `None` for an entry of a version that kept none.
    pub digest: Option<FrameDigest>,
    /// Its readings (postcard `Vec<(u16, ReadingRecord)>`) when stored
    /// inline; `None` for an entry of an earlier version, whose readings are
    /// in `frame_readings`.
    pub readings: Option<&'a [u8]>,
}

impl<'a> StoredFrame<'a> {
    /// Splits a `frames` value.
    pub fn parse(v: &'a [u8]) -> Result<Self, postcard::Error> {
        let (record, rest) = postcard::take_from_bytes::<FrameRecord>(v)?;
        let (digest, readings) = match rest.split_at_checked(16) {
            Some((d, list)) => (
                FrameDigest::try_from(d).ok(),
                (!list.is_empty()).then_some(list),
            ),
            None => (None, None),
        };
        Ok(StoredFrame {
            record,
            digest,
            readings,
        })
    }
}

/// A stored device event or status heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventBody {
    /// An event from the device.
    Event(EventKind),
    /// A status heartbeat.
    Status(Status),
}

/// One stored event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Wall time, ms since the Unix epoch.
    pub time_ms: i64,
    /// How `time_ms` was obtained.
    pub time_source: TimeSource,
    /// What happened.
    pub body: EventBody,
}

/// Missing sequence numbers `first..=last` in one boot of a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GapRecord {
    /// Last missing seq (inclusive); the first is in the key.
    pub last: u32,
    /// When the gap was first seen, ms since the Unix epoch.
    pub detected_ms: i64,
}

/// What the daemon remembers about a device between frames.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceState {
    /// Highest boot counter seen.
    pub boot: u32,
    /// Highest seq seen in that boot.
    pub max_seq: Option<u32>,
    /// Last receive time, ms since the Unix epoch.
    pub last_seen_ms: i64,
    /// No longer written: uptime stamps are placed by each boot's
    /// [`BootClock`]. Kept so device states stored by earlier versions (and
    /// by this one, as `None`) keep their postcard layout.
    pub uptime_offset_ms: Option<i64>,
    /// No longer written; see `uptime_offset_ms`.
    pub offset_exact: bool,
    /// Last wall-clock frame time seen in this boot, for clock-jump detection.
    pub last_wall_ms: Option<i64>,
    /// Clock jumps seen (wall stamps going backwards or far from our clock).
    pub clock_jumps: u32,
}

/// Kinds of security event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityKind {
    /// The tag did not verify.
    BadTag,
    /// A frame for one device arrived on another device's topic.
    DeviceMismatch,
    /// An unsigned JSON frame from a device that must sign.
    Unsigned,
    /// A frame reusing the `(device, boot, seq)` of a stored frame with
    /// different content: a replay of a forged or altered frame, or a device
    /// whose counters went back. The stored frame is kept.
    SequenceReuse,
}

/// Security events of one kind for one device in one minute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecurityRecord {
    /// Kind.
    pub kind: SecurityKind,
    /// How many in this minute.
    pub count: u64,
    /// Where the last one came from (topic or port).
    pub source: String,
    /// First time in this minute, ms.
    pub first_ms: i64,
    /// Last time in this minute, ms.
    pub last_ms: i64,
}

/// A stored reading with its identity, as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadingRow {
    /// Device.
    pub device: String,
    /// Boot counter.
    pub boot: u32,
    /// Sequence number.
    pub seq: u32,
    /// Index of the reading within its frame.
    pub idx: u16,
    /// The reading.
    #[serde(flatten)]
    pub reading: ReadingRecord,
}

/// Key helpers. Public so tools and tests can build exact keys.
pub mod key {
    use coldchain_proto::{DeviceId, FrameRef};

    /// `device ‖ 0`
    pub fn device_prefix(d: &DeviceId) -> Vec<u8> {
        let mut k = Vec::with_capacity(d.as_str().len() + 11);
        k.extend_from_slice(d.as_str().as_bytes());
        k.push(0);
        k
    }

    /// `device ‖ 0 ‖ boot ‖ seq`
    pub fn frame(d: &DeviceId, r: FrameRef) -> Vec<u8> {
        let mut k = device_prefix(d);
        k.extend_from_slice(&r.boot.to_be_bytes());
        k.extend_from_slice(&r.seq.to_be_bytes());
        k
    }

    /// `device ‖ 0 ‖ boot ‖ seq ‖ idx`
    pub fn item(d: &DeviceId, r: FrameRef, idx: u16) -> Vec<u8> {
        let mut k = frame(d, r);
        k.extend_from_slice(&idx.to_be_bytes());
        k
    }

    /// Splits an item key back into device, frame and index.
    pub fn parse_item(k: &[u8]) -> Option<(&str, FrameRef, u16)> {
        let (head, idx) = k.split_at_checked(k.len().checked_sub(2)?)?;
        let (dev, r) = parse_frame(head)?;
        Some((dev, r, u16::from_be_bytes(idx.try_into().ok()?)))
    }

    /// The device and frame of a [`frame`] key.
    pub fn parse_frame(k: &[u8]) -> Option<(&str, FrameRef)> {
        let z = k.iter().position(|&b| b == 0)?;
        let dev = std::str::from_utf8(&k[..z]).ok()?;
        let rest = &k[z + 1..];
        if rest.len() != 8 {
            return None;
        }
        let boot = u32::from_be_bytes(rest[0..4].try_into().ok()?);
        let seq = u32::from_be_bytes(rest[4..8].try_into().ok()?);
        Some((dev, FrameRef { boot, seq }))
    }
}

/// Staged writes to one tree: `(key, Some(value))` inserts, `(key, None)` removes.
type Staged = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// The readings staged for one frame: its key and `(idx, record)` pairs.
type StagedReadings = (Vec<u8>, Vec<(u16, ReadingRecord)>);

/// Writes staged by the ingest task and made durable together by [`Store::sync`].
#[derive(Debug, Default)]
pub struct WriteSet {
    pub(crate) readings: Vec<StagedReadings>,
    pub(crate) frames: Staged,
    pub(crate) events: Staged,
    pub(crate) gaps: Staged,
    pub(crate) devices: Staged,
    pub(crate) security: Staged,
    pub(crate) boot_clocks: Staged,
    /// Number of staged writes (for logging).
    pub ops: usize,
}

fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    // postcard into a Vec cannot fail for these types (no maps with non-string keys).
    postcard::to_stdvec(v).unwrap_or_default()
}

/// Whether `k` is `key::frame(d, r)`, without building it.
fn is_frame_key(k: &[u8], d: &DeviceId, r: FrameRef) -> bool {
    let dev = d.as_str().as_bytes();
    k.len() == dev.len() + 9
        && k[..dev.len()] == *dev
        && k[dev.len()] == 0
        && k[dev.len() + 1..dev.len() + 5] == r.boot.to_be_bytes()
        && k[dev.len() + 5..] == r.seq.to_be_bytes()
}

impl WriteSet {
    /// Stages a reading. A frame's readings are stored in its `frames`
    /// value, so stage every reading of a frame in the same write set as the
    /// frame itself ([`WriteSet::frame`]): applying it replaces what was
    /// stored for that frame. Readings staged without their frame are
    /// written in the layout of earlier versions (`frame_readings`), which
    /// is read only for a frame whose entry holds no readings of its own.
    pub fn reading(&mut self, d: &DeviceId, r: FrameRef, idx: u16, rec: &ReadingRecord) {
        match self.readings.last_mut() {
            Some((k, items)) if is_frame_key(k, d, r) => items.push((idx, rec.clone())),
            _ => {
                let mut items = Vec::with_capacity(coldchain_proto::MAX_READINGS);
                items.push((idx, rec.clone()));
                self.readings.push((key::frame(d, r), items));
            }
        }
        self.ops += 1;
    }
    /// Stages a frame's entry (its record and content digest); the readings
    /// staged for it in this write set are added when it is applied.
    pub fn frame(&mut self, d: &DeviceId, r: FrameRef, rec: &FrameRecord, digest: &FrameDigest) {
        let mut v = enc(rec);
        v.extend_from_slice(digest);
        self.frames.push((key::frame(d, r), Some(v)));
        self.ops += 1;
    }
    /// Stages an event.
    pub fn event(&mut self, d: &DeviceId, r: FrameRef, idx: u16, rec: &EventRecord) {
        self.events.push((key::item(d, r, idx), Some(enc(rec))));
        self.ops += 1;
    }
    /// Stages a gap (or its replacement after a late frame split it).
    pub fn gap(&mut self, d: &DeviceId, boot: u32, first: u32, rec: Option<&GapRecord>) {
        let k = key::frame(d, FrameRef { boot, seq: first });
        self.gaps.push((k, rec.map(enc)));
        self.ops += 1;
    }
    /// Stages a device's state.
    pub fn device(&mut self, d: &DeviceId, st: &DeviceState) {
        self.devices
            .push((d.as_str().as_bytes().to_vec(), Some(enc(st))));
        self.ops += 1;
    }
    /// Stages a boot's clock anchor.
    pub fn boot_clock(&mut self, d: &DeviceId, boot: u32, c: &BootClock) {
        let k = key::frame(d, FrameRef { boot, seq: 0 });
        self.boot_clocks.push((k, Some(enc(c))));
        self.ops += 1;
    }
    /// Stages a security record.
    pub fn security(&mut self, d: &DeviceId, minute: i64, rec: &SecurityRecord) {
        let mut k = key::device_prefix(d);
        k.extend_from_slice(&minute.to_be_bytes());
        self.security.push((k, Some(enc(rec))));
        self.ops += 1;
    }
}

/// The value stored for a frame's staged readings: sorted by index, the
/// last one staged winning for a repeated index.
fn frame_readings_value(mut items: Vec<(u16, ReadingRecord)>) -> Vec<u8> {
    if !items.is_sorted_by_key(|(i, _)| *i) || items.windows(2).any(|w| w[0].0 == w[1].0) {
        items.reverse();
        items.sort_by_key(|(i, _)| *i);
        items.dedup_by_key(|(i, _)| *i);
    }
    enc(&items)
}

/// A stored-frames notification: who stored them and which.
#[derive(Debug, Serialize, Deserialize)]
pub struct FrameNote {
    /// The daemon instance that stored them ([`KvStore::set_instance`]).
    pub from: String,
    /// `(device, boot, seq)` of each frame.
    pub frames: Vec<(String, u32, u32)>,
}

/// Longest notification payload sent (PostgreSQL's limit is 8000 bytes).
const NOTE_MAX: usize = 7000;

/// The notifications announcing the frames in `frames` (staged writes of
/// the `frames` tree), each under [`NOTE_MAX`] bytes.
fn frame_notes(from: &str, frames: &Staged) -> Vec<String> {
    let mut out = Vec::new();
    let mut note = FrameNote {
        from: from.to_string(),
        frames: Vec::new(),
    };
    let mut size = from.len() + 32;
    for (k, v) in frames {
        if v.is_none() {
            continue;
        }
        let Some((d, r)) = key::parse_frame(k) else {
            continue;
        };
        let entry = d.len() + 26;
        if size + entry > NOTE_MAX && !note.frames.is_empty() {
            out.push(serde_json::to_string(&note).unwrap_or_default());
            note.frames.clear();
            size = from.len() + 32;
        }
        size += entry;
        note.frames.push((d.to_string(), r.boot, r.seq));
    }
    if !note.frames.is_empty() {
        out.push(serde_json::to_string(&note).unwrap_or_default());
    }
    out
}

/// Applies staged writes to a tree: nothing for none, a plain write for one
/// (no batch marker in sled's log), a sled batch (atomic) for several.
fn apply_staged(tree: &Tree, staged: Staged) -> crate::kv::Result<()> {
    match staged.len() {
        0 => Ok(()),
        1 => {
            let Some((k, v)) = staged.into_iter().next() else {
                return Ok(());
            };
            match v {
                Some(v) => tree.insert(k, v).map(drop),
                None => tree.remove(k).map(drop),
            }
        }
        _ => tree.apply_batch(batch_of(staged)),
    }
}

/// Staged writes as one batch.
fn batch_of(staged: Staged) -> Batch {
    let mut b = Batch::default();
    for (k, v) in staged {
        match v {
            Some(v) => b.insert(k, v),
            None => b.remove(k),
        }
    }
    b
}

/// The storage interface the rest of the daemon uses.
pub trait Store: Send + Sync + 'static {
    /// Whether other daemons write the same database (PostgreSQL shared by
    /// a centre's instances): then what this daemon remembers of a device
    /// (its highest sequence stored) may be behind the store.
    fn shared(&self) -> bool {
        false
    }
    /// Applies staged writes (not yet durable).
    fn apply(&self, w: WriteSet) -> Result<(), StoreError>;
    /// Makes everything applied so far durable against a power cut.
    fn sync(&self) -> Result<(), StoreError>;
    /// A stored frame's dedupe entry and the digest of its content if it was
    /// stored with one (`None`: an entry from a version that kept none).
    fn frame(
        &self,
        d: &DeviceId,
        r: FrameRef,
    ) -> Result<Option<(FrameRecord, Option<FrameDigest>)>, StoreError>;
    /// A device's remembered state.
    fn device_state(&self, d: &DeviceId) -> Result<Option<DeviceState>, StoreError>;
    /// The gap of `boot` containing `seq`, if any: `(first, record)`.
    fn gap_containing(
        &self,
        d: &DeviceId,
        boot: u32,
        seq: u32,
    ) -> Result<Option<(u32, GapRecord)>, StoreError>;
    /// A security record for (device, minute).
    fn security(&self, d: &DeviceId, minute: i64) -> Result<Option<SecurityRecord>, StoreError>;
    /// Readings of a device in key order, after `after` (exclusive), at most `limit`.
    fn readings(
        &self,
        d: &DeviceId,
        after: Option<(FrameRef, u16)>,
        limit: usize,
    ) -> Result<Vec<ReadingRow>, StoreError>;
    /// Number of readings stored for a device.
    fn reading_count(&self, d: &DeviceId) -> Result<u64, StoreError>;
    /// All gaps of a device: `(boot, first, last)`.
    fn gaps(&self, d: &DeviceId) -> Result<Vec<(u32, u32, u32)>, StoreError>;
    /// Ids of every device that has sent data.
    fn known_devices(&self) -> Result<Vec<String>, StoreError>;
    /// Bytes the database takes on disk.
    fn size_on_disk(&self) -> Result<u64, StoreError>;
    /// The clock anchor of one boot of a device, if it sent uptime stamps.
    fn boot_clock(&self, d: &DeviceId, boot: u32) -> Result<Option<BootClock>, StoreError>;
}

/// The sled implementation of [`Store`].
#[derive(Debug, Clone)]
pub struct KvStore {
    path: PathBuf,
    db: Db,
    /// `frame_readings`.
    readings: Tree,
    frames: Tree,
    events: Tree,
    gaps: Tree,
    devices: Tree,
    security: Tree,
    boot_clocks: Tree,
    /// This daemon's instance name, in the notifications of stored frames.
    instance: std::sync::Arc<std::sync::OnceLock<String>>,
    /// On PostgreSQL: the writes applied since the last [`Store::sync`],
    /// committed by it in one transaction (see [`PgGroup`]).
    group: std::sync::Arc<std::sync::Mutex<PgGroup>>,
}

/// The ingest's group on PostgreSQL. sled's `apply` writes into its log and
/// `sync` makes the log durable; PostgreSQL makes each transaction durable
/// by itself, so one transaction per frame would be one WAL flush per
/// frame. Instead `apply` keeps the writes here and `sync` commits all of
/// them in one transaction (announcing their frames to the other instances
/// when it commits). Until then the point reads the ingest makes (a frame's
/// dedupe entry, a device's state, a security record, a boot's clock) see
/// them, as they would see sled's applied writes.
#[derive(Debug, Default)]
struct PgGroup {
    /// Per tree, in the order of [`PgGroup::TREES`]: the staged writes.
    trees: [Staged; 7],
    /// The latest staged write of each key, by tree index: what reads see.
    latest: HashMap<(usize, Vec<u8>), Option<Vec<u8>>>,
}

impl PgGroup {
    const READINGS: usize = 0;
    const EVENTS: usize = 1;
    const GAPS: usize = 2;
    const SECURITY: usize = 3;
    const BOOT_CLOCKS: usize = 4;
    const FRAMES: usize = 5;
    const DEVICES: usize = 6;

    fn stage(&mut self, tree: usize, staged: Staged) {
        for (k, v) in &staged {
            self.latest.insert((tree, k.clone()), v.clone());
        }
        self.trees[tree].extend(staged);
    }
}

/// sled's page cache when `store.cache_mb` is not set, bytes (see
/// daemon/DESIGN.md, "Storage").
pub const DEFAULT_CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// The sled configuration of every database the daemon opens (daemon/DESIGN.md,
/// "Storage"): `LowSpace` states the intent (sled 0.34.7 stores the mode but
/// never reads it; it is also sled's default), and the page cache is bounded
/// (sled's default is 1 GiB, which an edge box with a large store would fill).
fn sled_config(dir: &Path, cache_bytes: u64) -> sled::Config {
    sled::Config::new()
        .path(dir)
        .mode(sled::Mode::LowSpace)
        .cache_capacity(cache_bytes.max(1024 * 1024))
}

impl KvStore {
    /// Opens (or creates) the database in `dir` with the default cache.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, DEFAULT_CACHE_BYTES)
    }

    /// [`KvStore::open_with`], waiting up to 30 s for a lock this process
    /// has just released (after a compaction, or a restart of intake).
    pub fn open_waiting(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            match Self::open_with(dir, cache_bytes) {
                Err(StoreError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::WouldBlock
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                r => return r,
            }
        }
    }

    /// Opens (or creates) the database in `dir` with a page cache of
    /// `cache_bytes` (`store.cache_mb`).
    pub fn open_with(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.to_path_buf();
        let err = |source| StoreError::Sled {
            path: path.clone(),
            source,
        };
        let db = sled_config(dir, cache_bytes)
            .open()
            .map_err(|e| match e {
                e if is_lock_error(&e) => StoreError::Io {
                    path: dir.to_path_buf(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::WouldBlock,
                        "database is locked by another process (is the daemon running? use the HTTP API)",
                    ),
                },
                e => err(e.into()),
            })?;
        Self::from_db(Db::Sled(db), path)
    }

    /// The store the configuration names: PostgreSQL when
    /// `store.postgres_url` is set, else sled in `daemon.data_dir/db`
    /// (waiting for a lock this process has just released).
    pub fn open_configured(cfg: &crate::config::Config) -> Result<Self, StoreError> {
        match &cfg.store.postgres_url {
            Some(url) => Self::open_postgres(url, cfg.store.postgres_pool),
            None => Self::open_waiting(
                &cfg.daemon.data_dir.join("db"),
                cfg.store.cache_mb * 1024 * 1024,
            ),
        }
    }

    /// Names this daemon instance in the notifications of the frames it
    /// stores (so it can tell its own from others'). Set once.
    pub fn set_instance(&self, name: String) {
        let _ = self.instance.set(name);
    }

    /// A point read that sees the group not yet committed ([`PgGroup`]).
    fn point(&self, tree_ix: usize, tree: &Tree, k: &[u8]) -> Result<Option<IVec>, StoreError> {
        if let Db::Pg(_) = &self.db {
            let g = self.group.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(v) = g.latest.get(&(tree_ix, k.to_vec())) {
                return Ok(v.as_deref().map(IVec::from));
            }
        }
        tree.get(k).map_err(|e| self.sled_err(e))
    }

    /// Tells the other daemons sharing the database that shipment records
    /// changed here (a note without frames): each re-reads its shipments
    /// and evaluates them all, so the holder of a shipment's lease
    /// evaluates the new record (a close, a new ETA) at once rather than at
    /// its next full pass. Nothing to do on sled.
    pub fn announce_records_changed(&self) -> Result<(), StoreError> {
        if !self.is_postgres() {
            return Ok(());
        }
        let from = serde_json::Value::String(self.instance.get().cloned().unwrap_or_default());
        let note = format!("{{\"from\":{from},\"frames\":[]}}");
        self.db
            .apply_batches_notify(Vec::new(), vec![note])
            .map_err(|e| self.sled_err(e))
    }

    /// Whether this store is a PostgreSQL database.
    pub fn is_postgres(&self) -> bool {
        matches!(self.db, Db::Pg(_))
    }

    /// Connects to the PostgreSQL database at `url` (`store.postgres_url`)
    /// with up to `pool` connections, migrating its schema.
    pub fn open_postgres(url: &str, pool: usize) -> Result<Self, StoreError> {
        let path = PathBuf::from(crate::kv::pg_display_url(url));
        let db = crate::kv::PgDb::connect(url, pool).map_err(|source| StoreError::Sled {
            path: path.clone(),
            source,
        })?;
        Self::from_db(Db::Pg(db), path)
    }

    fn from_db(db: Db, path: PathBuf) -> Result<Self, StoreError> {
        let err = |source| StoreError::Sled {
            path: path.clone(),
            source,
        };
        let t = |name: &str| db.open_tree(name).map_err(err);
        let store = KvStore {
            readings: t("frame_readings")?,
            frames: t("frames")?,
            events: t("events")?,
            gaps: t("gaps")?,
            devices: t("devices")?,
            security: t("security")?,
            boot_clocks: t("boot_clocks")?,
            db: db.clone(),
            path: path.clone(),
            instance: Default::default(),
            group: Default::default(),
        };
        store.migrate_per_reading_tree()?;
        Ok(store)
    }

    /// Converts a `readings` tree of an earlier version (one entry per
    /// reading, key `device ‖ 0 ‖ boot ‖ seq ‖ idx`) to `frame_readings`,
    /// durably, then drops it. Idempotent: a crash midway converts again.
    fn migrate_per_reading_tree(&self) -> Result<(), StoreError> {
        const OLD: &[u8] = b"readings";
        if !self
            .db
            .tree_names()
            .map_err(|e| self.sled_err(e))?
            .iter()
            .any(|n| n == OLD)
        {
            return Ok(());
        }
        let old = self.db.open_tree(OLD).map_err(|e| self.sled_err(e))?;
        let mut group: Option<StagedReadings> = None;
        let mut n = 0u64;
        for kv in old.iter() {
            let (k, v) = kv.map_err(|e| self.sled_err(e))?;
            if k.len() < 11 {
                continue;
            }
            let (fk, idx) = k.split_at(k.len() - 2);
            let idx = u16::from_be_bytes([idx[0], idx[1]]);
            let rec: ReadingRecord = self.dec("readings", &v)?;
            n += 1;
            match &mut group {
                Some((gk, items)) if gk.as_slice() == fk => items.push((idx, rec)),
                _ => {
                    if let Some((gk, items)) = group.take() {
                        self.merge_frame_readings(gk, items)?;
                    }
                    group = Some((fk.to_vec(), vec![(idx, rec)]));
                }
            }
        }
        if let Some((gk, items)) = group.take() {
            self.merge_frame_readings(gk, items)?;
        }
        self.sync()?;
        self.db.drop_tree(OLD).map_err(|e| self.sled_err(e))?;
        self.sync()?;
        if n > 0 {
            tracing::info!(
                readings = n,
                "converted the readings tree to one value per frame"
            );
        }
        Ok(())
    }

    fn merge_frame_readings(
        &self,
        k: Vec<u8>,
        mut items: Vec<(u16, ReadingRecord)>,
    ) -> Result<(), StoreError> {
        if let Some(v) = self.readings.get(&k).map_err(|e| self.sled_err(e))? {
            let mut have: Vec<(u16, ReadingRecord)> = self.dec("frame_readings", &v)?;
            have.append(&mut items);
            items = have;
        }
        self.readings
            .insert(k, frame_readings_value(items))
            .map_err(|e| self.sled_err(e))?;
        Ok(())
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One stored frame's readings and events (with their stored times:
    /// uptime stamps are not placed), for incremental evaluation of what a
    /// commit just stored. Empty when the frame is not stored.
    pub fn frame_contents(
        &self,
        d: &DeviceId,
        r: FrameRef,
    ) -> Result<(Vec<ReadingRecord>, Vec<EventRecord>), StoreError> {
        let k = key::frame(d, r);
        let readings = match self.frames.get(&k).map_err(|e| self.sled_err(e))? {
            Some(v) => self
                .frame_items(&k, &v)?
                .into_iter()
                .map(|(_, r)| r)
                .collect(),
            None => Vec::new(),
        };
        let mut events = Vec::new();
        for v in self.events.scan_prefix(&k).values() {
            let v = v.map_err(|e| self.sled_err(e))?;
            events.push(self.dec::<EventRecord>("events", &v)?);
        }
        Ok((readings, events))
    }

    /// A reading's or event's wall time: as stored, or placed by its boot's
    /// clock anchor when it was stamped with uptime. `cache` holds anchors
    /// already read.
    pub fn place(
        &self,
        d: &DeviceId,
        boot: u32,
        time_ms: i64,
        source: TimeSource,
        cache: &mut std::collections::HashMap<(String, u32), Option<BootClock>>,
    ) -> Result<i64, StoreError> {
        if source != TimeSource::Uptime {
            return Ok(time_ms);
        }
        let k = (d.as_str().to_string(), boot);
        let c = match cache.get(&k) {
            Some(c) => *c,
            None => {
                let c = self.boot_clock(d, boot)?;
                cache.insert(k, c);
                c
            }
        };
        // The anchor is staged with the boot's first uptime-stamped frame,
        // in the same write set: a stored uptime stamp always has one.
        Ok(c.map_or(time_ms, |c| c.offset_ms().saturating_add(time_ms)))
    }

    /// The underlying database, for modules that keep their own trees.
    pub fn db(&self) -> &Db {
        &self.db
    }

    fn sled_err(&self, source: crate::kv::Error) -> StoreError {
        StoreError::Sled {
            path: self.path.clone(),
            source,
        }
    }

    /// The highest boot stored for a device (its frames and its remembered
    /// state), `None` if it never sent anything.
    pub fn highest_boot(&self, d: &DeviceId) -> Result<Option<u32>, StoreError> {
        let mut hi = self.device_state(d)?.map(|s| s.boot);
        if let Some(kv) = self.frames.scan_prefix(key::device_prefix(d)).next_back() {
            let (k, _) = kv.map_err(|e| self.sled_err(e))?;
            let n = k.len();
            if n >= 8 {
                let b = u32::from_be_bytes(k[n - 8..n - 4].try_into().unwrap_or([0; 4]));
                hi = Some(hi.map_or(b, |h| h.max(b)));
            }
        }
        Ok(hi)
    }

    /// A device's security records (one per kind and minute) of a shipment
    /// window: first seen from `lo_ms` to [`LATE_DUMP_MS`] after `hi_ms`, since
    /// a logger dumped at arrival brings its frames (bad ones too) then. The
    /// tamper alarm and the arrival report count the same records.
    pub fn security_in_window(
        &self,
        d: &DeviceId,
        lo_ms: i64,
        hi_ms: i64,
    ) -> Result<Vec<SecurityRecord>, StoreError> {
        let mut out = Vec::new();
        for v in self.security.scan_prefix(key::device_prefix(d)).values() {
            let v = v.map_err(|e| self.sled_err(e))?;
            let r: SecurityRecord = self.dec("security", &v)?;
            if (lo_ms..=hi_ms.saturating_add(LATE_DUMP_MS)).contains(&r.first_ms) {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Records that the database went over its disk budget at `at_ms`, unless
    /// an episode is already open. Durable on return (an alert's identity
    /// hangs on it).
    pub fn storage_full_begin(&self, at_ms: i64) -> Result<(), StoreError> {
        if self.storage_full_episodes()?.iter().any(|e| e.1.is_none()) {
            return Ok(());
        }
        let t = self
            .db
            .open_tree("storage_full")
            .map_err(|e| self.sled_err(e))?;
        t.insert(at_ms.to_be_bytes(), enc(&None::<i64>))
            .map_err(|e| self.sled_err(e))?;
        self.sync()
    }

    /// Closes the open over-budget episode, if any, at `at_ms`. Durable on return.
    pub fn storage_full_end(&self, at_ms: i64) -> Result<(), StoreError> {
        let t = self
            .db
            .open_tree("storage_full")
            .map_err(|e| self.sled_err(e))?;
        let mut closed = false;
        for (since, until) in self.storage_full_episodes()? {
            if until.is_none() {
                t.insert(since.to_be_bytes(), enc(&Some(at_ms.max(since))))
                    .map_err(|e| self.sled_err(e))?;
                closed = true;
            }
        }
        // Called at every start: an fsync only when an episode was closed.
        if closed { self.sync() } else { Ok(()) }
    }

    /// Every over-budget episode: `(since, until)`, `until` `None` while open.
    pub fn storage_full_episodes(&self) -> Result<Vec<(i64, Option<i64>)>, StoreError> {
        let t = self
            .db
            .open_tree("storage_full")
            .map_err(|e| self.sled_err(e))?;
        let mut out = Vec::new();
        for kv in t.iter() {
            let (k, v) = kv.map_err(|e| self.sled_err(e))?;
            let since = i64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8]));
            out.push((since, self.dec::<Option<i64>>("storage_full", &v)?));
        }
        Ok(out)
    }

    /// The readings of the frame stored under `k` with `frames` value `v`:
    /// inline, or in `frame_readings` for a frame stored by an earlier
    /// version (none there: none at all).
    pub fn frame_items(&self, k: &[u8], v: &[u8]) -> Result<Vec<(u16, ReadingRecord)>, StoreError> {
        let f = StoredFrame::parse(v).map_err(|e| self.decode_err("frames", e))?;
        match f.readings {
            Some(list) => self.dec("frames", list),
            None => match self.readings.get(k).map_err(|e| self.sled_err(e))? {
                Some(v) => self.dec("frame_readings", &v),
                None => Ok(Vec::new()),
            },
        }
    }

    fn decode_err(&self, tree: &'static str, e: postcard::Error) -> StoreError {
        StoreError::Decode {
            path: self.path.clone(),
            tree,
            detail: e.to_string(),
        }
    }

    fn dec<T: for<'a> Deserialize<'a>>(
        &self,
        tree: &'static str,
        v: &[u8],
    ) -> Result<T, StoreError> {
        postcard::from_bytes(v).map_err(|e| StoreError::Decode {
            path: self.path.clone(),
            tree,
            detail: e.to_string(),
        })
    }
}

/// Bytes the files below `dir` take: what the disk budget measures.
pub fn dir_size(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

/// Opens with `cfg`, waiting up to 30 s for a lock this process released
/// (sled lets go of its file lock from a background thread after the last
/// handle is dropped).
fn open_when_unlocked(cfg: &sled::Config) -> sled::Result<sled::Db> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match cfg.open() {
            Err(e) if is_lock_error(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            r => return r,
        }
    }
}

/// sled could not take its file lock: another handle (in this process or
/// another) still has the database open. sled 0.34 reports it as
/// `ErrorKind::Other` with this text.
fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io)
        if io.kind() == std::io::ErrorKind::WouldBlock
            || io.to_string().contains("could not acquire lock"))
}

fn sibling(dir: &Path, ext: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(ext);
    dir.with_file_name(name)
}

/// Finishes or undoes a compaction a crash interrupted (see [`compact`]).
/// Call before opening the database in `dir`.
pub fn recover_compaction(dir: &Path) -> Result<(), StoreError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { path, source }
    };
    let (building, done, old) = (
        sibling(dir, "compacting"),
        sibling(dir, "compacted"),
        sibling(dir, "old"),
    );
    if building.exists() {
        // Not complete: the database in `dir` is intact.
        std::fs::remove_dir_all(&building).map_err(io(&building))?;
    }
    if done.exists() {
        if dir.exists() {
            if old.exists() {
                std::fs::remove_dir_all(&old).map_err(io(&old))?;
            }
            std::fs::rename(dir, &old).map_err(io(dir))?;
        }
        std::fs::rename(&done, dir).map_err(io(&done))?;
        if let Some(parent) = dir.parent() {
            File::open(parent)
                .and_then(|f| f.sync_all())
                .map_err(io(parent))?;
        }
    }
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io(&old))?;
    }
    Ok(())
}

/// Rewrites the database in `dir` (closed: nothing else may have it open)
/// into a fresh one holding only its live data, and puts that in its place.
/// Returns the sizes before and after, bytes; when the copy is not smaller
/// it is discarded and both are the size before.
///
/// Why: sled 0.34 reuses the space of deleted data for new writes, but its
/// file only shrinks when the segments at its end are free, and data that
/// was written later (which retention keeps) sits there. After retention
/// purged old data the file stays as large as before (daemon/DESIGN.md,
/// "Storage", has the measurements), so a disk budget measured on the file
/// would never be met again. Copying the live data is the only way sled
/// 0.34 gives the space back.
///
/// Crash-safe: the copy is built in `<dir>.compacting`, made durable,
/// renamed to `<dir>.compacted` (complete), then swapped in;
/// [`recover_compaction`] finishes or discards an interrupted run. Needs
/// free disk space for the live data only.
pub fn compact(dir: &Path, cache_bytes: u64) -> Result<(u64, u64), StoreError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source: sled::Error| StoreError::Sled {
            path,
            source: source.into(),
        }
    };
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { path, source }
    };
    recover_compaction(dir)?;
    let before = dir_size(dir);
    let (building, done) = (sibling(dir, "compacting"), sibling(dir, "compacted"));
    let old = open_when_unlocked(&sled_config(dir, cache_bytes)).map_err(err(dir))?;
    // Ids handed out so far (alert ids, outbox and forward keys) must never
    // come again, and later ones must sort after them.
    let next_id = old.generate_id().map_err(err(dir))?;
    {
        let new =
            open_when_unlocked(&sled_config(&building, cache_bytes)).map_err(err(&building))?;
        for name in old.tree_names() {
            let src = old.open_tree(&name).map_err(err(dir))?;
            let dst = new.open_tree(&name).map_err(err(&building))?;
            let mut batch = sled::Batch::default();
            let mut n = 0;
            for kv in src.iter() {
                let (k, v) = kv.map_err(err(dir))?;
                batch.insert(k, v);
                n += 1;
                if n == 10_000 {
                    dst.apply_batch(std::mem::take(&mut batch))
                        .map_err(err(&building))?;
                    n = 0;
                }
            }
            dst.apply_batch(batch).map_err(err(&building))?;
        }
        new.flush().map_err(err(&building))?;
    }
    {
        // sled recovers its id counter as the last persisted value plus twice
        // the persist interval: opened with an interval of at least half
        // `next_id`, the copy starts at or above it; one id persists that
        // durably. The interval is a multiple of sled's default (1 000 000),
        // because a later open with the default one expects the persisted
        // counter to be a multiple of it.
        const SLED_IDGEN_INTERVAL: u64 = 1_000_000;
        let interval = (next_id / 2 + 1).div_ceil(SLED_IDGEN_INTERVAL) * SLED_IDGEN_INTERVAL;
        let cfg = sled_config(&building, cache_bytes).idgen_persist_interval(interval);
        let new = open_when_unlocked(&cfg).map_err(err(&building))?;
        let first = new.generate_id().map_err(err(&building))?;
        debug_assert!(first >= next_id);
        new.flush().map_err(err(&building))?;
    }
    drop(old);
    // A database that is nearly all live data comes out larger from a bulk
    // copy (measured: 18.5 MB in, 34.2 MB out: sled's segments fill unevenly
    // when a tree is built from scratch); keep whichever is smaller.
    let copied = dir_size(&building);
    if copied >= before {
        std::fs::remove_dir_all(&building).map_err(io(&building))?;
        return Ok((before, before));
    }
    fsync_tree(&building)?;
    std::fs::rename(&building, &done).map_err(io(&building))?;
    if let Some(parent) = dir.parent() {
        File::open(parent)
            .and_then(|f| f.sync_all())
            .map_err(io(parent))?;
    }
    recover_compaction(dir)?;
    Ok((before, dir_size(dir)))
}

/// fsyncs every regular file below `dir`, then `dir` and its subdirectories.
pub fn fsync_tree(dir: &Path) -> Result<(), StoreError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { path, source }
    };
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let p = entry.path();
        let ft = entry.file_type().map_err(io(&p))?;
        if ft.is_dir() {
            fsync_tree(&p)?;
        } else if ft.is_file() {
            File::open(&p).and_then(|f| f.sync_all()).map_err(io(&p))?;
        }
    }
    File::open(dir).and_then(|f| f.sync_all()).map_err(io(dir))
}

impl Store for KvStore {
    fn shared(&self) -> bool {
        self.is_postgres()
    }

    fn boot_clock(&self, d: &DeviceId, boot: u32) -> Result<Option<BootClock>, StoreError> {
        match self.point(
            PgGroup::BOOT_CLOCKS,
            &self.boot_clocks,
            &key::frame(d, FrameRef { boot, seq: 0 }),
        )? {
            Some(v) => Ok(Some(self.dec("boot_clocks", &v)?)),
            None => Ok(None),
        }
    }

    fn apply(&self, w: WriteSet) -> Result<(), StoreError> {
        // Order matters for crash consistency: sled recovers a prefix of its
        // log, so if a frame's dedupe entry survived, its readings did too.
        // One value per frame: a frame's readings are atomic by construction.
        let readings = if w.readings.windows(2).all(|p| p[0].0 < p[1].0) {
            w.readings
        } else {
            // The same frame staged more than once: merge in staging order.
            let mut rs = w.readings;
            rs.sort_by(|a, b| a.0.cmp(&b.0));
            let mut merged: Vec<StagedReadings> = Vec::with_capacity(rs.len());
            for (k, mut items) in rs {
                match merged.last_mut() {
                    Some((mk, m)) if *mk == k => m.append(&mut items),
                    _ => merged.push((k, items)),
                }
            }
            merged
        };
        // Each frame's readings go into its `frames` value (an empty list for
        // a frame without readings): one insert per frame.
        let mut readings: Vec<(Vec<u8>, Option<_>)> = readings
            .into_iter()
            .map(|(k, items)| (k, Some(items)))
            .collect();
        let mut frames = w.frames;
        for (k, v) in &mut frames {
            let Some(v) = v else { continue };
            let items = readings
                .binary_search_by(|(rk, _)| rk.cmp(k))
                .ok()
                .and_then(|i| readings[i].1.take())
                .unwrap_or_default();
            v.extend_from_slice(&frame_readings_value(items));
        }
        // Readings staged without their frame: the earlier layout.
        let unpaired: Staged = readings
            .into_iter()
            .filter_map(|(k, items)| Some((k, Some(frame_readings_value(items?)))))
            .collect();
        if let Db::Pg(_) = &self.db {
            // Kept for the group's transaction ([`PgGroup`]).
            let mut g = self.group.lock().unwrap_or_else(|e| e.into_inner());
            g.stage(PgGroup::READINGS, unpaired);
            g.stage(PgGroup::EVENTS, w.events);
            g.stage(PgGroup::GAPS, w.gaps);
            g.stage(PgGroup::SECURITY, w.security);
            g.stage(PgGroup::BOOT_CLOCKS, w.boot_clocks);
            g.stage(PgGroup::FRAMES, frames);
            g.stage(PgGroup::DEVICES, w.devices);
            return Ok(());
        }
        let e = |e| self.sled_err(e);
        apply_staged(&self.readings, unpaired).map_err(e)?;
        apply_staged(&self.events, w.events).map_err(e)?;
        apply_staged(&self.gaps, w.gaps).map_err(e)?;
        apply_staged(&self.security, w.security).map_err(e)?;
        apply_staged(&self.boot_clocks, w.boot_clocks).map_err(e)?;
        apply_staged(&self.frames, frames).map_err(e)?;
        apply_staged(&self.devices, w.devices).map_err(e)?;
        Ok(())
    }

    fn sync(&self) -> Result<(), StoreError> {
        if let Db::Pg(_) = &self.db {
            // The group in one transaction: durable when it returns. The
            // frames it stores are announced to the other daemons sharing
            // the database when it commits (their evaluators read them).
            // The lock is held until then, so a read never misses a write
            // that is neither in the group nor committed yet.
            let mut g = self.group.lock().unwrap_or_else(|e| e.into_inner());
            if g.latest.is_empty() {
                return Ok(());
            }
            let group = std::mem::take(&mut *g);
            let [
                readings,
                events,
                gaps,
                security,
                boot_clocks,
                frames,
                devices,
            ] = group.trees;
            let notes = frame_notes(self.instance.get().map_or("", String::as_str), &frames);
            return self
                .db
                .apply_batches_notify(
                    vec![
                        (&self.readings, batch_of(readings)),
                        (&self.events, batch_of(events)),
                        (&self.gaps, batch_of(gaps)),
                        (&self.security, batch_of(security)),
                        (&self.boot_clocks, batch_of(boot_clocks)),
                        (&self.frames, batch_of(frames)),
                        (&self.devices, batch_of(devices)),
                    ],
                    notes,
                )
                .map_err(|e| self.sled_err(e));
        }
        self.db.flush().map_err(|e| self.sled_err(e))?;
        fsync_tree(&self.path)
    }

    fn frame(
        &self,
        d: &DeviceId,
        r: FrameRef,
    ) -> Result<Option<(FrameRecord, Option<FrameDigest>)>, StoreError> {
        let Some(v) = self.point(PgGroup::FRAMES, &self.frames, &key::frame(d, r))? else {
            return Ok(None);
        };
        let f = StoredFrame::parse(&v).map_err(|e| StoreError::Decode {
            path: self.path.clone(),
            tree: "frames",
            detail: e.to_string(),
        })?;
        Ok(Some((f.record, f.digest)))
    }

    fn device_state(&self, d: &DeviceId) -> Result<Option<DeviceState>, StoreError> {
        match self.point(PgGroup::DEVICES, &self.devices, d.as_str().as_bytes())? {
            Some(v) => Ok(Some(self.dec("devices", &v)?)),
            None => Ok(None),
        }
    }

    fn gap_containing(
        &self,
        d: &DeviceId,
        boot: u32,
        seq: u32,
    ) -> Result<Option<(u32, GapRecord)>, StoreError> {
        let lo = key::frame(d, FrameRef { boot, seq: 0 });
        let hi = key::frame(d, FrameRef { boot, seq });
        if let Some(kv) = self.gaps.range(lo..=hi).next_back() {
            let (k, v) = kv.map_err(|e| self.sled_err(e))?;
            let first = u32::from_be_bytes(k[k.len() - 4..].try_into().unwrap_or([0; 4]));
            let rec: GapRecord = self.dec("gaps", &v)?;
            if first <= seq && seq <= rec.last {
                return Ok(Some((first, rec)));
            }
        }
        Ok(None)
    }

    fn security(&self, d: &DeviceId, minute: i64) -> Result<Option<SecurityRecord>, StoreError> {
        let mut k = key::device_prefix(d);
        k.extend_from_slice(&minute.to_be_bytes());
        match self.point(PgGroup::SECURITY, &self.security, &k)? {
            Some(v) => Ok(Some(self.dec("security", &v)?)),
            None => Ok(None),
        }
    }

    fn readings(
        &self,
        d: &DeviceId,
        after: Option<(FrameRef, u16)>,
        limit: usize,
    ) -> Result<Vec<ReadingRow>, StoreError> {
        let prefix = key::device_prefix(d);
        let mut end = prefix.clone();
        *end.last_mut().unwrap_or(&mut 0) = 1;
        let start = match after {
            Some((r, _)) => key::frame(d, r),
            None => prefix,
        };
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let mut clocks = std::collections::HashMap::new();
        for kv in self.frames.range(start..end) {
            let (k, v) = kv.map_err(|e| self.sled_err(e))?;
            let n = k.len();
            if n < 9 {
                continue;
            }
            let r = FrameRef {
                boot: u32::from_be_bytes(k[n - 8..n - 4].try_into().unwrap_or([0; 4])),
                seq: u32::from_be_bytes(k[n - 4..].try_into().unwrap_or([0; 4])),
            };
            let items = self.frame_items(&k, &v)?;
            for (idx, mut reading) in items {
                // Uptime stamps are placed on the wall clock as they are read.
                reading.time_ms =
                    self.place(d, r.boot, reading.time_ms, reading.time_source, &mut clocks)?;
                if after.is_some_and(|(ar, ai)| ar == r && idx <= ai) {
                    continue;
                }
                out.push(ReadingRow {
                    device: d.as_str().to_string(),
                    boot: r.boot,
                    seq: r.seq,
                    idx,
                    reading,
                });
                if out.len() == limit {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    fn reading_count(&self, d: &DeviceId) -> Result<u64, StoreError> {
        let mut n = 0;
        for kv in self.frames.scan_prefix(key::device_prefix(d)) {
            let (k, v) = kv.map_err(|e| self.sled_err(e))?;
            let f = StoredFrame::parse(&v).map_err(|e| self.decode_err("frames", e))?;
            let (tree, list) = match f.readings {
                Some(list) => ("frames", list.to_vec()),
                None => match self.readings.get(&k).map_err(|e| self.sled_err(e))? {
                    Some(v) => ("frame_readings", v.to_vec()),
                    None => continue,
                },
            };
            // The list starts with the number of readings (postcard varint).
            let (count, _) =
                postcard::take_from_bytes::<u64>(&list).map_err(|e| self.decode_err(tree, e))?;
            n += count;
        }
        Ok(n)
    }

    /// The gap records say where frames were found missing when a later one
    /// arrived; they are checked against the frames stored. Each ingest
    /// keeps its own view of a device's sequence, so where several daemons
    /// share the database (a centre on PostgreSQL), one may record a gap
    /// that another has filled, or two may record overlapping ones: the
    /// records are merged and every frame stored is taken out of them. A
    /// missing frame is always inside some record (the first ingest to see a
    /// frame past it records it, and a fill only ever cuts out the frame it
    /// stores), so what remains is exactly what is missing.
    fn gaps(&self, d: &DeviceId) -> Result<Vec<(u32, u32, u32)>, StoreError> {
        let mut recs = Vec::new();
        for kv in self.gaps.scan_prefix(key::device_prefix(d)) {
            let (k, v) = kv.map_err(|e| self.sled_err(e))?;
            let n = k.len();
            let boot = u32::from_be_bytes(k[n - 8..n - 4].try_into().unwrap_or([0; 4]));
            let first = u32::from_be_bytes(k[n - 4..].try_into().unwrap_or([0; 4]));
            let rec: GapRecord = self.dec("gaps", &v)?;
            recs.push((boot, first, rec.last.max(first)));
        }
        recs.sort_unstable();
        let mut merged: Vec<(u32, u32, u32)> = Vec::with_capacity(recs.len());
        for (boot, first, last) in recs {
            match merged.last_mut() {
                Some(m) if m.0 == boot && u64::from(first) <= u64::from(m.2) + 1 => {
                    m.2 = m.2.max(last);
                }
                _ => merged.push((boot, first, last)),
            }
        }
        let mut out = Vec::with_capacity(merged.len());
        for (boot, first, last) in merged {
            let lo = key::frame(d, FrameRef { boot, seq: first });
            let hi = key::frame(d, FrameRef { boot, seq: last });
            // The first sequence number not yet known to be stored.
            let mut next = u64::from(first);
            for k in self.frames.range(lo..=hi).keys() {
                let k = k.map_err(|e| self.sled_err(e))?;
                let Some((_, r)) = key::parse_frame(&k) else {
                    continue;
                };
                if u64::from(r.seq) > next {
                    out.push((boot, next as u32, r.seq - 1));
                }
                next = u64::from(r.seq) + 1;
            }
            if next <= u64::from(last) {
                out.push((boot, next as u32, last));
            }
        }
        Ok(out)
    }

    fn known_devices(&self) -> Result<Vec<String>, StoreError> {
        self.devices
            .iter()
            .keys()
            .map(|k| {
                k.map(|k| String::from_utf8_lossy(&k).into_owned())
                    .map_err(|e| self.sled_err(e))
            })
            .collect()
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.db.size_on_disk().map_err(|e| self.sled_err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coldchain_proto::{ChannelKind, Measurement};

    fn rec(v: i32) -> ReadingRecord {
        ReadingRecord {
            channel: 0,
            kind: ChannelKind::Rtd,
            value: Measurement::Valid(v),
            time_ms: 1_767_225_600_000 + i64::from(v),
            time_source: TimeSource::Device,
        }
    }

    fn dev(s: &str) -> DeviceId {
        DeviceId::new(s).unwrap()
    }

    fn ids(rows: &[ReadingRow]) -> Vec<(u32, u32, u16)> {
        rows.iter().map(|r| (r.boot, r.seq, r.idx)).collect()
    }

    fn frame_rec() -> FrameRecord {
        FrameRecord {
            received_ms: 1_767_225_600_000,
            time_ms: 1_767_225_600_000,
            time_source: TimeSource::Device,
            via: Via::Mqtt,
            signed: true,
        }
    }

    #[test]
    fn readings_page_by_frame_and_index_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = KvStore::open(dir.path()).unwrap();
        let (a, b) = (dev("a"), dev("ab"));
        for (boot, seq) in [(1, 2), (1, 0), (2, 0)] {
            let mut w = WriteSet::default();
            for i in 0..3u16 {
                w.reading(&a, FrameRef { boot, seq }, i, &rec(i32::from(i)));
            }
            w.frame(&a, FrameRef { boot, seq }, &frame_rec(), &[1; 16]);
            s.apply(w).unwrap();
        }
        let mut w = WriteSet::default();
        w.reading(&b, FrameRef { boot: 1, seq: 0 }, 0, &rec(9));
        w.frame(&b, FrameRef { boot: 1, seq: 0 }, &frame_rec(), &[2; 16]);
        s.apply(w).unwrap();

        assert_eq!(s.reading_count(&a).unwrap(), 9);
        assert_eq!(s.reading_count(&b).unwrap(), 1);
        let all = s.readings(&a, None, 100).unwrap();
        assert_eq!(
            ids(&all),
            vec![
                (1, 0, 0),
                (1, 0, 1),
                (1, 0, 2),
                (1, 2, 0),
                (1, 2, 1),
                (1, 2, 2),
                (2, 0, 0),
                (2, 0, 1),
                (2, 0, 2)
            ]
        );
        assert!(all.iter().all(|r| r.device == "a"));
        // Paging with a cursor inside a frame and at its end.
        let p = s
            .readings(&a, Some((FrameRef { boot: 1, seq: 0 }, 1)), 2)
            .unwrap();
        assert_eq!(ids(&p), vec![(1, 0, 2), (1, 2, 0)]);
        let p = s
            .readings(&a, Some((FrameRef { boot: 1, seq: 2 }, 2)), 10)
            .unwrap();
        assert_eq!(ids(&p), vec![(2, 0, 0), (2, 0, 1), (2, 0, 2)]);
        assert!(s.readings(&a, None, 0).unwrap().is_empty());
    }

    /// Gap records written from stale views of a device's sequence (as two
    /// daemons sharing a database write them) are checked against the
    /// frames stored: overlapping records count once, filled frames are
    /// taken out, and what is really missing stays.
    #[test]
    fn gaps_are_what_is_missing_from_the_frames_stored() {
        let dir = tempfile::tempdir().unwrap();
        let s = KvStore::open(dir.path()).unwrap();
        let a = dev("a");
        let mut w = WriteSet::default();
        for seq in (0..=12).filter(|q| ![4, 5, 9].contains(q)) {
            w.frame(&a, FrameRef { boot: 1, seq }, &frame_rec(), &[1; 16]);
        }
        w.frame(&a, FrameRef { boot: 2, seq: 3 }, &frame_rec(), &[1; 16]);
        let rec = |last| GapRecord {
            last,
            detected_ms: 1,
        };
        // One daemon saw seq 12 first: 0..=11 missing. Another, seq 6 after
        // 3: 4..=5. A third, seq 10 after 7: 8..=9.
        w.gap(&a, 1, 0, Some(&rec(11)));
        w.gap(&a, 1, 4, Some(&rec(5)));
        w.gap(&a, 1, 8, Some(&rec(9)));
        // Boot 2 started at seq 3.
        w.gap(&a, 2, 0, Some(&rec(2)));
        s.apply(w).unwrap();
        assert_eq!(s.gaps(&a).unwrap(), vec![(1, 4, 5), (1, 9, 9), (2, 0, 2)]);
    }

    #[test]
    fn restaging_an_index_keeps_the_last_value() {
        let dir = tempfile::tempdir().unwrap();
        let s = KvStore::open(dir.path()).unwrap();
        let a = dev("a");
        let f = FrameRef { boot: 1, seq: 1 };
        let mut w = WriteSet::default();
        w.reading(&a, f, 1, &rec(1));
        w.reading(&a, f, 0, &rec(0));
        w.reading(&a, f, 1, &rec(11));
        w.frame(&a, f, &frame_rec(), &[1; 16]);
        s.apply(w).unwrap();
        let rows = s.readings(&a, None, 10).unwrap();
        assert_eq!(ids(&rows), vec![(1, 1, 0), (1, 1, 1)]);
        assert_eq!(rows[1].reading, rec(11));
    }

    #[test]
    fn a_per_reading_tree_of_an_earlier_version_is_converted_once() {
        let dir = tempfile::tempdir().unwrap();
        let a = dev("dev-1");
        {
            let db = sled::open(dir.path()).unwrap();
            let old = db.open_tree("readings").unwrap();
            // That version's frame entries: the record alone.
            let frames = db.open_tree("frames").unwrap();
            for seq in 0..3u32 {
                frames
                    .insert(key::frame(&a, FrameRef { boot: 1, seq }), enc(&frame_rec()))
                    .unwrap();
                for idx in 0..4u16 {
                    old.insert(
                        key::item(&a, FrameRef { boot: 1, seq }, idx),
                        enc(&rec(seq as i32 * 10 + i32::from(idx))),
                    )
                    .unwrap();
                }
            }
            db.flush().unwrap();
        }
        let s = reopen(dir.path());
        assert!(
            !s.db()
                .tree_names()
                .unwrap()
                .iter()
                .any(|n| n == b"readings")
        );
        assert_eq!(s.reading_count(&a).unwrap(), 12);
        let rows = s.readings(&a, None, 100).unwrap();
        assert_eq!(rows.len(), 12);
        assert_eq!(rows[5].reading, rec(11));
        assert_eq!((rows[5].seq, rows[5].idx), (1, 1));
        drop(s);
        let s = reopen(dir.path());
        assert_eq!(s.reading_count(&a).unwrap(), 12);
    }

    /// A frame is one sled value: its record, digest and readings together
    /// (one insert per frame); nothing goes to `frame_readings`.
    #[test]
    fn a_frame_and_its_readings_are_one_value() {
        let dir = tempfile::tempdir().unwrap();
        let s = KvStore::open(dir.path()).unwrap();
        let a = dev("a");
        let mut w = WriteSet::default();
        for seq in 0..2u32 {
            let f = FrameRef { boot: 1, seq };
            for i in 0..3u16 {
                w.reading(&a, f, i, &rec(seq as i32 * 10 + i32::from(i)));
            }
            w.frame(&a, f, &frame_rec(), &[seq as u8; 16]);
        }
        // A frame without readings (events) has an empty list.
        w.frame(&a, FrameRef { boot: 1, seq: 2 }, &frame_rec(), &[9; 16]);
        s.apply(w).unwrap();
        assert_eq!(s.frames.len().unwrap(), 3);
        assert!(
            s.readings.is_empty(),
            "readings written apart from their frame"
        );
        let v = s
            .frames
            .get(key::frame(&a, FrameRef { boot: 1, seq: 1 }))
            .unwrap()
            .unwrap();
        let f = StoredFrame::parse(&v).unwrap();
        assert_eq!((f.record, f.digest), (frame_rec(), Some([1; 16])));
        let items: Vec<(u16, ReadingRecord)> = postcard::from_bytes(f.readings.unwrap()).unwrap();
        assert_eq!(items, vec![(0, rec(10)), (1, rec(11)), (2, rec(12))]);
        assert_eq!(s.reading_count(&a).unwrap(), 6);
        let rows = s.readings(&a, None, 100).unwrap();
        assert_eq!(
            ids(&rows)[..4],
            [(1, 0, 0), (1, 0, 1), (1, 0, 2), (1, 1, 0)]
        );
        assert_eq!(rows.len(), 6);
        assert_eq!(
            s.frame(&a, FrameRef { boot: 1, seq: 2 }).unwrap(),
            Some((frame_rec(), Some([9; 16])))
        );
    }

    /// A database written by earlier versions (readings in `frame_readings`,
    /// frame entries with a digest or without one) opens and reads as before,
    /// and frames stored after it (inline) read in key order with its own.
    #[test]
    fn frames_of_the_earlier_layouts_read_as_before() {
        let dir = tempfile::tempdir().unwrap();
        let a = dev("dev-1");
        let f = |seq| FrameRef { boot: 1, seq };
        {
            let db = sled::open(dir.path()).unwrap();
            let frames = db.open_tree("frames").unwrap();
            let readings = db.open_tree("frame_readings").unwrap();
            // seq 0: no digest (the oldest entries); seq 1: record ‖ digest.
            frames
                .insert(key::frame(&a, f(0)), enc(&frame_rec()))
                .unwrap();
            let mut v = enc(&frame_rec());
            v.extend_from_slice(&[5; 16]);
            frames.insert(key::frame(&a, f(1)), v).unwrap();
            for seq in 0..2u32 {
                let items: Vec<(u16, ReadingRecord)> = (0..2u16)
                    .map(|i| (i, rec(seq as i32 * 10 + i32::from(i))))
                    .collect();
                readings
                    .insert(key::frame(&a, f(seq)), enc(&items))
                    .unwrap();
            }
            db.flush().unwrap();
        }
        let s = reopen(dir.path());
        assert_eq!(s.frame(&a, f(0)).unwrap(), Some((frame_rec(), None)));
        assert_eq!(
            s.frame(&a, f(1)).unwrap(),
            Some((frame_rec(), Some([5; 16])))
        );
        assert_eq!(s.reading_count(&a).unwrap(), 4);
        let mut w = WriteSet::default();
        w.reading(&a, f(2), 0, &rec(20));
        w.frame(&a, f(2), &frame_rec(), &[6; 16]);
        s.apply(w).unwrap();
        let rows = s.readings(&a, None, 100).unwrap();
        assert_eq!(
            ids(&rows),
            vec![(1, 0, 0), (1, 0, 1), (1, 1, 0), (1, 1, 1), (1, 2, 0)]
        );
        assert_eq!(rows[3].reading, rec(11));
        assert_eq!(rows[4].reading, rec(20));
        assert_eq!(s.reading_count(&a).unwrap(), 5);
        // Paging from inside an old frame into the new one.
        let p = s.readings(&a, Some((f(1), 0)), 10).unwrap();
        assert_eq!(ids(&p), vec![(1, 1, 1), (1, 2, 0)]);
    }

    /// Opens a database just closed in this process: sled releases its file
    /// lock from a background thread a little after the last handle is gone.
    fn reopen(dir: &Path) -> KvStore {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            match KvStore::open(dir) {
                Ok(s) => return s,
                Err(e)
                    if e.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// Compaction keeps every tree's data, never hands out an id again, and
    /// gives back the space of deleted data (sled itself keeps the file's size).
    #[test]
    fn compaction_keeps_data_and_ids_and_shrinks_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("db");
        let last_id;
        {
            let db = sled_config(&p, DEFAULT_CACHE_BYTES).open().unwrap();
            let t = db.open_tree("t").unwrap();
            for i in 0..40_000u32 {
                t.insert(i.to_be_bytes(), vec![7u8; 200]).unwrap();
            }
            db.insert(b"default-key", b"v").unwrap();
            for _ in 0..10 {
                db.generate_id().unwrap();
            }
            last_id = db.generate_id().unwrap();
            db.flush().unwrap();
            for i in 0..36_000u32 {
                t.remove(i.to_be_bytes()).unwrap();
            }
            db.flush().unwrap();
        }
        let full = dir_size(&p);
        let (before, after) = compact(&p, DEFAULT_CACHE_BYTES).unwrap();
        assert!(before >= full / 2, "{before} {full}");
        assert!(
            after * 4 < before,
            "{before} -> {after}: nothing given back"
        );
        assert!(!sibling(&p, "compacting").exists() && !sibling(&p, "compacted").exists());
        let db = open_when_unlocked(&sled_config(&p, DEFAULT_CACHE_BYTES)).unwrap();
        let t = db.open_tree("t").unwrap();
        assert_eq!(t.len(), 4_000);
        assert_eq!(t.get(39_999u32.to_be_bytes()).unwrap().unwrap().len(), 200);
        assert_eq!(db.get(b"default-key").unwrap().unwrap().as_ref(), b"v");
        assert!(db.generate_id().unwrap() > last_id);
    }
}
