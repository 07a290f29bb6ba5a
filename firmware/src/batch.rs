//! Batching samples into frames, numbering them per boot, and signing them.
//!
//! A [`Batch`] collects readings (or events) with their uptime; the
//! [`FrameBuilder`] turns a batch into a [`Frame`] with the next sequence
//! number of this boot and the right [`Timestamp`], and signs it with
//! [`coldchain_proto::codec::encode_signed`].

use coldchain_proto::codec::{CodecError, MAX_SIGNED_LEN, encode_signed};
use coldchain_proto::{
    Body, ChannelKind, DeviceId, DeviceKey, Event, EventKind, Frame, FrameRef, MAX_EVENTS,
    MAX_READINGS, Measurement, Reading, Status,
};

use crate::clock::TimeBase;

/// The batch cannot take this item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchError {
    /// The batch holds its maximum number of items: seal it first.
    Full,
    /// The item is more than `u32::MAX` ms after the batch's first item
    /// (`dt_ms` would not fit), or before it.
    OutOfWindow,
}

/// Items that carry their offset from the frame's time.
pub trait Stamped: Copy {
    /// Sets the offset after the frame's time.
    fn set_dt(&mut self, dt_ms: u32);
}
impl Stamped for Reading {
    fn set_dt(&mut self, dt_ms: u32) {
        self.dt_ms = dt_ms;
    }
}
impl Stamped for Event {
    fn set_dt(&mut self, dt_ms: u32) {
        self.dt_ms = dt_ms;
    }
}

/// Items waiting to go into one frame, with the uptime of the first.
#[derive(Debug, Clone)]
pub struct Batch<T, const N: usize> {
    start_ms: Option<u64>,
    items: heapless::Vec<T, N>,
}

/// A batch of readings, up to [`MAX_READINGS`].
pub type ReadingBatch = Batch<Reading, MAX_READINGS>;
/// A batch of events, up to [`MAX_EVENTS`].
pub type EventBatch = Batch<Event, MAX_EVENTS>;

impl<T: Stamped, const N: usize> Default for Batch<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Stamped, const N: usize> Batch<T, N> {
    /// An empty batch.
    pub const fn new() -> Self {
        Batch {
            start_ms: None,
            items: heapless::Vec::new(),
        }
    }

    /// Adds an item taken at `uptime_ms`; its `dt_ms` is set here.
    pub fn push(&mut self, uptime_ms: u64, mut item: T) -> Result<(), BatchError> {
        if self.items.is_full() {
            return Err(BatchError::Full);
        }
        let start = self.start_ms.unwrap_or(uptime_ms);
        let dt = uptime_ms
            .checked_sub(start)
            .and_then(|d| u32::try_from(d).ok())
            .ok_or(BatchError::OutOfWindow)?;
        item.set_dt(dt);
        // Cannot fail: fullness checked above.
        let _ = self.items.push(item);
        self.start_ms = Some(start);
        Ok(())
    }

    /// Number of items held.
    pub fn len(&self) -> usize {
        self.items.len()
    }
    /// True when the batch holds nothing.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    /// True when no further item fits.
    pub fn is_full(&self) -> bool {
        self.items.is_full()
    }
    /// Uptime of the first item, if any.
    pub fn start_ms(&self) -> Option<u64> {
        self.start_ms
    }
    /// The items, in the order they were pushed.
    pub fn items(&self) -> &[T] {
        &self.items
    }

    fn take(&mut self) -> Option<(u64, heapless::Vec<T, N>)> {
        let start = self.start_ms.take()?;
        Some((start, core::mem::take(&mut self.items)))
    }
}

impl ReadingBatch {
    /// Convenience: pushes a reading of `channel`.
    pub fn push_reading(
        &mut self,
        uptime_ms: u64,
        channel: u8,
        kind: ChannelKind,
        value: Measurement,
    ) -> Result<(), BatchError> {
        self.push(
            uptime_ms,
            Reading {
                channel,
                kind,
                dt_ms: 0,
                value,
            },
        )
    }
}

impl EventBatch {
    /// Convenience: pushes an event.
    pub fn push_event(&mut self, uptime_ms: u64, kind: EventKind) -> Result<(), BatchError> {
        self.push(uptime_ms, Event { dt_ms: 0, kind })
    }
}

/// A signed frame as it goes to the queue and the uplink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedFrame {
    /// Which frame.
    pub frame_ref: FrameRef,
    /// `postcard(frame) ‖ tag`.
    pub bytes: heapless::Vec<u8, MAX_SIGNED_LEN>,
}

/// Makes this boot's frames: numbers them from 0 and signs them.
#[derive(Debug, Clone)]
pub struct FrameBuilder {
    device: DeviceId,
    key: DeviceKey,
    boot: u32,
    next_seq: u32,
}

impl FrameBuilder {
    /// A builder for boot number `boot` (from the boot counter in flash).
    pub fn new(device: DeviceId, key: DeviceKey, boot: u32) -> Self {
        FrameBuilder {
            device,
            key,
            boot,
            next_seq: 0,
        }
    }

    /// The device id.
    pub fn device(&self) -> &DeviceId {
        &self.device
    }
    /// The device key.
    pub fn key(&self) -> &DeviceKey {
        &self.key
    }
    /// This boot's number.
    pub fn boot(&self) -> u32 {
        self.boot
    }
    /// The sequence number the next frame will get.
    pub fn next_seq(&self) -> u32 {
        self.next_seq
    }

