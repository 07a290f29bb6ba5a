//! The serial uplink: the flash queue dumped over a UART (a docked logger).
//!
//! Stop-and-wait, one frame in flight: the oldest queued frame goes out as a
//! COBS frame ([`coldchain_proto::serial::encode`]); the daemon answers with a
//! signed [`Downlink`], verified here with the device key. Only a verified
//! `Ack` removes a frame from the queue (whichever queued frame it names: a
//! late ack of an earlier attempt is as good as a fresh one). A `Nack`, a
//! timeout, a damaged reply or a reply that does not verify keeps the frame,
//! which is sent again after a back-off (doubling from `retry_min_ms` to
//! `retry_max_ms`). The receiver stores each `(device, boot, seq)` once, so a
//! resend after a lost ack is harmless.
//!
//! Sans-I/O timing: [`SerialUplink::poll`] never waits for time. It reads what
//! the port already holds ([`ReadReady`]), checks the ack deadline against the
//! `now_ms` it is given, and sends when nothing is in flight. The caller
//! polls until it returns `None`, then sleeps a little (or until a UART
//! interrupt). Tests drive it with a mock port and a hand-set clock.

use coldchain_proto::codec::{CodecError, decode_signed};
use coldchain_proto::serial::{Decoder, FrameError, MAX_FRAME_LEN, encode};
use coldchain_proto::{DeviceKey, Downlink, FrameRef, NackReason, Settings};
use embedded_io_async::{Read, ReadReady, Write};
use embedded_storage_async::nor_flash::MultiwriteNorFlash;
use sequential_storage::cache::CacheImpl;

use crate::queue::{self, ENTRY_BUF_LEN, Outbox};

/// Timing of the serial uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SerialConfig {
    /// No verified answer this long after sending: the frame is sent again.
    pub ack_timeout_ms: u64,
    /// Pause before resending after the first failure (nack or timeout).
    pub retry_min_ms: u64,
    /// Longest pause between resends.
    pub retry_max_ms: u64,
}

impl Default for SerialConfig {
    fn default() -> Self {
        SerialConfig {
            ack_timeout_ms: 2_000,
            retry_min_ms: 100,
            retry_max_ms: 5_000,
        }
    }
}

/// What one [`SerialUplink::poll`] did.
#[allow(
    clippy::large_enum_variant,
    reason = "no allocator: settings travel inline, as in Downlink"
)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The oldest queued frame was written to the port.
    Sent(FrameRef),
    /// A verified ack: the frame was removed from the queue.
    Acked(FrameRef),
    /// A verified ack for a frame no longer queued (already acked): nothing to do.
    DuplicateAck(FrameRef),
    /// The daemon refused the frame; it stays queued and is resent after a back-off.
    Nacked {
        /// Which frame.
        frame: FrameRef,
        /// Why.
        reason: NackReason,
    },
    /// No answer in time; the frame stays queued and is resent.
    TimedOut(FrameRef),
    /// A verified time and settings message: apply it with
    /// [`crate::sync::apply_sync`] (`retained = false`).
    Sync {
        /// Wall-clock time, ms since the Unix epoch.
        unix_ms: u64,
        /// The settings.
        settings: Settings,
    },
    /// Bytes damaged on the line: ignored.
    Damaged(FrameError),
    /// A whole reply that does not verify with the device key (or does not
    /// decode): ignored, never acted on.
    Refused(CodecError),
}

/// Why the uplink stopped.
#[derive(Debug)]
pub enum Error<P, F> {
    /// The port failed.
    Port(P),
    /// The flash queue failed.
    Queue(queue::Error<F>),
    /// A queued entry is larger than a serial frame can carry.
    TooLarge,
}

impl<P, F> From<queue::Error<F>> for Error<P, F> {
    fn from(e: queue::Error<F>) -> Self {
        Error::Queue(e)
    }
}

/// The serial uplink's state: the line decoder, the frame in flight, the back-off.
#[derive(Debug)]
pub struct SerialUplink {
    key: DeviceKey,
    cfg: SerialConfig,
    dec: Decoder,
    rx: [u8; 64],
    rx_pos: usize,
    rx_len: usize,
    inflight: Option<(FrameRef, u64)>,
    failures: u32,
    next_send_ms: u64,
}

impl SerialUplink {
    /// An idle uplink for the device with `key`.
    pub fn new(key: DeviceKey, cfg: SerialConfig) -> Self {
        SerialUplink {
            key,
            cfg,
            dec: Decoder::new(),
            rx: [0; 64],
            rx_pos: 0,
            rx_len: 0,
            inflight: None,
            failures: 0,
            next_send_ms: 0,
        }
    }

