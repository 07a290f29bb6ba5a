//! Storing frames in the flash queue, and reporting what a full flash dropped.
//!
//! The queue drops its oldest frames when the flash is full
//! ([`crate::queue`]). That is never silent: [`Recorder::store`] follows any
//! store that dropped frames with a `QueueOverflow { dropped }` event frame,
//! stored right after it (the newest frame, so the last to be dropped), and
//! counts the drops for the next status frame ([`Recorder::status`],
//! `Status::dropped`: frames dropped since the previous status frame).
//!
//! A report may itself be dropped later: the queue then counts what it
//! reported as unreported again ([`Outbox::push_report`]), so the next report
//! carries it. The counts of the reports that reach the receiver add up to
//! exactly the frames dropped. If storing a report drops frames, another
//! report follows, up to [`MAX_REPORTS`] per store; anything left stays
//! counted in the queue for the next store. The counts live in RAM: a power
//! cut before they are stored loses them, and the receiver still sees the
//! gap in `seq` (a gap is never mistaken for data).
//!
//! One frame may be counted that did arrive: one dropped while its PUBLISH
//! waited for the PUBACK (the uplink's ack then finds nothing to remove).

use coldchain_proto::codec::CodecError;
use coldchain_proto::{EventKind, Frame, FrameRef, Status};
use embedded_storage_async::nor_flash::MultiwriteNorFlash;
use sequential_storage::cache::CacheImpl;

use crate::batch::{EventBatch, FrameBuilder};
use crate::clock::TimeBase;
use crate::queue::{self, ENTRY_BUF_LEN, Outbox};

/// Overflow event frames one [`Recorder::store`] writes at most.
pub const MAX_REPORTS: usize = 3;

/// Why a frame was not stored.
#[derive(Debug)]
pub enum StoreError<E> {
    /// It could not be signed (too large).
    Sign(CodecError),
    /// The flash queue failed.
    Queue(queue::Error<E>),
}

impl<E> From<queue::Error<E>> for StoreError<E> {
    fn from(e: queue::Error<E>) -> Self {
        StoreError::Queue(e)
    }
}

/// What [`Recorder::store`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The frame stored.
    pub frame_ref: FrameRef,
    /// Frames this store removed from the full flash (oldest first).
    pub removed: u32,
    /// `QueueOverflow` event frames stored after it, with the count each carries.
    pub overflow: heapless::Vec<(FrameRef, u32), MAX_REPORTS>,
}

impl Stored {
    /// The counts of the reports this store wrote.
    pub fn dropped(&self) -> u32 {
        self.overflow.iter().map(|(_, n)| n).sum()
    }
}

/// The drop count waiting for the next status frame.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recorder {
    since_status: u32,
}

impl Recorder {
    /// Nothing dropped yet.
    pub const fn new() -> Self {
        Recorder { since_status: 0 }
    }

    /// Frames dropped since the last status frame (reported in events already).
    pub fn dropped_since_status(&self) -> u32 {
        self.since_status
    }

    /// Signs `frame` (made by `fb`) and stores it; if the flash was full,
    /// stores a `QueueOverflow` event frame with the exact count right after.
    pub async fn store<S, C>(
        &mut self,
        fb: &mut FrameBuilder,
        tb: &TimeBase,
        uptime_ms: u64,
        outbox: &mut Outbox<S, C>,
        frame: &Frame,
        buf: &mut [u8; ENTRY_BUF_LEN],
    ) -> Result<Stored, StoreError<S::Error>>
    where
        S: MultiwriteNorFlash,
        C: CacheImpl<()>,
    {
        let signed = fb.sign(frame).map_err(StoreError::Sign)?;
        outbox.push(&signed, buf).await?;
        let mut out = Stored {
            frame_ref: signed.frame_ref,
            removed: outbox.take_dropped(),
            overflow: heapless::Vec::new(),
        };
        while !out.overflow.is_full() && outbox.report_room() {
            let n = outbox.take_unreported();
            if n == 0 {
                break;
            }
            let mut ev = EventBatch::new();
            // Cannot fail: an empty batch takes one event.
            let _ = ev.push_event(uptime_ms, EventKind::QueueOverflow { dropped: n });
            let Some(f) = fb.events(&mut ev, tb) else {
                break;
            };
            let s = fb.sign(&f).map_err(StoreError::Sign)?;
            outbox.push_report(&s, n, buf).await?;
            out.removed = out.removed.saturating_add(outbox.take_dropped());
            warn!("queue full: {} frame(s) dropped, reported", n);
            // Cannot fail: bounded by the loop condition.
            let _ = out.overflow.push((s.frame_ref, n));
        }
        self.since_status = self.since_status.saturating_add(out.removed);
        Ok(out)
    }

    /// A status frame taken at `uptime_ms`, carrying the frames dropped since
    /// the previous one (the count restarts at zero). Store it with
    /// [`Recorder::store`].
    pub fn status(
        &mut self,
        fb: &mut FrameBuilder,
        tb: &TimeBase,
        uptime_ms: u64,
        battery_mv: u16,
        signal_dbm: Option<i16>,
        queued: u32,
    ) -> Frame {
        let dropped = core::mem::take(&mut self.since_status);
        fb.status(
            uptime_ms,
            tb,
            Status {
                battery_mv,
                signal_dbm,
                queued,
                dropped,
            },
        )
    }
}
