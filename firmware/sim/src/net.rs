//! The firmware's MQTT [`Transport`] over a tokio TCP connection (on a device:
//! the modem's or the Ethernet stack's socket).
//!
//! `read_ready` polls the socket once with a no-op waker, so the firmware's
//! `poll` never waits on the network; [`Net::wait_input`] is what the device
//! loop awaits when it has nothing to do (a real waker: it wakes as soon as
//! the broker sends something). Both keep what they read in `pending`, so
//! nothing read is lost when the wait is cancelled by a timer.
//!
//! Injected outages: [`Net::offline_for`] drops the connection and refuses
//! connects until the outage ends, as a dead cell tower would.
//!
//! `--json` (a simulator-only mode): the firmware publishes signed postcard
//! frames only. With `json` set, this transport rewrites each PUBLISH to the
//! device's up topic on its way out into the JSON envelope of
//! `proto/README.md` on `…/up/json` (same packet id, so the PUBACK still
//! gates the firmware's flash queue), like a translating gateway would.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use coldchain_firmware::uplink::mqtt::Transport;
use coldchain_proto::codec::decode_signed;
use coldchain_proto::topic::{device_up, device_up_json};
use coldchain_proto::{DeviceId, DeviceKey, Frame};
use embedded_io_async::{ErrorType, Read, ReadReady, Write};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A byte stream to the broker (plain TCP, or TLS over it).
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Why the link failed (read through `Debug` in logs; the firmware only
/// needs to know that it failed).
#[derive(Debug)]
pub struct NetError(#[allow(dead_code, reason = "read through Debug")] pub String);

impl embedded_io_async::Error for NetError {
    fn kind(&self) -> embedded_io_async::ErrorKind {
        embedded_io_async::ErrorKind::Other
    }
}

fn err(e: impl std::fmt::Display) -> NetError {
    NetError(e.to_string())
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// TLS (`--ca-file`), or plain TCP.
    pub tls: Option<crate::tls::Tls>,
}

/// The connection of one simulated device.
pub struct Net {
    cfg: NetConfig,
    stream: Option<Box<dyn Stream>>,
    pending: VecDeque<u8>,
    eof: bool,
    out: Vec<u8>,
    offline_until: Option<Instant>,
    json: Option<(DeviceKey, String, String)>,
    /// The last connect failure, for the start-up error message.
    pub last_error: Option<String>,
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net")
            .field("cfg", &self.cfg)
            .field("connected", &self.stream.is_some())
            .finish_non_exhaustive()
    }
}

impl Net {
    /// Not connected yet. `json`: rewrite up-topic PUBLISHes into JSON envelopes.
    pub fn new(cfg: NetConfig, device: &DeviceId, key: &DeviceKey, json: bool) -> Net {
        Net {
            cfg,
            stream: None,
            pending: VecDeque::new(),
            eof: false,
            out: Vec::new(),
            offline_until: None,
            json: json.then(|| {
                (
                    key.clone(),
                    device_up(device).to_string(),
                    device_up_json(device).to_string(),
                )
            }),
            last_error: None,
        }
    }

    /// Injected outage: the connection drops now and no connect succeeds for `d`.
    pub fn offline_for(&mut self, d: Duration) {
        self.offline_until = Some(Instant::now() + d);
        self.close();
    }

    /// Waits until the broker sent something (or the connection ended). Safe
    /// to cancel: bytes read are kept. Never returns while not connected.
    pub async fn wait_input(&mut self) {
        if !self.pending.is_empty() || self.eof {
            return;
        }
        let Some(s) = self.stream.as_mut() else {
            return std::future::pending().await;
        };
        let mut b = [0u8; 2048];
        let r = poll_fn(|cx| {
            let mut rb = ReadBuf::new(&mut b);
            match Pin::new(&mut **s).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => Poll::Ready(Ok(rb.filled().len())),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        match r {
            Ok(0) => self.eof = true,
            Ok(n) => self.pending.extend(&b[..n]),
            Err(e) => {
                tracing::debug!("broker connection: {e}");
                self.eof = true;
            }
        }
    }

    /// One non-blocking read attempt into `pending`.
    fn try_fill(&mut self) -> Result<(), NetError> {
        let s = self.stream.as_mut().ok_or_else(|| err("not connected"))?;
        let mut b = [0u8; 2048];
        let mut rb = ReadBuf::new(&mut b);
        let mut cx = Context::from_waker(Waker::noop());
        match Pin::new(&mut **s).poll_read(&mut cx, &mut rb) {
            Poll::Ready(Ok(())) if rb.filled().is_empty() => self.eof = true,
            Poll::Ready(Ok(())) => self.pending.extend(rb.filled()),
            Poll::Ready(Err(e)) => return Err(err(e)),
            Poll::Pending => {}
        }
        Ok(())
    }

    /// Rewrites whole PUBLISH packets to the up topic into JSON envelopes.
    fn translate(&self, bytes: &[u8]) -> Result<Vec<u8>, NetError> {
        let Some((key, up, up_json)) = &self.json else {
            return Ok(bytes.to_vec());
        };
        let mut out = Vec::with_capacity(bytes.len() * 4);
        let mut b = bytes;
        while !b.is_empty() {
            let (first, h, len) = header(b).ok_or_else(|| err("partial MQTT packet"))?;
            let body = b
                .get(h..h + len)
                .ok_or_else(|| err("partial MQTT packet"))?;
            let (pkt, rest) = b.split_at(h + len);
            b = rest;
            let tl = body
                .get(..2)
                .map(|t| usize::from(u16::from_be_bytes([t[0], t[1]])));
            let is_up =
                first >> 4 == 3 && tl.and_then(|tl| body.get(2..2 + tl)) == Some(up.as_bytes());
            if !is_up {
                out.extend_from_slice(pkt);
                continue;
            }
            let mut at = 2 + tl.unwrap_or(0);
            let mut pkid: &[u8] = &[];
            if (first >> 1) & 3 > 0 {
                pkid = body.get(at..at + 2).ok_or_else(|| err("short PUBLISH"))?;
                at += 2;
            }
            let frame: Frame = decode_signed(&body[at..], key).map_err(err)?;
            let text = serde_json::to_string(&frame).map_err(err)?;
            let tag = key.sign(text.as_bytes());
            let payload = format!(r#"{{"frame":{text},"tag":"{}"}}"#, hex::encode(tag));
            let mut nb = Vec::new();
            nb.extend_from_slice(&(up_json.len() as u16).to_be_bytes());
            nb.extend_from_slice(up_json.as_bytes());
            nb.extend_from_slice(pkid);
            nb.extend_from_slice(payload.as_bytes());
            out.push(first);
            let mut n = nb.len();
            loop {
                let mut x = (n % 128) as u8;
                n /= 128;
                if n > 0 {
                    x |= 0x80;
                }
                out.push(x);
                if n == 0 {
                    break;
                }
            }
            out.extend_from_slice(&nb);
        }
        Ok(out)
    }
}

/// An MQTT fixed header: (first byte, header length, remaining length).
fn header(b: &[u8]) -> Option<(u8, usize, usize)> {
    let mut len = 0usize;
    for i in 1..5 {
        let byte = *b.get(i)?;
        len |= usize::from(byte & 0x7F) << (7 * (i - 1));
        if byte & 0x80 == 0 {
            return Some((b[0], i + 1, len));
        }
    }
    None
}

impl ErrorType for Net {
    type Error = NetError;
}

impl ReadReady for Net {
    fn read_ready(&mut self) -> Result<bool, NetError> {
        if self.pending.is_empty() && !self.eof {
            self.try_fill()?;
        }
        Ok(!self.pending.is_empty() || self.eof)
    }
}

impl Read for Net {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, NetError> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.stream.is_none() {
            return Err(err("not connected"));
        }
        while self.pending.is_empty() && !self.eof {
            self.wait_input().await;
        }
        let n = buf.len().min(self.pending.len());
        for (d, s) in buf.iter_mut().zip(self.pending.drain(..n)) {
            *d = s;
        }
        Ok(n)
    }
}

impl Write for Net {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, NetError> {
        if self.stream.is_none() {
            return Err(err("not connected"));
        }
        // Sent on flush: the firmware writes whole packets, then flushes.
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    async fn flush(&mut self) -> Result<(), NetError> {
        let out = std::mem::take(&mut self.out);
        let bytes = self.translate(&out)?;
        let s = self.stream.as_mut().ok_or_else(|| err("not connected"))?;
        s.write_all(&bytes).await.map_err(err)?;
        s.flush().await.map_err(err)
    }
}

impl Transport for Net {
    async fn connect(&mut self) -> Result<(), NetError> {
        self.close();
        if let Some(until) = self.offline_until {
            if Instant::now() < until {
                return Err(err("injected outage"));
            }
            self.offline_until = None;
        }
        let addr = (self.cfg.host.as_str(), self.cfg.port);
        let r = async {
            let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
                .await
                .map_err(|_| err("TCP connect timed out after 5 s"))?
                .map_err(err)?;
            tcp.set_nodelay(true).map_err(err)?;
            let s: Box<dyn Stream> = match &self.cfg.tls {
                None => Box::new(tcp),
                Some(tls) => Box::new(
                    tls.connect(tcp)
                        .await
                        .map_err(|e| err(format!("TLS handshake: {e}")))?,
                ),
            };
            Ok::<_, NetError>(s)
        }
        .await;
        match r {
            Ok(s) => {
                self.stream = Some(s);
                self.last_error = None;
                Ok(())
            }
            Err(e) => {
                self.last_error = Some(e.0.clone());
                Err(e)
            }
        }
    }

    fn close(&mut self) {
        self.stream = None;
        self.pending.clear();
        self.eof = false;
        self.out.clear();
    }
}
