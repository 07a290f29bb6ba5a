//! Store-and-forward: every frame is written to a persistent FIFO on NOR flash
//! before it is sent, and removed only when the uplink acknowledges it. It
//! survives a reboot and replays oldest first.
//!
//! Built on `sequential-storage`'s queue, which writes each item with a CRC
//! and repairs itself after an interrupted write, so a power cut at any point
//! loses at most the item being written (never one already stored) and never
//! yields a corrupted item.
//!
//! Entry layout: `boot: u32 LE ‖ seq: u32 LE ‖ signed frame bytes`.
//!
//! **Full flash policy: drop the oldest.** When a new frame does not fit,
//! the oldest frames are removed one at a time until it does; each one is
//! counted, and [`crate::record::Recorder`] reports the count in a
//! `QueueOverflow` event frame stored right after, and in the next status
//! frame (`Status::dropped`). The newest data is what says where the shipment
//! stands now.
//!
//! A report is a frame like any other and may itself be dropped later (a
//! long outage). The queue therefore tracks the reports it holds
//! ([`Outbox::push_report`], up to [`MAX_REPORTS_HELD`]): dropping one adds
//! its count back to the unreported count ([`Outbox::take_unreported`]), so
//! the next report carries it, and the counts of the reports that leave the
//! queue by acknowledgement always add up to exactly the frames dropped.
//! The counts are held in RAM: a power cut before they are stored loses
//! them (not silently: the receiver sees the gap in `seq`).

use coldchain_proto::FrameRef;
use coldchain_proto::codec::MAX_SIGNED_LEN;
use embedded_storage_async::nor_flash::MultiwriteNorFlash;
use sequential_storage::cache::CacheImpl;
use sequential_storage::queue::{QueueConfig, QueueStorage};

use crate::batch::SignedFrame;

/// Bytes of the entry header.
pub const HEADER_LEN: usize = 8;
/// Largest entry.
pub const MAX_ENTRY_LEN: usize = HEADER_LEN + MAX_SIGNED_LEN;
/// The buffer the queue needs for one entry (word-aligned headroom included).
pub const ENTRY_BUF_LEN: usize = MAX_ENTRY_LEN + 16;

/// What went wrong with the flash queue.
#[derive(Debug)]
pub enum Error<E> {
    /// The flash or the queue structure failed.
    Storage(sequential_storage::Error<E>),
    /// An entry is too short to hold its header (written by something else).
    BadEntry,
}

impl<E> From<sequential_storage::Error<E>> for Error<E> {
    fn from(e: sequential_storage::Error<E>) -> Self {
        Error::Storage(e)
    }
}

/// Overflow reports the queue keeps track of at once (see the module docs).
pub const MAX_REPORTS_HELD: usize = 8;

/// The persistent outbox.
pub struct Outbox<S: MultiwriteNorFlash, C: CacheImpl<()>> {
    q: QueueStorage<S, C>,
    dropped: u32,
    unreported: u32,
    reports: heapless::Vec<(FrameRef, u32), MAX_REPORTS_HELD>,
}

impl<S: MultiwriteNorFlash, C: CacheImpl<()>> core::fmt::Debug for Outbox<S, C> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Outbox")
            .field("dropped", &self.dropped)
            .field("unreported", &self.unreported)
            .field("reports", &self.reports)
            .finish_non_exhaustive()
    }
}

fn frame_ref(entry: &[u8]) -> Option<FrameRef> {
    let h = entry.get(..HEADER_LEN)?;
    Some(FrameRef {
        boot: u32::from_le_bytes([h[0], h[1], h[2], h[3]]),
        seq: u32::from_le_bytes([h[4], h[5], h[6], h[7]]),
    })
}

impl<S: MultiwriteNorFlash, C: CacheImpl<()>> Outbox<S, C> {
    /// Opens the queue in `range` of `flash` (whole erase pages), keeping
    /// whatever an earlier boot left in it.
    pub fn new(flash: S, range: core::ops::Range<u32>, cache: C) -> Self {
        Outbox {
            q: QueueStorage::new(flash, QueueConfig::new(range), cache),
            dropped: 0,
            unreported: 0,
            reports: heapless::Vec::new(),
        }
    }

