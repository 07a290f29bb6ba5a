//! Message types carried on the wire, in both directions.
//!
//! Every type here derives serde's traits; the same value encodes to postcard
//! (compact, what firmware sends) and to JSON (what people and third-party
//! devices send). Enums are externally tagged with `snake_case` names so the
//! JSON form reads naturally, e.g. `{"valid": -196250}` or
//! `{"fault": "open_circuit"}`.

use core::fmt;
use core::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

/// Maximum length of a device id, in bytes.
pub const DEVICE_ID_MAX: usize = 32;
/// Maximum number of readings in one [`Body::Readings`] batch.
pub const MAX_READINGS: usize = 32;
/// Maximum number of events in one [`Body::Events`] batch.
pub const MAX_EVENTS: usize = 16;
/// Maximum number of per-channel entries in [`Settings`].
pub const MAX_CHANNELS: usize = 8;

/// The earliest wall-clock time a synced device may report: 2020-01-01T00:00:00Z.
///
/// A [`Timestamp::Wall`] earlier than this is a device that thinks it is synced
/// but is not (the "1970" failure mode); receivers must treat it as invalid.
pub const MIN_WALL_UNIX_MS: u64 = 1_577_836_800_000;

/// A device identifier: 1 to [`DEVICE_ID_MAX`] bytes of `[A-Za-z0-9._-]`.
///
/// It appears in MQTT topics, so MQTT wildcards (`+`, `#`), `/` and anything
/// outside that set are refused when parsing and when deserialising.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct DeviceId(heapless::String<DEVICE_ID_MAX>);

/// Why a string is not a valid [`DeviceId`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceIdError {
    /// The id is empty.
    Empty,
    /// The id is longer than [`DEVICE_ID_MAX`] bytes.
    TooLong,
    /// The id contains a character outside `[A-Za-z0-9._-]`.
    BadChar(char),
}

impl fmt::Display for DeviceIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceIdError::Empty => f.write_str("device id is empty"),
            DeviceIdError::TooLong => {
                write!(f, "device id is longer than {DEVICE_ID_MAX} bytes")
            }
            DeviceIdError::BadChar(c) => write!(
                f,
                "device id contains {c:?}; only A-Z, a-z, 0-9, '.', '_' and '-' are allowed"
            ),
        }
    }
}

impl DeviceId {
    /// Parses and validates a device id.
    pub fn new(s: &str) -> Result<Self, DeviceIdError> {
        if s.is_empty() {
            return Err(DeviceIdError::Empty);
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(DeviceIdError::BadChar(c));
        }
        let mut out = heapless::String::new();
        out.push_str(s).map_err(|_| DeviceIdError::TooLong)?;
        Ok(DeviceId(out))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl FromStr for DeviceId {
    type Err = DeviceIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DeviceId::new(s)
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({:?})", self.as_str())
    }
}

impl<'de> Deserialize<'de> for DeviceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = DeviceId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a device id of 1 to {DEVICE_ID_MAX} bytes")
            }
            // Any length is read, so the error names the limit (a bounded
            // string would only say "invalid length").
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DeviceId, E> {
                DeviceId::new(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// Deserialises a sequence of at most `N` items; a longer one is an error that
/// names the count and the limit ("frame has 33 readings; at most 32 per
/// frame") instead of serde's "invalid length 33, expected a sequence".
struct Bounded<T, const N: usize> {
    /// Plural noun for the items, e.g. "readings".
    what: &'static str,
    /// What holds them, e.g. "frame".
    holder: &'static str,
    _t: core::marker::PhantomData<T>,
}

impl<'de, T: Deserialize<'de>, const N: usize> serde::de::Visitor<'de> for Bounded<T, N> {
    type Value = heapless::Vec<T, N>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a sequence of at most {N} {}", self.what)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let too_many = |n: usize| {
            A::Error::custom(format_args!(
                "{} has {n} {}; at most {N} per {}",
                self.holder, self.what, self.holder
            ))
        };
        use serde::de::Error;
        // Binary encodings announce the length first.
        if let Some(n) = seq.size_hint()
            && n > N
        {
            return Err(too_many(n));
        }
        let mut out = heapless::Vec::new();
        while let Some(item) = seq.next_element::<T>()? {
            if out.push(item).is_err() {
                // Count the rest without keeping it (self-describing formats).
                let mut n = N + 1;
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    n += 1;
                }
                return Err(too_many(n));
            }
        }
        Ok(out)
    }
}

fn de_readings<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<heapless::Vec<Reading, MAX_READINGS>, D::Error> {
    d.deserialize_seq(Bounded {
        what: "readings",
        holder: "frame",
        _t: core::marker::PhantomData,
    })
}

