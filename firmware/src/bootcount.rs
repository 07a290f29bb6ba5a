//! The boot counter, kept in flash (a `sequential-storage` map of one key on
//! its own pages, apart from the queue).
//!
//! The new number is stored **before** it is used: a power cut during the
//! store leaves the old number (the map writes atomically), so the next start
//! takes `old + 1`, which no frame ever carried. No two boots' frames can
//! share a `(boot, seq)`.

use core::ops::Range;

use embedded_storage_async::nor_flash::MultiwriteNorFlash;
use sequential_storage::cache::Cache;
use sequential_storage::map::{MapConfig, MapStorage};

/// The map key of the counter.
const KEY: u8 = 0;

/// Why the counter could not be advanced.
#[derive(Debug)]
pub enum Error<E> {
    /// The range is not at least two whole erase pages.
    BadRange,
    /// The flash failed.
    Storage(sequential_storage::Error<E>),
}

/// The boot number stored in `range` of `flash`, if any.
pub async fn current<S: MultiwriteNorFlash>(
    flash: &mut S,
    range: Range<u32>,
) -> Result<Option<u32>, Error<S::Error>> {
    let cfg = MapConfig::try_new(range).map_err(|_| Error::BadRange)?;
    let mut map = MapStorage::<u8, _, _>::new(flash, cfg, Cache::new_uncached());
    let mut buf = [0u8; 16];
    map.fetch_item::<u32>(&mut buf, &KEY)
        .await
        .map_err(Error::Storage)
}

/// Advances the counter and returns this boot's number: the stored one plus
/// one (1 on a blank flash), or `force` when given (a service override; later
/// boots count on from it).
pub async fn next<S: MultiwriteNorFlash>(
    flash: &mut S,
    range: Range<u32>,
    force: Option<u32>,
) -> Result<u32, Error<S::Error>> {
    let prev = current(flash, range.clone()).await?;
    let boot = force.unwrap_or_else(|| prev.unwrap_or(0).wrapping_add(1));
    let cfg = MapConfig::try_new(range).map_err(|_| Error::BadRange)?;
    let mut map = MapStorage::<u8, _, _>::new(flash, cfg, Cache::new_uncached());
    let mut buf = [0u8; 16];
    map.store_item(&mut buf, &KEY, &boot)
        .await
        .map_err(Error::Storage)?;
    Ok(boot)
}
