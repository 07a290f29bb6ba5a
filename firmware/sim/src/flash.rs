//! The simulated NOR flash: `embedded-storage-async` traits over a file (so a
//! killed simulator leaves its flash behind, like a device losing power) or
//! over memory.
//!
//! NOR semantics: erase sets a page to 0xFF; a write can only clear bits
//! (the new byte is ANDed in), which is what `MultiwriteNorFlash` promises.
//! Every write and erase goes to the file at once (page cache; a process kill
//! loses nothing already written, as a power cut loses nothing already
//! programmed).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::Context;
use embedded_storage_async::nor_flash::{
    ErrorType, MultiwriteNorFlash, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// Erase page size.
pub const PAGE: usize = 4096;
/// Whole flash: 64 KiB, a common small SPI NOR or internal flash bank.
pub const SIZE: usize = 16 * PAGE;
/// Boot counter: the first two pages.
pub const BOOT_RANGE: std::ops::Range<u32> = 0..(2 * PAGE) as u32;
/// Frame queue: the rest.
pub const QUEUE_RANGE: std::ops::Range<u32> = (2 * PAGE) as u32..SIZE as u32;

/// A flash failure.
#[derive(Debug)]
pub enum FlashError {
    /// Outside the flash.
    OutOfBounds,
    /// Not aligned to the write or erase size.
    NotAligned,
    /// The backing file failed.
    #[allow(dead_code, reason = "read through Debug in error messages")]
    Io(std::io::ErrorKind),
}

impl NorFlashError for FlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            FlashError::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            FlashError::NotAligned => NorFlashErrorKind::NotAligned,
            FlashError::Io(_) => NorFlashErrorKind::Other,
        }
    }
}

/// The flash: its bytes, and the file that keeps them (if any).
#[derive(Debug)]
pub struct SimFlash {
    data: Vec<u8>,
    file: Option<File>,
}

impl SimFlash {
    /// A blank flash in memory (lost when the simulator exits).
    pub fn memory() -> Self {
        SimFlash {
            data: vec![0xFF; SIZE],
            file: None,
        }
    }

    /// The flash kept in `path`: created blank (all 0xFF) if absent.
    pub fn file(path: &Path) -> anyhow::Result<Self> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("opening the flash file {}", path.display()))?;
        let len = file.metadata()?.len();
        let mut data = vec![0xFF; SIZE];
        if len == 0 {
            file.write_all_at(&data, 0)
                .with_context(|| format!("initialising the flash file {}", path.display()))?;
        } else if len == SIZE as u64 {
            std::io::Read::read_exact(&mut file, &mut data)
                .with_context(|| format!("reading the flash file {}", path.display()))?;
        } else {
            anyhow::bail!(
                "{} is {len} bytes, not a {SIZE}-byte coldchain-sim flash image",
                path.display()
            );
        }
        Ok(SimFlash {
            data,
            file: Some(file),
        })
    }

    fn range(&self, offset: u32, len: usize, align: usize) -> Result<usize, FlashError> {
        let off = offset as usize;
        if off.checked_add(len).is_none_or(|end| end > self.data.len()) {
            return Err(FlashError::OutOfBounds);
        }
        if !off.is_multiple_of(align) || !len.is_multiple_of(align) {
            return Err(FlashError::NotAligned);
        }
        Ok(off)
    }

    fn persist(&self, off: usize, len: usize) -> Result<(), FlashError> {
        if let Some(f) = &self.file {
            f.write_all_at(&self.data[off..off + len], off as u64)
                .map_err(|e| FlashError::Io(e.kind()))?;
        }
        Ok(())
    }
}

impl ErrorType for SimFlash {
    type Error = FlashError;
}

impl ReadNorFlash for SimFlash {
    const READ_SIZE: usize = 1;
    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashError> {
        let off = self.range(offset, bytes.len(), 1)?;
        bytes.copy_from_slice(&self.data[off..off + bytes.len()]);
        Ok(())
    }
    fn capacity(&self) -> usize {
        self.data.len()
    }
}

impl NorFlash for SimFlash {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = PAGE;
    async fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashError> {
        let len = (to as usize)
            .checked_sub(from as usize)
            .ok_or(FlashError::OutOfBounds)?;
        let off = self.range(from, len, PAGE)?;
        self.data[off..off + len].fill(0xFF);
        self.persist(off, len)
    }
    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashError> {
        let off = self.range(offset, bytes.len(), Self::WRITE_SIZE)?;
        for (d, b) in self.data[off..off + bytes.len()].iter_mut().zip(bytes) {
            *d &= *b;
        }
        self.persist(off, bytes.len())
    }
}

impl MultiwriteNorFlash for SimFlash {}

/// The firmware's flash queue on the simulated flash, as both uplinks use it.
pub type Queue = coldchain_firmware::queue::Outbox<
    SimFlash,
    sequential_storage::cache::Cache<
        sequential_storage::cache::Uncached,
        sequential_storage::cache::Uncached,
        sequential_storage::cache::Uncached,
        (),
    >,
>;

/// Readings in a queued signed frame (0 for events, status, or a frame that
/// does not verify), for the run summary.
pub fn readings_in(bytes: &[u8], key: &coldchain_proto::DeviceKey) -> usize {
    use coldchain_proto::{Body, Frame, codec::decode_signed};
    match decode_signed::<Frame>(bytes, key) {
        Ok(Frame {
            body: Body::Readings(r),
            ..
        }) => r.len(),
        _ => 0,
    }
}
