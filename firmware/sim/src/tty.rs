//! A serial port (a tty or the slave side of a pty) in raw mode, behind the
//! `embedded-io-async` traits the firmware's serial uplink uses.
//!
//! Non-blocking underneath: `read_ready` tries a read and keeps what it got,
//! so the uplink's `poll` never waits on the line. A write the kernel cannot
//! take yet is retried after a millisecond (the simulator's stand-in for a
//! UART's transmit-empty interrupt).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use embedded_io_async::{ErrorType, Read, ReadReady, Write};
use nix::fcntl::OFlag;
use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};

/// A port error (the kind of the underlying I/O error).
#[derive(Debug)]
#[allow(dead_code, reason = "read through Debug in error messages")]
pub struct TtyError(pub std::io::Error);

impl embedded_io_async::Error for TtyError {
    fn kind(&self) -> embedded_io_async::ErrorKind {
        embedded_io_async::ErrorKind::Other
    }
}

/// An open serial port.
#[derive(Debug)]
pub struct Tty {
    f: File,
    pending: VecDeque<u8>,
}

impl Tty {
    /// Opens `path` read-write, non-blocking, without making it the
    /// controlling terminal, and sets raw mode (no echo, no line editing).
    pub fn open(path: &Path) -> anyhow::Result<Tty> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags((OFlag::O_NOCTTY | OFlag::O_NONBLOCK).bits())
            .open(path)
            .with_context(|| format!("opening the serial port {}", path.display()))?;
        let mut t = tcgetattr(&f)
            .with_context(|| format!("{} is not a serial port (tcgetattr)", path.display()))?;
        cfmakeraw(&mut t);
        tcsetattr(&f, SetArg::TCSANOW, &t)
            .with_context(|| format!("setting raw mode on {}", path.display()))?;
        Ok(Tty {
            f,
            pending: VecDeque::new(),
        })
    }

    fn fill(&mut self) -> Result<(), TtyError> {
        let mut b = [0u8; 512];
        match self.f.read(&mut b) {
            Ok(n) => {
                self.pending.extend(&b[..n]);
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                Ok(())
            }
            Err(e) => Err(TtyError(e)),
        }
    }
}

impl ErrorType for Tty {
    type Error = TtyError;
}

impl ReadReady for Tty {
    fn read_ready(&mut self) -> Result<bool, TtyError> {
        if self.pending.is_empty() {
            self.fill()?;
        }
        Ok(!self.pending.is_empty())
    }
}

impl Read for Tty {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, TtyError> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.pending.is_empty() {
            self.fill()?;
            if self.pending.is_empty() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let n = buf.len().min(self.pending.len());
        for (d, s) in buf.iter_mut().zip(self.pending.drain(..n)) {
            *d = s;
        }
        Ok(n)
    }
}

impl Write for Tty {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, TtyError> {
        loop {
            match self.f.write(buf) {
                Ok(n) => return Ok(n),
                Err(e)
                    if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted =>
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(TtyError(e)),
            }
        }
    }
    async fn flush(&mut self) -> Result<(), TtyError> {
        Ok(())
    }
}