    /// The frame sent and not yet answered.
    pub fn in_flight(&self) -> Option<FrameRef> {
        self.inflight.map(|(r, _)| r)
    }

    /// Failures (nacks, timeouts) since the last ack.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    fn backoff(&mut self, now_ms: u64) {
        self.failures = self.failures.saturating_add(1);
        let shift = (self.failures - 1).min(20);
        let pause = self
            .cfg
            .retry_min_ms
            .saturating_mul(1 << shift)
            .min(self.cfg.retry_max_ms);
        self.next_send_ms = now_ms.saturating_add(pause);
    }

    /// Does at most one thing and says what: handles one reply already in the
    /// port, or times out the frame in flight, or sends the oldest queued
    /// frame. `None`: nothing to do now (call again after a short sleep).
    pub async fn poll<P, S, C>(
        &mut self,
        port: &mut P,
        outbox: &mut Outbox<S, C>,
        now_ms: u64,
        buf: &mut [u8; ENTRY_BUF_LEN],
    ) -> Result<Option<Event>, Error<P::Error, S::Error>>
    where
        P: Read + Write + ReadReady,
        S: MultiwriteNorFlash,
        C: CacheImpl<()>,
    {
        // 1. Replies already received.
        loop {
            if self.rx_pos == self.rx_len {
                if !port.read_ready().map_err(Error::Port)? {
                    break;
                }
                let n = port.read(&mut self.rx).await.map_err(Error::Port)?;
                if n == 0 {
                    break;
                }
                self.rx_pos = 0;
                self.rx_len = n;
            }
            while self.rx_pos < self.rx_len {
                let b = self.rx[self.rx_pos];
                self.rx_pos += 1;
                let msg = match self.dec.push(b) {
                    None => continue,
                    Some(Err(e)) => {
                        debug!("serial: damaged reply");
                        return Ok(Some(Event::Damaged(e)));
                    }
                    Some(Ok(payload)) => match decode_signed::<Downlink>(payload, &self.key) {
                        Ok(m) => m,
                        Err(e) => {
                            warn!("serial: a reply did not verify with the device key");
                            return Ok(Some(Event::Refused(e)));
                        }
                    },
                };
                return self.on_downlink(msg, outbox, now_ms, buf).await.map(Some);
            }
        }

        // 2. The frame in flight ran out of time.
        if let Some((r, sent)) = self.inflight
            && now_ms >= sent.saturating_add(self.cfg.ack_timeout_ms)
        {
            self.inflight = None;
            self.backoff(now_ms);
            warn!(
                "serial: no ack for boot {} seq {}, will resend",
                r.boot, r.seq
            );
            return Ok(Some(Event::TimedOut(r)));
        }

        // 3. Send the oldest queued frame.
        if self.inflight.is_none() && now_ms >= self.next_send_ms {
            let Some((r, bytes)) = outbox.oldest(buf).await? else {
                return Ok(None);
            };
            let mut line = [0u8; MAX_FRAME_LEN];
            let n = encode(bytes, &mut line).map_err(|_| Error::TooLarge)?;
            port.write_all(&line[..n]).await.map_err(Error::Port)?;
            port.flush().await.map_err(Error::Port)?;
            self.inflight = Some((r, now_ms));
            trace!("serial: sent boot {} seq {}", r.boot, r.seq);
            return Ok(Some(Event::Sent(r)));
        }
        Ok(None)
    }

    async fn on_downlink<PE, S, C>(
        &mut self,
        msg: Downlink,
        outbox: &mut Outbox<S, C>,
        now_ms: u64,
        buf: &mut [u8; ENTRY_BUF_LEN],
    ) -> Result<Event, Error<PE, S::Error>>
    where
        S: MultiwriteNorFlash,
        C: CacheImpl<()>,
    {
        match msg {
            Downlink::Ack(r) => {
                let removed = outbox.ack(r, buf).await?;
                if self.in_flight() == Some(r) {
                    self.inflight = None;
                    self.failures = 0;
                    self.next_send_ms = now_ms;
                }
                Ok(if removed {
                    Event::Acked(r)
                } else {
                    Event::DuplicateAck(r)
                })
            }
            Downlink::Nack { frame, reason } => {
                if self.in_flight() == Some(frame) {
                    self.inflight = None;
                    self.backoff(now_ms);
                }
                warn!(
                    "serial: frame boot {} seq {} refused",
                    frame.boot, frame.seq
                );
                Ok(Event::Nacked { frame, reason })
            }
            Downlink::Sync { unix_ms, settings } => Ok(Event::Sync { unix_ms, settings }),
        }
    }
}