    fn frame(&mut self, time_ms: u64, tb: &TimeBase, body: Body) -> Frame {
        let seq = self.next_seq;
        // 2^32 frames in one boot is over a century at one frame a second.
        self.next_seq = self.next_seq.wrapping_add(1);
        Frame {
            device: self.device.clone(),
            boot: self.boot,
            seq,
            time: tb.stamp(time_ms),
            body,
        }
    }

    /// Seals the readings of `batch` into the next frame; `None` if it is empty.
    /// The batch is left empty.
    pub fn readings(&mut self, batch: &mut ReadingBatch, tb: &TimeBase) -> Option<Frame> {
        let (start, items) = batch.take()?;
        Some(self.frame(start, tb, Body::Readings(items)))
    }

    /// Seals the events of `batch` into the next frame; `None` if it is empty.
    pub fn events(&mut self, batch: &mut EventBatch, tb: &TimeBase) -> Option<Frame> {
        let (start, items) = batch.take()?;
        Some(self.frame(start, tb, Body::Events(items)))
    }

    /// A status frame taken at `uptime_ms`.
    pub fn status(&mut self, uptime_ms: u64, tb: &TimeBase, status: Status) -> Frame {
        self.frame(uptime_ms, tb, Body::Status(status))
    }

    /// Signs `frame` with the device key.
    pub fn sign(&self, frame: &Frame) -> Result<SignedFrame, CodecError> {
        let mut buf = [0u8; MAX_SIGNED_LEN];
        let bytes = encode_signed(frame, &self.key, &mut buf)?;
        let mut out = heapless::Vec::new();
        out.extend_from_slice(bytes)
            .map_err(|_| CodecError::BufferFull)?;
        Ok(SignedFrame {
            frame_ref: frame.frame_ref(),
            bytes: out,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coldchain_proto::Timestamp;
    use coldchain_proto::codec::decode_signed;

    fn builder() -> FrameBuilder {
        FrameBuilder::new(
            DeviceId::new("sim-0001").unwrap(),
            DeviceKey::from_bytes([7; 32]),
            3,
        )
    }

    #[test]
    fn readings_get_offsets_from_the_first_and_seq_counts_per_boot() {
        let mut fb = builder();
        let tb = TimeBase::unsynced();
        let mut b = ReadingBatch::new();
        b.push_reading(5_000, 0, ChannelKind::Rtd, Measurement::Valid(-196_000))
            .unwrap();
        b.push_reading(65_000, 0, ChannelKind::Rtd, Measurement::Valid(-195_875))
            .unwrap();
        let f = fb.readings(&mut b, &tb).unwrap();
        assert!(b.is_empty());
        assert_eq!((f.boot, f.seq), (3, 0));
        assert_eq!(f.time, Timestamp::Uptime(5_000));
        let Body::Readings(r) = &f.body else {
            panic!("not readings")
        };
        assert_eq!(r[0].dt_ms, 0);
        assert_eq!(r[1].dt_ms, 60_000);
        assert!(fb.readings(&mut b, &tb).is_none(), "empty batch, no frame");
        let f2 = fb.status(
            70_000,
            &tb,
            Status {
                battery_mv: 3700,
                signal_dbm: None,
                queued: 0,
                dropped: 0,
            },
        );
        assert_eq!(f2.seq, 1);
        assert_eq!(fb.next_seq(), 2);
    }

    #[test]
    fn signed_frame_verifies_with_the_device_key_only() {
        let mut fb = builder();
        let mut tb = TimeBase::unsynced();
        tb.sync(0, 1_763_769_600_000, false).unwrap();
        let mut b = EventBatch::new();
        b.push_event(1_000, EventKind::Boot).unwrap();
        let f = fb.events(&mut b, &tb).unwrap();
        assert_eq!(f.time, Timestamp::Wall(1_763_769_601_000));
        let s = fb.sign(&f).unwrap();
        assert_eq!(s.frame_ref, FrameRef { boot: 3, seq: 0 });
        let back: Frame = decode_signed(&s.bytes, fb.key()).unwrap();
        assert_eq!(back, f);
        assert!(decode_signed::<Frame>(&s.bytes, &DeviceKey::from_bytes([8; 32])).is_err());
    }

    #[test]
    fn full_batch_and_backwards_time_are_refused() {
        let mut b = EventBatch::new();
        for i in 0..MAX_EVENTS as u64 {
            b.push_event(100 + i, EventKind::LidOpened).unwrap();
        }
        assert_eq!(
            b.push_event(200, EventKind::LidClosed),
            Err(BatchError::Full)
        );
        let mut b = EventBatch::new();
        b.push_event(100, EventKind::LidOpened).unwrap();
        assert_eq!(
            b.push_event(99, EventKind::LidClosed),
            Err(BatchError::OutOfWindow)
        );
        assert_eq!(
            b.push_event(100 + u32::MAX as u64 + 1, EventKind::LidClosed),
            Err(BatchError::OutOfWindow)
        );
    }

    #[test]
    fn worst_case_frame_fits_the_signed_limit() {
        let mut fb = builder();
        let tb = TimeBase::unsynced();
        let mut b = ReadingBatch::new();
        for i in 0..MAX_READINGS as u64 {
            b.push_reading(
                u64::MAX / 2 + i * (u32::MAX as u64 / 64),
                255,
                ChannelKind::Humidity,
                Measurement::Valid(i32::MIN),
            )
            .unwrap();
        }
        let f = fb.readings(&mut b, &tb).unwrap();
        assert!(fb.sign(&f).is_ok());
    }
}