fn de_events<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<heapless::Vec<Event, MAX_EVENTS>, D::Error> {
    d.deserialize_seq(Bounded {
        what: "events",
        holder: "frame",
        _t: core::marker::PhantomData,
    })
}

fn de_channels<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<heapless::Vec<ChannelSettings, MAX_CHANNELS>, D::Error> {
    d.deserialize_seq(Bounded {
        what: "channels",
        holder: "settings",
        _t: core::marker::PhantomData,
    })
}

/// When a frame was made, by the device's own clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Timestamp {
    /// The device's clock was synced: milliseconds since the Unix epoch (UTC).
    #[serde(rename = "unix_ms")]
    Wall(u64),
    /// The device's clock was not synced: milliseconds since this boot.
    /// Never to be shown as a calendar date; the receiver estimates one.
    #[serde(rename = "uptime_ms")]
    Uptime(u64),
}

impl Timestamp {
    /// True for a wall-clock stamp that is too early to be real (see [`MIN_WALL_UNIX_MS`]).
    pub fn is_implausible_wall(&self) -> bool {
        matches!(self, Timestamp::Wall(ms) if *ms < MIN_WALL_UNIX_MS)
    }
}

/// A frame sent by a device. Identified on the wire by `(device, boot, seq)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    /// The device that made the frame.
    pub device: DeviceId,
    /// Boot counter, kept in the device's flash; increments at every start.
    pub boot: u32,
    /// Sequence number within the boot, from 0; one per frame.
    pub seq: u32,
    /// When the frame's first item was taken.
    pub time: Timestamp,
    /// What the frame carries.
    pub body: Body,
}

impl Frame {
    /// The `(boot, seq)` pair that identifies this frame for its device.
    pub fn frame_ref(&self) -> FrameRef {
        FrameRef {
            boot: self.boot,
            seq: self.seq,
        }
    }
}

/// The contents of a [`Frame`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Body {
    /// A batch of sensor readings.
    Readings(#[serde(deserialize_with = "de_readings")] heapless::Vec<Reading, MAX_READINGS>),
    /// A batch of events.
    Events(#[serde(deserialize_with = "de_events")] heapless::Vec<Event, MAX_EVENTS>),
    /// A status heartbeat.
    Status(Status),
}

/// What kind of sensor a channel is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// Platinum RTD probe (PT100/PT1000), milli-degrees Celsius.
    Rtd,
    /// Thermocouple, milli-degrees Celsius.
    Thermocouple,
    /// Ambient air temperature, milli-degrees Celsius.
    Ambient,
    /// Relative humidity, milli-percent.
    Humidity,
}

impl ChannelKind {
    /// The physical range of the channel kind, milli-units, inclusive: what the
    /// sensor can measure at all. A value outside it is not a measurement (an
    /// open RTD front end reporting -242 °C, a power-on or error sentinel): it
    /// is a [`FaultKind::OutOfRange`] fault, never a temperature. Firmware and
    /// daemon apply the same table.
    pub const fn plausible_range(self) -> (i32, i32) {
        match self {
            // Callendar-Van Dusen range of IEC 60751.
            ChannelKind::Rtd => (-200_000, 850_000),
            // Types T/K as linearised by the MAX31856.
            ChannelKind::Thermocouple => (-200_000, 1_372_000),
            // SHT4x / DS18B20 together: -55..+130 °C.
            ChannelKind::Ambient => (-55_000, 130_000),
            ChannelKind::Humidity => (0, 100_000),
        }
    }

    /// True when `milli` is inside [`ChannelKind::plausible_range`].
    pub const fn is_plausible(self, milli: i32) -> bool {
        let (lo, hi) = self.plausible_range();
        milli >= lo && milli <= hi
    }

    /// `m` as it may be used: a valid value outside the physical range
    /// becomes a [`FaultKind::OutOfRange`] fault; faults and plausible values
    /// are unchanged.
    pub const fn checked(self, m: Measurement) -> Measurement {
        match m {
            Measurement::Valid(v) if !self.is_plausible(v) => {
                Measurement::Fault(FaultKind::OutOfRange)
            }
            m => m,
        }
    }
}

/// Why a channel produced no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The sensor or its wiring is open (disconnected probe).
    OpenCircuit,
    /// The sensor or its wiring is shorted.
    Short,
    /// The converted value is outside what the sensor can physically measure.
    OutOfRange,
    /// The bus transfer failed its CRC.
    Crc,
    /// The sensor did not answer.
    NoResponse,
    /// The sensor answers but its value has not moved for longer than a real
    /// probe's noise allows (stuck-sensor detection on the device). Appended
    /// last: the postcard encoding of the other kinds is unchanged.
    Stuck,
}