    /// Stores a frame. If the flash is full, drops the oldest frames until it
    /// fits, counting them ([`Outbox::take_dropped`]). Returns once the frame is
    /// on flash.
    pub async fn push(
        &mut self,
        frame: &SignedFrame,
        buf: &mut [u8; ENTRY_BUF_LEN],
    ) -> Result<(), Error<S::Error>> {
        let n = HEADER_LEN + frame.bytes.len();
        let mut entry = [0u8; MAX_ENTRY_LEN];
        entry[..4].copy_from_slice(&frame.frame_ref.boot.to_le_bytes());
        entry[4..8].copy_from_slice(&frame.frame_ref.seq.to_le_bytes());
        entry[HEADER_LEN..n].copy_from_slice(&frame.bytes);
        loop {
            match self.q.push(&entry[..n], false).await {
                Ok(()) => return Ok(()),
                Err(sequential_storage::Error::FullStorage) => {
                    let Some(gone) = self.q.pop(buf).await? else {
                        // Empty and still no room: the entry is larger than the queue.
                        return Err(Error::Storage(sequential_storage::Error::FullStorage));
                    };
                    self.dropped = self.dropped.saturating_add(1);
                    self.unreported = self.unreported.saturating_add(1);
                    // A report dropped: what it reported is unreported again.
                    if let Some(r) = frame_ref(gone)
                        && let Some(i) = self.reports.iter().position(|(x, _)| *x == r)
                    {
                        let (_, n) = self.reports.swap_remove(i);
                        self.unreported = self.unreported.saturating_add(n);
                    }
                    warn!("queue full: dropped the oldest frame");
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Stores an overflow report carrying `count` dropped frames (taken
    /// with [`Outbox::take_unreported`]) and tracks it: if it is dropped in
    /// turn, `count` becomes unreported again. Call only when
    /// [`Outbox::report_room`].
    pub async fn push_report(
        &mut self,
        frame: &SignedFrame,
        count: u32,
        buf: &mut [u8; ENTRY_BUF_LEN],
    ) -> Result<(), Error<S::Error>> {
        self.push(frame, buf).await?;
        if self.reports.push((frame.frame_ref, count)).is_err() {
            // No room to track it: keep the count unreported rather than lose it.
            self.unreported = self.unreported.saturating_add(count);
        }
        Ok(())
    }

    /// True if another report can be tracked.
    pub fn report_room(&self) -> bool {
        !self.reports.is_full()
    }

    /// Frames dropped that no report in the queue carries yet.
    pub fn unreported(&self) -> u32 {
        self.unreported
    }

    /// Frames dropped that no report in the queue carries yet; resets it.
    pub fn take_unreported(&mut self) -> u32 {
        core::mem::take(&mut self.unreported)
    }

    /// The oldest frame: its ref and its signed bytes (borrowed from `buf`).
    pub async fn oldest<'b>(
        &mut self,
        buf: &'b mut [u8; ENTRY_BUF_LEN],
    ) -> Result<Option<(FrameRef, &'b [u8])>, Error<S::Error>> {
        match self.q.peek(buf).await? {
            None => Ok(None),
            Some(e) => {
                let r = frame_ref(e).ok_or(Error::BadEntry)?;
                Ok(Some((r, &e[HEADER_LEN..])))
            }
        }
    }

    /// The uplink acknowledged `which`: remove it. Returns false if it is not
    /// in the queue (a duplicate ack). Usually the oldest; found anywhere.
    pub async fn ack(
        &mut self,
        which: FrameRef,
        buf: &mut [u8; ENTRY_BUF_LEN],
    ) -> Result<bool, Error<S::Error>> {
        let mut it = self.q.iter().await?;
        while let Some(entry) = it.next(buf).await? {
            if frame_ref(&entry) == Some(which) {
                entry.pop().await?;
                // A report delivered: its count has reached the receiver.
                self.reports.retain(|(r, _)| *r != which);
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Number of frames stored (walks the queue).
    pub async fn len(&mut self, buf: &mut [u8; ENTRY_BUF_LEN]) -> Result<u32, Error<S::Error>> {
        let mut it = self.q.iter().await?;
        let mut n = 0;
        while it.next(buf).await?.is_some() {
            n += 1;
        }
        Ok(n)
    }

    /// Calls `f` with each stored frame, oldest first, without removing any.
    pub async fn for_each(
        &mut self,
        buf: &mut [u8; ENTRY_BUF_LEN],
        mut f: impl FnMut(FrameRef, &[u8]),
    ) -> Result<(), Error<S::Error>> {
        let mut it = self.q.iter().await?;
        while let Some(entry) = it.next(buf).await? {
            let r = frame_ref(&entry).ok_or(Error::BadEntry)?;
            f(r, &entry[HEADER_LEN..]);
        }
        Ok(())
    }

    /// Frames dropped to a full queue since the last call (each counted
    /// once, reports included); resets the count. For `Status::dropped`.
    pub fn take_dropped(&mut self) -> u32 {
        core::mem::take(&mut self.dropped)
    }

    /// Gives the flash back (e.g. to simulate a reboot).
    pub fn into_flash(self) -> S {
        self.q.destroy().0
    }
}