/// The outcome of one sample: a value or a fault, never both.
///
/// A fault carries no number, so a disconnected probe cannot be mistaken for a
/// temperature anywhere downstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measurement {
    /// A valid value in milli-units (m°C for temperatures, m%RH for humidity).
    Valid(i32),
    /// The channel is faulted.
    Fault(FaultKind),
}

/// One sample of one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reading {
    /// The device's channel number.
    pub channel: u8,
    /// What the channel measures.
    pub kind: ChannelKind,
    /// Milliseconds after the frame's timestamp at which the sample was taken.
    pub dt_ms: u32,
    /// The value or the fault.
    pub value: Measurement,
}

/// Something that happened to the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Milliseconds after the frame's timestamp at which it happened.
    pub dt_ms: u32,
    /// What happened.
    pub kind: EventKind,
}

/// The kinds of [`Event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The lid was opened.
    LidOpened,
    /// The lid was closed.
    LidClosed,
    /// The container tilted beyond the configured limit; angle from vertical in degrees.
    Tilt {
        /// Angle from vertical, degrees.
        angle_deg: u8,
    },
    /// The container came back within the tilt limit.
    TiltCleared,
    /// A shock above the configured threshold; peak in milli-g.
    Shock {
        /// Peak acceleration, milli-g.
        peak_mg: u32,
    },
    /// The battery fell below its warning level.
    BatteryLow {
        /// Battery voltage, millivolts.
        mv: u16,
    },
    /// The device started.
    Boot,
    /// The device's clock was set; `uptime_ms` is the uptime at that moment, so a
    /// receiver can place earlier uptime stamps of this boot on the wall clock.
    ClockSynced {
        /// Uptime at the moment of sync, milliseconds.
        uptime_ms: u64,
        /// Wall clock set at that moment, ms since the Unix epoch.
        unix_ms: u64,
    },
    /// The on-device queue was full and frames were dropped.
    QueueOverflow {
        /// Number of frames dropped.
        dropped: u32,
    },
}

/// A status heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Battery voltage, millivolts.
    pub battery_mv: u16,
    /// Radio signal strength in dBm, if the uplink has one.
    pub signal_dbm: Option<i16>,
    /// Frames waiting in the device's flash queue.
    pub queued: u32,
    /// Frames dropped because the queue was full, since the previous status frame.
    pub dropped: u32,
}

/// Identifies a frame of a device: boot counter and sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FrameRef {
    /// Boot counter.
    pub boot: u32,
    /// Sequence number within the boot.
    pub seq: u32,
}

/// Per-channel settings pushed to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelSettings {
    /// The channel number.
    pub channel: u8,
    /// Normal sampling interval, seconds.
    pub interval_s: u32,
    /// Sampling interval while beyond a threshold, seconds.
    pub alarm_interval_s: u32,
    /// Switch to the alarm interval above this value (milli-units), if set.
    pub high_milli: Option<i32>,
    /// Switch to the alarm interval below this value (milli-units), if set.
    pub low_milli: Option<i32>,
}

/// Settings pushed to a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Monotonic version; a device ignores settings older than what it has.
    pub version: u32,
    /// Seconds between uplink attempts (batches are sent at least this often).
    pub upload_interval_s: u32,
    /// Seconds between status heartbeats.
    pub status_interval_s: u32,
    /// Tilt limit from vertical, degrees.
    pub tilt_limit_deg: u8,
    /// Per-channel sampling settings.
    #[serde(deserialize_with = "de_channels")]
    pub channels: heapless::Vec<ChannelSettings, MAX_CHANNELS>,
}

/// Why a frame was refused by the receiver on the serial link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NackReason {
    /// The frame did not decode.
    Malformed,
    /// The tag did not verify.
    BadTag,
    /// The device is not registered with the receiver.
    UnknownDevice,
    /// The receiver could not store it now; resend later.
    Busy,
}

/// A message to a device.
#[allow(
    clippy::large_enum_variant,
    reason = "no allocator on the device: settings travel inline, and acks are rare next to them"
)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Downlink {
    /// Current time and settings. On MQTT it is published retained on the
    /// device's down topic and refreshed periodically; a device must only set
    /// its clock from a copy that was not delivered as a stale retained message
    /// older than its own tolerance (see `proto/README.md`).
    Sync {
        /// Wall-clock time when the message was made, ms since the Unix epoch.
        unix_ms: u64,
        /// The device's settings.
        settings: Settings,
    },
    /// The frame is durably stored by the receiver: the device may drop it.
    Ack(FrameRef),
    /// The frame was refused; the device keeps it unless the reason is final.
    Nack {
        /// Which frame.
        frame: FrameRef,
        /// Why.
        reason: NackReason,
    },
}
